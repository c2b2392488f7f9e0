#!/usr/bin/env bash
# The operator part of `make demo`: run trustwarden against the local control plane and show
# certificates being issued, a per-pod certificate revoked, and the inventory.
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
k apply -f deploy/examples/per-pod-identity.yaml
wait_until 90 "3 pods" bash -c "[ \"\$('$KUBECTL' -n demo-checkout get pods -l app=checkout --no-headers 2>/dev/null | wc -l)\" -ge 3 ]"
pods=$(k -n demo-checkout get pods -l app=checkout -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.annotations.trustwarden\.io/secret}{"\n"}{end}')
for entry in $pods; do
  wait_until 60 "the Secret of ${entry%%=*}" "$KUBECTL" -n demo-checkout get secret "${entry##*=}"
  echo "  pod ${entry%%=*} (Pending: no kubelet here) -> Secret ${entry##*=}:"; show_cert demo-checkout "${entry##*=}"
done
k -n demo-checkout wait --for=condition=Ready wid/checkout --timeout=60s >/dev/null
k -n demo-checkout get wid checkout

step "Deleting one pod revokes its certificate"
victim=$(echo "$pods" | head -1)
k -n demo-checkout get secret "${victim##*=}" -o jsonpath='{.data.tls\.crt}' | base64 -d > .cluster/demo-victim.pem
k -n demo-checkout delete pod "${victim%%=*}" --wait=false
wait_until 30 "the Secret to go" bash -c "! '$KUBECTL' -n demo-checkout get secret '${victim##*=}'"
echo "  Secret ${victim##*=} deleted"
crl_has_serial() {
  k -n demo-checkout get cm trustwarden-bundle -o jsonpath='{.data.demo\.example\.org\.crl\.pem}' > .cluster/demo-crl.pem
  k -n demo-checkout get cm trustwarden-bundle -o jsonpath='{.data.ca\.crt}' > .cluster/demo-ca.pem
  ! openssl verify -CAfile .cluster/demo-ca.pem -crl_check -CRLfile .cluster/demo-crl.pem .cluster/demo-victim.pem >/dev/null 2>&1
}
wait_until 30 "the CRL to list the serial" crl_has_serial
echo "  openssl verify -crl_check now says:"
openssl verify -CAfile .cluster/demo-ca.pem -crl_check -CRLfile .cluster/demo-crl.pem .cluster/demo-victim.pem 2>&1 | sed 's/^/    /' || true

if .venv/bin/trustwarden inventory --help >/dev/null 2>&1; then
  step "Inventory (trustwarden inventory -A)"
  .venv/bin/trustwarden inventory -A || true
fi

step "Done"
echo "The cluster keeps running with the demo objects: KUBECONFIG=$KUBECONFIG $KUBECTL get wid -A"
echo "Stop everything with: make cluster-down"
