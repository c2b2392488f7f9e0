"""How long a new anchor must be published before its authority signs: the kubelet's
propagation delay, and what a forced rotation risks when it does not wait that long.

A bundle object (ConfigMap, Secret) being current says nothing about what a pod reads: the
kubelet refreshes Secret and ConfigMap volumes on its sync period plus its cache TTL, about a
minute each by default, so a pod can see a change two minutes late (and a ``subPath`` mount
never). ``propagation_delay`` is that worst case, an operator setting (default 2m).

The default activation delay is ``max(3m, 1.5 x propagation_delay)``:
- 1.5 x leaves half the kubelet delay again for what comes after the file lands: the
  application noticing the change and reloading, and the operator's own batched bundle
  writes. A multiplicative margin grows with the setting, because a larger delay is usually
  a less precise estimate (a slow node, a tuned sync period), not a more precise one;
- 3m is the floor for the default 2m: the issue's worst case of 90 s (sync period plus cache
  TTL) with room to spare.

Everything here is pure: durations and clocks in, durations, times and sentences out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from ._clock import require_utc, to_rfc3339
from .durations import format_duration
from .errors import InvalidArgumentError

__all__ = [
    "DEFAULT_PROPAGATION_DELAY",
    "MIN_ACTIVATE_AFTER",
    "PROPAGATION_MARGIN",
    "ActivationPlan",
    "RotationMode",
    "activation_risk",
    "compromised_warning",
    "default_activate_after",
    "plan_activation",
]

DEFAULT_PROPAGATION_DELAY = timedelta(minutes=2)
MIN_ACTIVATE_AFTER = timedelta(minutes=3)
PROPAGATION_MARGIN = 1.5


class RotationMode(StrEnum):
    """How a forced rotation trades waiting against what stale clients see."""

    standard = "standard"  # publish, wait activate-after, then sign
    cross_sign = "cross-sign"  # the old authority certifies the new one: no need to wait
    compromised = "compromised"  # the old key is not to be trusted: sign with the new at once


def _check_delay(value: timedelta, what: str) -> timedelta:
    if value < timedelta(0):
        raise InvalidArgumentError(f"{what} must not be negative, got {format_duration(value)}")
    return value


def default_activate_after(
    propagation_delay: timedelta = DEFAULT_PROPAGATION_DELAY,
    *,
    floor: timedelta = MIN_ACTIVATE_AFTER,
) -> timedelta:
    """``max(floor, 1.5 x propagation_delay)``, rounded up to a whole second."""
    _check_delay(propagation_delay, "propagationDelay")
    _check_delay(floor, "the minimum activation delay")
    derived = propagation_delay * PROPAGATION_MARGIN
    whole = timedelta(seconds=-(-derived.total_seconds() // 1))
    return max(floor, whole)


def activation_risk(
    activate_after: timedelta,
    propagation_delay: timedelta,
    *,
    floor: timedelta = MIN_ACTIVATE_AFTER,
    mode: RotationMode = RotationMode.standard,
) -> str | None:
    """What activating after ``activate_after`` risks, or ``None`` when it is safe.

    Safe: at least the default (:func:`default_activate_after`), or a cross-signed rotation
    (clients that still trust only the old anchor verify the new leaves through the
    cross-certificate), or a compromised one (where failing closed is the point, and
    :func:`compromised_warning` says so instead)."""
    if mode is not RotationMode.standard:
        return None
    default = default_activate_after(propagation_delay, floor=floor)
    if activate_after >= default:
        return None
    return (
        f"activating after {format_duration(activate_after)} is shorter than the default "
        f"{format_duration(default)}, which covers the kubelet propagation delay of "
        f"{format_duration(propagation_delay)} with margin. Pods whose "
        "kubelet has not yet written the new anchor into their volume will reject the "
        "certificates the new authority signs (CERTIFICATE_VERIFY_FAILED) until it does. "
        "Use --cross-sign to rotate quickly without that risk"
    )


def compromised_warning(propagation_delay: timedelta) -> str:
    """What ``--compromised`` does to clients whose trust store is stale: they fail."""
    return (
        "the old authority is treated as compromised: its anchor leaves every bundle now, "
        "every certificate it signed is revoked, and the new authority signs at once, with no "
        "cross-certificate. Clients whose volumes still hold only the old anchor WILL FAIL "
        "TLS handshakes (CERTIFICATE_VERIFY_FAILED) until their kubelet writes the new bundle, "
        f"up to the propagation delay ({format_duration(propagation_delay)}) or longer. That "
        "is the right trade-off when the old key may be in someone else's hands"
    )


@dataclass(frozen=True)
class ActivationPlan:
    """When a forced rotation's new authority activates, and why then."""

    at: datetime
    reason: str


def plan_activation(
    now: datetime,
    mode: RotationMode,
    activate_after: timedelta,
    propagation_delay: timedelta,
    *,
    requested: bool,
    floor: timedelta = MIN_ACTIVATE_AFTER,
) -> ActivationPlan:
    """The activation time and its explanation for the TrustDomain status.

    ``requested``: whether ``activate_after`` was given explicitly (else it is the default)."""
    now = require_utc(now)
    _check_delay(activate_after, "activate-after")
    if mode is RotationMode.compromised:
        return ActivationPlan(
            now,
            "compromised: activated at once without waiting for kubelets; clients with "
            "stale trust stores fail until their volumes update",
        )
    at = now + activate_after
    default = default_activate_after(propagation_delay, floor=floor)
    after = format_duration(activate_after)
    if mode is RotationMode.cross_sign:
        reason = (
            f"cross-signed: {after} after the request; clients that trust only the old anchor "
            "verify the new certificates through the cross-certificate"
        )
    elif not requested:
        reason = (
            f"default: {after} after the request = max({format_duration(floor)}, "
            f"{PROPAGATION_MARGIN} x propagationDelay {format_duration(propagation_delay)}), "
            "so every kubelet has written the new anchor before anything it signs is served"
        )
    elif activate_after >= default:
        reason = f"requested: {after} after the request (the default is {format_duration(default)})"
    else:
        reason = (
            f"requested: {after} after the request, shorter than the default "
            f"{format_duration(default)}: pods whose kubelet lags may reject new certificates"
        )
    return ActivationPlan(
        at, reason + f"; activates at {to_rfc3339(at)} once every bundle holds it"
    )
