#!/usr/bin/env bash
# A real, envtest-style Kubernetes control plane for the e2e tests:
# etcd + kube-apiserver + kube-controller-manager as plain local processes
# (no kubelet, no scheduler: pods are never run, but Deployments get
# ReplicaSets and ownerReference garbage collection works).
#
# The binaries are built from the Go module in tools/envtest (pinned versions,
# checked-in go.sum) and cached under $FOLDLINE_CACHE_DIR/envtest/bin, so a
# fresh clone builds them on first use.
#
#   scripts/envtest.sh build    build binaries unless the cached ones match
#   scripts/envtest.sh start    build if needed, then (re)start with empty etcd;
#                               prints the kubeconfig path as the last stdout line
#   scripts/envtest.sh stop     stop everything started by `start`
#   scripts/envtest.sh status   show process / readiness state (exit 1 if down)
#   scripts/envtest.sh env      print `export KUBECONFIG=...`
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODULE_DIR="$REPO_ROOT/tools/envtest"
CACHE_ROOT="${FOLDLINE_CACHE_DIR:-$REPO_ROOT/.cache}"
ENVTEST_DIR="$CACHE_ROOT/envtest"
BIN_DIR="$ENVTEST_DIR/bin"
PKI_DIR="$ENVTEST_DIR/pki"
RUN_DIR="$ENVTEST_DIR/run"
LOG_DIR="$ENVTEST_DIR/logs"
ETCD_DATA="$ENVTEST_DIR/etcd"
KUBECONFIG_PATH="$ENVTEST_DIR/kubeconfig"

ETCD_CLIENT_PORT="${FOLDLINE_ENVTEST_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${FOLDLINE_ENVTEST_ETCD_PEER_PORT:-12380}"
APISERVER_PORT="${FOLDLINE_ENVTEST_APISERVER_PORT:-16443}"
APISERVER_URL="https://127.0.0.1:$APISERVER_PORT"
START_TIMEOUT="${FOLDLINE_ENVTEST_START_TIMEOUT:-120}"   # seconds, per wait

COMPONENTS=(etcd kube-apiserver kube-controller-manager)
# Main packages built from tools/envtest; the order matches COMPONENTS.
PACKAGES=(go.etcd.io/etcd/server/v3 k8s.io/kubernetes/cmd/kube-apiserver
          k8s.io/kubernetes/cmd/kube-controller-manager)

log() { printf 'envtest: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- build ----

# Bump when the build command below changes, so cached binaries are rebuilt.
BUILD_REV=1

build_stamp() {
  # The binaries depend on the pinned module graph, the Go version and our
  # build flags; any change to those invalidates the cache.
  {
    echo "rev=$BUILD_REV"
    go version
    cat "$MODULE_DIR/go.mod" "$MODULE_DIR/go.sum"
  } | sha256sum | cut -d' ' -f1
}

binaries_current() {
  local c
  [[ -f "$BIN_DIR/.stamp" && "$(cat "$BIN_DIR/.stamp")" == "$1" ]] || return 1
  for c in "${COMPONENTS[@]}"; do [[ -x "$BIN_DIR/$c" ]] || return 1; done
}

cmd_build() {
  # Go's PATH entry lives in ~/.bashrc, which non-interactive shells skip.
  command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
  command -v go >/dev/null || die "go is not installed (needed to build the control plane)"
  # Never let go.mod's `go` line trigger a toolchain download: use the local Go.
  export GOTOOLCHAIN=local
  mkdir -p "$ENVTEST_DIR" "$LOG_DIR"
  # Serialise concurrent builds (e.g. two test sessions starting at once).
  exec 9>"$ENVTEST_DIR/.build.lock"
  flock 9
  local stamp
  stamp="$(build_stamp)"
  if binaries_current "$stamp"; then
    log "binaries up to date in $BIN_DIR"
    exec 9>&-
    return 0
  fi
  local k8s_version tmp start_s
  k8s_version="$(cd "$MODULE_DIR" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
  local minor="${k8s_version#v1.}"; minor="${minor%%.*}"
  # Without these the binaries report v0.0.0-master to clients.
  local vpkg=k8s.io/component-base/version
  local ldflags="-s -w -X $vpkg.gitVersion=$k8s_version -X $vpkg.gitMajor=1"
  ldflags+=" -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"
  tmp="$ENVTEST_DIR/bin.tmp"
  rm -rf "$tmp"; mkdir -p "$tmp"
  log "building etcd, kube-apiserver, kube-controller-manager ($k8s_version); cold build takes ~7 min on 2 cores"
  start_s=$SECONDS
  # -mod=readonly: go.sum is checked in and must already be complete.
  # -buildvcs=false: don't shell out to git for stamping.
  if ! (cd "$MODULE_DIR" && go build -mod=readonly -buildvcs=false -trimpath \
          -ldflags "$ldflags" -o "$tmp/" "${PACKAGES[@]}") >"$LOG_DIR/build.log" 2>&1; then
    tail -n 40 "$LOG_DIR/build.log" >&2
    die "go build failed (full log: $LOG_DIR/build.log)"
  fi
  # `go build -o dir/` names binaries after the package path, minus the /v3
  # major-version suffix: go.etcd.io/etcd/server/v3 -> server.
  mv "$tmp/server" "$tmp/etcd"
  echo "$stamp" >"$tmp/.stamp"
  rm -rf "$BIN_DIR"; mv "$tmp" "$BIN_DIR"
  # Release the lock now: processes started later must not inherit fd 9.
  exec 9>&-
  log "built in $((SECONDS - start_s))s into $BIN_DIR"
}

# ------------------------------------------------------------------ pki ----

# Generated once and kept: the CA, serving cert, service-account key pair and
# admin token only need to be stable across restarts, not secret.
ensure_pki() {
  command -v openssl >/dev/null || die "openssl is not installed"
  mkdir -p "$PKI_DIR"
  [[ -f "$PKI_DIR/.complete" ]] && return 0
  local d="$PKI_DIR"
  rm -f "$d"/*
  (
    set -e
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=foldline-envtest-ca" \
      -keyout "$d/ca.key" -out "$d/ca.crt"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
      -keyout "$d/apiserver.key" -out "$d/apiserver.csr"
    # 10.0.0.1 is the in-cluster `kubernetes` service IP of the range below.
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" \
      "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
      >"$d/apiserver.ext"
    openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
      -CAcreateserial -days 3650 -extfile "$d/apiserver.ext" -out "$d/apiserver.crt"
    openssl genrsa -out "$d/sa.key" 2048
    openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub"
    # Static bearer token for user admin in group system:masters (RBAC superuser).
    printf '%s,admin,admin-uid,"system:masters"\n' "$(openssl rand -hex 24)" >"$d/tokens.csv"
  ) >"$LOG_DIR/pki.log" 2>&1 || { cat "$LOG_DIR/pki.log" >&2; die "generating PKI failed"; }
  chmod 600 "$d"/*.key "$d/tokens.csv"
  touch "$d/.complete"
}

admin_token() { cut -d, -f1 "$PKI_DIR/tokens.csv"; }

write_kubeconfig() {
  local ca_data tmp="$KUBECONFIG_PATH.tmp"
  ca_data="$(base64 -w0 <"$PKI_DIR/ca.crt")"
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $ca_data
users:
- name: admin
  user:
    token: $(admin_token)
contexts:
- name: envtest
  context:
    cluster: envtest
    user: admin
current-context: envtest
EOF
  chmod 600 "$tmp"
  mv "$tmp" "$KUBECONFIG_PATH"
}

# ------------------------------------------------------------ processes ----

pid_of() {  # prints the pid if the recorded process is still our binary
  local f="$RUN_DIR/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  # Guard against pid reuse: the process must be running our cached binary.
  [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline")" == "$BIN_DIR/$1 "* ]] || return 1
  echo "$pid"
}

launch() {  # launch NAME ARGS... : own session/process group, pid file, log file
  local name="$1"; shift
  # setsid makes the process a group leader (pgid == pid) so stop can signal
  # the whole group; stdin from /dev/null so it never holds a terminal.
  setsid "$BIN_DIR/$name" "$@" </dev/null >"$LOG_DIR/$name.log" 2>&1 &
  echo $! >"$RUN_DIR/$name.pid"
}

stop_group() {  # SIGTERM the given components together, 10 s grace, then SIGKILL
  local c pid i names=() pids=()
  for c in "$@"; do
    if pid="$(pid_of "$c")"; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      names+=("$c"); pids+=("$pid")
    fi
    rm -f "$RUN_DIR/$c.pid"
  done
  local deadline=$((SECONDS + 10))
  for ((i = 0; i < ${#pids[@]}; i++)); do
    while kill -0 "${pids[$i]}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      log "${names[$i]} (pid ${pids[$i]}) did not exit on SIGTERM; killing"
      kill -KILL -- "-${pids[$i]}" 2>/dev/null || kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
    log "stopped ${names[$i]}"
  done
}

# etcd last: kube-apiserver hangs in its shutdown if etcd is already gone.
cmd_stop() {
  stop_group kube-controller-manager kube-apiserver
  stop_group etcd
  # Strays of this checkout's binaries whose pid file was lost (a second controller manager with
  # --leader-elect=false would fight the new one over every Deployment).
  local c
  for c in "${COMPONENTS[@]}"; do
    pkill -KILL -f "^$BIN_DIR/$c( |$)" 2>/dev/null && log "killed a stray $c" || true
  done
}

port_in_use() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

fail_start() {
  local c
  for c in "${COMPONENTS[@]}"; do
    [[ -f "$LOG_DIR/$c.log" ]] || continue
    printf -- '----- tail of %s -----\n' "$LOG_DIR/$c.log" >&2
    tail -n 30 "$LOG_DIR/$c.log" >&2
  done
  cmd_stop
  log "ERROR: $*"   # last, so it ends up at the bottom of any output tail
  exit 1
}

# wait_for DESCRIPTION COMPONENT CMD... : poll CMD until it succeeds, failing
# fast if COMPONENT's process dies in the meantime.
wait_for() {
  local what="$1" comp="$2" deadline=$((SECONDS + START_TIMEOUT)); shift 2
  until "$@" >/dev/null 2>&1; do
    pid_of "$comp" >/dev/null || fail_start "$comp exited while waiting for $what"
    ((SECONDS < deadline)) || fail_start "timed out after ${START_TIMEOUT}s waiting for $what"
    sleep 0.2
  done
}

api_get() {  # api_get PATH : authenticated GET against the apiserver
  curl -fsS --max-time 5 --cacert "$PKI_DIR/ca.crt" \
    -H "Authorization: Bearer $(admin_token)" "$APISERVER_URL$1"
}

readyz_ok() { [[ "$(api_get /readyz 2>/dev/null)" == ok ]]; }
etcd_ok() { curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'; }

cmd_start() {
  command -v curl >/dev/null || die "curl is not installed"
  cmd_build
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  ensure_pki
  cmd_stop 2>/dev/null            # a start always gives a fresh, empty cluster
  local p
  for p in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT"; do
    port_in_use "$p" && die "port $p is already in use by another process (not ours)"
  done
  rm -rf "$ETCD_DATA"
  # Logs of a previous run would only mislead a failure report.
  for p in "${COMPONENTS[@]}"; do rm -f "$LOG_DIR/$p.log"; done
  local start_s=$SECONDS

  # --unsafe-no-fsync: the data is throw-away; fsync only slows tests down.
  launch etcd \
    --name=envtest --data-dir="$ETCD_DATA" \
    --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="envtest=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level=info
  wait_for "etcd /health" etcd etcd_ok

  # --disable-admission-plugins=ServiceAccount: like controller-runtime's
  # envtest, so pods are admitted before the `default` ServiceAccount exists.
  # --endpoint-reconciler-type=none: the endpoint reconciler refuses a loopback
  # --advertise-address, and nothing in-cluster needs the `kubernetes` endpoints.
  launch kube-apiserver \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --secure-port="$APISERVER_PORT" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --tls-cert-file="$PKI_DIR/apiserver.crt" --tls-private-key-file="$PKI_DIR/apiserver.key" \
    --client-ca-file="$PKI_DIR/ca.crt" \
    --token-auth-file="$PKI_DIR/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-key-file="$PKI_DIR/sa.pub" \
    --service-account-signing-key-file="$PKI_DIR/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range=10.0.0.0/24 \
    --allow-privileged=true \
    --disable-admission-plugins=ServiceAccount \
    --endpoint-reconciler-type=none \
    --profiling=false
  wait_for "kube-apiserver /readyz" kube-apiserver readyz_ok
  write_kubeconfig

  # The admin kubeconfig doubles as the controller manager's credentials.
  # --secure-port=0: it needs no serving endpoint (and no extra port) here.
  # Cluster signing / root CA flags keep the CSR and token controllers happy.
  # --flex-volume-plugin-dir: it would otherwise create a dir under /usr/libexec.
  launch kube-controller-manager \
    --kubeconfig="$KUBECONFIG_PATH" \
    --leader-elect=false \
    --use-service-account-credentials=false \
    --controllers='*' \
    --secure-port=0 \
    --service-cluster-ip-range=10.0.0.0/24 \
    --root-ca-file="$PKI_DIR/ca.crt" \
    --service-account-private-key-file="$PKI_DIR/sa.key" \
    --cluster-signing-cert-file="$PKI_DIR/ca.crt" --cluster-signing-key-file="$PKI_DIR/ca.key" \
    --flex-volume-plugin-dir="$ENVTEST_DIR/flexvolume" \
    --profiling=false
  # The `default` ServiceAccount is created by a controller: once it exists,
  # the controller manager is up and running its controllers.
  wait_for "kube-controller-manager (default ServiceAccount)" kube-controller-manager \
    api_get /api/v1/namespaces/default/serviceaccounts/default

  log "control plane ready at $APISERVER_URL in $((SECONDS - start_s))s (logs: $LOG_DIR)"
  echo "$KUBECONFIG_PATH"
}

cmd_status() {
  local c pid rc=0
  for c in "${COMPONENTS[@]}"; do
    if pid="$(pid_of "$c")"; then echo "$c: running (pid $pid)"; else echo "$c: stopped"; rc=1; fi
  done
  if [[ -f "$PKI_DIR/tokens.csv" ]] && readyz_ok; then
    echo "kube-apiserver /readyz: ok ($APISERVER_URL)"
  else
    echo "kube-apiserver /readyz: not ready"; rc=1
  fi
  return $rc
}

cmd_env() { printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_PATH"; }

case "${1:-}" in
  build) cmd_build ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 {build|start|stop|status|env}" >&2; exit 2 ;;
esac
