"""Cross-certificates: the old authority certifies the new one during a fast rotation.

A cross-certificate has the new authority's subject, public key and key identifier, and is
signed by the old authority. A leaf signed by the new authority that carries it after itself
in ``tls.crt`` verifies two ways:
- against the new anchor: leaf -> new root (the cross-certificate is not needed);
- against the old anchor only (a client whose kubelet has not yet written the new bundle):
  leaf -> cross-certificate -> old root.

So a cross-signed rotation can activate within seconds without cutting anyone off. The
cross-certificate never outlives its signer and is dropped together with the old anchor.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from ._clock import floor_second, require_utc
from ._x509util import basic_constraints, cert_to_pem, signed_by
from .ca import CA_BACKDATE, Authority, new_serial
from .errors import InvalidArgumentError

__all__ = ["chain_pem", "cross_certify", "is_cross_certificate_for"]


def cross_certify(
    new: Authority,
    old: Authority,
    now: datetime,
    *,
    serial: int | None = None,
    backdate: timedelta = CA_BACKDATE,
) -> x509.Certificate:
    """A certificate for ``new``'s key and subject, signed by ``old``.

    Validity: from ``now - backdate`` (not before either authority) to the earlier of the
    two authorities' path notAfter, so it never vouches for longer than ``old`` itself may."""
    now = require_utc(now)
    if new.sha256 == old.sha256:
        raise InvalidArgumentError("an authority cannot cross-certify itself")
    if not new.is_root:
        raise InvalidArgumentError(
            f"authority {new.serial_hex} is not self-signed; only self-signed authorities are "
            "cross-signed (a bring-your-own CA rotates by its own chain)"
        )
    not_before = floor_second(max(now - backdate, new.not_before, old.not_before))
    not_after = floor_second(min(new.path_not_after, old.path_not_after))
    if not_after <= not_before or now >= not_after:
        raise InvalidArgumentError(
            f"authority {old.serial_hex} expires at {old.path_not_after.isoformat()}: too "
            "soon to cross-sign its successor; rotate without --cross-sign"
        )
    subject_cert = new.certificate
    constraints = basic_constraints(subject_cert) or x509.BasicConstraints(
        ca=True, path_length=None
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_cert.subject)
        .issuer_name(old.certificate.subject)
        .public_key(subject_cert.public_key())
        .serial_number(new_serial() if serial is None else serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(constraints, critical=True)
        .add_extension(
            subject_cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value,
            critical=True,
        )
        .add_extension(new.subject_key_identifier, critical=False)
        .add_extension(old.authority_key_identifier, critical=False)
    )
    try:
        san = subject_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        builder = builder.add_extension(san.value, critical=san.critical)
    except x509.ExtensionNotFound:
        pass
    return builder.sign(old.private_key, old.signature_hash)


def is_cross_certificate_for(cert: x509.Certificate, new: Authority, old: Authority) -> bool:
    """True when ``cert`` certifies ``new``'s key under ``new``'s name and ``old`` signed it."""
    return (
        cert.subject == new.certificate.subject
        and cert.public_key() == new.certificate.public_key()
        and cert.issuer == old.certificate.subject
        and signed_by(cert, old.certificate)
    )


def chain_pem(cross: x509.Certificate | None) -> bytes:
    """What a leaf's ``tls.crt`` carries after the issuing chain: the cross-certificate."""
    return cert_to_pem(cross) if cross is not None else b""
