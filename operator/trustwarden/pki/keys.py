"""Key algorithms, generation and (de)serialisation.

Private keys only ever leave this module as PKCS#8 PEM bytes, which callers keep in
``repr=False`` fields so they never show up in logs.
"""

from __future__ import annotations

from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from .errors import InvalidPEMError, UnsupportedAlgorithmError

__all__ = [
    "MAX_PEM_BYTES",
    "KeyAlgorithm",
    "PrivateKey",
    "PublicKey",
    "generate_private_key",
    "key_algorithm_of",
    "load_private_key",
    "private_key_to_pem",
    "public_key_der",
    "public_key_matches",
    "signature_hash_for",
]

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey

#: Upper bound on any PEM input; a CA bundle of a few dozen certificates is ~100 KiB.
MAX_PEM_BYTES = 1024 * 1024

_RSA_EXPONENT = 65537
_PRIVATE_TYPES = (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey)


class KeyAlgorithm(StrEnum):
    """Key algorithms a workload or CA may use (the CRD ``keyAlgorithm`` values)."""

    ECDSAP256 = "ECDSAP256"
    ECDSAP384 = "ECDSAP384"
    Ed25519 = "Ed25519"
    RSA2048 = "RSA2048"
    RSA3072 = "RSA3072"
    RSA4096 = "RSA4096"

    @classmethod
    def parse(cls, text: str, *, field: str = "keyAlgorithm") -> KeyAlgorithm:
        """Parse a CRD value, with an error that lists the valid ones."""
        try:
            return cls(text)
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise UnsupportedAlgorithmError(
                f"{field}: {str(text)[:40]!r} is not a supported key algorithm; use one of {valid}"
            ) from None

    @property
    def is_rsa(self) -> bool:
        return self.value.startswith("RSA")


_RSA_BITS = {
    KeyAlgorithm.RSA2048: 2048,
    KeyAlgorithm.RSA3072: 3072,
    KeyAlgorithm.RSA4096: 4096,
}
_CURVES: dict[str, KeyAlgorithm] = {
    "secp256r1": KeyAlgorithm.ECDSAP256,
    "secp384r1": KeyAlgorithm.ECDSAP384,
}


def generate_private_key(alg: KeyAlgorithm) -> PrivateKey:
    """Generate a fresh private key of the given algorithm from the OS CSPRNG."""
    alg = KeyAlgorithm(alg)
    if alg is KeyAlgorithm.ECDSAP256:
        return ec.generate_private_key(ec.SECP256R1())
    if alg is KeyAlgorithm.ECDSAP384:
        return ec.generate_private_key(ec.SECP384R1())
    if alg is KeyAlgorithm.Ed25519:
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=_RSA_EXPONENT, key_size=_RSA_BITS[alg])


def private_key_to_pem(key: PrivateKey) -> bytes:
    """Serialise as unencrypted PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem: bytes, *, source: str = "private key") -> PrivateKey:
    """Load an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1) of a supported algorithm.

    ``source`` says where the bytes came from (e.g. ``Secret trustwarden-system/ca tls.key``).
    """
    if isinstance(pem, str):
        pem = pem.encode()
    if not isinstance(pem, bytes | bytearray):
        raise InvalidPEMError(f"{source}: expected PEM bytes, got {type(pem).__name__}")
    if len(pem) > MAX_PEM_BYTES:
        raise InvalidPEMError(
            f"{source}: PEM input is {len(pem)} bytes, above the {MAX_PEM_BYTES}-byte limit; "
            "provide only the private key"
        )
    if b"-----BEGIN" not in pem:
        raise InvalidPEMError(
            f"{source}: no PEM block found; expected '-----BEGIN PRIVATE KEY-----' "
            "(PKCS#8, e.g. from 'openssl pkcs8 -topk8 -nocrypt')"
        )
    if b"ENCRYPTED" in pem:
        raise InvalidPEMError(
            f"{source}: the private key is encrypted; store it unencrypted "
            "(openssl pkcs8 -topk8 -nocrypt) in a Secret instead"
        )
    try:
        key = serialization.load_pem_private_key(bytes(pem), password=None)
    except UnsupportedAlgorithm as exc:
        raise UnsupportedAlgorithmError(
            f"{source}: the key algorithm is not supported ({exc}); use ECDSA P-256/P-384, "
            "Ed25519 or RSA 2048-4096"
        ) from None
    except (ValueError, TypeError) as exc:
        raise InvalidPEMError(
            f"{source}: cannot parse the private key ({_short(exc)}); provide an unencrypted "
            "PEM private key"
        ) from None
    key_algorithm_of(key, source=source)  # rejects RSA-1024, P-521, Ed448, DSA, ...
    if not isinstance(key, _PRIVATE_TYPES):  # pragma: no cover - key_algorithm_of raised
        raise UnsupportedAlgorithmError(f"{source}: unsupported key type")
    return key


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def key_algorithm_of(key: object, *, source: str = "key") -> KeyAlgorithm:
    """Classify a private or public key; reject anything trustwarden does not support."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        alg = _CURVES.get(key.curve.name)
        if alg is None:
            raise UnsupportedAlgorithmError(
                f"{source}: elliptic curve {key.curve.name} is not supported; "
                "use P-256 (ECDSAP256) or P-384 (ECDSAP384)"
            )
        return alg
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return KeyAlgorithm.Ed25519
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        size = key.key_size
        if size < 2048:
            raise UnsupportedAlgorithmError(
                f"{source}: RSA key of {size} bits is too weak; use at least 2048 bits "
                "(RSA2048, RSA3072 or RSA4096) or an ECDSA key"
            )
        for alg, bits in _RSA_BITS.items():
            if bits == size:
                return alg
        raise UnsupportedAlgorithmError(
            f"{source}: RSA key of {size} bits is not supported; use 2048, 3072 or 4096 bits"
        )
    raise UnsupportedAlgorithmError(
        f"{source}: {type(key).__name__} keys are not supported; use ECDSA P-256/P-384, "
        "Ed25519 or RSA 2048-4096"
    )


def signature_hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | None:
    """The digest a signer of this key type uses: none for Ed25519, SHA-384 for P-384."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
        return hashes.SHA384()
    return hashes.SHA256()


def public_key_der(public_key: PublicKeyTypes) -> bytes:
    """DER SubjectPublicKeyInfo, the canonical form to compare public keys by."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    """True when ``key`` is the private half of ``cert``'s public key."""
    try:
        return public_key_der(cert.public_key()) == public_key_der(key.public_key())
    except (ValueError, TypeError, AttributeError, UnsupportedAlgorithm):
        return False
