"""The status writer: conditions with stable transition times, and one deferred writer that
patches a status only when its content changed.

Statuses are built elsewhere (pure functions of what the engine knows); this module remembers
what was last written, so a restart or a burst rewrites only what differs. Changes to timing
fields alone (a renewal moved `nextRenewal`) wait `timing_interval` between writes, except in
the final flush of a clean shutdown."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from trustwarden.pki._clock import to_rfc3339
from trustwarden.reconcile.ports import KubePort, NotFoundError

log = logging.getLogger("trustwarden.engine")

StatusKey = tuple[str, str, str]  # ("td", "", name) or ("wid", namespace, name)
STATUS_TIMING_FIELDS = ("nextRenewal", "soonestExpiry")
CONDITION_FIELDS = ("type", "status", "reason", "message", "lastTransitionTime")
CONDITION_MESSAGE_MAX = 32000
KINDS = {"td": "TrustDomain", "wid": "WorkloadIdentity"}


def timing_only(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """True when two statuses differ in STATUS_TIMING_FIELDS alone."""
    keys = (before.keys() | after.keys()) - set(STATUS_TIMING_FIELDS)
    return all(before.get(k) == after.get(k) for k in keys)


class StatusWriter:
    def __init__(
        self, kube: KubePort, clock: Callable[[], datetime], timing_interval: timedelta
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.timing_interval = timing_interval
        self.dirty: set[StatusKey] = set()
        self.last: dict[StatusKey, dict[str, Any]] = {}
        self.conditions: dict[StatusKey, dict[str, dict[str, Any]]] = {}
        self._written_at: dict[StatusKey, datetime] = {}
        self._deferred: dict[StatusKey, datetime] = {}  # key -> write after

    # ---------------------------------------------------------------- conditions

    def set_condition(
        self, key: StatusKey, type_: str, ok: bool, reason: str, message: str
    ) -> None:
        conditions = self.conditions.setdefault(key, {})
        current = conditions.get(type_)
        value = "True" if ok else "False"
        if current is None or current["status"] != value:
            transition = to_rfc3339(self.clock())
        else:
            transition = current["lastTransitionTime"]
        conditions[type_] = {
            "type": type_,
            "status": value,
            "reason": reason,
            "message": message[:CONDITION_MESSAGE_MAX],
            "lastTransitionTime": transition,
        }

    def conditions_list(self, key: StatusKey, generation: int) -> list[dict[str, Any]]:
        return [
            {**c, "observedGeneration": generation}
            for _, c in sorted(self.conditions.get(key, {}).items())
        ]

    # ---------------------------------------------------------------- memory

    def seed(self, key: StatusKey, status: Mapping[str, Any]) -> None:
        """Take a status an earlier process wrote as what was last written, with its
        conditions' transition times (a restart rewrites only what changes)."""
        if key in self.last or not status:
            return
        self.last[key] = json.loads(json.dumps(status))
        # As if just written: while the first reconciliations catch up, nextRenewal can move
        # before it settles back; such timing-only differences wait like any other.
        self._written_at[key] = self.clock()
        conditions = {
            str(c["type"]): {k: c.get(k) for k in CONDITION_FIELDS}
            for c in status.get("conditions") or ()
            if isinstance(c, Mapping) and c.get("type")
        }
        self.conditions.setdefault(key, conditions)

    def forget(self, key: StatusKey) -> None:
        self.last.pop(key, None)
        self.conditions.pop(key, None)

    # ---------------------------------------------------------------- writing

    async def flush(
        self, build: Callable[[StatusKey], dict[str, Any] | None], *, final: bool = False
    ) -> None:
        """Write the statuses whose content changed; `build` makes a status from a key (None:
        the object is gone)."""
        now = self.clock()
        due = [k for k, at in self._deferred.items() if final or at <= now]
        for key in due:
            del self._deferred[key]
        pending = self.dirty | set(due)
        self.dirty.clear()
        for key in pending:
            kind, namespace, name = key
            try:
                status = build(key)
                previous = self.last.get(key)
                if status is None or previous == status:
                    self._deferred.pop(key, None)
                    if status is None:
                        self._written_at.pop(key, None)
                    continue
                if (
                    not final
                    and kind == "wid"
                    and previous is not None
                    and timing_only(previous, status)
                ):
                    written_at = self._written_at.get(key)
                    later = (written_at or now) + self.timing_interval
                    if written_at is not None and later > now:
                        self._deferred.setdefault(key, later)
                        continue
                await self.kube.patch_status(KINDS[kind], namespace or None, name, status)
                self.last[key] = status
                self._written_at[key] = now
                self._deferred.pop(key, None)
            except NotFoundError:
                self.last.pop(key, None)
            except Exception as exc:
                self.dirty.add(key)
                log.warning("status of %s %s/%s not written: %s", kind, namespace, name, exc)
