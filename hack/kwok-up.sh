#!/usr/bin/env bash
# Starts kwok against the local control plane in $CLUSTER_DIR (hack/cluster-up.sh), so pods can
# sit on simulated Nodes: a Node annotated kwok.x-k8s.io/node=fake becomes Ready, a pod bound to
# it becomes Running, and a deleted pod is removed when its grace period ends
# (hack/kwok/stages.yaml). Deleting such a Node lets the pod garbage collector remove its pods.
# kwok talks only to the API server on 127.0.0.1 and serves nothing. Idempotent: a running
# kwok is reused. hack/cluster-down.sh stops it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
# shellcheck source=versions.env
source "$here/versions.env"
CACHE_ROOT="${TRUSTWARDEN_CACHE:-$HOME/.cache/trustwarden}"
CLUSTER_DIR="${CLUSTER_DIR:-$repo/.cluster}"
KWOK="$CACHE_ROOT/kwok/$KWOK_VERSION/kwok"
pidfile="$CLUSTER_DIR/pids/kwok.pid"

log() { printf '[kwok-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -f "$CLUSTER_DIR/kubeconfig" ]] || die "no control plane in $CLUSTER_DIR (run hack/cluster-up.sh first)"
if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  log "reusing kwok (pid $(cat "$pidfile"))"
  exit 0
fi
"$here/build-control-plane.sh" kwok

log "starting kwok $KWOK_VERSION (log: $CLUSTER_DIR/logs/kwok.log)"
setsid "$KWOK" --kubeconfig "$CLUSTER_DIR/kubeconfig" \
  --config "$here/kwok/stages.yaml" \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --node-ip 127.0.0.1 --node-lease-duration-seconds 40 \
  >"$CLUSTER_DIR/logs/kwok.log" 2>&1 < /dev/null &
echo $! > "$pidfile"
# kwok logs "Watch nodes" once its informers run; before that a new Node would wait.
deadline=$((SECONDS + 60))
until grep -q '"msg":"Watch nodes"' "$CLUSTER_DIR/logs/kwok.log" 2>/dev/null; do
  kill -0 "$(cat "$pidfile")" 2>/dev/null || die "kwok exited during start-up, see $CLUSTER_DIR/logs/kwok.log"
  (( SECONDS < deadline )) || die "kwok not watching nodes after 60s, see $CLUSTER_DIR/logs/kwok.log"
  sleep 0.5
done
log "kwok is managing Nodes annotated kwok.x-k8s.io/node=fake"
