"""Go / Kubernetes style durations (``90s``, ``1h30m``, ``2160h``, ``1.5h``) and percentages.

The grammar is Go's ``time.ParseDuration``: one or more ``<decimal><unit>`` components with
units ``ns``, ``us`` (``µs``), ``ms``, ``s``, ``m`` and ``h``, or the bare string ``0``.
Days are deliberately not supported, exactly like Go and kubectl; the error says so.
"""

from __future__ import annotations

import re
from datetime import timedelta
from fractions import Fraction

from .errors import InvalidDurationError

__all__ = ["format_duration", "parse_duration", "parse_percent"]

_MAX_TEXT = 64
# Go's limit: a time.Duration is an int64 of nanoseconds (about 292 years).
_MAX_NANOS = 2**63 - 1

_UNIT_NANOS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_COMPONENT = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_EXAMPLES = "use a Go duration such as 90s, 10m, 1h30m, 1.5h or 2160h"


def parse_duration(text: str, *, field: str = "duration") -> timedelta:
    """Parse a Go/Kubernetes duration string into a non-negative :class:`timedelta`.

    ``field`` names where the value came from (e.g. ``spec.ttl``) so errors can say so.
    Sub-microsecond remainders are truncated (``timedelta`` has microsecond precision).
    """
    if not isinstance(text, str):
        raise InvalidDurationError(
            f"{field}: expected a duration string, got {type(text).__name__}; {_EXAMPLES}"
        )
    raw = text
    text = text.strip()
    if not text:
        raise InvalidDurationError(f"{field}: duration is empty; {_EXAMPLES}")
    if len(text) > _MAX_TEXT:
        raise InvalidDurationError(
            f"{field}: duration {raw[:_MAX_TEXT]!r}... is longer than {_MAX_TEXT} characters; "
            f"{_EXAMPLES}"
        )
    if text.startswith("-"):
        raise InvalidDurationError(
            f"{field}: negative duration {raw!r} is not allowed; use a positive value, e.g. 1h"
        )
    if text.startswith("+"):
        text = text[1:]
    if text == "0":
        return timedelta(0)

    total_nanos = Fraction(0)
    pos = 0
    while pos < len(text):
        match = _COMPONENT.match(text, pos)
        if match is None or (not match.group(1) and not match.group(2)):
            raise InvalidDurationError(_explain_bad_duration(raw, text, pos, field))
        whole, frac, unit = match.group(1), match.group(2) or "", match.group(3)
        value = Fraction(int(whole or "0"))
        if frac:
            value += Fraction(int(frac), 10 ** len(frac))
        total_nanos += value * _UNIT_NANOS[unit]
        if total_nanos > _MAX_NANOS:
            raise InvalidDurationError(
                f"{field}: duration {raw!r} is too large (the maximum is about 2562047h, "
                "292 years); use a smaller value"
            )
        pos = match.end()
    return timedelta(microseconds=int(total_nanos // 1000))


def _explain_bad_duration(raw: str, text: str, pos: int, field: str) -> str:
    rest = text[pos:]
    unit_match = re.match(r"[\d.]*([A-Za-z\u00b5\u03bc]+)", rest)
    unit = unit_match.group(1) if unit_match else ""
    if unit in {"d", "w", "y"}:
        return (
            f"{field}: unit {unit!r} in {raw!r} is not supported (Go durations have no days, "
            "weeks or years); use hours instead, e.g. 2160h for 90 days"
        )
    if unit in _UNIT_NANOS:
        return (
            f"{field}: {raw!r} is not a valid duration: unit {unit!r} at position {pos} has "
            f"no number before it; {_EXAMPLES}"
        )
    if unit:
        return (
            f"{field}: unknown unit {unit!r} in duration {raw!r}; valid units are "
            f"ns, us, ms, s, m, h; {_EXAMPLES}"
        )
    if re.fullmatch(r"[\d.]+", rest):
        return f"{field}: duration {raw!r} is missing a unit; {_EXAMPLES}"
    return f"{field}: {raw!r} is not a valid duration (at position {pos}); {_EXAMPLES}"


def format_duration(value: timedelta) -> str:
    """Format compactly in Go style, omitting zero components: ``1h``, ``1h30m``, ``1m30s``,
    ``1.5s``, ``500ms``, ``0s``. ``parse_duration(format_duration(d)) == d`` for d >= 0."""
    total_us = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if total_us < 0:
        return "-" + format_duration(-value)
    if total_us == 0:
        return "0s"
    if total_us < 1_000_000:
        if total_us % 1000 == 0:
            return f"{total_us // 1000}ms"
        return f"{total_us}us"
    hours, rem = divmod(total_us, 3600 * 1_000_000)
    minutes, rem = divmod(rem, 60 * 1_000_000)
    seconds, micros = divmod(rem, 1_000_000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if seconds or micros:
        if micros:
            parts.append(f"{seconds}.{micros:06d}".rstrip("0") + "s")
        else:
            parts.append(f"{seconds}s")
    return "".join(parts)


_PERCENT = re.compile(r"(\d{1,3})(?:\.(\d{1,6}))?%")


def parse_percent(text: str, *, field: str = "percentage") -> float:
    """Parse ``"50%"`` into ``0.5``. Accepts 0% to 100% with up to six decimals."""
    if not isinstance(text, str):
        raise InvalidDurationError(
            f"{field}: expected a percentage string such as '50%', got {type(text).__name__}"
        )
    stripped = text.strip()
    match = _PERCENT.fullmatch(stripped)
    if match is None:
        hint = " (add the % sign)" if re.fullmatch(r"[\d.]+", stripped) else ""
        raise InvalidDurationError(
            f"{field}: {text[:32]!r} is not a percentage{hint}; use a value such as '50%' "
            "or '66.6%'"
        )
    value = float(stripped[:-1])
    if value > 100:
        raise InvalidDurationError(
            f"{field}: {text!r} is above 100%; use a value between 0% and 100%"
        )
    return value / 100
