#!/usr/bin/env bash
# Starts a real local control plane on 127.0.0.1: etcd, kube-apiserver (Node+RBAC authorization, NodeRestriction, admission
# plugins, webhooks, TokenRequest) and kube-controller-manager (GC, namespaces, ReplicaSets,
# ServiceAccounts). State, logs and pid files live in $CLUSTER_DIR (default .cluster/); the admin
# kubeconfig is $CLUSTER_DIR/kubeconfig. Idempotent: a healthy cluster is reused as it is.
#
# Environment knobs (for fault and load tests):
#   CLUSTER_DIR                 where state goes (default <repo>/.cluster)
#   APISERVER_EXTRA_ARGS        appended to kube-apiserver's flags (e.g. --max-requests-inflight=5)
#   CLUSTER_READY_TIMEOUT       seconds to wait for /readyz (default 180)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
# shellcheck source=versions.env
source "$here/versions.env"
CACHE_ROOT="${TRUSTWARDEN_CACHE:-$HOME/.cache/trustwarden}"
CLUSTER_DIR="${CLUSTER_DIR:-$repo/.cluster}"
READY_TIMEOUT="${CLUSTER_READY_TIMEOUT:-180}"
K8S_BIN="$CACHE_ROOT/kubernetes/$KUBE_VERSION"
ETCD_BIN="$CACHE_ROOT/etcd/$ETCD_VERSION/etcd"
KUBECTL="$K8S_BIN/kubectl"
KUBECONFIG_OUT="$CLUSTER_DIR/kubeconfig"

log() { printf '[cluster-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

healthy() {
  [[ -f "$KUBECONFIG_OUT" ]] || return 1
  [[ "$("$KUBECTL" --kubeconfig "$KUBECONFIG_OUT" --request-timeout=5s get --raw /readyz 2>/dev/null)" == ok ]]
}

if [[ -x "$KUBECTL" ]] && healthy; then
  log "reusing the healthy cluster in $CLUSTER_DIR"
  exit 0
fi

"$here/build-control-plane.sh" etcd kubernetes

if [[ -d "$CLUSTER_DIR" ]]; then
  log "found a stale or unhealthy cluster in $CLUSTER_DIR: stopping it first"
  CLUSTER_DIR="$CLUSTER_DIR" "$here/cluster-down.sh"
fi
mkdir -p "$CLUSTER_DIR"/{pki,logs,pids,etcd}
chmod 700 "$CLUSTER_DIR"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
ETCD_CLIENT_PORT="$(free_port)"; ETCD_PEER_PORT="$(free_port)"; API_PORT="$(free_port)"
while [[ "$ETCD_PEER_PORT" == "$ETCD_CLIENT_PORT" ]]; do ETCD_PEER_PORT="$(free_port)"; done
while [[ "$API_PORT" == "$ETCD_CLIENT_PORT" || "$API_PORT" == "$ETCD_PEER_PORT" ]]; do API_PORT="$(free_port)"; done
cat > "$CLUSTER_DIR/ports.env" <<PORTS
ETCD_CLIENT_PORT=$ETCD_CLIENT_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
API_PORT=$API_PORT
PORTS

# --- PKI: a cluster CA, the API server's serving cert, client certs, service-account keys ---
pki="$CLUSTER_DIR/pki"
ossl() { openssl "$@" >>"$CLUSTER_DIR/logs/pki.log" 2>&1 || die "openssl $1 failed, see $CLUSTER_DIR/logs/pki.log"; }
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/ca.key"
ossl req -x509 -new -key "$pki/ca.key" -subj "/CN=trustwarden-local-cluster-ca" -days 3650 -out "$pki/ca.crt" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
issue_cert() { # name subject extfile-lines
  local name="$1" subj="$2" ext="$3"
  ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/$name.key"
  ossl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr"
  printf '%b\n' "$ext" > "$pki/$name.ext"
  ossl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -extfile "$pki/$name.ext" -out "$pki/$name.crt"
}
issue_cert apiserver "/CN=kube-apiserver" \
  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1"
issue_cert admin "/O=system:masters/CN=trustwarden-admin" \
  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth"
# The API server's client certificate towards kubelets (logs, exec) of a local node.
issue_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" \
  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth"
issue_cert controller-manager "/CN=system:kube-controller-manager" \
  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth"
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key"
ossl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
chmod 600 "$pki"/*.key

write_kubeconfig() { # file user-cert-name
  local f="$1" who="$2"
  cat > "$f" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $pki/ca.crt
users:
- name: $who
  user:
    client-certificate: $pki/$who.crt
    client-key: $pki/$who.key
contexts:
- name: local
  context: {cluster: local, user: $who}
current-context: local
KC
  chmod 600 "$f"
}

start() { # name command...
  local name="$1"; shift
  log "starting $name (log: $CLUSTER_DIR/logs/$name.log)"
  setsid "$@" >"$CLUSTER_DIR/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$CLUSTER_DIR/pids/$name.pid"
}

alive() { kill -0 "$(cat "$CLUSTER_DIR/pids/$1.pid")" 2>/dev/null; }

# --- etcd ---
# --unsafe-no-fsync: a throwaway test cluster on loopback; fsync latency would dominate benchmarks.
start etcd "$ETCD_BIN" --name local --data-dir "$CLUSTER_DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --quota-backend-bytes 4294967296 \
  --log-level warn
deadline=$((SECONDS + 60))
until curl -sf "http://127.0.0.1:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'; do
  alive etcd || die "etcd exited during start-up (port taken?), see $CLUSTER_DIR/logs/etcd.log"
  (( SECONDS < deadline )) || die "etcd not healthy after 60s, see $CLUSTER_DIR/logs/etcd.log"
  sleep 0.5
done

# --- kube-apiserver ---
# Run as a production cluster does for pod certificates (Kubernetes 1.37, where
# PodCertificateRequest and ClusterTrustBundle are GA at certificates.k8s.io/v1):
# - the Node authorizer and the NodeRestriction admission plugin, so only system:node:<name>
#   may create a PodCertificateRequest, and only for a pod bound to that node;
# - --endpoint-reconciler-type=none: 1.37 refuses a loopback advertise address with the default
#   reconciler, so the `kubernetes` Service has no API-maintained endpoints here;
# - --enable-aggregator-routing: calls to webhooks and aggregated APIs go to endpoint addresses
#   (127.0.0.1 on a local node), never to a Service ClusterIP, which nothing routes here.
# shellcheck disable=SC2086
start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
  --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --authorization-mode=Node,RBAC \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --api-audiences=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range=10.0.0.0/24 \
  --enable-admission-plugins=NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
  --endpoint-reconciler-type=none --enable-aggregator-routing=true \
  --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$pki/ca.crt" --kubelet-preferred-address-types=InternalIP \
  --allow-privileged=true --profiling=false --v=1 \
  ${APISERVER_EXTRA_ARGS:-}
write_kubeconfig "$KUBECONFIG_OUT" admin
deadline=$((SECONDS + READY_TIMEOUT))
until [[ "$("$KUBECTL" --kubeconfig "$KUBECONFIG_OUT" --request-timeout=5s get --raw /readyz 2>/dev/null)" == ok ]]; do
  alive kube-apiserver || die "kube-apiserver exited during start-up, see $CLUSTER_DIR/logs/kube-apiserver.log"
  (( SECONDS < deadline )) || die "kube-apiserver not ready after ${READY_TIMEOUT}s, see $CLUSTER_DIR/logs/kube-apiserver.log"
  sleep 1
done

# --- kube-controller-manager ---
write_kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" controller-manager
start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig="$CLUSTER_DIR/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$CLUSTER_DIR/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$CLUSTER_DIR/controller-manager.kubeconfig" \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
  --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
  --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false \
  --controllers='*,-bootstrapsigner,-tokencleaner' \
  --concurrent-gc-syncs=10 --v=1

# The ServiceAccount controller creating `default` in `default` proves the controller manager works.
deadline=$((SECONDS + READY_TIMEOUT))
until "$KUBECTL" --kubeconfig "$KUBECONFIG_OUT" -n default get serviceaccount default >/dev/null 2>&1; do
  alive kube-controller-manager || die "kube-controller-manager exited, see $CLUSTER_DIR/logs/kube-controller-manager.log"
  (( SECONDS < deadline )) || die "no default ServiceAccount after ${READY_TIMEOUT}s, see $CLUSTER_DIR/logs/kube-controller-manager.log"
  sleep 1
done
log "ready: $("$KUBECTL" --kubeconfig "$KUBECONFIG_OUT" version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') at https://127.0.0.1:$API_PORT"
log "kubeconfig: $KUBECONFIG_OUT"
