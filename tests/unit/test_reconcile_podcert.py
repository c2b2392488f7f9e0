"""The PodCertificateRequest policy (reconcile/podcert.py): which identity, refusals, lifetime."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from trustwarden.pki.ca import create_self_signed_ca
from trustwarden.pki.issue import sign_public_key
from trustwarden.pki.renewal import jitter_fraction
from trustwarden.reconcile import podcert
from trustwarden.reconcile.model import TrustDomainSpec, WorkloadIdentitySpec

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
CA = create_self_signed_ca("prod.example.org", ttl=timedelta(days=90), now=NOW - timedelta(days=1))
KEY = ec.generate_private_key(ec.SECP256R1())


def stub_csr(key: Any = KEY) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stub")])
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    der = builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)
    return base64.b64encode(der).decode()


def pcr(**spec: Any) -> podcert.PCRInfo:
    body = {
        "metadata": {"namespace": "shop", "name": "web-1-abc", "uid": "pcr-uid", "generation": 1},
        "spec": {
            "signerName": "trustwarden.io/prod",
            "podName": "web-1",
            "podUID": "pod-uid-1",
            "serviceAccountName": "web",
            "nodeName": "node-a",
            "maxExpirationSeconds": 86400,
            "stubPKCS10Request": stub_csr(),
            "unverifiedUserAnnotations": {"trustwarden.io/identity": "admin"},
            **spec,
        },
    }
    return podcert.PCRInfo.from_body(body)


def identity(name: str = "web", **spec: Any) -> WorkloadIdentitySpec:
    return WorkloadIdentitySpec.from_body(
        {
            "metadata": {"namespace": "shop", "name": name, "uid": f"wid-{name}"},
            "spec": {
                "trustDomain": "prod",
                "podSelector": {"matchLabels": {"app": "web"}},
                "spiffeID": "/ns/{namespace}/sa/{serviceAccount}/{pod.name}",
                "dnsNames": ["{pod.name}.{namespace}.pod"],
                "ttl": "2h",
                "delivery": {"mode": "PodCertificate"},
                **spec,
            },
        }
    )


def domain(**policy: Any) -> podcert.DomainView:
    spec = TrustDomainSpec.from_body(
        {
            "metadata": {"name": "prod"},
            "spec": {
                "trustDomain": "prod.example.org",
                "ca": {"selfSigned": {}},
                "policy": {"maxTTL": "24h", **policy},
            },
        }
    )
    return podcert.DomainView(spec, CA)


def decide(
    request: podcert.PCRInfo | None = None,
    identities: list[WorkloadIdentitySpec] | None = None,
    view: podcert.DomainView | None = None,
    labels: dict[str, str] | None = None,
    ns_labels: dict[str, str] | None = None,
) -> podcert.Issue | podcert.Refusal:
    return podcert.decide(
        request or pcr(),
        pod_labels={"app": "web"} if labels is None else labels,
        identities=[identity()] if identities is None else identities,
        domain=view or domain(),
        namespace_labels=ns_labels or {},
        cluster_domain="cluster.local",
        now=NOW,
        max_jitter_fraction=0.1,
    )


def test_names_follow_the_api_rules() -> None:
    assert podcert.signer_name("prod") == "trustwarden.io/prod"
    assert podcert.domain_of("trustwarden.io/prod") == "prod"
    assert podcert.domain_of("example.com/prod") is None
    assert podcert.domain_of("trustwarden.io/") is None
    assert podcert.bundle_name("prod") == "trustwarden.io:prod:anchors"


def test_issue_renders_templates_from_the_pcr_and_bounds_the_lifetime() -> None:
    plan = decide()
    assert isinstance(plan, podcert.Issue)
    assert plan.request.spiffe_id.uri == "spiffe://prod.example.org/ns/shop/sa/web/web-1"
    assert plan.request.dns_names == ("web-1.shop.pod",)
    # min(24h maxExpiration, 2h ttl, 24h maxTTL, 90d/6): the ttl, back-dated by 2 minutes
    # (the API server wants notBefore within 5 minutes of its clock).
    assert plan.lifetime == timedelta(hours=2)
    assert plan.not_before == NOW - podcert.PCR_BACKDATE == NOW - timedelta(minutes=2)
    usable = plan.not_after - NOW
    jitter = usable * 0.1 * jitter_fraction("pod-uid-1")
    assert abs(plan.begin_refresh_at - (NOW + usable / 2 - jitter)) <= timedelta(seconds=1)


def test_max_expiration_bounds_the_whole_span_including_the_backdate() -> None:
    plan = decide(pcr(maxExpirationSeconds=3600), [identity(ttl="12h")])
    assert isinstance(plan, podcert.Issue)
    assert plan.not_after - plan.not_before == timedelta(hours=1)


def test_lifetime_under_the_api_minimum_is_denied_with_its_source() -> None:
    refusal = decide(view=domain(maxTTL="30m"))
    assert isinstance(refusal, podcert.Refusal)
    assert (refusal.condition, refusal.reason) == (podcert.DENIED, podcert.LIFETIME_TOO_SHORT)
    assert "spec.policy.maxTTL" in refusal.message and "1h" in refusal.message


def test_an_issuer_about_to_expire_fails_instead_of_issuing_short() -> None:
    old = create_self_signed_ca(
        "prod.example.org",
        ttl=timedelta(days=30),
        now=NOW - timedelta(days=30) + timedelta(minutes=30),
    )
    view = podcert.DomainView(domain().spec, old)
    refusal = decide(view=view)
    assert isinstance(refusal, podcert.Refusal)
    assert (refusal.condition, refusal.reason) == (podcert.FAILED, podcert.ISSUER_EXPIRING)


def test_no_identity_says_what_to_create() -> None:
    refusal = decide(labels={"app": "db"})
    assert isinstance(refusal, podcert.Refusal)
    assert refusal.reason == podcert.NO_IDENTITY
    assert "PodCertificate" in refusal.message and "app=db" in refusal.message


def test_identities_of_other_modes_namespaces_and_domains_do_not_count() -> None:
    others = [
        identity("perpod", delivery={"mode": "PerPod"}),
        identity("other-domain", trustDomain="staging"),
    ]
    refusal = decide(identities=others)
    assert isinstance(refusal, podcert.Refusal) and refusal.reason == podcert.NO_IDENTITY


def test_unverified_user_annotations_never_choose() -> None:
    # The PCR's annotations name "admin"; two identities select the pod: still ambiguous.
    refusal = decide(identities=[identity("web"), identity("admin")])
    assert isinstance(refusal, podcert.Refusal)
    assert refusal.reason == podcert.AMBIGUOUS_IDENTITY
    assert "admin, web" in refusal.message


def test_namespace_outside_allowed_namespaces_is_denied() -> None:
    view = domain(allowedNamespaces={"matchLabels": {"tier": "prod"}})
    refusal = decide(view=view, ns_labels={"tier": "dev"})
    assert isinstance(refusal, podcert.Refusal) and refusal.reason == podcert.NAMESPACE_NOT_ALLOWED
    assert isinstance(decide(view=view, ns_labels={"tier": "prod"}), podcert.Issue)


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP384R1()), ed25519.Ed25519PrivateKey.generate()],
    ids=["p384", "ed25519"],
)
def test_key_type_not_allowed_is_unsupported_key_type(key: Any) -> None:
    refusal = decide(pcr(stubPKCS10Request=stub_csr(key)))
    assert isinstance(refusal, podcert.Refusal)
    assert (refusal.condition, refusal.reason) == (podcert.DENIED, "UnsupportedKeyType")
    assert "ECDSAP256" in refusal.message


def test_weak_rsa_key_is_unsupported_key_type() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    refusal = decide(pcr(stubPKCS10Request=stub_csr(weak)), [identity(keyAlgorithm="RSA2048")])
    assert isinstance(refusal, podcert.Refusal) and refusal.reason == "UnsupportedKeyType"


def test_dns_name_outside_the_namespace_is_denied() -> None:
    refusal = decide(identities=[identity(dnsNames=["api.other.svc"])])
    assert isinstance(refusal, podcert.Refusal) and refusal.reason == "DNSNameNotAllowed"


def test_trust_domain_conflict_is_denied() -> None:
    view = podcert.DomainView(domain().spec, CA, conflict="older")
    refusal = decide(view=view)
    assert isinstance(refusal, podcert.Refusal) and refusal.reason == podcert.TRUST_DOMAIN_CONFLICT


def test_garbage_csr_is_denied() -> None:
    refusal = decide(pcr(stubPKCS10Request=base64.b64encode(b"nope").decode()))
    assert isinstance(refusal, podcert.Refusal) and refusal.reason == podcert.INVALID_REQUEST


def test_issued_status_carries_chain_times_and_condition() -> None:
    plan = decide()
    assert isinstance(plan, podcert.Issue)
    cert = sign_public_key(CA, plan.request, plan.public_key, plan.not_before, plan.not_after, 7)
    status = podcert.issued_status(pcr(), plan, cert, CA.issuing_chain_pem, NOW)
    chain = x509.load_pem_x509_certificates(status["certificateChain"].encode())
    assert chain[0].not_valid_after_utc == plan.not_after
    assert status["notBefore"] == "2026-12-02T11:58:00Z"
    assert status["conditions"][0]["type"] == "Issued"
    refusal = podcert.Refusal(podcert.DENIED, podcert.NO_IDENTITY, "x")
    assert podcert.refused_status(pcr(), refusal, NOW)["conditions"][0]["reason"] == "NoIdentity"


def test_terminal_outcome_is_read_back() -> None:
    body = {
        "metadata": {"namespace": "a", "name": "b"},
        "spec": {},
        "status": {"conditions": [{"type": "Denied", "status": "True"}]},
    }
    assert podcert.PCRInfo.from_body(body).outcome == "Denied"


def test_inventory_lists_issued_pod_certificates_with_pod_owner_serial_expiry() -> None:
    from trustwarden.ops.inventory import build_pod_certificate_rows

    plan = decide()
    assert isinstance(plan, podcert.Issue)
    cert = sign_public_key(CA, plan.request, plan.public_key, plan.not_before, plan.not_after, 0xAB)
    request = pcr()
    body = {
        "metadata": {"namespace": "shop", "name": "web-1-abc"},
        "spec": {"signerName": "trustwarden.io/prod", "podName": "web-1"},
        "status": podcert.issued_status(request, plan, cert, CA.issuing_chain_pem, NOW),
    }
    other = {**body, "spec": {"signerName": "example.com/x", "podName": "web-1"}}
    wid = {"metadata": {"namespace": "shop", "name": "web"}, "spec": {"owner": "team-web"}}
    rows = build_pod_certificate_rows([body, other], [wid], [], [], NOW)
    assert len(rows) == 1
    row = rows[0]
    assert (row.secret, row.pod, row.identity, row.owner) == (
        "pcr/web-1-abc",
        "web-1",
        "web",
        "team-web",
    )
    assert row.serial.replace(":", "").lower().lstrip("0") == "ab"
    assert row.not_after == plan.not_after and row.next_renewal == plan.begin_refresh_at
    assert row.state.value == "ok"


def test_older_cluster_keeps_the_secret_path_and_reports_the_signer_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio
    from types import SimpleNamespace

    from trustwarden.metrics import Metrics
    from trustwarden.reconcile.podcerts import PodCertificates
    from trustwarden.reconcile.settings import EngineConfig

    class OldCluster:
        def __init__(self) -> None:
            self.asked: list[str] = []

        async def served_resources(self, path: str) -> set[str] | None:
            self.asked.append(path)
            return {"certificatesigningrequests"}  # certificates.k8s.io/v1 before 1.37

    wid = identity()
    engine = SimpleNamespace(
        config=EngineConfig(),
        started=True,
        domains={"prod": object()},
        wids={("shop", "web"): wid},
        namespaces={},
        dirty_status=set(),
        anchor_gates=[],
        status_extras=None,
    )
    kube = OldCluster()
    controller = PodCertificates(kube, engine, Metrics())  # type: ignore[arg-type]
    with caplog.at_level("WARNING"):
        asyncio.run(controller.run())
    assert kube.asked == ["/apis/certificates.k8s.io/v1"]
    assert [r.message for r in caplog.records if "unavailable" in r.message][:1]
    assert engine.anchor_gates == []  # rotation is never held back by a bundle never written
    assert ("td", "", "prod") in engine.dirty_status
    signer = engine.status_extras("td", "", "prod")["signer"]
    assert signer["available"] is False and "1.37" in signer["message"]
    extra = engine.status_extras("wid", "shop", "web")
    assert extra["denial"][0] == "SignerUnavailable"


def test_a_signer_without_rbac_says_why_and_never_holds_back_ca_activation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RBAC without the pod-certificate rules: listing PodCertificateRequests is forbidden.
    The signer stops, says so in the log and the TrustDomain status, and removes its
    ClusterTrustBundle gate, so a recovering or rotating CA still activates."""
    import asyncio
    from collections.abc import AsyncIterator
    from types import SimpleNamespace

    from trustwarden.metrics import Metrics
    from trustwarden.reconcile.podcerts import PodCertificates
    from trustwarden.reconcile.podcerts import controller as controller_mod
    from trustwarden.reconcile.ports import ListPage
    from trustwarden.reconcile.settings import EngineConfig

    class Forbidden(Exception):
        pass

    class NoRbac:
        async def served_resources(self, path: str) -> set[str] | None:
            return {"podcertificaterequests", "clustertrustbundles"}

        async def list_pages(self, kind: str, **_: Any) -> AsyncIterator[ListPage]:
            if kind == "PodCertificateRequest":
                raise Forbidden('podcertificaterequests is forbidden: User "tw" cannot list')
            yield ListPage([], "1")

    engine = SimpleNamespace(
        config=EngineConfig(),
        started=True,
        domains={"prod": object()},
        wids={},
        namespaces={},
        dirty_status=set(),
        anchor_gates=[],
        status_extras=None,
    )
    controller = PodCertificates(NoRbac(), engine, Metrics())  # type: ignore[arg-type]

    async def scenario() -> None:
        task = asyncio.create_task(controller.run())
        for _ in range(200):
            await asyncio.sleep(0.01)
            if controller.available is False:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level("ERROR"):
        asyncio.run(scenario())
    assert engine.anchor_gates == []
    signer = engine.status_extras("td", "", "prod")["signer"]
    assert signer["available"] is False
    assert "forbidden" in signer["message"] and "RBAC" in signer["message"]
    assert any("pod certificates" in r.getMessage() for r in caplog.records)
    assert controller_mod.RESTART_SECONDS > 0


def _ctb(pem: str, *, version: str = "1") -> dict[str, Any]:
    from trustwarden.reconcile.podcerts.trust_bundles import desired_body

    body = desired_body("prod", pem)
    body["metadata"]["resourceVersion"] = version
    return body


def test_a_cluster_trust_bundle_edited_or_deleted_by_hand_is_seen_and_rewritten() -> None:
    """The anchor gate follows what the ClusterTrustBundle really holds: an anchor removed by
    hand holds its authority back until the next sync publishes it again."""
    import asyncio
    from types import SimpleNamespace

    from cryptography.hazmat.primitives.serialization import Encoding

    from trustwarden.pki._x509util import sha256_hex
    from trustwarden.reconcile.podcerts.trust_bundles import TrustBundlePublisher

    class Kube:
        def __init__(self) -> None:
            self.written: list[str] = []

        async def create(self, kind: str, namespace: str, body: Any) -> Any:
            self.written.append(body["spec"]["trustBundle"])
            return {**body, "metadata": {**body["metadata"], "resourceVersion": "2"}}

        async def replace(self, kind: str, namespace: str, name: str, body: Any) -> Any:
            return await self.create(kind, namespace, body)

    kube = Kube()
    publisher = TrustBundlePublisher(kube)  # type: ignore[arg-type]
    pem = CA.certificate.public_bytes(Encoding.PEM).decode()
    sha = sha256_hex(CA.certificate)
    runtime = SimpleNamespace(name="prod")
    assert publisher.observe(_ctb(pem))  # the listing: new to us
    assert publisher.published(runtime, sha)  # type: ignore[arg-type]
    assert not publisher.observe(_ctb(pem, version="2"))  # an echo changes nothing
    assert publisher.observe(_ctb("", version="3"))  # emptied by hand
    assert not publisher.published(runtime, sha)  # type: ignore[arg-type]
    publisher.forget(_ctb(pem))
    assert "trustwarden.io:prod" not in " ".join(publisher.stored)
    assert not publisher.published(runtime, sha)  # type: ignore[arg-type]
    domain_runtime = SimpleNamespace(
        name="prod", conflict=None, loaded=True, issues=True, anchors=lambda now: (CA.certificate,)
    )
    asyncio.run(publisher.sync([domain_runtime], NOW))  # type: ignore[list-item]
    assert len(kube.written) == 1  # written back once, holding exactly the CA's anchor
    written = x509.load_pem_x509_certificates(kube.written[0].encode())
    assert [sha256_hex(c) for c in written] == [sha]
    assert publisher.published(runtime, sha)  # type: ignore[arg-type]


def test_a_bundle_sync_survives_the_watch_forgetting_what_it_deletes() -> None:
    """A stale ClusterTrustBundle (its TrustDomain is gone) is deleted by the sync; the watch can
    report that deletion, and forget the name, before the DELETE call returns. The sync must
    not fail then: it did stop the whole signer once (KeyError on the bundle's name)."""
    import asyncio

    from cryptography.hazmat.primitives.serialization import Encoding

    from trustwarden.reconcile.podcerts.trust_bundles import TrustBundlePublisher

    pem = CA.certificate.public_bytes(Encoding.PEM).decode()

    class Kube:
        def __init__(self) -> None:
            self.deleted: list[str] = []

        async def delete(
            self, kind: str, namespace: str, name: str, *, uid: str | None = None
        ) -> bool:
            self.deleted.append(name)
            publisher.forget(_ctb(pem))  # the watch's DELETED event, handled meanwhile
            await asyncio.sleep(0)
            return True

    kube = Kube()
    publisher = TrustBundlePublisher(kube)  # type: ignore[arg-type]
    publisher.observe(_ctb(pem))  # listed at start; no TrustDomain "prod" any more
    asyncio.run(publisher.sync([], NOW))
    assert kube.deleted == [_ctb(pem)["metadata"]["name"]]
    assert publisher.stored == {} and publisher.versions == {} and publisher.shas == {}
    assert publisher.writes == 1


def test_status_counts_of_pod_certificates_survive_a_restart() -> None:
    """After a start the live pods holding a ledger serial count as issued at once."""
    from types import SimpleNamespace

    from trustwarden.metrics import Metrics
    from trustwarden.reconcile.ledger import LedgerEntry
    from trustwarden.reconcile.podcerts import PodCertificates
    from trustwarden.reconcile.podcerts.views import PodSeen
    from trustwarden.reconcile.settings import EngineConfig

    web = identity()
    other = identity("db", podSelector={"matchLabels": {"app": "db"}})
    engine = SimpleNamespace(
        config=EngineConfig(),
        started=True,
        domains={},
        wids={("shop", "web"): web, ("shop", "db"): other},
        namespaces={},
        dirty_status=set(),
        anchor_gates=[],
        status_extras=None,
    )
    controller = PodCertificates(object(), engine, Metrics(), clock=lambda: NOW)  # type: ignore[arg-type]
    controller.pods[("shop", "w0")] = PodSeen("uid-w0", {"app": "web"})
    controller.pods[("shop", "w1")] = PodSeen("uid-w1", {"app": "web"})  # no serial yet
    controller.pods[("shop", "w2")] = PodSeen("uid-w2", {"app": "web"})  # expired serial
    for uid, not_after in (("uid-w0", NOW + timedelta(hours=1)), ("uid-w2", NOW)):
        controller.ledger.record(
            "shop", LedgerEntry(len(uid) + ord(uid[-1]), uid, not_after, "prod", "x")
        )
    controller._recover_pod_identities()
    assert controller.pod_identity == {"uid-w0": ("shop", "web")}
    assert ("wid", "shop", "web") in engine.dirty_status
    extra = controller.status_extras("wid", "shop", "web")
    assert extra is not None and (extra["selectedPods"], extra["issued"]) == (1, 1)


def test_a_serial_signed_just_before_a_crash_is_recorded_from_its_request() -> None:
    """Only what an authority of the domain provably signed, for a SPIFFE ID of the
    request's namespace, enters the ledger; a forged or foreign chain never does."""
    from types import SimpleNamespace

    from trustwarden.pki import rotation
    from trustwarden.reconcile.ledger import Ledger
    from trustwarden.reconcile.podcerts.recovery import backfill_ledger

    plan = decide()
    assert isinstance(plan, podcert.Issue)
    cert = sign_public_key(CA, plan.request, plan.public_key, plan.not_before, plan.not_after, 7)
    request = pcr()

    def body(chain: str, namespace: str = "shop") -> dict[str, Any]:
        status = podcert.issued_status(request, plan, cert, CA.issuing_chain_pem, NOW)
        return {
            "metadata": {"namespace": namespace, "name": "web-1-abc"},
            "spec": {"signerName": "trustwarden.io/prod", "podUID": "pod-uid-1"},
            "status": {**status, "certificateChain": chain},
        }

    genuine = podcert.issued_status(request, plan, cert, CA.issuing_chain_pem, NOW)
    record = rotation.AuthorityRecord(CA, rotation.AuthorityState.Active, activated_at=NOW)
    runtime = SimpleNamespace(name="prod", authorities=rotation.AuthoritySet((record,)))
    other_ca = create_self_signed_ca("prod.example.org", ttl=timedelta(days=90), now=NOW)
    forged = sign_public_key(
        other_ca, plan.request, plan.public_key, plan.not_before, plan.not_after, 7
    )
    forged_pem = forged.public_bytes(serialization.Encoding.PEM).decode()
    ledger = Ledger()
    listed = [
        body(genuine["certificateChain"]),
        body(genuine["certificateChain"], namespace="other"),  # copied into another namespace
        body(forged_pem),  # a look-alike signed by someone else's key
        body("not a certificate"),
    ]
    assert backfill_ledger(ledger, listed, {"prod": runtime}, NOW) == 1  # type: ignore[dict-item]
    entry = ledger.entry("shop", cert.serial_number)
    assert entry is not None and entry.owner_uid == "pod-uid-1" and entry.domain == "prod"
    assert entry.issuer_sha256 == CA.sha256
    assert not ledger.owned_by("other", "pod-uid-1")
    # Already recorded (or expired): nothing is recorded twice.
    assert backfill_ledger(ledger, listed[:1], {"prod": runtime}, NOW) == 0  # type: ignore[dict-item]
    assert backfill_ledger(Ledger(), listed[:1], {"prod": runtime}, plan.not_after) == 0  # type: ignore[dict-item]


def _pod_body(name: str, uid: str, volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": name, "uid": uid, "labels": {"app": "web"}},
        "spec": {"volumes": volumes},
    }


def _projected(signer: str) -> dict[str, Any]:
    return {"name": "svid", "projected": {"sources": [{"podCertificate": {"signerName": signer}}]}}


def test_only_pods_that_can_hold_our_pod_certificates_are_kept() -> None:
    """The signer watches every pod, but keeps only those mounting a volume of one of our
    signers, or holding a serial of ours: a Secret-only pod costs it nothing."""
    from types import SimpleNamespace

    from trustwarden.metrics import Metrics
    from trustwarden.reconcile.ledger import LedgerEntry
    from trustwarden.reconcile.podcerts import PodCertificates
    from trustwarden.reconcile.settings import EngineConfig

    engine = SimpleNamespace(
        config=EngineConfig(), started=True, domains={}, wids={}, namespaces={},
        dirty_status=set(), anchor_gates=[], status_extras=None,
    )  # fmt: skip
    controller = PodCertificates(object(), engine, Metrics(), clock=lambda: NOW)  # type: ignore[arg-type]
    secret_pod = _pod_body("s", "uid-s", [{"name": "trustwarden-svid", "secret": {}}])
    foreign = _pod_body("f", "uid-f", [_projected("example.com/other")])
    ours = _pod_body("n", "uid-n", [_projected("trustwarden.io/prod")])
    other = _pod_body("n2", "uid-n2", [_projected("trustwarden.io/prod")])
    recorded = _pod_body("r", "uid-r", [])
    controller.ledger.record("shop", LedgerEntry(9, "uid-r", NOW + timedelta(hours=1), "prod", "x"))
    for body in (secret_pod, foreign, ours, other, recorded):
        controller._pod_seen(body)
    assert set(controller.pods) == {("shop", "n"), ("shop", "n2"), ("shop", "r")}
    assert controller.pods[("shop", "n")].uid == "uid-n"
    # Pods with the same labels share one mapping.
    assert controller.pods[("shop", "n")].labels is controller.pods[("shop", "n2")].labels
    assert not podcert.mounts_our_signer(secret_pod) and not podcert.mounts_our_signer(foreign)
    assert podcert.mounts_our_signer(ours)
    assert not podcert.mounts_our_signer({"spec": {"volumes": [{"projected": None}]}})
    # A pod not kept still has its serials revoked when it goes (the event carries its UID).
    revoked: list[int] = []
    engine.revoke_issued = lambda ns, entry, reason: revoked.append(entry.serial)
    controller.ledger.record(
        "shop", LedgerEntry(11, "uid-s", NOW + timedelta(hours=1), "prod", "x")
    )
    controller.ready.set()
    controller._pod_deleted(secret_pod)
    assert revoked == [11]
    # Once its serial is recorded, a pod without our volume is kept at its next event.
    controller._pod_seen(secret_pod)
    assert ("shop", "s") not in controller.pods  # its serial was revoked and forgotten
    controller.ledger.record(
        "shop", LedgerEntry(12, "uid-s", NOW + timedelta(hours=1), "prod", "x")
    )
    controller._pod_seen(secret_pod)
    assert ("shop", "s") in controller.pods
