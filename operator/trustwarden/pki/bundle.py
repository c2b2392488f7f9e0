"""Trust bundle building: anchor filtering, PEM and SPIFFE (JWKS) encodings, and the
per-namespace ``trustwarden-bundle`` ConfigMap content.

Split as trust-manager does: this module only *builds* content; writing it per namespace
(skipped when ``content_hash`` is unchanged) belongs to the k8s layer.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ._clock import require_utc
from ._x509util import cert_to_pem, expired, is_ca, sha256_hex
from .errors import InvalidArgumentError, InvalidPEMError
from .spiffe import validate_trust_domain

__all__ = [
    "BUNDLE_SPIFFE_KEY",
    "CA_CERT_KEY",
    "NamespaceBundle",
    "NamespaceBundleInput",
    "anchors_to_pem",
    "build_namespace_bundle",
    "content_hash",
    "filter_anchors",
    "spiffe_bundle_jwks",
]

CA_CERT_KEY = "ca.crt"
BUNDLE_SPIFFE_KEY = "bundle.spiffe"
_EC_JWK_CURVES = {
    "secp256r1": ("P-256", 32),
    "secp384r1": ("P-384", 48),
    "secp521r1": ("P-521", 66),
}


def filter_anchors(certs: Iterable[x509.Certificate], now: datetime) -> list[x509.Certificate]:
    """Deduplicate by SHA-256, drop expired and non-CA certificates, and sort by subject then
    fingerprint, so equal inputs always give byte-identical bundles. Certificates that are
    not yet valid are kept: a prepared authority is published before it signs anything."""
    now = require_utc(now)
    unique: dict[str, x509.Certificate] = {}
    for cert in certs:
        if expired(cert, now) or not is_ca(cert):
            continue
        unique.setdefault(sha256_hex(cert), cert)
    ordered = sorted(unique.items(), key=lambda item: (item[1].subject.rfc4514_string(), item[0]))
    return [cert for _, cert in ordered]


def anchors_to_pem(certs: Iterable[x509.Certificate]) -> str:
    """Concatenated PEM, in the given order."""
    return b"".join(cert_to_pem(c) for c in certs).decode("ascii")


def _b64url_uint(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode("ascii")


def _jwk(cert: x509.Certificate) -> dict[str, Any] | None:
    public_key = cert.public_key()
    der = cert.public_bytes(serialization.Encoding.DER)
    key: dict[str, Any] = {"use": "x509-svid"}
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = _EC_JWK_CURVES.get(public_key.curve.name)
        if curve is None:
            return None
        numbers = public_key.public_numbers()
        key.update(
            kty="EC",
            crv=curve[0],
            x=_b64url_uint(numbers.x, curve[1]),
            y=_b64url_uint(numbers.y, curve[1]),
        )
    elif isinstance(public_key, rsa.RSAPublicKey):
        numbers_rsa = public_key.public_numbers()
        key.update(kty="RSA", n=_b64url_uint(numbers_rsa.n), e=_b64url_uint(numbers_rsa.e))
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        key.update(kty="OKP", crv="Ed25519", x=base64.urlsafe_b64encode(raw).rstrip(b"=").decode())
    else:
        return None
    key["x5c"] = [base64.b64encode(der).decode("ascii")]
    return key


def spiffe_bundle_jwks(
    certs: Sequence[x509.Certificate], sequence: int, refresh_hint: int | None = None
) -> dict[str, Any]:
    """A SPIFFE bundle (JWK set) holding the X.509 authorities ``certs``.

    Keys whose type JWK cannot express here are left out of the JWKS; they still appear in
    the PEM outputs.
    """
    if sequence < 0:
        raise InvalidArgumentError(f"spiffe_sequence must be >= 0, got {sequence}")
    keys = [k for k in (_jwk(c) for c in certs) if k is not None]
    bundle: dict[str, Any] = {"keys": keys, "spiffe_sequence": sequence}
    if refresh_hint is not None:
        if refresh_hint <= 0:
            raise InvalidArgumentError(f"spiffe_refresh_hint must be > 0, got {refresh_hint}")
        bundle["spiffe_refresh_hint"] = refresh_hint
    return bundle


@dataclass(frozen=True)
class NamespaceBundle:
    """ConfigMap ``data`` for one namespace, plus a hash so writers can skip no-op writes."""

    data: dict[str, str]
    content_hash: str


@dataclass(frozen=True)
class NamespaceBundleInput:
    """What a namespace is entitled to: anchors per trust domain name (its own domains plus
    their ``federatesWith``) and the CRL PEM of each issuing domain among them."""

    domains: Mapping[str, Sequence[x509.Certificate]]
    crls: Mapping[str, bytes] = field(default_factory=dict)
    sequence: int = 0
    refresh_hint: int | None = None

    def build(self, now: datetime) -> NamespaceBundle:
        return build_namespace_bundle(
            self.domains, self.crls, now, self.sequence, refresh_hint=self.refresh_hint
        )


def content_hash(data: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for key in sorted(data):
        digest.update(key.encode("utf-8") + b"\0" + data[key].encode("utf-8") + b"\0")
    return digest.hexdigest()


def build_namespace_bundle(
    domains: Mapping[str, Sequence[x509.Certificate]],
    crls: Mapping[str, bytes],
    now: datetime,
    sequence: int,
    *,
    refresh_hint: int | None = None,
) -> NamespaceBundle:
    """Build the ``trustwarden-bundle`` ConfigMap data.

    Keys: ``ca.crt`` (every anchor, deduplicated and sorted), ``<trustDomain>.pem`` per
    domain, ``<trustDomain>.crl.pem`` per issuing domain in ``crls`` and ``bundle.spiffe``
    (JSON map trust domain -> JWKS, serialised deterministically).
    """
    now = require_utc(now)
    data: dict[str, str] = {}
    spiffe: dict[str, Any] = {}
    every: list[x509.Certificate] = []
    for trust_domain in sorted(domains):
        validate_trust_domain(trust_domain, field="bundle trust domain")
        anchors = filter_anchors(domains[trust_domain], now)
        every.extend(anchors)
        data[f"{trust_domain}.pem"] = anchors_to_pem(anchors)
        spiffe[trust_domain] = spiffe_bundle_jwks(anchors, sequence, refresh_hint)
    for trust_domain in sorted(crls):
        if trust_domain not in domains:
            raise InvalidArgumentError(
                f"a CRL was given for trust domain {trust_domain!r}, which is not among this "
                "namespace's domains; pass CRLs only for domains in the bundle"
            )
        crl = crls[trust_domain]
        if b"-----BEGIN X509 CRL-----" not in crl:
            raise InvalidPEMError(
                f"CRL for trust domain {trust_domain!r} is not a PEM X509 CRL; pass the "
                "output of build_crl()"
            )
        key = f"{trust_domain}.crl.pem"
        if key in data:
            raise InvalidArgumentError(
                f"bundle key {key!r} is produced twice (trust domain names "
                f"{trust_domain!r} and {trust_domain + '.crl'!r} collide); rename one"
            )
        data[key] = crl.decode("ascii")
    data[CA_CERT_KEY] = anchors_to_pem(filter_anchors(every, now))
    data[BUNDLE_SPIFFE_KEY] = json.dumps(spiffe, sort_keys=True, separators=(",", ":"))
    return NamespaceBundle(data=data, content_hash=content_hash(data))
