#!/usr/bin/env bash
# Builds the foldline image from the repository's Containerfile without a container daemon, the way
# `docker build` would on a machine that has one:
#   1. a Debian bookworm base rootfs (python3, python3-venv, ca-certificates) from Debian's packages with
#      mmdebstrap, cached under .cache/images/base/ by its inputs, imported as localhost/foldline-base:bookworm;
#   2. `buildah build` of the Containerfile on that base (--build-arg BASE=...), tagged
#      docker.io/library/foldline:<version>, and the team example (examples/team-image) on top of it;
#   3. docker archives in .cache/images/ that `ctr -n k8s.io images import` (or `docker load`) turn into
#      foldline:<version> and foldline-example-accounts:<version> without a registry.
# Images live in this checkout's own container storage (.cache/containers/), never the machine's, so
# several checkouts build side by side. A stamp skips everything when the inputs have not changed.
#
#   scripts/image.sh build          build what is stale (a no-op when current); prints progress
#   scripts/image.sh podman ARGS    podman on this checkout's storage, e.g. `scripts/image.sh podman images`
#   scripts/image.sh buildah ARGS   the same for buildah
#   scripts/image.sh archive        print the path of foldline's archive
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n1)
IMAGE=docker.io/library/foldline:$VERSION
EXAMPLE_IMAGE=docker.io/library/foldline-example-accounts:$VERSION
BASE_IMAGE=localhost/foldline-base:bookworm
IMAGES=$top/.cache/images
ARCHIVE=$IMAGES/foldline-$VERSION.tar
EXAMPLE_ARCHIVE=$IMAGES/foldline-example-accounts-$VERSION.tar
# The base's inputs: a change to any of these makes a new base (and so a new image).
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
SECURITY=http://deb.debian.org/debian-security
BASE_PACKAGES=python3,python3-venv,ca-certificates
# Root builds and runs with the kernel's overlayfs: no uidmap or fuse-overlayfs needed.
HOST_PACKAGES=(mmdebstrap buildah podman runc conmon skopeo)

log() { printf 'image: %s\n' "$*"; }
die() { printf 'image: ERROR: %s\n' "$*" >&2; exit 1; }

# Writes a file only when its content changes, atomically: other commands may be reading it.
write_if_changed() {
  local path=$1 content=$2
  [ -f "$path" ] && [ "$(cat "$path")" = "$content" ] && return
  printf '%s\n' "$content" >"$path.$$"
  mv -f "$path.$$" "$path"
}

# This checkout's container storage and engine settings. Run state goes under /run (short socket paths).
containers_env() {
  local id
  id=$(printf '%s' "$top" | sha256sum | cut -c1-12)
  local conf=$top/.cache/containers run=/run/foldline-containers/$id
  mkdir -p "$conf" "$run"
  write_if_changed "$conf/storage.conf" "[storage]
driver = \"overlay\"
graphroot = \"$conf/storage\"
runroot = \"$run/storage\""
  # Root here lacks CAP_SYS_RESOURCE: the runtime cannot raise a container's rlimits above the
  # runtime's own, so the defaults are ones it may always set. No systemd: cgroupfs and a file log.
  write_if_changed "$conf/containers.conf" "[containers]
default_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]
[engine]
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
runtime = \"runc\"
tmp_dir = \"$run/libpod\""
  export CONTAINERS_STORAGE_CONF=$conf/storage.conf CONTAINERS_CONF=$conf/containers.conf
}

install_host_packages() {
  local missing=() p
  for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]} from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The files that go into an image: what the build contexts hold (.dockerignore allows pyproject.toml,
# services/, operator/), the Containerfiles, this script and the base's inputs.
inputs_hash() {
  {
    printf '%s\n' "$VERSION" "$SUITE" "$MIRROR" "$SECURITY" "$BASE_PACKAGES"
    git ls-files -z --cached --others --exclude-standard -- \
        Containerfile .dockerignore pyproject.toml services operator examples/team-image scripts/image.sh \
      | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
      | LC_ALL=C sort -z | xargs -0 -r sha256sum
  } | sha256sum | cut -c1-16
}

base_key() {
  printf '%s\n' "$SUITE" "$MIRROR" "$SECURITY" "$BASE_PACKAGES" "$(sed -n '/^build_base()/,/^}/p' "$0")" \
    | sha256sum | cut -c1-16
}

# A minimal Debian rootfs as a tarball: minbase plus Python, merged /usr without the usrmerge package
# (which would pull in perl), no documentation, manuals or translations.
build_base() {
  local tar=$1
  mmdebstrap --variant=minbase --include="$BASE_PACKAGES" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/log/*.log "$1"/var/log/apt/*' --skip=output/dev \
    --format=tar "$SUITE" "$tar" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY $SUITE-security main"
}

ensure_base() {
  local key tar have
  key=$(base_key)
  tar=$IMAGES/base/foldline-base-$SUITE-$key.tar
  if [ ! -s "$tar" ]; then
    log "making the base rootfs from Debian's packages (mmdebstrap $SUITE minbase + $BASE_PACKAGES)"
    mkdir -p "$IMAGES/base"
    rm -f "$IMAGES"/base/foldline-base-*.tar
    local t0=$SECONDS
    build_base "$tar.partial" >"$IMAGES/base/mmdebstrap.log" 2>&1 \
      || { tail -n 30 "$IMAGES/base/mmdebstrap.log" >&2; rm -f "$tar.partial"; die "mmdebstrap failed"; }
    mv "$tar.partial" "$tar"
    log "base rootfs: $(du -h "$tar" | cut -f1) in $((SECONDS - t0)) s"
  fi
  have=$(podman image inspect --format '{{index .Labels "io.foldline.base-key"}}' "$BASE_IMAGE" 2>/dev/null || true)
  if [ "$have" != "$key" ]; then
    log "importing the base as $BASE_IMAGE"
    podman import --quiet --change "LABEL io.foldline.base-key=$key" \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' "$tar" "$BASE_IMAGE" >/dev/null
  fi
}

# The commit the image's sources come from, "-dirty" when they differ from it. A clean build is kept
# across later commits that leave its inputs alone: its label then names the first such commit.
revision() {
  local rev
  rev=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git status --porcelain -- Containerfile .dockerignore pyproject.toml services operator 2>/dev/null)" ]; then
    rev=$rev-dirty
  fi
  printf '%s' "$rev"
}

# buildah build with chroot isolation (no runtime, no cgroups needed), exactly as `docker build` would
# run the same Containerfile; extra arguments go to buildah.
build_image() {
  local tag=$1 context=$2 file=$3 before after
  shift 3
  before=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
  buildah build --layers --isolation chroot --pull-never --file "$file" --tag "$tag" "$@" "$context"
  after=$(podman image inspect --format '{{.Id}}' "$tag")
  # The image this one replaces would only fill the disk (the build's cached layers stay).
  if [ -n "$before" ] && [ "$before" != "$after" ]; then
    podman rmi --force "$before" >/dev/null 2>&1 || true
  fi
}

# Earlier builds leave layers nothing refers to (a few hundred MB per source change). The builder
# stage is tagged first (its layers all come from the cache, so this takes seconds): its installed
# dependencies are what a rebuild after a source change reuses. Then every untagged image goes.
prune_build_cache() {
  buildah build --layers --isolation chroot --pull-never --quiet --target builder \
    --file Containerfile --tag localhost/foldline-build-cache:builder "$@" "$top" >/dev/null
  podman image prune --force >/dev/null
}

export_archive() {
  local image=$1 archive=$2
  rm -f "$archive" "$archive.partial"
  podman save --quiet --format docker-archive --output "$archive.partial" "$image"
  mv "$archive.partial" "$archive"
  log "$archive: $(du -h "$archive" | cut -f1), $image"
}

cmd_build() {
  local stamp=$IMAGES/build.stamp key
  mkdir -p "$IMAGES"
  # One build at a time per checkout; a second waits, then finds the images current.
  exec 9>"$IMAGES/.lock"
  flock 9
  key=$(inputs_hash)
  case $(revision) in *-dirty) key=$key-dirty ;; esac
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && [ -s "$ARCHIVE" ] && [ -s "$EXAMPLE_ARCHIVE" ] \
      && (containers_env && podman image exists "$IMAGE" && podman image exists "$EXAMPLE_IMAGE") 2>/dev/null; then
    log "$IMAGE and $EXAMPLE_IMAGE are current ($key)"
    return
  fi
  install_host_packages
  containers_env
  local t0=$SECONDS source
  ensure_base
  source=$(git remote get-url origin 2>/dev/null || true)
  # pip reaches PyPI over the host's network and trusts what the host trusts (a TLS-intercepting
  # proxy's CA, say): the host's CA bundle is mounted over the image's, a path both bases have so no
  # mount point is left in a layer, and pip is pointed at it, for the build only.
  local ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
  [ -f "$ca" ] || die "no CA bundle at $ca (set PIP_CERT to the bundle pip should trust)"
  log "building $IMAGE from Containerfile on $BASE_IMAGE"
  local pip_trust=(--network host --volume "$ca:/etc/ssl/certs/ca-certificates.crt:ro"
                   --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
  build_image "$IMAGE" "$top" Containerfile "${pip_trust[@]}" \
    --build-arg "BASE=$BASE_IMAGE" --build-arg "VERSION=$VERSION" --build-arg "REVISION=$(revision)" \
    ${source:+--build-arg "SOURCE=$source"}
  log "building $EXAMPLE_IMAGE from examples/team-image"
  build_image "$EXAMPLE_IMAGE" examples/team-image examples/team-image/Containerfile "${pip_trust[@]}" \
    --build-arg "FOLDLINE_IMAGE=$IMAGE"
  export_archive "$IMAGE" "$ARCHIVE"
  export_archive "$EXAMPLE_IMAGE" "$EXAMPLE_ARCHIVE"
  prune_build_cache "${pip_trust[@]}" --build-arg "BASE=$BASE_IMAGE"
  printf '%s\n' "$key" >"$stamp"
  log "built in $((SECONDS - t0)) s; image $(podman image inspect --format '{{.Size}}' "$IMAGE" \
    | awk '{printf "%.0f MB", $1/1e6}')"
}

case "${1:-}" in
  build) cmd_build ;;
  podman | buildah | skopeo)
    tool=$1
    shift
    containers_env
    exec "$tool" "$@"
    ;;
  archive) printf '%s\n' "$ARCHIVE" ;;
  example-archive) printf '%s\n' "$EXAMPLE_ARCHIVE" ;;
  *) die "usage: $0 build | podman ARGS | buildah ARGS | skopeo ARGS | archive | example-archive" ;;
esac
