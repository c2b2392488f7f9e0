"""Every example under tests/data/crds/ against the real API server (server-side dry run):
valid objects are admitted with their defaults, invalid ones are rejected with a message that
names the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from e2e.support import REPO, Cluster

EXAMPLES = REPO / "tests" / "data" / "crds"
CASES = sorted(EXAMPLES.glob("*.yaml"))


def _expectation(path: Path) -> tuple[str, str] | None:
    for line in path.read_text().splitlines():
        match = re.match(r"#\s*(expect|expect-strict):\s*(.+)$", line)
        if match:
            return match.group(1), match.group(2).strip()
    return None


def test_every_invalid_case_has_an_expectation() -> None:
    invalid = [p for p in CASES if p.name.startswith("invalid-")]
    assert len(invalid) >= 20
    missing = [p.name for p in invalid if _expectation(p) is None]
    assert not missing, f"invalid examples without '# expect:' lines: {missing}"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_admission(cluster: Cluster, crds: None, namespace: str, path: Path) -> None:
    result = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-n",
        namespace,
        "-f",
        str(path),
        check=False,
    )
    if path.name.startswith("valid-"):
        assert result.returncode == 0, result.stderr
        return
    expectation = _expectation(path)
    assert expectation is not None
    _, expected = expectation
    assert result.returncode != 0, f"{path.name} was admitted"
    assert expected in result.stderr, f"{path.name}: expected {expected!r} in:\n{result.stderr}"
