"""Forced rotations through the engine (issue 20): the default activation delay derived from
the propagation delay, cross-signed chains, compromised rotations, and status.rotation."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.unit.fakes import FakeClock, FakeKube, drain, trust_domain
from tests.unit.test_reconcile_engine import issued, leaf_serial, observe_written
from trustwarden.reconcile.engine import Engine


def chain_of(kube: FakeKube) -> list[x509.Certificate]:
    secret = kube.objects[("Secret", "payments", "api-svid")]
    return x509.load_pem_x509_certificates(base64.b64decode(secret["data"]["tls.crt"]))


def anchors_of(kube: FakeKube) -> set[str]:
    pem = kube.objects[("ConfigMap", "payments", "trustwarden-bundle")]["data"]["ca.crt"]
    return {
        hashlib.sha256(c.public_bytes(Encoding.DER)).hexdigest()
        for c in x509.load_pem_x509_certificates(pem.encode())
    }


def request_rotation(engine: Engine, **annotations: str) -> None:
    body = trust_domain()
    body["metadata"]["annotations"] = {"trustwarden.io/rotate": "r1", **annotations}
    engine.observe_trust_domain(body)


async def status(engine: Engine, kube: FakeKube) -> dict[str, Any]:
    """The TrustDomain status as the operator writes it."""
    await engine.flush_status(final=True)
    return kube.statuses[("TrustDomain", None, "prod")]


def test_default_rotation_waits_the_derived_delay() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued(kube, clock)
        observe_written(engine, kube)
        old = engine.domains["prod"].authorities.active_record  # type: ignore[union-attr]
        request_rotation(engine)
        await drain(engine, clock)
        rotation = (await status(engine, kube))["rotation"]
        assert rotation["defaultActivateAfter"] == "3m"
        assert rotation["reason"].startswith("default: 3m after the request")
        clock.advance(timedelta(minutes=2, seconds=50))
        await drain(engine, clock)
        assert engine.domains["prod"].authorities.active_record == old  # type: ignore[union-attr]
        clock.advance(timedelta(seconds=15))
        observe_written(engine, kube)
        await drain(engine, clock)
        active = engine.domains["prod"].authorities.active_record  # type: ignore[union-attr]
        assert active is not None and active.sha256 != old.sha256  # type: ignore[union-attr]
        assert "activatesAt" not in (await status(engine, kube))["rotation"]

    asyncio.run(scenario())


def test_cross_signed_rotation_puts_the_cross_certificate_in_new_chains() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued(kube, clock)
        observe_written(engine, kube)
        assert len(chain_of(kube)) == 1
        request_rotation(
            engine,
            **{"trustwarden.io/activate-after": "5s", "trustwarden.io/rotation-mode": "cross-sign"},
        )
        await drain(engine, clock)
        assert not [e for e in kube.events if e[2] == "RotationRisk"]  # cross-signed: no risk
        clock.advance(timedelta(seconds=6))
        observe_written(engine, kube)
        await drain(engine, clock)
        leaf, cross = chain_of(kube)
        aset = engine.domains["prod"].authorities
        assert aset is not None and aset.active_record is not None
        assert cross == aset.active_record.cross_certificate
        assert leaf.issuer == cross.subject and cross.issuer != cross.subject
        assert (await status(engine, kube))["rotation"]["crossSignedBy"]
        stored = kube.objects[("Secret", "trustwarden-system", "trustwarden-ca-prod")]["data"]
        assert any(k.endswith(".cross.crt") for k in stored)

    asyncio.run(scenario())


def test_short_activation_is_honoured_with_a_warning() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued(kube, clock)
        request_rotation(engine, **{"trustwarden.io/activate-after": "10s"})
        await drain(engine, clock)
        (risk,) = [e for e in kube.events if e[2] == "RotationRisk"]
        assert "shorter than the default 3m" in risk[3]

    asyncio.run(scenario())


def test_compromised_rotation_revokes_and_drops_the_old_anchor_at_once() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued(kube, clock)
        observe_written(engine, kube)
        serial = leaf_serial(kube, "payments", "api-svid")
        old = engine.domains["prod"].authorities.active_record  # type: ignore[union-attr]
        assert old is not None and old.sha256 in anchors_of(kube)
        request_rotation(engine, **{"trustwarden.io/rotation-mode": "compromised"})
        clock.advance(timedelta(seconds=1))
        await drain(engine, clock)
        observe_written(engine, kube)
        await drain(engine, clock)
        assert serial in engine.domains["prod"].revocations
        assert leaf_serial(kube, "payments", "api-svid") != serial
        assert len(chain_of(kube)) == 1  # no cross-certificate
        assert old.sha256 not in anchors_of(kube)
        (warning,) = [e for e in kube.events if e[2] == "RotationRisk"]
        assert "WILL FAIL" in warning[3]
        td = await status(engine, kube)
        assert any("compromisedAt" in a for a in td["authorities"])

    asyncio.run(scenario())
