"""`bench/run.py --only`: which scenarios a selection runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

RUN = Path(__file__).resolve().parents[2] / "bench" / "run.py"


def _run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_full_name_selects_that_scenario_and_a_partial_one_is_a_prefix() -> None:
    run = _run_module()
    steps = run.profile_steps("full", False)

    def names(only: str) -> list[str]:
        return [name for name, _ in run.select(steps, only)]

    # restart-10000 is a prefix of restart-100000: named in full, it is that scenario alone,
    # with the burst it restarts from.
    assert names("restart-10000") == ["burst-10000x100ns", "restart-10000"]
    # Not a scenario of the full profile: a prefix, with both restarts and their bursts.
    assert set(names("restart-1000")) == {
        "burst-10000x100ns",
        "restart-10000",
        "burst-100000x1000ns",
        "restart-100000",
    }
    assert names("burst-1000x10ns") == ["burst-1000x10ns"]
    assert set(names("burst-1000")) >= {"burst-1000x10ns", "burst-1000x100ns"}


def test_the_backlog_scenarios_are_in_both_long_profiles() -> None:
    run = _run_module()
    quick = [name for name, _ in run.profile_steps("quick", False)]
    full = [name for name, _ in run.profile_steps("full", False)]
    assert "backlog-1000x10ns" in quick
    assert {"backlog-1000x10ns", "backlog-10000x100ns"} <= set(full)
    # the ceiling comes first: every share in the run is against it
    assert full[0].startswith("write-ceiling") and quick[0].startswith("write-ceiling")


def test_cpu_per_item_divides_each_process_and_keeps_the_window() -> None:
    from bench.harness.procmon import cpu_per_item

    usage = {"wall_s": 4.0, "machine_busy_fraction": 0.9, "cpu_s": {"kube-apiserver": 3.0}}
    out = cpu_per_item(usage, 1000)
    assert out == {
        "items": 1000,
        "wall_s": 4.0,
        "machine_busy_fraction": 0.9,
        "ms_per_item": {"kube-apiserver": 3.0},
    }
    assert cpu_per_item({"cpu_s": {"etcd": 1.0}}, 0)["ms_per_item"] == {"etcd": 1000.0}
