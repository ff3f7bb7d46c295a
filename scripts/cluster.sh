#!/usr/bin/env bash
# A real one-node Kubernetes cluster on this machine, for running foldline's image and chart in
# real pods: etcd, kube-apiserver, kube-controller-manager and kube-scheduler (the control plane),
# containerd + runc (Debian's packages, with a config of our own), the kubelet, kube-proxy
# (nftables mode) and a bridge CNI network. Kubernetes binaries and Helm are built from the pinned
# Go modules in tools/envtest and tools/helm; the pause and busybox images are built locally.
# No cluster DNS: pods address Services by ClusterIP (or environment variables).
# Layout, addresses and ports: scripts/cluster/common.sh and docs/cluster.md.
#
#   scripts/cluster.sh build           install missing Debian packages, build binaries and images
#                                      (cached under .cache/cluster; part of `make install`)
#   scripts/cluster.sh up              (re)start the node from empty state; prints the kubeconfig
#                                      path as the last stdout line
#   scripts/cluster.sh down            stop everything and undo every change `up` made to the host
#   scripts/cluster.sh status          process and node state (exit 1 unless all up and Ready)
#   scripts/cluster.sh env             print `export KUBECONFIG=... PATH=...` (kubectl, helm)
#   scripts/cluster.sh load ARCHIVE [NAME...]
#                                      import a docker or OCI image archive into the node's
#                                      containerd (pods use imagePullPolicy Never/IfNotPresent);
#                                      NAMEs are extra names (tags) for the imported image
#
# One node per machine: the kubelet's /var/lib/kubelet and containerd's /run/containerd are fixed
# paths. `up` takes the machine-wide lock $MACHINE_LOCK and refuses while another checkout's node runs.
set -euo pipefail

# shellcheck source=cluster/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster/common.sh"
# shellcheck source=cluster/build.sh
source "$REPO_ROOT/scripts/cluster/build.sh"
# shellcheck source=cluster/host.sh
source "$REPO_ROOT/scripts/cluster/host.sh"
# shellcheck source=cluster/config.sh
source "$REPO_ROOT/scripts/cluster/config.sh"

OWNER_FILE="$RUN_DIR/owner"   # which checkout's node runs on this machine

take_machine_lock() {
  mkdir -p "$(dirname "$MACHINE_LOCK")"
  exec 9>"$MACHINE_LOCK"
  flock -w 300 9 || die "another scripts/cluster.sh holds $MACHINE_LOCK for more than 300s"
}

release_machine_lock() { exec 9>&-; }

check_owner() {
  # Another checkout's node that still runs is not ours to tear down.
  [[ -f "$OWNER_FILE" ]] || return 0
  local owner; owner="$(cat "$OWNER_FILE")"
  [[ "$owner" == "$CLUSTER_DIR" ]] && return 0
  local s pid exe
  for s in "${SERVICES[@]}"; do
    [[ -f "$RUN_DIR/$s.pid" ]] || continue
    read -r pid exe <"$RUN_DIR/$s.pid" || continue
    if [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]]; then
      die "this machine's node belongs to another checkout ($owner; its $s runs as pid $pid)." \
          "One node per machine: stop it with that checkout's scripts/cluster.sh down"
    fi
  done
  log "taking over from $owner, whose node is no longer running"
}

# ---------------------------------------------------------------- down ----

teardown() {  # everything `up` leaves on the host; safe when nothing runs
  local i
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
    case "${SERVICES[$i]}" in
      containerd) ;;  # after its containers, below
      etcd) ;;        # last: the API server hangs in its shutdown if etcd is already gone
      *) stop_service "${SERVICES[$i]}" ;;
    esac
  done
  kill_runtime_leftovers
  stop_service containerd
  stop_service etcd
  kill_strays
  kill_runtime_leftovers   # a shim that outlived containerd
  remove_netns
  local unmounted=0
  unmount_all && unmounted=1
  remove_cgroups
  teardown_network
  restore_sysctls
  if ((unmounted)); then
    # --one-file-system: never follow a mount that could not be removed.
    rm -rf --one-file-system "$KUBELET_ROOT" "$RUN_DIR" 2>/dev/null || true
    rm -rf --one-file-system "$CONTAINERD_ROOT" "$CNI_DATA_DIR" "$POD_LOGS_DIR" "$ETCD_DATA" 2>/dev/null || true
    remove_runtime_dirs
  else
    log "left $KUBELET_ROOT and $RUN_DIR in place: some mounts would not go away"
    return 1
  fi
}

cmd_down() {
  need_root
  take_machine_lock
  check_owner
  teardown
  release_machine_lock
  log "node down"
}

# ------------------------------------------------------------------ up ----

fail_start() {
  local c
  for c in "${SERVICES[@]}"; do
    [[ -f "$LOG_DIR/$c.log" ]] || continue
    printf -- '----- tail of %s -----\n' "$LOG_DIR/$c.log" >&2
    tail -n 25 "$LOG_DIR/$c.log" >&2
  done
  teardown >/dev/null 2>&1 || true
  log "ERROR: $*"   # last, so it ends up at the bottom of any output tail
  exit 1
}

# wait_for DESCRIPTION SERVICE CMD... : poll CMD until it succeeds, failing fast if SERVICE dies.
wait_for() {
  local what="$1" svc="$2" deadline=$((SECONDS + START_TIMEOUT)); shift 2
  until "$@" >/dev/null 2>&1; do
    pid_of "$svc" >/dev/null || fail_start "$svc exited while waiting for $what (log: $LOG_DIR/$svc.log)"
    ((SECONDS < deadline)) || fail_start "timed out after ${START_TIMEOUT}s waiting for $what"
    sleep 0.2
  done
}

etcd_ok() { curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'; }
readyz_ok() { [[ "$(kubectl_ get --raw /readyz 2>/dev/null)" == ok ]]; }
containerd_ok() { ctr_ version; }
kubelet_ok() { [[ "$(curl -fsS --max-time 2 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz")" == ok ]]; }
node_ready() {
  [[ "$(kubectl_ get node "$NODE_NAME" \
        -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}
proxy_ok() { curl -fsS --max-time 2 "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz" >/dev/null; }
default_sa() { kubectl_ get serviceaccount default -n default; }

import_image() {  # import_image ARCHIVE [--base-name NAME] : into the node's containerd, unpacked
  local out
  if ! out="$(ctr_ images import --snapshotter overlayfs "${@:2}" "$1" 2>&1)"; then
    printf '%s\n' "$out" >&2
    return 1
  fi
  printf '%s\n' "$out"
}

since() { awk -v a="$1" -v b="${2:-$EPOCHREALTIME}" 'BEGIN { printf "%.1f", b - a }'; }

cmd_up() {
  need_root
  local start_t=$EPOCHREALTIME c
  for c in "${K8S_COMPONENTS[@]}"; do
    [[ -x "$BIN_DIR/$c" ]] || die "$BIN_DIR/$c is missing: run 'make install' (or scripts/cluster.sh build) first"
  done
  [[ -s "$IMAGE_DIR/pause.tar" && -s "$IMAGE_DIR/busybox.tar" ]] \
    || die "the node's images are missing from $IMAGE_DIR: run 'make install' (or scripts/cluster.sh build) first"
  for c in containerd runc ctr nft ip curl openssl /usr/lib/cni/bridge /usr/lib/cni/host-local \
           /usr/lib/cni/portmap /usr/lib/cni/loopback; do
    if [[ "$c" == /* ]]; then [[ -x "$c" ]]; else command -v "$c" >/dev/null; fi \
      || die "$c is missing: run 'make install' (or scripts/cluster.sh build) first"
  done
  take_machine_lock
  check_owner
  teardown >/dev/null 2>&1 || teardown   # a fresh node every time; a failure shows its output
  local p
  for p in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$KUBELET_PORT" "$KUBELET_HEALTHZ_PORT" \
           "$PROXY_HEALTHZ_PORT" "$PROXY_METRICS_PORT"; do
    port_in_use "$p" && die "port $p is already in use by another process (not ours)"
  done
  mkdir -p "$RUN_DIR" "$LOG_DIR" "$CONF_DIR" "$POD_LOGS_DIR"
  echo "$CLUSTER_DIR" >"$OWNER_FILE"
  for c in "${SERVICES[@]}"; do rm -f "$LOG_DIR/$c.log"; done
  ensure_pki
  write_configs
  save_host_state
  setup_network

  launch etcd \
    --name=foldline-node --data-dir="$ETCD_DATA" \
    --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="foldline-node=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level=warn
  wait_for "etcd /health" etcd etcd_ok

  # Unlike envtest: ServiceAccount admission and token signing on, so pods get tokens; Node
  # authorization for the kubelet; a real advertise address, so the `kubernetes` Service has
  # endpoints; exec/logs/port-forward reach the kubelet at the node's InternalIP, verified
  # against our CA.
  launch kube-apiserver \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --secure-port="$APISERVER_PORT" --bind-address="$NODE_IP" --advertise-address="$NODE_IP" \
    --tls-cert-file="$PKI_DIR/apiserver.crt" --tls-private-key-file="$PKI_DIR/apiserver.key" \
    --client-ca-file="$PKI_DIR/ca.crt" \
    --token-auth-file="$PKI_DIR/tokens.csv" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --service-account-key-file="$PKI_DIR/sa.pub" \
    --service-account-signing-key-file="$PKI_DIR/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --kubelet-client-certificate="$PKI_DIR/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI_DIR/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI_DIR/ca.crt" \
    --kubelet-preferred-address-types=InternalIP \
    --allow-privileged=true \
    --profiling=false
  wait_for "kube-apiserver /readyz" kube-apiserver readyz_ok

  # --secure-port=0: neither serves anything here. --use-service-account-credentials: each
  # controller acts as its own ServiceAccount, as in a real cluster.
  launch kube-controller-manager \
    --kubeconfig="$CONF_DIR/kube-controller-manager.kubeconfig" \
    --leader-elect=false --secure-port=0 --controllers='*' \
    --use-service-account-credentials=true \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --root-ca-file="$PKI_DIR/ca.crt" \
    --service-account-private-key-file="$PKI_DIR/sa.key" \
    --cluster-signing-cert-file="$PKI_DIR/ca.crt" --cluster-signing-key-file="$PKI_DIR/ca.key" \
    --flex-volume-plugin-dir="$CLUSTER_DIR/flexvolume" \
    --profiling=false
  launch kube-scheduler \
    --kubeconfig="$CONF_DIR/kube-scheduler.kubeconfig" \
    --leader-elect=false --secure-port=0 --profiling=false

  launch containerd --config "$CONF_DIR/containerd.toml"
  wait_for "containerd" containerd containerd_ok
  import_image "$IMAGE_DIR/pause.tar" --base-name "${PAUSE_IMAGE%:*}" >/dev/null \
    || fail_start "importing the pause image failed"
  import_image "$IMAGE_DIR/busybox.tar" --base-name "${BUSYBOX_IMAGE%:*}" >/dev/null \
    || fail_start "importing the busybox image failed"

  local kubelet_t=$EPOCHREALTIME
  launch kubelet \
    --config="$CONF_DIR/kubelet.yaml" \
    --kubeconfig="$CONF_DIR/kubelet.kubeconfig" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --v=1
  wait_for "the kubelet's /healthz" kubelet kubelet_ok
  wait_for "node $NODE_NAME Ready" kubelet node_ready
  local ready_t=$EPOCHREALTIME

  launch kube-proxy --config="$CONF_DIR/kube-proxy.yaml" --v=1
  wait_for "kube-proxy /healthz" kube-proxy proxy_ok
  # Pods need the `default` ServiceAccount (made by the controller manager) before admission.
  wait_for "the default ServiceAccount" kube-controller-manager default_sa
  release_machine_lock

  log "node $NODE_NAME Ready $(since "$kubelet_t" "$ready_t")s after the kubelet started," \
      "$(since "$start_t" "$ready_t")s after \`up\` started; all up in $(since "$start_t")s"
  log "API server $APISERVER_URL; logs in $LOG_DIR; scripts/cluster.sh env for kubectl and helm"
  echo "$KUBECONFIG_PATH"
}

# ----------------------------------------------------------- the others ----

cmd_status() {
  local s pid rc=0
  for s in "${SERVICES[@]}"; do
    if pid="$(pid_of "$s")"; then echo "$s: running (pid $pid)"; else echo "$s: stopped"; rc=1; fi
  done
  if [[ -f "$KUBECONFIG_PATH" ]] && node_ready; then
    echo "node $NODE_NAME: Ready ($APISERVER_URL)"
  else
    echo "node $NODE_NAME: not ready"; rc=1
  fi
  return $rc
}

cmd_env() {
  printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_PATH"
  printf 'export PATH=%q:"$PATH"\n' "$BIN_DIR"
  # Where pods find the host's services, and the ranges in use (for tests and for the chart's values).
  printf 'export FOLDLINE_CLUSTER_NODE_IP=%q FOLDLINE_CLUSTER_POD_CIDR=%q FOLDLINE_CLUSTER_SERVICE_CIDR=%q\n' \
    "$NODE_IP" "$POD_CIDR" "$SERVICE_CIDR"
  printf 'export FOLDLINE_CLUSTER_BIN=%q\n' "$BIN_DIR"
  # Helm's own state stays in the checkout's cache, not in the user's home.
  printf 'export HELM_CACHE_HOME=%q HELM_CONFIG_HOME=%q HELM_DATA_HOME=%q\n' \
    "$CLUSTER_DIR/helm/cache" "$CLUSTER_DIR/helm/config" "$CLUSTER_DIR/helm/data"
}

cmd_load() {
  local archive="${1:-}"; shift || true
  [[ -n "$archive" ]] || die "usage: scripts/cluster.sh load ARCHIVE [NAME...]"
  [[ -f "$archive" ]] || die "no such image archive: $archive"
  need_root
  pid_of containerd >/dev/null || die "the node is not running: scripts/cluster.sh up first"
  local out names name
  out="$(import_image "$archive")" || die "importing $archive failed"
  # ctr prints `unpacking NAME (sha256:...)...done` per image.
  mapfile -t names < <(sed -n 's/^unpacking \([^ ]*\) (.*$/\1/p' <<<"$out")
  ((${#names[@]})) || die "$archive holds no named image (ctr said: $out)"
  for name in "$@"; do
    # Kubernetes reads `foldline:0.1.0` as docker.io/library/foldline:0.1.0.
    [[ "$name" == */* ]] || name="docker.io/library/$name"
    [[ "${name%%/*}" == *[.:]* || "${name%%/*}" == localhost ]] || name="docker.io/$name"
    ctr_ images tag --force "${names[0]}" "$name" >/dev/null || die "tagging ${names[0]} as $name failed"
    names+=("$name")
  done
  printf '%s\n' "${names[@]}"
}

case "${1:-}" in
  build) cmd_build ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  load) shift; cmd_load "$@" ;;
  *) echo "usage: $0 {build|up|down|status|env|load ARCHIVE [NAME...]}" >&2; exit 2 ;;
esac
