#!/usr/bin/env bash
# Starts one real node on the local control plane (hack/cluster-up.sh must be running):
# containerd v2 with Debian's runc, a kubelet v1.37 registered as system:node:<name>, and
# kube-scheduler. Everything lives in $NODE_DIR (default $CLUSTER_DIR/node); hack/node-down.sh
# stops it by exact pid and removes containers, mounts, cgroups and state.
#
# Loopback only: pods must use hostNetwork: true and talk over 127.0.0.1. No kube-proxy runs,
# so Service ClusterIPs (a private range) lead nowhere; the API server reaches webhooks through
# endpoint addresses (--enable-aggregator-routing in cluster-up.sh), and pods reach the API
# server through KUBERNETES_SERVICE_HOST=127.0.0.1 / KUBERNETES_SERVICE_PORT (chart: extraEnv).
# CNI has one loopback-only network, so the runtime reports its network ready.
#
# More nodes: run it again with another NODE_DIR, NODE_NAME and NODE_IP (a loopback address,
# e.g. 127.0.0.2) and NODE_SCHEDULER=0; each node has its own containerd, kubelet, ports and
# cgroup subtree, and one kube-scheduler serves them all. hostNetwork pods on that node get
# NODE_IP as their IP, so two replicas that bind their pod IP never collide.
#
# Environment: CLUSTER_DIR, NODE_DIR, NODE_NAME (default trustwarden-node), NODE_READY_TIMEOUT,
# NODE_IP (default 127.0.0.1; must be in 127.0.0.0/8), NODE_SCHEDULER (default 1),
# NODE_OCI_RUNTIME (runc | crun), NODE_RUNTIME_TRACE=1 (keep every bundle's config.json),
# NODE_IMAGES (default "pause operator workload").
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
# shellcheck source=versions.env
source "$here/versions.env"
CACHE_ROOT="${TRUSTWARDEN_CACHE:-$HOME/.cache/trustwarden}"
CLUSTER_DIR="${CLUSTER_DIR:-$repo/.cluster}"
NODE_DIR="${NODE_DIR:-$CLUSTER_DIR/node}"
# Absolute: containerd, the kubelet and the shims all take paths under it.
[[ "$NODE_DIR" == /* ]] || NODE_DIR="$PWD/$NODE_DIR"
NODE_NAME="${NODE_NAME:-trustwarden-node}"
READY_TIMEOUT="${NODE_READY_TIMEOUT:-180}"
NODE_IP="${NODE_IP:-127.0.0.1}"
NODE_SCHEDULER="${NODE_SCHEDULER:-1}"
KUBECTL="$CACHE_ROOT/kubernetes/$KUBE_VERSION/kubectl"
KUBELET="$CACHE_ROOT/kubelet/$KUBE_VERSION/kubelet"
SCHEDULER="$CACHE_ROOT/kube-scheduler/$KUBE_VERSION/kube-scheduler"
CTRD="$CACHE_ROOT/containerd/$CONTAINERD_VERSION"
pki="$CLUSTER_DIR/pki"

log() { printf '[node-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
kc() { "$KUBECTL" --kubeconfig "$CLUSTER_DIR/kubeconfig" "$@"; }

# Loopback only: any other address of this host is off limits (docs/install.md section 10).
[[ "$NODE_IP" =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "NODE_IP must be a loopback address (127.x.y.z), got $NODE_IP"
[[ -f "$CLUSTER_DIR/ports.env" ]] || die "no control plane in $CLUSTER_DIR (run hack/cluster-up.sh first)"
# shellcheck disable=SC1091
source "$CLUSTER_DIR/ports.env"

"$here/build-control-plane.sh" kubelet kube-scheduler containerd
# The OCI runtime under containerd's runc shim, from Debian's packages (installed only when
# missing): NODE_OCI_RUNTIME=runc (default) or crun, which takes the same command line.
OCI_RUNTIME="${NODE_OCI_RUNTIME:-runc}"
case "$OCI_RUNTIME" in runc|crun) ;; *) die "NODE_OCI_RUNTIME must be runc or crun, got $OCI_RUNTIME";; esac
command -v "$OCI_RUNTIME" >/dev/null || { log "installing $OCI_RUNTIME"; DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$OCI_RUNTIME" >&2; }
[[ -x /usr/lib/cni/loopback ]] || { log "installing containernetworking-plugins"; DEBIAN_FRONTEND=noninteractive apt-get install -y -q containernetworking-plugins >&2; }
# NODE_IMAGES picks the images to build and import (pause is always needed).
read -r -a image_names <<<"${NODE_IMAGES:-pause operator workload}"
[[ " ${image_names[*]} " == *" pause "* ]] || image_names=(pause "${image_names[@]}")
images="$("$here/build-images.sh" "${image_names[@]}")"
image_ref() { awk -v n="$1" -F'[= ]' '$1==n{print $2}' <<<"$images"; }
image_tar() { awk -v n="$1" '{split($1,a,"="); if (a[1]==n) print $2}' <<<"$images"; }

alive() { [[ -f "$NODE_DIR/pids/$1.pid" ]] && kill -0 "$(cat "$NODE_DIR/pids/$1.pid")" 2>/dev/null; }
# A running node is reused only with the images just built (a changed source tree builds a
# new operator image; the node must run that one).
if alive kubelet && alive containerd && { [[ "$NODE_SCHEDULER" != 1 ]] || alive kube-scheduler; } \
   && [[ "$(cat "$NODE_DIR/images" 2>/dev/null)" == "$images" ]] \
   && [[ "$(kc get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]; then
  log "reusing the ready node $NODE_NAME in $NODE_DIR"
  exit 0
fi
[[ -d "$NODE_DIR" ]] && { log "stale node state in $NODE_DIR: cleaning it first"; NODE_DIR="$NODE_DIR" CLUSTER_DIR="$CLUSTER_DIR" "$here/node-down.sh"; }

mkdir -p "$NODE_DIR"/{pids,logs,pki,cni,containerd,kubelet,pod-logs}
chmod 700 "$NODE_DIR"
printf '%s\n' "$images" > "$NODE_DIR/images"

# --- the node's own client certificate (system:node:<name>), and its serving certificate ---
ossl() { openssl "$@" >>"$NODE_DIR/logs/pki.log" 2>&1 || die "openssl $1 failed, see $NODE_DIR/logs/pki.log"; }
cert() { # name subject ext
  ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$NODE_DIR/pki/$1.key"
  ossl req -new -key "$NODE_DIR/pki/$1.key" -subj "$2" -out "$NODE_DIR/pki/$1.csr"
  printf '%b\n' "$3" > "$NODE_DIR/pki/$1.ext"
  ossl x509 -req -in "$NODE_DIR/pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 365 -extfile "$NODE_DIR/pki/$1.ext" -out "$NODE_DIR/pki/$1.crt"
  chmod 600 "$NODE_DIR/pki/$1.key"
}
cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" \
  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth"
cert kubelet-serving "/O=system:nodes/CN=system:node:$NODE_NAME" \
  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:$NODE_IP"
kubeconfig() { # file cert-name: a kubeconfig for the local API server with that client cert
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$pki/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$NODE_DIR/pki/$2.crt", client-key: "$NODE_DIR/pki/$2.key"}
contexts:
- name: local
  context: {cluster: local, user: $2}
current-context: local
KC
}
kubeconfig "$NODE_DIR/kubelet.kubeconfig" kubelet-client

start() { # name command...
  local name="$1"; shift
  log "starting $name (log: $NODE_DIR/logs/$name.log)"
  setsid "$@" >"$NODE_DIR/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$NODE_DIR/pids/$name.pid"
}
free_port() { python3 -c 'import socket, sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1]); s.close()' "$NODE_IP"; }

# --- containerd ---
sock="$NODE_DIR/containerd/containerd.sock"
# containerd calls the runtime through this wrapper. It exists for one reason: the kubelet
# asks for oomScoreAdj -998 for every pod sandbox (and below 0 for Guaranteed pods), and this
# host does not give root CAP_SYS_RESOURCE, without which no process may lower its own OOM
# score. runc then fails inside its init ("failed to update /proc/self/oom_score_adj:
# Permission denied", surfacing as "can't get final child's PID from pipe: EOF"). The wrapper
# raises a requested oomScoreAdj to the floor the runtime itself runs with, and changes nothing
# else. With NODE_RUNTIME_TRACE=1 it also keeps every bundle's config.json (what the CRI asked
# for) and every command line under runtime-trace/.
mkdir -p "$NODE_DIR/bin"
trace_dir=""
if [[ "${NODE_RUNTIME_TRACE:-0}" == 1 ]]; then trace_dir="$NODE_DIR/runtime-trace"; mkdir -p "$trace_dir"; fi
cat > "$NODE_DIR/bin/oci-runtime" <<WRAP
#!/bin/sh
trace="$trace_dir"
[ -n "\$trace" ] && echo "\$*" >> "\$trace/commands.log"
prev=
for arg in "\$@"; do
  if [ "\$prev" = --bundle ] || [ "\$prev" = -b ]; then
    [ -n "\$trace" ] && cp "\$arg/config.json" "\$trace/\$(basename "\$arg").json" 2>/dev/null
    python3 - "\$arg/config.json" "\$(cat /proc/self/oom_score_adj)" <<'PY' || exit 1
import json, os, sys
path, floor = sys.argv[1], int(sys.argv[2])
with open(path) as f:
    spec = json.load(f)
process = spec.get("process") or {}
if process.get("oomScoreAdj", floor) < floor:
    process["oomScoreAdj"] = floor
    with open(path + ".tmp", "w") as f:
        json.dump(spec, f)
    os.replace(path + ".tmp", path)
PY
  fi
  prev="\$arg"
done
exec "$(command -v "$OCI_RUNTIME")" "\$@"
WRAP
chmod 755 "$NODE_DIR/bin/oci-runtime"
runtime_bin="$NODE_DIR/bin/oci-runtime"
(( ${#sock} < 100 )) || die "socket path $sock is too long for a unix socket; set NODE_DIR shorter"
cat > "$NODE_DIR/cni/10-loopback.conflist" <<'CNI'
{"cniVersion": "1.0.0", "name": "loopback-only", "plugins": [{"type": "loopback"}]}
CNI
cat > "$NODE_DIR/containerd/config.toml" <<TOML
version = 3
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins.'io.containerd.internal.v1.opt']
  path = "$NODE_DIR/containerd/opt"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$(image_ref pause)"
[plugins.'io.containerd.cri.v1.runtime']
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$runtime_bin"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$NODE_DIR/cni"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "$NODE_IP"
  stream_server_port = "0"
TOML
PATH="$CTRD:$PATH" start containerd "$CTRD/containerd" --config "$NODE_DIR/containerd/config.toml"
ctr() { "$CTRD/ctr" --address "$sock" "$@"; }
deadline=$((SECONDS + 60))
until ctr version >/dev/null 2>&1; do
  alive containerd || die "containerd exited, see $NODE_DIR/logs/containerd.log"
  (( SECONDS < deadline )) || die "containerd not answering after 60s, see $NODE_DIR/logs/containerd.log"
  sleep 0.5
done
for n in "${image_names[@]}"; do
  log "importing $(image_ref $n) into containerd's k8s.io namespace"
  ctr -n k8s.io images import --no-unpack=false "$(image_tar $n)" >>"$NODE_DIR/logs/import.log" 2>&1 \
    || die "importing $n failed, see $NODE_DIR/logs/import.log"
done

# --- kubelet ---
# cgroup v1: this host mounts only cgroup v1 hierarchies. Since 1.35 the kubelet refuses to start
# on cgroup v1 unless failCgroupV1 is false. The systemd driver needs a systemd that owns the
# cgroups (none runs here), so the cgroupfs driver is used, and cgroupRoot gives this node its
# own subtree in every hierarchy, so other nodes on the host and node-down never touch another's.
cgroot="/trustwarden-$NODE_NAME-$$"
echo "$cgroot" > "$NODE_DIR/cgroup-root"
for h in /sys/fs/cgroup/*/; do [[ -d "$h" && -w "$h" ]] && mkdir -p "$h${cgroot#/}"; done
KUBELET_PORT="$(free_port)"; HEALTHZ_PORT="$(free_port)"
cat > "$NODE_DIR/kubelet-config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: $NODE_IP
healthzPort: $HEALTHZ_PORT
tlsCertFile: $NODE_DIR/pki/kubelet-serving.crt
tlsPrivateKeyFile: $NODE_DIR/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $cgroot
failSwapOn: false
containerRuntimeEndpoint: unix://$sock
podLogsDir: $NODE_DIR/pod-logs
staticPodPath: ""
registerNode: true
maxPods: 50
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
resolvConf: ""
YAML
start kubelet "$KUBELET" --config="$NODE_DIR/kubelet-config.yaml" \
  --kubeconfig="$NODE_DIR/kubelet.kubeconfig" --root-dir="$NODE_DIR/kubelet" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1

# --- kube-scheduler: pods are bound by a scheduler, as in any cluster (one for all nodes) ---
if [[ "$NODE_SCHEDULER" == 1 ]]; then
  kubeconfig "$NODE_DIR/scheduler.kubeconfig" scheduler
  cert scheduler "/CN=system:kube-scheduler" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth"
  start kube-scheduler "$SCHEDULER" --kubeconfig="$NODE_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig="$NODE_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig="$NODE_DIR/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false --v=1
fi

deadline=$((SECONDS + READY_TIMEOUT))
until [[ "$(kc get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]; do
  alive kubelet || die "kubelet exited, see $NODE_DIR/logs/kubelet.log: $(grep -E 'E[0-9]{4}|run.go' "$NODE_DIR/logs/kubelet.log" | tail -3)"
  [[ "$NODE_SCHEDULER" != 1 ]] || alive kube-scheduler || die "kube-scheduler exited, see $NODE_DIR/logs/kube-scheduler.log"
  (( SECONDS < deadline )) || die "node $NODE_NAME not Ready after ${READY_TIMEOUT}s, see $NODE_DIR/logs/kubelet.log"
  sleep 1
done
# The kubelet refuses a loopback --node-ip ("nodeIP can't be loopback address") and then
# publishes no address at all: the API server cannot reach it for logs and exec ("no preferred
# addresses found"), and hostNetwork pods get no IP (so no Service endpoints). Every other
# address of this host is off limits, so the Node's addresses (NODE_IP) are set here, once; the
# kubelet keeps what it cannot compute itself.
kc patch node "$NODE_NAME" --subresource=status --type=merge -p \
  "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"$NODE_IP\"},{\"type\":\"Hostname\",\"address\":\"$NODE_NAME\"}]}}" >/dev/null \
  || die "could not set the addresses of Node $NODE_NAME"
log "node $NODE_NAME Ready (kubelet on $NODE_IP:$KUBELET_PORT, containerd at $sock)"
