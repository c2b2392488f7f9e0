"""Self-signed CA rotation as a pure step function, on SPIRE's schedule.

An active authority gets a successor *prepared* at 1/2 of its life; the successor is
published in every bundle at once, and becomes *active* at 5/6 (the old one is *retired*).
A retired authority stays in the bundles until the last leaf it signed has expired, then
it is *dropped*. With leaf TTLs capped at 1/6 of the CA lifetime, every leaf of the old
authority expires before the old authority does, and every verifier already trusts the new
authority when the first leaf it signs appears. No step ever leaves a gap.

Everything here takes ``now``; the operator keeps one timer per trust domain at
:func:`next_event_at`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ._clock import from_rfc3339, require_utc, to_rfc3339
from .bundle import filter_anchors
from .ca import Authority
from .crosssign import cross_certify
from .errors import InvalidArgumentError, StateError
from .propagation import RotationMode

__all__ = [
    "ACTIVATE_FRACTION",
    "PREPARE_FRACTION",
    "AuthorityRecord",
    "AuthoritySet",
    "AuthorityState",
    "MakeAuthority",
    "Transition",
    "TransitionKind",
    "advance",
    "force_rotate",
    "next_event_at",
    "pending_activation",
    "record_from_dict",
    "record_issued",
    "record_to_dict",
]

PREPARE_FRACTION = 1 / 2
ACTIVATE_FRACTION = 5 / 6
_MAX_STEPS = 16

MakeAuthority = Callable[[datetime], Authority]


class AuthorityState(StrEnum):
    Prepared = "Prepared"
    Active = "Active"
    Retired = "Retired"


class TransitionKind(StrEnum):
    prepared = "prepared"
    activated = "activated"
    retired = "retired"
    dropped = "dropped"
    uncrossed = "uncrossed"  # the cross-certificate left with the anchor that signed it


@dataclass(frozen=True)
class AuthorityRecord:
    """One authority of a trust domain and where it is in its life cycle."""

    authority: Authority
    state: AuthorityState
    activated_at: datetime | None = None
    retired_at: datetime | None = None
    last_leaf_not_after: datetime | None = None
    planned_activation: datetime | None = None
    prepared_at: datetime | None = None
    # Why planned_activation is when it is (a forced rotation's plan), for the status.
    activation_reason: str | None = None
    # This authority certified by its predecessor (a cross-signed rotation): re-issued leaves
    # carry it after themselves, so clients that trust only the predecessor's anchor verify
    # them. Dropped with the predecessor's anchor.
    cross_certificate: x509.Certificate | None = dataclass_field(default=None, repr=False)
    cross_signer: str | None = None  # SHA-256 of the authority that signed cross_certificate
    # Set when a rotation declared this authority's key compromised: its anchor leaves the
    # bundles at once (the record stays so its CRL can list the revoked leaves).
    compromised_at: datetime | None = None

    @property
    def sha256(self) -> str:
        return self.authority.sha256

    @property
    def serial(self) -> int:
        return self.authority.serial

    @property
    def serial_hex(self) -> str:
        return self.authority.serial_hex

    @property
    def successor_prepare_at(self) -> datetime:
        """When an Active authority gets a Prepared successor (1/2 of its life)."""
        a = self.authority
        return a.not_before + a.lifetime * PREPARE_FRACTION

    @property
    def successor_activate_at(self) -> datetime:
        """When the successor of an Active authority takes over (5/6 of its life)."""
        a = self.authority
        return a.not_before + a.lifetime * ACTIVATE_FRACTION

    @property
    def drop_at(self) -> datetime:
        """When a Retired authority leaves the bundles: after the last leaf it signed (or,
        if none was recorded, its own notAfter)."""
        if self.last_leaf_not_after is not None:
            return min(self.last_leaf_not_after, self.authority.not_after)
        return self.authority.not_after

    def to_dict(self) -> dict[str, str]:
        return record_to_dict(self)


@dataclass(frozen=True)
class Transition:
    """One life-cycle step, for Events, logs and status."""

    kind: TransitionKind
    serial: int
    sha256: str
    at: datetime
    reason: str

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")


@dataclass(frozen=True)
class AuthoritySet:
    """All authorities of one trust domain. Immutable; :func:`advance` returns a new one."""

    records: tuple[AuthorityRecord, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "records", tuple(self.records))
        seen: set[str] = set()
        for record in self.records:
            if record.sha256 in seen:
                raise StateError(
                    f"authority {record.serial_hex} (sha256 {record.sha256[:16]}...) appears "
                    "twice in the authority set; remove the duplicate from the stored state"
                )
            seen.add(record.sha256)
        for state in (AuthorityState.Active, AuthorityState.Prepared):
            count = sum(1 for r in self.records if r.state is state)
            if count > 1:
                raise StateError(
                    f"{count} authorities are {state.value}; at most one may be. Fix the "
                    "stored TrustDomain state (status.authorities) so only one is "
                    f"{state.value}"
                )

    def _one(self, state: AuthorityState) -> AuthorityRecord | None:
        return next((r for r in self.records if r.state is state), None)

    @property
    def active_record(self) -> AuthorityRecord | None:
        return self._one(AuthorityState.Active)

    @property
    def prepared_record(self) -> AuthorityRecord | None:
        return self._one(AuthorityState.Prepared)

    @property
    def active(self) -> AuthorityRecord | None:
        """The record of the authority that signs new leaves now."""
        return self.active_record

    @property
    def active_authority(self) -> Authority | None:
        """The authority that signs new leaves now."""
        record = self.active_record
        return record.authority if record else None

    @property
    def authorities(self) -> tuple[Authority, ...]:
        """Every authority still held (for :func:`inspect_leaf` ``issuers``)."""
        return tuple(r.authority for r in self.records)

    @cached_property
    def by_sha256(self) -> Mapping[str, AuthorityRecord]:
        return {r.sha256: r for r in self.records}

    def anchors(self, now: datetime) -> list[x509.Certificate]:
        """The roots to publish now: every Prepared, Active and (not yet dropped) Retired
        authority except compromised ones, deduplicated, unexpired, sorted."""
        return filter_anchors(
            (r.authority.anchor for r in self.records if r.compromised_at is None), now
        )

    @cached_property
    def issuing_intermediates_der(self) -> tuple[bytes, ...]:
        """The DER of every certificate a leaf of the active authority carries after itself
        in ``tls.crt``: the issuing chain, then the cross-certificate if there is one."""
        record = self.active_record
        if record is None:
            return ()
        authority = record.authority
        certs = () if authority.is_root else (authority.certificate, *authority.chain)
        if record.cross_certificate is not None:
            certs = (*certs, record.cross_certificate)
        return tuple(c.public_bytes(Encoding.DER) for c in certs)

    @property
    def cross_chain_pem(self) -> bytes:
        """PEM of the active authority's cross-certificate (empty when it has none)."""
        record = self.active_record
        if record is None or record.cross_certificate is None:
            return b""
        return record.cross_certificate.public_bytes(Encoding.PEM)

    def to_dicts(self) -> list[dict[str, str]]:
        return [record_to_dict(r) for r in self.records]

    @classmethod
    def from_dicts(
        cls, items: Iterable[Mapping[str, str]], authorities: Iterable[Authority]
    ) -> AuthoritySet:
        """Rebuild from :meth:`to_dicts` output plus the authorities (PEMs and keys are
        stored separately, in Secrets), matched by SHA-256."""
        by_sha = {a.sha256: a for a in authorities}
        records = []
        for index, item in enumerate(items):
            sha = item.get("sha256", "")
            authority = by_sha.get(sha)
            if authority is None:
                raise StateError(
                    f"authorities[{index}]: no CA certificate with sha256 {sha[:16]!r}... was "
                    "found among the stored CA Secrets; restore the Secret or remove the entry"
                )
            records.append(record_from_dict(item, authority, field=f"authorities[{index}]"))
        return cls(tuple(records))


def _check_new_authority(authority: Authority, now: datetime) -> Authority:
    if not isinstance(authority, Authority):
        raise InvalidArgumentError(
            f"make_authority must return an Authority, got {type(authority).__name__}"
        )
    if now >= authority.not_after or authority.not_before > now + timedelta(minutes=1):
        raise InvalidArgumentError(
            f"make_authority returned authority {authority.serial_hex} valid "
            f"{authority.not_before.isoformat()}..{authority.not_after.isoformat()}, which "
            f"does not cover now ({now.isoformat()}); create it with notBefore <= now"
        )
    return authority


def _replace_record(
    records: list[AuthorityRecord], old: AuthorityRecord, new: AuthorityRecord | None
) -> None:
    index = records.index(old)
    if new is None:
        del records[index]
    else:
        records[index] = new


def _step(
    records: list[AuthorityRecord],
    now: datetime,
    make_authority: MakeAuthority,
    out: list[Transition],
) -> bool:
    """Apply the first due transition; return whether anything changed."""

    def note(kind: TransitionKind, authority: Authority, reason: str) -> None:
        out.append(Transition(kind, authority.serial, authority.sha256, now, reason))

    for record in records:
        if record.cross_certificate is not None and (
            record.cross_signer not in {r.sha256 for r in records if r is not record}
            or now >= record.cross_certificate.not_valid_after_utc
        ):
            _replace_record(
                records, record, replace(record, cross_certificate=None, cross_signer=None)
            )
            note(
                TransitionKind.uncrossed,
                record.authority,
                "cross-certificate dropped: the anchor that signed it is no longer published",
            )
            return True
        if record.state is AuthorityState.Retired and now >= record.drop_at:
            _replace_record(records, record, None)
            why = (
                "its last leaf expired"
                if record.last_leaf_not_after is not None
                and record.last_leaf_not_after < record.authority.not_after
                else "it expired"
            )
            note(TransitionKind.dropped, record.authority, f"retired authority dropped: {why}")
            return True
        if record.state is AuthorityState.Prepared and now >= record.authority.not_after:
            _replace_record(records, record, None)
            note(TransitionKind.dropped, record.authority, "prepared authority expired unused")
            return True

    active = next((r for r in records if r.state is AuthorityState.Active), None)
    prepared = next((r for r in records if r.state is AuthorityState.Prepared), None)

    if active is not None and now >= active.authority.path_not_after:
        _replace_record(
            records, active, replace(active, state=AuthorityState.Retired, retired_at=now)
        )
        note(TransitionKind.retired, active.authority, "active authority expired")
        return True

    if active is None:
        if prepared is not None:
            _replace_record(
                records,
                prepared,
                replace(
                    prepared, state=AuthorityState.Active, activated_at=now, planned_activation=None
                ),
            )
            note(
                TransitionKind.activated,
                prepared.authority,
                "no active authority: activated the prepared one",
            )
            return True
        authority = _check_new_authority(make_authority(now), now)
        records.append(
            AuthorityRecord(authority, AuthorityState.Active, activated_at=now, prepared_at=now)
        )
        note(TransitionKind.prepared, authority, "no authority existed: created one")
        note(TransitionKind.activated, authority, "no authority existed: activated at once")
        return True

    if prepared is None:
        if now >= active.successor_prepare_at:
            authority = _check_new_authority(make_authority(now), now)
            records.append(AuthorityRecord(authority, AuthorityState.Prepared, prepared_at=now))
            note(
                TransitionKind.prepared,
                authority,
                f"active authority {active.serial_hex} reached 1/2 of its lifetime; the "
                "successor is published in bundles now",
            )
            return True
        return False

    activate_at = prepared.planned_activation or active.successor_activate_at
    if now >= activate_at:
        _replace_record(
            records, active, replace(active, state=AuthorityState.Retired, retired_at=now)
        )
        _replace_record(
            records,
            prepared,
            replace(
                prepared,
                state=AuthorityState.Active,
                activated_at=now,
                planned_activation=None,
                activation_reason=None,
            ),
        )
        why = (
            "planned (forced) activation time reached"
            if prepared.planned_activation is not None
            else f"authority {active.serial_hex} reached 5/6 of its lifetime"
        )
        note(
            TransitionKind.retired,
            active.authority,
            f"superseded by {prepared.serial_hex}; kept in bundles until its leaves expire",
        )
        note(TransitionKind.activated, prepared.authority, why)
        return True
    return False


def advance(
    aset: AuthoritySet, now: datetime, make_authority: MakeAuthority
) -> tuple[AuthoritySet, list[Transition]]:
    """Apply every transition due at ``now`` and return the new set and what happened.

    ``make_authority(now)`` creates a new authority (a fresh self-signed CA) when one is
    needed. Calling ``advance`` again at the same ``now`` changes nothing (idempotent).
    """
    now = require_utc(now)
    records = list(aset.records)
    transitions: list[Transition] = []
    for _ in range(_MAX_STEPS):
        if not _step(records, now, make_authority, transitions):
            break
    if not transitions:
        return aset, []
    return AuthoritySet(tuple(records)), transitions


def next_event_at(aset: AuthoritySet) -> datetime | None:
    """When :func:`advance` next has something to do, or ``None`` if the set is empty
    (call :func:`advance` at once to create the first authority). A time in the past means
    "now"."""
    candidates: list[datetime] = []
    active = aset.active_record
    prepared = aset.prepared_record
    for record in aset.records:
        if record.state is AuthorityState.Retired:
            candidates.append(record.drop_at)
        elif record.state is AuthorityState.Prepared:
            candidates.append(record.authority.not_after)
    for record in aset.records:
        if record.cross_certificate is not None:
            candidates.append(record.cross_certificate.not_valid_after_utc)
    if active is not None:
        candidates.append(active.authority.path_not_after)
        if prepared is None:
            candidates.append(active.successor_prepare_at)
        else:
            candidates.append(prepared.planned_activation or active.successor_activate_at)
    elif prepared is not None:
        candidates.append(prepared.authority.not_before)
    return min(candidates) if candidates else None


def force_rotate(
    aset: AuthoritySet,
    now: datetime,
    make_authority: MakeAuthority,
    activate_after: timedelta,
    *,
    mode: RotationMode = RotationMode.standard,
    activation_reason: str | None = None,
) -> AuthoritySet:
    """Emergency rotation: prepare a fresh authority now and activate it at
    ``now + activate_after`` (give bundles time to reach every namespace first).

    ``mode``:
    - ``standard``: just that;
    - ``cross-sign``: the active authority also certifies the new one (a cross-certificate,
      kept on the new record), so leaves it signs verify against the old anchor too;
    - ``compromised``: the new authority is Active at once (``activate_after`` is ignored),
      the old one Retired and marked compromised, so its anchor leaves the bundles now.

    A Prepared authority that already exists is replaced: it never signed anything. If
    there is no active authority, this is the same as :func:`advance`.
    """
    now = require_utc(now)
    mode = RotationMode(mode)
    if activate_after < timedelta(0):
        raise InvalidArgumentError(
            f"activate_after must be >= 0, got {activate_after}; use 0 to activate at the "
            "next advance()"
        )
    active = aset.active_record
    if active is None:
        return advance(aset, now, make_authority)[0]
    authority = _check_new_authority(make_authority(now), now)
    records = [r for r in aset.records if r.state is not AuthorityState.Prepared]
    if mode is RotationMode.compromised:
        records = [
            replace(r, state=AuthorityState.Retired, retired_at=now, compromised_at=now)
            if r is active
            else r
            for r in records
        ]
        records.append(
            AuthorityRecord(authority, AuthorityState.Active, activated_at=now, prepared_at=now)
        )
        return AuthoritySet(tuple(records))
    cross = None
    if mode is RotationMode.cross_sign:
        cross = cross_certify(authority, active.authority, now)
    records.append(
        AuthorityRecord(
            authority,
            AuthorityState.Prepared,
            prepared_at=now,
            planned_activation=now + activate_after,
            activation_reason=activation_reason,
            cross_certificate=cross,
            cross_signer=active.sha256 if cross is not None else None,
        )
    )
    return AuthoritySet(tuple(records))


def pending_activation(aset: AuthoritySet) -> tuple[AuthorityRecord, datetime, str] | None:
    """The Prepared authority, when it will activate, and why then (for the status)."""
    prepared, active = aset.prepared_record, aset.active_record
    if prepared is None:
        return None
    if prepared.planned_activation is not None:
        return (
            prepared,
            prepared.planned_activation,
            prepared.activation_reason or "planned activation (a forced rotation or a CA recovery)",
        )
    if active is not None:
        return (
            prepared,
            active.successor_activate_at,
            f"scheduled: 5/6 of active authority {active.serial_hex}'s lifetime; the new "
            "anchor has been published since 1/2, far longer than any kubelet delay",
        )
    return prepared, prepared.authority.not_before, "no active authority: activates at once"


def record_issued(aset: AuthoritySet, issuer_sha256: str, leaf_not_after: datetime) -> AuthoritySet:
    """Note that the authority ``issuer_sha256`` signed a leaf valid until
    ``leaf_not_after``, so it is kept in bundles at least that long. Unknown issuers (an
    authority already dropped) leave the set unchanged."""
    leaf_not_after = require_utc(leaf_not_after, "leaf_not_after")
    record = aset.by_sha256.get(issuer_sha256)
    if record is None:
        return aset
    if record.last_leaf_not_after is not None and record.last_leaf_not_after >= leaf_not_after:
        return aset
    updated = replace(record, last_leaf_not_after=leaf_not_after)
    return AuthoritySet(tuple(updated if r is record else r for r in aset.records))


# --------------------------------------------------------------------------- serialisation

_TIMESTAMP_FIELDS = (
    ("activatedAt", "activated_at"),
    ("retiredAt", "retired_at"),
    ("lastLeafNotAfter", "last_leaf_not_after"),
    ("plannedActivation", "planned_activation"),
    ("preparedAt", "prepared_at"),
    ("compromisedAt", "compromised_at"),
)


def record_to_dict(record: AuthorityRecord) -> dict[str, str]:
    """Plain strings for status or a state ConfigMap: state, serial, sha256, validity and
    life-cycle timestamps (RFC 3339). Never any key material."""
    out = {
        "state": record.state.value,
        "serial": record.serial_hex,
        "sha256": record.sha256,
        "notBefore": to_rfc3339(record.authority.not_before),
        "notAfter": to_rfc3339(record.authority.not_after),
    }
    for key, attr in _TIMESTAMP_FIELDS:
        value = getattr(record, attr)
        if value is not None:
            out[key] = to_rfc3339(value)
    if record.activation_reason:
        out["activationReason"] = record.activation_reason
    if record.cross_signer:
        out["crossSigner"] = record.cross_signer
    return out


def record_from_dict(
    data: Mapping[str, str],
    authority: Authority,
    *,
    field: str = "authority",
    cross_certificate: x509.Certificate | None = None,
) -> AuthorityRecord:
    """Inverse of :func:`record_to_dict`, given the authority the entry describes (and its
    cross-certificate, stored apart like the certificates)."""
    sha = data.get("sha256")
    if sha != authority.sha256:
        raise StateError(
            f"{field}: stored sha256 {str(sha)[:16]!r}... does not match the CA certificate "
            f"({authority.sha256[:16]}...); the state belongs to another certificate"
        )
    try:
        state = AuthorityState(data.get("state", ""))
    except ValueError:
        raise StateError(
            f"{field}: state {data.get('state')!r} is not one of Prepared, Active, Retired"
        ) from None
    values: dict[str, datetime | None] = {}
    for key, attr in _TIMESTAMP_FIELDS:
        raw = data.get(key)
        values[attr] = None if raw in (None, "") else from_rfc3339(str(raw), f"{field}.{key}")
    signer = data.get("crossSigner") or None
    return AuthorityRecord(
        authority=authority,
        state=state,
        activation_reason=data.get("activationReason") or None,
        cross_certificate=cross_certificate if signer else None,
        cross_signer=signer if cross_certificate is not None else None,
        **values,
    )
