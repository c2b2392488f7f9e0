from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.unit.conftest import BOTH, NOW, TD, cached_ca, cached_key, make_cert, request
from trustwarden.pki import (
    CAValidityError,
    InvalidArgumentError,
    InvalidPEMError,
    KeyAlgorithm,
    LeafRequest,
    SpiffeID,
    TemplateError,
    Usage,
    inspect_leaf,
    issue_leaf,
    load_authority_from_pem,
    ttl_cap,
)


def ext(cert: x509.Certificate, cls: type) -> x509.Extension:  # type: ignore[type-arg]
    return cert.extensions.get_extension_for_class(cls)


@pytest.mark.parametrize("alg", list(KeyAlgorithm))
def test_leaf_is_x509_svid(alg: KeyAlgorithm) -> None:
    ca = cached_ca()
    leaf = issue_leaf(
        ca, request(alg=alg, dns=("b.svc", "a.svc")), NOW, private_key=cached_key(alg)
    )
    cert = leaf.certificate
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://prod.example.org/ns/payments/sa/payments"
    ]
    assert san.get_values_for_type(x509.DNSName) == ["b.svc", "a.svc"]
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    assert not ku.value.key_cert_sign and not ku.value.crl_sign
    assert ku.value.key_encipherment is alg.is_rsa
    eku = ext(cert, x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(ca.certificate, x509.SubjectKeyIdentifier).value.digest
    ext(cert, x509.SubjectKeyIdentifier)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "trustwarden"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "b.svc"
    assert "spiffe" not in cert.subject.rfc4514_string()
    assert cert.serial_number.bit_length() == 159
    assert leaf.serial == cert.serial_number
    assert leaf.sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert leaf.issuer_sha256 == ca.sha256
    assert leaf.chain_pem.count(b"BEGIN CERTIFICATE") == 1


def test_leaf_without_dns_names_has_bare_subject() -> None:
    leaf = issue_leaf(cached_ca(), request(dns=(), usages=frozenset({Usage.client})), NOW)
    cert = leaf.certificate
    assert cert.subject.rfc4514_string() == "O=trustwarden"
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = ext(cert, x509.SubjectAlternativeName).value
    assert len(list(san)) == 1


def test_leaf_validity_window() -> None:
    ca = cached_ca()
    leaf = issue_leaf(ca, request(ttl=timedelta(hours=1)), NOW + timedelta(days=1, microseconds=7))
    assert leaf.not_before == NOW + timedelta(days=1) - timedelta(minutes=5)
    assert leaf.not_after == NOW + timedelta(days=1, hours=1)
    custom = issue_leaf(ca, request(), NOW + timedelta(days=1), backdate=timedelta(0))
    assert custom.not_before == NOW + timedelta(days=1)


def test_leaf_not_before_clamped_to_issuer() -> None:
    ca = cached_ca()
    leaf = issue_leaf(ca, request(), ca.not_before + timedelta(minutes=1))
    assert leaf.not_before == ca.not_before


def test_leaf_never_outlives_issuer() -> None:
    ca = cached_ca()
    late = ca.not_after - timedelta(minutes=10)
    leaf = issue_leaf(ca, request(ttl=timedelta(hours=1)), late)
    assert leaf.not_after == ca.not_after


def test_leaf_never_outlives_intermediate_path() -> None:
    root = make_cert("Root", not_after=NOW + timedelta(days=10))
    issuing = make_cert("Issuing", issuer=root, not_after=NOW + timedelta(days=30))
    authority = load_authority_from_pem(issuing.pem, issuing.key_pem, root.pem, NOW)
    leaf = issue_leaf(authority, request(ttl=timedelta(days=20)), NOW)
    assert leaf.not_after == root.cert.not_valid_after_utc
    assert leaf.chain_pem == leaf.certificate.public_bytes(Encoding.PEM) + issuing.pem


def test_issue_with_expired_or_future_issuer() -> None:
    ca = cached_ca()
    with pytest.raises(CAValidityError) as err:
        issue_leaf(ca, request(), ca.not_after)
    assert "expired at" in str(err.value) and "Rotate the trust domain's CA" in str(err.value)
    with pytest.raises(CAValidityError, match="is not valid until"):
        issue_leaf(ca, request(), ca.not_before - timedelta(seconds=1))


def test_injected_serial_and_key() -> None:
    key = cached_key(KeyAlgorithm.ECDSAP256)
    leaf = issue_leaf(cached_ca(), request(), NOW, serial=12345, private_key=key)
    assert leaf.certificate.serial_number == 12345 == leaf.serial
    assert leaf.serial_hex == "3039"
    with pytest.raises(InvalidArgumentError, match="the supplied leaf key is Ed25519"):
        issue_leaf(cached_ca(), request(), NOW, private_key=cached_key(KeyAlgorithm.Ed25519))
    with pytest.raises(InvalidArgumentError, match="serials must be positive"):
        issue_leaf(cached_ca(), request(), NOW, serial=-1)


def test_leaf_repr_hides_key() -> None:
    leaf = issue_leaf(cached_ca(), request(), NOW)
    assert b"PRIVATE KEY" in leaf.private_key_pem
    assert "PRIVATE" not in repr(leaf) and "private_key_pem" not in repr(leaf)
    data = leaf.secret_data("ca-pem")
    assert set(data) == {"tls.crt", "tls.key", "ca.crt"}
    annotations = leaf.annotations()
    assert annotations["trustwarden.io/spiffe-id"] == leaf.spiffe_id.uri
    assert annotations["trustwarden.io/serial"] == leaf.serial_hex
    assert annotations["trustwarden.io/trust-domain"] == TD
    assert annotations["trustwarden.io/not-after"].endswith("Z")
    assert not any("PRIVATE" in v for v in annotations.values())


def test_leaf_request_validation() -> None:
    sid = SpiffeID(TD, "/ns/a/sa/b")
    with pytest.raises(InvalidArgumentError, match="ttl must be positive"):
        LeafRequest(sid, (), timedelta(0), KeyAlgorithm.ECDSAP256, BOTH)
    with pytest.raises(InvalidArgumentError, match="usages is empty"):
        LeafRequest(sid, (), timedelta(hours=1), KeyAlgorithm.ECDSAP256, frozenset())
    with pytest.raises(TemplateError, match="wildcards are not allowed"):
        LeafRequest(sid, ("*.x",), timedelta(hours=1), KeyAlgorithm.ECDSAP256, BOTH)
    req = LeafRequest(sid, ("A.x", "a.x"), timedelta(hours=1), "Ed25519", frozenset({"server"}))  # type: ignore[arg-type]
    assert req.dns_names == ("a.x",)
    assert req.key_algorithm is KeyAlgorithm.Ed25519
    assert req.usages == frozenset({Usage.server})


def test_ttl_cap() -> None:
    assert ttl_cap(None, timedelta(days=30)) == timedelta(days=5)
    assert ttl_cap(timedelta(hours=24), timedelta(days=30)) == timedelta(hours=24)
    assert ttl_cap(timedelta(days=10), timedelta(days=30)) == timedelta(days=5)


# --------------------------------------------------------------------------- inspection


def test_inspect_round_trip() -> None:
    ca = cached_ca()
    leaf = issue_leaf(
        ca, request(alg=KeyAlgorithm.RSA2048), NOW, private_key=cached_key(KeyAlgorithm.RSA2048)
    )
    facts = inspect_leaf(leaf.chain_pem, leaf.private_key_pem, issuers=[ca])
    assert facts.serial == leaf.serial and facts.serial_hex == leaf.serial_hex
    assert facts.spiffe_id == leaf.spiffe_id
    assert facts.dns_names == ("payments.payments.svc",)
    assert (facts.not_before, facts.not_after) == (leaf.not_before, leaf.not_after)
    assert facts.key_algorithm is KeyAlgorithm.RSA2048
    assert facts.usages == BOTH
    assert facts.key_matches
    assert facts.sha256 == leaf.sha256
    assert facts.issuer_sha256 == ca.sha256
    assert facts.issued_by(ca) and facts.issued_by(ca.certificate)
    assert not facts.issued_by(cached_ca(KeyAlgorithm.ECDSAP384))
    assert not facts.is_ca


def test_to_facts_matches_inspect() -> None:
    ca = cached_ca()
    leaf = issue_leaf(ca, request(dns=("b.svc", "a.svc")), NOW)
    assert leaf.to_facts(ca) == inspect_leaf(leaf.chain_pem, leaf.private_key_pem, issuers=[ca])
    root = make_cert("Root")
    issuing = make_cert("Issuing", issuer=root)
    authority = load_authority_from_pem(issuing.pem, issuing.key_pem, root.pem, NOW)
    leaf = issue_leaf(authority, request(), NOW)
    assert leaf.to_facts() == inspect_leaf(leaf.chain_pem, leaf.private_key_pem)


def test_inspect_key_mismatch_and_missing() -> None:
    leaf = issue_leaf(cached_ca(), request(), NOW)
    other = issue_leaf(cached_ca(), request(), NOW)
    assert not inspect_leaf(leaf.chain_pem, other.private_key_pem).key_matches
    facts = inspect_leaf(leaf.chain_pem, None)
    assert not facts.key_matches
    assert facts.issuer_sha256 is None


def test_inspect_non_svid() -> None:
    root = make_cert("Root")
    plain = make_cert("plain", issuer=root, ca=False)
    facts = inspect_leaf(plain.pem, plain.key_pem)
    assert facts.spiffe_id is None and facts.uris == () and facts.key_matches
    ca_facts = inspect_leaf(root.pem, None)
    assert ca_facts.is_ca


@pytest.mark.parametrize(
    ("chain", "key", "fragment"),
    [
        (b"garbage", None, "no '-----BEGIN CERTIFICATE-----' block found"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", None, "cannot parse"),
        (
            None,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "tls.key cannot be parsed",
        ),
        (
            None,
            b"-----BEGIN PRIVATE KEY-----\n" + b"A" * (1024 * 1024),
            "larger than 1048576 bytes",
        ),
    ],
)
def test_inspect_malformed(chain: bytes | None, key: bytes | None, fragment: str) -> None:
    good = issue_leaf(cached_ca(), request(), NOW)
    with pytest.raises(InvalidPEMError) as err:
        inspect_leaf(chain or good.chain_pem, key, source="Secret payments/svid tls.crt")
    assert fragment in str(err.value)


def test_inspect_resolves_intermediate_issuer() -> None:
    root = make_cert("Root")
    issuing = make_cert("Issuing", issuer=root)
    authority = load_authority_from_pem(issuing.pem, issuing.key_pem, root.pem, NOW)
    leaf = issue_leaf(authority, request(), NOW)
    facts = inspect_leaf(leaf.chain_pem, leaf.private_key_pem)
    assert facts.issuer_sha256 == authority.sha256
    assert facts.intermediates == (issuing.cert,)
