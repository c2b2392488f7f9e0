from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa

from tests.unit.conftest import cached_ca, cached_key
from trustwarden.pki import (
    InvalidPEMError,
    KeyAlgorithm,
    UnsupportedAlgorithmError,
    key_algorithm_of,
    load_private_key,
    private_key_to_pem,
    public_key_matches,
)


@pytest.mark.parametrize("alg", list(KeyAlgorithm))
def test_generate_round_trip_and_classify(alg: KeyAlgorithm) -> None:
    key = cached_key(alg)
    pem = private_key_to_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    loaded = load_private_key(pem)
    assert key_algorithm_of(loaded) is alg
    assert key_algorithm_of(loaded.public_key()) is alg


def test_key_algorithm_parse_lists_valid_values() -> None:
    assert KeyAlgorithm.parse("Ed25519") is KeyAlgorithm.Ed25519
    with pytest.raises(UnsupportedAlgorithmError) as err:
        KeyAlgorithm.parse("ECDSAP521", field="spec.keyAlgorithm")
    assert "spec.keyAlgorithm: 'ECDSAP521' is not a supported key algorithm" in str(err.value)
    assert "ECDSAP256, ECDSAP384, Ed25519, RSA2048, RSA3072, RSA4096" in str(err.value)


def test_public_key_matches() -> None:
    ca = cached_ca()
    assert public_key_matches(ca.certificate, ca.private_key)
    assert not public_key_matches(ca.certificate, cached_key(KeyAlgorithm.ECDSAP384))


def _pem(key: object, fmt: serialization.PrivateFormat) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, fmt, serialization.NoEncryption()
    )


def test_rsa_1024_rejected() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(UnsupportedAlgorithmError) as err:
        load_private_key(_pem(weak, serialization.PrivateFormat.PKCS8), source="Secret x tls.key")
    assert str(err.value) == (
        "Secret x tls.key: RSA key of 1024 bits is too weak; use at least 2048 bits "
        "(RSA2048, RSA3072 or RSA4096) or an ECDSA key"
    )


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        (ec.generate_private_key(ec.SECP521R1()), "elliptic curve secp521r1 is not supported"),
        (ec.generate_private_key(ec.SECP256K1()), "elliptic curve secp256k1 is not supported"),
        (ed448.Ed448PrivateKey.generate(), "Ed448PrivateKey keys are not supported"),
        (dsa.generate_private_key(2048), "DSAPrivateKey keys are not supported"),
    ],
)
def test_unsupported_algorithms(key: object, fragment: str) -> None:
    with pytest.raises(UnsupportedAlgorithmError) as err:
        load_private_key(_pem(key, serialization.PrivateFormat.PKCS8))
    assert fragment in str(err.value)


def test_traditional_formats_are_accepted() -> None:
    key = cached_key(KeyAlgorithm.ECDSAP256)
    sec1 = _pem(key, serialization.PrivateFormat.TraditionalOpenSSL)
    assert b"EC PRIVATE KEY" in sec1
    assert key_algorithm_of(load_private_key(sec1)) is KeyAlgorithm.ECDSAP256


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "no PEM block found"),
        (b"not a key", "no PEM block found"),
        (
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "cannot parse the private key",
        ),
        (b"-----BEGIN" + b"x" * (1024 * 1024 + 1), "above the 1048576-byte limit"),
    ],
)
def test_malformed_key_pem(data: bytes, fragment: str) -> None:
    with pytest.raises(InvalidPEMError) as err:
        load_private_key(data, source="Secret ops/ca tls.key")
    assert fragment in str(err.value)
    assert str(err.value).startswith("Secret ops/ca tls.key: ")


def test_encrypted_key_is_explained() -> None:
    key = cached_key(KeyAlgorithm.ECDSAP256)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(InvalidPEMError, match="the private key is encrypted; store it unencrypted"):
        load_private_key(pem)
