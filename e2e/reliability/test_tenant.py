"""A tenant attacks the operator (issue 15), on the real control plane, as a real attacker would:
with a TokenRequest token of a ServiceAccount whose Role allows pods, secrets, configmaps and
workloadidentities in its own namespace only (plus reading its own namespace's Events, as
`kubectl describe` needs). Never as admin: admin only sets the world up (TrustDomains,
namespaces, the victim) and plays the parts a tenant cannot (a second TrustDomain, a namespace
label), which the issue names.

The victim lives in TrustDomain `tenbank`, whose allowedNamespaces excludes the tenant. One
operator, one victim and one tenant serve the whole module. Every test asserts:
- the attack failed, and nothing of the victim changed: Secrets (resourceVersion and serial),
  the stored revocation list, the CRL in the victim's bundle, the bundle itself, the victim
  identities' and TrustDomain's status;
- the tenant was told why: a condition, an Event in its namespace, or an API error.

PYTEST_DONT_REWRITE: asserts carry their own messages, so a failure never prints Secret data.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.reliability.conftest import OPNS, OperatorSlot, make_namespace
from e2e.reliability.controlplane import OPERATOR_USER
from e2e.reliability.harness import INJECT, Results, pod_body
from e2e.support import (
    GROUP,
    VERSION,
    Cluster,
    apply_yaml,
    bundle_data,
    condition,
    custom,
    get_td,
    get_wid,
    secret_data,
    serial_of,
    unique,
    wait_for,
)

VICTIM_DOMAIN = "tenbank"
VICTIM_TD = "tenbank.example.org"
ATTACKER = "attacker"
WIDS = "workloadidentities"


# ----------------------------------------------------------------------------- the tenant


@dataclass
class Tenant:
    """The attacker's own client: a ServiceAccount token, nothing else."""

    namespace: str
    api: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def create_wid(self, name: str, spec: dict[str, Any], namespace: str | None = None) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "WorkloadIdentity",
            "metadata": {"name": name},
            "spec": spec,
        }
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace or self.namespace, WIDS, body
        )

    def delete_wid(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, WIDS, name)

    def wid(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace or self.namespace, WIDS, name
            )
        )

    def secret(self, name: str) -> Any:
        return self.core.read_namespaced_secret(name, self.namespace)

    def events(self, name: str, namespace: str | None = None) -> list[tuple[str, str]]:
        items = (
            client.EventsV1Api(self.api).list_namespaced_event(namespace or self.namespace).items
        )
        return [
            (e.reason or "", e.note or "")
            for e in items
            if e.regarding is not None and e.regarding.name == name
        ]

    def wait_event(self, name: str, reason: str, namespace: str | None = None) -> str:
        notes = wait_for(
            lambda: [n for r, n in self.events(name, namespace) if r == reason],
            timeout=60,
            what=f"Event {reason} about {name} in the tenant's namespace",
        )
        return str(notes[0])

    def wait_ready(self, name: str, status: str, reason: str | None = None) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.wid(name)
            ready = condition(obj, "Ready")
            if ready is None or ready["status"] != status:
                return None
            if reason is not None and ready["reason"] != reason:
                return None
            return ready

        return dict(wait_for(probe, timeout=60, what=f"{name}: Ready={status} {reason or ''}"))

    def pod(self, name: str, labels: dict[str, str], **extra: Any) -> Any:
        body = pod_body(name, labels)
        for key, value in extra.items():
            if key == "annotations":
                body["metadata"]["annotations"] = value
            else:
                body["spec"][key] = value
        return self.core.create_namespaced_pod(self.namespace, body)

    def served_secret(self, pod: Any) -> tuple[str, dict[str, bytes]]:
        name = str(pod.metadata.annotations["trustwarden.io/secret"])
        data = wait_for(
            lambda: _read(self.core, self.namespace, name),
            timeout=60,
            what=f"the Secret of pod {pod.metadata.name}",
        )
        return name, data


def _read(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, bytes] | None:
    try:
        secret = core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def _gone(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    try:
        core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def tenant_role(namespace: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": ATTACKER, "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "tenant", "namespace": namespace},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods", "secrets", "configmaps"],
                    "verbs": ["*"],
                },
                {"apiGroups": [GROUP], "resources": [WIDS], "verbs": ["*"]},
                {
                    "apiGroups": ["", "events.k8s.io"],
                    "resources": ["events"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
    ]


def bind_tenant(cluster: Cluster, namespace: str, sa_namespace: str) -> None:
    for obj in tenant_role(namespace):
        if obj["kind"] == "ServiceAccount" and namespace != sa_namespace:
            continue
        cluster.kubectl("apply", "-f", "-", input_text=json.dumps(obj))
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "tenant", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
        "subjects": [{"kind": "ServiceAccount", "name": ATTACKER, "namespace": sa_namespace}],
    }
    cluster.kubectl("apply", "-f", "-", input_text=json.dumps(binding))


def tenant_client(cluster: Cluster, namespace: str) -> client.ApiClient:
    token = cluster.core.create_namespaced_service_account_token(
        ATTACKER, namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    admin = cluster.api.configuration
    cfg = client.Configuration()
    cfg.host = admin.host
    cfg.ssl_ca_cert = admin.ssl_ca_cert
    cfg.verify_ssl = True
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(cfg)


# ----------------------------------------------------------------------------- the victim


@dataclass
class Victim:
    namespace: str
    secrets: list[str]
    identities: list[str]

    def state(self, cluster: Cluster) -> dict[str, Any]:
        """Everything of the victim's an attack could change (read as admin)."""
        out: dict[str, Any] = {}
        for name in self.secrets:
            secret = cluster.core.read_namespaced_secret(name, self.namespace)
            data = base64.b64decode(secret.data["tls.crt"])
            out[f"secret {name}"] = (secret.metadata.resource_version, serial_of(data))
        for name in self.identities:
            status = get_wid(cluster, self.namespace, name).get("status") or {}
            out[f"identity {name}"] = (
                _conditions(status),
                status.get("issued"),
                status.get("soonestExpiry"),
            )
        td = get_td(cluster, VICTIM_DOMAIN).get("status") or {}
        out["trust domain"] = (_conditions(td), td.get("revoked"))
        out["revocation list"] = stored_revocations(cluster, VICTIM_DOMAIN)
        bundle = bundle_data(cluster, self.namespace) or {}
        out["bundle"] = bundle
        out["crl serials"] = crl_serials(bundle.get(f"{VICTIM_TD}.crl.pem", ""))
        return out


def _conditions(status: dict[str, Any]) -> list[tuple[str, str, str]]:
    return sorted(
        (c["type"], c["status"], c["reason"])
        for c in status.get("conditions") or ()
        if c["type"] != "BundlesPublished"  # a domain-wide count that other namespaces move
    )


def stored_revocations(cluster: Cluster, domain: str) -> list[dict[str, str]]:
    try:
        cm = cluster.core.read_namespaced_config_map(f"trustwarden-revocations-{domain}", OPNS)
    except ApiException as exc:
        if exc.status == 404:
            return []
        raise
    return list(json.loads((cm.data or {}).get("revoked.json") or "[]"))


def revoked_serials(cluster: Cluster, domain: str) -> dict[int, dict[str, str]]:
    return {int(r["serial"], 16): r for r in stored_revocations(cluster, domain)}


def crl_serials(pem: str) -> frozenset[int]:
    out: set[int] = set()
    for block in pem.split("-----END X509 CRL-----"):
        if "BEGIN X509 CRL" in block:
            crl = x509.load_pem_x509_crl((block + "-----END X509 CRL-----").strip().encode())
            out |= {r.serial_number for r in crl}
    return frozenset(out)


@dataclass
class World:
    cluster: Cluster
    victim: Victim
    baseline: dict[str, Any]
    tenant: Tenant
    victim_leaf: x509.Certificate  # public: every TLS peer of the victim sees it
    results: Results

    def assert_victim_unchanged(self) -> None:
        now = self.victim.state(self.cluster)
        changed = sorted(k for k in self.baseline if now.get(k) != self.baseline[k])
        assert not changed, f"the victim changed: {changed}"

    def record(self, case: str, result: str) -> None:
        self.results.case(category="tenant", case=case, error=result)


@pytest.fixture(scope="module")
def world(
    cluster: Cluster, slot: OperatorSlot, suite_domain: str, results: Results
) -> Iterator[World]:
    slot.ensure()
    apply_yaml(
        cluster,
        f"""
apiVersion: trustwarden.io/v1alpha1
kind: TrustDomain
metadata: {{name: {VICTIM_DOMAIN}}}
spec:
  trustDomain: {VICTIM_TD}
  ca: {{selfSigned: {{ttl: 2160h}}}}
  policy: {{maxTTL: 24h, allowedNamespaces: {{matchLabels: {{tier: bank}}}}}}
""",
    )
    wait_for(
        lambda: (condition(get_td(cluster, VICTIM_DOMAIN), "Ready") or {}).get("status") == "True",
        timeout=60,
        what="TrustDomain tenbank Ready",
    )
    victim_ns = make_namespace(cluster, "tw-ten-victim", {**INJECT, "tier": "bank"})
    for name, spec in {
        "api": {
            "delivery": {"mode": "Shared", "secretName": "api-svid"},
            "serviceAccountName": "api",
            "dnsNames": ["api.{namespace}.svc"],
        },
        "pay": {"podSelector": {"matchLabels": {"app": "pay"}}},
    }.items():
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "WorkloadIdentity",
            "metadata": {"name": name, "namespace": victim_ns},
            "spec": {"trustDomain": VICTIM_DOMAIN, **spec},
        }
        apply_yaml(cluster, json.dumps(body))
        wait_for(
            lambda n=name: (
                (condition(get_wid(cluster, victim_ns, n), "Ready") or {}).get("status") == "True"
            ),
            timeout=60,
            what=f"victim identity {name}",
        )
    pod = cluster.core.create_namespaced_pod(victim_ns, pod_body("pay-0", {"app": "pay"}))
    pay_secret = pod.metadata.annotations["trustwarden.io/secret"]
    for name in ("api-svid", pay_secret):
        wait_for(lambda n=name: secret_data(cluster, victim_ns, n), timeout=60, what=name)
    wait_for(
        lambda: f"{VICTIM_TD}.crl.pem" in (bundle_data(cluster, victim_ns) or {}),
        timeout=60,
        what="the victim's bundle with its CRL",
    )
    wait_for(
        lambda: (get_wid(cluster, victim_ns, "pay").get("status") or {}).get("issued") == 1,
        timeout=60,
        what="the victim's PerPod status",
    )
    victim = Victim(victim_ns, ["api-svid", pay_secret], ["api", "pay"])
    leaf = x509.load_pem_x509_certificates(secret_data(cluster, victim_ns, "api-svid")["tls.crt"])[
        0
    ]  # type: ignore[index]

    tenant_ns = make_namespace(cluster, "tw-ten-tenant", INJECT)
    bind_tenant(cluster, tenant_ns, tenant_ns)
    tenant = Tenant(tenant_ns, tenant_client(cluster, tenant_ns))
    # The token really is namespace-scoped: the victim's Secrets and TrustDomains are closed.
    for attempt in (
        lambda: tenant.core.read_namespaced_secret("api-svid", victim_ns),
        lambda: tenant.core.list_namespaced_secret(OPNS),
        lambda: tenant.custom.list_cluster_custom_object(GROUP, VERSION, "trustdomains"),
    ):
        with pytest.raises(ApiException) as refused:
            attempt()
        assert refused.value.status == 403, refused.value.status
    tenant.create_wid(
        "web",
        {
            "trustDomain": suite_domain,
            "delivery": {"mode": "Shared", "secretName": "web-svid"},
            "serviceAccountName": "web",
        },
    )
    tenant.create_wid(
        "pods",
        {
            "trustDomain": suite_domain,
            "podSelector": {"matchLabels": {"app": "pods"}},
            "spiffeID": "/ns/{namespace}/sa/{serviceAccount}/{pod.name}",
        },
    )
    tenant.wait_ready("web", "True")
    tenant.wait_ready("pods", "True")
    wait_for(lambda: _read(tenant.core, tenant_ns, "web-svid"), timeout=60, what="web-svid")
    built = World(cluster, victim, victim.state(cluster), tenant, leaf, results)
    yield built
    built.assert_victim_unchanged()


# ----------------------------------------------------------------------------- forged certificates


def look_alike(
    victim: x509.Certificate, *, serial: int | None = None, not_after: datetime | None = None
) -> bytes:
    """The victim's serial, issuer name, AKI and SANs, signed by a key of the tenant's own:
    `openssl verify` rejects it; names and key identifiers match."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(victim.subject)
        .issuer_name(victim.issuer)
        .public_key(key.public_key())
        .serial_number(serial or victim.serial_number)
        .not_valid_before(victim.not_valid_before_utc)
        .not_valid_after(not_after or victim.not_valid_after_utc)
    )
    for extension in victim.extensions:
        if not isinstance(extension.value, x509.SubjectKeyIdentifier):
            builder = builder.add_extension(extension.value, extension.critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tamper_and_revoke(world: World, secret: str, chain: bytes, **annotations: str) -> int:
    """The tenant writes `chain` into its own issued Secret and asks for revocation; returns
    the serial trustwarden had issued there."""
    tenant = world.tenant
    before = tenant.secret(secret)
    issued = serial_of(base64.b64decode(before.data["tls.crt"]))
    patch = {
        "metadata": {
            "annotations": {
                "trustwarden.io/revoke": "tenant says so",
                **{f"trustwarden.io/{k}": v for k, v in annotations.items()},
            }
        },
        "data": {"tls.crt": _b64(chain)},
    }
    tenant.core.patch_namespaced_secret(secret, tenant.namespace, patch)
    return issued


def wait_reissued(world: World, secret: str, not_serial: int) -> int:
    def probe() -> int | None:
        data = _read(world.tenant.core, world.tenant.namespace, secret)
        if not data:
            return None
        try:
            serial = serial_of(data["tls.crt"])
        except ValueError:
            return None
        annotations = world.tenant.secret(secret).metadata.annotations or {}
        fresh = serial != not_serial and "trustwarden.io/revoke" not in annotations
        return (
            serial
            if fresh and annotations.get("trustwarden.io/serial") == format(serial, "x")
            else None
        )

    return int(wait_for(probe, timeout=60, what=f"a fresh certificate in {secret}"))


def test_look_alike_leaf_with_revoke_annotation(world: World) -> None:
    """Issue 15 §1: a look-alike of the victim's leaf (same serial, issuer, AKI, SANs, own key)
    in the tenant's own Secret, with trustwarden.io/revoke."""
    tamper_and_revoke(world, "web-svid", look_alike(world.victim_leaf))
    note = world.tenant.wait_event("web", "RevocationRefused")
    wait_reissued(world, "web-svid", world.victim_leaf.serial_number)
    assert format(world.victim_leaf.serial_number, "x") in note, note
    assert world.victim_leaf.serial_number not in revoked_serials(world.cluster, VICTIM_DOMAIN)
    world.assert_victim_unchanged()
    world.record(
        "look-alike leaf + trustwarden.io/revoke in own Secret", f"RevocationRefused: {note}"
    )


def test_verbatim_copy_of_victim_leaf_with_revoke_annotation(world: World) -> None:
    """Variant: the victim's own public leaf, byte for byte (it verifies against the victim's
    authority, but trustwarden never issued it to this owner)."""
    events_before = len(world.tenant.events("web"))
    tamper_and_revoke(world, "web-svid", pem(world.victim_leaf))
    wait_for(
        lambda: (
            len(world.tenant.events("web")) > events_before
            or [n for r, n in world.tenant.events("web") if r == "RevocationRefused"][1:]
        ),
        timeout=60,
        what="a second RevocationRefused",
    )
    wait_reissued(world, "web-svid", world.victim_leaf.serial_number)
    world.assert_victim_unchanged()
    world.record(
        "verbatim copy of the victim's leaf + revoke",
        "RevocationRefused; own Secret reissued; victim CRL unchanged",
    )


def test_renamed_secret_annotations_then_revoke(world: World) -> None:
    """Variant: the tenant's real certificate stays, but the Secret's annotations are renamed
    to the victim's serial, trust domain and SPIFFE ID before asking for revocation: what is
    revoked is what trustwarden issued there (the tenant's own serial), never what the
    annotations say."""
    victim_serial = format(world.victim_leaf.serial_number, "x")
    real = world.tenant.secret("web-svid")
    chain = base64.b64decode(real.data["tls.crt"])
    issued = tamper_and_revoke(
        world,
        "web-svid",
        chain,
        serial=victim_serial,
        **{
            "trust-domain": VICTIM_TD,
            "spiffe-id": f"spiffe://{VICTIM_TD}/ns/{world.victim.namespace}/sa/api",
        },
    )
    fresh = wait_reissued(world, "web-svid", issued)
    own = wait_for(
        lambda: revoked_serials(world.cluster, "rel").get(issued),
        timeout=60,
        what="the tenant's own serial in its own domain's revocation list",
    )
    annotations = world.tenant.secret("web-svid").metadata.annotations
    assert annotations["trustwarden.io/serial"] == format(fresh, "x"), "annotations not restored"
    assert annotations["trustwarden.io/trust-domain"] != VICTIM_TD
    world.assert_victim_unchanged()
    world.record(
        "Secret annotations renamed to the victim's serial/domain + revoke",
        f"own serial revoked into its own domain (reason {own['reason']}); annotations rewritten",
    )


def handmade_secret(
    name: str, chain: bytes, owner: tuple[str, str, str], identity: str
) -> dict[str, Any]:
    """A Secret the tenant makes itself, forging everything trustwarden puts on its own."""
    kind, owner_name, uid = owner
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/managed-by": "trustwarden",
                "trustwarden.io/identity": identity,
            },
            "annotations": {
                "trustwarden.io/revoke": "forged",
                "trustwarden.io/trust-domain": VICTIM_TD,
            },
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}" if kind == "WorkloadIdentity" else "v1",
                    "kind": kind,
                    "name": owner_name,
                    "uid": uid,
                }
            ],
        },
        "data": {"tls.crt": _b64(chain), "tls.key": ""},
    }


def _shared_identity(world: World, name: str) -> tuple[str, int]:
    tenant = world.tenant
    tenant.create_wid(
        name,
        {
            "trustDomain": "rel",
            "delivery": {"mode": "Shared", "secretName": f"{name}-svid"},
            "serviceAccountName": name,
        },
    )
    data = wait_for(
        lambda: _read(tenant.core, tenant.namespace, f"{name}-svid"),
        timeout=60,
        what=f"{name}-svid",
    )
    return str(tenant.wid(name)["metadata"]["uid"]), serial_of(data["tls.crt"])


def test_handmade_managed_secret_then_deleting_own_identity(world: World) -> None:
    """Issue 15 §1: a hand-made Secret labelled managed-by trustwarden with an identity label
    (and the victim's leaf, and a look-alike), then the tenant deletes its own identity."""
    tenant = world.tenant
    uid, own_serial = _shared_identity(world, "decoy")
    owner = ("WorkloadIdentity", "decoy", uid)
    for name, chain in {
        "forged-copy": pem(world.victim_leaf),
        "forged-look-alike": look_alike(world.victim_leaf),
    }.items():
        tenant.core.create_namespaced_secret(
            tenant.namespace, handmade_secret(name, chain, owner, "decoy")
        )
    tenant.delete_wid("decoy")
    entry = wait_for(
        lambda: revoked_serials(world.cluster, "rel").get(own_serial),
        timeout=60,
        what="decoy's own serial revoked into its own domain",
    )
    wait_for(
        lambda: _gone(tenant.core, tenant.namespace, "decoy-svid"),
        timeout=60,
        what="decoy-svid deleted",
    )
    notes = [
        tenant.wait_event(name, "RevocationRefused")
        for name in ("forged-copy", "forged-look-alike")
    ]
    foreign = set(revoked_serials(world.cluster, "rel")) & {world.victim_leaf.serial_number}
    assert not foreign, "the victim's serial was revoked into the tenant's domain"
    assert "nothing was revoked" in notes[0], notes[0]
    world.assert_victim_unchanged()
    world.record(
        "hand-made managed-by Secret + deleting own WorkloadIdentity",
        f"only the identity's own serial revoked (reason {entry['reason']}); on each forged "
        f"Secret RevocationRefused: {notes[1]}",
    )


def test_random_serial_flood_with_2099_not_after(world: World) -> None:
    """Issue 15 §1: the same paths with random serials and notAfter 2099, 60 Secrets at once:
    nothing of them is stored; the only new entry is the identity's own, bounded by its CA."""
    tenant = world.tenant
    uid, own_serial = _shared_identity(world, "flood")
    before = revoked_serials(world.cluster, "rel")
    owner = ("WorkloadIdentity", "flood", uid)
    far = datetime(2099, 1, 1, tzinfo=UTC)
    forged: set[int] = set()
    for index in range(60):
        serial = x509.random_serial_number()
        forged.add(serial)
        chain = look_alike(world.victim_leaf, serial=serial, not_after=far)
        tenant.core.create_namespaced_secret(
            tenant.namespace, handmade_secret(f"flood-{index}", chain, owner, "flood")
        )
    tenant.delete_wid("flood")
    wait_for(
        lambda: own_serial in revoked_serials(world.cluster, "rel"),
        timeout=60,
        what="flood's own serial revoked",
    )
    after = revoked_serials(world.cluster, "rel")
    added = set(after) - set(before)
    assert added == {own_serial}, f"{len(added)} new entries, expected 1"
    assert not forged & set(after), "a forged serial was stored"
    ca_not_after = max(
        datetime.fromisoformat(a["notAfter"].replace("Z", "+00:00"))
        for a in get_td(world.cluster, "rel")["status"]["authorities"]
    )
    late = [
        r
        for r in after.values()
        if datetime.fromisoformat(r["notAfter"].replace("Z", "+00:00")) > ca_not_after
    ]
    assert not late, f"{len(late)} entries outlive every authority of the domain"
    tenant.wait_event("flood-59", "RevocationRefused")
    world.assert_victim_unchanged()
    world.record(
        "60 hand-made Secrets, random serials, notAfter 2099, then delete identity",
        "1 entry stored (the identity's own); 0 of 60 forged; none past the CA's notAfter",
    )


def test_emergency_revoke_of_own_certificate_still_works(world: World) -> None:
    """Control: the levers the attacks abuse still work for the tenant's own certificate, so
    the refusals above are not a broken revocation path."""
    real = world.tenant.secret("web-svid")
    chain = base64.b64decode(real.data["tls.crt"])
    issued = tamper_and_revoke(world, "web-svid", chain)
    wait_reissued(world, "web-svid", issued)
    entry = wait_for(
        lambda: revoked_serials(world.cluster, "rel").get(issued),
        timeout=60,
        what="the tenant's own serial revoked",
    )
    world.assert_victim_unchanged()
    world.record(
        "control: trustwarden.io/revoke on own, unmodified Secret",
        f"own serial revoked (reason {entry['reason']}) and reissued at once",
    )


LOOPERS = 4


def test_emergency_revocation_loop_is_capped(world: World) -> None:
    """Variant: every emergency revocation of a live owner is answered with a fresh
    certificate, so a loop on one's own Secret adds a genuine entry per turn to the domain's
    shared list. Four loops in parallel, measured, and capped per namespace
    (EMERGENCY_PER_NAMESPACE): past it the request is refused with RevocationQuotaExceeded and
    the Secret still gets a fresh key."""
    from trustwarden.reconcile.revocationquota import EMERGENCY_PER_NAMESPACE

    tenant = world.tenant

    def emergency_held() -> int:
        return sum(
            1
            for r in stored_revocations(world.cluster, "rel")
            if r.get("namespace") == tenant.namespace and r["reason"] == "Emergency"
        )

    names = [f"looper-{i}" for i in range(LOOPERS)]
    for name in names:
        _shared_identity(world, name)
    held = emergency_held()
    capped = threading.Event()
    refused: dict[str, tuple[int, str]] = {}

    def loop(name: str) -> int:
        turns = 0
        while not capped.is_set():
            secret = f"{name}-svid"
            serial = serial_of(base64.b64decode(tenant.secret(secret).data["tls.crt"]))
            tenant.core.patch_namespaced_secret(
                secret,
                tenant.namespace,
                {"metadata": {"annotations": {"trustwarden.io/revoke": f"turn {turns}"}}},
            )
            wait_reissued(world, secret, serial)
            turns += 1
            notes = [n for r, n in tenant.events(name) if r == "RevocationQuotaExceeded"]
            if notes:
                refused[name] = (serial, notes[0])
                capped.set()
            assert turns <= EMERGENCY_PER_NAMESPACE + 5, "the loop was never capped"
        return turns

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=LOOPERS) as pool:
        turns = sum(pool.map(loop, names))
    seconds = time.monotonic() - started
    name, (serial, note) = next(iter(refused.items()))
    stored = wait_for(
        lambda: (n := emergency_held()) >= EMERGENCY_PER_NAMESPACE and n,
        timeout=60,
        what="the namespace's emergency entries stored",
    )
    assert stored == EMERGENCY_PER_NAMESPACE, stored
    assert f"serial {format(serial, 'x')} was NOT revoked" in note, note
    assert serial not in revoked_serials(world.cluster, "rel")
    world.assert_victim_unchanged()
    rate = (EMERGENCY_PER_NAMESPACE - held) / seconds
    world.record(
        "emergency revocation loops on own Secrets",
        f"{LOOPERS} loops, {turns} turns in {seconds:.0f} s ({rate:.1f} genuine entries/s before "
        f"the cap); capped at {EMERGENCY_PER_NAMESPACE} per namespace: "
        f"RevocationQuotaExceeded: {note}",
    )


# ----------------------------------------------------------------------------- DNS names


def test_foreign_dns_names(world: World) -> None:
    """Issue 15 §2: a Shared identity asking for the victim's service names, the API server's
    and an external name."""
    victim = world.victim.namespace
    world.tenant.create_wid(
        "dns-thief",
        {
            "trustDomain": "rel",
            "delivery": {"mode": "Shared", "secretName": "dns-thief-svid"},
            "dnsNames": [
                f"api.{victim}.svc",
                f"api.{victim}.svc.cluster.local",
                "kubernetes.default.svc",
                "login.example.com",
            ],
        },
    )
    ready = world.tenant.wait_ready("dns-thief", "False", "DNSNameNotAllowed")
    note = world.tenant.wait_event("dns-thief", "DNSNameNotAllowed")
    assert f"api.{victim}.svc" in ready["message"], ready["message"]
    assert _read(world.tenant.core, world.tenant.namespace, "dns-thief-svid") is None
    world.assert_victim_unchanged()
    world.record(
        "foreign DNS names (victim's svc, kubernetes.default.svc, login.example.com)",
        f"DNSNameNotAllowed: {ready['message']}",
    )
    assert note


@pytest.mark.parametrize(
    ("case", "name", "expected"),
    [
        ("wildcard", "*.{namespace}.svc", "cannot be wildcards"),
        ("label-over-63", "a" * 64 + ".{namespace}.svc", "63"),
    ],
    ids=["wildcard", "label-over-63"],
)
def test_dns_names_refused_at_admission(world: World, case: str, name: str, expected: str) -> None:
    with pytest.raises(ApiException) as refused:
        world.tenant.create_wid(
            f"dns-{case}",
            {
                "trustDomain": "rel",
                "delivery": {"mode": "Shared", "secretName": f"dns-{case}"},
                "dnsNames": [name],
            },
        )
    body = " ".join(str(refused.value.body).split())
    assert refused.value.status == 422, refused.value.status
    assert expected in body, body[:600]
    world.assert_victim_unchanged()
    at = body.find("spec.dnsNames")
    world.record(
        f"dnsNames {case} at admission", f"422: {body[at : at + 200] if at >= 0 else body[:200]}"
    )


# ----------------------------------------------------------------------------- pods and volumes


def test_handmade_svid_volume_then_labelling(world: World) -> None:
    """Issue 15 §3: a pod no identity selects carries its own trustwarden-svid volume naming a
    Secret of its choice; labelled afterwards to match an identity."""
    tenant = world.tenant
    pod = tenant.pod(
        "premade",
        {"app": "other"},
        volumes=[{"name": "trustwarden-svid", "secret": {"secretName": "chosen-by-tenant"}}],
    )
    volumes = [v.name for v in pod.spec.volumes or ()]
    assert "trustwarden-svid" not in volumes, "the hand-made volume survived CREATE"
    tenant.core.patch_namespaced_pod(
        "premade",
        tenant.namespace,
        {"metadata": {"labels": {"app": "pods", "trustwarden.io/identity": "pods"}}},
    )
    note = tenant.wait_event("premade", "NotAdmitted")
    assert _read(tenant.core, tenant.namespace, "chosen-by-tenant") is None
    world.assert_victim_unchanged()
    world.record(
        "hand-made trustwarden-svid volume + labelling later",
        f"volume stripped at CREATE; NotAdmitted: {note}",
    )


def test_copied_admission_tag(world: World) -> None:
    """Variant: another pod's admission tag and Secret annotation copied onto a pod that the
    webhook never admitted for them (the volume, immutable, never names that Secret)."""
    tenant = world.tenant
    owner = tenant.pod("tag-owner", {"app": "pods"})
    secret_name, _ = tenant.served_secret(owner)
    rv = tenant.secret(secret_name).metadata.resource_version
    thief = tenant.pod("tag-thief", {"app": "other"})
    tenant.core.patch_namespaced_pod(
        "tag-thief",
        tenant.namespace,
        {
            "metadata": {
                "labels": {"app": "pods", "trustwarden.io/identity": "pods"},
                "annotations": {
                    "trustwarden.io/admission": owner.metadata.annotations[
                        "trustwarden.io/admission"
                    ],
                    "trustwarden.io/secret": secret_name,
                },
            }
        },
    )
    note = tenant.wait_event("tag-thief", "NotAdmitted")
    assert thief.metadata.uid
    assert tenant.secret(secret_name).metadata.resource_version == rv, "owner's Secret changed"
    world.assert_victim_unchanged()
    world.record("another pod's admission tag + Secret annotation copied", f"NotAdmitted: {note}")


def test_edited_secret_annotation_does_not_skip_revocation(world: World) -> None:
    """Variant (found by this suite's first version): the pod's owner renames, then removes,
    trustwarden.io/secret after admission and deletes the pod. Its serial is still revoked and
    its Secret deleted: the operator goes by what it recorded at admission and the ledger."""
    tenant = world.tenant
    results = []
    for case, value in (("renamed", "elsewhere"), ("removed", None)):
        pod = tenant.pod(f"edit-{case}", {"app": "pods"})
        secret_name, data = tenant.served_secret(pod)
        serial = serial_of(data["tls.crt"])
        tenant.core.patch_namespaced_pod(
            pod.metadata.name,
            tenant.namespace,
            {"metadata": {"annotations": {"trustwarden.io/secret": value}}},
        )
        tenant.core.delete_namespaced_pod(
            pod.metadata.name, tenant.namespace, grace_period_seconds=0
        )
        entry = wait_for(
            lambda s=serial: revoked_serials(world.cluster, "rel").get(s),
            timeout=60,
            what=f"edit-{case}: its serial revoked",
        )
        wait_for(
            lambda n=secret_name: _gone(tenant.core, tenant.namespace, n),
            timeout=60,
            what=f"edit-{case}: its Secret deleted",
        )
        results.append(f"{case}: revoked ({entry['reason']}), Secret deleted")
    world.assert_victim_unchanged()
    world.record(
        "trustwarden.io/secret edited after admission, then pod deleted", "; ".join(results)
    )


def test_pod_from_before_opt_in(world: World) -> None:
    """Issue 15 §3: pods that existed before their namespace opted in (no webhook ever ran),
    with the identity label and a volume naming a Secret of the tenant's choice."""
    cluster, tenant = world.cluster, world.tenant
    late = make_namespace(cluster, "tw-ten-late")
    bind_tenant(cluster, late, tenant.namespace)
    tenant.create_wid(
        "svc",
        {"trustDomain": "rel", "podSelector": {"matchLabels": {"app": "svc"}}},
        namespace=late,
    )
    body = pod_body("pre-opt-in", {"app": "svc", "trustwarden.io/identity": "svc"})
    body["spec"]["volumes"] = [
        {"name": "trustwarden-svid", "secret": {"secretName": "chosen-late"}}
    ]
    body["metadata"]["annotations"] = {"trustwarden.io/secret": "chosen-late"}
    tenant.core.create_namespaced_pod(late, body)
    cluster.core.patch_namespace(late, {"metadata": {"labels": INJECT}})  # the admin opts in
    note = tenant.wait_event("pre-opt-in", "NotAdmitted", namespace=late)
    wid_note = tenant.wait_event("svc", "NotAdmitted", namespace=late)
    assert _read(tenant.core, late, "chosen-late") is None
    world.assert_victim_unchanged()
    world.record(
        "pod from before the namespace opted in, own volume + label",
        f"NotAdmitted (pod and identity): {note}",
    )
    assert wid_note


# ----------------------------------------------------------------------------- Secrets and status


def test_secret_conflict_is_not_counted(world: World) -> None:
    """Issue 15 §5: a Shared identity whose secretName is a Secret the tenant made (holding the
    victim's leaf and the managed-by label) is SecretConflict, counts nothing and shows no
    expiry."""
    tenant = world.tenant
    body = handmade_secret("squat-svid", pem(world.victim_leaf), ("Pod", "x", "none"), "squat")
    del body["metadata"]["ownerReferences"]
    del body["metadata"]["annotations"]["trustwarden.io/revoke"]
    tenant.core.create_namespaced_secret(tenant.namespace, body)
    rv = tenant.secret("squat-svid").metadata.resource_version
    tenant.create_wid(
        "squat", {"trustDomain": "rel", "delivery": {"mode": "Shared", "secretName": "squat-svid"}}
    )
    ready = tenant.wait_ready("squat", "False", "SecretConflict")
    note = tenant.wait_event("squat", "SecretConflict")
    status = wait_for(
        lambda: (s := tenant.wid("squat").get("status") or {}).get("issued") == 0 and s,
        timeout=60,
        what="squat status.issued 0",
    )
    assert "soonestExpiry" not in status, status.get("soonestExpiry")
    assert tenant.secret("squat-svid").metadata.resource_version == rv, "foreign Secret written"
    world.assert_victim_unchanged()
    world.record(
        "SecretConflict with a forged Secret", f"issued 0, no soonestExpiry; {ready['message']}"
    )
    assert note


def test_metadata_drift_and_stripped_managed_by_label(world: World) -> None:
    """Issue 15 §5: finalizer, annotations and labels stripped from an issued Secret are
    restored; a Secret whose managed-by label is removed is still revoked and deleted with its
    pod (not left Terminating with its key inside)."""
    tenant = world.tenant
    pod = tenant.pod("drift", {"app": "pods"})
    secret_name, data = tenant.served_secret(pod)
    serial = serial_of(data["tls.crt"])
    tenant.core.patch_namespaced_secret(
        secret_name,
        tenant.namespace,
        {
            "metadata": {
                "finalizers": None,
                "labels": {"trustwarden.io/identity": None},
                "annotations": {"trustwarden.io/spiffe-id": None, "trustwarden.io/serial": None},
            }
        },
    )

    def restored() -> bool:
        meta = tenant.secret(secret_name).metadata
        return bool(
            "trustwarden.io/revoke" in (meta.finalizers or ())
            and (meta.labels or {}).get("trustwarden.io/identity") == "pods"
            and (meta.annotations or {}).get("trustwarden.io/serial") == format(serial, "x")
            and (meta.annotations or {}).get("trustwarden.io/spiffe-id")
        )

    wait_for(restored, timeout=60, what="the Secret's metadata restored")
    tenant.core.patch_namespaced_secret(
        secret_name,
        tenant.namespace,
        {"metadata": {"labels": {"app.kubernetes.io/managed-by": None}}},
    )
    tenant.core.delete_namespaced_pod("drift", tenant.namespace, grace_period_seconds=0)
    entry = wait_for(
        lambda: revoked_serials(world.cluster, "rel").get(serial),
        timeout=60,
        what="the unlabelled Secret's serial revoked",
    )
    wait_for(
        lambda: _gone(tenant.core, tenant.namespace, secret_name),
        timeout=60,
        what="the unlabelled Secret deleted, not left Terminating",
    )
    world.assert_victim_unchanged()
    world.record(
        "issued Secret's finalizer/labels/annotations stripped; managed-by removed, pod deleted",
        f"metadata restored; unlabelled Secret revoked ({entry['reason']}) and deleted",
    )


def test_bundle_configmap_edited_by_tenant(world: World) -> None:
    """Variant: the tenant rewrites its own namespace's trustwarden-bundle with an anchor of
    its choice: the operator puts the real one back."""
    tenant = world.tenant
    real = wait_for(
        lambda: (bundle_data(world.cluster, tenant.namespace) or {}).get("ca.crt"),
        timeout=60,
        what="the tenant's bundle",
    )
    fake, _ = _foreign_ca("tenant-root")
    tenant.core.patch_namespaced_config_map(
        "trustwarden-bundle", tenant.namespace, {"data": {"ca.crt": fake.decode()}}
    )
    wait_for(
        lambda: (bundle_data(world.cluster, tenant.namespace) or {}).get("ca.crt") == real,
        timeout=60,
        what="the bundle restored",
    )
    world.assert_victim_unchanged()
    world.record("own trustwarden-bundle ca.crt rewritten", "restored by the operator")


@pytest.mark.parametrize("whose", ["pod", "shared"])
def test_shared_identity_naming_another_identitys_secret(world: World, whose: str) -> None:
    """Variant: a Shared identity whose secretName is the Secret trustwarden issued to another
    owner in the same namespace (a PerPod pod's, or another Shared identity's): that Secret
    is ours and labelled, but not this identity's, so it is refused and left alone."""
    tenant = world.tenant
    if whose == "pod":
        pod = tenant.pod("stolen-pod", {"app": "pods"})
        target, _ = tenant.served_secret(pod)
    else:
        target = "web-svid"
    before = tenant.secret(target)
    name = f"steal-{whose}"
    tenant.create_wid(
        name, {"trustDomain": "rel", "delivery": {"mode": "Shared", "secretName": target}}
    )
    ready = tenant.wait_ready(name, "False", "SecretConflict")
    after = tenant.secret(target)
    assert after.metadata.resource_version == before.metadata.resource_version, "overwritten"
    assert [o.uid for o in after.metadata.owner_references or ()] == [
        o.uid for o in before.metadata.owner_references or ()
    ]
    world.assert_victim_unchanged()
    world.record(
        f"Shared secretName naming another owner's issued Secret ({whose})",
        f"SecretConflict: {ready['message']}",
    )


@pytest.mark.parametrize("how", ["trustDomain", "federatesWith"])
def test_identity_in_a_domain_that_excludes_the_tenant(world: World, how: str) -> None:
    """Variant: the tenant asks for the victim's domain directly, or to trust it."""
    tenant = world.tenant
    name = f"greedy-{how.lower()}"
    spec: dict[str, object] = {
        "trustDomain": VICTIM_DOMAIN if how == "trustDomain" else "rel",
        "delivery": {"mode": "Shared", "secretName": f"{name}-svid"},
    }
    if how == "federatesWith":
        spec["federatesWith"] = [VICTIM_DOMAIN]
    tenant.create_wid(name, spec)
    reason = "NamespaceNotAllowed" if how == "trustDomain" else "FederationNotAllowed"
    ready = tenant.wait_ready(name, "False", reason)
    tenant.wait_event(name, reason)
    assert _read(tenant.core, tenant.namespace, f"{name}-svid") is None
    bundle = bundle_data(world.cluster, tenant.namespace) or {}
    assert f"{VICTIM_TD}.pem" not in bundle, "the victim's anchors reached the tenant"
    world.assert_victim_unchanged()
    world.record(
        f"identity asking for the victim's domain ({how})", f"{reason}: {ready['message']}"
    )


def test_bundle_configmap_deleted_by_tenant(world: World) -> None:
    """Variant: the tenant deletes its own namespace's bundle: it is published again."""
    tenant = world.tenant
    before = wait_for(
        lambda: bundle_data(world.cluster, tenant.namespace), timeout=60, what="the bundle"
    )
    tenant.core.delete_namespaced_config_map("trustwarden-bundle", tenant.namespace)
    wait_for(
        lambda: (
            (bundle_data(world.cluster, tenant.namespace) or {}).get("ca.crt")
            == before.get("ca.crt")
        ),
        timeout=60,
        what="the bundle published again",
    )
    world.assert_victim_unchanged()
    world.record("own trustwarden-bundle deleted", "published again by the operator")


# ----------------------------------------------------------------------------- admin-side roles


def _foreign_ca(common_name: str) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key


def _all_bundle_shas(cluster: Cluster, namespaces: list[str]) -> set[str]:
    shas: set[str] = set()
    for ns in namespaces:
        text = (bundle_data(cluster, ns) or {}).get("ca.crt", "")
        if text:
            shas |= {
                c.fingerprint(hashes.SHA256()).hex()
                for c in x509.load_pem_x509_certificates(text.encode())
            }
    return shas


def test_duplicate_trust_domain_claim(world: World) -> None:
    """Issue 15 §4: a second TrustDomain (admin: a tenant cannot create one, see the fixture)
    claims the victim's spec.trustDomain with an external anchor and bundle.namespaceSelector
    {}. It is TrustDomainConflict, both objects get an Event, and its anchor reaches no
    bundle."""
    cluster = world.cluster
    anchor, _ = _foreign_ca("impostor")
    sha = x509.load_pem_x509_certificate(anchor).fingerprint(hashes.SHA256()).hex()
    name = unique("impostor")
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrustDomain",
        "metadata": {"name": name},
        "spec": {
            "trustDomain": VICTIM_TD,
            "ca": {"external": {"bundle": anchor.decode()}},
            "bundle": {"namespaceSelector": {}},
        },
    }
    custom(cluster).create_cluster_custom_object(GROUP, VERSION, "trustdomains", body)
    try:
        ready = wait_for(
            lambda: (
                (c := condition(get_td(cluster, name), "Ready")) is not None
                and c["reason"] == "TrustDomainConflict"
                and c
            ),
            timeout=60,
            what="the impostor Ready=False TrustDomainConflict",
        )

        def named(about: str) -> list[str]:
            items = client.EventsV1Api(cluster.api).list_event_for_all_namespaces().items
            return [
                e.note or ""
                for e in items
                if e.reason == "TrustDomainConflict"
                and e.regarding is not None
                and e.regarding.name == about
            ]

        wait_for(
            lambda: (
                [n for n in named(name) if VICTIM_DOMAIN in n]
                and [n for n in named(VICTIM_DOMAIN) if name in n]
            ),
            timeout=30,
            what="TrustDomainConflict Events on both TrustDomains, each naming the other",
        )
        # Give the bundles a chance to be (wrongly) rewritten: the tenant's namespace is
        # selected by namespaceSelector {}; wait until the operator has settled its status.
        wait_for(
            lambda: (get_td(cluster, name).get("status") or {}).get("observedGeneration") == 1,
            timeout=60,
            what="the impostor's status observed",
        )
        shas = _all_bundle_shas(cluster, [world.victim.namespace, world.tenant.namespace])
        assert sha not in shas, "the impostor's anchor reached a bundle"
        world.assert_victim_unchanged()
        world.record(
            "second TrustDomain claiming the victim's spec.trustDomain",
            f"TrustDomainConflict: {ready['message']}",
        )
    finally:
        custom(cluster).delete_cluster_custom_object(GROUP, VERSION, "trustdomains", name)


def test_leaving_allowed_namespaces(world: World) -> None:
    """Issue 15 §5: a namespace that stops matching allowedNamespaces (an admin relabels it)
    keeps its certificate until expiry, unrevoked and uncounted, and its status says so."""
    cluster = world.cluster
    ns = make_namespace(cluster, "tw-ten-leaver", {"tier": "bank"})
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WorkloadIdentity",
        "metadata": {"name": "leaver", "namespace": ns},
        "spec": {
            "trustDomain": VICTIM_DOMAIN,
            "delivery": {"mode": "Shared", "secretName": "leaver-svid"},
        },
    }
    apply_yaml(cluster, json.dumps(body))
    data = wait_for(lambda: secret_data(cluster, ns, "leaver-svid"), timeout=60, what="leaver-svid")
    serial = serial_of(data["tls.crt"])
    cluster.core.patch_namespace(ns, {"metadata": {"labels": {"tier": "none"}}})
    ready = wait_for(
        lambda: (
            (c := condition(get_wid(cluster, ns, "leaver"), "Ready")) is not None
            and c["reason"] == "NamespaceNotAllowed"
            and c
        ),
        timeout=60,
        what="leaver Ready=False NamespaceNotAllowed",
    )
    assert "stay valid until they expire" in ready["message"], ready["message"]
    wait_for(
        lambda: f"{VICTIM_TD}.pem" not in (bundle_data(cluster, ns) or {}),
        timeout=60,
        what="the leaver's bundle loses the domain",
    )
    assert serial not in revoked_serials(cluster, VICTIM_DOMAIN)
    assert serial_of(secret_data(cluster, ns, "leaver-svid")["tls.crt"]) == serial  # type: ignore[index]
    world.assert_victim_unchanged()
    world.record(
        "namespace leaves allowedNamespaces",
        f"kept until expiry, not revoked, status says: {ready['message']}",
    )


def _throwaway_key_b64() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return base64.b64encode(der).decode()


def _disguised(case: str, key_b64: str) -> str:
    if case == "nbsp-in-marker":
        return f"-----BEGIN\u00a0PRIVATE KEY-----\n{key_b64}\n-----END\u00a0PRIVATE KEY-----\n"
    return key_b64  # bare base64


@pytest.mark.parametrize("case", ["nbsp-in-marker", "bare-base64-key"])
def test_external_bundle_with_disguised_key(world: World, case: str) -> None:
    """Issue 15 §5: a private key disguised in an external bundle is refused. A tenant cannot
    even try (403); an admin is refused at admission, or by the operator with CAInvalid."""
    cert, _ = _foreign_ca(f"partner-{case}")
    key_b64 = _throwaway_key_b64()
    bundle = _disguised(case, key_b64)
    secret_part = key_b64[48:88]  # past the fixed PKCS#8 header: unique to this key
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrustDomain",
        "metadata": {"name": unique(f"ext-{case}")},
        "spec": {
            "trustDomain": f"ext-{case}.example.org",
            "ca": {"external": {"bundle": cert.decode() + bundle}},
        },
    }
    with pytest.raises(ApiException) as tenant_try:
        world.tenant.custom.create_cluster_custom_object(GROUP, VERSION, "trustdomains", body)
    assert tenant_try.value.status == 403
    name = body["metadata"]["name"]
    try:
        custom(world.cluster).create_cluster_custom_object(GROUP, VERSION, "trustdomains", body)
    except ApiException as exc:
        assert exc.status == 422, exc.status
        text = " ".join(str(exc.body).split())
        assert "spec.ca.external.bundle" in text, text[:400]
        assert secret_part not in text, "the key is echoed: " + text.replace(key_b64, "<KEY>")
        result = (
            f"tenant 403; admin 422 at admission: {text[text.find('spec.ca.external') :][:160]}"
        )
    else:
        try:
            ready = wait_for(
                lambda: (
                    (c := condition(get_td(world.cluster, name), "Ready")) is not None
                    and c["reason"] == "CAInvalid"
                    and c
                ),
                timeout=60,
                what=f"{name}: Ready=False CAInvalid",
            )
            assert secret_part not in ready["message"], "the key is in the status"
            result = f"tenant 403; admin: CAInvalid: {ready['message']}"
        finally:
            custom(world.cluster).delete_cluster_custom_object(GROUP, VERSION, "trustdomains", name)
    world.assert_victim_unchanged()
    world.record(f"external bundle with a private key ({case})", result)


@pytest.mark.parametrize(
    ("verb", "name", "where", "allowed"),
    [
        ("update", "kube-root-ca.crt", "victim", False),
        ("delete", "kube-root-ca.crt", "victim", False),
        ("update", "extension-apiserver-authentication", "kube-system", False),
        ("patch", "trustwarden-bundle", "victim", False),
        ("update", "trustwarden-bundle", "victim", True),
    ],
)
def test_operator_rbac_on_foreign_configmaps(
    world: World, verb: str, name: str, where: str, allowed: bool
) -> None:
    """Issue 15 §5: the operator's own identity (this suite's least-privilege user, bound like
    the chart's ClusterRole) cannot update or delete any ConfigMap but trustwarden-bundle
    outside its namespace: asked of the API server (SubjectAccessReview)."""
    namespace = world.victim.namespace if where == "victim" else where
    review = client.AuthorizationV1Api(world.cluster.api).create_subject_access_review(
        {
            "spec": {
                "user": OPERATOR_USER,
                "resourceAttributes": {
                    "verb": verb,
                    "resource": "configmaps",
                    "name": name,
                    "namespace": namespace,
                },
            }
        }
    )
    assert review.status.allowed is allowed, f"{verb} configmaps/{name}: {review.status}"
    if not allowed:
        world.record(f"operator RBAC: {verb} configmaps/{name} in {where}", "denied by RBAC")
