from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.unit.conftest import NOW, TD, Made, cached_key, make_cert
from trustwarden.pki import (
    Authority,
    CAValidityError,
    ChainError,
    InvalidArgumentError,
    InvalidPEMError,
    KeyAlgorithm,
    KeyMismatchError,
    NoAnchorsError,
    NotACAError,
    UnsupportedAlgorithmError,
    authority_from_parts,
    create_self_signed_ca,
    load_anchors,
    load_authority_from_pem,
)

SRC = "Secret trustwarden-system/corp"


def test_self_signed_profile() -> None:
    ca = create_self_signed_ca(TD, now=NOW, serial=0x1234_5678_9ABC_DEF0_1111)
    cert = ca.certificate
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length is None
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{TD}"]
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "trustwarden"
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == f"{TD} trustwarden CA 12345678"
    assert cert.issuer == cert.subject
    assert ca.chain == () and ca.root is cert and ca.is_root
    assert ca.serial_hex == "123456789abcdef01111"
    assert ca.sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert ca.not_before == NOW - timedelta(minutes=5)
    assert ca.not_after == NOW + timedelta(hours=2160)
    assert ca.lifetime == timedelta(hours=2160, minutes=5)
    assert ca.key_algorithm is KeyAlgorithm.ECDSAP256
    assert ca.issuing_chain_pem == b""


def test_private_key_not_in_repr() -> None:
    ca = create_self_signed_ca(TD, now=NOW)
    assert "private_key" not in repr(ca)
    assert "PRIVATE" not in repr(ca) and "PRIVATE" not in str(ca)


def test_self_signed_options() -> None:
    key = cached_key(KeyAlgorithm.ECDSAP384)
    ca = create_self_signed_ca(
        "x" * 200, KeyAlgorithm.ECDSAP384, timedelta(days=30), now=NOW, path_len=0, private_key=key
    )
    assert (
        ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
        == 0
    )
    cn = ca.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert len(cn) <= 64
    assert isinstance(ca.certificate.signature_hash_algorithm, hashes.SHA384)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"ttl": timedelta(0)}, "CA ttl must be positive"),
        ({"path_len": -1}, "path_len must be None or >= 0"),
        ({"serial": 0}, "X.509 serials must be positive"),
        ({"serial": 1 << 160}, "fit in 159 bits"),
        ({"private_key": "p384"}, "the supplied CA private key is ECDSAP384, not ECDSAP256"),
    ],
)
def test_self_signed_argument_errors(kwargs: dict[str, object], fragment: str) -> None:
    if kwargs.get("private_key") == "p384":
        kwargs["private_key"] = cached_key(KeyAlgorithm.ECDSAP384)
    with pytest.raises(InvalidArgumentError) as err:
        create_self_signed_ca(TD, now=NOW, **kwargs)  # type: ignore[arg-type]
    assert fragment in str(err.value)


def test_naive_now_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="is a naive datetime; pass a tz-aware UTC"):
        create_self_signed_ca(TD, now=NOW.replace(tzinfo=None))


def test_invalid_trust_domain_rejected() -> None:
    with pytest.raises(Exception, match=r"spec\.trustDomain: 'Prod' contains uppercase"):
        create_self_signed_ca("Prod", now=NOW)


# --------------------------------------------------------------------------- bring your own


def test_load_corp_chain(corp_chain: tuple[Made, Made, Made]) -> None:
    root, mid, issuing = corp_chain
    authority = load_authority_from_pem(issuing.pem + mid.pem, issuing.key_pem, root.pem, NOW)
    assert authority.certificate == issuing.cert
    assert authority.chain == (mid.cert,)
    assert authority.root == root.cert
    assert not authority.is_root
    assert authority.issuing_chain_pem == issuing.pem + mid.pem
    assert authority.intermediates_pem == mid.pem


def test_load_chain_including_root(corp_chain: tuple[Made, Made, Made]) -> None:
    root, mid, issuing = corp_chain
    authority = load_authority_from_pem(
        issuing.pem + mid.pem + root.pem, issuing.key_pem, None, NOW
    )
    assert authority.chain == (mid.cert,)
    assert authority.root == root.cert
    same = load_authority_from_pem(issuing.pem + mid.pem + root.pem, issuing.key_pem, root.pem, NOW)
    assert same.chain == (mid.cert,)


def test_load_self_signed_byo() -> None:
    root = make_cert("Solo Root")
    authority = load_authority_from_pem(root.pem, root.key_pem, None, NOW)
    assert authority.is_root and authority.chain == ()
    authority = load_authority_from_pem(root.pem, root.key_pem, root.pem, NOW)
    assert authority.is_root


def test_byo_key_mismatch(corp_chain: tuple[Made, Made, Made]) -> None:
    root, mid, issuing = corp_chain
    with pytest.raises(KeyMismatchError) as err:
        load_authority_from_pem(issuing.pem + mid.pem, mid.key_pem, root.pem, NOW, source=SRC)
    assert str(err.value).startswith(f"{SRC}: tls.key does not match the first certificate")
    assert "put the issuing CA certificate first in tls.crt" in str(err.value)


def test_byo_leaf_used_as_ca(corp_chain: tuple[Made, Made, Made]) -> None:
    root, mid, _ = corp_chain
    leaf = make_cert("server.example.org", issuer=mid, ca=False)
    with pytest.raises(NotACAError) as err:
        load_authority_from_pem(leaf.pem + mid.pem, leaf.key_pem, root.pem, NOW, source=SRC)
    assert "tls.crt certificate #1 (issuing CA) CN=server.example.org" in str(err.value)
    assert "is not a CA certificate (basicConstraints CA:true is missing)" in str(err.value)


def test_byo_ca_without_key_cert_sign() -> None:
    ku = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    root = make_cert("No Sign", key_usage=ku)
    with pytest.raises(NotACAError, match="has a keyUsage without keyCertSign"):
        load_authority_from_pem(root.pem, root.key_pem, None, NOW)


def test_byo_expired_and_not_yet_valid() -> None:
    old = make_cert("Old", not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=1))
    with pytest.raises(CAValidityError) as err:
        load_authority_from_pem(old.pem, old.key_pem, None, NOW, source=SRC)
    assert "expired at 2025-05-31T12:00:00+00:00" in str(err.value)
    assert "renew the CA certificate and update the Secret" in str(err.value)
    future = make_cert("Future", not_before=NOW + timedelta(days=1))
    with pytest.raises(CAValidityError, match="is not valid until 2025-06-02"):
        load_authority_from_pem(future.pem, future.key_pem, None, NOW)


def test_byo_expired_root(corp_chain: tuple[Made, Made, Made]) -> None:
    _, _, issuing = corp_chain
    dead_root = make_cert(
        "Dead", not_before=NOW - timedelta(days=9), not_after=NOW - timedelta(days=2)
    )
    mid = make_cert("Mid", issuer=dead_root)
    with pytest.raises(CAValidityError, match=r"ca\.crt root CN=Dead"):
        load_authority_from_pem(mid.pem, mid.key_pem, dead_root.pem, NOW)
    del issuing


def test_byo_chain_out_of_order(corp_chain: tuple[Made, Made, Made]) -> None:
    root, _mid, issuing = corp_chain
    other = make_cert("Other Intermediate", issuer=root)
    with pytest.raises(ChainError) as err:
        load_authority_from_pem(issuing.pem + other.pem, issuing.key_pem, root.pem, NOW, source=SRC)
    assert "tls.crt certificate #1 (CN=Corp Issuing" in str(err.value)
    assert "is not signed by certificate #2 (CN=Other Intermediate" in str(err.value)
    assert "each certificate followed by its issuer" in str(err.value)


def test_byo_wrong_root(corp_chain: tuple[Made, Made, Made]) -> None:
    _, mid, issuing = corp_chain
    stranger = make_cert("Stranger Root")
    with pytest.raises(ChainError, match=r"neither a root in ca\.crt nor signed by one"):
        load_authority_from_pem(issuing.pem + mid.pem, issuing.key_pem, stranger.pem, NOW)


def test_byo_missing_root(corp_chain: tuple[Made, Made, Made]) -> None:
    _, mid, issuing = corp_chain
    with pytest.raises(ChainError, match="not self-signed, and no root was given; put the root"):
        load_authority_from_pem(issuing.pem + mid.pem, issuing.key_pem, None, NOW)


def test_byo_root_not_self_signed(corp_chain: tuple[Made, Made, Made]) -> None:
    _, mid, issuing = corp_chain
    with pytest.raises(
        ChainError, match=r"ca\.crt certificate CN=Corp Intermediate .* is not self-signed"
    ):
        load_authority_from_pem(issuing.pem, issuing.key_pem, mid.pem, NOW)


def test_byo_path_length_violation() -> None:
    root = make_cert("Root", path_length=0)
    mid = make_cert("Mid", issuer=root)
    with pytest.raises(ChainError, match="pathLenConstraint 0 but 1 CA certificate"):
        load_authority_from_pem(mid.pem + root.pem, mid.key_pem, None, NOW)


def test_byo_rsa_1024_rejected() -> None:
    weak = make_cert("Weak", key=rsa.generate_private_key(65537, 1024))
    with pytest.raises(UnsupportedAlgorithmError, match="RSA key of 1024 bits is too weak"):
        load_authority_from_pem(weak.pem, weak.key_pem, None, NOW)


def test_byo_unsupported_curve_rejected() -> None:
    p521 = make_cert("P521", key=ec.generate_private_key(ec.SECP521R1()))
    with pytest.raises(
        UnsupportedAlgorithmError, match="elliptic curve secp521r1 is not supported"
    ):
        load_authority_from_pem(p521.pem, p521.key_pem, None, NOW)


def test_byo_sha1_signature_rejected(tmp_path: Path) -> None:
    # cryptography refuses to *sign* with SHA-1, so let openssl make the legacy CA.
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-sha1", "-subj", "/CN=Legacy SHA1", "-days", "30", "-keyout", str(key),
         "-out", str(crt), "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        check=True, capture_output=True,
    )  # fmt: skip
    with pytest.raises(UnsupportedAlgorithmError) as err:
        load_authority_from_pem(crt.read_bytes(), key.read_bytes(), None, datetime.now(UTC))
    assert "CN=Legacy SHA1" in str(err.value)
    assert "is signed with sha1, which verifiers reject; reissue it with a SHA-256" in str(
        err.value
    )


@pytest.mark.parametrize(
    ("chain", "fragment"),
    [
        (b"", "no '-----BEGIN CERTIFICATE-----' block found; provide PEM encoded CA certificates"),
        (b"-----BEGIN CERTIFICATE-----\nnotbase64!\n-----END CERTIFICATE-----\n", "cannot parse"),
        (b"-----BEGIN CERTIFICATE-----\n" + b"A" * (1024 * 1024), "above the 1048576-byte limit"),
        (
            b"-----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----\n",
            "the key belongs in tls.key",
        ),
    ],
)
def test_byo_malformed_pem(chain: bytes, fragment: str) -> None:
    root = make_cert("Root")
    with pytest.raises(InvalidPEMError) as err:
        load_authority_from_pem(chain, root.key_pem, None, NOW, source=SRC)
    assert fragment in str(err.value)
    assert str(err.value).startswith(f"{SRC} tls.crt: ")


def test_byo_too_many_certificates() -> None:
    root = make_cert("Root")
    with pytest.raises(InvalidPEMError, match="11 certificates found, more than the limit of 10"):
        load_authority_from_pem(root.pem * 11, root.key_pem, None, NOW)


def test_authority_from_parts_round_trip(corp_chain: tuple[Made, Made, Made]) -> None:
    root, mid, issuing = corp_chain
    loaded = load_authority_from_pem(issuing.pem + mid.pem, issuing.key_pem, root.pem, NOW)
    again = authority_from_parts(
        loaded.certificate_pem + loaded.intermediates_pem, loaded.private_key, root.pem
    )
    assert (again.certificate, again.chain, again.root) == (
        loaded.certificate,
        loaded.chain,
        loaded.root,
    )
    ca = create_self_signed_ca(TD, now=NOW)
    # No validity judgement: an expired stored authority must still decode.
    back = authority_from_parts(ca.certificate_pem, ca.private_key)
    assert back.is_root and back.sha256 == ca.sha256
    with pytest.raises(KeyMismatchError):
        authority_from_parts(ca.certificate_pem, issuing.key)


# --------------------------------------------------------------------------- anchors


def test_load_anchors_filters() -> None:
    a, b = make_cert("A"), make_cert("B")
    expired = make_cert(
        "Expired", not_before=NOW - timedelta(days=9), not_after=NOW - timedelta(seconds=1)
    )
    leaf = make_cert("leaf", issuer=a, ca=False)
    anchors = load_anchors(b.pem + a.pem + a.pem + expired.pem + leaf.pem, NOW)
    assert anchors == [a.cert, b.cert]


def test_load_anchors_none_left() -> None:
    expired = make_cert(
        "Expired", not_before=NOW - timedelta(days=9), not_after=NOW - timedelta(days=1)
    )
    with pytest.raises(NoAnchorsError) as err:
        load_anchors(expired.pem, NOW, source="TrustDomain partner spec.ca.external.bundle")
    assert str(err.value) == (
        "TrustDomain partner spec.ca.external.bundle: none of the 1 certificate(s) is a usable "
        "trust anchor (each is expired or lacks basicConstraints CA:true); provide the current "
        "CA certificates of the federated trust domain"
    )


def test_authority_is_frozen() -> None:
    ca = create_self_signed_ca(TD, now=NOW)
    with pytest.raises(AttributeError):
        ca.chain = ()  # type: ignore[misc]
    assert isinstance(ca, Authority)
