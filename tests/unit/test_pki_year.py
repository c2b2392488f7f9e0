"""A simulated year of operation, with no cluster and no sleeping.

1-hour leaves renewed at 50% (jittered), a 30-day self-signed CA rotating on SPIRE's
schedule, time advancing in 10-minute steps. At every step every live leaf must verify,
with cryptography's verifier at that simulated time, against exactly the anchors the
namespace's ``trustwarden-bundle`` ConfigMap would hold then. Zero gaps, nothing expires.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from tests.unit.conftest import BOTH, NOW, TD
from trustwarden.pki import (
    Authority,
    AuthoritySet,
    DesiredLeaf,
    IssuedLeaf,
    KeyAlgorithm,
    LeafFacts,
    RenewalReason,
    SpiffeID,
    TransitionKind,
    Usage,
    advance,
    build_namespace_bundle,
    create_self_signed_ca,
    decide_renewal,
    generate_private_key,
    inspect_leaf,
    issue_leaf,
    next_event_at,
    record_issued,
)

STEP = timedelta(minutes=10)
YEAR = timedelta(days=int(__import__("os").environ.get("SIM_DAYS", "365")))
CA_TTL = timedelta(days=30)


@dataclass
class Workload:
    jitter_key: str
    desired: DesiredLeaf
    leaf: IssuedLeaf | None = None
    facts: LeafFacts | None = None


def make_ca(now: datetime) -> Authority:
    # Fresh CA keys: reusing one would let old leaves verify under a new root and hide gaps.
    return create_self_signed_ca(TD, KeyAlgorithm.ECDSAP256, CA_TTL, now=now)


@pytest.mark.slow
def test_simulated_year_has_no_gaps() -> None:
    started = time.monotonic()
    leaf_key = generate_private_key(KeyAlgorithm.ECDSAP256)  # leaf key freshness is irrelevant
    workloads = [
        Workload(
            f"secret-uid-{i}",
            DesiredLeaf(
                SpiffeID(TD, f"/ns/payments/sa/api-{i}"),
                (f"api-{i}.payments.svc",),
                timedelta(hours=1),
                KeyAlgorithm.ECDSAP256,
                BOTH if i else frozenset({Usage.client}),
                renew_at=0.5,
            ),
        )
        for i in range(2)
    ]
    aset = AuthoritySet()
    now = NOW
    end = NOW + YEAR
    transitions: Counter[TransitionKind] = Counter()
    reasons: Counter[RenewalReason] = Counter()
    first_published: dict[str, datetime] = {}
    store: Store | None = None
    last_anchors: list[x509.Certificate] = []
    bundle_writes = 0
    verified = 0
    sequence = 0
    last_hash = ""
    steps = 0
    issued = 0

    while now <= end:
        aset, happened = advance(aset, now, make_ca)
        transitions.update(t.kind for t in happened)
        due = next_event_at(aset)
        assert due is not None and due > now, "advance left work undone"

        anchors = aset.anchors(now)
        if anchors != last_anchors:
            # The operator rewrites the ConfigMap only when its content changes; so do we.
            sequence += 1
            bundle = build_namespace_bundle({TD: anchors}, {}, now, sequence)
            assert bundle.content_hash != last_hash
            certs = x509.load_pem_x509_certificates(bundle.data["ca.crt"].encode())
            assert certs == anchors
            for cert in certs:
                first_published.setdefault(cert.fingerprint(_SHA256).hex(), now)
            store = Store(certs)
            last_hash, last_anchors = bundle.content_hash, anchors
            bundle_writes += 1
        verifier = PolicyBuilder().store(store).time(now).build_client_verifier()

        for w in workloads:
            if w.leaf is not None:
                # The leaf the workload holds right now must verify against today's bundle.
                assert now < w.leaf.not_after, f"{w.jitter_key}: leaf expired unrenewed at {now}"
                verifier.verify(w.leaf.certificate, [])
                verified += 1
            decision = decide_renewal(w.facts, w.desired, aset, now, jitter_key=w.jitter_key)
            reasons[decision.reason] += 1
            assert decision.reason not in {
                RenewalReason.Expired,
                RenewalReason.KeyMismatch,
                RenewalReason.Tampered,
                RenewalReason.SpecChanged,
            }, decision.message
            if decision.action == "wait":
                assert now < decision.at < w.leaf.not_after  # type: ignore[union-attr]
                continue
            active = aset.active_authority
            assert active is not None
            # The issuer must have been in every bundle long before its first leaf (except
            # the very first authority, created at t0 when nothing existed).
            published = first_published[active.sha256]
            assert published == NOW or now - published >= CA_TTL / 3 - STEP
            leaf = issue_leaf(
                active, w.desired.to_request(active.lifetime), now, private_key=leaf_key
            )
            aset = record_issued(aset, leaf.issuer_sha256, leaf.not_after)
            w.leaf = leaf
            # The operator keeps the facts of what it just wrote; re-reading the Secret
            # (inspect_leaf) must agree. Checked on a sample to keep the run short.
            w.facts = leaf.to_facts(active)
            issued += 1
            if issued % 97 == 1:
                assert w.facts == inspect_leaf(
                    leaf.chain_pem, leaf.private_key_pem, issuers=aset.authorities
                )
            result = verifier.verify(leaf.certificate, [])
            assert x509.UniformResourceIdentifier(w.desired.spiffe_id.uri) in (
                result.subjects or []
            )
            verified += 1
        now += STEP
        steps += 1

    elapsed = time.monotonic() - started
    print(
        f"\nsimulated year: {steps} steps, {verified} verifications, "
        f"{bundle_writes} bundle writes, transitions {dict(transitions)}, "
        f"decisions {dict(reasons)}, {elapsed:.1f}s"
    )
    # SPIRE's schedule rotates every half CA lifetime: ~24 rollovers of a 30-day CA a year.
    assert transitions[TransitionKind.activated] >= 12 * YEAR / timedelta(days=365)
    assert transitions[TransitionKind.dropped] >= transitions[TransitionKind.activated] - 2
    assert transitions[TransitionKind.prepared] - transitions[TransitionKind.activated] in {0, 1}
    assert bundle_writes <= 3 * transitions[TransitionKind.activated] + 3
    renewals = reasons[RenewalReason.RenewPointReached] + reasons[RenewalReason.IssuerNotActive]
    hours = YEAR / timedelta(hours=1)
    assert renewals > len(workloads) * hours * 2 * 0.9  # every ~30 min, for each workload
    # Re-issued at (nearly) every activation, not only at the next renew point.
    assert (
        reasons[RenewalReason.IssuerNotActive]
        >= len(workloads) * (transitions[TransitionKind.activated] - 1) // 2
    )
    assert len(aset.records) <= 3


from cryptography.hazmat.primitives import hashes  # noqa: E402

_SHA256 = hashes.SHA256()
