"""After a start: what the pod-certificate ledger and the status counts must learn again from
what the cluster holds (pure functions over the listings)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from trustwarden.pki.errors import PKIError
from trustwarden.pki.issue import inspect_leaf
from trustwarden.reconcile import podcert
from trustwarden.reconcile.domains import DomainRuntime
from trustwarden.reconcile.ledger import Ledger, LedgerEntry
from trustwarden.reconcile.model import DeliveryMode, WorkloadIdentitySpec
from trustwarden.reconcile.podcerts.views import PodSeen
from trustwarden.reconcile.reflector import Key


def backfill_ledger(
    ledger: Ledger,
    issued: Iterable[Mapping[str, Any]],
    domains: Mapping[str, DomainRuntime],
    now: datetime,
) -> int:
    """A certificate signed just before a crash, ahead of the batched ledger write, is known
    only from its PodCertificateRequest's status. Record every listed one that an authority of
    its domain provably signed (the signature verifies) for a SPIFFE ID of that namespace, so
    that its pod's deletion, now or during the outage, revokes it. Returns how many."""
    recorded = 0
    for body in issued:
        pcr = podcert.PCRInfo.from_body(body)
        runtime = domains.get(podcert.domain_of(pcr.signer) or "")
        chain = str((body.get("status") or {}).get("certificateChain") or "")
        if runtime is None or runtime.authorities is None or not chain or not pcr.pod_uid:
            continue
        try:
            facts = inspect_leaf(chain.encode(), None)
        except PKIError:
            continue
        if facts.not_after <= now or ledger.entry(pcr.namespace, facts.serial) is not None:
            continue
        if facts.spiffe_id is None or not facts.spiffe_id.path.startswith(f"/ns/{pcr.namespace}/"):
            continue
        issuer = next(
            (r for r in runtime.authorities.records if facts.signed_by(r.authority)), None
        )
        if issuer is None:
            continue
        entry = LedgerEntry(facts.serial, pcr.pod_uid, facts.not_after, runtime.name, issuer.sha256)
        ledger.record(pcr.namespace, entry)
        recorded += 1
    return recorded


def recover_pod_identities(
    pods: Mapping[Key, PodSeen],
    ledger: Ledger,
    identities: Iterable[WorkloadIdentitySpec],
    now: datetime,
) -> dict[str, tuple[str, str]]:
    """Pod UID -> the PodCertificate identity it holds a certificate of: a live pod with an
    unexpired ledger serial of a domain, and the identity of its namespace from that domain
    whose podSelector selects it (the first by name). Status counts then survive a restart
    instead of starting again at 0 until every pod refreshes."""
    by_namespace: dict[str, list[WorkloadIdentitySpec]] = {}
    for spec in sorted(identities, key=lambda s: s.name):
        if spec.mode is DeliveryMode.POD_CERTIFICATE and spec.pod_selector is not None:
            by_namespace.setdefault(spec.namespace, []).append(spec)
    found: dict[str, tuple[str, str]] = {}
    for (namespace, _name), seen in pods.items():
        domains = {e.domain for e in ledger.owned_by(namespace, seen.uid) if e.not_after > now}
        if not domains:
            continue
        for spec in by_namespace.get(namespace, ()):
            selector = spec.pod_selector
            if (
                selector is not None
                and spec.trust_domain_ref in domains
                and selector.matches(seen.labels)
            ):
                found[seen.uid] = (namespace, spec.name)
                break
    return found
