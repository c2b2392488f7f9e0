from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509

from tests.unit.conftest import NOW, cached_ca
from trustwarden.pki import CRLError, InvalidArgumentError, RevokedSerial, build_crl, prune_revoked


def entry(
    serial: int, hours: float, reason: str = "cessationOfOperation", revoked: float = 0
) -> RevokedSerial:
    return RevokedSerial(
        serial, NOW + timedelta(hours=hours), NOW + timedelta(hours=revoked), reason
    )


def test_prune_drops_expired_dedupes_and_sorts() -> None:
    entries = [
        entry(5, 1),
        entry(3, -1),
        entry(9, 2, revoked=-1),
        entry(9, 2, revoked=-2),
        entry(1, 0),
    ]
    kept = prune_revoked(entries, NOW)
    assert [e.serial for e in kept] == [5, 9]
    assert kept[1].revoked_at == NOW - timedelta(hours=2)


def test_build_crl_content() -> None:
    ca = cached_ca()
    pem = build_crl(
        ca,
        [
            entry(5, 1, "keyCompromise"),
            entry(7, 1, "pod deleted"),
            entry(8, -1),
            entry(9, 1, "superseded", revoked=1),
        ],
        NOW + timedelta(microseconds=999),
        crl_number=42,
        next_update=timedelta(hours=2),
    )
    assert pem.startswith(b"-----BEGIN X509 CRL-----")
    crl = x509.load_pem_x509_crl(pem)
    assert crl.is_signature_valid(ca.certificate.public_key())
    assert crl.issuer == ca.certificate.subject
    assert crl.last_update_utc == NOW
    assert crl.next_update_utc == NOW + timedelta(hours=2)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 42
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.subject_key_identifier.digest
    serials = {r.serial_number: r for r in crl}
    assert set(serials) == {5, 7, 9}  # 8 expired: listing it is pointless
    reason = serials[5].extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    with pytest.raises(x509.ExtensionNotFound):
        serials[7].extensions.get_extension_for_class(x509.CRLReason)  # free text: unspecified
    # A revocation time in the future (clock skew) is clamped to thisUpdate.
    assert serials[9].revocation_date_utc == NOW


def test_reason_names_are_flexible() -> None:
    assert entry(1, 1, "key_compromise").reason_flag is x509.ReasonFlags.key_compromise
    assert (
        entry(1, 1, "CessationOfOperation").reason_flag is x509.ReasonFlags.cessation_of_operation
    )
    assert entry(1, 1, "unspecified").reason_flag is None
    assert entry(1, 1, "").reason_flag is None


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"crl_number": -1}, "crl_number -1 must be a non-negative integer"),
        ({"crl_number": 1 << 170}, "of at most 20 octets"),
        ({"crl_number": 1, "next_update": timedelta(0)}, "next_update must be positive"),
    ],
)
def test_build_crl_argument_errors(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(CRLError) as err:
        build_crl(cached_ca(), [], NOW, **kwargs)  # type: ignore[arg-type]
    assert fragment in str(err.value)


def test_revoked_serial_validation() -> None:
    with pytest.raises(CRLError, match="is not a positive integer"):
        RevokedSerial(0, NOW, NOW, "")
    with pytest.raises(InvalidArgumentError, match="naive datetime"):
        RevokedSerial(1, NOW.replace(tzinfo=None), NOW, "")
