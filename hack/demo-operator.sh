#!/usr/bin/env bash
# The operator part of `make demo`: run trustwarden against the local control plane and show
# certificates being issued, a per-pod certificate revoked, and the inventory. With a local node
# (hack/demo.sh sets TRUSTWARDEN_DEMO_IMAGES to its image list) the pods run: they print the
# SPIFFE ID they present, and an mTLS server and client talk with their SVIDs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
cd "$repo"
source hack/versions.env
KUBECTL="${TRUSTWARDEN_KUBECTL:-$HOME/.cache/trustwarden/kubernetes/$KUBE_VERSION/kubectl}"
export KUBECONFIG="$repo/.cluster/kubeconfig"
k() { "$KUBECTL" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
wait_until() { # seconds description command...
  local deadline=$((SECONDS + $1)) what="$2"; shift 2
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || { echo "timed out waiting for $what" >&2; exit 1; }
    sleep 0.5
  done
}
images="${TRUSTWARDEN_DEMO_IMAGES:-}"
workload=""
[[ -n "$images" && -f "$images" ]] && workload="$(awk -F'[= ]' '$1=="workload"{print $2}' "$images")"
# The per-pod example as it runs on the local node: the workload image (no registry here), and
# hostNetwork (loopback only, no pod network).
on_node() {
  .venv/bin/python -c '
import sys, yaml
image = sys.argv[1]
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
for d in docs:
    if d["kind"] == "Deployment":
        spec = d["spec"]["template"]["spec"]
        spec["hostNetwork"] = True
        spec["terminationGracePeriodSeconds"] = 5
        for c in spec["containers"]:
            c.update(image=image, imagePullPolicy="Never", args=["identity"])
yaml.safe_dump_all(docs, sys.stdout)
' "$workload"
}
printed_id() { k -n "$1" logs "$2" 2>/dev/null | sed -n 's/^SPIFFE ID: //p' | head -1; }
has_printed_id() { [[ -n "$(printed_id "$1" "$2")" ]]; }
show_cert() { # namespace secret
  k -n "$1" get secret "$2" -o jsonpath='{.data.tls\.crt}' | base64 -d \
    | openssl x509 -noout -subject -ext subjectAltName -enddate -serial | sed 's/^/    /'
}

step "CRDs (kubectl apply -f deploy/crds/)"
k apply --server-side --force-conflicts -f deploy/crds/
k wait --for=condition=Established crd/trustdomains.trustwarden.io crd/workloadidentities.trustwarden.io

step "Operator: trustwarden run --local (log: .cluster/logs/demo-operator.log)"
log=.cluster/logs/demo-operator.log
.venv/bin/trustwarden run --local --metrics-port 18080 --health-port 0 --webhook-port 19443 \
  --identity demo-operator --lease-duration 6 > "$log" 2>&1 &
operator_pid=$!
trap 'kill $operator_pid 2>/dev/null || true' EXIT
wait_until 60 "the operator to start" grep -q "starting reconciliation" "$log"
echo "operator running (pid $operator_pid), metrics on http://127.0.0.1:18080/metrics"

step "A TrustDomain"
k apply -f deploy/examples/trustdomain.yaml
k wait --for=condition=Ready td/demo --timeout=60s
k get td demo

step "Two namespaces with Shared identities"
k apply -f deploy/examples/shared-identities.yaml
k -n demo-payments wait --for=condition=Ready wid/payments-api --timeout=60s
k -n demo-ledger wait --for=condition=Ready wid/ledger --timeout=60s
k get wid -A
for pair in demo-payments/payments-api-svid demo-ledger/ledger-svid; do
  echo "  Secret $pair:"; show_cert "${pair%%/*}" "${pair##*/}"
done
echo "  Bundle keys in demo-payments: $(k -n demo-payments get cm trustwarden-bundle -o jsonpath='{.data}' | python3 -c 'import json,sys; print(", ".join(sorted(json.load(sys.stdin))))')"

step "Per-pod identities: a Deployment in an opted-in namespace"
if [[ -n "$workload" ]]; then
  on_node < deploy/examples/per-pod-identity.yaml | k apply -f -
  echo "  (deploy/examples/per-pod-identity.yaml with image $workload and hostNetwork, for the local node)"
else
  k apply -f deploy/examples/per-pod-identity.yaml
fi
wait_until 90 "3 pods" bash -c "[ \"\$('$KUBECTL' -n demo-checkout get pods -l app=checkout --no-headers 2>/dev/null | wc -l)\" -ge 3 ]"
pods=$(k -n demo-checkout get pods -l app=checkout -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.annotations.trustwarden\.io/secret}{"\n"}{end}')
for entry in $pods; do
  wait_until 60 "the Secret of ${entry%%=*}" "$KUBECTL" -n demo-checkout get secret "${entry##*=}"
  if [[ -n "$workload" ]]; then
    wait_until 240 "${entry%%=*} to run and print its SPIFFE ID" has_printed_id demo-checkout "${entry%%=*}"
    echo "  pod ${entry%%=*} (Running on $(k -n demo-checkout get pod "${entry%%=*}" -o jsonpath='{.spec.nodeName}')) -> Secret ${entry##*=}; the container says:"
    echo "    SPIFFE ID: $(printed_id demo-checkout "${entry%%=*}")"
  else
    echo "  pod ${entry%%=*} (Pending: no node) -> Secret ${entry##*=}:"
  fi
  show_cert demo-checkout "${entry##*=}"
done
k -n demo-checkout wait --for=condition=Ready wid/checkout --timeout=60s >/dev/null
k -n demo-checkout get wid checkout

step "Deleting one pod revokes its certificate"
victim=$(echo "$pods" | head -1)
k -n demo-checkout get secret "${victim##*=}" -o jsonpath='{.data.tls\.crt}' | base64 -d > .cluster/demo-victim.pem
k -n demo-checkout delete pod "${victim%%=*}" --wait=false
wait_until 90 "the Secret to go" bash -c "! '$KUBECTL' -n demo-checkout get secret '${victim##*=}'"
echo "  Secret ${victim##*=} deleted"
crl_has_serial() {
  k -n demo-checkout get cm trustwarden-bundle -o jsonpath='{.data.demo\.example\.org\.crl\.pem}' > .cluster/demo-crl.pem
  k -n demo-checkout get cm trustwarden-bundle -o jsonpath='{.data.ca\.crt}' > .cluster/demo-ca.pem
  ! openssl verify -CAfile .cluster/demo-ca.pem -crl_check -CRLfile .cluster/demo-crl.pem .cluster/demo-victim.pem >/dev/null 2>&1
}
wait_until 30 "the CRL to list the serial" crl_has_serial
echo "  openssl verify -crl_check now says:"
openssl verify -CAfile .cluster/demo-ca.pem -crl_check -CRLfile .cluster/demo-crl.pem .cluster/demo-victim.pem 2>&1 | sed 's/^/    /' || true

if [[ -n "$workload" ]]; then
  step "mTLS between two pods with their SVIDs"
  # The server's host port: the one a previous demo run chose, or a free one.
  port="$(k -n demo-mtls get deploy server -o jsonpath='{.spec.template.spec.containers[0].args[2]}' 2>/dev/null || true)"
  [[ -n "$port" ]] || port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  td_name="$(k get td demo -o jsonpath='{.spec.trustDomain}')"
  pair() { # app peer-sa
    cat <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: $1, namespace: demo-mtls}
spec:
  replicas: 1
  selector: {matchLabels: {app: $1}}
  template:
    metadata: {labels: {app: $1, mtls: "yes"}}
    spec:
      serviceAccountName: $1
      automountServiceAccountToken: false
      hostNetwork: true
      terminationGracePeriodSeconds: 5
      containers:
        - name: $1
          image: $workload
          imagePullPolicy: Never
          args: [$1, --port, "$port", --peer-id, "spiffe://$td_name/ns/demo-mtls/sa/$2"]
---
YAML
  }
  k apply -f - <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: demo-mtls, labels: {trustwarden.io/inject: enabled}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: server, namespace: demo-mtls}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: demo-mtls}
---
apiVersion: trustwarden.io/v1alpha1
kind: WorkloadIdentity
metadata: {name: mtls, namespace: demo-mtls}
spec:
  trustDomain: demo
  podSelector: {matchLabels: {mtls: "yes"}}
  spiffeID: /ns/{namespace}/sa/{serviceAccount}
  ttl: 1h
YAML
  { pair server client; pair client server; } | k apply -f -
  handshakes() { # pod: the client's successful handshakes, one line each
    k -n demo-mtls logs "$1" 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    if line.startswith("{"):
        r = json.loads(line)
        if r.get("event") == "handshake" and r.get("ok"):
            print("    call %(attempt)s: server presented %(peer_id)s (serial %(peer_serial)s, until %(peer_not_after)s)" % r)
'
  }
  client_pod() { k -n demo-mtls get pods -l app=client -o jsonpath='{.items[0].metadata.name}' 2>/dev/null; }
  three_calls() { [[ "$(handshakes "$(client_pod)" | wc -l)" -ge 3 ]]; }
  wait_until 240 "the client's first 3 mTLS calls" three_calls
  k -n demo-mtls get pods -o wide
  echo "  the client ($(client_pod)) accepts only spiffe://$td_name/ns/demo-mtls/sa/server, the server only .../sa/client:"
  handshakes "$(client_pod)" | sed -n 1,3p
fi

if .venv/bin/trustwarden inventory --help >/dev/null 2>&1; then
  step "Inventory (trustwarden inventory -A)"
  .venv/bin/trustwarden inventory -A || true
fi

step "Done"
echo "The cluster keeps running with the demo objects: KUBECONFIG=$KUBECONFIG $KUBECTL get wid -A"
echo "Stop everything with: make cluster-down"
