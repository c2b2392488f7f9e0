#!/usr/bin/env bash
# make demo: build what is missing, start the local control plane, run the operator and show
# certificates being issued, renewed and revoked.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
cd "$repo"
source hack/versions.env
KUBECTL="${TRUSTWARDEN_KUBECTL:-$HOME/.cache/trustwarden/kubernetes/$KUBE_VERSION/kubectl}"
export KUBECONFIG="$repo/.cluster/kubeconfig"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Local control plane"
hack/cluster-up.sh
"$KUBECTL" version
"$KUBECTL" get --raw /readyz; echo
"$KUBECTL" get namespaces

if [[ -x hack/demo-operator.sh ]]; then
  exec hack/demo-operator.sh
fi
