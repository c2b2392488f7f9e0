#!/usr/bin/env bash
# Checks every example in this directory against a real kube-apiserver that has the CRDs of
# deploy/crds/ installed, without creating anything (server-side dry run):
#   valid-*.yaml    must be accepted;
#   invalid-*.yaml  must be rejected, with the text after "# expect: " in the error;
#                   a file marked "# expect-strict: " instead is rejected only under field
#                   validation Strict (kubectl's default) and accepted, pruned, with --validate=false.
# Usage: tests/data/crds/check.sh [--install]   (KUBECTL and KUBECONFIG are honoured;
#        --install first applies deploy/crds/ server-side, which is the only write it makes)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KUBECTL="${KUBECTL:-kubectl}"
NS="${NAMESPACE:-default}"
if [[ "${1:-}" == "--install" ]]; then
  "$KUBECTL" apply --server-side --force-conflicts -f "$here/../../../deploy/crds/" || exit 1
  "$KUBECTL" wait --for=condition=Established --timeout=60s \
    crd/trustdomains.trustwarden.io crd/workloadidentities.trustwarden.io || exit 1
fi
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); printf 'FAIL %s: %s\n' "$1" "$2"; }
for f in "$here"/valid-*.yaml; do
  n="$(basename "$f")"
  if out="$("$KUBECTL" apply --dry-run=server -n "$NS" -f "$f" 2>&1)"; then ok; else bad "$n" "rejected: $out"; fi
done
for f in "$here"/invalid-*.yaml; do
  n="$(basename "$f")"
  strict=0
  want="$(sed -n 's/^# expect: //p' "$f" | head -1)"
  if [[ -z "$want" ]]; then want="$(sed -n 's/^# expect-strict: //p' "$f" | head -1)"; strict=1; fi
  [[ -n "$want" ]] || { bad "$n" "no '# expect:' line"; continue; }
  if out="$("$KUBECTL" apply --dry-run=server --validate=strict -n "$NS" -f "$f" 2>&1)"; then
    bad "$n" "accepted, expected: $want"
  elif [[ "$out" != *"$want"* ]]; then
    bad "$n" "expected '$want' in: $out"
  elif (( strict )) && ! out="$("$KUBECTL" apply --dry-run=server --validate=false -n "$NS" -f "$f" 2>&1)"; then
    bad "$n" "rejected even without strict field validation: $out"
  else
    ok
  fi
done
echo "$pass passed, $fail failed"
(( fail == 0 ))
