from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.unit.conftest import NOW, TD, cached_key
from trustwarden.pki import (
    Authority,
    AuthorityRecord,
    AuthoritySet,
    AuthorityState,
    InvalidArgumentError,
    KeyAlgorithm,
    StateError,
    TransitionKind,
    advance,
    create_self_signed_ca,
    force_rotate,
    next_event_at,
    record_from_dict,
    record_issued,
    record_to_dict,
)

LIFE = timedelta(days=30)


class Factory:
    """make_authority with a call log; reuses one key (freshness is irrelevant here)."""

    def __init__(self, ttl: timedelta = LIFE) -> None:
        self.ttl = ttl
        self.calls: list[datetime] = []

    def __call__(self, now: datetime) -> Authority:
        self.calls.append(now)
        return create_self_signed_ca(
            TD, KeyAlgorithm.ECDSAP256, self.ttl, now=now, private_key=cached_key(KeyAlgorithm.ECDSAP256),
            backdate=timedelta(0),
        )  # fmt: skip


def kinds(transitions: list) -> list[str]:  # type: ignore[type-arg]
    return [t.kind.value for t in transitions]


def test_empty_set_creates_and_activates() -> None:
    make = Factory()
    aset, transitions = advance(AuthoritySet(), NOW, make)
    assert kinds(transitions) == ["prepared", "activated"]
    assert aset.active is not None and aset.active.state is AuthorityState.Active
    assert aset.active_authority is aset.active.authority
    assert aset.active.activated_at == NOW
    assert len(make.calls) == 1
    assert aset.anchors(NOW) == [aset.active.authority.certificate]
    assert next_event_at(AuthoritySet()) is None


def test_full_spire_schedule() -> None:
    make = Factory()
    aset, _ = advance(AuthoritySet(), NOW, make)
    first = aset.active_authority
    assert first is not None
    # Idempotent and quiet before 1/2.
    same, transitions = advance(aset, NOW + LIFE / 2 - timedelta(seconds=1), make)
    assert same is aset and transitions == []
    assert next_event_at(aset) == NOW + LIFE / 2

    aset, transitions = advance(aset, NOW + LIFE / 2, make)
    assert kinds(transitions) == ["prepared"]
    assert "reached 1/2 of its lifetime" in transitions[0].reason
    prepared = aset.prepared_record
    assert prepared is not None
    assert aset.active_authority is first
    # The successor is published at once.
    assert {c.serial_number for c in aset.anchors(NOW + LIFE / 2)} == {
        first.serial,
        prepared.serial,
    }
    assert next_event_at(aset) == NOW + LIFE * 5 / 6

    aset, transitions = advance(aset, NOW + LIFE * 5 / 6, make)
    assert kinds(transitions) == ["retired", "activated"]
    assert aset.active is not None and aset.active.sha256 == prepared.sha256
    retired = aset.by_sha256[first.sha256]
    assert retired.state is AuthorityState.Retired and retired.retired_at == NOW + LIFE * 5 / 6
    # Still trusted: its leaves are alive.
    assert len(aset.anchors(NOW + LIFE * 5 / 6)) == 2

    leaf_end = NOW + LIFE * 5 / 6 + timedelta(hours=1)
    aset = record_issued(aset, first.sha256, leaf_end)
    assert aset.by_sha256[first.sha256].last_leaf_not_after == leaf_end
    assert record_issued(aset, first.sha256, leaf_end - timedelta(hours=2)) is aset
    assert record_issued(aset, "unknown", leaf_end) is aset
    assert next_event_at(aset) == leaf_end

    aset, transitions = advance(aset, leaf_end, make)
    assert kinds(transitions) == ["dropped"]
    assert "its last leaf expired" in transitions[0].reason
    assert first.sha256 not in aset.by_sha256
    assert len(aset.records) == 1


def test_retired_without_recorded_leaves_stays_until_not_after() -> None:
    make = Factory()
    aset, _ = advance(AuthoritySet(), NOW, make)
    first = aset.active_authority
    assert first is not None
    aset, _ = advance(aset, NOW + LIFE / 2, make)
    aset, _ = advance(aset, NOW + LIFE * 5 / 6, make)
    assert aset.by_sha256[first.sha256].drop_at == first.not_after
    aset, transitions = advance(aset, first.not_after, make)
    assert "dropped" in kinds(transitions)


def test_time_jump_catches_up_in_one_call() -> None:
    make = Factory()
    aset, _ = advance(AuthoritySet(), NOW, make)
    aset, transitions = advance(aset, NOW + LIFE * 2, make)
    # Active expired -> retired+dropped; a new authority is created and activated.
    assert aset.active is not None
    assert aset.active_authority is not None and aset.active_authority.not_after > NOW + LIFE * 2
    assert "activated" in kinds(transitions)
    again, more = advance(aset, NOW + LIFE * 2, make)
    assert more == [] and again is aset


def test_force_rotate_plans_activation() -> None:
    make = Factory()
    aset, _ = advance(AuthoritySet(), NOW, make)
    first = aset.active_authority
    t = NOW + timedelta(days=2)
    aset = force_rotate(aset, t, make, timedelta(minutes=10))
    prepared = aset.prepared_record
    assert prepared is not None and prepared.planned_activation == t + timedelta(minutes=10)
    assert next_event_at(aset) == t + timedelta(minutes=10)
    aset2, none = advance(aset, t + timedelta(minutes=9), make)
    assert none == []
    aset2, transitions = advance(aset, t + timedelta(minutes=10), make)
    assert kinds(transitions) == ["retired", "activated"]
    assert "planned (forced) activation" in transitions[1].reason
    assert aset2.active is not None and aset2.active.sha256 == prepared.sha256
    assert aset2.active.planned_activation is None
    assert first is not None and aset2.by_sha256[first.sha256].state is AuthorityState.Retired
    # Forcing again replaces an existing Prepared authority (it never signed anything).
    twice = force_rotate(force_rotate(aset2, t, make, timedelta(0)), t, make, timedelta(0))
    assert sum(1 for r in twice.records if r.state is AuthorityState.Prepared) == 1
    with pytest.raises(InvalidArgumentError, match="activate_after must be >= 0"):
        force_rotate(aset2, t, make, timedelta(seconds=-1))
    created = force_rotate(AuthoritySet(), t, make, timedelta(minutes=1))
    assert created.active is not None


def test_make_authority_must_cover_now() -> None:
    stale = create_self_signed_ca(TD, now=NOW - timedelta(days=100), ttl=timedelta(days=30))
    with pytest.raises(InvalidArgumentError, match="which does not cover now"):
        advance(AuthoritySet(), NOW, lambda _now: stale)


def test_invariants_enforced() -> None:
    make = Factory()
    a, b = make(NOW), make(NOW + timedelta(seconds=1))
    with pytest.raises(StateError, match="2 authorities are Active; at most one may be"):
        AuthoritySet(
            (AuthorityRecord(a, AuthorityState.Active), AuthorityRecord(b, AuthorityState.Active))
        )
    with pytest.raises(StateError, match="appears twice"):
        AuthoritySet(
            (AuthorityRecord(a, AuthorityState.Active), AuthorityRecord(a, AuthorityState.Retired))
        )


def test_serialisation_round_trip() -> None:
    make = Factory()
    aset, _ = advance(AuthoritySet(), NOW, make)
    aset = force_rotate(aset, NOW + timedelta(hours=1), make, timedelta(minutes=5))
    aset = record_issued(aset, aset.records[0].sha256, NOW + timedelta(hours=2))
    dicts = aset.to_dicts()
    for item in dicts:
        assert all(isinstance(v, str) for v in item.values())
        assert "PRIVATE" not in "".join(item.values())
    active = dicts[0]
    assert active["state"] == "Active"
    assert active["activatedAt"] == "2025-06-01T12:00:00Z"
    assert active["lastLeafNotAfter"] == "2025-06-01T14:00:00Z"
    assert dicts[1]["plannedActivation"] == "2025-06-01T13:05:00Z"
    back = AuthoritySet.from_dicts(dicts, aset.authorities)
    assert back.records == aset.records
    assert (
        record_from_dict(record_to_dict(aset.records[0]), aset.records[0].authority)
        == aset.records[0]
    )


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"sha256": "00" * 32}, "does not match the CA certificate"),
        ({"state": "Zombie"}, "state 'Zombie' is not one of Prepared, Active, Retired"),
        (
            {"activatedAt": "yesterday"},
            "authority.activatedAt: 'yesterday' is not an RFC 3339 timestamp",
        ),
        ({"retiredAt": "2025-01-01T00:00:00"}, "has no time zone; append Z"),
    ],
)
def test_record_from_dict_errors(patch: dict[str, str], fragment: str) -> None:
    authority = Factory()(NOW)
    data = record_to_dict(AuthorityRecord(authority, AuthorityState.Active, activated_at=NOW))
    data.update(patch)
    with pytest.raises(StateError) as err:
        record_from_dict(data, authority)
    assert fragment in str(err.value)


def test_from_dicts_missing_authority() -> None:
    authority = Factory()(NOW)
    data = record_to_dict(AuthorityRecord(authority, AuthorityState.Active))
    with pytest.raises(StateError, match=r"authorities\[0\]: no CA certificate with sha256"):
        AuthoritySet.from_dicts([data], [])


def test_transition_kinds_are_strings() -> None:
    assert [k.value for k in TransitionKind] == [
        "prepared",
        "activated",
        "retired",
        "dropped",
        "uncrossed",
    ]


def test_no_private_key_material_in_any_repr() -> None:
    from tests.unit.conftest import request
    from trustwarden.pki import inspect_leaf, issue_leaf

    make = Factory()
    aset, transitions = advance(AuthoritySet(), NOW, make)
    authority = aset.active_authority
    assert authority is not None
    leaf = issue_leaf(authority, request(), NOW)
    facts = inspect_leaf(leaf.chain_pem, leaf.private_key_pem)
    for obj in (authority, aset, aset.records[0], leaf, facts, transitions[0], leaf.annotations()):
        for text in (repr(obj), str(obj)):
            assert "PRIVATE KEY" not in text
            assert "PrivateKey" not in text
            assert "private_key" not in text
