#!/usr/bin/env bash
# Builds the cert-manager controller from the Go module proxy into
# ~/.cache/trustwarden/cert-manager/<version>/ (binary `cert-manager-controller` and the CRDs in
# crds/), the same way hack/build-control-plane.sh builds the control plane: a wrapper module, a
# pinned release, CGO_ENABLED=0, built in a temporary directory and moved into the cache only when
# complete. A cached build is reused as it is.
#
# Why a wrapper main: upstream's controller binary is the nested module
# github.com/cert-manager/cert-manager/cmd/controller, which the module proxy does not serve
# (404). The controllers themselves are in the main module (pkg/controller/...) and register in
# init(); bench/cert-manager/main.go wires the ones a CA ClusterIssuer needs, as app.Run does.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
CACHE_ROOT="${TRUSTWARDEN_CACHE:-$HOME/.cache/trustwarden}"
v="${CERT_MANAGER_VERSION}"
dest="$CACHE_ROOT/cert-manager/$v"
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
BUILD_JOBS="${BUILD_JOBS:-2}"

log() { printf '[build-cert-manager %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -f "$dest/.complete" && -x "$dest/cert-manager-controller" ]]; then
  log "cert-manager $v: cached in $dest"
  exit 0
fi
command -v go >/dev/null || die "go is not on PATH"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/tw-cm-build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log "cert-manager $v: fetching the module"
(cd "$tmp" && go mod download -json "github.com/cert-manager/cert-manager@$v" > dl.json) \
  || die "go mod download github.com/cert-manager/cert-manager@$v failed (is the Go module proxy reachable?)"
read -r gomod srcdir < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["GoMod"], d["Dir"])' "$tmp/dl.json")
goline="$(grep -m1 -E '^go [0-9]' "$gomod")"
{
  echo "module trustwarden.local/cert-manager-build"
  echo
  echo "$goline"
  echo
  echo "require github.com/cert-manager/cert-manager $v"
  # Carry the release's own replace directives, if any (Go ignores a dependency's replaces).
  grep -E '^replace ' "$gomod" || true
} > "$tmp/go.mod"
cp "$here/cert-manager/main.go" "$tmp/main.go"
log "cert-manager $v: resolving dependencies (go mod tidy)"
(cd "$tmp" && go mod tidy) || die "go mod tidy failed for cert-manager $v"
mkdir -p "$tmp/out/crds"
log "cert-manager $v: building the controller (a few minutes on 2 cores)"
(cd "$tmp" && go build -p "$BUILD_JOBS" -trimpath -ldflags "-s -w -X main.version=$v" \
    -o out/cert-manager-controller .) || die "building the cert-manager controller failed"
cp "$srcdir"/deploy/crds/cert-manager.io_*.yaml "$tmp/out/crds/"
chmod -R u+w "$tmp/out"
"$tmp/out/cert-manager-controller" --version | grep -qx "$v" || die "built controller does not report $v"
touch "$tmp/out/.complete"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.partial"
mv "$tmp/out" "$dest.partial"
rm -rf "$dest"
mv "$dest.partial" "$dest"
log "cert-manager $v cached in $dest"
