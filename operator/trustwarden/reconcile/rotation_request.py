"""A forced rotation as the TrustDomain's annotations ask for it, and its status.

`trustwarden ca rotate` (or anyone with patch rights on TrustDomains) writes:
- ``trustwarden.io/rotate``: a new request id (acted on once);
- ``trustwarden.io/activate-after``: optional; the default is derived from the operator's
  ``--propagation-delay`` (pki.propagation.default_activate_after);
- ``trustwarden.io/rotation-mode``: optional, ``cross-sign`` or ``compromised``.

Parsing and the status view are pure; the engine only acts on the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from trustwarden.names import (
    ACTIVATE_AFTER_ANNOTATION as ACTIVATE_AFTER_ANNOTATION,
)
from trustwarden.names import (
    ROTATE_ANNOTATION as ROTATE_ANNOTATION,
)
from trustwarden.names import (
    ROTATION_MODE_ANNOTATION as ROTATION_MODE_ANNOTATION,
)
from trustwarden.pki import rotation
from trustwarden.pki._clock import to_rfc3339
from trustwarden.pki.durations import format_duration, parse_duration
from trustwarden.pki.errors import PKIError
from trustwarden.pki.propagation import (
    MIN_ACTIVATE_AFTER,
    ActivationPlan,
    RotationMode,
    activation_risk,
    compromised_warning,
    default_activate_after,
    plan_activation,
)


class RotationRequestError(ValueError):
    """An annotation that cannot be acted on; the message names it and how to fix it."""


@dataclass(frozen=True)
class RotationRequest:
    request: str
    mode: RotationMode
    activate_after: timedelta
    requested: bool  # activate-after was given (not the derived default)
    risk: str | None  # what a short activate-after risks (a Warning Event), if anything
    plan: ActivationPlan
    propagation_delay: timedelta

    @property
    def warning(self) -> str | None:
        """What this rotation risks, said plainly (a Warning Event), or ``None``."""
        if self.mode is RotationMode.compromised:
            return compromised_warning(self.propagation_delay)
        return self.risk


def parse_request(
    name: str,
    annotations: Mapping[str, str],
    now: datetime,
    *,
    propagation_delay: timedelta,
    floor: timedelta = MIN_ACTIVATE_AFTER,
) -> RotationRequest | None:
    """The rotation the annotations ask for, or ``None`` when there is no request."""
    request = annotations.get(ROTATE_ANNOTATION)
    if not request:
        return None
    raw_mode = (annotations.get(ROTATION_MODE_ANNOTATION) or RotationMode.standard.value).strip()
    try:
        mode = RotationMode(raw_mode)
    except ValueError:
        raise RotationRequestError(
            f"TrustDomain {name}: annotation {ROTATION_MODE_ANNOTATION}={raw_mode!r} is not one "
            f"of {', '.join(m.value for m in RotationMode)}; fix or remove it"
        ) from None
    raw_after = annotations.get(ACTIVATE_AFTER_ANNOTATION)
    requested = bool(raw_after and raw_after.strip())
    if requested:
        assert raw_after is not None
        try:
            activate_after = parse_duration(raw_after, field=ACTIVATE_AFTER_ANNOTATION)
        except PKIError as exc:
            raise RotationRequestError(f"TrustDomain {name}: annotation {exc}") from None
    else:
        activate_after = default_activate_after(propagation_delay, floor=floor)
    if mode is RotationMode.compromised:
        activate_after = timedelta(0)
    risk = activation_risk(activate_after, propagation_delay, floor=floor, mode=mode)
    plan = plan_activation(
        now, mode, activate_after, propagation_delay, requested=requested, floor=floor
    )
    return RotationRequest(request, mode, activate_after, requested, risk, plan, propagation_delay)


def started_message(req: RotationRequest, serial: str) -> str:
    if req.mode is RotationMode.compromised:
        return (
            f"forced rotation {req.request} (compromised): authority {serial} is active now; "
            "the old authority's anchor left the bundles and its certificates are revoked"
        )
    cross = (
        "; the old authority cross-signed it, so re-issued certificates also verify against "
        "the old anchor"
        if req.mode is RotationMode.cross_sign
        else ""
    )
    return (
        f"forced rotation {req.request}: authority {serial} prepared and published{cross}; "
        f"it activates at {to_rfc3339(req.plan.at)} ({req.plan.reason})"
    )


def rotation_status(
    aset: rotation.AuthoritySet | None,
    *,
    propagation_delay: timedelta,
    floor: timedelta = MIN_ACTIVATE_AFTER,
) -> dict[str, Any]:
    """``status.rotation``: the defaults in force, and when the next authority activates and
    why then (nothing about keys)."""
    out: dict[str, Any] = {
        "propagationDelay": format_duration(propagation_delay),
        "defaultActivateAfter": format_duration(
            default_activate_after(propagation_delay, floor=floor)
        ),
    }
    if aset is None:
        return out
    pending = rotation.pending_activation(aset)
    if pending is not None:
        record, at, reason = pending
        out["nextAuthority"] = record.serial_hex
        out["activatesAt"] = to_rfc3339(at)
        out["reason"] = reason
    active = aset.active_record
    if active is not None and active.cross_certificate is not None:
        signer = aset.by_sha256.get(active.cross_signer or "")
        out["crossSignedBy"] = signer.serial_hex if signer else active.cross_signer
    return out


__all__ = [
    "ACTIVATE_AFTER_ANNOTATION",
    "ROTATE_ANNOTATION",
    "ROTATION_MODE_ANNOTATION",
    "RotationMode",
    "RotationRequest",
    "RotationRequestError",
    "parse_request",
    "rotation_status",
    "started_message",
]
