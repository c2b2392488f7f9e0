"""CA hand-over: a scheduled activation re-issues nothing early (each leaf moves at its own
renew point, so renewals per second do not peak at the rollover); an emergency rotation
re-issues paced, at most `rate` per second."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trustwarden.pki.issue import LeafFacts
from trustwarden.pki.rotation import AuthorityRecord, AuthoritySet, AuthorityState
from trustwarden.reconcile.handover import HandoverPacer, retired_on_schedule

NOW = datetime(2026, 6, 1, tzinfo=UTC)


class FakeAuthority:
    def __init__(self, name: str, not_before: datetime, lifetime: timedelta) -> None:
        self.sha256 = name
        self.not_before = not_before
        self.not_after = not_before + lifetime
        self.lifetime = lifetime


class FakeLeaf:
    def __init__(self, issuer: FakeAuthority, not_after: datetime) -> None:
        self.issuer = issuer
        self.not_after = not_after

    def issued_by(self, authority: object) -> bool:
        return authority is self.issuer


def authorities(*, retired_at: datetime) -> tuple[AuthoritySet, FakeAuthority]:
    old = FakeAuthority("old", NOW - timedelta(days=75), timedelta(days=90))
    new = FakeAuthority("new", NOW - timedelta(days=30), timedelta(days=90))
    records = (
        AuthorityRecord(old, AuthorityState.Retired, retired_at=retired_at),  # type: ignore[arg-type]
        AuthorityRecord(new, AuthorityState.Active, activated_at=retired_at),  # type: ignore[arg-type]
    )
    return AuthoritySet(records), old


def leaf(issuer: FakeAuthority) -> LeafFacts:
    return FakeLeaf(issuer, NOW + timedelta(hours=20))  # type: ignore[return-value]


def test_a_scheduled_hand_over_waits_for_each_leafs_renew_point() -> None:
    # 5/6 of a 90-day life is day 75: retired exactly then
    aset, old = authorities(retired_at=NOW)
    assert retired_on_schedule(aset.records[0])
    pacer = HandoverPacer(rate=50)
    points = [NOW + timedelta(hours=h) for h in (1, 5, 9)]
    deferred = [
        pacer.defer(("pod", "ns", f"p{i}"), aset, leaf(old), point, NOW)
        for i, point in enumerate(points)
    ]
    assert deferred == points, "each leaf moves at its own renew point, not now"
    assert (
        pacer.defer(("pod", "ns", "due"), aset, leaf(old), NOW - timedelta(seconds=1), NOW) is None
    )


def test_an_emergency_rotation_is_paced_at_the_rate() -> None:
    aset, old = authorities(retired_at=NOW - timedelta(days=10))  # forced out before day 75
    assert not retired_on_schedule(aset.records[0])
    pacer = HandoverPacer(rate=50)
    later = NOW + timedelta(hours=5)
    slots = [pacer.defer(("pod", "ns", f"p{i}"), aset, leaf(old), later, NOW) for i in range(100)]
    assert slots[0] is None  # the first goes now
    assert all(s is not None for s in slots[1:])
    last = slots[-1]
    assert last is not None and last - NOW == timedelta(seconds=99 / 50)
    # a key keeps its slot: asking again before it is due does not push it back
    assert pacer.defer(("pod", "ns", "p99"), aset, leaf(old), later, NOW) == last
    assert pacer.defer(("pod", "ns", "p99"), aset, leaf(old), later, last) is None
    assert len(pacer) == 98


def test_a_leaf_of_an_unknown_issuer_is_paced_too() -> None:
    aset, _ = authorities(retired_at=NOW)
    stranger = FakeAuthority("gone", NOW - timedelta(days=200), timedelta(days=90))
    pacer = HandoverPacer(rate=1)
    assert pacer.defer("a", aset, leaf(stranger), NOW, NOW) is None
    assert pacer.defer("b", aset, leaf(stranger), NOW, NOW) == NOW + timedelta(seconds=1)
    pacer.forget("b")
    assert len(pacer) == 0


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="--reissue-rate"):
        HandoverPacer(rate=0)
