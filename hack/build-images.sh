#!/usr/bin/env bash
# Builds the local node's images without a registry and caches each as a docker-archive under
# ~/.cache/trustwarden/images/<name>/<key>/image.tar, where <key> hashes the image's inputs:
#   pause     the sandbox image: hack/node/pause.c compiled static, alone in a scratch image
#   base      Debian bookworm minbase with python3 and pip (mmdebstrap), tagged with the name the
#             Dockerfile expects: docker.io/library/python:<debian's python>-slim-bookworm
#   operator  the project's own Dockerfile (`buildah bud`, the one definition users build),
#             with PYTHON_VERSION set to the base's python
#   workload  hack/node/workload/ (the demo mTLS client and server) on the same base
# Prints nothing on stdout but `name=<ref> <tar>` lines, one per image asked for.
# Buildah runs with its own storage in a temporary directory, so nothing is left behind.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
CACHE_ROOT="${TRUSTWARDEN_CACHE:-$HOME/.cache/trustwarden}"
IMAGES="$CACHE_ROOT/images"
SUITE=bookworm
BASE_PACKAGES="python3,python3-pip,python3-venv,passwd,ca-certificates"

log() { printf '[build-images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need() { # command debian-package
  command -v "$1" >/dev/null && return
  log "installing $2 from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2 || die "apt-get install $2 failed"
}

key_of() { sha256sum | cut -c1-16; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/tw-images.XXXXXX")"
cleanup() {
  # Buildah's overlay storage may hold mounts; unmount them before removing the directory.
  if [[ -d "$tmp/storage" ]]; then
    buildah --root "$tmp/storage" --runroot "$tmp/run" rm --all >/dev/null 2>&1 || true
    grep -F " $tmp/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
bah() { buildah --root "$tmp/storage" --runroot "$tmp/run" --storage-driver overlay "$@"; }
# RUN steps use Debian's runc by path: buildah would pick crun when it is installed, and crun
# refuses this host's cgroup v1/v2 hybrid ("cgroups in hybrid mode not supported").

publish() { # name key ref: move $tmp/<name>.tar into the cache atomically
  local dest="$IMAGES/$1/$2"
  mkdir -p "$IMAGES/$1"
  rm -rf "$dest.partial"; mkdir -p "$dest.partial"
  mv "$tmp/$1.tar" "$dest.partial/image.tar"
  printf '%s\n' "$3" > "$dest.partial/name"
  touch "$dest.partial/.complete"
  rm -rf "$dest"; mv "$dest.partial" "$dest"
  log "$1 cached in $dest"
}

# --- pause ---
pause_key() { { cat "$here/node/pause.c"; gcc --version | head -1; } | key_of; }
build_pause() {
  local key; key="$(pause_key)"; local ref="localhost/trustwarden/pause:$key"
  if [[ ! -f "$IMAGES/pause/$key/.complete" ]]; then
    need gcc gcc
    log "pause: compiling a static binary"
    gcc -static -Os -s -o "$tmp/pause" "$here/node/pause.c" || die "compiling pause.c failed (libc6-dev installed?)"
    local c; c="$(bah from scratch)"
    bah copy "$c" "$tmp/pause" /pause >/dev/null
    bah config --entrypoint '["/pause"]' --user 65535:65535 "$c"
    bah commit --quiet "$c" "$ref" >/dev/null
    bah push --quiet "$ref" "docker-archive:$tmp/pause.tar:$ref"
    publish pause "$key" "$ref"
  fi
  echo "pause=$ref $IMAGES/pause/$key/image.tar"
}

# --- base ---
base_key() { printf '%s\n' "$SUITE" "$BASE_PACKAGES" "$(sed -n '/^build_base()/,/^}/p' "$0")" | key_of; }
base_dir() { echo "$IMAGES/base/$(base_key)"; }
build_base() {
  local key; key="$(base_key)"; local dest="$IMAGES/base/$key"
  if [[ ! -f "$dest/.complete" ]]; then
    need mmdebstrap mmdebstrap
    log "base: mmdebstrap $SUITE minbase with $BASE_PACKAGES (a few minutes)"
    mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
      --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
      --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
      "$SUITE" "$tmp/rootfs.tar" >&2 || die "mmdebstrap failed"
    # The official image is named after its python; name ours after Debian's python3 so the
    # Dockerfile's FROM python:${PYTHON_VERSION}-slim-bookworm finds it.
    local pyver
    pyver="$(tar -xOf "$tmp/rootfs.tar" ./var/lib/dpkg/status | awk '/^Package: python3$/{p=1} p&&/^Version:/{print $2; exit}')"
    pyver="${pyver%%-*}"
    [[ "$pyver" =~ ^3\.[0-9]+\.[0-9]+$ ]] || die "cannot read python3's version from the rootfs ($pyver)"
    local ref="docker.io/library/python:$pyver-slim-bookworm"
    local c; c="$(bah from scratch)"
    bah add "$c" "$tmp/rootfs.tar" / >/dev/null
    bah config --env LANG=C.UTF-8 --cmd python3 \
      --label "org.opencontainers.image.description=Debian $SUITE minbase with python3 $pyver and pip (mmdebstrap), a local stand-in for the official python slim image" "$c"
    bah commit --quiet "$c" "$ref" >/dev/null
    bah push --quiet "$ref" "docker-archive:$tmp/base.tar:$ref"
    publish base "$key" "$ref"
    printf '%s\n' "$pyver" > "$dest/python-version"
  fi
  echo "base=$(cat "$dest/name") $dest/image.tar"
}

load_base() { # into this run's buildah storage
  local dir; dir="$(base_dir)"
  [[ -f "$dir/.complete" ]] || build_base >/dev/null
  bah pull --quiet "docker-archive:$dir/image.tar" >/dev/null
}

context_hash() { # files... (paths relative to the repo)
  (cd "$repo" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 \
    | sort -z | xargs -0 sha256sum)
}

# --- operator: the project's Dockerfile ---
build_operator() {
  local base; base="$(base_dir)"
  [[ -f "$base/.complete" ]] || build_base >/dev/null
  local key; key="$( { base_key; context_hash Dockerfile .dockerignore pyproject.toml README.md operator; } | key_of)"
  local version; version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$repo/pyproject.toml" | head -1)"
  local ref="localhost/trustwarden/operator:$version-$key"
  if [[ ! -f "$IMAGES/operator/$key/.complete" ]]; then
    load_base
    log "operator: buildah bud of the Dockerfile (pip needs PyPI for the wheels)"
    # pip reaches PyPI through this host's network and so needs this host's CA bundle (a TLS
    # proxy may sit in between): bound over the base's bundle for the RUN steps only, never
    # written into the image.
    bah bud --runtime "$(command -v runc)" --quiet --pull=never --network host --layers=false \
      --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
      --build-arg "PYTHON_VERSION=$(cat "$base/python-version")" \
      -f "$repo/Dockerfile" -t "$ref" "$repo" >&2 || die "buildah bud of the Dockerfile failed"
    bah push --quiet "$ref" "docker-archive:$tmp/operator.tar:$ref"
    publish operator "$key" "$ref"
  fi
  echo "operator=$ref $IMAGES/operator/$key/image.tar"
}

# --- workload ---
build_workload() {
  local base; base="$(base_dir)"
  [[ -f "$base/.complete" ]] || build_base >/dev/null
  local key; key="$( { base_key; context_hash hack/node/workload; } | key_of)"
  local ref="localhost/trustwarden/svid-workload:$key"
  if [[ ! -f "$IMAGES/workload/$key/.complete" ]]; then
    load_base
    log "workload: buildah bud of hack/node/workload"
    bah bud --runtime "$(command -v runc)" --quiet --pull=never --network none --build-arg "BASE_IMAGE=$(cat "$base/name")" \
      -t "$ref" "$repo/hack/node/workload" >&2 || die "buildah bud of the workload failed"
    bah push --quiet "$ref" "docker-archive:$tmp/workload.tar:$ref"
    publish workload "$key" "$ref"
  fi
  echo "workload=$ref $IMAGES/workload/$key/image.tar"
}

need buildah buildah
need runc runc
names=("$@"); [[ ${#names[@]} -gt 0 ]] || names=(pause base operator workload)
start=$SECONDS
for n in "${names[@]}"; do
  case "$n" in
    pause) build_pause ;; base) build_base ;; operator) build_operator ;; workload) build_workload ;;
    *) die "unknown image '$n' (expected pause, base, operator or workload)" ;;
  esac
done
log "done in $((SECONDS - start))s"
