"""trustwarden.sharing: one instance per equal value, in a bounded table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustwarden.sharing import Interned, SharedValues


def test_equal_values_come_back_as_the_first_instance() -> None:
    shared: Interned[tuple[str, ...]] = Interned(8)
    first = tuple(["trustwarden.io/revoke"])
    again = tuple(["trustwarden.io/revoke"])
    assert first is not again
    assert shared(first) is first
    assert shared(again) is first


def test_make_runs_once_per_key() -> None:
    calls: list[str] = []
    table: SharedValues[str, list[str]] = SharedValues(8)

    def make() -> list[str]:
        calls.append("made")
        return ["value"]

    a = table.get("k", make)
    b = table.get("k", make)
    assert a is b
    assert calls == ["made"]


def test_a_full_table_starts_again_and_still_answers_equal_values() -> None:
    shared: Interned[bytes] = Interned(2)
    one, two, three = b"one" * 3, b"two" * 3, b"three" * 3
    shared(one), shared(two)
    assert len(shared) == 2
    assert shared(three) == three
    assert len(shared) == 1  # started again: only the newest value is shared now
    fresh = bytes(bytearray(one))
    assert shared(fresh) is fresh  # the old instance is no longer handed out


def test_a_limit_below_one_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="limit must be at least 1"):
        Interned(0)


@given(st.lists(st.text(max_size=3), max_size=60), st.integers(min_value=1, max_value=8))
def test_the_table_never_exceeds_its_limit_and_every_answer_equals_the_value(
    values: list[str], limit: int
) -> None:
    shared: Interned[str] = Interned(limit)
    for value in values:
        assert shared(value) == value
        assert len(shared) <= limit
