"""Small helpers for the injected clock: every ``now`` is a tz-aware UTC datetime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .errors import InvalidArgumentError, StateError

ZERO = timedelta(0)


def require_utc(value: datetime, name: str = "now") -> datetime:
    """Return ``value`` normalised to UTC; reject naive datetimes (a silent local-time bug)."""
    if not isinstance(value, datetime):
        raise InvalidArgumentError(
            f"{name} must be a datetime, got {type(value).__name__}; "
            "pass datetime.now(UTC) or a fake clock's time"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgumentError(
            f"{name}={value.isoformat()} is a naive datetime; "
            "pass a tz-aware UTC time such as datetime.now(UTC)"
        )
    return value.astimezone(UTC)


def floor_second(value: datetime) -> datetime:
    """X.509 times have one-second precision; round down so limits are never exceeded."""
    return value.replace(microsecond=0)


def to_rfc3339(value: datetime) -> str:
    """Format as RFC 3339 UTC with a ``Z`` suffix, the form Kubernetes status fields use."""
    value = require_utc(value, "timestamp").replace(tzinfo=None)
    if value.microsecond:
        return value.isoformat(timespec="microseconds") + "Z"
    return value.isoformat(timespec="seconds") + "Z"


def from_rfc3339(text: str, field: str) -> datetime:
    """Parse an RFC 3339 timestamp; the error names the field that held it."""
    if not isinstance(text, str) or len(text) > 64:
        raise StateError(
            f"{field}: expected an RFC 3339 timestamp string such as 2025-01-02T03:04:05Z, "
            f"got {text!r:.80}"
        )
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise StateError(
            f"{field}: {text!r} is not an RFC 3339 timestamp; use a form like 2025-01-02T03:04:05Z"
        ) from None
    if parsed.tzinfo is None:
        raise StateError(
            f"{field}: {text!r} has no time zone; append Z (UTC), e.g. 2025-01-02T03:04:05Z"
        )
    return parsed.astimezone(UTC)
