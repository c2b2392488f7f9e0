from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustwarden.pki import (
    InvalidDurationError,
    PKIError,
    format_duration,
    parse_duration,
    parse_percent,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("10m", timedelta(minutes=10)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2160h", timedelta(days=90)),
        ("1.5h", timedelta(minutes=90)),
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        ("+5m", timedelta(minutes=5)),
        ("300ms", timedelta(milliseconds=300)),
        ("1h0m0s", timedelta(hours=1)),
        (".5s", timedelta(milliseconds=500)),
        ("1.s", timedelta(seconds=1)),
        ("2us", timedelta(microseconds=2)),
        ("2\u00b5s", timedelta(microseconds=2)),
        ("1500ns", timedelta(microseconds=1)),
        (" 1h ", timedelta(hours=1)),
    ],
)
def test_parse_duration_go_grammar(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "duration is empty"),
        ("90", "missing a unit"),
        ("1d", "use hours instead, e.g. 2160h for 90 days"),
        ("2w", "no days, weeks or years"),
        ("5x", "unknown unit 'x'"),
        ("-1h", "negative duration '-1h' is not allowed"),
        ("h", "is not a valid duration"),
        (".h", "is not a valid duration"),
        ("1h 30m", "is not a valid duration"),
        ("9" * 80 + "h", "longer than 64 characters"),
        ("9999999h", "too large"),
    ],
)
def test_parse_duration_errors_explain(text: str, fragment: str) -> None:
    with pytest.raises(InvalidDurationError) as err:
        parse_duration(text, field="spec.ttl")
    assert fragment in str(err.value)
    assert str(err.value).startswith("spec.ttl: ")
    assert isinstance(err.value, PKIError)


def test_parse_duration_rejects_non_strings() -> None:
    with pytest.raises(InvalidDurationError, match="expected a duration string, got int"):
        parse_duration(3600)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(hours=1), "1h"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(days=90), "2160h"),
        (timedelta(0), "0s"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(microseconds=1500), "1500us"),
        (timedelta(seconds=1, milliseconds=500), "1.5s"),
        (timedelta(hours=-1), "-1h"),
    ],
)
def test_format_duration_compact(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@settings(max_examples=60, deadline=None)
@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=100_000)))
def test_format_parse_round_trip(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    ("text", "expected"), [("50%", 0.5), ("0%", 0.0), ("100%", 1.0), ("66.6%", 0.666)]
)
def test_parse_percent(text: str, expected: float) -> None:
    assert parse_percent(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("50", "add the % sign"),
        ("150%", "above 100%"),
        ("-5%", "is not a percentage"),
        ("abc", "is not a percentage"),
    ],
)
def test_parse_percent_errors(text: str, fragment: str) -> None:
    with pytest.raises(InvalidDurationError) as err:
        parse_percent(text, field="spec.renewAt")
    assert fragment in str(err.value)
    assert "spec.renewAt" in str(err.value)
