"""Names the operator writes, and small readers over plain JSON bodies (Secrets, ConfigMaps,
TrustDomains, WorkloadIdentities) as the API server returns them."""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

from trustwarden.pki._clock import from_rfc3339
from trustwarden.pki.errors import PKIError

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "trustwarden"
IDENTITY_LABEL = "trustwarden.io/identity"
SECRET_ANNOTATION = "trustwarden.io/secret"
REVOKE_ANNOTATION = "trustwarden.io/revoke"
ROTATE_ANNOTATION = "trustwarden.io/rotate"
ACTIVATE_AFTER_ANNOTATION = "trustwarden.io/activate-after"
ROTATION_MODE_ANNOTATION = "trustwarden.io/rotation-mode"
SERIAL_ANNOTATION = "trustwarden.io/serial"
ISSUER_ANNOTATION = "trustwarden.io/issuer"
OWNER_ANNOTATION = "trustwarden.io/owner"
RENEW_AT_ANNOTATION = "trustwarden.io/renew-at"
TRUST_DOMAIN_ANNOTATION = "trustwarden.io/trust-domain"
SPIFFE_ID_ANNOTATION = "trustwarden.io/spiffe-id"
BUNDLE_CONFIGMAP = "trustwarden-bundle"
OPERATOR_NAMESPACE = "trustwarden-system"
SVID_VOLUME = "trustwarden-svid"
SECRET_SELECTOR = f"{MANAGED_BY}={MANAGER},{IDENTITY_LABEL}"
BUNDLE_SELECTOR = f"{MANAGED_BY}={MANAGER}"

Body = Mapping[str, Any]


def meta(body: Body) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def name_of(body: Body) -> str:
    return str(meta(body).get("name") or "")


def namespace_of(body: Body) -> str:
    return str(meta(body).get("namespace") or "")


def labels_of(body: Body) -> Mapping[str, str]:
    return meta(body).get("labels") or {}


def annotations_of(body: Body) -> Mapping[str, str]:
    return meta(body).get("annotations") or {}


def is_managed(body: Body) -> bool:
    return labels_of(body).get(MANAGED_BY) == MANAGER


def secret_bytes(body: Body, key: str) -> bytes | None:
    """A Secret data key, base64-decoded; None when absent or not valid base64."""
    raw = (body.get("data") or {}).get(key)
    if not raw:
        return None
    try:
        return base64.b64decode(str(raw), validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_time(text: object) -> datetime | None:
    if not text:
        return None
    try:
        return from_rfc3339(str(text), "timestamp")
    except PKIError:
        return None


def condition(body: Body, type_: str) -> Mapping[str, Any] | None:
    for cond in (body.get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return dict(cond)
    return None


def normalize_serial(text: str) -> str:
    """Lowercase hex without colons, spaces, ``0x`` or leading zeros (the form of the
    ``trustwarden.io/serial`` annotation); raises ValueError on anything that is not hex."""
    cleaned = text.strip().lower().replace(":", "").replace(" ", "")
    if cleaned.startswith("0x"):
        cleaned = cleaned[2:]
    if not cleaned or any(c not in "0123456789abcdef" for c in cleaned):
        raise ValueError(text)
    return format(int(cleaned, 16), "x")


@dataclass(frozen=True)
class OwnerRef:
    kind: str
    name: str
    uid: str


def owner_refs(body: Body) -> tuple[OwnerRef, ...]:
    return tuple(
        OwnerRef(str(o.get("kind") or ""), str(o.get("name") or ""), str(o.get("uid") or ""))
        for o in meta(body).get("ownerReferences") or ()
    )


def load_pem_certs(data: bytes | str | None) -> list[x509.Certificate]:
    """Every certificate in a PEM blob; [] when there is none or it does not parse."""
    if not data:
        return []
    raw = data.encode() if isinstance(data, str) else data
    try:
        return list(x509.load_pem_x509_certificates(raw))
    except ValueError:
        return []


_CRL_BEGIN = b"-----BEGIN X509 CRL-----"
_CRL_END = b"-----END X509 CRL-----"


def load_pem_crls(data: bytes | str | None) -> list[x509.CertificateRevocationList]:
    """Every CRL in a blob of concatenated PEM CRLs (one per issuing authority); blocks that
    do not parse are skipped."""
    if not data:
        return []
    raw = data.encode() if isinstance(data, str) else data
    out: list[x509.CertificateRevocationList] = []
    start = raw.find(_CRL_BEGIN)
    while start != -1:
        end = raw.find(_CRL_END, start)
        if end == -1:
            break
        block = raw[start : end + len(_CRL_END)] + b"\n"
        with contextlib.suppress(ValueError):
            out.append(x509.load_pem_x509_crl(block))
        start = raw.find(_CRL_BEGIN, end)
    return out


def sort_bodies(bodies: Sequence[Body]) -> list[Body]:
    return sorted(bodies, key=lambda b: (namespace_of(b), name_of(b)))
