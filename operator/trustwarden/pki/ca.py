"""Certificate authorities: self-signed roots, bring-your-own chains and external anchors."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID, NameOID

from ._clock import floor_second, require_utc
from ._x509util import (
    CertificateValidity,
    basic_constraints,
    cert_to_pem,
    describe,
    is_self_signed,
    key_usage,
    load_certificates,
    serial_hex,
    signed_by,
)
from .bundle import filter_anchors
from .errors import (
    CAValidityError,
    ChainError,
    InvalidArgumentError,
    KeyMismatchError,
    NoAnchorsError,
    NotACAError,
    UnsupportedAlgorithmError,
)
from .keys import (
    KeyAlgorithm,
    PrivateKey,
    generate_private_key,
    key_algorithm_of,
    load_private_key,
    public_key_matches,
    signature_hash_for,
)
from .spiffe import trust_domain_uri, validate_trust_domain

__all__ = [
    "DEFAULT_CA_TTL",
    "MAX_ANCHORS",
    "MAX_CHAIN_CERTS",
    "ORGANIZATION",
    "Authority",
    "authority_from_parts",
    "create_self_signed_ca",
    "load_anchors",
    "load_authority_from_pem",
    "new_serial",
]

ORGANIZATION = "trustwarden"
DEFAULT_CA_TTL = timedelta(hours=2160)
CA_BACKDATE = timedelta(minutes=5)
MAX_CHAIN_CERTS = 10
MAX_ANCHORS = 100
_SERIAL_BITS = 159
_ACCEPTED_SIGNATURE_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)

_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def new_serial() -> int:
    """A random, positive 159-bit serial (top bit set): 158 bits of CSPRNG entropy, always
    20 DER octets, well above the 64 bits CA/B and SPIFFE practice require."""
    return secrets.randbits(_SERIAL_BITS - 1) | (1 << (_SERIAL_BITS - 1))


def check_serial(serial: int, what: str = "serial") -> int:
    if not isinstance(serial, int) or isinstance(serial, bool):
        raise InvalidArgumentError(f"{what} must be an int, got {type(serial).__name__}")
    if serial <= 0 or serial.bit_length() > _SERIAL_BITS:
        raise InvalidArgumentError(
            f"{what} {serial} is out of range; X.509 serials must be positive and fit in "
            f"{_SERIAL_BITS} bits (20 octets)"
        )
    return serial


@dataclass(frozen=True)
class Authority(CertificateValidity):
    """A CA that can sign: its certificate, key, intermediates up to the root, and root.

    ``chain`` lists the certificates between ``certificate`` and ``root`` (issuer first);
    it is empty when ``certificate`` is itself the root (self-signed).
    """

    certificate: x509.Certificate
    private_key: PrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...]
    root: x509.Certificate

    @property
    def anchor(self) -> x509.Certificate:
        """The trust anchor to publish in bundles (the root)."""
        return self.root

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    @cached_property
    def path_not_after(self) -> datetime:
        """The earliest notAfter along the path to the root: leaves never outlive it."""
        return min(c.not_valid_after_utc for c in (self.certificate, *self.chain, self.anchor))

    @cached_property
    def key_algorithm(self) -> KeyAlgorithm:
        return key_algorithm_of(self.private_key)

    @cached_property
    def subject_key_identifier(self) -> x509.SubjectKeyIdentifier:
        try:
            return self.certificate.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier
            ).value
        except x509.ExtensionNotFound:
            return x509.SubjectKeyIdentifier.from_public_key(self.certificate.public_key())

    @cached_property
    def authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        """The AKI extension value for everything this authority signs."""
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            self.subject_key_identifier
        )

    @cached_property
    def authority_key_identifier_extension(self) -> x509.Extension[x509.AuthorityKeyIdentifier]:
        return x509.Extension(
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False, self.authority_key_identifier
        )

    @cached_property
    def certificate_pem(self) -> bytes:
        return cert_to_pem(self.certificate)

    @cached_property
    def intermediates_pem(self) -> bytes:
        """PEM of ``chain``: the intermediates above ``certificate`` (empty for a root)."""
        return b"".join(cert_to_pem(c) for c in self.chain)

    @cached_property
    def issuing_chain_pem(self) -> bytes:
        """What a leaf's ``tls.crt`` carries after the leaf: ``certificate`` and ``chain``
        when this authority is an intermediate, nothing when it is the root itself."""
        if self.is_root:
            return b""
        return self.certificate_pem + self.intermediates_pem

    @cached_property
    def is_root(self) -> bool:
        return self.root is self.certificate or self.root == self.certificate

    @cached_property
    def signature_hash(self) -> hashes.SHA256 | hashes.SHA384 | None:
        return signature_hash_for(self.private_key)


def _ca_name(trust_domain: str, serial: int) -> x509.Name:
    suffix = f" trustwarden CA {serial_hex(serial)[:8]}"
    common_name = trust_domain[: 64 - len(suffix)] + suffix
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def create_self_signed_ca(
    trust_domain: str,
    key_algorithm: KeyAlgorithm = KeyAlgorithm.ECDSAP256,
    ttl: timedelta = DEFAULT_CA_TTL,
    *,
    now: datetime,
    path_len: int | None = None,
    serial: int | None = None,
    private_key: PrivateKey | None = None,
    backdate: timedelta = CA_BACKDATE,
) -> Authority:
    """Create a self-signed root for ``trust_domain``.

    notBefore is backdated by ``backdate`` (clock skew between nodes); notAfter is
    ``now + ttl``. ``private_key`` and ``serial`` are injectable for reproducible tests.
    """
    now = require_utc(now)
    validate_trust_domain(trust_domain, field="spec.trustDomain")
    if ttl <= timedelta(0):
        raise InvalidArgumentError(
            f"CA ttl must be positive, got {ttl}; set spec.ca.selfSigned.ttl, e.g. 2160h"
        )
    if path_len is not None and path_len < 0:
        raise InvalidArgumentError(f"path_len must be None or >= 0, got {path_len}")
    if private_key is None:
        private_key = generate_private_key(key_algorithm)
    elif key_algorithm_of(private_key, source="CA private key") != key_algorithm:
        raise InvalidArgumentError(
            f"the supplied CA private key is {key_algorithm_of(private_key)}, "
            f"not {KeyAlgorithm(key_algorithm).value}; pass a matching key_algorithm"
        )
    serial = new_serial() if serial is None else check_serial(serial, "CA serial")
    name = _ca_name(trust_domain, serial)
    public_key = private_key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(floor_second(now - backdate))
        .not_valid_after(floor_second(now + ttl))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_len), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(trust_domain_uri(trust_domain))]
            ),
            critical=False,
        )
    )
    certificate = builder.sign(private_key, signature_hash_for(private_key))
    return Authority(certificate=certificate, private_key=private_key, chain=(), root=certificate)


def _check_ca_cert(cert: x509.Certificate, where: str, now: datetime, source: str) -> None:
    bc = basic_constraints(cert)
    if bc is None or not bc.ca:
        raise NotACAError(
            f"{source}: {where} {describe(cert)} is not a CA certificate (basicConstraints "
            "CA:true is missing); a leaf or server certificate cannot sign workload "
            "identities, provide a CA or intermediate CA certificate"
        )
    ku = key_usage(cert)
    if ku is not None and not ku.key_cert_sign:
        raise NotACAError(
            f"{source}: {where} {describe(cert)} has a keyUsage without keyCertSign, so it "
            "may not sign certificates; reissue it with keyUsage keyCertSign (and cRLSign)"
        )
    if now < cert.not_valid_before_utc:
        raise CAValidityError(
            f"{source}: {where} {describe(cert)} is not valid until "
            f"{cert.not_valid_before_utc.isoformat()} (now is {now.isoformat()}); "
            "check the node clock or wait until it becomes valid"
        )
    if now >= cert.not_valid_after_utc:
        raise CAValidityError(
            f"{source}: {where} {describe(cert)} expired at "
            f"{cert.not_valid_after_utc.isoformat()} (now is {now.isoformat()}); "
            "renew the CA certificate and update the Secret"
        )


def _check_signature_hash(cert: x509.Certificate, where: str, source: str) -> None:
    algorithm = cert.signature_hash_algorithm
    if algorithm is None:  # Ed25519 / Ed448: pure signatures
        return
    if not isinstance(algorithm, _ACCEPTED_SIGNATURE_HASHES):
        raise UnsupportedAlgorithmError(
            f"{source}: {where} {describe(cert)} is signed with {algorithm.name}, which "
            "verifiers reject; reissue it with a SHA-256 or stronger signature"
        )


def load_authority_from_pem(
    chain_pem: bytes,
    key_pem: bytes,
    root_pem: bytes | None,
    now: datetime,
    *,
    source: str = "CA Secret",
) -> Authority:
    """Load a bring-your-own CA: ``tls.crt`` (issuing CA first, then intermediates), its
    ``tls.key`` and the root in ``ca.crt`` (optional when the chain ends self-signed).

    ``source`` names the object the bytes came from, e.g. ``Secret trustwarden-system/corp``.
    """
    now = require_utc(now)
    certs = load_certificates(
        chain_pem, source=f"{source} tls.crt", max_certs=MAX_CHAIN_CERTS, what="CA certificate"
    )
    key = load_private_key(key_pem, source=f"{source} tls.key")
    issuing = certs[0]
    if not public_key_matches(issuing, key):
        raise KeyMismatchError(
            f"{source}: tls.key does not match the first certificate in tls.crt "
            f"({describe(issuing)}); put the issuing CA certificate first in tls.crt and its "
            "own private key in tls.key"
        )
    for index, cert in enumerate(certs):
        where = (
            "tls.crt certificate #1 (issuing CA)"
            if index == 0
            else (f"tls.crt certificate #{index + 1}")
        )
        _check_ca_cert(cert, where, now, source)
        _check_signature_hash(cert, where, source)
        bc = basic_constraints(cert)
        if bc is not None and bc.path_length is not None and bc.path_length < index:
            raise ChainError(
                f"{source}: {where} {describe(cert)} has pathLenConstraint {bc.path_length} "
                f"but {index} CA certificate(s) sit below it; reissue it with a larger path "
                "length or shorten the chain"
            )
    for index in range(len(certs) - 1):
        child, parent = certs[index], certs[index + 1]
        if child.issuer != parent.subject or not signed_by(child, parent):
            raise ChainError(
                f"{source}: tls.crt certificate #{index + 1} ({describe(child)}) is not signed "
                f"by certificate #{index + 2} ({describe(parent)}); order tls.crt from the "
                "issuing CA up towards the root, each certificate followed by its issuer"
            )

    top = certs[-1]
    if root_pem is None or not root_pem.strip():
        if not is_self_signed(top):
            raise ChainError(
                f"{source}: tls.crt ends at {describe(top)}, which is not self-signed, and "
                "no root was given; put the root CA certificate in ca.crt"
            )
        root = top
    else:
        roots = load_certificates(
            root_pem, source=f"{source} ca.crt", max_certs=MAX_CHAIN_CERTS, what="root"
        )
        candidates = [r for r in roots if r == top or signed_by(top, r)]
        if not candidates:
            raise ChainError(
                f"{source}: tls.crt ends at {describe(top)}, which is neither a root in ca.crt "
                "nor signed by one; put the root that issued it in ca.crt"
            )
        root = candidates[0]
        if not is_self_signed(root):
            raise ChainError(
                f"{source}: ca.crt certificate {describe(root)} is not self-signed; ca.crt "
                "must hold the root CA, append any intermediates to tls.crt instead"
            )
        _check_ca_cert(root, "ca.crt root", now, source)

    if root == top and len(certs) > 1:
        intermediates = tuple(certs[1:-1])
    elif root == top:
        intermediates = ()
    else:
        intermediates = tuple(certs[1:])
    return Authority(certificate=issuing, private_key=key, chain=intermediates, root=root)


def authority_from_parts(
    chain_pem: bytes,
    key: PrivateKey,
    root_pem: bytes | None = None,
    *,
    source: str = "stored authority",
) -> Authority:
    """Rebuild an authority the operator itself stored (``certificate`` + ``chain`` PEM, its
    key and, for intermediates, the root). Unlike :func:`load_authority_from_pem` this does
    not judge validity at a time: retired or prepared authorities must round-trip too."""
    certs = load_certificates(
        chain_pem, source=source, max_certs=MAX_CHAIN_CERTS, what="CA certificate"
    )
    if not public_key_matches(certs[0], key):
        raise KeyMismatchError(
            f"{source}: the private key does not match {describe(certs[0])}; the stored CA "
            "Secret is inconsistent, restore it from backup or rotate the CA"
        )
    if root_pem:
        root = load_certificates(root_pem, source=f"{source} root", max_certs=1, what="root")[0]
        chain = tuple(certs[1:])
    elif is_self_signed(certs[-1]):
        root = certs[-1]
        chain = tuple(certs[1:-1]) if len(certs) > 1 else ()
    else:
        raise ChainError(
            f"{source}: the chain ends at {describe(certs[-1])}, which is not self-signed, and "
            "no root was stored; store the root alongside the chain"
        )
    return Authority(certificate=certs[0], private_key=key, chain=chain, root=root)


def load_anchors(
    bundle_pem: bytes, now: datetime, *, source: str = "spec.ca.external.bundle"
) -> list[x509.Certificate]:
    """Anchors of an ``external`` (federated) trust domain: CA certificates only, unexpired,
    deduplicated and sorted."""
    now = require_utc(now)
    certs = load_certificates(
        bundle_pem, source=source, max_certs=MAX_ANCHORS, what="CA certificate", strict=True
    )
    anchors = filter_anchors(certs, now)
    if not anchors:
        raise NoAnchorsError(
            f"{source}: none of the {len(certs)} certificate(s) is a usable trust anchor "
            "(each is expired or lacks basicConstraints CA:true); provide the current CA "
            "certificates of the federated trust domain"
        )
    return anchors
