"""Adaptive write concurrency: grows while writes succeed, halves on overload, never leaves
its bounds, and the gate never admits more writes than the limit."""

from __future__ import annotations

import asyncio

import pytest

from trustwarden.reconcile.aimd import AdaptiveGate, AimdLimit


class Tick:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_successes_add_one_slot_per_window() -> None:
    limit = AimdLimit(initial=8, maximum=32, clock=Tick())
    for _ in range(9):  # one window at 8, and a little (each success adds 1/limit)
        limit.on_success()
    assert limit.current == 9
    for _ in range(10_000):
        limit.on_success()
    assert limit.current == 32


def test_overload_halves_once_per_cooldown_and_stops_at_the_minimum() -> None:
    tick = Tick()
    limit = AimdLimit(initial=16, minimum=2, maximum=32, cooldown_s=1.0, clock=tick)
    assert limit.on_overload() and limit.current == 8
    assert not limit.on_overload() and limit.current == 8  # same volley of 429s
    tick.now = 1.5
    assert limit.on_overload() and limit.current == 4
    for step in range(10):
        tick.now = 3.0 + step
        limit.on_overload()
    assert limit.current == 2


def test_bad_bounds_are_refused_with_the_flag_to_fix() -> None:
    with pytest.raises(ValueError, match="--max-concurrency"):
        AimdLimit(initial=8, maximum=4)


def test_the_gate_admits_no_more_than_the_limit_and_follows_it_down() -> None:
    async def scenario() -> None:
        tick = Tick()
        changes: list[int] = []
        gate = AdaptiveGate(AimdLimit(initial=4, maximum=4, clock=tick), on_change=changes.append)
        peak = [0]
        release = asyncio.Event()

        async def write() -> None:
            async with gate.slot():
                peak[0] = max(peak[0], gate.in_flight)
                await release.wait()

        tasks = [asyncio.create_task(write()) for _ in range(10)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert gate.in_flight == 4
        gate.overloaded()  # 429: the limit halves; running writes finish, no new ones start
        assert changes == [2]
        release.set()
        await asyncio.gather(*tasks)
        assert peak[0] == 4 and gate.in_flight == 0

    asyncio.run(scenario())
