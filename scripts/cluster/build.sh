# `scripts/cluster.sh build` (sourced): the Debian packages the node needs, the Kubernetes
# binaries and Helm from pinned Go modules, and the sandbox (pause) and busybox images.
# Everything is cached under $CLUSTER_DIR and stamped, so a second run is a no-op.

# Bump when a build command below changes, so cached results are rebuilt.
K8S_BUILD_REV=1
HELM_BUILD_REV=1
IMAGE_BUILD_REV=1

K8S_MODULE_DIR="$REPO_ROOT/tools/envtest"
HELM_MODULE_DIR="$REPO_ROOT/tools/helm"
# Built here; etcd, kube-apiserver and kube-controller-manager are copied from envtest's build
# (same module, same flags), so they are linked once for both.
NODE_PACKAGES=(k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet
               k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl)

ensure_packages() {
  # command or file -> Debian package; a fresh bookworm machine lacks most of them.
  local -A want=(
    [containerd]=containerd [runc]=runc [/usr/lib/cni/bridge]=containernetworking-plugins
    [umoci]=umoci [nft]=nftables [iptables]=iptables [conntrack]=conntrack [socat]=socat
    [/bin/busybox]=busybox-static [gcc]=gcc [/usr/lib/x86_64-linux-gnu/libc.a]=libc6-dev
    [openssl]=openssl [curl]=curl [ip]=iproute2 [flock]=util-linux [ss]=iproute2 [pgrep]=procps
  )
  local what missing=()
  for what in "${!want[@]}"; do
    if [[ "$what" == /* ]]; then [[ -e "$what" ]] && continue
    else command -v "$what" >/dev/null && continue
    fi
    missing+=("${want[$what]}")
  done
  ((${#missing[@]})) || return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  [[ $EUID -eq 0 ]] || die "missing Debian packages: ${missing[*]} (run as root to install them)"
  log "installing Debian packages: ${missing[*]}"
  # Debian's containerd package would start its own daemon on a systemd machine; ours runs with
  # its own config, socket and state, so the two never meet.
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      "${missing[@]}"; } >"$BUILD_LOG_DIR/apt.log" 2>&1 || { tail -n 30 "$BUILD_LOG_DIR/apt.log" >&2; die "apt-get install failed"; }
}

stamp_of() {  # stamp_of REV FILE... : hash of the inputs that decide a build's output
  local rev="$1"; shift
  { echo "rev=$rev"; go version; cat "$@"; } | sha256sum | cut -d' ' -f1
}

stamp_current() {  # stamp_current NAME STAMP FILE... : the stamp matches and every file exists
  local name="$1" stamp="$2" f; shift 2
  [[ -f "$BIN_DIR/.stamp-$name" && "$(cat "$BIN_DIR/.stamp-$name")" == "$stamp" ]] || return 1
  for f in "$@"; do [[ -s "$f" ]] || return 1; done
}

go_build() {  # go_build MODULE_DIR LOG LDFLAGS OUT_DIR PACKAGE...
  local dir="$1" logf="$2" ldflags="$3" out="$4"; shift 4
  # -mod=readonly: go.sum is checked in and must already be complete.
  if ! (cd "$dir" && go build -mod=readonly -buildvcs=false -trimpath -ldflags "$ldflags" -o "$out/" "$@") \
       >"$logf" 2>&1; then
    tail -n 40 "$logf" >&2
    die "go build failed (full log: $logf)"
  fi
}

build_k8s() {
  local stamp c
  stamp="$(stamp_of "$K8S_BUILD_REV" "$K8S_MODULE_DIR/go.mod" "$K8S_MODULE_DIR/go.sum")"
  local files=(); for c in "${K8S_COMPONENTS[@]}"; do files+=("$BIN_DIR/$c"); done
  if stamp_current k8s "$stamp" "${files[@]}"; then
    log "Kubernetes binaries up to date in $BIN_DIR"
    return 0
  fi
  # The control plane comes from envtest's build (its own lock and cache).
  "$REPO_ROOT/scripts/envtest.sh" build
  local k8s_version minor tmp="$CLUSTER_DIR/bin.k8s.tmp" start_s=$SECONDS
  k8s_version="$(cd "$K8S_MODULE_DIR" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
  minor="${k8s_version#v1.}"; minor="${minor%%.*}"
  # Without these the binaries report v0.0.0-master (and the kubelet registers that version).
  local vpkg=k8s.io/component-base/version
  local ldflags="-s -w -X $vpkg.gitVersion=$k8s_version -X $vpkg.gitMajor=1"
  ldflags+=" -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"
  rm -rf "$tmp"; mkdir -p "$tmp"
  # Measured: 282 CPU-seconds with an empty build cache (~2.5 min on 2 idle cores, 9.6 min at load 14);
  # 15 s when only the binaries are gone.
  log "building kube-scheduler, kubelet, kube-proxy, kubectl ($k8s_version);" \
      "cold: ~3 min on 2 idle cores, much longer under load"
  go_build "$K8S_MODULE_DIR" "$BUILD_LOG_DIR/k8s.log" "$ldflags" "$tmp" "${NODE_PACKAGES[@]}"
  for c in etcd kube-apiserver kube-controller-manager; do
    cp "$CACHE_ROOT/envtest/bin/$c" "$tmp/$c"
  done
  for c in "${K8S_COMPONENTS[@]}"; do mv -f "$tmp/$c" "$BIN_DIR/$c"; done
  rm -rf "$tmp"
  echo "$stamp" >"$BIN_DIR/.stamp-k8s"
  log "built the node's Kubernetes binaries in $((SECONDS - start_s))s"
}

build_helm() {
  local stamp version tmp="$CLUSTER_DIR/bin.helm.tmp" start_s=$SECONDS
  stamp="$(stamp_of "$HELM_BUILD_REV" "$HELM_MODULE_DIR/go.mod" "$HELM_MODULE_DIR/go.sum")"
  if stamp_current helm "$stamp" "$BIN_DIR/helm"; then
    log "helm up to date in $BIN_DIR"
    return 0
  fi
  version="$(cd "$HELM_MODULE_DIR" && go list -m -f '{{.Version}}' helm.sh/helm/v4)"
  local vpkg=helm.sh/helm/v4/internal/version
  rm -rf "$tmp"; mkdir -p "$tmp"
  log "building helm $version; cold: ~2 min on 2 idle cores (5 min at load 14)"
  go_build "$HELM_MODULE_DIR" "$BUILD_LOG_DIR/helm.log" \
    "-s -w -X $vpkg.version=$version -X $vpkg.gitTreeState=clean" "$tmp" helm.sh/helm/v4/cmd/helm
  mv -f "$tmp/helm" "$BIN_DIR/helm"
  rm -rf "$tmp"
  echo "$stamp" >"$BIN_DIR/.stamp-helm"
  log "built helm in $((SECONDS - start_s))s"
}

# oci_archive NAME TAG ROOTFS_DIR OUT CONFIG_ARGS... : a one-layer OCI image of ROOTFS_DIR,
# packed with umoci (no daemon, no registry) and tarred as an OCI archive that
# `ctr images import --base-name` names NAME:TAG.
oci_archive() {
  local name="$1" tag="$2" rootfs="$3" out="$4"; shift 4
  local layout="$out.layout"
  rm -rf "$layout"
  {
    umoci init --layout "$layout"
    umoci new --image "$layout:$tag"
    umoci insert --image "$layout:$tag" "$rootfs" /
    umoci config --image "$layout:$tag" --author=foldline "$@"
    umoci gc --layout "$layout"
    tar -C "$layout" -cf "$out.tmp" .
  } >>"$BUILD_LOG_DIR/images.log" 2>&1 || { tail -n 20 "$BUILD_LOG_DIR/images.log" >&2; die "building image $name failed"; }
  mv -f "$out.tmp" "$out"
  rm -rf "$layout"
}

build_images() {
  local stamp src="$REPO_ROOT/tools/cluster/pause.c" work="$CLUSTER_DIR/images.tmp"
  stamp="$( { stamp_of "$IMAGE_BUILD_REV" "$src" /bin/busybox; gcc --version | head -n1; umoci --version; } \
            | sha256sum | cut -d' ' -f1)"
  mkdir -p "$IMAGE_DIR"
  if [[ -f "$IMAGE_DIR/.stamp" && "$(cat "$IMAGE_DIR/.stamp")" == "$stamp" \
        && -s "$IMAGE_DIR/pause.tar" && -s "$IMAGE_DIR/busybox.tar" ]]; then
    log "images up to date in $IMAGE_DIR"
    return 0
  fi
  log "building the pause and busybox images"
  : >"$BUILD_LOG_DIR/images.log"
  rm -rf "$work"; mkdir -p "$work/pause" "$work/busybox/bin" "$work/busybox/tmp"
  gcc -static -Os -s -Wall -Wextra -Werror -o "$work/pause/pause" "$src" >>"$BUILD_LOG_DIR/images.log" 2>&1 \
    || { cat "$BUILD_LOG_DIR/images.log" >&2; die "compiling $src failed"; }
  oci_archive "${PAUSE_IMAGE%:*}" "${PAUSE_IMAGE##*:}" "$work/pause" "$IMAGE_DIR/pause.tar" \
    --config.entrypoint=/pause --config.user=65535:65535
  # busybox with its applets as symlinks, for the cluster's own tests (sh, httpd, nc, wget...).
  cp /bin/busybox "$work/busybox/bin/busybox"
  local applet
  for applet in $(/bin/busybox --list); do
    [[ "$applet" == busybox ]] || ln -sf busybox "$work/busybox/bin/$applet"
  done
  chmod 1777 "$work/busybox/tmp"
  oci_archive "${BUSYBOX_IMAGE%:*}" "${BUSYBOX_IMAGE##*:}" "$work/busybox" "$IMAGE_DIR/busybox.tar" \
    --config.cmd=/bin/sh --config.env=PATH=/bin
  rm -rf "$work"
  echo "$stamp" >"$IMAGE_DIR/.stamp"
}

cmd_build() {
  mkdir -p "$CLUSTER_DIR" "$BIN_DIR" "$BUILD_LOG_DIR"
  ensure_packages
  go_env
  # Serialise concurrent builds (two test sessions, or `make install` twice at once).
  exec 8>"$CLUSTER_DIR/.build.lock"
  flock 8
  build_k8s
  build_helm
  build_images
  # Release the lock now: processes started later must not inherit fd 8.
  exec 8>&-
}
