"""API writes the engine saves: status changes that only move timing fields, the routine
first-issue Event of a Shared identity, and the GET before a ca.crt refresh."""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta
from typing import Any

import pytest

from tests.unit.fakes import FakeClock, FakeKube, drain
from tests.unit.test_reconcile_engine import issued, secret_of
from trustwarden.reconcile.engine import LeafTarget
from trustwarden.reconcile.ports import ConflictError

STATUS_KEY = ("wid", "payments", "api")
WID = ("WorkloadIdentity", "payments", "api")


def test_timing_only_status_changes_wait_for_the_interval() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued(kube, clock)
        await engine.flush_status()
        assert kube.calls["patch_status"] >= 1
        written = kube.calls["patch_status"]
        first = kube.statuses[WID]
        assert "nextRenewal" in first

        # Only nextRenewal moves: not written before 30 s have passed since the last write.
        deadline = engine.scheduler.deadline_of(STATUS_KEY)
        assert deadline is not None
        engine.scheduler.schedule(STATUS_KEY, deadline - timedelta(minutes=1))
        engine.dirty_status.add(STATUS_KEY)
        await engine.flush_status()
        assert kube.calls["patch_status"] == written
        clock.advance(timedelta(seconds=29))
        await engine.flush_status()
        assert kube.calls["patch_status"] == written
        # Due now: written without anything marking it dirty again.
        clock.advance(timedelta(seconds=1))
        await engine.flush_status()
        assert kube.calls["patch_status"] == written + 1
        assert kube.statuses[WID]["nextRenewal"] != first["nextRenewal"]

        # Any other change is written at once, timing fields included.
        engine.scheduler.schedule(STATUS_KEY, deadline - timedelta(minutes=2))
        engine.wid_problems[("payments", "api")] = ("Broken", "for the test")
        engine.dirty_status.add(STATUS_KEY)
        await engine.flush_status()
        assert kube.calls["patch_status"] == written + 2
        latest = kube.statuses[WID]
        ready = next(c for c in latest["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False" and ready["reason"] == "Broken"

    asyncio.run(scenario())


def test_a_clean_stop_writes_deferred_timing_changes() -> None:
    """A deferred nextRenewal is written by the shutdown flush, so the next process finds the
    status current and has nothing to rewrite."""

    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued(kube, clock)
        await engine.flush_status()
        written = kube.calls["patch_status"]
        first = kube.statuses[WID]
        deadline = engine.scheduler.deadline_of(STATUS_KEY)
        assert deadline is not None
        engine.scheduler.schedule(STATUS_KEY, deadline - timedelta(minutes=1))
        engine.dirty_status.add(STATUS_KEY)
        await engine.flush_status()
        assert kube.calls["patch_status"] == written, "deferred while running"
        engine.started = True  # as after start(): stop() flushes only a started engine
        await engine.stop()
        assert kube.calls["patch_status"] == written + 1
        assert kube.statuses[WID]["nextRenewal"] != first["nextRenewal"]

    asyncio.run(scenario())


def test_shared_first_issue_posts_no_event_but_a_renewal_does() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued(kube, clock)
        await engine.flush_status()
        assert [e for e in kube.events if e[2] == "Issued"] == []
        status = kube.statuses[WID]
        assert status["serial"] and status["spiffeID"].startswith("spiffe://prod.example.org/")
        deadline = engine.scheduler.deadline_of(STATUS_KEY)
        assert deadline is not None
        clock.now = deadline
        await drain(engine, clock)
        renewed = [e for e in kube.events if e[2] == "Renewed"]
        assert len(renewed) == 1 and renewed[0][1] == "Normal"

    asyncio.run(scenario())


def _target() -> LeafTarget:
    # _refresh_ca reads only where the Secret is.
    unused: Any = None
    return LeafTarget(
        key=STATUS_KEY,
        namespace="payments",
        secret_name="api-svid",
        owner=unused,
        wid=unused,
        domain=unused,
        context=unused,
        jitter_key="",
    )


def test_ca_refresh_is_one_conditional_patch_without_a_get() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued(kube, clock)
        before = secret_of(kube, "payments", "api-svid")
        assert before is not None
        data_before = dict(before["data"])  # type: ignore[call-overload]
        gets, patches = kube.calls["get"], kube.calls["patch"]
        await engine._refresh_ca(_target(), b"NEW ANCHORS")
        assert kube.calls["get"] == gets and kube.calls["patch"] == patches + 1
        after = secret_of(kube, "payments", "api-svid")
        assert after is not None
        data = after["data"]
        assert base64.b64decode(data["ca.crt"]) == b"NEW ANCHORS"  # type: ignore[index]
        assert {k: v for k, v in data.items() if k != "ca.crt"} == {  # type: ignore[attr-defined]
            k: v for k, v in data_before.items() if k != "ca.crt"
        }
        cached = engine.secrets[("payments", "api-svid")]
        assert str(cached.resource_version) == after["metadata"]["resourceVersion"]  # type: ignore[index]

        # Changed behind our back: the precondition fails instead of overwriting it.
        after["metadata"]["resourceVersion"] = "999999"  # type: ignore[index]
        with pytest.raises(ConflictError):
            await engine._refresh_ca(_target(), b"OTHER ANCHORS")

    asyncio.run(scenario())
