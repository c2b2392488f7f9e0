#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl, etcd, helm and kwok from the Go
# module proxy and caches them under ~/.cache/trustwarden/<component>/<version>/. The local
# node (hack/node-up.sh) adds kubelet, kube-scheduler and containerd, built the same way.
#
# Why wrapper modules: k8s.io/kubernetes points its staging modules at ./staging with replace
# directives, and Go ignores a dependency's replaces, so `go install k8s.io/kubernetes/...@v`
# fails. A wrapper module requires k8s.io/kubernetes and replaces every staging module with its
# published v0.X.Y version. etcd's server module has the same problem; a tiny main fixes it.
#
# Each component is built in a temporary directory and moved into the cache only when complete,
# so a half-built cache is never used. A cached component is reused as it is.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

CACHE_ROOT="${TRUSTWARDEN_CACHE:-$HOME/.cache/trustwarden}"
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
# Two compile jobs keep the peak memory of the kube-apiserver link well under the machine's size.
BUILD_JOBS="${BUILD_JOBS:-2}"

log() { printf '[build-control-plane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cached() { # component version binary...
  local dir="$CACHE_ROOT/$1/$2"; shift 2
  [[ -f "$dir/.complete" ]] || return 1
  for b in "$@"; do [[ -x "$dir/$b" ]] || return 1; done
}

install_dir() { # tmpdir component version: atomically publish a finished build
  local tmp="$1" dest="$CACHE_ROOT/$2/$3"
  touch "$tmp/out/.complete"
  mkdir -p "$(dirname "$dest")"
  rm -rf "$dest.partial"
  mv "$tmp/out" "$dest.partial"
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
  log "$2 $3 cached in $dest"
}

# Writes the wrapper go.mod for k8s.io/kubernetes $KUBE_VERSION into $1 and prints the ldflags.
k8s_wrapper() { # dir
  local tmp="$1" v="$KUBE_VERSION"
  local minor="${v#v1.}"; minor="${minor%%.*}"
  local staging="v0.${v#v1.}"
  log "kubernetes $v: fetching the published go.mod"
  (cd "$tmp" && go mod download -json "k8s.io/kubernetes@$v" > dl.json) \
    || die "go mod download k8s.io/kubernetes@$v failed (is the Go module proxy reachable?)"
  local gomod; gomod="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["GoMod"])' "$tmp/dl.json")"
  local goline godebug
  goline="$(grep -m1 -E '^go [0-9]' "$gomod")"
  godebug="$(grep -m1 -E '^godebug ' "$gomod" || true)"
  {
    echo "module trustwarden.local/k8s-build"
    echo
    echo "$goline"
    [[ -n "$godebug" ]] && echo "$godebug"
    echo
    echo "require k8s.io/kubernetes $v"
    echo
    # Every staging module is required as v0.0.0 in the published .mod; read the list from it.
    grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$gomod" | awk '{print $1}' | sort -u | while read -r m; do
      echo "replace $m => $m $staging"
    done
  } > "$tmp/go.mod"
  log "kubernetes $v: wrapper has $(grep -c '^replace' "$tmp/go.mod") staging replaces"
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  printf '%s' "$ld" > "$tmp/ldflags"
}

build_k8s_cmds() { # cache-component binary...: build k8s.io/kubernetes/cmd/<binary> into one cache dir
  local component="$1" v="$KUBE_VERSION"; shift
  local bins=("$@")
  if cached "$component" "$v" "${bins[@]}"; then log "$component $v: cached"; return; fi
  local tmp; tmp="$(mktemp -d "${TMPDIR:-/tmp}/tw-$component-build.XXXXXX")"
  trap 'rm -rf "${tmp:-}"; trap - RETURN' RETURN
  k8s_wrapper "$tmp"
  local ld; ld="$(cat "$tmp/ldflags")"
  mkdir -p "$tmp/out"
  local b
  for b in "${bins[@]}"; do
    log "$component $v: building $b (several minutes on 2 cores)"
    (cd "$tmp" && go build -mod=mod -p "$BUILD_JOBS" -trimpath -ldflags "$ld" -o "out/$b" "k8s.io/kubernetes/cmd/$b") \
      || die "building $b failed"
    local report=(--version)
    [[ "$b" == kubectl ]] && report=(version --client)  # kubectl has no --version flag
    "$tmp/out/$b" "${report[@]}" 2>/dev/null | grep -q "$v" || die "$b does not report $v"
  done
  install_dir "$tmp" "$component" "$v"
}

build_kubernetes() { build_k8s_cmds kubernetes kube-apiserver kube-controller-manager kubectl; }
# The local node's kubelet, and a scheduler so that pods are bound to it as in any cluster.
build_kubelet() { build_k8s_cmds kubelet kubelet; }
build_scheduler() { build_k8s_cmds kube-scheduler kube-scheduler; }

# containerd v2 from the Go module proxy: its module has no replace directives that Go would
# ignore, so `go install` of the three commands works as it is. CGO off gives static binaries;
# the btrfs snapshotter (cgo) and the other optional pieces are left out by build tags.
build_containerd() {
  local v="$CONTAINERD_VERSION" bins=(containerd containerd-shim-runc-v2 ctr)
  if cached containerd "$v" "${bins[@]}"; then log "containerd $v: cached"; return; fi
  local tmp; tmp="$(mktemp -d "${TMPDIR:-/tmp}/tw-containerd-build.XXXXXX")"
  trap 'rm -rf "${tmp:-}"; trap - RETURN' RETURN
  mkdir -p "$tmp/out"
  local mod=github.com/containerd/containerd/v2
  local ld="-s -w -X $mod/version.Version=$v -X $mod/version.Revision=module-proxy"
  log "containerd $v: building (a few minutes on 2 cores)"
  (cd "$tmp" && GOBIN="$tmp/out" go install -p "$BUILD_JOBS" -trimpath \
      -tags "no_btrfs no_devmapper no_zfs no_aufs" -ldflags "$ld" \
      "$mod/cmd/containerd@$v" "$mod/cmd/containerd-shim-runc-v2@$v" "$mod/cmd/ctr@$v") \
    || die "building containerd $v failed"
  "$tmp/out/containerd" --version | grep -q "$v" || die "containerd does not report $v"
  install_dir "$tmp" containerd "$v"
}

build_etcd() {
  local v="$ETCD_VERSION"
  if cached etcd "$v" etcd; then log "etcd $v: cached"; return; fi
  local tmp; tmp="$(mktemp -d "${TMPDIR:-/tmp}/tw-etcd-build.XXXXXX")"
  trap 'rm -rf "${tmp:-}"; trap - RETURN' RETURN
  cat > "$tmp/go.mod" <<MOD
module trustwarden.local/etcd-build

go 1.24

require go.etcd.io/etcd/server/v3 $v
MOD
  cat > "$tmp/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  log "etcd $v: building"
  mkdir -p "$tmp/out"
  (cd "$tmp" && go mod tidy && go build -p "$BUILD_JOBS" -trimpath -ldflags "-s -w" -o out/etcd .) \
    || die "building etcd $v failed"
  install_dir "$tmp" etcd "$v"
}

build_helm() {
  local v="$HELM_VERSION"
  if cached helm "$v" helm; then log "helm $v: cached"; return; fi
  local tmp; tmp="$(mktemp -d "${TMPDIR:-/tmp}/tw-helm-build.XXXXXX")"
  trap 'rm -rf "${tmp:-}"; trap - RETURN' RETURN
  log "helm $v: building"
  mkdir -p "$tmp/out"
  (cd "$tmp" && GOBIN="$tmp/out" go install -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$v" "helm.sh/helm/v3/cmd/helm@$v") \
    || die "building helm $v failed"
  install_dir "$tmp" helm "$v"
}

build_kwok() {
  # kwok simulates Nodes and the kubelet's pod lifecycle (Running, graceful deletion) for the
  # bench and the e2e cases that need nodes. v0.7's fast pod-delete stage stripped finalizers,
  # so versions.env pins v0.8.0 or later.
  local v="$KWOK_VERSION"
  if cached kwok "$v" kwok; then log "kwok $v: cached"; return; fi
  local tmp; tmp="$(mktemp -d "${TMPDIR:-/tmp}/tw-kwok-build.XXXXXX")"
  trap 'rm -rf "${tmp:-}"; trap - RETURN' RETURN
  log "kwok $v: building (about 3 minutes on 2 cores)"
  mkdir -p "$tmp/out"
  (cd "$tmp" && GOBIN="$tmp/out" go install -p "$BUILD_JOBS" -trimpath -ldflags "-s -w" \
      "sigs.k8s.io/kwok/cmd/kwok@$v") \
    || die "building kwok $v failed"
  "$tmp/out/kwok" --version >/dev/null || die "kwok $v does not run"
  install_dir "$tmp" kwok "$v"
}

components=("$@")
[[ ${#components[@]} -gt 0 ]] || components=(etcd helm kubernetes kwok)
start=$SECONDS
for c in "${components[@]}"; do
  case "$c" in
    kubernetes) build_kubernetes ;;
    etcd) build_etcd ;;
    helm) build_helm ;;
    kwok) build_kwok ;;
    kubelet) build_kubelet ;;
    kube-scheduler) build_scheduler ;;
    containerd) build_containerd ;;
    *) die "unknown component '$c' (expected kubernetes, etcd, helm, kwok, kubelet, kube-scheduler or containerd)" ;;
  esac
done
log "done in $((SECONDS - start))s"
