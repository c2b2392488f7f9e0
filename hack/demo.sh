#!/usr/bin/env bash
# make demo: build what is missing, start the local control plane, add a real node when this
# host can run one, run the operator and show certificates being issued, used and revoked.
# TRUSTWARDEN_DEMO_NODE=0 skips the node (pods then stay Pending as API objects).
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

# The node needs root (containerd, the kubelet and runc make mounts and cgroups); without it, or
# when it does not come up, the demo goes on without one and says why in one line.
node_log="$repo/.cluster/logs/demo-node.log"
node_reason=""
if [[ "${TRUSTWARDEN_DEMO_NODE:-1}" == 0 ]]; then
  node_reason="TRUSTWARDEN_DEMO_NODE=0"
elif [[ "$(id -u)" != 0 ]]; then
  node_reason="a local node needs root (containerd, the kubelet and runc)"
fi
if [[ -z "$node_reason" ]]; then
  step "A real node: kubelet, containerd, runc (hack/node-up.sh, log: .cluster/logs/demo-node.log)"
  echo "the first run builds the kubelet, containerd and the images: several minutes"
  if hack/node-up.sh > "$node_log" 2>&1; then
    "$KUBECTL" get nodes -o wide
    export TRUSTWARDEN_DEMO_IMAGES="$repo/.cluster/node/images"
  else
    node_reason="hack/node-up.sh failed: $(grep -m1 ERROR "$node_log" || tail -n1 "$node_log") (log: $node_log)"
    hack/node-down.sh >> "$node_log" 2>&1 || true
  fi
fi
[[ -z "$node_reason" ]] || printf '\nNo local node, so pods stay Pending as API objects: %s\n' "$node_reason"

if [[ -x hack/demo-operator.sh ]]; then
  exec hack/demo-operator.sh
fi
