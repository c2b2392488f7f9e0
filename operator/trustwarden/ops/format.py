"""Text formatting shared by the commands: compact durations, timestamps, and tables that
fit a terminal width by shrinking (and truncating) only the columns that may be shortened."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from trustwarden.pki._clock import to_rfc3339

ELLIPSIS = "…"
GAP = "  "
DEFAULT_WIDTH = 80


def rfc3339(value: datetime | None) -> str:
    return to_rfc3339(value.replace(microsecond=0)) if value is not None else ""


def short_time(value: datetime | None) -> str:
    """``2026-11-23 02:46`` (UTC, minute precision) for narrow tables."""
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def human_duration(delta: timedelta) -> str:
    """Two significant units, like kubectl's ages: ``45s``, ``12m30s``, ``5h3m``, ``3d4h``,
    ``120d``. Negative values get a leading ``-``."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "-" + human_duration(-delta)
    days, rem = divmod(seconds, 86_400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days >= 100:
        return f"{days}d"
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs and minutes < 10 else f"{minutes}m"
    return f"{secs}s"


def relative(when: datetime | None, now: datetime) -> str:
    """``in 5h3m`` / ``3m ago`` / ``-``."""
    if when is None:
        return "-"
    delta = when - now
    if delta >= timedelta(0):
        return f"in {human_duration(delta)}"
    return f"{human_duration(-delta)} ago"


def truncate(text: str, width: int, *, middle: bool = False) -> str:
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    if middle and width >= 5:
        head = (width - 1) // 2
        tail = width - 1 - head
        return text[:head] + ELLIPSIS + text[-tail:]
    return text[: width - 1] + ELLIPSIS


@dataclass(frozen=True)
class Column:
    header: str
    min_width: int | None = None  # None: never shrunk
    middle: bool = False  # truncate in the middle (keeps distinguishing suffixes)


def render_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None = DEFAULT_WIDTH
) -> str:
    """Left-aligned columns separated by two spaces. When ``width`` is given and the table
    is wider, shrinkable columns (``min_width`` set) are narrowed, widest first, down to
    their minimum, and their cells truncated with an ellipsis."""
    widths = [len(c.header) for c in columns]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    if width is not None:
        excess = sum(widths) + len(GAP) * (len(columns) - 1) - width
        while excess > 0:
            candidates = [
                i
                for i, c in enumerate(columns)
                if c.min_width is not None and widths[i] > max(c.min_width, 1)
            ]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: (widths[i], -i))
            widths[widest] -= 1
            excess -= 1
    lines = []
    for row in [[c.header for c in columns], *rows]:
        cells = [
            truncate(cell, widths[i], middle=columns[i].middle).ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append(GAP.join(cells).rstrip())
    return "\n".join(lines) + "\n"
