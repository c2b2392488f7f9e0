"""The issuance ledger's shards: a burst over many namespaces writes a few ConfigMaps, the
earlier one-per-namespace layout is migrated and then deleted, and the shard count grows with
the entries and never shrinks by itself."""

from __future__ import annotations

import asyncio
import base64
import logging
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.fakes import FakeKube
from trustwarden.reconcile import ledger as ledger_mod
from trustwarden.reconcile.ledger import LEDGER_KEY, Ledger, LedgerEntry, ledger_name
from trustwarden.reconcile.state_objects import write_dirty_ledgers

NOW = datetime(2026, 12, 3, tzinfo=UTC)
OPNS = "trustwarden-system"
log = logging.getLogger("test")


def _entry(serial: int, owner: str = "pod", hours: float = 1) -> LedgerEntry:
    return LedgerEntry(serial, owner, NOW + timedelta(hours=hours), "prod", "f" * 64)


def _flush(kube: FakeKube, ledger: Ledger) -> None:
    asyncio.run(write_dirty_ledgers(kube, ledger, OPNS, role="ledger", log=log))


def _stored(kube: FakeKube) -> dict[str, dict[str, object]]:
    return {
        name: body
        for (kind, _ns, name), body in kube.objects.items()
        if kind == "ConfigMap" and name.startswith("trustwarden-ledger")
    }


def test_shard_names_cannot_be_a_namespace_ledger_name() -> None:
    ledger = Ledger()
    name = ledger.name_for("payments")
    assert name.startswith("trustwarden-ledger.") and name.endswith("-of-16")
    assert ledger.owns(name) and ledger.owns(ledger_name("payments"))
    assert not ledger.owns("trustwarden-bundle") and not ledger.owns("trustwarden-ledgerx.1-of-2")
    # A namespace name has no dot: no legacy name is ever a shard name.
    assert "." not in ledger_name("shard-3-of-16")


def test_a_burst_over_many_namespaces_writes_at_most_one_configmap_per_shard() -> None:
    kube, ledger = FakeKube(), Ledger(shards=8)
    for i in range(200):
        ledger.record(f"ns-{i}", _entry(i + 1, f"pod-{i}"))
    _flush(kube, ledger)
    assert kube.calls["create"] == 8 and len(_stored(kube)) == 8
    # One more certificate in one namespace rewrites one shard.
    ledger.record("ns-7", _entry(10_000, "pod-x"))
    _flush(kube, ledger)
    assert kube.calls["create"] + kube.calls["replace"] == 9
    # Everything loads back, by namespace and owner.
    restored = Ledger(shards=8)
    for name, body in _stored(kube).items():
        restored.load(name, str(body["binaryData"][LEDGER_KEY]))  # type: ignore[index]
    assert len(restored) == 201 and not restored.dirty and not restored.legacy
    assert [e.serial for e in restored.owned_by("ns-7", "pod-x")] == [10_000]


def test_the_earlier_per_namespace_layout_is_migrated_then_deleted() -> None:
    kube = FakeKube()
    legacy_payload = zlib.compress(_entry(0xABC, "pod-1").line().encode())
    encoded = base64.b64encode(legacy_payload).decode()
    kube.objects[("ConfigMap", OPNS, ledger_name("payments"))] = {
        "metadata": {"name": ledger_name("payments"), "namespace": OPNS},
        "binaryData": {LEDGER_KEY: encoded},
    }
    ledger = Ledger()
    ledger.load(ledger_name("payments"), encoded)
    assert ledger.entry("payments", 0xABC) is not None
    assert ledger.legacy == {ledger_name("payments")}
    assert ledger.dirty == {ledger.name_for("payments")}
    _flush(kube, ledger)
    assert set(_stored(kube)) == {ledger.name_for("payments")}  # the old one is gone
    assert not ledger.legacy


def test_the_legacy_configmap_stays_while_its_shard_is_not_stored() -> None:
    class Down(FakeKube):
        async def create(self, kind: str, namespace: str, body: object) -> object:
            raise RuntimeError("etcdserver: request timed out")

    kube, ledger = Down(), Ledger()
    ledger.load(ledger_name("payments"), "")
    ledger.record("payments", _entry(1))
    _flush(kube, ledger)
    assert ledger.legacy == {ledger_name("payments")}  # not deleted: nothing replaced it yet
    assert ledger.dirty == {ledger.name_for("payments")}
    assert kube.calls["delete"] == 0


def test_the_shard_count_doubles_as_entries_grow_and_old_shards_are_deleted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ledger_mod, "SHARD_ENTRIES", 10)
    kube, ledger = FakeKube(), Ledger(shards=2)
    for i in range(15):
        ledger.record(f"ns-{i}", _entry(i + 1))
    ledger.prune(NOW)  # what every ledger flush does first
    _flush(kube, ledger)
    assert ledger.shards == 2
    for i in range(15, 30):
        ledger.record(f"ns-{i}", _entry(i + 1))
    ledger.prune(NOW)
    assert ledger.shards == 4
    _flush(kube, ledger)
    assert {name.rsplit("-of-", 1)[1] for name in _stored(kube)} == {"4"}
    # A restart configured for fewer shards adopts the larger count it finds.
    again = Ledger(shards=2)
    for name, body in _stored(kube).items():
        again.load(name, str(body["binaryData"][LEDGER_KEY]))  # type: ignore[index]
    assert again.shards == 4 and len(again) == 30 and not again.dirty


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
        st.sets(st.integers(min_value=1, max_value=2**159), min_size=1, max_size=5),
        min_size=1,
        max_size=30,
    ),
    st.integers(min_value=1, max_value=9),
)
def test_every_entry_round_trips_through_the_shards(
    serials: dict[str, set[int]], shards: int
) -> None:
    ledger = Ledger(shards=shards)
    for namespace, values in serials.items():
        for serial in values:
            ledger.record(namespace, _entry(serial, f"{namespace}-owner"))
    restored = Ledger(shards=shards)
    for name in ledger.dirty_shards():
        restored.load(name, ledger.encode(name))
    assert sorted((ns, e.serial) for ns, e in restored.all()) == sorted(
        (ns, s) for ns, values in serials.items() for s in values
    )
