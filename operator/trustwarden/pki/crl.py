"""Certificate revocation lists: a revoked serial stays listed until the certificate's own
notAfter, after which listing it is pointless (the certificate is dead anyway)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ._clock import floor_second, require_utc
from .ca import Authority
from .errors import CRLError

__all__ = ["DEFAULT_NEXT_UPDATE", "RevokedSerial", "build_crl", "prune_revoked"]

DEFAULT_NEXT_UPDATE = timedelta(hours=1)
_MAX_CRL_NUMBER_BITS = 159

_REASONS: dict[str, x509.ReasonFlags] = {}
for _flag in x509.ReasonFlags:
    _REASONS[_flag.value.lower()] = _flag
    _REASONS[_flag.name.replace("_", "").lower()] = _flag


@dataclass(frozen=True)
class RevokedSerial:
    """A revoked leaf. ``reason`` may be an RFC 5280 reason name (``keyCompromise``,
    ``cessationOfOperation``, ``superseded``, ...) which is then encoded in the CRL; any
    other text is kept for humans and encoded as no reason code (unspecified)."""

    serial: int
    not_after: datetime
    revoked_at: datetime
    reason: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.serial, int) or self.serial <= 0:
            raise CRLError(
                f"revoked serial {self.serial!r} is not a positive integer; pass the "
                "certificate's serial number"
            )
        if self.serial.bit_length() > 160:
            raise CRLError(f"revoked serial {self.serial:x} is longer than 20 octets")
        object.__setattr__(self, "not_after", require_utc(self.not_after, "not_after"))
        object.__setattr__(self, "revoked_at", require_utc(self.revoked_at, "revoked_at"))

    @property
    def reason_flag(self) -> x509.ReasonFlags | None:
        key = self.reason.replace("_", "").replace("-", "").replace(" ", "").lower()
        flag = _REASONS.get(key)
        return None if flag in (None, x509.ReasonFlags.unspecified) else flag


def prune_revoked(entries: Iterable[RevokedSerial], now: datetime) -> list[RevokedSerial]:
    """Entries whose certificate has not expired yet, one per serial (earliest revocation
    wins), sorted by serial."""
    now = require_utc(now)
    kept: dict[int, RevokedSerial] = {}
    for entry in entries:
        if entry.not_after <= now:
            continue
        current = kept.get(entry.serial)
        if current is None or entry.revoked_at < current.revoked_at:
            kept[entry.serial] = entry
    return [kept[s] for s in sorted(kept)]


def build_crl(
    authority: Authority,
    entries: Iterable[RevokedSerial],
    now: datetime,
    *,
    next_update: timedelta = DEFAULT_NEXT_UPDATE,
    crl_number: int,
) -> bytes:
    """A PEM CRL signed by ``authority`` listing the unexpired ``entries``.

    ``crl_number`` must increase with every CRL the authority publishes (RFC 5280 5.2.3).
    thisUpdate is ``now``; nextUpdate ``now + next_update``.
    """
    now = require_utc(now)
    if next_update <= timedelta(0):
        raise CRLError(f"next_update must be positive, got {next_update}")
    if (
        not isinstance(crl_number, int)
        or crl_number < 0
        or crl_number.bit_length() > _MAX_CRL_NUMBER_BITS
    ):
        raise CRLError(
            f"crl_number {crl_number!r} must be a non-negative integer of at most 20 octets; "
            "keep a counter per trust domain and increment it"
        )
    this_update = floor_second(now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.certificate.subject)
        .last_update(this_update)
        .next_update(floor_second(now + next_update))
        .add_extension(authority.authority_key_identifier, critical=False)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
    )
    for entry in prune_revoked(entries, now):
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(floor_second(min(entry.revoked_at, now)))
        )
        flag = entry.reason_flag
        if flag is not None:
            revoked = revoked.add_extension(x509.CRLReason(flag), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    crl = builder.sign(authority.private_key, authority.signature_hash)
    return crl.public_bytes(serialization.Encoding.PEM)
