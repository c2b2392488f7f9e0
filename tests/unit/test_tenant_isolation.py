"""A tenant attacks through what it can write in its own namespace: Secrets, pods, labels,
annotations and WorkloadIdentities. Nothing of another namespace's identity may change.

The world: TrustDomain `bank` whose policy allows only namespaces labelled tier=bank, with the
victim's Shared identity `vault/api`; TrustDomain `prod` open to everyone, with the tenant's
Shared identity `shop/web` and its PerPod identity `shop/pods`.
"""

from __future__ import annotations

import asyncio
import base64
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.fakes import (
    ADMISSION_KEY,
    FakeClock,
    FakeKube,
    drain,
    make_engine,
    namespace,
    trust_domain,
    workload_identity,
)
from trustwarden.reconcile.engine import Engine

OPNS = "trustwarden-system"


def world(engine: Engine) -> None:
    engine.observe_namespace(namespace(OPNS))
    engine.observe_namespace(namespace("vault", {"tier": "bank"}))
    engine.observe_namespace(namespace("shop", {"trustwarden.io/inject": "enabled"}))
    engine.observe_trust_domain(
        trust_domain(
            "bank",
            spec={
                "trustDomain": "bank.example.org",
                "ca": {"selfSigned": {}},
                "policy": {"allowedNamespaces": {"matchLabels": {"tier": "bank"}}},
            },
        )
    )
    engine.observe_trust_domain(trust_domain("prod"))
    engine.observe_workload_identity(
        workload_identity(
            "vault",
            "api",
            spec={"trustDomain": "bank", "delivery": {"mode": "Shared", "secretName": "api-svid"}},
        )
    )
    engine.observe_workload_identity(workload_identity("shop", "web"))
    engine.observe_workload_identity(
        workload_identity(
            "shop",
            "pods",
            spec={
                "trustDomain": "prod",
                "podSelector": {"matchLabels": {"app": "pods"}},
                "delivery": {"mode": "PerPod"},
            },
        )
    )


async def issued_world(kube: FakeKube, clock: FakeClock) -> Engine:
    engine = make_engine(kube, clock)
    world(engine)
    for key in (("td", "bank"), ("td", "prod"), ("wid", "vault", "api"), ("wid", "shop", "web")):
        engine.scheduler.schedule(key, clock())
    await drain(engine, clock)
    await engine.flush_status()
    return engine


def victim_state(kube: FakeKube) -> dict[str, Any]:
    """Everything of the victim's that an attack could change."""
    secret = kube.objects[("Secret", "vault", "api-svid")]
    revocations = kube.objects.get(("ConfigMap", OPNS, "trustwarden-revocations-bank"))
    return {
        "secret_rv": secret["metadata"]["resourceVersion"],
        "serial": secret["metadata"]["annotations"]["trustwarden.io/serial"],
        "revocations": copy.deepcopy((revocations or {}).get("data")),
        "bundle": copy.deepcopy(kube.objects[("ConfigMap", "vault", "trustwarden-bundle")]["data"]),
        "status": kube.statuses.get(("WorkloadIdentity", "vault", "api")),
    }


def victim_leaf(kube: FakeKube) -> x509.Certificate:
    secret = kube.objects[("Secret", "vault", "api-svid")]
    return x509.load_pem_x509_certificates(base64.b64decode(secret["data"]["tls.crt"]))[0]


def look_alike(victim: x509.Certificate, *, serial: int | None = None, years: int = 0) -> bytes:
    """The victim's serial, issuer name, AKI and SANs, signed by a key of the tenant's own:
    `openssl verify` rejects it, names and key identifiers match."""
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = victim.not_valid_after_utc
    if years:
        not_after = datetime(2099, 1, 1, tzinfo=UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(victim.subject)
        .issuer_name(victim.issuer)
        .public_key(key.public_key())
        .serial_number(serial or victim.serial_number)
        .not_valid_before(victim.not_valid_before_utc)
        .not_valid_after(not_after)
    )
    for extension in victim.extensions:
        if isinstance(extension.value, x509.SubjectKeyIdentifier):
            continue
        builder = builder.add_extension(extension.value, extension.critical)
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


def tamper_own_secret(
    engine: Engine, kube: FakeKube, chain_pem: bytes, *, revoke: bool = True
) -> None:
    """The tenant writes `chain_pem` into its own issued Secret (and asks for revocation)."""
    secret = kube.objects[("Secret", "shop", "web-svid")]
    secret["data"]["tls.crt"] = base64.b64encode(chain_pem).decode()
    if revoke:
        secret["metadata"]["annotations"]["trustwarden.io/revoke"] = "tenant says so"
    secret["metadata"]["resourceVersion"] = kube._next_rv()
    engine.observe_secret(copy.deepcopy(secret))


def handmade_secret(
    engine: Engine, kube: FakeKube, name: str, chain_pem: bytes, owner_uid: str, identity: str
) -> None:
    """A Secret the tenant creates itself, forging everything trustwarden puts on its own."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": {
                "app.kubernetes.io/managed-by": "trustwarden",
                "trustwarden.io/identity": identity,
            },
            "finalizers": ["trustwarden.io/revoke"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "x", "uid": owner_uid}],
            "annotations": {"trustwarden.io/revoke": "please"},
        },
        "data": {"tls.crt": base64.b64encode(chain_pem).decode(), "tls.key": ""},
    }
    kube.objects[("Secret", "shop", name)] = kube._stamp(body)
    engine.observe_secret(copy.deepcopy(kube.objects[("Secret", "shop", name)]))


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def test_a_look_alike_in_the_tenants_own_secret_revokes_nothing_of_the_victim() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued_world(kube, clock)
        before = victim_state(kube)
        victim = victim_leaf(kube)
        tamper_own_secret(engine, kube, look_alike(victim))
        await drain(engine, clock)
        await engine.flush_status()
        assert victim_state(kube) == before
        assert victim.serial_number not in engine.domains["bank"].revocations
        reasons = [e[2] for e in kube.events if e[0].name == "web"]
        assert "RevocationRefused" in reasons
        # The tenant's own Secret is repaired with a fresh certificate of its own identity.
        secret = kube.objects[("Secret", "shop", "web-svid")]
        uri = secret["metadata"]["annotations"]["trustwarden.io/spiffe-id"]
        assert uri == "spiffe://prod.example.org/ns/shop/sa/default"

    asyncio.run(scenario())


def test_a_verbatim_copy_of_the_victims_certificate_revokes_nothing() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued_world(kube, clock)
        before = victim_state(kube)
        tamper_own_secret(engine, kube, pem(victim_leaf(kube)))
        await drain(engine, clock)
        assert victim_state(kube) == before

    asyncio.run(scenario())


def test_handmade_managed_secret_then_deleting_own_identity_revokes_nothing() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued_world(kube, clock)
        before = victim_state(kube)
        victim = victim_leaf(kube)
        handmade_secret(engine, kube, "forged", pem(victim), "uid-wid-web", "web")
        handmade_secret(
            engine, kube, "forged-2099", look_alike(victim, serial=12345, years=73), "uid-x", "web"
        )
        engine.forget_workload_identity("shop", "web")
        await drain(engine, clock)
        assert victim_state(kube) == before
        assert engine.domains["bank"].revocations == {}
        # The tenant's own certificate is revoked, into its own domain only.
        assert len(engine.domains["prod"].revocations) == 1

    asyncio.run(scenario())


def test_handmade_secret_of_a_deleted_pod_revokes_nothing_foreign() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued_world(kube, clock)
        before = victim_state(kube)
        handmade_secret(engine, kube, "pod-secret", pem(victim_leaf(kube)), "uid-pod-p1", "pods")
        engine.scheduler.schedule(("gone", "shop", "pod-secret", "uid-pod-p1"), clock())
        await drain(engine, clock)
        assert victim_state(kube) == before

    asyncio.run(scenario())


def test_a_restart_takes_no_forged_certificate_into_the_ledger() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        first = await issued_world(kube, clock)
        handmade_secret(first, kube, "orphan", pem(victim_leaf(kube)), "uid-dead", "web")
        await first.flush()
        before = victim_state(kube)
        second = make_engine(kube, clock)
        world(second)
        for (kind, _ns, name), body in list(kube.objects.items()):
            if kind == "Secret":
                second.observe_secret(body)
            elif kind == "ConfigMap" and name.startswith("trustwarden-ledger"):
                second.observe_ledger(body)
        for key in (("td", "bank"), ("td", "prod"), ("catchup",)):
            second.scheduler.schedule(key, clock())
        await drain(second, clock)
        assert victim_state(kube) == before
        assert second.ledger.entry("shop", victim_leaf(kube).serial_number) is None

    asyncio.run(scenario())


_KINDS = st.sampled_from(
    [
        "copy",
        "look-alike",
        "random-serial",
        "garbage",
        "truncated",
        "self-signed-issuer",
        "chain-with-victim-anchor",
    ]
)


def forged_issuer_chain(victim: x509.Certificate, serial: int) -> bytes:
    """A self-signed CA of the tenant's that copies the victim issuer's name and key identifier,
    then a leaf it signs with the victim's subject and SANs and `serial`: every name and
    identifier matches, only the signatures are the tenant's."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    aki = victim.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    ca = (
        x509.CertificateBuilder()
        .subject_name(victim.issuer)
        .issuer_name(victim.issuer)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(victim.not_valid_before_utc)
        .not_valid_after(datetime(2099, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier(aki.key_identifier), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(victim.subject)
        .issuer_name(victim.issuer)
        .public_key(leaf_key.public_key())
        .serial_number(serial)
        .not_valid_before(victim.not_valid_before_utc)
        .not_valid_after(victim.not_valid_after_utc)
    )
    for extension in victim.extensions:
        if not isinstance(extension.value, x509.SubjectKeyIdentifier):
            builder = builder.add_extension(extension.value, extension.critical)
    leaf = builder.sign(ca_key, hashes.SHA256())
    return pem(leaf) + pem(ca)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(kind=_KINDS, serial=st.integers(min_value=1, max_value=2**159 - 1), data=st.binary())
def test_no_bytes_a_tenant_writes_change_the_victims_revocation_list(
    kind: str, serial: int, data: bytes
) -> None:
    """Whatever certificate bytes land in the tenant's Secrets, through every path that revokes
    (emergency request, a deleted owner, a deleted identity), the victim's CRL is unchanged."""

    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued_world(kube, clock)
        victim = victim_leaf(kube)
        payload = {
            "copy": pem(victim),
            "look-alike": look_alike(victim),
            "random-serial": look_alike(victim, serial=serial, years=73),
            "garbage": data,
            "truncated": pem(victim)[: max(1, len(data) % 600)],
            "self-signed-issuer": forged_issuer_chain(victim, victim.serial_number),
            # The victim's real (public) anchor appended after a look-alike, as if it were
            # the chain: the leaf's signature still is not the anchor's.
            "chain-with-victim-anchor": look_alike(victim)
            + base64.b64decode(kube.objects[("Secret", "vault", "api-svid")]["data"]["ca.crt"]),
        }[kind]
        before = victim_state(kube)
        tamper_own_secret(engine, kube, payload)
        handmade_secret(engine, kube, "forged", payload, "uid-pod-gone", "pods")
        engine.scheduler.schedule(("gone", "shop", "forged", "uid-pod-gone"), clock())
        await drain(engine, clock)
        engine.forget_workload_identity("shop", "web")
        await drain(engine, clock)
        assert victim_state(kube)["revocations"] == before["revocations"]
        assert engine.domains["bank"].revocations == {}

    asyncio.run(scenario())


def test_foreign_dns_names_are_refused_with_a_reason() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = make_engine(kube, clock)
        world(engine)
        engine.observe_workload_identity(
            workload_identity(
                "shop",
                "evil",
                spec={
                    "trustDomain": "prod",
                    "dnsNames": ["api.vault.svc", "kubernetes.default.svc", "login.example.com"],
                    "delivery": {"mode": "Shared", "secretName": "evil-svid"},
                },
            )
        )
        engine.observe_workload_identity(
            workload_identity(
                "shop",
                "own",
                spec={
                    "trustDomain": "prod",
                    "dnsNames": ["web.{namespace}.svc", "web.shop.svc.cluster.local", "a.shop.pod"],
                    "delivery": {"mode": "Shared", "secretName": "own-svid"},
                },
            )
        )
        for key in (("td", "prod"), ("wid", "shop", "evil"), ("wid", "shop", "own")):
            engine.scheduler.schedule(key, clock())
        await drain(engine, clock)
        await engine.flush_status()
        assert ("Secret", "shop", "evil-svid") not in kube.objects
        assert ("Secret", "shop", "own-svid") in kube.objects
        status = kube.statuses[("WorkloadIdentity", "shop", "evil")]
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False" and ready["reason"] == "DNSNameNotAllowed"
        assert "'api.vault.svc'" in ready["message"] and "allowedDNSNames" in ready["message"]

    asyncio.run(scenario())


def test_a_dns_grant_opens_exactly_the_granted_names() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = make_engine(kube, clock)
        world(engine)
        engine.observe_trust_domain(
            trust_domain(
                "prod",
                spec={
                    "trustDomain": "prod.example.org",
                    "ca": {"selfSigned": {}},
                    "policy": {
                        "allowedDNSNames": [
                            {
                                "pattern": "*.{namespace}.apps.example.com",
                                "namespaceSelector": {},
                            },
                            {
                                "pattern": "login.example.com",
                                "namespaceSelector": {"matchLabels": {"team": "identity"}},
                            },
                        ]
                    },
                },
            )
        )
        for name, names in (
            ("zone", ["a.b.shop.apps.example.com"]),
            ("other-zone", ["a.vault.apps.example.com"]),
            ("login", ["login.example.com"]),
        ):
            engine.observe_workload_identity(
                workload_identity(
                    "shop",
                    name,
                    spec={
                        "trustDomain": "prod",
                        "dnsNames": names,
                        "delivery": {"mode": "Shared", "secretName": f"{name}-svid"},
                    },
                )
            )
            engine.scheduler.schedule(("wid", "shop", name), clock())
        engine.scheduler.schedule(("td", "prod"), clock())
        await drain(engine, clock)
        assert ("Secret", "shop", "zone-svid") in kube.objects
        assert ("Secret", "shop", "other-zone-svid") not in kube.objects
        assert ("Secret", "shop", "login-svid") not in kube.objects  # not team=identity

    asyncio.run(scenario())


def _pod(name: str, uid: str, secret: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": uid,
            "labels": {"app": "pods", "trustwarden.io/identity": "pods"},
            "annotations": {"trustwarden.io/secret": secret, **annotations},
        },
        "spec": {"volumes": [{"name": "trustwarden-svid", "secret": {"secretName": secret}}]},
    }


def test_a_pod_the_webhook_never_admitted_gets_no_secret() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = make_engine(kube, clock)
        world(engine)
        engine.scheduler.schedule(("td", "prod"), clock())
        await drain(engine, clock)
        pods = {
            "no-tag": _pod("no-tag", "u1", "chosen-1", {}),
            "forged": _pod("forged", "u2", "chosen-2", {"trustwarden.io/admission": "v1.xx"}),
            # A valid tag copied from another pod, with a Secret name of the tenant's choosing.
            "copied": _pod(
                "copied",
                "u3",
                "chosen-3",
                {"trustwarden.io/admission": ADMISSION_KEY.tag("shop", "pods", "other")},
            ),
            "good": _pod(
                "good",
                "u4",
                "pods-svid-1",
                {"trustwarden.io/admission": ADMISSION_KEY.tag("shop", "pods", "pods-svid-1")},
            ),
        }
        for body in pods.values():
            kube.objects[("Pod", "shop", body["metadata"]["name"])] = body
            engine.observe_pod(body)
        await drain(engine, clock)
        for name in ("chosen-1", "chosen-2", "chosen-3"):
            assert ("Secret", "shop", name) not in kube.objects
        assert ("Secret", "shop", "pods-svid-1") in kube.objects
        refused = {e[0].name for e in kube.events if e[2] == "NotAdmitted" and e[0].kind == "Pod"}
        assert refused == {"no-tag", "forged", "copied"}

    asyncio.run(scenario())


def test_a_pod_relabelled_to_another_identity_gets_nothing() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = make_engine(kube, clock)
        world(engine)
        engine.scheduler.schedule(("td", "prod"), clock())
        body = _pod(
            "p",
            "u1",
            "web-svid-2",
            {"trustwarden.io/admission": ADMISSION_KEY.tag("shop", "web", "x")},
        )
        body["metadata"]["labels"]["trustwarden.io/identity"] = "pods"
        kube.objects[("Pod", "shop", "p")] = body
        engine.observe_pod(body)
        await drain(engine, clock)
        assert ("Secret", "shop", "web-svid-2") not in kube.objects

    asyncio.run(scenario())


def test_a_second_claim_of_a_trust_domain_name_is_refused_and_publishes_nothing() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued_world(kube, clock)
        genuine = kube.objects[("ConfigMap", "vault", "trustwarden-bundle")]["data"]["ca.crt"]
        impostor_ca = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "impostor")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(impostor_ca.public_key())
            .serial_number(7)
            .not_valid_before(clock() - timedelta(days=1))
            .not_valid_after(clock() + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(impostor_ca, hashes.SHA256())
        )
        impostor = trust_domain(
            "bank-copy",
            spec={
                "trustDomain": "bank.example.org",
                "ca": {"external": {"bundle": pem(cert).decode()}},
                "bundle": {"namespaceSelector": {}},
            },
        )
        impostor["metadata"]["creationTimestamp"] = "2030-01-01T00:00:00Z"
        engine.observe_trust_domain(impostor)
        await drain(engine, clock)
        await engine.flush_status()
        for (kind, _ns, cm), body in kube.objects.items():
            if kind == "ConfigMap" and cm == "trustwarden-bundle":
                assert "impostor" not in str(body["data"])
                for key, value in body["data"].items():
                    if key.endswith(".pem") and not key.endswith(".crl.pem"):
                        assert pem(cert).decode() not in value
        assert (
            kube.objects[("ConfigMap", "vault", "trustwarden-bundle")]["data"]["ca.crt"] == genuine
        )
        status = kube.statuses[("TrustDomain", None, "bank-copy")]
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False" and ready["reason"] == "TrustDomainConflict"
        assert "TrustDomain bank" in ready["message"]
        events = [(e[0].name, e[2]) for e in kube.events if e[2] == "TrustDomainConflict"]
        assert ("bank-copy", "TrustDomainConflict") in events
        assert ("bank", "TrustDomainConflict") in events

    asyncio.run(scenario())


def test_revocation_entries_live_no_longer_than_their_issuer() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued_world(kube, clock)
        runtime = engine.domains["prod"]
        authority = runtime.active()
        assert authority is not None
        far = datetime(2099, 1, 1, tzinfo=UTC)
        assert runtime.revoke(1234, authority.sha256, far, clock(), "test")
        assert runtime.revocations[1234].not_after == authority.path_not_after
        assert not runtime.revoke(5678, "f" * 64, far, clock(), "unknown issuer")

    asyncio.run(scenario())


def test_stripped_metadata_is_restored() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued_world(kube, clock)
        secret = kube.objects[("Secret", "shop", "web-svid")]
        original = copy.deepcopy(secret["metadata"])
        serial = secret["metadata"]["annotations"]["trustwarden.io/serial"]
        secret["metadata"]["finalizers"] = []
        del secret["metadata"]["annotations"]["trustwarden.io/owner"]
        secret["metadata"]["labels"]["trustwarden.io/identity"] = "other"
        secret["metadata"]["resourceVersion"] = kube._next_rv()
        engine.observe_secret(copy.deepcopy(secret))
        await drain(engine, clock)
        restored = kube.objects[("Secret", "shop", "web-svid")]["metadata"]
        assert restored["finalizers"] == ["trustwarden.io/revoke"]
        assert restored["labels"] == original["labels"]
        assert restored["annotations"] == original["annotations"]
        assert restored["annotations"]["trustwarden.io/serial"] == serial  # not re-issued

    asyncio.run(scenario())


def test_a_foreign_secret_holding_the_name_is_not_counted() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued_world(kube, clock)
        foreign = copy.deepcopy(kube.objects[("Secret", "vault", "api-svid")])
        foreign["metadata"]["namespace"] = "shop"
        foreign["metadata"]["name"] = "squat"
        foreign["metadata"]["ownerReferences"] = [{"uid": "someone-else"}]
        kube.objects[("Secret", "shop", "squat")] = foreign
        engine.observe_secret(foreign)
        engine.observe_workload_identity(
            workload_identity(
                "shop",
                "squatter",
                spec={"trustDomain": "prod", "delivery": {"mode": "Shared", "secretName": "squat"}},
            )
        )
        engine.scheduler.schedule(("wid", "shop", "squatter"), clock())
        await drain(engine, clock)
        await engine.flush_status()
        status = kube.statuses[("WorkloadIdentity", "shop", "squatter")]
        assert status["issued"] == 0 and "soonestExpiry" not in status
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "SecretConflict"
        bank = kube.statuses[("TrustDomain", None, "bank")]
        assert bank["issued"] == 1  # the victim's own, not the copy in shop

    asyncio.run(scenario())


def test_an_external_bundle_with_a_disguised_key_is_refused() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued_world(kube, clock)
        anchor = kube.objects[("ConfigMap", "vault", "trustwarden-bundle")]["data"]["ca.crt"]
        for trick in (
            "-----BEGIN\u00a0PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqG\n-----END\u00a0PRIVATE KEY-----\n",
            "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n",
        ):
            engine.observe_trust_domain(
                trust_domain(
                    "partner",
                    spec={
                        "trustDomain": "partner.example.org",
                        "ca": {"external": {"bundle": anchor + trick}},
                        "bundle": {"namespaceSelector": {}},
                    },
                )
            )
            await drain(engine, clock)
            await engine.flush_status()
            status = kube.statuses[("TrustDomain", None, "partner")]
            ready = next(c for c in status["conditions"] if c["type"] == "Ready")
            assert ready["status"] == "False" and ready["reason"] == "CAInvalid"
            assert "MIGH" not in ready["message"]  # the content is never echoed
            assert "partner.example.org.pem" not in str(
                kube.objects[("ConfigMap", "shop", "trustwarden-bundle")]["data"].keys()
            )

    asyncio.run(scenario())


def test_a_large_revocation_list_degrades_the_domain_visibly() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued_world(kube, clock)
        runtime = engine.domains["prod"]
        authority = runtime.active()
        assert authority is not None
        for serial in range(1, 3500):
            runtime.revoke(
                serial,
                authority.sha256,
                clock() + timedelta(hours=1),
                clock(),
                "x",
                namespace="shop",
            )
        engine.dirty_revocations.add("prod")
        await drain(engine, clock)
        await engine.flush_status()
        status = kube.statuses[("TrustDomain", None, "prod")]
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert degraded["status"] == "True" and degraded["reason"] == "RevocationListLarge"
        assert "shop (3499)" in degraded["message"]
        assert any(e[2] == "RevocationListLarge" for e in kube.events)
        ratio = engine.metrics.registry.get_sample_value(
            "trustwarden_revocation_store_ratio", {"trust_domain": "prod.example.org"}
        )
        assert ratio is not None and ratio >= 0.5

    asyncio.run(scenario())


def test_a_namespace_that_leaves_allowed_namespaces_keeps_its_certificate_until_expiry() -> None:
    """Documented choice: not revoked (a label typo must not cut a namespace off), not renewed,
    not counted by the domain, and said so in the status; `trustwarden revoke` still works."""

    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued_world(kube, clock)
        serial = int(
            kube.objects[("Secret", "vault", "api-svid")]["metadata"]["annotations"][
                "trustwarden.io/serial"
            ],
            16,
        )
        engine.observe_namespace(namespace("vault", {"tier": "none"}))
        await drain(engine, clock)
        await engine.flush_status()
        status = kube.statuses[("WorkloadIdentity", "vault", "api")]
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "NamespaceNotAllowed"
        assert "stay valid until they expire" in ready["message"]
        assert "trustwarden revoke -n vault --identity api" in ready["message"]
        assert kube.statuses[("TrustDomain", None, "bank")]["issued"] == 0
        assert engine.domains["bank"].revocations == {}
        # The emergency lever still works, without a replacement.
        secret = kube.objects[("Secret", "vault", "api-svid")]
        secret["metadata"]["annotations"]["trustwarden.io/revoke"] = "left the domain"
        secret["metadata"]["resourceVersion"] = kube._next_rv()
        engine.observe_secret(copy.deepcopy(secret))
        await drain(engine, clock)
        assert serial in engine.domains["bank"].revocations
        again = kube.objects[("Secret", "vault", "api-svid")]
        assert again["metadata"]["annotations"]["trustwarden.io/serial"] == format(serial, "x")

    asyncio.run(scenario())


def test_a_pod_admitted_before_admission_tags_existed_keeps_being_renewed() -> None:
    """Upgrade path: a pod the previous version injected (no tag) whose Secret trustwarden
    issued to it (the ledger says so) is still served; the same pod without that history is
    refused."""

    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = make_engine(kube, clock)
        world(engine)
        engine.scheduler.schedule(("td", "prod"), clock())
        tagged = _pod(
            "old",
            "u-old",
            "pods-svid-old",
            {"trustwarden.io/admission": ADMISSION_KEY.tag("shop", "pods", "pods-svid-old")},
        )
        kube.objects[("Pod", "shop", "old")] = tagged
        engine.observe_pod(tagged)
        await drain(engine, clock)
        first = kube.objects[("Secret", "shop", "pods-svid-old")]["metadata"]["annotations"]
        # The previous version wrote no tag: drop it, as if admitted back then.
        legacy = copy.deepcopy(tagged)
        del legacy["metadata"]["annotations"]["trustwarden.io/admission"]
        kube.objects[("Pod", "shop", "old")] = legacy
        engine.observe_pod(legacy)
        clock.advance(timedelta(minutes=45))  # past renewAt of the 1h certificate
        engine.scheduler.schedule(("pod", "shop", "old"), clock())
        await drain(engine, clock)
        renewed = kube.objects[("Secret", "shop", "pods-svid-old")]["metadata"]["annotations"]
        assert renewed["trustwarden.io/serial"] != first["trustwarden.io/serial"]
        assert not [e for e in kube.events if e[2] == "NotAdmitted"]

    asyncio.run(scenario())


def _admitted_pod(name: str, uid: str) -> dict[str, Any]:
    secret = f"pods-svid-{name}"
    return _pod(
        name,
        uid,
        secret,
        {"trustwarden.io/admission": ADMISSION_KEY.tag("shop", "pods", secret)},
    )


def _edit_pod_annotations(engine: Engine, kube: FakeKube, name: str, **edits: str | None) -> None:
    pod = copy.deepcopy(kube.objects[("Pod", "shop", name)])
    annotations = pod["metadata"]["annotations"]
    for key, value in edits.items():
        wire = f"trustwarden.io/{key}"
        if value is None:
            annotations.pop(wire, None)
        else:
            annotations[wire] = value
    pod["metadata"]["resourceVersion"] = kube._next_rv()
    kube.objects[("Pod", "shop", name)] = pod
    engine.observe_pod(copy.deepcopy(pod))


def test_editing_a_pods_secret_annotation_after_admission_does_not_skip_its_revocation() -> None:
    """Revocation bypass: the pod's owner renames or removes trustwarden.io/secret after
    admission, then deletes the pod. What the operator recorded at admission decides."""

    async def scenario() -> None:
        for edit in ("renamed", None):
            kube, clock = FakeKube(), FakeClock()
            engine = make_engine(kube, clock)
            world(engine)
            for domain in ("bank", "prod"):
                engine.scheduler.schedule(("td", domain), clock())
            body = _admitted_pod("p1", "u-p1")
            kube.objects[("Pod", "shop", "p1")] = body
            engine.observe_pod(copy.deepcopy(body))
            await drain(engine, clock)
            secret = kube.objects[("Secret", "shop", "pods-svid-p1")]
            serial = int(secret["metadata"]["annotations"]["trustwarden.io/serial"], 16)
            _edit_pod_annotations(engine, kube, "p1", secret=edit)
            await drain(engine, clock)
            engine.forget_pod(kube.objects.pop(("Pod", "shop", "p1")))
            await drain(engine, clock)
            assert serial in engine.domains["prod"].revocations, f"edit={edit!r}: not revoked"
            assert ("Secret", "shop", "pods-svid-p1") not in kube.objects or kube.objects[
                ("Secret", "shop", "pods-svid-p1")
            ]["metadata"].get("deletionTimestamp"), f"edit={edit!r}: Secret left behind"

    asyncio.run(scenario())


def test_an_edited_secret_annotation_after_a_restart_still_revokes_by_the_ledger() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        first = make_engine(kube, clock)
        world(first)
        for domain in ("bank", "prod"):
            first.scheduler.schedule(("td", domain), clock())
        body = _admitted_pod("p2", "u-p2")
        kube.objects[("Pod", "shop", "p2")] = body
        first.observe_pod(copy.deepcopy(body))
        await drain(first, clock)
        await first.flush()
        serial = int(
            kube.objects[("Secret", "shop", "pods-svid-p2")]["metadata"]["annotations"][
                "trustwarden.io/serial"
            ],
            16,
        )
        second = make_engine(kube, clock)
        world(second)
        for (kind, _ns, name), obj in list(kube.objects.items()):
            if kind == "Secret":
                second.observe_secret(obj)
            elif kind == "ConfigMap" and name.startswith("trustwarden-ledger"):
                second.observe_ledger(obj)
        for domain in ("bank", "prod"):
            second.scheduler.schedule(("td", domain), clock())
        await drain(second, clock)
        _edit_pod_annotations(second, kube, "p2", secret=None)
        await drain(second, clock)
        second.forget_pod(kube.objects.pop(("Pod", "shop", "p2")))
        await drain(second, clock)
        assert serial in second.domains["prod"].revocations

    asyncio.run(scenario())


def test_a_revocation_list_already_large_at_start_up_degrades_at_once() -> None:
    """The Degraded condition and the metrics are evaluated when the stored list is loaded, not
    only on the next write (which, with nothing new to revoke, never comes)."""

    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        first = await issued_world(kube, clock)
        runtime = first.domains["prod"]
        authority = runtime.active()
        assert authority is not None
        for serial in range(1, 3500):
            runtime.revoke(
                serial,
                authority.sha256,
                clock() + timedelta(hours=1),
                clock(),
                "x",
                namespace="shop",
            )
        first.dirty_revocations.add("prod")
        await drain(first, clock)
        kube.events.clear()
        second = make_engine(kube, clock)
        world(second)
        for (kind, _ns, _name), obj in list(kube.objects.items()):
            if kind == "Secret":
                second.observe_secret(obj)
        stored = ("ConfigMap", OPNS, "trustwarden-revocations-prod")
        version = kube.objects[stored]["metadata"]["resourceVersion"]
        second.scheduler.schedule(("td", "prod"), clock())
        await drain(second, clock)
        await second.flush_status()
        # Nothing new was revoked, so the list was not written again: the check ran on load.
        assert kube.objects[stored]["metadata"]["resourceVersion"] == version
        status = kube.statuses[("TrustDomain", None, "prod")]
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert degraded["status"] == "True" and degraded["reason"] == "RevocationListLarge"
        assert any(e[2] == "RevocationListLarge" for e in kube.events)
        entries = second.metrics.registry.get_sample_value(
            "trustwarden_revocation_entries", {"trust_domain": "prod.example.org"}
        )
        assert entries == 3499

    asyncio.run(scenario())


def test_a_handmade_secret_asking_for_revocation_is_told_nothing_was_revoked() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued_world(kube, clock)
        before = victim_state(kube)
        handmade_secret(engine, kube, "forged", pem(victim_leaf(kube)), "uid-x", "web")
        await drain(engine, clock)
        refused = [e for e in kube.events if e[0].name == "forged" and e[0].kind == "Secret"]
        assert [e[2] for e in refused] == ["RevocationRefused"]
        assert "nothing was revoked" in refused[0][3]
        assert victim_state(kube) == before
        # The tenant's own Secret asking for revocation is answered by its identity instead.
        tamper_own_secret(engine, kube, pem(victim_leaf(kube)))
        await drain(engine, clock)
        assert not [e for e in kube.events if e[0].kind == "Secret" and e[0].name == "web-svid"]

    asyncio.run(scenario())


def test_a_tenant_looping_on_emergency_revocation_cannot_fill_the_domains_list() -> None:
    """Each emergency revocation of a live owner is answered with a fresh certificate, so a
    loop on one's own Secret adds an entry per turn. Past EMERGENCY_PER_NAMESPACE the request
    is refused with a reason (the Secret still gets a fresh certificate); revocation on
    deletion is not capped."""
    from trustwarden.reconcile.revocationquota import EMERGENCY_PER_NAMESPACE

    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        engine = await issued_world(kube, clock)
        runtime = engine.domains["prod"]
        authority = runtime.active()
        assert authority is not None

        def revoke_own() -> int:
            secret = kube.objects[("Secret", "shop", "web-svid")]
            serial = int(secret["metadata"]["annotations"]["trustwarden.io/serial"], 16)
            secret["metadata"]["annotations"]["trustwarden.io/revoke"] = "loop"
            secret["metadata"]["resourceVersion"] = kube._next_rv()
            engine.observe_secret(copy.deepcopy(secret))
            return serial

        for _ in range(3):  # the real path, a few turns
            serial = revoke_own()
            await drain(engine, clock)
            assert serial in runtime.revocations
        for filler in range(1, EMERGENCY_PER_NAMESPACE - 2):  # the rest of the loop, quickly
            runtime.revoke(
                filler,
                authority.sha256,
                clock() + timedelta(hours=1),
                clock(),
                "Emergency",
                namespace="shop",
            )
        held = len(runtime.revocations)
        serial = revoke_own()
        await drain(engine, clock)
        assert serial not in runtime.revocations and len(runtime.revocations) == held
        notes = [e[3] for e in kube.events if e[2] == "RevocationQuotaExceeded"]
        assert notes and "was NOT revoked" in notes[0] and "namespace shop" in notes[0]
        annotations = kube.objects[("Secret", "shop", "web-svid")]["metadata"]["annotations"]
        assert annotations["trustwarden.io/serial"] != format(serial, "x")  # a fresh one
        assert "trustwarden.io/revoke" not in annotations
        # Deleting the owner still revokes what it holds.
        current = int(annotations["trustwarden.io/serial"], 16)
        engine.forget_workload_identity("shop", "web")
        await drain(engine, clock)
        assert current in runtime.revocations

    asyncio.run(scenario())
