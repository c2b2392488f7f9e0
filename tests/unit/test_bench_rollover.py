"""The rollover benchmark's judgement: renewal rates, early moves and verification gaps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.harness import rollover

OLD, NEW = "a" * 64, "b" * 64


def test_rate_counts_whole_seconds_and_finds_the_busiest() -> None:
    times = [10.0, 10.5, 10.9, 11.2, 13.0, 19.9, 20.0]
    r = rollover.rate(times, 10.0, 20.0)
    assert (r.count, r.peak_per_s) == (6, 3)
    assert r.mean_per_s == pytest.approx(0.6)
    assert r.peak_to_mean == pytest.approx(5.0)
    assert rollover.rate([], 0.0, 5.0).peak_to_mean is None
    with pytest.raises(ValueError):
        rollover.rate(times, 5.0, 5.0)


def test_moves_and_renewals_come_from_versions_after_the_first() -> None:
    histories = {
        ("ns", "a"): [(0.0, "1", OLD, None), (5.0, "2", OLD, None), (9.0, "3", NEW, None)],
        ("ns", "b"): [(1.0, "4", OLD, None)],
        ("ns", "c"): [(2.0, "5", NEW, None), (7.0, "6", NEW, None)],
    }
    assert rollover.renewals(histories) == [5.0, 7.0, 9.0]
    # c was issued by NEW from its start: that is not a move
    assert rollover.moves(histories, NEW) == {("ns", "a"): (9.0, "3", NEW, None)}


def test_a_move_before_the_announced_renew_at_is_off_schedule() -> None:
    due = "1970-01-01T00:01:40Z"  # t = 100
    histories = {
        ("ns", "on-time"): [(0.0, "1", OLD, due), (98.0, "2", NEW, None)],
        ("ns", "early"): [(0.0, "3", OLD, due), (40.0, "4", NEW, None)],
        ("ns", "renewed-then-moved"): [
            (0.0, "5", OLD, "1970-01-01T00:00:30Z"),
            (30.0, "6", OLD, due),
            (101.0, "7", NEW, None),
        ],
    }
    assert rollover.off_schedule(histories, NEW, slack_s=5.0) == [(("ns", "early"), 60.0)]


def test_each_renewal_is_paired_with_the_renew_at_before_it() -> None:
    histories = {
        ("ns", "a"): [
            (0.0, "1", OLD, "1970-01-01T00:01:40Z"),  # due at 100
            (101.5, "2", OLD, "1970-01-01T00:03:20Z"),  # due at 200
            (203.0, "3", NEW, None),
        ],
        ("ns", "b"): [(0.0, "4", OLD, None), (50.0, "5", OLD, None)],  # nothing announced
    }
    pairs = rollover.due_and_arrived(histories)
    assert pairs == [(100.0, 101.5), (200.0, 203.0)]
    assert rollover.lag_summary(pairs) == {"p50": 3.0, "p99": 3.0, "max": 3.0}
    assert rollover.lag_summary([]) == {"p50": None, "p99": None, "max": None}


def test_no_gap_when_the_anchor_is_published_first_and_kept() -> None:
    histories = {("ns", "a"): [(1.0, "1", OLD, None), (10.0, "2", NEW, None)]}
    bundles = {"ns": [(0.0, [OLD]), (5.0, [OLD, NEW]), (20.0, [NEW])]}
    assert rollover.verification_gaps(histories, bundles) == []


def test_a_leaf_ahead_of_its_anchor_is_a_gap() -> None:
    histories = {("ns", "a"): [(1.0, "1", OLD, None), (10.0, "2", NEW, None)]}
    bundles = {"ns": [(0.0, [OLD]), (12.0, [OLD, NEW])]}
    gaps = rollover.verification_gaps(histories, bundles)
    assert len(gaps) == 1 and "ns/a" in gaps[0] and "before its anchor" in gaps[0]


def test_an_anchor_dropped_under_a_current_leaf_is_a_gap() -> None:
    histories = {
        ("ns", "a"): [(1.0, "1", OLD, None)],
        ("ns", "b"): [(1.0, "2", OLD, None), (6.0, "3", NEW, None)],
    }
    bundles = {"ns": [(0.0, [OLD, NEW]), (8.0, [NEW])]}
    gaps = rollover.verification_gaps(histories, bundles)
    assert len(gaps) == 1 and "dropped anchor" in gaps[0] and "1 current leaf" in gaps[0]
    # another namespace's bundle never judges this one's leaves
    assert rollover.verification_gaps(histories, {"other": [(0.0, [])]}) == []


def test_after_a_restart_only_re_issues_ahead_of_renew_at_count() -> None:
    histories = {
        ("ns", "due"): [(0.0, "1", OLD, "1970-01-01T00:01:40Z"), (101.0, "2", OLD, None)],
        ("ns", "ahead"): [(0.0, "3", OLD, "1970-01-01T00:01:40Z"), (60.0, "4", OLD, None)],
        ("ns", "before-restart"): [(0.0, "5", OLD, None), (10.0, "6", OLD, None)],
        ("ns", "no-renew-at"): [(0.0, "7", OLD, None), (70.0, "8", OLD, None)],
    }
    assert rollover.ahead_of_renew_at(histories, since=50.0, slack_s=5.0) == (2, 1)
