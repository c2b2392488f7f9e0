"""Sign one PodCertificateRequest: policy (reconcile/podcert.py), then the certificate.

The key was made on the node; only its public half, from the stub PKCS#10 request, is signed.
The chain is the leaf, then the intermediates of the issuing authority (a secretRef CA's
chain) and, during a cross-signed rotation, the cross-certificate; never the root: the root
is in the ClusterTrustBundle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from trustwarden.pki.ca import Authority, new_serial
from trustwarden.pki.issue import sign_public_key
from trustwarden.reconcile import podcert
from trustwarden.reconcile.domains import DomainRuntime
from trustwarden.reconcile.ledger import LedgerEntry
from trustwarden.reconcile.model import WorkloadIdentitySpec


@dataclass(frozen=True)
class Signed:
    status: dict[str, Any]
    entry: LedgerEntry
    plan: podcert.Issue
    authority: Authority


@dataclass(frozen=True)
class Refused:
    status: dict[str, Any]
    refusal: podcert.Refusal


def sign(
    pcr: podcert.PCRInfo,
    runtime: DomainRuntime,
    *,
    pod_labels: Mapping[str, str],
    identities: Iterable[WorkloadIdentitySpec],
    namespace_labels: Mapping[str, str],
    cluster_domain: str,
    now: datetime,
    max_jitter_fraction: float,
) -> Signed | Refused:
    authority = runtime.active()
    view = podcert.DomainView(runtime.spec, authority, runtime.conflict)
    outcome = podcert.decide(
        pcr,
        pod_labels=pod_labels,
        identities=identities,
        domain=view,
        namespace_labels=namespace_labels,
        cluster_domain=cluster_domain,
        now=now,
        max_jitter_fraction=max_jitter_fraction,
    )
    if isinstance(outcome, podcert.Refusal):
        return Refused(podcert.refused_status(pcr, outcome, now), outcome)
    assert authority is not None
    serial = new_serial()
    certificate = sign_public_key(
        authority,
        outcome.request,
        outcome.public_key,
        outcome.not_before,
        outcome.not_after,
        serial,
    )
    # During a cross-signed rotation the chain also carries the cross-certificate, so a peer
    # that still trusts only the old anchor verifies the new leaf, as on the Secret path.
    chain = authority.issuing_chain_pem + runtime.cross_chain_pem()
    status = podcert.issued_status(pcr, outcome, certificate, chain, now)
    entry = LedgerEntry(serial, pcr.pod_uid, outcome.not_after, runtime.name, authority.sha256)
    return Signed(status, entry, outcome, authority)
