"""The renewal decision: a chain of pure checks in the style of cert-manager's
``policies.Chain``. A gatherer reads the Secret (:func:`inspect_leaf`), this module
decides, and the caller acts. The first check that fires wins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from ._clock import require_utc, to_rfc3339
from .ca import Authority
from .durations import format_duration
from .errors import InvalidArgumentError, InvalidPEMError
from .issue import DEFAULT_BACKDATE, LeafFacts, LeafRequest, Usage, inspect_leaf, ttl_cap
from .keys import KeyAlgorithm
from .rotation import AuthoritySet
from .spiffe import SpiffeID, validate_dns_name

__all__ = [
    "DEFAULT_MAX_JITTER_FRACTION",
    "DesiredLeaf",
    "RenewalAction",
    "RenewalDecision",
    "RenewalReason",
    "decide_for_secret",
    "decide_renewal",
    "jitter_fraction",
    "renew_point",
]

DEFAULT_MAX_JITTER_FRACTION = 0.1
# X.509 times have one-second precision: lifetimes may differ from the request by < 1 s.
_PRECISION = timedelta(seconds=1)


class RenewalAction(StrEnum):
    issue = "issue"  # nothing usable exists: issue a new leaf
    renew = "renew"  # a valid leaf exists but should be replaced now
    wait = "wait"  # nothing to do until ``at``


class RenewalReason(StrEnum):
    NotIssued = "NotIssued"
    Tampered = "Tampered"
    Unreadable = "Unreadable"  # the Secret's tls.crt/tls.key cannot be parsed at all
    RevocationRequested = "RevocationRequested"  # `trustwarden revoke`: replace it now
    KeyMismatch = "KeyMismatch"
    Revoked = "Revoked"
    Expired = "Expired"
    SpecChanged = "SpecChanged"
    IssuerNotActive = "IssuerNotActive"
    ChainChanged = "ChainChanged"
    RenewPointReached = "RenewPointReached"
    UpToDate = "UpToDate"


@dataclass(frozen=True)
class RenewalDecision:
    action: RenewalAction
    reason: RenewalReason
    message: str
    at: datetime

    @property
    def needs_issue(self) -> bool:
        return self.action is not RenewalAction.wait


@dataclass(frozen=True)
class DesiredLeaf:
    """What the WorkloadIdentity spec asks for, already rendered for one pod/Secret.

    ``ttl`` is the requested TTL; the effective TTL is capped by ``max_ttl`` (the domain's
    ``policy.maxTTL``) and by 1/6 of the active CA's lifetime.
    """

    spiffe_id: SpiffeID
    dns_names: tuple[str, ...]
    ttl: timedelta
    key_algorithm: KeyAlgorithm
    usages: frozenset[Usage]
    renew_at: float = 0.5
    max_ttl: timedelta | None = None
    backdate: timedelta = DEFAULT_BACKDATE

    def __post_init__(self) -> None:
        if not 0 < self.renew_at < 1:
            raise InvalidArgumentError(
                f"renew_at must be strictly between 0 and 1 (0% and 100%), got "
                f"{self.renew_at}; set spec.renewAt to e.g. 50%"
            )
        if self.ttl <= timedelta(0):
            raise InvalidArgumentError(f"ttl must be positive, got {self.ttl}; set spec.ttl")
        object.__setattr__(self, "key_algorithm", KeyAlgorithm(self.key_algorithm))
        object.__setattr__(self, "usages", frozenset(Usage(u) for u in self.usages))
        object.__setattr__(
            self, "dns_names", tuple(dict.fromkeys(validate_dns_name(n) for n in self.dns_names))
        )

    def effective_ttl(self, ca_lifetime: timedelta | None) -> timedelta:
        if ca_lifetime is None:
            return self.ttl if self.max_ttl is None else min(self.ttl, self.max_ttl)
        return min(self.ttl, ttl_cap(self.max_ttl, ca_lifetime))

    def to_request(self, ca_lifetime: timedelta | None) -> LeafRequest:
        """The :class:`LeafRequest` to pass to :func:`issue_leaf` for the active CA."""
        return LeafRequest(
            spiffe_id=self.spiffe_id,
            dns_names=self.dns_names,
            ttl=self.effective_ttl(ca_lifetime),
            key_algorithm=self.key_algorithm,
            usages=self.usages,
        )


class _Validity(Protocol):
    @property
    def not_before(self) -> datetime: ...

    @property
    def not_after(self) -> datetime: ...


def jitter_fraction(jitter_key: str) -> float:
    """A stable number in [0, 1) derived from ``jitter_key`` (e.g. the Secret's UID), so the
    renew point survives operator restarts while spreading renewals of many leaves."""
    digest = hashlib.sha256(jitter_key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def renew_point(
    facts: _Validity,
    renew_at: float,
    jitter_key: str,
    max_jitter_fraction: float = DEFAULT_MAX_JITTER_FRACTION,
    *,
    backdate: timedelta = DEFAULT_BACKDATE,
) -> datetime:
    """When to renew: ``renew_at`` of the usable lifetime, minus a deterministic jitter.

    The usable lifetime runs from issuance to notAfter. notBefore is back-dated by
    ``backdate`` for clock skew, so issuance is taken as notBefore + backdate (never past
    notAfter); measuring from notBefore instead would put the renew point of a short, early
    renewing certificate before its own issuance and re-issue it in a loop.

    The jitter is in [0, min(max_jitter_fraction, renew_at / 2) x usable lifetime], derived
    from ``jitter_key`` so a restart does not reshuffle it, and bounded by half of
    ``renew_at`` so a certificate is never due the moment it is issued."""
    if not 0 <= max_jitter_fraction <= 1:
        raise InvalidArgumentError(
            f"max_jitter_fraction must be between 0 and 1, got {max_jitter_fraction}"
        )
    if not 0 < renew_at < 1:
        raise InvalidArgumentError(f"renew_at must be strictly between 0 and 1, got {renew_at}")
    start = min(facts.not_before + max(backdate, timedelta(0)), facts.not_after)
    usable = facts.not_after - start
    jitter = usable * (min(max_jitter_fraction, renew_at / 2) * jitter_fraction(jitter_key))
    return max(start, start + usable * renew_at - jitter)


@dataclass(frozen=True)
class _Context:
    facts: LeafFacts
    desired: DesiredLeaf
    active: Authority | None
    active_sha256: str | None
    known: Sequence[Authority]
    now: datetime
    expected_sha256: str | None
    renew_at_point: datetime
    revoked: Container[int] = ()
    # What tls.crt must carry after the leaf (issuing chain, cross-certificate), when known.
    expected_intermediates: tuple[bytes, ...] | None = None


_Check = Callable[[_Context], tuple[RenewalAction, RenewalReason, str] | None]


def _fmt_names(names: Sequence[str] | frozenset[str]) -> str:
    shown = sorted(names)
    text = ", ".join(shown[:5]) + (f", ... ({len(shown)} total)" if len(shown) > 5 else "")
    return f"[{text}]"


def _check_tampered(c: _Context) -> tuple[RenewalAction, RenewalReason, str] | None:
    f = c.facts
    if c.expected_sha256 is not None and f.sha256 != c.expected_sha256:
        return (
            RenewalAction.issue,
            RenewalReason.Tampered,
            f"tls.crt (sha256 {f.sha256[:16]}...) is not the certificate trustwarden wrote "
            f"(sha256 {c.expected_sha256[:16]}...); reissuing",
        )
    if f.is_ca or f.spiffe_id is None:
        what = (
            "is a CA certificate"
            if f.is_ca
            else (f"has {len(f.uris)} URI SANs instead of exactly one SPIFFE ID")
        )
        return (
            RenewalAction.issue,
            RenewalReason.Tampered,
            f"tls.crt (serial {f.serial_hex}) {what}, so it is not an X.509-SVID; reissuing",
        )
    return None


def _check_key(c: _Context) -> tuple[RenewalAction, RenewalReason, str] | None:
    if not c.facts.key_matches:
        return (
            RenewalAction.issue,
            RenewalReason.KeyMismatch,
            f"tls.key is missing or does not match the certificate (serial "
            f"{c.facts.serial_hex}); reissuing",
        )
    return None


def _check_revoked(c: _Context) -> tuple[RenewalAction, RenewalReason, str] | None:
    if c.facts.serial in c.revoked:
        return (
            RenewalAction.renew,
            RenewalReason.Revoked,
            f"certificate serial {c.facts.serial_hex} is on the trust domain's revocation "
            "list; reissuing at once",
        )
    return None


def _check_expired(c: _Context) -> tuple[RenewalAction, RenewalReason, str] | None:
    if c.now >= c.facts.not_after:
        return (
            RenewalAction.issue,
            RenewalReason.Expired,
            f"certificate serial {c.facts.serial_hex} expired at "
            f"{to_rfc3339(c.facts.not_after)}; reissuing",
        )
    return None


def _issuer_of(c: _Context) -> Authority | None:
    for authority in c.known:
        if c.facts.issued_by(authority):
            return authority
    return None


def _check_spec(c: _Context) -> tuple[RenewalAction, RenewalReason, str] | None:
    f, d = c.facts, c.desired
    changes: list[str] = []
    if f.spiffe_id != d.spiffe_id:
        issued = f.spiffe_id.uri if f.spiffe_id else "none"
        changes.append(f"SPIFFE ID ({issued} -> {d.spiffe_id.uri})")
    if frozenset(n.lower() for n in f.dns_names) != frozenset(d.dns_names):
        changes.append(f"DNS names ({_fmt_names(f.dns_names)} -> {_fmt_names(d.dns_names)})")
    if f.key_algorithm != d.key_algorithm:
        issued_alg = f.key_algorithm.value if f.key_algorithm else "unsupported"
        changes.append(f"key algorithm ({issued_alg} -> {d.key_algorithm.value})")
    if f.usages != d.usages:
        changes.append(
            f"usages ({_fmt_names([u.value for u in f.usages])} -> "
            f"{_fmt_names([u.value for u in d.usages])})"
        )
    want = d.effective_ttl(c.active.lifetime if c.active is not None else None)
    lifetime = f.lifetime
    ttl_changed = lifetime > want + d.backdate + _PRECISION
    if not ttl_changed and lifetime < want - _PRECISION:
        # Shorter than asked: fine if the issuer's own notAfter cut it short. If the issuer
        # is unknown we cannot tell, and renewing would risk a loop, so leave it be.
        issuer = _issuer_of(c)
        ttl_changed = issuer is not None and f.not_after < issuer.path_not_after - _PRECISION
    if ttl_changed:
        changes.append(
            f"TTL (issued for {format_duration(lifetime)}, want {format_duration(want)})"
        )
    if changes:
        return (
            RenewalAction.renew,
            RenewalReason.SpecChanged,
            f"certificate serial {f.serial_hex} no longer matches the spec: " + "; ".join(changes),
        )
    return None


def _check_issuer(c: _Context) -> tuple[RenewalAction, RenewalReason, str] | None:
    f = c.facts
    if c.active is not None:
        if f.issued_by(c.active):
            return None
    elif c.active_sha256 is not None:
        if f.issuer_sha256 is None or f.issuer_sha256 == c.active_sha256:
            return None  # unknown issuer: renewals at the renew point migrate it anyway
    else:
        return None
    active = c.active.serial_hex if c.active is not None else (c.active_sha256 or "")[:16]
    return (
        RenewalAction.renew,
        RenewalReason.IssuerNotActive,
        f"certificate serial {f.serial_hex} was not signed by the active authority "
        f"{active}; reissuing from the active authority",
    )


def _check_chain(c: _Context) -> tuple[RenewalAction, RenewalReason, str] | None:
    """A leaf of the active authority whose chain is not the one it should carry now: a
    cross-certificate was added (a cross-signed rotation) or dropped with the old anchor."""
    expected = c.expected_intermediates
    if expected is None or c.active is None or c.facts.intermediates_der == expected:
        return None
    have, want = len(c.facts.intermediates_der), len(expected)
    return (
        RenewalAction.renew,
        RenewalReason.ChainChanged,
        f"certificate serial {c.facts.serial_hex} carries {have} chain certificate(s) after "
        f"itself, the active authority's chain has {want} now (a cross-certificate was added "
        "or dropped); reissuing",
    )


def _check_renew_point(c: _Context) -> tuple[RenewalAction, RenewalReason, str] | None:
    if c.now >= c.renew_at_point:
        return (
            RenewalAction.renew,
            RenewalReason.RenewPointReached,
            f"certificate serial {c.facts.serial_hex} reached its renew point "
            f"{to_rfc3339(c.renew_at_point)} (renewAt {c.desired.renew_at:.0%}, expires "
            f"{to_rfc3339(c.facts.not_after)})",
        )
    return None


CHECKS: tuple[_Check, ...] = (
    _check_tampered,
    _check_key,
    _check_revoked,
    _check_expired,
    _check_spec,
    _check_issuer,
    _check_chain,
    _check_renew_point,
)


def revocation_requested(request: str, now: datetime) -> RenewalDecision:
    """A Secret that asks for revocation (``trustwarden revoke``) gets a new key and
    certificate now, whatever its current one holds."""
    return RenewalDecision(
        RenewalAction.renew, RenewalReason.RevocationRequested, f"revoked: {request}", now
    )


def unreadable(error: str, now: datetime) -> RenewalDecision:
    """A Secret whose certificate or key cannot be read is rewritten now."""
    return RenewalDecision(RenewalAction.renew, RenewalReason.Unreadable, error, now)


def decide_renewal(
    facts: LeafFacts | None,
    desired: DesiredLeaf,
    issuer: AuthoritySet | Authority | str | None,
    now: datetime,
    *,
    jitter_key: str,
    max_jitter_fraction: float = DEFAULT_MAX_JITTER_FRACTION,
    expected_sha256: str | None = None,
    revoked: Container[int] = (),
) -> RenewalDecision:
    """Decide whether to issue, renew or wait.

    ``issuer`` describes the trust domain's active authority: an :class:`AuthoritySet`
    (best: retired issuers are recognised too), the active :class:`Authority`, or just its
    SHA-256 (then ``facts.issuer_sha256`` must come from ``inspect_leaf(issuers=...)``).
    ``expected_sha256`` is the leaf fingerprint trustwarden recorded when it wrote the
    Secret; a different certificate counts as tampering. ``revoked`` holds the serials on
    the domain's revocation list: a revoked certificate is replaced at once.
    """
    now = require_utc(now)
    if facts is None:
        return RenewalDecision(
            RenewalAction.issue,
            RenewalReason.NotIssued,
            f"no certificate has been issued for {desired.spiffe_id.uri} yet",
            now,
        )
    active: Authority | None
    known: Sequence[Authority]
    active_sha256: str | None = None
    expected_intermediates: tuple[bytes, ...] | None = None
    if isinstance(issuer, AuthoritySet):
        active = issuer.active_authority
        known = issuer.authorities
        expected_intermediates = issuer.issuing_intermediates_der
    elif isinstance(issuer, Authority):
        active, known = issuer, (issuer,)
    else:
        active, known, active_sha256 = None, (), issuer
    point = renew_point(
        facts, desired.renew_at, jitter_key, max_jitter_fraction, backdate=desired.backdate
    )
    context = _Context(
        facts,
        desired,
        active,
        active_sha256,
        known,
        now,
        expected_sha256,
        point,
        revoked,
        expected_intermediates,
    )
    for check in CHECKS:
        verdict = check(context)
        if verdict is not None:
            action, reason, message = verdict
            return RenewalDecision(action, reason, message, now)
    return RenewalDecision(
        RenewalAction.wait,
        RenewalReason.UpToDate,
        f"certificate serial {facts.serial_hex} is up to date; renewing at "
        f"{to_rfc3339(point)} (expires {to_rfc3339(facts.not_after)})",
        point,
    )


def decide_for_secret(
    chain_pem: bytes | None,
    key_pem: bytes | None,
    desired: DesiredLeaf,
    issuer: AuthoritySet | Authority | str | None,
    now: datetime,
    *,
    jitter_key: str,
    max_jitter_fraction: float = DEFAULT_MAX_JITTER_FRACTION,
    expected_sha256: str | None = None,
) -> RenewalDecision:
    """:func:`inspect_leaf` + :func:`decide_renewal`: a missing ``tls.crt`` means
    NotIssued, an unparseable one means Tampered."""
    now = require_utc(now)
    if not chain_pem:
        return decide_renewal(
            None,
            desired,
            issuer,
            now,
            jitter_key=jitter_key,
            max_jitter_fraction=max_jitter_fraction,
        )
    issuers = (
        issuer.authorities
        if isinstance(issuer, AuthoritySet)
        else ((issuer,) if isinstance(issuer, Authority) else ())
    )
    try:
        facts = inspect_leaf(chain_pem, key_pem, issuers=issuers)
    except InvalidPEMError as exc:
        return RenewalDecision(
            RenewalAction.issue, RenewalReason.Tampered, f"{exc}; reissuing", now
        )
    return decide_renewal(
        facts,
        desired,
        issuer,
        now,
        jitter_key=jitter_key,
        max_jitter_fraction=max_jitter_fraction,
        expected_sha256=expected_sha256,
    )
