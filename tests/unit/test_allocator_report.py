"""`kill -USR1` on the operator: allocator statistics, and nothing of any object's content."""

from __future__ import annotations

import pytest

from trustwarden.handlers.runner import allocator_report


def test_the_report_gives_arena_and_block_counts_and_no_content(
    capfd: pytest.CaptureFixture[str],
) -> None:
    secret = "-----BEGIN EC PRIVATE KEY-----held-by-a-cache"
    kept = [secret * 3]  # a live object whose content must not appear
    allocator_report()
    err = capfd.readouterr().err
    assert "# arenas allocated current" in err and "# bytes in allocated blocks" in err
    assert "BEGIN EC PRIVATE KEY" not in err and kept
