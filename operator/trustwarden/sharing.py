"""One instance for many equal values.

A cache of 100,000 Secrets and pods repeats a few values over and over: an issuer's key
identifier, a usage set, a finalizer list, a workload's SPIFFE ID. `SharedValues` hands out
the first instance it saw for each value, so the cache holds one copy instead of one per
object. Each table is bounded: when it is full it starts again, and values made after that
are shared among themselves (nothing breaks; only the saving shrinks until it refills).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedValues(Generic[K, V]):
    """A bounded table from a key to the one value handed out for it."""

    __slots__ = ("_limit", "_table")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self._limit = limit
        self._table: dict[K, V] = {}

    def get(self, key: K, make: Callable[[], V]) -> V:
        """The value handed out for `key`; the first time, `make()`'s."""
        found = self._table.get(key)
        return found if found is not None else self._add(key, make())

    def _add(self, key: K, value: V) -> V:
        if len(self._table) >= self._limit:
            self._table.clear()
        return self._table.setdefault(key, value)

    def __len__(self) -> int:
        return len(self._table)


class Interned(SharedValues[K, K]):
    """The first instance seen of each equal value (`sys.intern` for any hashable)."""

    __slots__ = ()

    def __call__(self, value: K) -> K:
        found = self._table.get(value)
        return found if found is not None else self._add(value, value)
