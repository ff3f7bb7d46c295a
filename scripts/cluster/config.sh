# The node's certificates, kubeconfigs and component configs (sourced by scripts/cluster.sh).

# ------------------------------------------------------------------ pki ----

# issue NAME CN [O] [SANS] : an EC key and a certificate signed by our CA (client, or serving
# when SANS is given). EC keys: quick to make even on a loaded machine.
issue() {
  local name="$1" cn="$2" org="${3:-}" sans="${4:-}" d="$PKI_DIR" subj="/CN=$2"
  [[ -n "$org" ]] && subj="/O=$org/CN=$cn"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/$name.key"
  openssl req -new -key "$d/$name.key" -subj "$subj" -out "$d/$name.csr"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n "$sans" ]]; then
      echo "extendedKeyUsage=serverAuth"
      echo "subjectAltName=$sans"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$d/$name.ext"
  openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 3650 -extfile "$d/$name.ext" -out "$d/$name.crt"
  rm -f "$d/$name.csr" "$d/$name.ext"
}

# Generated once and kept (they only need to be stable across restarts, not secret); the
# REV marker regenerates them when what they must contain changes.
PKI_REV="rev=1 node_ip=$NODE_IP service_ip=$KUBERNETES_SERVICE_IP node=$NODE_NAME"

ensure_pki() {
  command -v openssl >/dev/null || die "openssl is not installed"
  mkdir -p "$PKI_DIR"
  [[ -f "$PKI_DIR/.complete" && "$(cat "$PKI_DIR/.complete")" == "$PKI_REV" ]] && return 0
  rm -f "$PKI_DIR"/*
  (
    set -e
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=foldline-cluster-ca" -keyout "$PKI_DIR/ca.key" -out "$PKI_DIR/ca.crt"
    # Pods reach the API server as https://10.96.0.1 (the `kubernetes` Service), the host as NODE_IP.
    issue apiserver kube-apiserver "" \
      "IP:$NODE_IP,IP:$KUBERNETES_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    issue kubelet-serving "$NODE_NAME" "" "IP:$NODE_IP,DNS:$NODE_NAME"
    # Identities the default RBAC policy (and the Node authorizer) already knows.
    issue kubelet "system:node:$NODE_NAME" system:nodes
    issue apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
    issue kube-controller-manager system:kube-controller-manager
    issue kube-scheduler system:kube-scheduler
    issue kube-proxy system:kube-proxy
    openssl genrsa -out "$PKI_DIR/sa.key" 2048
    openssl rsa -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub"
    # The admin: a static bearer token in group system:masters (RBAC superuser).
    printf '%s,admin,admin-uid,"system:masters"\n' "$(openssl rand -hex 24)" >"$PKI_DIR/tokens.csv"
  ) >"$LOG_DIR/pki.log" 2>&1 || { cat "$LOG_DIR/pki.log" >&2; die "generating the node's PKI failed"; }
  chmod 600 "$PKI_DIR"/*.key "$PKI_DIR/tokens.csv"
  echo "$PKI_REV" >"$PKI_DIR/.complete"
}

# ------------------------------------------------------------ configs ----

kubeconfig() {  # kubeconfig FILE USER_YAML : a kubeconfig for the API server with that user
  local file="$1" user="$2"
  cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: foldline
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(base64 -w0 <"$PKI_DIR/ca.crt")
users:
- name: user
  user:
$user
contexts:
- name: foldline
  context:
    cluster: foldline
    user: user
current-context: foldline
EOF
  chmod 600 "$file.tmp"
  mv "$file.tmp" "$file"
}

cert_user() {
  printf '    client-certificate: %s\n    client-key: %s\n' "$PKI_DIR/$1.crt" "$PKI_DIR/$1.key"
}

write_configs() {
  kubeconfig "$KUBECONFIG_PATH" "    token: $(cut -d, -f1 "$PKI_DIR/tokens.csv")"
  local c
  for c in kubelet kube-controller-manager kube-scheduler kube-proxy; do
    kubeconfig "$CONF_DIR/$c.kubeconfig" "$(cert_user "$c")"
  done

  # Pods get no resolver (no cluster DNS, and nothing outside this machine to ask).
  echo "# foldline one-node cluster: no DNS; pods address Services by ClusterIP" >"$CONF_DIR/resolv.conf"

  # The settings this VM needs (cgroup v1, swap, no CAP_SYS_RESOURCE) are explained in docs/cluster.md.
  cat >"$CONF_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI_DIR/kubelet-serving.crt
tlsPrivateKeyFile: $PKI_DIR/kubelet-serving.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI_DIR/ca.crt
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
resolvConf: $CONF_DIR/resolv.conf
clusterDomain: cluster.local
podLogsDir: $POD_LOGS_DIR
staticPodPath: ""
serializeImagePulls: false
# Mounted ConfigMaps and Secrets follow their objects within ~10 s (default: a minute).
syncFrequency: 10s
rotateCertificates: false
serverTLSBootstrap: false
registerNode: true
maxPods: 110
# The node is shared with builds and other tests: only evict when a disk is really full.
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%
  imagefs.available: 2%
imageGCHighThresholdPercent: 98
imageGCLowThresholdPercent: 95
EOF

  cat >"$CONF_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection:
  kubeconfig: $CONF_DIR/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
# NodePorts only on the node's own address, never on the machine's other interfaces.
nodePortAddresses: ["$NODE_IP/32"]
# Zeros leave the host's conntrack settings alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF

  mkdir -p "$CNI_CONF_DIR" "$CNI_DATA_DIR"
  # bridge + host-local IPAM (+ portmap for hostPort); containerd adds the loopback plugin to every
  # pod itself. No ipMasq: pods talk to the node and to each other only.
  cat >"$CNI_CONF_DIR/10-foldline.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "foldline",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$CNI_DATA_DIR",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

  # Debian's containerd with a config, root, state and socket of our own (never /etc/containerd,
  # never Debian's /run/containerd/containerd.sock).
  cat >"$CONF_DIR/containerd.toml" <<EOF
version = 2
root = "$CONTAINERD_ROOT/root"
state = "$RUN_DIR/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins."io.containerd.internal.v1.opt"]
  path = "$CONTAINERD_ROOT/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # root here lacks CAP_SYS_RESOURCE: runc cannot set the negative oom_score_adj the kubelet asks
  # for ("can't get final child's PID from pipe: EOF"), so clamp it to what we may set.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$RUNC_ROOT"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CNI_CONF_DIR"
    max_conf_num = 1
EOF
}
