"""Events, posted best effort and deduplicated: the same reason and message about the same
object is posted at most once a minute, and routine successes that the object's status already
says are not posted at all (each Event is an API write)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from trustwarden.reconcile.ports import KubePort, ObjectRef

log = logging.getLogger("trustwarden.engine")

EVENT_DEDUP_SECONDS = 60.0
# Normal Events whose content the object's status already carries: not posted. The routine
# first issue of a Shared identity shows as its status (spiffeID, serial, Ready); an Event
# per identity was one API write per certificate.
STATUS_ONLY_EVENTS = frozenset({("WorkloadIdentity", "Issued")})
MESSAGE_MAX = 1024
REMEMBERED_MAX = 10_000


class EventRecorder:
    def __init__(self, kube: KubePort, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.monotonic = monotonic
        self.recent: dict[tuple[str, str, str], float] = {}

    async def post(self, ref: ObjectRef, type_: str, reason: str, message: str) -> bool:
        """Post one Event unless it is a duplicate or status-only; True when it was sent."""
        if type_ == "Normal" and (ref.kind, reason) in STATUS_ONLY_EVENTS:
            return False
        dedup = (f"{ref.kind}/{ref.namespace}/{ref.name}", reason, message)
        now = self.monotonic()
        last = self.recent.get(dedup)
        if last is not None and now - last < EVENT_DEDUP_SECONDS:
            return False
        self.recent[dedup] = now
        if len(self.recent) > REMEMBERED_MAX:
            cutoff = now - EVENT_DEDUP_SECONDS
            self.recent = {k: v for k, v in self.recent.items() if v > cutoff}
        try:
            await self.kube.emit_event(ref, type_, reason, message[:MESSAGE_MAX])
        except Exception as exc:  # events are best effort
            log.debug("event %s on %s not posted: %s", reason, ref, exc)
            return False
        return True
