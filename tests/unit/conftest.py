"""Shared fixtures for the PKI unit tests: a fixed clock, cached keys and CAs, and a tiny
independent CA builder (plain ``cryptography``) for bring-your-own-CA scenarios."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from trustwarden.pki import (
    Authority,
    KeyAlgorithm,
    LeafRequest,
    SpiffeID,
    Usage,
    create_self_signed_ca,
    generate_private_key,
)
from trustwarden.pki.keys import PrivateKey

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
TD = "prod.example.org"
BOTH = frozenset({Usage.server, Usage.client})


@pytest.fixture(scope="session")
def now() -> datetime:
    return NOW


_KEYS: dict[KeyAlgorithm, PrivateKey] = {}


def cached_key(alg: KeyAlgorithm) -> PrivateKey:
    """One key per algorithm for the whole run: RSA-4096 generation is slow and key
    freshness does not matter where this is used."""
    if alg not in _KEYS:
        _KEYS[alg] = generate_private_key(alg)
    return _KEYS[alg]


_CAS: dict[KeyAlgorithm, Authority] = {}


def cached_ca(alg: KeyAlgorithm = KeyAlgorithm.ECDSAP256) -> Authority:
    if alg not in _CAS:
        _CAS[alg] = create_self_signed_ca(
            TD, alg, timedelta(days=90), now=NOW, private_key=cached_key(alg)
        )
    return _CAS[alg]


@pytest.fixture(scope="session")
def ca() -> Authority:
    return cached_ca()


def request(
    path: str = "/ns/payments/sa/payments",
    dns: tuple[str, ...] = ("payments.payments.svc",),
    ttl: timedelta = timedelta(hours=1),
    alg: KeyAlgorithm = KeyAlgorithm.ECDSAP256,
    usages: frozenset[Usage] = BOTH,
) -> LeafRequest:
    return LeafRequest(SpiffeID(TD, path), dns, ttl, alg, usages)


# --------------------------------------------------------------------------- foreign CAs


@dataclass
class Made:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def make_cert(
    cn: str,
    *,
    issuer: Made | None = None,
    ca: bool = True,
    key: PrivateKey | None = None,
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=365),
    key_usage: x509.KeyUsage | str | None = "default",
    path_length: int | None = None,
    hash_alg: hashes.HashAlgorithm | None = None,
) -> Made:
    """An independent CA/leaf builder (not using trustwarden code), for BYO-CA tests."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer_key = issuer.key if issuer else key
    issuer_name = issuer.cert.subject if issuer else name
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if key_usage == "default":
        key_usage = x509.KeyUsage(
            digital_signature=not ca,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        )
    if isinstance(key_usage, x509.KeyUsage):
        builder = builder.add_extension(key_usage, critical=True)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
    if hash_alg is None and not isinstance(
        signer_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ):
        cert = builder.sign(signer_key, None)
    else:
        cert = builder.sign(signer_key, hash_alg or hashes.SHA256())
    return Made(cert, key)


@pytest.fixture
def corp_chain() -> Iterator[tuple[Made, Made, Made]]:
    """root -> intermediate -> issuing CA, as a corporate PKI would hand out."""
    root = make_cert("Corp Root")
    mid = make_cert("Corp Intermediate", issuer=root)
    issuing = make_cert("Corp Issuing", issuer=mid)
    yield root, mid, issuing


MakeAuthority = Callable[[datetime], Authority]
