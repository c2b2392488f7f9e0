"""Shared X.509 helpers: parsing PEM with limits, fingerprints, CA checks."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from .errors import InvalidPEMError
from .keys import MAX_PEM_BYTES

_SHA256 = hashes.SHA256()


def sha256_hex(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the DER encoding: the identity of a certificate."""
    return cert.fingerprint(_SHA256).hex()


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def describe(cert: x509.Certificate) -> str:
    """Short human description for error messages: subject and serial."""
    try:
        subject = cert.subject.rfc4514_string()
    except ValueError:  # pragma: no cover - malformed names
        subject = "<unprintable subject>"
    return f"{subject[:120] or '<empty subject>'} (serial {serial_hex(cert.serial_number)})"


_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----"
)


def only_certificate_blocks(data: bytes, *, source: str) -> None:
    """Refuse PEM input that holds anything besides CERTIFICATE blocks and whitespace: a
    private key behind a look-alike marker (a non-breaking space in BEGIN) or bare base64 is
    refused as well as a well-formed key block. The message never quotes the input."""
    rest = _PEM_BLOCK.sub(b"", data)
    if rest.strip(b" \t\r\n"):
        offset = len(data) - len(data.lstrip(b" \t\r\n"))
        for match in _PEM_BLOCK.finditer(data):
            if match.start() > offset and data[offset : match.start()].strip(b" \t\r\n"):
                break
            offset = match.end()
        line = data[:offset].count(b"\n") + 1
        raise InvalidPEMError(
            f"{source}: holds something other than PEM certificate blocks near line {line} "
            "(a key, text or bare base64); keep only -----BEGIN CERTIFICATE----- blocks: "
            "anchors never need a private key"
        )


def load_certificates(
    data: bytes,
    *,
    source: str,
    max_certs: int,
    what: str = "certificate",
    strict: bool = False,
) -> list[x509.Certificate]:
    """Parse one or more PEM certificates, with size and count limits. `strict` refuses
    anything else in the input (see only_certificate_blocks)."""
    if isinstance(data, str):
        data = data.encode()
    if not isinstance(data, bytes | bytearray):
        raise InvalidPEMError(f"{source}: expected PEM bytes, got {type(data).__name__}")
    if len(data) > MAX_PEM_BYTES:
        raise InvalidPEMError(
            f"{source}: PEM input is {len(data)} bytes, above the {MAX_PEM_BYTES}-byte limit; "
            f"provide only the {what}s that are needed"
        )
    if strict:
        only_certificate_blocks(bytes(data), source=source)
    count = data.count(b"-----BEGIN CERTIFICATE-----")
    if count == 0:
        hint = ""
        if b"PRIVATE KEY-----" in data:
            hint = " (it holds a private key; the key belongs in tls.key)"
        raise InvalidPEMError(
            f"{source}: no '-----BEGIN CERTIFICATE-----' block found{hint}; provide PEM "
            f"encoded {what}s"
        )
    if count > max_certs:
        raise InvalidPEMError(
            f"{source}: {count} certificates found, more than the limit of {max_certs}; "
            "remove the ones that are not needed"
        )
    try:
        certs = x509.load_pem_x509_certificates(bytes(data))
    except ValueError as exc:
        raise InvalidPEMError(
            f"{source}: cannot parse the PEM {what}s ({str(exc)[:160]}); check that each "
            "block is a complete, unmodified certificate"
        ) from None
    return certs


def basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def is_ca(cert: x509.Certificate) -> bool:
    bc = basic_constraints(cert)
    return bc is not None and bc.ca


def key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def subject_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def authority_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    return aki.key_identifier


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True only when ``issuer`` names ``cert``'s issuer and its key verifies ``cert``'s
    signature. The one check that counts as evidence: a look-alike that copies names and key
    identifiers fails it."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # any failure (signature, algorithm, names): not this issuer
        return False
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    return signed_by(cert, cert)


def expired(cert: x509.Certificate, now: datetime) -> bool:
    return now >= cert.not_valid_after_utc


class CertificateValidity:
    """Validity and identity of a dataclass's ``certificate`` field, shared by authorities and
    issued leaves."""

    certificate: x509.Certificate

    @property
    def serial_hex(self) -> str:
        return serial_hex(self.certificate.serial_number)

    @cached_property
    def sha256(self) -> str:
        return sha256_hex(self.certificate)

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def lifetime(self) -> timedelta:
        return self.not_after - self.not_before
