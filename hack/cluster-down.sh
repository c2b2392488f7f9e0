#!/usr/bin/env bash
# Stops exactly the processes hack/cluster-up.sh and hack/kwok-up.sh started (by pid file) and
# removes the state.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLUSTER_DIR="${CLUSTER_DIR:-$(dirname "$here")/.cluster}"
log() { printf '[cluster-down] %s\n' "$*" >&2; }
[[ -d "$CLUSTER_DIR" ]] || { log "nothing to stop in $CLUSTER_DIR"; exit 0; }
# A local node (hack/node-up.sh) goes first: its containers, mounts and cgroups.
[[ -d "$CLUSTER_DIR/node" ]] && CLUSTER_DIR="$CLUSTER_DIR" "$here/node-down.sh"
for name in kwok kube-controller-manager kube-apiserver etcd; do
  pidfile="$CLUSTER_DIR/pids/$name.pid"
  [[ -f "$pidfile" ]] || continue
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
done
rm -rf "$CLUSTER_DIR"
log "removed $CLUSTER_DIR"
