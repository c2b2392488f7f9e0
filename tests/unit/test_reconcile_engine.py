"""The engine against an in-memory API: what it writes, and how often."""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta
from typing import Any

from cryptography import x509

from tests.unit.fakes import (
    FakeClock,
    FakeKube,
    add_web_pod,
    drain,
    make_engine,
    namespace,
    observe_written,
    per_pod_world,
    trust_domain,
    workload_identity,
)
from trustwarden.metrics import Metrics
from trustwarden.reconcile.engine import Engine, EngineConfig
from trustwarden.reconcile.ledger import Ledger


def secret_of(kube: FakeKube, ns: str, name: str) -> dict[str, object] | None:
    return kube.objects.get(("Secret", ns, name))


def leaf_serial(kube: FakeKube, ns: str, name: str) -> int:
    secret = secret_of(kube, ns, name)
    assert secret is not None
    chain = base64.b64decode(secret["data"]["tls.crt"])  # type: ignore[index]
    return int(x509.load_pem_x509_certificates(chain)[0].serial_number)


def setup(engine: Engine) -> None:
    engine.observe_namespace(namespace("payments"))
    engine.observe_namespace(namespace("trustwarden-system"))
    engine.observe_trust_domain(trust_domain())
    engine.observe_workload_identity(workload_identity("payments", "api"))


async def issued(kube: FakeKube, clock: FakeClock, *extra_keys: tuple[str, ...]) -> Engine:
    """An engine that has reconciled the domain and the Shared identity `payments/api`."""
    engine = make_engine(kube, clock)
    setup(engine)
    for key in (("td", "prod"), ("wid", "payments", "api"), *extra_keys):
        engine.scheduler.schedule(key, clock())
    await drain(engine, clock)
    return engine


def test_shared_issue_costs_one_secret_write_and_one_bundle_write() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        await issued(kube, clock)
        secret = secret_of(kube, "payments", "api-svid")
        assert secret is not None and secret["type"] == "kubernetes.io/tls"
        annotations = secret["metadata"]["annotations"]  # type: ignore[index]
        assert (
            annotations["trustwarden.io/spiffe-id"]
            == "spiffe://prod.example.org/ns/payments/sa/default"
        )
        bundle = kube.objects[("ConfigMap", "payments", "trustwarden-bundle")]
        assert set(bundle["data"]) == {
            "ca.crt",
            "prod.example.org.pem",
            "prod.example.org.crl.pem",
            "bundle.spiffe",
        }
        # Writes: CA Secret, the CRL with its revocations, workload Secret, ledger, namespace
        # bundle. Each once; the workload's certificate itself costs exactly one write.
        written = sorted((k[0], k[2]) for k in kube.objects)
        assert written == [
            ("ConfigMap", "trustwarden-bundle"),
            ("ConfigMap", Ledger().name_for("payments")),  # its ledger shard
            ("ConfigMap", "trustwarden-revocations-prod"),
            ("Secret", "api-svid"),
            ("Secret", "trustwarden-ca-prod"),
        ]
        assert kube.calls["create"] == 5 and kube.calls["replace"] == 0

    asyncio.run(scenario())


def test_restart_with_valid_certificates_writes_nothing() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        await issued(kube, clock)
        serial = leaf_serial(kube, "payments", "api-svid")
        clock.advance(timedelta(minutes=5))
        # A new process: caches are filled from the API (as kopf's indexes do), then it starts.
        second = make_engine(kube, clock)
        setup(second)
        observe_written(second, kube)
        writes_before = kube.writes()
        second.scheduler.schedule(("td", "prod"), clock())
        second.scheduler.schedule(("wid", "payments", "api"), clock())
        await drain(second, clock)
        assert leaf_serial(kube, "payments", "api-svid") == serial
        assert kube.writes() == writes_before

    asyncio.run(scenario())


def test_restart_rewrites_no_status_that_is_unchanged() -> None:
    """The statuses an earlier process wrote are taken as written: a restart with nothing to
    change patches none of them (it used to rewrite every one), and one that has something
    to change still does."""

    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        first = await issued(kube, clock)
        await first.flush_status()
        written = dict(kube.statuses)
        assert ("WorkloadIdentity", "payments", "api") in written
        # The domain's status.issued is what the CRD says: the SVIDs valid now (one), which a
        # restart must neither reset to 0 nor let renewals inflate.
        assert written[("TrustDomain", None, "prod")]["issued"] == 1
        clock.advance(timedelta(seconds=30))

        def restarted(wid_status: dict[str, Any]) -> Engine:
            engine = make_engine(kube, clock)
            engine.observe_namespace(namespace("payments"))
            engine.observe_namespace(namespace("trustwarden-system"))
            engine.observe_trust_domain(
                {**trust_domain(), "status": written[("TrustDomain", None, "prod")]}
            )
            engine.observe_workload_identity(
                {**workload_identity("payments", "api"), "status": wid_status}
            )
            observe_written(engine, kube)
            engine.scheduler.schedule(("td", "prod"), clock())
            engine.scheduler.schedule(("wid", "payments", "api"), clock())
            return engine

        patches = kube.calls["patch_status"]
        second = restarted(written[("WorkloadIdentity", "payments", "api")])
        await drain(second, clock)
        await second.flush_status()
        assert kube.calls["patch_status"] == patches

        stale = {**written[("WorkloadIdentity", "payments", "api")], "certificates": 7}
        third = restarted(stale)
        await drain(third, clock)
        await third.flush_status()
        assert kube.calls["patch_status"] == patches + 1
        assert (
            kube.statuses[("WorkloadIdentity", "payments", "api")]
            == written[("WorkloadIdentity", "payments", "api")]
        )

    asyncio.run(scenario())


def test_renewal_happens_at_the_renew_point_not_before() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued(kube, clock)
        serial = leaf_serial(kube, "payments", "api-svid")
        deadline = engine.scheduler.deadline_of(("wid", "payments", "api"))
        assert deadline is not None
        # 1h TTL, renewAt 50%: between 25 and 30 minutes after issuance.
        assert timedelta(minutes=25) <= deadline - clock() <= timedelta(minutes=30)
        clock.now = deadline - timedelta(seconds=1)
        await drain(engine, clock)
        assert leaf_serial(kube, "payments", "api-svid") == serial
        clock.now = deadline
        await drain(engine, clock)
        assert leaf_serial(kube, "payments", "api-svid") != serial

    asyncio.run(scenario())


def test_deleted_identity_is_revoked_and_its_secret_removed() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = make_engine(kube, clock)
        setup(engine)
        engine.observe_workload_identity(workload_identity("payments", "keeper"))
        for key in (("td", "prod"), ("wid", "payments", "api"), ("wid", "payments", "keeper")):
            engine.scheduler.schedule(key, clock())
        await drain(engine, clock)
        serial = leaf_serial(kube, "payments", "api-svid")
        engine.forget_workload_identity("payments", "api")
        await drain(engine, clock)
        assert secret_of(kube, "payments", "api-svid") is None
        crl_pem = kube.objects[("ConfigMap", "payments", "trustwarden-bundle")]["data"][
            "prod.example.org.crl.pem"
        ]
        revoked = {r.serial_number for c in _crls(crl_pem) for r in c}
        assert serial in revoked
        stored = kube.objects[("ConfigMap", "trustwarden-system", "trustwarden-revocations-prod")]
        assert format(serial, "x") in stored["data"]["revoked.json"]

    asyncio.run(scenario())


def test_invalid_later_spec_keeps_what_was_issued() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued(kube, clock)
        serial = leaf_serial(kube, "payments", "api-svid")
        bad = workload_identity("payments", "api")
        bad["spec"]["ttl"] = "5m"  # below the 10m minimum
        bad["metadata"]["generation"] = 2
        engine.observe_workload_identity(bad)
        await drain(engine, clock)
        await engine.flush_status()
        assert leaf_serial(kube, "payments", "api-svid") == serial
        status = kube.statuses[("WorkloadIdentity", "payments", "api")]
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False" and ready["reason"] == "InvalidDuration"
        assert "WorkloadIdentity payments/api: spec.ttl" in ready["message"]
        assert any(e[2] == "InvalidDuration" for e in kube.events)

    asyncio.run(scenario())


def test_namespace_without_identity_gets_no_bundle() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = make_engine(kube, clock)
        setup(engine)
        engine.observe_namespace(namespace("bystander"))
        engine.scheduler.schedule(("td", "prod"), clock())
        engine.scheduler.schedule(("wid", "payments", "api"), clock())
        await drain(engine, clock)
        assert ("ConfigMap", "bystander", "trustwarden-bundle") not in kube.objects

    asyncio.run(scenario())


def _crls(pem: str) -> list[x509.CertificateRevocationList]:
    blocks = pem.split("-----END X509 CRL-----")
    return [
        x509.load_pem_x509_crl((block + "-----END X509 CRL-----").strip().encode())
        for block in blocks
        if "BEGIN X509 CRL" in block
    ]


def test_revoke_annotation_revokes_and_reissues() -> None:
    """`trustwarden revoke` only adds an annotation: no data changes, and it must still act."""

    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued(kube, clock)
        observe_written(engine, kube)
        serial = leaf_serial(kube, "payments", "api-svid")
        secret = kube.objects[("Secret", "payments", "api-svid")]
        secret["metadata"]["annotations"]["trustwarden.io/revoke"] = "key leaked in a log"
        engine.observe_secret(secret)
        await drain(engine, clock)
        assert leaf_serial(kube, "payments", "api-svid") != serial
        crl_pem = kube.objects[("ConfigMap", "payments", "trustwarden-bundle")]["data"][
            "prod.example.org.crl.pem"
        ]
        assert serial in {r.serial_number for c in _crls(crl_pem) for r in c}
        renewed = kube.objects[("Secret", "payments", "api-svid")]
        assert "trustwarden.io/revoke" not in renewed["metadata"]["annotations"]
        assert any(e[2] == "Revoked" and "key leaked in a log" in e[3] for e in kube.events)

    asyncio.run(scenario())


def test_prime_fills_caches_and_a_relisting_drops_ghosts() -> None:
    """Pods and Secrets are listed by the engine before watching; anything deleted while no
    watch was looking is forgotten by the next listing (after a 410 Gone), never served."""

    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        await issued(kube, clock)
        second = make_engine(kube, clock)
        await second.prime()
        assert ("payments", "api-svid") in second.secrets
        del kube.objects[("Secret", "payments", "api-svid")]  # gone while nobody watched
        for reflector in second.reflectors:
            await reflector.list()
        assert ("payments", "api-svid") not in second.secrets

    asyncio.run(scenario())


def test_namespace_scoped_mode_never_writes_outside_its_namespaces() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        config = EngineConfig(
            operator_namespace="trustwarden-system",
            ledger_interval=timedelta(0),
            watch_namespaces=frozenset({"payments", "trustwarden-system"}),
        )
        engine = Engine(kube, config, Metrics(), clock=clock)
        setup(engine)
        engine.observe_namespace(namespace("gateway", {"edge": "yes"}))
        td = trust_domain(
            spec={
                "trustDomain": "prod.example.org",
                "ca": {"selfSigned": {}},
                "bundle": {"namespaceSelector": {"matchLabels": {"edge": "yes"}}},
            }
        )
        engine.observe_trust_domain(td)
        engine.scheduler.schedule(("td", "prod"), clock())
        engine.scheduler.schedule(("wid", "payments", "api"), clock())
        await drain(engine, clock)
        assert ("ConfigMap", "payments", "trustwarden-bundle") in kube.objects
        assert ("ConfigMap", "gateway", "trustwarden-bundle") not in kube.objects

    asyncio.run(scenario())


# --- revocation that survives a crash: the Secret finalizer ----------------------------------

FINALIZER = "trustwarden.io/revoke"


def _per_pod_setup(engine: Engine, kube: FakeKube, pod_uid: str = "uid-pod-w1") -> dict[str, Any]:
    per_pod_world(engine)
    return add_web_pod(engine, kube, "w1", pod_uid)


async def _per_pod_issued(kube: FakeKube, clock: FakeClock) -> tuple[Engine, dict[str, Any], int]:
    """An engine that issued the PerPod SVID of pod shop/w1: (engine, pod, serial)."""
    engine = make_engine(kube, clock)
    pod = _per_pod_setup(engine, kube)
    for key in (("td", "prod"), ("pod", "shop", "w1")):
        engine.scheduler.schedule(key, clock())
    await drain(engine, clock)
    return engine, pod, leaf_serial(kube, "shop", "web-svid-w1")


def _stored_revocations(kube: FakeKube) -> str:
    stored = kube.objects.get(("ConfigMap", "trustwarden-system", "trustwarden-revocations-prod"))
    return str(stored["data"]["revoked.json"]) if stored else ""


def test_issued_secrets_carry_the_revoke_finalizer() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        await issued(kube, clock)
        secret = secret_of(kube, "payments", "api-svid")
        assert secret is not None
        assert secret["metadata"]["finalizers"] == [FINALIZER]  # type: ignore[index]

    asyncio.run(scenario())


def test_pod_deletion_releases_the_secret_only_after_the_revocation_is_stored() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine, pod, serial = await _per_pod_issued(kube, clock)
        released_with: list[str] = []
        remove = kube.remove_finalizer

        async def spy(kind: str, ns: str, name: str, finalizer: str, *, uid: str) -> None:
            released_with.append(_stored_revocations(kube))
            await remove(kind, ns, name, finalizer, uid=uid)

        kube.remove_finalizer = spy  # type: ignore[method-assign]
        del kube.objects[("Pod", "shop", "w1")]
        engine.forget_pod(pod)
        await drain(engine, clock)
        assert secret_of(kube, "shop", "web-svid-w1") is None
        assert len(released_with) == 1
        assert format(serial, "x") in released_with[0], "released before the CRL was stored"

    asyncio.run(scenario())


def test_a_terminating_pod_keeps_its_certificate_until_it_is_gone() -> None:
    """Graceful termination: the pod drains with its certificate; the serial is revoked and the
    Secret released only when the pod object is removed."""

    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine, pod, serial = await _per_pod_issued(kube, clock)
        writes_before = kube.writes()
        terminating = {
            **pod,
            "metadata": {**pod["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"},
        }
        kube.objects[("Pod", "shop", "w1")] = terminating
        engine.observe_pod(terminating)
        clock.advance(timedelta(seconds=30))
        await drain(engine, clock)
        assert leaf_serial(kube, "shop", "web-svid-w1") == serial
        assert format(serial, "x") not in _stored_revocations(kube)
        assert kube.writes() == writes_before, "a draining pod's identity is left alone"

        del kube.objects[("Pod", "shop", "w1")]
        engine.forget_pod(terminating)
        await drain(engine, clock)
        assert secret_of(kube, "shop", "web-svid-w1") is None
        assert format(serial, "x") in _stored_revocations(kube)

    asyncio.run(scenario())


def test_a_secret_deleted_while_the_operator_was_down_is_revoked_on_resume() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        first, _, serial = await _per_pod_issued(kube, clock)
        # Down: the ledger write never happened, the pod goes, the garbage collector deletes
        # the Secret, which the finalizer keeps (terminating) until someone revokes it.
        kube.objects = {k: v for k, v in kube.objects.items() if "ledger" not in k[2]}
        del kube.objects[("Pod", "shop", "w1")]
        await kube.delete("Secret", "shop", "web-svid-w1")
        assert secret_of(kube, "shop", "web-svid-w1") is not None

        second = make_engine(kube, clock)
        second.observe_namespace(namespace("shop", {"trustwarden.io/inject": "enabled"}))
        second.observe_namespace(namespace("trustwarden-system"))
        second.observe_trust_domain(trust_domain())
        second.observe_workload_identity(first.store.wid_bodies[("shop", "web")])  # type: ignore[arg-type]
        observe_written(second, kube)
        for key in (("td", "prod"), ("catchup",)):
            second.scheduler.schedule(key, clock())
        await drain(second, clock)
        assert format(serial, "x") in _stored_revocations(kube)
        assert secret_of(kube, "shop", "web-svid-w1") is None

    asyncio.run(scenario())


def test_a_secret_deleted_by_hand_is_released_unrevoked_and_reissued() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine, _, serial = await _per_pod_issued(kube, clock)
        await kube.delete("Secret", "shop", "web-svid-w1")  # kubectl delete secret ...
        observe_written(engine, kube)  # the watch: MODIFIED, deletionTimestamp set
        await drain(engine, clock)
        assert secret_of(kube, "shop", "web-svid-w1") is None
        engine.forget_secret("shop", "web-svid-w1")  # the watch: DELETED
        await drain(engine, clock)
        assert format(serial, "x") not in _stored_revocations(kube)
        assert leaf_serial(kube, "shop", "web-svid-w1") != serial

    asyncio.run(scenario())
