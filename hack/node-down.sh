#!/usr/bin/env bash
# Stops the node hack/node-up.sh started and removes everything it made: the kubelet and
# kube-scheduler (by pid file), every container and sandbox (through containerd, then their
# shims by exact pid), containerd itself (by pid file), the mounts under $NODE_DIR, the node's
# cgroup subtree in every hierarchy, the Node object, and $NODE_DIR. Safe to run twice.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
CACHE_ROOT="${TRUSTWARDEN_CACHE:-$HOME/.cache/trustwarden}"
CLUSTER_DIR="${CLUSTER_DIR:-$(dirname "$here")/.cluster}"
NODE_DIR="${NODE_DIR:-$CLUSTER_DIR/node}"
NODE_NAME="${NODE_NAME:-trustwarden-node}"
CTR="$CACHE_ROOT/containerd/$CONTAINERD_VERSION/ctr"
log() { printf '[node-down] %s\n' "$*" >&2; }
[[ -d "$NODE_DIR" ]] || { log "nothing to stop in $NODE_DIR"; exit 0; }
sock="$NODE_DIR/containerd/containerd.sock"

stop_pid() { # name
  local f="$NODE_DIR/pids/$1.pid" pid
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  kill -0 "$pid" 2>/dev/null || return 0
  log "stopping $1 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
}

stop_pid kubelet
stop_pid kube-scheduler
if [[ -S "$sock" ]] && kill -0 "$(cat "$NODE_DIR/pids/containerd.pid" 2>/dev/null)" 2>/dev/null; then
  ctr() { timeout 30 "$CTR" --address "$sock" -n k8s.io "$@"; }
  for c in $(ctr tasks list -q 2>/dev/null); do ctr tasks kill -s SIGKILL "$c" >/dev/null 2>&1; done
  for c in $(ctr containers list -q 2>/dev/null); do
    for _ in $(seq 1 50); do ctr tasks delete -f "$c" >/dev/null 2>&1 && break; ctr tasks list -q 2>/dev/null | grep -qx "$c" || break; sleep 0.1; done
    ctr containers delete "$c" >/dev/null 2>&1
  done
fi
stop_pid containerd
# Shims outlive containerd; each names this node's socket on its command line.
for p in /proc/[0-9]*; do
  cmd="$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)" || continue
  if [[ "$cmd" == *containerd-shim-runc-v2* && "$cmd" == *"-address $sock "* ]]; then
    log "killing shim pid ${p#/proc/}"; kill -KILL "${p#/proc/}" 2>/dev/null
  fi
done
# Mounts under the node directory (overlay rootfs, secret tmpfs, shm), deepest first.
for _ in 1 2 3; do
  mapfile -t mounts < <(awk -v d="$NODE_DIR/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r)
  [[ ${#mounts[@]} -eq 0 ]] && break
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
done
# The node's cgroup subtree, leaves first, in every hierarchy.
if [[ -f "$NODE_DIR/cgroup-root" ]]; then
  root="$(cat "$NODE_DIR/cgroup-root")"
  if [[ "$root" == /trustwarden-* ]]; then
    for h in /sys/fs/cgroup/*/; do
      [[ -d "$h${root#/}" ]] && find "$h${root#/}" -depth -type d -exec rmdir {} + 2>/dev/null
      [[ -d "$h${root#/}" ]] && log "cgroup $h${root#/} still busy"
    done
  fi
fi
kubectl="$CACHE_ROOT/kubernetes/$KUBE_VERSION/kubectl"
[[ -f "$CLUSTER_DIR/kubeconfig" ]] && "$kubectl" --kubeconfig "$CLUSTER_DIR/kubeconfig" --request-timeout=10s \
  delete node "$NODE_NAME" --ignore-not-found >/dev/null 2>&1
rm -rf "$NODE_DIR" || log "could not remove all of $NODE_DIR"
log "removed $NODE_DIR"
