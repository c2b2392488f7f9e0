"""API writes the engine saves: status changes that only move timing fields, the routine
first-issue Event of a Shared identity, and the GET before a ca.crt refresh."""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta
from typing import Any

import pytest

from tests.unit.fakes import (
    FakeClock,
    FakeKube,
    add_web_pod,
    drain,
    make_engine,
    per_pod_world,
    workload_identity,
)
from tests.unit.test_reconcile_engine import issued, secret_of
from trustwarden.reconcile import observed as observed_mod
from trustwarden.reconcile.controllers.leaves.target import LeafTarget
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
        engine.store.problems[("payments", "api")] = ("Broken", "for the test")
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


def test_an_identity_deleted_and_created_again_gets_its_status_written() -> None:
    """The same identity applied again after a delete (a GitOps replace) is a new object with
    no status: its first status is written even when it equals what the old one last had."""

    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued(kube, clock)
        await engine.flush_status()
        written = kube.calls["patch_status"]
        assert WID in kube.statuses
        engine.forget_workload_identity("payments", "api")
        await engine.flush_status()
        del kube.statuses[WID]  # the new object starts without one
        engine.observe_workload_identity(workload_identity("payments", "api"))
        await drain(engine, clock)
        await engine.flush_status()
        assert kube.calls["patch_status"] == written + 1
        assert WID in kube.statuses

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
    # refresh_ca reads only where the Secret is.
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
        await engine.leaves.issuer.writer.refresh_ca(_target(), b"NEW ANCHORS")
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
            await engine.leaves.issuer.writer.refresh_ca(_target(), b"OTHER ANCHORS")

    asyncio.run(scenario())


class EchoFirstKube(FakeKube):
    """Delivers the watch echo of each Secret it creates before answering the create, as a
    busy API server may: the echo then reaches the engine ahead of the write's result."""

    engine: Any = None

    async def create(self, kind: str, namespace: str, body: Any) -> Any:
        written = await super().create(kind, namespace, body)
        if kind == "Secret" and self.engine is not None:
            self.engine.observe_secret(written)
        return written


def test_an_echo_ahead_of_the_write_result_is_not_taken_for_a_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        kube, clock = EchoFirstKube(), FakeClock()
        engine = make_engine(kube, clock)
        kube.engine = engine
        per_pod_world(engine)
        for i in range(3):
            add_web_pod(engine, kube, f"w{i}", f"uid-pod-w{i}")
            engine.scheduler.schedule(("pod", "shop", f"w{i}"), clock())
        engine.scheduler.schedule(("td", "prod"), clock())
        parsed: list[object] = []
        real_inspect = observed_mod.inspect_leaf

        def counting_inspect(*args: Any, **kwargs: Any) -> Any:
            parsed.append(args)
            return real_inspect(*args, **kwargs)

        monkeypatch.setattr(observed_mod, "inspect_leaf", counting_inspect)
        reconciled: list[object] = []
        real_dispatch = engine.dispatch

        async def counting_dispatch(key: Any) -> None:
            if key[0] == "pod" and ("Secret", "shop", f"web-svid-{key[2]}") in kube.objects:
                reconciled.append(key)  # a pod looked at again after its Secret was written
            await real_dispatch(key)

        monkeypatch.setattr(engine, "dispatch", counting_dispatch)
        await drain(engine, clock)
        assert kube.calls["create"] >= 3
        for i in range(3):
            info = engine.secrets[("shop", f"web-svid-w{i}")]
            assert info.facts is not None and info.uid  # the echo's identity, our facts
            # The echo did not schedule the pod again...
            assert ("pod", "shop", f"w{i}") not in reconciled, reconciled
            # ...and its next run is the renewal, not "now".
            due = engine.scheduler.deadline_of(("pod", "shop", f"w{i}"))
            assert due is not None and due > clock() + timedelta(minutes=10)
        assert parsed == []  # nothing we wrote was parsed back

        # An edit by someone else while nothing is being written is still news.
        secret = dict(kube.objects[("Secret", "shop", "web-svid-w0")])
        secret["data"] = {**secret["data"], "tls.crt": base64.b64encode(b"junk").decode()}
        engine.observe_secret(secret)
        assert engine.scheduler.deadline_of(("pod", "shop", "w0")) == clock()
        assert len(parsed) == 1

    asyncio.run(scenario())
