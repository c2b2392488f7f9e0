"""The status writer and the event recorder, through their public methods."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from tests.unit.fakes import FakeClock, FakeKube
from trustwarden.reconcile.events import EVENT_DEDUP_SECONDS, EventRecorder
from trustwarden.reconcile.ports import NotFoundError, ObjectRef
from trustwarden.reconcile.status import StatusWriter

WID = ("wid", "shop", "web")
REF = ObjectRef("trustwarden.io/v1alpha1", "WorkloadIdentity", "web", "shop", "uid-1")


def _status(**extra: Any) -> dict[str, Any]:
    return {"observedGeneration": 1, "spiffeID": "spiffe://prod/ns/shop/sa/web", **extra}


def test_a_status_is_written_once_per_content_and_timing_changes_wait() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        writer = StatusWriter(kube, clock, timedelta(seconds=30))
        current = {"status": _status(nextRenewal="a")}
        writer.dirty.add(WID)
        await writer.flush(lambda _key: current["status"])
        writer.dirty.add(WID)
        await writer.flush(lambda _key: current["status"])
        assert kube.calls["patch_status"] == 1  # same content: no second write

        current["status"] = _status(nextRenewal="b")  # timing only: deferred
        writer.dirty.add(WID)
        await writer.flush(lambda _key: current["status"])
        assert kube.calls["patch_status"] == 1
        clock.advance(timedelta(seconds=31))
        await writer.flush(lambda _key: current["status"])  # due now, without being dirty
        assert kube.calls["patch_status"] == 2
        assert kube.statuses[("WorkloadIdentity", "shop", "web")]["nextRenewal"] == "b"

        current["status"] = _status(nextRenewal="c", serial="01")  # content: at once
        writer.dirty.add(WID)
        await writer.flush(lambda _key: current["status"])
        assert kube.calls["patch_status"] == 3

    asyncio.run(scenario())


def test_a_seeded_status_is_not_rewritten_and_keeps_transition_times() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        writer = StatusWriter(kube, clock, timedelta(seconds=30))
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "Ready",
            "message": "issued",
            "lastTransitionTime": "2020-01-01T00:00:00Z",
        }
        writer.seed(WID, _status(conditions=[{**ready, "observedGeneration": 1}]))
        clock.advance(timedelta(hours=1))
        writer.set_condition(WID, "Ready", True, "Ready", "issued")
        built = _status(conditions=writer.conditions_list(WID, 1))
        writer.dirty.add(WID)
        await writer.flush(lambda _key: built)
        assert kube.calls["patch_status"] == 0
        writer.set_condition(WID, "Ready", False, "Issuing", "renewing")
        (condition,) = writer.conditions_list(WID, 1)
        assert condition["lastTransitionTime"] != "2020-01-01T00:00:00Z"

    asyncio.run(scenario())


def test_a_failed_status_write_stays_dirty_and_a_gone_object_is_forgotten() -> None:
    class Flaky(FakeKube):
        fail: Exception | None = RuntimeError("etcdserver: leader changed")

        async def patch_status(
            self, kind: str, namespace: str | None, name: str, status: Any
        ) -> None:
            if self.fail is not None:
                raise self.fail
            await super().patch_status(kind, namespace, name, status)

    async def scenario() -> None:
        kube, clock = Flaky(), FakeClock()
        writer = StatusWriter(kube, clock, timedelta(seconds=30))
        writer.dirty.add(WID)
        await writer.flush(lambda _key: _status())
        assert WID in writer.dirty and WID not in writer.last
        kube.fail = NotFoundError("web")
        await writer.flush(lambda _key: _status())
        assert WID not in writer.dirty and WID not in writer.last
        kube.fail = None
        writer.dirty.add(WID)
        await writer.flush(lambda _key: _status())
        assert writer.last[WID] == _status()

    asyncio.run(scenario())


def test_events_are_deduplicated_for_a_minute_and_status_only_ones_are_not_posted() -> None:
    async def scenario() -> None:
        kube = FakeKube()
        now = [1000.0]
        events = EventRecorder(kube, monotonic=lambda: now[0])
        assert await events.post(REF, "Warning", "SecretFight", "keeps being deleted")
        assert not await events.post(REF, "Warning", "SecretFight", "keeps being deleted")
        assert await events.post(REF, "Warning", "SecretFight", "keeps being changed")
        now[0] += EVENT_DEDUP_SECONDS
        assert await events.post(REF, "Warning", "SecretFight", "keeps being deleted")
        assert not await events.post(REF, "Normal", "Issued", "issued serial 01")
        assert await events.post(REF, "Warning", "X", "y" * 5000)
        assert [len(e[3]) for e in kube.events][-1] == 1024
        assert len(kube.events) == 4

    asyncio.run(scenario())
