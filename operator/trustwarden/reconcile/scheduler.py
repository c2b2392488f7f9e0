"""One scheduler for every deadline: renewals, issuance, domain rotation, retries.

A single priority queue of (deadline, key) instead of one timer per object: 10,000 certificates
cost 10,000 heap entries, not 10,000 tasks. A key is scheduled at most once (the earliest
deadline wins), runs at most once at a time, and runs again if it was rescheduled while running.
Concurrency is bounded. The clock is injectable so tests never sleep on wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
Handler = Callable[[Hashable], Awaitable[None]]

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class DeadlineScheduler:
    def __init__(
        self,
        handler: Handler,
        *,
        concurrency: int = 8,
        clock: Clock = utcnow,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self._handler = handler
        self._clock = clock
        self._concurrency = concurrency
        self._heap: list[tuple[datetime, int, Hashable]] = []
        self._due: dict[Hashable, datetime] = {}
        self._running: set[Hashable] = set()
        self._again: dict[Hashable, datetime] = {}
        self._counter = itertools.count()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_depth = on_depth
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._due)

    def deadline_of(self, key: Hashable) -> datetime | None:
        return self._due.get(key) or self._again.get(key)

    def schedule(self, key: Hashable, at: datetime | None = None) -> None:
        """Run `key` at `at` (now when omitted); an earlier existing deadline is kept."""
        when = at or self._clock()
        if key in self._running:
            previous = self._again.get(key)
            if previous is None or when < previous:
                self._again[key] = when
            return
        current = self._due.get(key)
        if current is not None and current <= when:
            return
        self._due[key] = when
        heapq.heappush(self._heap, (when, next(self._counter), key))
        self._idle.clear()
        self._report_depth()
        self._wakeup.set()

    def cancel(self, key: Hashable) -> None:
        """Forget `key`; stale heap entries are skipped lazily."""
        self._due.pop(key, None)
        self._again.pop(key, None)
        self._report_depth()

    def pop_due(self, now: datetime) -> list[Hashable]:
        """Keys whose deadline has passed, earliest first (used by run() and by tests)."""
        ready: list[Hashable] = []
        while self._heap and self._heap[0][0] <= now:
            when, _, key = heapq.heappop(self._heap)
            if self._due.get(key) != when:
                continue  # superseded by an earlier deadline, or cancelled
            del self._due[key]
            ready.append(key)
        self._report_depth()
        return ready

    def next_deadline(self) -> datetime | None:
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    async def run(self) -> None:
        """Dispatch due keys forever, at most `concurrency` at a time."""
        while True:
            self._wakeup.clear()
            for key in self.pop_due(self._clock()):
                await self._slots.acquire()
                self._running.add(key)
                task = asyncio.create_task(self._run_one(key))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            nxt = self.next_deadline()
            if nxt is None and not self._running:
                self._idle.set()
            timeout = None if nxt is None else max(0.0, (nxt - self._clock()).total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=timeout)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def _run_one(self, key: Hashable) -> None:
        try:
            await self._handler(key)
        except asyncio.CancelledError:
            raise
        except Exception:  # the handler reschedules its own retries; never kill the loop
            log.exception("scheduled work for %s failed", key)
        finally:
            self._running.discard(key)
            self._slots.release()
            again = self._again.pop(key, None)
            if again is not None:
                self.schedule(key, again)
            else:
                self._wakeup.set()

    def _report_depth(self) -> None:
        if self._on_depth is not None:
            self._on_depth(len(self._due))
