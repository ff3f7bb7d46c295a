# Shared settings and helpers of scripts/cluster.sh (sourced, never run).
#
# The node's network (all private, made by `up`, removed by `down`; documented in docs/cluster.md):
#   NODE_IP       10.200.0.1/32 on `foldline0`, a port-less bridge standing in for a dummy interface
#                 (this VM's kernel has no dummy driver): the kubelet's --node-ip, the API server's
#                 bind and advertise address, and the address pods use to reach services on the host.
#   POD_CIDR      10.244.0.0/24 on the CNI bridge `foldline-cni0` (gateway 10.244.0.1).
#   SERVICE_CIDR  10.96.0.0/16 (the `kubernetes` Service is 10.96.0.1); routed to `foldline0` so the
#                 host's own connections to ClusterIPs leave from NODE_IP.
# Ports (all 17xxx, clear of envtest's 16443 and 12379/12380): etcd 17379/17380 on 127.0.0.1,
# kube-apiserver 17443 on NODE_IP, kubelet 17250 on NODE_IP (healthz 17248 on 127.0.0.1),
# kube-proxy healthz/metrics 17256/17249 on 127.0.0.1; the controller manager and the scheduler
# serve nothing (--secure-port=0).

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE_ROOT="${FOLDLINE_CACHE_DIR:-$REPO_ROOT/.cache}"
CLUSTER_DIR="$CACHE_ROOT/cluster"
BIN_DIR="$CLUSTER_DIR/bin"            # our own copies: envtest.sh's stray killer never matches them
IMAGE_DIR="$CLUSTER_DIR/images"
PKI_DIR="$CLUSTER_DIR/pki"
CONF_DIR="$CLUSTER_DIR/conf"
LOG_DIR="$CLUSTER_DIR/logs"
ETCD_DATA="$CLUSTER_DIR/etcd"
CONTAINERD_ROOT="$CLUSTER_DIR/containerd"
CNI_CONF_DIR="$CLUSTER_DIR/cni/net.d"
CNI_DATA_DIR="$CLUSTER_DIR/cni/ipam"
POD_LOGS_DIR="$CLUSTER_DIR/pod-logs"
KUBECONFIG_PATH="$CLUSTER_DIR/kubeconfig"
BUILD_LOG_DIR="$CLUSTER_DIR/build-logs"

# Machine-wide: one node per machine (the kubelet's /var/lib/kubelet and containerd's shim
# sockets under /run/containerd are fixed paths).
RUN_DIR=/run/foldline-cluster         # pid files, sockets, containerd state, saved sysctls
MACHINE_LOCK=/run/lock/foldline-cluster.lock
KUBELET_ROOT=/var/lib/kubelet
CONTAINERD_SOCK="$RUN_DIR/containerd.sock"
RUNC_ROOT="$RUN_DIR/runc"

NODE_NAME=foldline-node
NODE_IP=10.200.0.1
NODE_IF=foldline0
CNI_BRIDGE=foldline-cni0
NFT_TABLE=foldline-node               # inet table: pods reach only pods, Services and the node
POD_CIDR=10.244.0.0/24
POD_GATEWAY=10.244.0.1
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SERVICE_IP=10.96.0.1

ETCD_CLIENT_PORT="${FOLDLINE_CLUSTER_ETCD_PORT:-17379}"
ETCD_PEER_PORT="${FOLDLINE_CLUSTER_ETCD_PEER_PORT:-17380}"
APISERVER_PORT="${FOLDLINE_CLUSTER_APISERVER_PORT:-17443}"
KUBELET_PORT=17250
KUBELET_HEALTHZ_PORT=17248
PROXY_HEALTHZ_PORT=17256
PROXY_METRICS_PORT=17249
APISERVER_URL="https://$NODE_IP:$APISERVER_PORT"
START_TIMEOUT="${FOLDLINE_CLUSTER_START_TIMEOUT:-120}"   # seconds, per wait

# The sandbox and test images built by `build` (OCI archives under $IMAGE_DIR).
PAUSE_IMAGE=localhost/foldline/pause:1
BUSYBOX_IMAGE=localhost/foldline/busybox:1

K8S_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
# Started by `up`, in order; `down` stops them in reverse.
SERVICES=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy)

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [[ $EUID -eq 0 ]] || die "the node needs root (namespaces, mounts, cgroups, network); run as root"; }

go_env() {
  # Go's PATH entry lives in ~/.bashrc, which non-interactive shells skip.
  command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
  command -v go >/dev/null || die "go is not installed (needed to build the node's binaries)"
  # Never let a go.mod's `go` line trigger a toolchain download: use the local Go.
  export GOTOOLCHAIN=local
}

exe_of() {  # the executable a service runs from
  case "$1" in
    containerd) command -v containerd ;;
    *) echo "$BIN_DIR/$1" ;;
  esac
}

pid_of() {  # prints the pid if the recorded process still runs the recorded executable
  local f="$RUN_DIR/$1.pid" pid exe
  [[ -f "$f" ]] || return 1
  read -r pid exe <"$f" || return 1
  [[ -n "$pid" && -n "$exe" ]] || return 1
  # Guard against pid reuse: the process must still be our binary.
  [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]] || return 1
  echo "$pid"
}

launch() {  # launch NAME ARGS... : own session, pid file ("pid exe"), log file
  local name="$1" exe; shift
  exe="$(exe_of "$name")"
  # setsid: a group leader of its own, so stop can signal the whole group and no terminal's
  # signals reach it; stdin from /dev/null so it never holds one.
  # 8>&- 9>&-: the build and machine locks must not live on in the service.
  setsid "$exe" "$@" </dev/null >"$LOG_DIR/$name.log" 2>&1 8>&- 9>&- &
  echo "$! $(readlink -f "$exe")" >"$RUN_DIR/$name.pid"
}

stop_service() {  # SIGTERM, up to GRACE seconds, then SIGKILL
  local name="$1" grace="${2:-15}" pid
  if pid="$(pid_of "$name")"; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + grace))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) did not exit on SIGTERM; killing"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name"
  fi
  rm -f "$RUN_DIR/$name.pid"
}

kill_strays() {
  # Our binaries running without a pid file (a crashed `up`): matched by their exact executable
  # path under this checkout's cache, never by a name pattern, so nothing else is touched.
  local exe pid c
  for c in "${K8S_COMPONENTS[@]}" helm; do
    exe="$BIN_DIR/$c"
    for pid in $(pgrep -x "${c:0:15}" 2>/dev/null); do
      [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]] || continue
      kill -KILL "$pid" 2>/dev/null && log "killed a stray $c (pid $pid)"
    done
  done
}

port_in_use() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

kubectl_() { "$BIN_DIR/kubectl" --kubeconfig="$KUBECONFIG_PATH" --request-timeout=10s "$@"; }
ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }
