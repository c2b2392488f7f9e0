"""The webhook's serving pair is built by pki at the time it is given."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from trustwarden.pki import InvalidArgumentError, signed_by
from trustwarden.pki.serving import BACKDATE, issue_serving_pair

NOW = datetime(2031, 5, 1, 9, 30, tzinfo=UTC)


def test_serving_pair_follows_the_given_clock_and_names() -> None:
    pair = issue_serving_pair(
        ["webhook.trustwarden-system.svc", "127.0.0.1"], now=NOW, lifetime=timedelta(days=30)
    )
    (ca,) = x509.load_pem_x509_certificates(pair.ca_pem)
    (cert,) = x509.load_pem_x509_certificates(pair.cert_pem)
    for c in (ca, cert):
        assert c.not_valid_before_utc == NOW - BACKDATE
        assert c.not_valid_after_utc == NOW + timedelta(days=30)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["webhook.trustwarden-system.svc"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert signed_by(cert, ca)
    assert "key_pem" not in repr(pair)


def test_serving_pair_refuses_a_naive_time_and_no_hosts() -> None:
    with pytest.raises(InvalidArgumentError, match="naive"):
        issue_serving_pair(["a.svc"], now=datetime(2031, 5, 1), lifetime=timedelta(days=1))
    with pytest.raises(ValueError, match="at least one host"):
        issue_serving_pair([], now=NOW, lifetime=timedelta(days=1))


def test_signed_by_is_evidence_a_look_alike_fails() -> None:
    """Same issuer name, same subject, but another key: signed_by says no."""
    pair = issue_serving_pair(["a.svc"], now=NOW, lifetime=timedelta(days=1))
    (ca,) = x509.load_pem_x509_certificates(pair.ca_pem)
    (cert,) = x509.load_pem_x509_certificates(pair.cert_pem)
    forger = ec.generate_private_key(ec.SECP256R1())
    look_alike = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(forger.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .sign(forger, hashes.SHA256())
    )
    assert not signed_by(look_alike, ca)
    assert not signed_by(ca, cert)  # names do not chain
