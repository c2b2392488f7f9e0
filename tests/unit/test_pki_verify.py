"""Independent verification: every chain we issue must satisfy OpenSSL (as a subprocess)
and cryptography's WebPKI-style verifier, not merely our own parser."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from tests.unit.conftest import NOW, cached_ca, cached_key, make_cert, request
from trustwarden.pki import (
    Authority,
    KeyAlgorithm,
    RevokedSerial,
    anchors_to_pem,
    build_crl,
    issue_leaf,
    load_authority_from_pem,
)

OPENSSL = "/usr/bin/openssl"
AT = str(int((NOW + timedelta(minutes=1)).timestamp()))
SPIFFE = "spiffe://prod.example.org/ns/payments/sa/payments"


def openssl_verify(
    tmp: Path,
    root: bytes,
    leaf_chain: bytes,
    *,
    crl: bytes | None = None,
    purpose: str = "sslclient",
) -> subprocess.CompletedProcess[str]:
    certs = x509.load_pem_x509_certificates(leaf_chain)
    (tmp / "root.pem").write_bytes(root)
    (tmp / "leaf.pem").write_bytes(
        leaf_chain.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    )
    args = [OPENSSL, "verify", "-x509_strict", "-purpose", purpose, "-attime", AT,
            "-CAfile", str(tmp / "root.pem")]  # fmt: skip
    if len(certs) > 1:
        (tmp / "untrusted.pem").write_bytes(anchors_to_pem(certs[1:]).encode())
        args += ["-untrusted", str(tmp / "untrusted.pem")]
    if crl is not None:
        (tmp / "crl.pem").write_bytes(crl)
        args += ["-crl_check", "-CRLfile", str(tmp / "crl.pem")]
    args.append(str(tmp / "leaf.pem"))
    return subprocess.run(args, capture_output=True, text=True, check=False)


def crypto_verify_client(root: x509.Certificate, chain_pem: bytes) -> list[x509.GeneralName]:
    leaf, *intermediates = x509.load_pem_x509_certificates(chain_pem)
    verifier = (
        PolicyBuilder()
        .store(Store([root]))
        .time(NOW + timedelta(minutes=1))
        .build_client_verifier()
    )
    return list(verifier.verify(leaf, intermediates).subjects or [])


@pytest.mark.parametrize("ca_alg", list(KeyAlgorithm))
@pytest.mark.parametrize(
    "leaf_alg", [KeyAlgorithm.ECDSAP256, KeyAlgorithm.Ed25519, KeyAlgorithm.RSA2048]
)
def test_openssl_verifies_every_algorithm(
    tmp_path: Path, ca_alg: KeyAlgorithm, leaf_alg: KeyAlgorithm
) -> None:
    ca = cached_ca(ca_alg)
    leaf = issue_leaf(ca, request(alg=leaf_alg), NOW, private_key=cached_key(leaf_alg))
    result = openssl_verify(tmp_path, ca.certificate_pem, leaf.chain_pem)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")
    server = openssl_verify(tmp_path, ca.certificate_pem, leaf.chain_pem, purpose="sslserver")
    assert server.returncode == 0, server.stdout + server.stderr


@pytest.mark.parametrize("leaf_alg", list(KeyAlgorithm))
def test_openssl_verifies_every_leaf_algorithm(tmp_path: Path, leaf_alg: KeyAlgorithm) -> None:
    ca = cached_ca(KeyAlgorithm.ECDSAP384)
    leaf = issue_leaf(ca, request(alg=leaf_alg), NOW, private_key=cached_key(leaf_alg))
    result = openssl_verify(tmp_path, ca.certificate_pem, leaf.chain_pem)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("ca_alg", [a for a in KeyAlgorithm if a is not KeyAlgorithm.Ed25519])
@pytest.mark.parametrize("leaf_alg", list(KeyAlgorithm))
def test_cryptography_verifier_returns_spiffe_id(
    ca_alg: KeyAlgorithm, leaf_alg: KeyAlgorithm
) -> None:
    ca = cached_ca(ca_alg)
    leaf = issue_leaf(ca, request(alg=leaf_alg), NOW, private_key=cached_key(leaf_alg))
    subjects = crypto_verify_client(ca.certificate, leaf.chain_pem)
    assert x509.UniformResourceIdentifier(SPIFFE) in subjects
    server = (
        PolicyBuilder()
        .store(Store([ca.certificate]))
        .time(NOW + timedelta(minutes=1))
        .build_server_verifier(x509.DNSName("payments.payments.svc"))
    )
    server.verify(leaf.certificate, [])


def test_cryptography_verifier_rejects_ed25519_authorities() -> None:
    """Documented limitation: WebPKI-profile verifiers (cryptography, rustls/webpki) do not
    accept Ed25519 signatures on certificates; OpenSSL and Go's crypto/x509 do."""
    ca = cached_ca(KeyAlgorithm.Ed25519)
    leaf = issue_leaf(ca, request(), NOW, private_key=cached_key(KeyAlgorithm.ECDSAP256))
    with pytest.raises(VerificationError, match="Forbidden public key algorithm"):
        crypto_verify_client(ca.certificate, leaf.chain_pem)


def test_intermediate_chain_verifies(tmp_path: Path) -> None:
    root = make_cert("Corp Root")
    mid = make_cert("Corp Intermediate", issuer=root)
    issuing = make_cert("Corp Issuing", issuer=mid)
    authority = load_authority_from_pem(issuing.pem + mid.pem, issuing.key_pem, root.pem, NOW)
    leaf = issue_leaf(authority, request(), NOW)
    assert leaf.chain_pem.count(b"BEGIN CERTIFICATE") == 3
    result = openssl_verify(tmp_path, root.pem, leaf.chain_pem)
    assert result.returncode == 0, result.stdout + result.stderr
    assert x509.UniformResourceIdentifier(SPIFFE) in crypto_verify_client(root.cert, leaf.chain_pem)


def test_server_only_leaf_fails_client_purpose(tmp_path: Path) -> None:
    from trustwarden.pki import Usage

    ca = cached_ca()
    leaf = issue_leaf(ca, request(usages=frozenset({Usage.server})), NOW)
    assert (
        openssl_verify(tmp_path, ca.certificate_pem, leaf.chain_pem, purpose="sslserver").returncode
        == 0
    )
    result = openssl_verify(tmp_path, ca.certificate_pem, leaf.chain_pem, purpose="sslclient")
    assert result.returncode != 0
    with pytest.raises(VerificationError):
        crypto_verify_client(ca.certificate, leaf.chain_pem)


def test_wrong_root_fails(tmp_path: Path) -> None:
    leaf = issue_leaf(cached_ca(), request(), NOW)
    other = cached_ca(KeyAlgorithm.ECDSAP384)
    result = openssl_verify(tmp_path, other.certificate_pem, leaf.chain_pem)
    assert result.returncode != 0
    assert "unable to get local issuer certificate" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "ca_alg", [KeyAlgorithm.ECDSAP256, KeyAlgorithm.Ed25519, KeyAlgorithm.RSA2048]
)
def test_crl_check_revoked_fails_unrevoked_passes(tmp_path: Path, ca_alg: KeyAlgorithm) -> None:
    ca: Authority = cached_ca(ca_alg)
    revoked = issue_leaf(ca, request(), NOW)
    kept = issue_leaf(ca, request(), NOW)
    crl = build_crl(
        ca,
        [RevokedSerial(revoked.serial, revoked.not_after, NOW, "cessationOfOperation")],
        NOW,
        crl_number=7,
    )
    bad = openssl_verify(tmp_path, ca.certificate_pem, revoked.chain_pem, crl=crl)
    assert bad.returncode != 0
    assert "certificate revoked" in bad.stdout + bad.stderr
    good = openssl_verify(tmp_path, ca.certificate_pem, kept.chain_pem, crl=crl)
    assert good.returncode == 0, good.stdout + good.stderr


def test_crl_check_with_empty_crl_passes(tmp_path: Path) -> None:
    ca = cached_ca()
    leaf = issue_leaf(ca, request(), NOW)
    crl = build_crl(ca, [], NOW, crl_number=1)
    assert openssl_verify(tmp_path, ca.certificate_pem, leaf.chain_pem, crl=crl).returncode == 0
