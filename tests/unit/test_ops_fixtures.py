"""Builders for the ops tests: CAs, leaves and the API bodies (Secrets, bundles, TrustDomains,
WorkloadIdentities) laid out exactly as the operator writes them, plus an in-memory OpsPort.

Golden tests use Ed25519 keys derived from fixed seeds and fixed serials: Ed25519 signatures
are deterministic, so every certificate, fingerprint and output is byte-identical per run.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from trustwarden.names import REVOKE_ANNOTATION
from trustwarden.ops.errors import ConflictError, CRDMissingError
from trustwarden.pki import (
    Authority,
    IssuedLeaf,
    KeyAlgorithm,
    LeafRequest,
    RevokedSerial,
    SpiffeID,
    Usage,
    build_crl,
    build_namespace_bundle,
    create_self_signed_ca,
    issue_leaf,
)
from trustwarden.pki._clock import to_rfc3339
from trustwarden.pki.keys import PrivateKey, key_algorithm_of

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
TD = "prod.example.org"
TD_NAME = "prod"
OWNER_PAYMENTS = "team-payments@example.org"


def seeded_key(label: str) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


def make_ca(
    label: str = "ca-1",
    *,
    serial: int = 0x1A2B3C,
    now: datetime = NOW - timedelta(days=30),
    key: PrivateKey | None = None,
    trust_domain: str = TD,
) -> Authority:
    """Ed25519 (deterministic) unless ``key`` says otherwise."""
    key = key or seeded_key(label)
    return create_self_signed_ca(
        trust_domain,
        key_algorithm_of(key),
        timedelta(days=90),
        now=now,
        serial=serial,
        private_key=key,
    )


def make_leaf(
    authority: Authority,
    path: str,
    *,
    serial: int,
    issued: datetime = NOW - timedelta(minutes=10),
    ttl: timedelta = timedelta(hours=1),
    key: PrivateKey | None = None,
    label: str | None = None,
    usages: frozenset[Usage] = frozenset({Usage.server, Usage.client}),
    dns: tuple[str, ...] = (),
    trust_domain: str = TD,
) -> IssuedLeaf:
    if key is None:
        key = seeded_key(label or f"leaf-{serial}")

    request = LeafRequest(SpiffeID(trust_domain, path), dns, ttl, key_algorithm_of(key), usages)
    return issue_leaf(authority, request, issued, serial=serial, private_key=key)


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def secret_body(
    namespace: str,
    name: str,
    leaf: IssuedLeaf,
    authority: Authority,
    *,
    identity: str,
    owner: str = OWNER_PAYMENTS,
    renew_at: datetime | None = None,
    pod: tuple[str, str] | None = None,  # (name, uid)
    wid_uid: str = "wid-uid",
    ca_pem: bytes | None = None,
    resource_version: str = "100",
) -> dict[str, Any]:
    """A Secret as the engine writes it (labels, annotations, ownerReference, data)."""
    renew_at = renew_at or (leaf.not_before + (leaf.not_after - leaf.not_before) / 2)
    owner_ref = (
        {"apiVersion": "v1", "kind": "Pod", "name": pod[0], "uid": pod[1], "controller": True}
        if pod
        else {
            "apiVersion": "trustwarden.io/v1alpha1",
            "kind": "WorkloadIdentity",
            "name": identity,
            "uid": wid_uid,
            "controller": True,
        }
    )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{namespace}-{name}",
            "resourceVersion": resource_version,
            "labels": {
                "app.kubernetes.io/managed-by": "trustwarden",
                "trustwarden.io/identity": identity,
            },
            "annotations": {
                **leaf.annotations(),
                "trustwarden.io/trust-domain": leaf.spiffe_id.trust_domain,
                "trustwarden.io/issuer": authority.sha256,
                "trustwarden.io/owner": owner,
                "trustwarden.io/renew-at": to_rfc3339(renew_at),
            },
            "ownerReferences": [owner_ref],
        },
        "data": {
            "tls.crt": b64(leaf.chain_pem),
            "tls.key": b64(leaf.private_key_pem),
            "ca.crt": b64(ca_pem if ca_pem is not None else authority.certificate_pem),
        },
    }


def bundle_body(
    namespace: str,
    anchors: list[Authority],
    *,
    revoked: list[tuple[Authority, IssuedLeaf]] = (),  # type: ignore[assignment]
    crl_authorities: list[Authority] | None = None,
    now: datetime = NOW,
    trust_domain: str = TD,
) -> dict[str, Any]:
    """The trustwarden-bundle ConfigMap: anchors plus one CRL per issuing authority,
    concatenated (as the operator writes them)."""
    crl = b""
    for authority in crl_authorities if crl_authorities is not None else anchors:
        entries = [
            RevokedSerial(leaf.serial, leaf.not_after, now - timedelta(minutes=1), "keyCompromise")
            for issuer, leaf in revoked
            if issuer is authority
        ]
        crl += build_crl(authority, entries, now - timedelta(minutes=1), crl_number=7)
    crls = {trust_domain: crl} if crl else {}
    data = build_namespace_bundle(
        {trust_domain: [a.certificate for a in anchors]}, crls, now, 1
    ).data
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "trustwarden-bundle",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "trustwarden"},
        },
        "data": data,
    }


def authority_status(authority: Authority, state: str) -> dict[str, str]:
    return {
        "serial": authority.serial_hex,
        "sha256": authority.sha256,
        "state": state,
        "notBefore": to_rfc3339(authority.not_before),
        "notAfter": to_rfc3339(authority.not_after),
    }


def td_body(
    authorities: list[tuple[Authority, str]],
    *,
    name: str = TD_NAME,
    trust_domain: str = TD,
    namespaces: int = 0,
    ca: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    ready: bool = True,
) -> dict[str, Any]:
    return {
        "apiVersion": "trustwarden.io/v1alpha1",
        "kind": "TrustDomain",
        "metadata": {"name": name, "annotations": dict(annotations or {})},
        "spec": {"trustDomain": trust_domain, "ca": ca or {"selfSigned": {"ttl": "2160h"}}},
        "status": {
            "authorities": [authority_status(a, s) for a, s in authorities],
            "namespaces": namespaces,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": "Ready" if ready else "CARecovering",
                    "message": "active authority valid" if ready else "recovering",
                },
            ],
        },
    }


def wid_body(
    namespace: str,
    name: str,
    *,
    owner: str = OWNER_PAYMENTS,
    degraded: tuple[str, str] | None = None,
    mode: str = "Shared",
) -> dict[str, Any]:
    conditions = [
        {
            "type": "Degraded",
            "status": "True" if degraded else "False",
            "reason": degraded[0] if degraded else "Ready",
            "message": degraded[1] if degraded else "1 certificate(s) valid",
        }
    ]
    return {
        "apiVersion": "trustwarden.io/v1alpha1",
        "kind": "WorkloadIdentity",
        "metadata": {"name": name, "namespace": namespace, "uid": f"wid-{namespace}-{name}"},
        "spec": {"trustDomain": TD_NAME, "owner": owner, "delivery": {"mode": mode}},
        "status": {"conditions": conditions},
    }


def pod_body(namespace: str, name: str, uid: str, secret: str | None) -> dict[str, Any]:
    annotations = {"trustwarden.io/secret": secret} if secret else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app"}]},
    }


# --------------------------------------------------------------------------- fake port


@dataclass
class FakePort:
    """An in-memory cluster. ``on_poll`` runs on every get (the 'operator' reacting)."""

    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    bundles: dict[str, dict[str, Any]] = field(default_factory=dict)
    identities: list[dict[str, Any]] = field(default_factory=list)
    domains: dict[str, dict[str, Any]] = field(default_factory=dict)
    namespace: str = "default"
    patches: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    on_poll: Callable[[FakePort], None] | None = None
    conflict_once: bool = False
    crd_missing: bool = False

    def add_secret(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        self.secrets[(meta["namespace"], meta["name"])] = body

    def _poll(self) -> None:
        if self.on_poll is not None:
            self.on_poll(self)

    def default_namespace(self) -> str:
        return self.namespace

    def list_secrets(self, namespace: str | None, label_selector: str) -> list[dict[str, Any]]:
        wanted = {}
        for term in label_selector.split(","):
            key, _, value = term.partition("=")
            wanted[key] = value if _ else None
        out = []
        for (ns, _name), body in sorted(self.secrets.items()):
            labels = body["metadata"].get("labels") or {}
            if namespace and ns != namespace:
                continue
            if all((k in labels) if v is None else labels.get(k) == v for k, v in wanted.items()):
                out.append(copy.deepcopy(body))
        return out

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._poll()
        body = self.secrets.get((namespace, name))
        return copy.deepcopy(body) if body is not None else None

    def patch_secret(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        body = self.secrets[(namespace, name)]
        wanted_rv = patch["metadata"].get("resourceVersion")
        if self.conflict_once:
            self.conflict_once = False
            raise ConflictError("conflict")
        if wanted_rv and wanted_rv != body["metadata"].get("resourceVersion"):
            raise ConflictError("conflict")
        self.patches.append((namespace, name, copy.deepcopy(patch)))
        body["metadata"].setdefault("annotations", {}).update(patch["metadata"]["annotations"])
        body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(body)

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.pods.get((namespace, name))

    def list_bundles(self, namespace: str | None) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(b)
            for ns, b in sorted(self.bundles.items())
            if not namespace or ns == namespace
        ]

    def get_bundle(self, namespace: str) -> dict[str, Any] | None:
        body = self.bundles.get(namespace)
        return copy.deepcopy(body) if body is not None else None

    def list_pod_certificate_requests(self, namespace: str | None) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(r)
            for r in getattr(self, "pod_certificate_requests", [])
            if not namespace or r["metadata"]["namespace"] == namespace
        ]

    def list_identities(self, namespace: str | None) -> list[dict[str, Any]]:
        if self.crd_missing:
            raise CRDMissingError("install the CRDs: kubectl apply -f deploy/crds/")
        return [
            i for i in self.identities if not namespace or i["metadata"]["namespace"] == namespace
        ]

    def list_trust_domains(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(d) for d in self.domains.values()]

    def get_trust_domain(self, name: str) -> dict[str, Any] | None:
        self._poll()
        body = self.domains.get(name)
        return copy.deepcopy(body) if body is not None else None

    def patch_trust_domain(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        body = self.domains[name]
        self.patches.append(("", name, copy.deepcopy(patch)))
        body["metadata"].setdefault("annotations", {}).update(patch["metadata"]["annotations"])
        return copy.deepcopy(body)


def is_revoke_requested(body: dict[str, Any]) -> bool:
    return REVOKE_ANNOTATION in (body["metadata"].get("annotations") or {})


# --------------------------------------------------------------------------- sanity


def test_fixture_certificates_are_deterministic() -> None:
    ca1, ca2 = make_ca(), make_ca()
    assert ca1.sha256 == ca2.sha256
    leaf1 = make_leaf(ca1, "/ns/payments/sa/api", serial=0x1001)
    leaf2 = make_leaf(ca2, "/ns/payments/sa/api", serial=0x1001)
    assert leaf1.sha256 == leaf2.sha256
    assert leaf1.spiffe_id.uri == "spiffe://prod.example.org/ns/payments/sa/api"
    assert KeyAlgorithm.Ed25519 == ca1.key_algorithm


def test_fake_port_selects_by_label() -> None:
    ca = make_ca()
    port = FakePort()
    port.add_secret(secret_body("a", "s", make_leaf(ca, "/ns/a/sa/x", serial=5), ca, identity="x"))
    assert len(port.list_secrets(None, "app.kubernetes.io/managed-by=trustwarden")) == 1
    assert len(port.list_secrets("a", "trustwarden.io/identity=y")) == 0
    assert len(port.list_secrets("a", "trustwarden.io/identity")) == 1
