"""The status writer: conditions with stable transition times, and one deferred writer that
patches a status only when its content changed.

Statuses are built elsewhere (pure functions of what the engine knows); this module remembers
what was last written, so a restart or a burst rewrites only what differs. A WorkloadIdentity's
progress alone waits `timing_interval` between writes, except in the final flush of a clean
shutdown: its timing fields (a renewal moved `nextRenewal`), its pod counts, condition messages,
and a Ready identity that has new pods waiting for their first certificate (Issuing). Anything
else is written at once: a failure (Degraded), a problem, becoming Ready, a new generation, a
certificate lost or expired (fewer issued, beyond the pods that left), and a count that leaves
or reaches zero (the first pod, the first certificate, the last pod gone)."""

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


PROGRESS_FIELDS = ("selectedPods", "issued")


def progress_only(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """True when `after` only reports progress over `before`: timing fields, pod counts and
    condition messages moved, and every condition kept its status and reason, but for a Ready
    identity whose newest pods are Issuing. During a burst of pods an identity flipped between
    Ready and Issuing, and each count changed, every status interval: each one an API write."""
    ignored = {*STATUS_TIMING_FIELDS, *PROGRESS_FIELDS, "conditions"}
    keys = (before.keys() | after.keys()) - ignored
    if any(before.get(k) != after.get(k) for k in keys):
        return False
    for count in PROGRESS_FIELDS:  # the first certificate, the first pod, the last one gone
        had, has = before.get(count) or 0, after.get(count) or 0
        if had != has and 0 in (had, has):
            return False
    issued = (before.get("issued") or 0) - (after.get("issued") or 0)
    left = (before.get("selectedPods") or 0) - (after.get("selectedPods") or 0)
    if issued > max(left, 0):  # a certificate lost or expired, not only its pod gone
        return False
    was = {str(c.get("type")): c for c in before.get("conditions") or ()}
    now = {str(c.get("type")): c for c in after.get("conditions") or ()}
    if was.keys() != now.keys():
        return False
    for type_, condition in now.items():
        old = was[type_]
        same = (old.get("status"), old.get("reason"), old.get("observedGeneration")) == (
            condition.get("status"),
            condition.get("reason"),
            condition.get("observedGeneration"),
        )
        more_pods = (
            type_ == "Ready"
            and old.get("status") == "True"
            and condition.get("status") == "False"
            and condition.get("reason") == "Issuing"
            and (after.get("selectedPods") or 0) > (before.get("selectedPods") or 0)
        )
        if not (same or more_pods):
            return False
    return True


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
                    and progress_only(previous, status)
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
