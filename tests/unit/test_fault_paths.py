"""Fault paths that used to be covered only end to end: SecretFight with its backoff, a CA
Secret lost or edited, a squatted bundle ConfigMap, and a ledger write that fails.

Everything goes through the engine's observe/forget methods, its scheduler and the fake API,
as the watches and the API server would drive it."""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509

from tests.unit.fakes import (
    FakeClock,
    FakeKube,
    drain,
    make_engine,
    namespace,
    observe_written,
    trust_domain,
    workload_identity,
)
from trustwarden.reconcile.controllers.leaves.writing import REPAIRS_BEFORE_BACKOFF
from trustwarden.reconcile.engine import Engine
from trustwarden.reconcile.ledger import Ledger
from trustwarden.reconcile.ports import Body

OPNS = "trustwarden-system"
CA_SECRET = ("Secret", OPNS, "trustwarden-ca-prod")
SHARED = ("Secret", "payments", "api-svid")
BUNDLE = ("ConfigMap", "payments", "trustwarden-bundle")


def _world(engine: Engine) -> None:
    engine.observe_namespace(namespace("payments"))
    engine.observe_namespace(namespace(OPNS))
    engine.observe_trust_domain(trust_domain())
    engine.observe_workload_identity(workload_identity("payments", "api"))


async def _issued(kube: FakeKube, clock: FakeClock) -> Engine:
    engine = make_engine(kube, clock)
    _world(engine)
    engine.scheduler.schedule(("td", "prod"), clock())
    engine.scheduler.schedule(("wid", "payments", "api"), clock())
    await drain(engine, clock)
    await engine.flush_status(final=True)
    observe_written(engine, kube)
    return engine


def _serial(kube: FakeKube) -> int:
    chain = base64.b64decode(kube.objects[SHARED]["data"]["tls.crt"])
    return int(x509.load_pem_x509_certificates(chain)[0].serial_number)


def _anchors(kube: FakeKube) -> set[int]:
    pem = kube.objects[BUNDLE]["data"]["prod.example.org.pem"]
    return {c.serial_number for c in x509.load_pem_x509_certificates(pem.encode())}


def _events(kube: FakeKube, reason: str) -> list[str]:
    return [message for _ref, _type, r, message in kube.events if r == reason]


async def _delete_shared(engine: Engine, kube: FakeKube, clock: FakeClock) -> None:
    """Something else deletes the Shared Secret; the watch reports it; the engine reacts."""
    del kube.objects[SHARED]
    engine.forget_secret("payments", "api-svid")
    await drain(engine, clock)
    observe_written(engine, kube)


def test_secret_fight_repairs_at_once_then_backs_off_doubling_and_repairs_when_due() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await _issued(kube, clock)
        for _ in range(REPAIRS_BEFORE_BACKOFF):
            await _delete_shared(engine, kube, clock)
            assert SHARED in kube.objects  # repaired at once
        assert _events(kube, "SecretFight") == []

        await _delete_shared(engine, kube, clock)  # one deletion too many
        assert SHARED not in kube.objects
        fights = _events(kube, "SecretFight")
        assert len(fights) == 1
        assert "payments/api-svid keeps being deleted" in fights[0]
        assert "repairing again in 10s" in fights[0]
        await engine.flush_status(final=True)
        status = kube.statuses[("WorkloadIdentity", "payments", "api")]
        reasons = {c["reason"] for c in status["conditions"]}
        assert "SecretFight" in reasons

        # Not before the wait is over...
        clock.advance(timedelta(seconds=9))
        await drain(engine, clock)
        assert SHARED not in kube.objects
        # ...and at once when it is.
        clock.advance(timedelta(seconds=1))
        await drain(engine, clock)
        assert SHARED in kube.objects
        observe_written(engine, kube)

        # Still fighting within the window: the next wait is twice as long.
        await _delete_shared(engine, kube, clock)
        assert SHARED not in kube.objects
        assert "repairing again in 20s" in _events(kube, "SecretFight")[-1]
        clock.advance(timedelta(seconds=20))
        await drain(engine, clock)
        assert SHARED in kube.objects

    asyncio.run(scenario())


def test_secret_fight_counts_edits_too_and_forgets_them_after_the_window() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await _issued(kube, clock)

        async def tamper() -> int:
            before = _serial(kube)
            body = kube.objects[SHARED]
            body["data"]["tls.crt"] = base64.b64encode(b"not a certificate").decode()
            body["metadata"]["resourceVersion"] = kube._next_rv()
            engine.observe_secret(body)
            await drain(engine, clock)
            observe_written(engine, kube)
            return before

        for _ in range(REPAIRS_BEFORE_BACKOFF):
            before = await tamper()
            assert _serial(kube) != before  # repaired with a fresh certificate
        await tamper()
        assert (
            kube.objects[SHARED]["data"]["tls.crt"]
            == base64.b64encode(b"not a certificate").decode()
        )
        assert "keeps being changed" in _events(kube, "SecretFight")[-1]

        # Ten quiet minutes later, a single edit is repaired at once again.
        clock.advance(timedelta(minutes=11))
        await drain(engine, clock)
        observe_written(engine, kube)
        fights = len(_events(kube, "SecretFight"))
        before = await tamper()
        assert _serial(kube) != before
        assert len(_events(kube, "SecretFight")) == fights

    asyncio.run(scenario())


def _domain_body_with_status(kube: FakeKube) -> dict[str, Any]:
    body = trust_domain()
    body["status"] = kube.statuses[("TrustDomain", None, "prod")]
    return body


def test_ca_secret_deleted_while_held_in_memory_is_restored_without_a_new_root() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await _issued(kube, clock)
        original = kube.objects[CA_SECRET]["data"]
        anchors = _anchors(kube)
        serial = _serial(kube)

        del kube.objects[CA_SECRET]
        engine.forget_secret(OPNS, "trustwarden-ca-prod")
        await drain(engine, clock)

        assert kube.objects[CA_SECRET]["data"] == original
        assert _anchors(kube) == anchors
        assert _serial(kube) == serial  # nothing re-issued
        (restored,) = _events(kube, "CASecretRestored")
        assert "was deleted" in restored and "no new root" in restored
        assert _events(kube, "CASecretLost") == []

    asyncio.run(scenario())


def test_ca_secret_lost_across_a_restart_keeps_old_anchors_and_publishes_the_new_root_first() -> (
    None
):
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        await _issued(kube, clock)
        old_anchors = _anchors(kube)
        old_serial = _serial(kube)
        del kube.objects[CA_SECRET]  # lost while the operator was down

        engine = make_engine(kube, clock)
        engine.observe_namespace(namespace("payments"))
        engine.observe_namespace(namespace(OPNS))
        engine.observe_trust_domain(_domain_body_with_status(kube))
        engine.observe_workload_identity(workload_identity("payments", "api"))
        observe_written(engine, kube)
        engine.scheduler.schedule(("td", "prod"), clock())
        engine.scheduler.schedule(("wid", "payments", "api"), clock())
        await drain(engine, clock)

        (lost,) = _events(kube, "CASecretLost")
        assert "does not exist" in lost and "previous anchor(s) stay trusted" in lost
        assert CA_SECRET in kube.objects
        published = _anchors(kube)
        assert old_anchors < published  # old anchors kept, new root published
        (new_root,) = published - old_anchors
        # The new root does not sign before the grace is over: the leaf is the old one.
        assert _serial(kube) == old_serial

        clock.advance(timedelta(minutes=2, seconds=1))
        await drain(engine, clock)
        observe_written(engine, kube)
        chain = base64.b64decode(kube.objects[SHARED]["data"]["tls.crt"])
        leaf = x509.load_pem_x509_certificates(chain)[0]
        roots = x509.load_pem_x509_certificates(
            base64.b64decode(kube.objects[SHARED]["data"]["ca.crt"])
        )
        assert new_root in {r.serial_number for r in roots}
        assert leaf.serial_number != old_serial
        assert old_anchors <= _anchors(kube)  # still trusted until they expire

    asyncio.run(scenario())


def test_a_squatted_bundle_configmap_is_left_alone_reported_and_retried() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        squatter = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "trustwarden-bundle", "namespace": "payments"},
            "data": {"ca.crt": "mine"},
        }
        await kube.create("ConfigMap", "payments", squatter)
        engine = make_engine(kube, clock)
        _world(engine)
        engine.observe_bundle(kube.objects[BUNDLE])
        engine.scheduler.schedule(("td", "prod"), clock())
        engine.scheduler.schedule(("wid", "payments", "api"), clock())
        await drain(engine, clock)

        assert kube.objects[BUNDLE]["data"] == {"ca.crt": "mine"}  # untouched
        conflicts = _events(kube, "BundleConflict")
        assert (
            conflicts and "payments/trustwarden-bundle exists and was not created" in conflicts[0]
        )
        assert SHARED in kube.objects  # the identity is still issued
        await engine.flush_status(final=True)
        status = kube.statuses[("TrustDomain", None, "prod")]
        published = next(c for c in status["conditions"] if c["type"] == "BundlesPublished")
        assert published["status"] == "False" and published["reason"] == "BundleConflict"

        # The squatter goes; the next retry publishes our bundle.
        del kube.objects[BUNDLE]
        engine.forget_bundle("payments")
        clock.advance(timedelta(seconds=31))
        await drain(engine, clock)
        assert "prod.example.org.pem" in kube.objects[BUNDLE]["data"]
        assert kube.objects[BUNDLE]["metadata"]["labels"]["app.kubernetes.io/managed-by"] == (
            "trustwarden"
        )

    asyncio.run(scenario())


class _LedgerDown(FakeKube):
    """The API refuses writes to ledger ConfigMaps while `down` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.refused = 0

    def _refuse(self, kind: str, name: str) -> None:
        if self.down and kind == "ConfigMap" and name.startswith("trustwarden-ledger"):
            self.refused += 1
            raise RuntimeError("etcdserver: request timed out")

    async def create(self, kind: str, namespace: str, body: Body) -> Body:
        self._refuse(kind, str(body["metadata"]["name"]))
        return await super().create(kind, namespace, body)

    async def replace(self, kind: str, namespace: str, name: str, body: Body) -> Body:
        self._refuse(kind, name)
        return await super().replace(kind, namespace, name, body)

    async def patch_data(self, kind: str, namespace: str, name: str, data: Any, **kw: Any) -> Any:
        self._refuse(kind, name)
        return await super().patch_data(kind, namespace, name, data, **kw)


def _ledger_text(kube: FakeKube) -> str:
    return "".join(
        str(body.get("data") or body.get("binaryData") or "")
        for (kind, _ns, name), body in kube.objects.items()
        if kind == "ConfigMap" and name.startswith("trustwarden-ledger")
    )


def test_a_failed_ledger_write_is_kept_and_written_by_a_later_flush(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        kube, clock = _LedgerDown(), FakeClock()
        kube.down = True
        with caplog.at_level(logging.WARNING):
            await _issued(kube, clock)
        assert kube.refused >= 1
        assert _ledger_text(kube) == ""
        assert any("not written" in r.getMessage() for r in caplog.records)
        assert SHARED in kube.objects  # the certificate itself is not held back

    asyncio.run(scenario())


def test_the_ledger_survives_the_outage_and_names_the_issued_serial() -> None:
    async def scenario() -> None:
        kube, clock = _LedgerDown(), FakeClock()
        kube.down = True
        engine = await _issued(kube, clock)
        serial = _serial(kube)
        kube.down = False
        clock.advance(timedelta(seconds=6))  # the ledger interval
        await engine.flush()
        stored = kube.objects[("ConfigMap", OPNS, Ledger().name_for("payments"))]
        assert stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "trustwarden"
        # A fresh engine loads it back: the serial is known, so a deletion would revoke it.
        second = make_engine(kube, clock)
        second.observe_ledger(stored)
        entry = second.ledger.entry("payments", serial)
        assert entry is not None and entry.owner_uid == "uid-wid-api"

    asyncio.run(scenario())
