"""`trustwarden verify`: independent checks of one X.509-SVID Secret against its namespace's
trust bundle, each reported as ``PASS|FAIL|SKIP <check>: <detail>``.

Checks: ``chain`` (cryptography's WebPKI path builder with a client verifier, at ``now``,
against the bundle's ``ca.crt``), ``spiffe`` (X509-SVID conformance), ``key-pair``
(``tls.key`` belongs to the leaf), ``revocation`` (the issuer's CRL from the bundle, its
signature checked) and ``validity`` (notBefore <= now < notAfter).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from trustwarden.names import SPIFFE_ID_ANNOTATION, TRUST_DOMAIN_ANNOTATION
from trustwarden.pki._x509util import serial_hex, sha256_hex, signed_by
from trustwarden.pki.errors import PKIError
from trustwarden.pki.keys import key_algorithm_of, public_key_der
from trustwarden.pki.spiffe import SpiffeID

from .errors import UsageError
from .format import human_duration, rfc3339
from .model import load_pem_certs, load_pem_crls

MAX_CHAIN_DEPTH = 8
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)


class Outcome(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Check:
    name: str
    outcome: Outcome
    detail: str

    @property
    def line(self) -> str:
        return f"{self.outcome.value} {self.name}: {self.detail}"

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAIL


@dataclass(frozen=True)
class VerifyInput:
    """What is checked: the Secret's PEM data and its annotations, and the bundle's data."""

    chain_pem: bytes | None
    key_pem: bytes | None
    annotations: Mapping[str, str]
    bundle: Mapping[str, str] | None  # the namespace's trustwarden-bundle data; None: missing
    source: str = "Secret"
    bundle_source: str = "trustwarden-bundle"
    key_expected: bool = True  # False for a PEM file without a key: key-pair is skipped


def _fail(name: str, detail: str) -> Check:
    return Check(name, Outcome.FAIL, detail)


def _pass(name: str, detail: str) -> Check:
    return Check(name, Outcome.PASS, detail)


def verify(data: VerifyInput, now: datetime) -> list[Check]:
    if not data.chain_pem:
        return [_fail("certificate", f"{data.source} has no tls.crt")]
    certs = load_pem_certs(data.chain_pem)
    if not certs:
        return [_fail("certificate", f"{data.source} tls.crt is not a readable PEM certificate")]
    leaf, intermediates = certs[0], certs[1:]
    anchors = load_pem_certs((data.bundle or {}).get("ca.crt"))
    chain_check, issuer = _check_chain(data, leaf, intermediates, anchors, now)
    spiffe_check, spiffe_id = _check_spiffe(data, leaf)
    return [
        chain_check,
        spiffe_check,
        _check_key(data, leaf),
        _check_revocation(data, leaf, issuer, spiffe_id, now),
        _check_validity(leaf, now),
    ]


# --------------------------------------------------------------------------- chain


def _verifier(anchors: Sequence[x509.Certificate], now: datetime) -> Any:
    # A client verifier, but with the EKU left to the spiffe check: server-only SVIDs are
    # legitimate and the WebPKI client profile would insist on clientAuth.
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None
    )
    return (
        PolicyBuilder()
        .store(Store(list(anchors)))
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
        .build_client_verifier()
    )


def _direct_issuer(
    cert: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    for candidate in candidates:
        if candidate.subject == cert.issuer and signed_by(cert, candidate):
            return candidate
    return None


def _uses_eddsa(certs: Sequence[x509.Certificate]) -> bool:
    return any(
        isinstance(c.public_key(), ed25519.Ed25519PublicKey | ed448.Ed448PublicKey) for c in certs
    )


def _describe_anchor(anchor: x509.Certificate) -> str:
    return f"anchor serial {serial_hex(anchor.serial_number)}, sha256 {sha256_hex(anchor)[:12]}"


def _check_chain(
    data: VerifyInput,
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    now: datetime,
) -> tuple[Check, x509.Certificate | None]:
    issuer = _direct_issuer(leaf, [*intermediates, *anchors])
    if data.bundle is None:
        return _fail("chain", f"{data.bundle_source} not found; cannot check the chain"), issuer
    if not anchors:
        return _fail("chain", f"{data.bundle_source} ca.crt holds no certificate"), issuer
    try:
        verified = _verifier(anchors, now).verify(leaf, list(intermediates))
    except VerificationError as exc:
        if _uses_eddsa([leaf, *intermediates, *anchors]):
            return _check_chain_by_signature(data, leaf, intermediates, anchors, now), issuer
        return _fail(
            "chain",
            f"does not verify against {data.bundle_source} ca.crt at {rfc3339(now)}: {exc}",
        ), issuer
    chain = list(verified.chain)
    issuer = chain[1] if len(chain) > 1 else issuer
    return _pass(
        "chain",
        f"verifies against {data.bundle_source} ca.crt ({_describe_anchor(chain[-1])}; "
        f"{len(chain)} certificates)",
    ), issuer


def _check_chain_by_signature(
    data: VerifyInput,
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    now: datetime,
) -> Check:
    """EdDSA: the WebPKI profile rejects Ed25519, so walk the signatures ourselves."""
    note = "(EdDSA: signatures and validity checked directly, the WebPKI verifier rejects it)"
    current = leaf
    anchor_shas = {sha256_hex(a) for a in anchors}
    for _ in range(MAX_CHAIN_DEPTH):
        if not current.not_valid_before_utc <= now < current.not_valid_after_utc:
            return _fail(
                "chain",
                f"certificate {serial_hex(current.serial_number)} is not "
                f"valid at {rfc3339(now)} {note}",
            )
        if sha256_hex(current) in anchor_shas:
            return _pass(
                "chain",
                f"verifies against {data.bundle_source} ca.crt "
                f"({_describe_anchor(current)}) {note}",
            )
        issuer = _direct_issuer(current, [*anchors, *intermediates])
        if issuer is None:
            return _fail(
                "chain",
                f"no certificate in {data.bundle_source} ca.crt or tls.crt issued "
                f"{serial_hex(current.serial_number)} {note}",
            )
        current = issuer
    return _fail("chain", f"chain longer than {MAX_CHAIN_DEPTH} {note}")


# --------------------------------------------------------------------------- SPIFFE


def _check_spiffe(data: VerifyInput, leaf: x509.Certificate) -> tuple[Check, SpiffeID | None]:
    name = "spiffe"
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    except ValueError as exc:
        return _fail(name, f"malformed extensions: {exc}"), None
    if len(uris) != 1:
        return _fail(name, f"{len(uris)} URI SANs; an X509-SVID has exactly one"), None
    try:
        spiffe_id = SpiffeID.parse(uris[0])
    except PKIError as exc:
        return _fail(name, str(exc)), None
    try:
        bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return _fail(
            name, "basicConstraints is missing; an X509-SVID leaf sets CA:false"
        ), spiffe_id
    if bc.ca:
        return _fail(name, "basicConstraints CA:true; a leaf X509-SVID must be CA:false"), spiffe_id
    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return _fail(name, "keyUsage is missing; digitalSignature is required"), spiffe_id
    if ku.key_cert_sign or ku.crl_sign:
        return _fail(name, "keyUsage has keyCertSign or cRLSign; a leaf must not"), spiffe_id
    if not ku.digital_signature:
        return _fail(name, "keyUsage lacks digitalSignature"), spiffe_id
    recorded = data.annotations.get(SPIFFE_ID_ANNOTATION)
    if recorded and recorded != spiffe_id.uri:
        return _fail(
            name, f"certificate says {spiffe_id.uri} but the Secret is annotated {recorded}"
        ), spiffe_id
    return _pass(
        name, f"{spiffe_id.uri} (one URI SAN, CA:false, no keyCertSign/cRLSign)"
    ), spiffe_id


# --------------------------------------------------------------------------- key pair


def _check_key(data: VerifyInput, leaf: x509.Certificate) -> Check:
    name = "key-pair"
    if not data.key_pem:
        if not data.key_expected:
            return Check(name, Outcome.SKIP, "no private key in the input")
        return _fail(name, f"{data.source} has no tls.key")
    try:
        key = serialization.load_pem_private_key(data.key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return _fail(name, f"tls.key cannot be parsed: {str(exc)[:120]}")
    try:
        matches = public_key_der(key.public_key()) == public_key_der(leaf.public_key())
    except (ValueError, TypeError, PKIError):
        matches = False
    if not matches:
        return _fail(name, "tls.key does not belong to the certificate in tls.crt")
    try:
        algorithm = key_algorithm_of(leaf.public_key()).value
    except PKIError:
        algorithm = type(leaf.public_key()).__name__
    return _pass(name, f"tls.key matches the certificate's {algorithm} public key")


# --------------------------------------------------------------------------- revocation


def _check_revocation(
    data: VerifyInput,
    leaf: x509.Certificate,
    issuer: x509.Certificate | None,
    spiffe_id: SpiffeID | None,
    now: datetime,
) -> Check:
    name = "revocation"
    trust_domain = (
        spiffe_id.trust_domain if spiffe_id else data.annotations.get(TRUST_DOMAIN_ANNOTATION)
    )
    if data.bundle is None:
        return _fail(name, f"{data.bundle_source} not found; cannot check the CRL")
    if not trust_domain:
        return _fail(name, "no trust domain known for this certificate; cannot pick a CRL")
    key = f"{trust_domain}.crl.pem"
    crls = load_pem_crls(data.bundle.get(key))
    if not crls:
        return _fail(name, f"{data.bundle_source} has no readable {key}")
    same_issuer = [c for c in crls if c.issuer == leaf.issuer]
    if not same_issuer:
        return _fail(name, f"{key} has no CRL from the certificate's issuer")
    if issuer is None:
        return _fail(name, "the issuer certificate is unknown; cannot check the CRL signature")
    signed = [c for c in same_issuer if c.is_signature_valid(issuer.public_key())]  # type: ignore[arg-type]
    if not signed:
        return _fail(name, f"the CRL in {key} is not signed by the issuer; it cannot be trusted")
    crl = max(signed, key=lambda c: c.last_update_utc)
    serial = serial_hex(leaf.serial_number)
    entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
    if entry is not None:
        reason = ""
        with contextlib.suppress(x509.ExtensionNotFound):
            flag = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
            reason = f", reason {flag.value}"
        return _fail(
            name,
            f"serial {serial} is revoked (since {rfc3339(entry.revocation_date_utc)}{reason}) "
            f"by the CRL in {data.bundle_source} {key}",
        )
    next_update = crl.next_update_utc
    if next_update is not None and next_update < now:
        return _fail(
            name,
            f"the CRL in {key} expired at {rfc3339(next_update)}; the operator refreshes it "
            "every 12h: is it running?",
        )
    return _pass(
        name,
        f"serial {serial} is not in the CRL of issuer {serial_hex(issuer.serial_number)} "
        f"(signature checked, {len(list(crl))} revoked, updated {rfc3339(crl.last_update_utc)})",
    )


# --------------------------------------------------------------------------- validity


def _check_validity(leaf: x509.Certificate, now: datetime) -> Check:
    name = "validity"
    not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    if now < not_before:
        return _fail(
            name,
            f"not valid before {rfc3339(not_before)} (in {human_duration(not_before - now)})",
        )
    if now >= not_after:
        return _fail(
            name, f"expired at {rfc3339(not_after)} ({human_duration(now - not_after)} ago)"
        )
    return _pass(
        name,
        f"valid {rfc3339(not_before)} to {rfc3339(not_after)} "
        f"({human_duration(not_after - now)} left)",
    )


# --------------------------------------------------------------------------- --from-file


@dataclass(frozen=True)
class FileSource:
    chain_pem: bytes | None
    key_pem: bytes | None
    annotations: Mapping[str, str]
    namespace: str | None
    name: str | None
    is_secret: bool


def _b64(value: object, where: str) -> bytes | None:
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"{where} is not valid base64") from None


def parse_file(content: bytes, path: str) -> FileSource:
    """A saved Secret (``kubectl get secret -o yaml|json``) or PEM (certificates, and
    optionally the private key)."""
    if b"-----BEGIN" in content and b"apiVersion" not in content:
        certs: list[bytes] = []
        key: bytes | None = None
        for match in _PEM_BLOCK.finditer(content):
            if match.group(1) == b"CERTIFICATE":
                certs.append(match.group(0) + b"\n")
            elif match.group(1).endswith(b"PRIVATE KEY") and key is None:
                key = match.group(0) + b"\n"
        return FileSource(b"".join(certs) or None, key, {}, None, None, False)
    try:
        doc: Any = (
            json.loads(content) if content.lstrip().startswith(b"{") else yaml.safe_load(content)
        )
    except (ValueError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: neither PEM nor a Secret in YAML/JSON ({exc})") from None
    if not isinstance(doc, Mapping) or doc.get("kind") != "Secret":
        raise UsageError(
            f"{path}: expected a Secret (kubectl get secret NAME -o yaml) or PEM certificates"
        )
    meta = doc.get("metadata") or {}
    data = doc.get("data") or {}
    string_data = doc.get("stringData") or {}

    def item(key: str) -> bytes | None:
        if string_data.get(key):
            return str(string_data[key]).encode()
        return _b64(data.get(key), f"{path}: data.{key}")

    return FileSource(
        item("tls.crt"),
        item("tls.key"),
        {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
        str(meta["namespace"]) if meta.get("namespace") else None,
        str(meta["name"]) if meta.get("name") else None,
        True,
    )
