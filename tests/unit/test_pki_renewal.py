from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.conftest import BOTH, NOW, TD, cached_ca, cached_key, request
from trustwarden.pki import (
    AuthoritySet,
    DesiredLeaf,
    InvalidArgumentError,
    KeyAlgorithm,
    RenewalAction,
    RenewalReason,
    SpiffeID,
    Usage,
    advance,
    create_self_signed_ca,
    decide_for_secret,
    decide_renewal,
    inspect_leaf,
    issue_leaf,
    jitter_fraction,
    renew_point,
)
from trustwarden.pki.issue import DEFAULT_BACKDATE

KEY = cached_key(KeyAlgorithm.ECDSAP256)
SID = SpiffeID(TD, "/ns/payments/sa/payments")


def desired(**overrides: object) -> DesiredLeaf:
    values: dict[str, object] = {
        "spiffe_id": SID,
        "dns_names": ("payments.payments.svc",),
        "ttl": timedelta(hours=1),
        "key_algorithm": KeyAlgorithm.ECDSAP256,
        "usages": BOTH,
        "renew_at": 0.5,
    }
    values.update(overrides)
    return DesiredLeaf(**values)  # type: ignore[arg-type]


def fresh(ca=None, when=NOW, **kw):  # type: ignore[no-untyped-def]
    ca = ca or cached_ca()
    leaf = issue_leaf(
        ca, request(**kw), when, private_key=cached_key(kw.get("alg", KeyAlgorithm.ECDSAP256))
    )
    return leaf, inspect_leaf(leaf.chain_pem, leaf.private_key_pem, issuers=[ca])


def test_not_issued() -> None:
    d = decide_renewal(None, desired(), cached_ca(), NOW, jitter_key="uid-1")
    assert (d.action, d.reason, d.at) == (RenewalAction.issue, RenewalReason.NotIssued, NOW)
    assert (
        d.message
        == "no certificate has been issued for spiffe://prod.example.org/ns/payments/sa/payments yet"
    )
    assert d.needs_issue


def test_up_to_date_waits_until_renew_point() -> None:
    leaf, facts = fresh()
    d = decide_renewal(facts, desired(), cached_ca(), NOW, jitter_key="uid-1")
    assert d.action is RenewalAction.wait and d.reason is RenewalReason.UpToDate
    point = renew_point(facts, 0.5, "uid-1")
    assert d.at == point
    assert "is up to date; renewing at" in d.message
    issued = leaf.not_before + DEFAULT_BACKDATE
    usable = leaf.not_after - issued
    assert issued + usable * 0.4 <= point <= issued + usable * 0.5
    later = decide_renewal(facts, desired(), cached_ca(), point, jitter_key="uid-1")
    assert later.action is RenewalAction.renew and later.reason is RenewalReason.RenewPointReached
    assert "reached its renew point" in later.message and "renewAt 50%" in later.message


def test_expired() -> None:
    leaf, facts = fresh()
    d = decide_renewal(facts, desired(), cached_ca(), leaf.not_after, jitter_key="k")
    assert (d.action, d.reason) == (RenewalAction.issue, RenewalReason.Expired)
    assert "expired at" in d.message


def test_key_mismatch() -> None:
    leaf, _ = fresh()
    other = issue_leaf(cached_ca(), request(), NOW)  # fresh key
    for key_pem in (other.private_key_pem, None):
        facts = inspect_leaf(leaf.chain_pem, key_pem)
        d = decide_renewal(facts, desired(), cached_ca(), NOW, jitter_key="k")
        assert (d.action, d.reason) == (RenewalAction.issue, RenewalReason.KeyMismatch)
        assert "tls.key is missing or does not match the certificate" in d.message


def test_tampered_by_fingerprint_and_non_svid() -> None:
    leaf, facts = fresh()
    d = decide_renewal(
        facts, desired(), cached_ca(), NOW, jitter_key="k", expected_sha256="ab" * 32
    )
    assert (d.action, d.reason) == (RenewalAction.issue, RenewalReason.Tampered)
    assert "is not the certificate trustwarden wrote" in d.message
    ok = decide_renewal(
        facts, desired(), cached_ca(), NOW, jitter_key="k", expected_sha256=leaf.sha256
    )
    assert ok.reason is RenewalReason.UpToDate
    ca_facts = inspect_leaf(cached_ca().certificate_pem, None)
    d = decide_renewal(ca_facts, desired(), cached_ca(), NOW, jitter_key="k")
    assert d.reason is RenewalReason.Tampered and "is a CA certificate" in d.message


def test_decide_for_secret() -> None:
    leaf, _ = fresh()
    assert (
        decide_for_secret(None, None, desired(), cached_ca(), NOW, jitter_key="k").reason
        is RenewalReason.NotIssued
    )
    d = decide_for_secret(b"junk", None, desired(), cached_ca(), NOW, jitter_key="k")
    assert d.reason is RenewalReason.Tampered and "no '-----BEGIN CERTIFICATE-----'" in d.message
    good = decide_for_secret(
        leaf.chain_pem, leaf.private_key_pem, desired(), cached_ca(), NOW, jitter_key="k"
    )
    assert good.reason is RenewalReason.UpToDate


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            {"spiffe_id": SpiffeID(TD, "/ns/payments/sa/other")},
            "SPIFFE ID (spiffe://prod.example.org/ns/payments/sa/payments -> spiffe://prod.example.org/ns/payments/sa/other)",
        ),
        ({"dns_names": ("x.svc",)}, "DNS names ([payments.payments.svc] -> [x.svc])"),
        ({"key_algorithm": KeyAlgorithm.ECDSAP384}, "key algorithm (ECDSAP256 -> ECDSAP384)"),
        ({"usages": frozenset({Usage.server})}, "usages ([client, server] -> [server])"),
        ({"ttl": timedelta(hours=2)}, "TTL (issued for 1h5m, want 2h)"),
        ({"ttl": timedelta(minutes=30)}, "TTL (issued for 1h5m, want 30m)"),
        ({"max_ttl": timedelta(minutes=20)}, "TTL (issued for 1h5m, want 20m)"),
    ],
)
def test_spec_changed(change: dict[str, object], fragment: str) -> None:
    _, facts = fresh()
    d = decide_renewal(facts, desired(**change), cached_ca(), NOW, jitter_key="k")
    assert (d.action, d.reason) == (RenewalAction.renew, RenewalReason.SpecChanged)
    assert fragment in d.message


def test_dns_order_and_renew_at_are_not_spec_changes() -> None:
    _, facts = fresh(dns=("a.svc", "b.svc"))
    same = desired(dns_names=("b.svc", "a.svc"), renew_at=0.7)
    assert (
        decide_renewal(facts, same, cached_ca(), NOW, jitter_key="k").reason
        is RenewalReason.UpToDate
    )


def test_leaf_capped_by_issuer_is_not_a_spec_change() -> None:
    ca = cached_ca()
    late = ca.not_after - timedelta(minutes=20)
    leaf, facts = fresh(ca, when=late)
    assert leaf.not_after == ca.not_after
    d = decide_renewal(facts, desired(), ca, late, jitter_key="k")
    assert d.reason is RenewalReason.UpToDate, d.message
    aset_d = decide_renewal(facts, desired(), AuthoritySet(), late, jitter_key="k")
    assert aset_d.reason is RenewalReason.UpToDate


def test_ttl_capped_by_ca_lifetime_is_not_a_spec_change() -> None:
    short_ca = create_self_signed_ca(TD, ttl=timedelta(hours=3), now=NOW, private_key=KEY)
    want = desired(ttl=timedelta(hours=24))
    leaf = issue_leaf(short_ca, want.to_request(short_ca.lifetime), NOW, private_key=KEY)
    assert leaf.not_after - NOW == timedelta(minutes=30, seconds=50)  # (3h + 5m) / 6
    facts = inspect_leaf(leaf.chain_pem, leaf.private_key_pem)
    assert (
        decide_renewal(facts, want, short_ca, NOW, jitter_key="k").reason is RenewalReason.UpToDate
    )


def test_issuer_not_active_after_rotation() -> None:
    key_ca = lambda now: create_self_signed_ca(TD, ttl=timedelta(days=30), now=now, private_key=KEY)  # noqa: E731
    aset, _ = advance(AuthoritySet(), NOW, key_ca)
    old = aset.active_authority
    assert old is not None
    leaf = issue_leaf(old, request(), NOW, private_key=KEY)
    facts = inspect_leaf(leaf.chain_pem, leaf.private_key_pem, issuers=aset.authorities)
    assert (
        decide_renewal(facts, desired(), aset, NOW, jitter_key="k").reason is RenewalReason.UpToDate
    )
    t = NOW + timedelta(days=25)
    aset, _ = advance(aset, NOW + timedelta(days=15), key_ca)
    aset, _ = advance(aset, t, key_ca)
    assert aset.active_authority is not old
    d = decide_renewal(facts, desired(), aset, NOW + timedelta(minutes=1), jitter_key="k")
    assert (d.action, d.reason) == (RenewalAction.renew, RenewalReason.IssuerNotActive)
    assert f"was not signed by the active authority {aset.active_authority.serial_hex}" in d.message  # type: ignore[union-attr]
    by_sha = decide_renewal(facts, desired(), aset.active_authority.sha256, NOW, jitter_key="k")  # type: ignore[union-attr]
    assert by_sha.reason is RenewalReason.IssuerNotActive
    same_sha = decide_renewal(facts, desired(), old.sha256, NOW, jitter_key="k")
    assert same_sha.reason is RenewalReason.UpToDate


def test_unknown_issuer_by_sha_does_not_loop() -> None:
    leaf, _ = fresh()
    facts = inspect_leaf(leaf.chain_pem, leaf.private_key_pem)  # no issuers given
    assert facts.issuer_sha256 is None
    d = decide_renewal(facts, desired(), "ff" * 32, NOW, jitter_key="k")
    assert d.reason is RenewalReason.UpToDate


def test_desired_validation() -> None:
    with pytest.raises(InvalidArgumentError, match="renew_at must be strictly between 0 and 1"):
        desired(renew_at=1.0)
    with pytest.raises(InvalidArgumentError, match="ttl must be positive"):
        desired(ttl=timedelta(0))
    _, facts = fresh()
    with pytest.raises(InvalidArgumentError, match="max_jitter_fraction"):
        renew_point(facts, 0.5, "k", max_jitter_fraction=1.5)


def test_jitter_is_deterministic_and_spread() -> None:
    assert jitter_fraction("uid-1") == jitter_fraction("uid-1")
    values = {round(jitter_fraction(f"uid-{i}"), 3) for i in range(200)}
    assert len(values) > 150
    assert all(0 <= jitter_fraction(f"u{i}") < 1 for i in range(200))


# --------------------------------------------------------------------------- properties

_LEAVES: dict[int, object] = {}


def _leaf_for(ttl_minutes: int):  # type: ignore[no-untyped-def]
    if ttl_minutes not in _LEAVES:
        _LEAVES[ttl_minutes] = fresh(ttl=timedelta(minutes=ttl_minutes))
    return _LEAVES[ttl_minutes]


@settings(max_examples=120, deadline=None)
@given(
    ttl_minutes=st.sampled_from([10, 60, 600]),
    renew_at=st.floats(min_value=0.01, max_value=0.99),
    jitter_key=st.text(max_size=20),
    max_jitter=st.floats(min_value=0, max_value=0.5),
    offset=st.floats(min_value=-0.2, max_value=1.2),
)
def test_decision_properties(
    ttl_minutes: int, renew_at: float, jitter_key: str, max_jitter: float, offset: float
) -> None:
    _leaf, facts = _leaf_for(ttl_minutes)
    lifetime = facts.not_after - facts.not_before
    now = facts.not_before + lifetime * offset
    want = desired(ttl=timedelta(minutes=ttl_minutes), renew_at=renew_at)
    d = decide_renewal(
        facts, want, cached_ca(), now, jitter_key=jitter_key, max_jitter_fraction=max_jitter
    )
    point = renew_point(facts, renew_at, jitter_key, max_jitter)
    issued = min(facts.not_before + DEFAULT_BACKDATE, facts.not_after)
    usable = facts.not_after - issued
    # Deterministic: same inputs, same answer.
    assert d == decide_renewal(
        facts, want, cached_ca(), now, jitter_key=jitter_key, max_jitter_fraction=max_jitter
    )
    # The renew point lies in the jitter window, measured from issuance (not the back-dated
    # notBefore), and the jitter never takes more than half of renewAt.
    nominal = issued + usable * renew_at
    window = usable * min(max_jitter, renew_at / 2)
    assert nominal - window - timedelta(microseconds=2) <= point <= nominal
    assert point >= issued + usable * (renew_at / 2) - timedelta(microseconds=2)
    # A scheduled `at` is never after notAfter; actions are due now.
    if d.action is RenewalAction.wait:
        assert d.at == point and now < point
        assert d.at < facts.not_after
    else:
        assert d.at == now
    # Renew whenever now >= renew point; issue once expired.
    if now >= facts.not_after:
        assert d.reason is RenewalReason.Expired
    elif now >= point:
        assert d.reason is RenewalReason.RenewPointReached
    else:
        assert d.reason is RenewalReason.UpToDate


def test_short_ttl_with_early_renew_at_is_not_due_at_issuance() -> None:
    """10m TTL, renewAt 10%: the back-dated notBefore must not pull the renew point before
    issuance (that re-issued every second before this was fixed)."""
    _leaf, facts = fresh(when=NOW, ttl=timedelta(minutes=10))
    want = desired(ttl=timedelta(minutes=10), renew_at=0.1)
    decision = decide_renewal(facts, want, cached_ca(), NOW, jitter_key="pod-uid")
    assert decision.action is RenewalAction.wait
    assert timedelta(seconds=30) <= decision.at - NOW <= timedelta(seconds=60)
