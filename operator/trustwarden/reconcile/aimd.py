"""Adaptive write concurrency: additive increase, multiplicative decrease (AIMD).

The operator does not run short of CPU in a burst; it waits, with a fixed number of writes in
flight times the API server's round trip. The gate lets more writes fly while the API server
answers them, and halves that number when it pushes back (429 from API Priority and Fairness,
or a 5xx), so a mass issuance never crowds out the cluster's other clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field


@dataclass
class AimdLimit:
    """The number of writes allowed in flight. Each success adds 1/limit (one slot per window
    of successes); an overload multiplies it by `decrease`, at most once per `cooldown_s` so a
    volley of 429s from one window counts as one signal."""

    initial: int = 8
    minimum: int = 1
    maximum: int = 32
    decrease: float = 0.5
    cooldown_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    limit: float = field(init=False)
    _last_decrease: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.initial <= self.maximum:
            raise ValueError(
                f"write concurrency must satisfy 1 <= minimum ({self.minimum}) <= initial "
                f"({self.initial}) <= maximum ({self.maximum}); raise --max-concurrency to at "
                "least --concurrency"
            )
        if not 0 < self.decrease < 1:
            raise ValueError(f"decrease must be in (0, 1), got {self.decrease}")
        self.limit = float(self.initial)

    @property
    def current(self) -> int:
        return int(self.limit)

    def on_success(self) -> None:
        self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)

    def on_overload(self) -> bool:
        """Back off; returns whether the limit moved (False inside the cooldown)."""
        now = self.clock()
        if self._last_decrease is not None and now - self._last_decrease < self.cooldown_s:
            return False
        self._last_decrease = now
        self.limit = max(float(self.minimum), self.limit * self.decrease)
        return True


class AdaptiveGate:
    """Admits at most `limit.current` writes at a time; writes report how they went."""

    def __init__(self, limit: AimdLimit, on_change: Callable[[int], None] | None = None) -> None:
        self.limit = limit
        self.in_flight = 0
        self._changed = asyncio.Condition()
        self._on_change = on_change

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.limit.current)
            self.in_flight += 1
        try:
            yield
        finally:
            async with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()

    def succeeded(self) -> None:
        before = self.limit.current
        self.limit.on_success()
        if self.limit.current != before:
            self._report()

    def overloaded(self) -> None:
        if self.limit.on_overload():
            self._report()

    def _report(self) -> None:
        if self._on_change is not None:
            self._on_change(self.limit.current)
