"""Count API requests per identity from the kube-apiserver audit log (Metadata level)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
READ_VERBS = {"get", "list", "watch"}


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass
class RequestCounts:
    by_verb: Counter[str] = field(default_factory=Counter)
    by_verb_resource: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def writes(self) -> int:
        return sum(n for verb, n in self.by_verb.items() if verb in WRITE_VERBS)

    @property
    def reads(self) -> int:
        return sum(n for verb, n in self.by_verb.items() if verb in READ_VERBS)

    def as_dict(self) -> dict[str, object]:
        return {
            "writes": self.writes,
            "reads": self.reads,
            "by_verb": dict(sorted(self.by_verb.items())),
            "by_verb_resource": dict(sorted(self.by_verb_resource.items())),
            "errors": dict(sorted(self.errors.items())),
        }


class AuditLog:
    """Reads the audit log incrementally; `count` looks at requests received in a window."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._events: list[tuple[float, str, str, str, int]] = []

    def _refresh(self) -> None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        self._offset += end + 1
        for line in chunk[: end + 1].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            ref = event.get("objectRef") or {}
            resource = ref.get("resource") or event.get("requestURI", "?").split("?")[0]
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            self._events.append(
                (
                    _ts(event["requestReceivedTimestamp"]),
                    (event.get("user") or {}).get("username", ""),
                    event.get("verb", ""),
                    resource,
                    int((event.get("responseStatus") or {}).get("code") or 0),
                )
            )

    def count(self, user: str, start: float, end: float) -> RequestCounts:
        self._refresh()
        counts = RequestCounts()
        for received, username, verb, resource, code in self._events:
            if username != user or not start <= received <= end:
                continue
            counts.by_verb[verb] += 1
            counts.by_verb_resource[f"{verb} {resource}"] += 1
            if code >= 400:
                counts.errors[f"{verb} {resource} {code}"] += 1
        return counts

    def trim(self, before: float) -> None:
        """Forget events older than `before` (keeps memory flat over a long run)."""
        self._refresh()
        self._events = [e for e in self._events if e[0] >= before]
