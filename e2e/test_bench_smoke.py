"""The benchmark harness works end to end (N = 20): it starts its own control plane, runs the
smoke profile and writes well-formed results. No timing is asserted: numbers from a shared,
2-core machine mean nothing here; `make bench` is where they are measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.support import REPO

REQUIRED = {
    "n",
    "namespaces",
    "p50_s",
    "p95_s",
    "p99_s",
    "certs_per_s",
    "api_writes_per_cert",
    "api_reads_per_cert",
    "peak_rss_mib",
    "cpu_s",
}


@pytest.mark.timeout(420)
def test_bench_smoke_profile_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    state = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--profile", "smoke", "--out", str(out)],
        cwd=REPO,
        env={**os.environ, "BENCH_STATE": str(state)},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    results = json.loads((out / "latest.json").read_text())
    assert set(results) == {"burst-20x2ns", "restart-20", "shared-20", "pcr-burst-20"}
    pcr = results.pop("pcr-burst-20")  # the pod-certificate path, figures of its own
    assert pcr.get("errors", 0) == 0, pcr.get("error_samples") or pcr.get("error")
    for name, figures in results.items():
        assert set(figures) >= REQUIRED, f"{name} lacks {REQUIRED - set(figures)}"
        assert figures["errors"] == 0, (name, figures.get("error_samples") or figures.get("error"))
    for name in ("burst-20x2ns", "shared-20"):
        figures = results[name]
        assert figures["n"] == 20 and figures["issued"] == 20
        for key in ("p50_s", "p99_s", "certs_per_s", "api_writes_per_cert", "peak_rss_mib"):
            assert isinstance(figures[key], int | float), (name, key, figures[key])
        assert figures["api_requests"]["by_verb"].get("create", 0) >= 20
        calibration = figures["load"]["calibration_ms"]  # host speed at the start and the end
        assert len(calibration) == 2 and all(x > 0 for x in calibration), calibration
    assert results["restart-20"]["reissued"] == 0
    assert isinstance(results["restart-20"]["ready_s"], float)
    run = json.loads((out / "latest-run.json").read_text())
    assert {"machine", "versions", "targets", "load_before"} <= set(run)
    try:
        import matplotlib  # noqa: F401  (bench extra; `make test` installs only dev)
    except ImportError:
        pass
    else:
        assert (out / "latest.png").stat().st_size > 0
    # its own control plane is gone again
    assert not (state / "cluster").exists()
