"""trustwarden benchmark harness: `make bench` (BENCH=quick|full), or

    .venv/bin/python bench/run.py --profile quick|full|smoke [--only NAME,...] [--out DIR]

Starts its own control plane in bench/.state/cluster with an audit policy for the measured
controllers, runs every scenario of the profile against a fresh `trustwarden run --local`
process (and the cert-manager controller for the side-by-side), and writes
<out>/latest.json, <out>/latest-run.json, <out>/latest.png and (quick/full) the generated
section of docs/performance.md. See docs/performance.md for the method.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import report  # noqa: E402
from bench.harness.ceiling import add_shares, write_ceiling, write_ceiling_async  # noqa: E402
from bench.harness.cluster import (  # noqa: E402
    CERT_MANAGER_SA,
    OPERATOR_SA,
    STATE,
    cache_root,
    pinned,
    start_cluster,
    start_kwok,
    stop_cluster,
)
from bench.harness.procmon import calibration_ms, loadavg, machine_cpu  # noqa: E402
from bench.harness.scenarios import Bench, blank  # noqa: E402

Step = tuple[str, Callable[[Bench, dict[str, Any]], dict[str, Any]]]
OPERATOR_CONCURRENCY = 8  # trustwarden run --concurrency default: the ceiling is measured at it
REQUIRES: dict[str, str] = {}  # a restart runs on the state its burst leaves


def burst(
    n: int, ns: int, *, profile: bool = False, restart_settle: float | None = None
) -> list[Step]:
    name = f"burst-{n}x{ns}ns"

    def run(bench: Bench, ctx: dict[str, Any]) -> dict[str, Any]:
        result, state = bench.per_pod(name, n, ns, profile=profile, keep=restart_settle is not None)
        if restart_settle is not None:
            ctx["restart_state"] = state
        return result

    steps: list[Step] = [(name, run)]
    if restart_settle is not None:

        def restart(bench: Bench, ctx: dict[str, Any]) -> dict[str, Any]:
            state = ctx.pop("restart_state", None)
            if state is None:
                raise RuntimeError(f"{name} did not leave state to restart")
            try:
                return bench.restart(f"restart-{n}", state, restart_settle, profile=profile)
            finally:
                bench.finish(state)

        steps.append((f"restart-{n}", restart))
        REQUIRES[f"restart-{n}"] = name
    return steps


def ceiling(n: int) -> list[Step]:
    """The API server's raw write ceiling at the operator's concurrency, measured first."""
    name = f"write-ceiling-{n}"

    def run(bench: Bench, ctx: dict[str, Any]) -> dict[str, Any]:
        bench.log(
            f"[{name}] {n} SVID-sized Secrets, one client, concurrency {OPERATOR_CONCURRENCY}"
        )
        # the yardstick is the faster of two clients: the operator's own aiohttp client, and
        # the kubernetes Python client from a thread pool (its per-request cost can bound it)
        result = write_ceiling_async(
            str(bench.cluster.admin_kubeconfig),
            bench.cluster.api,
            f"{bench.prefix()}-ceiling",
            n,
            concurrency=OPERATOR_CONCURRENCY,
            # what one create costs each process, to set beside a certificate's cost
            pids=bench.pids(),
        )
        bench.log(f"  aiohttp: {result['creates_per_s']} creates/s (p99 {result['p99_s']}s)")
        threaded = write_ceiling(
            bench.cluster.api, f"{bench.prefix()}-ceiling", n, concurrency=OPERATOR_CONCURRENCY
        )
        bench.log(f"  kubernetes client: {threaded['creates_per_s']} creates/s")
        result["kubernetes_client"] = threaded
        result["secret_bytes"] = threaded["secret_bytes"]
        if threaded["creates_per_s"] > result["creates_per_s"]:
            result = {**threaded, "aiohttp": result}
        return result

    return [(name, run)]


def kwok_burst(n: int, ns: int, nodes: int, *, restart_settle: float | None = None) -> list[Step]:
    name = f"burst-{n}x{ns}ns"

    def run(bench: Bench, ctx: dict[str, Any]) -> dict[str, Any]:
        result, state = bench.per_pod(
            name, n, ns, nodes=nodes, keep=restart_settle is not None, threads=16
        )
        if restart_settle is not None:
            ctx["restart_state"] = state
        return result

    steps: list[Step] = [(name, run)]
    if restart_settle is not None:

        def restart(bench: Bench, ctx: dict[str, Any]) -> dict[str, Any]:
            state = ctx.pop("restart_state", None)
            if state is None:
                raise RuntimeError(f"{name} did not leave state to restart")
            try:
                return bench.restart(f"restart-{n}", state, restart_settle)
            finally:
                bench.finish(state)

        steps.append((f"restart-{n}", restart))
        REQUIRES[f"restart-{n}"] = name
    return steps


def backlog(n: int, ns: int, *, profile: bool = False) -> list[Step]:
    """`n` pods that exist before their TrustDomain: issuance against a queue, the figure the
    share of the write ceiling is about (a burst only shows the pod creator's pace)."""
    name = f"backlog-{n}x{ns}ns"
    return [(name, lambda bench, ctx: bench.per_pod(name, n, ns, backlog=True, profile=profile)[0])]


def node_loss(n: int) -> list[Step]:
    name = f"node-loss-{n}"
    return [(name, lambda bench, ctx: bench.node_loss(name, n))]


def steady(rate: float, seconds: int, ns: int) -> list[Step]:
    name = f"steady-{int(rate)}ps-{seconds}s"
    n = int(rate * seconds)
    return [(name, lambda bench, ctx: bench.per_pod(name, n, ns, rate=rate, threads=8)[0])]


def shared(n: int, ns: int, cert_manager: bool) -> list[Step]:
    steps: list[Step] = [(f"shared-{n}", lambda bench, ctx: bench.shared(f"shared-{n}", n, ns))]
    if cert_manager:
        steps.append(
            (f"cert-manager-{n}", lambda bench, ctx: bench.cert_manager(f"cert-manager-{n}", n, ns))
        )
    return steps


def sweep(n: int, ns: int, ttl: str, renew_at: str) -> list[Step]:
    name = f"rotation-sweep-{n}"
    return [
        (name, lambda bench, ctx: bench.rotation_sweep(name, n, ns, ttl=ttl, renew_at=renew_at))
    ]


def fanout(m: int) -> list[Step]:
    name = f"ca-rotation-fanout-{m}"
    return [(name, lambda bench, ctx: bench.ca_fanout(name, m))]


def ca_rollover(n: int, ns: int, activate_in: float) -> list[Step]:
    name = f"rollover-{n}"
    return [(name, lambda bench, ctx: bench.rollover(name, n, ns, activate_in=activate_in))]


def pcr_burst(n: int) -> list[Step]:
    name = f"pcr-burst-{n}"
    return [(name, lambda bench, ctx: bench.pcr_burst(name, n))]


def select(steps: list[Step], only: str) -> list[Step]:
    """The steps `--only` names, with the bursts their restarts run on. A full scenario name
    means that scenario alone (restart-10000 is also a prefix of restart-100000, which would
    bring in its hour-long burst); anything else is a prefix."""
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    names = {name for name, _ in steps}
    keep = {
        name
        for name in names
        if any(name == w or (w not in names and name.startswith(w)) for w in wanted)
    }
    keep |= {REQUIRES[name] for name in keep if name in REQUIRES}
    return [(name, fn) for name, fn in steps if name in keep]


def profile_steps(profile: str, cert_manager: bool) -> list[Step]:
    if profile == "smoke":
        return [
            *burst(20, 2, profile=True, restart_settle=3),
            *shared(20, 2, cert_manager),
            *pcr_burst(20),
        ]
    if profile == "quick":
        return [
            *ceiling(2000),
            *burst(100, 10),
            *burst(1000, 10, profile=True, restart_settle=15),
            *burst(1000, 100),
            *backlog(1000, 10),
            *steady(20, 30, 10),
            *shared(1000, 10, cert_manager),
            *sweep(500, 10, "10m", "10%"),
            *fanout(100),
            *pcr_burst(1000),
            *node_loss(100),
        ]
    if profile == "full":
        return [
            *ceiling(4000),
            *burst(100, 10),
            *burst(1000, 10),
            *burst(1000, 100),
            *burst(10000, 100, profile=True, restart_settle=30),
            *backlog(1000, 10),
            *backlog(10000, 100),
            *steady(20, 120, 10),
            *shared(1000, 10, cert_manager),
            *sweep(2000, 10, "10m", "50%"),
            *fanout(100),
            *pcr_burst(1000),
            *node_loss(1000),
            *ca_rollover(10000, 10, activate_in=420),
            # the scaling table's last row: 100,000 pods on 1,000 kwok Nodes, then a restart
            *kwok_burst(100000, 1000, 1000, restart_settle=60),
        ]
    raise SystemExit(f"unknown profile {profile}")


def build_cert_manager(log: Callable[[str], None]) -> tuple[Path | None, str | None, str]:
    version = pinned(REPO / "bench" / "versions.env")["CERT_MANAGER_VERSION"]
    binary = cache_root() / "cert-manager" / version / "cert-manager-controller"
    if not binary.exists():
        log(f"building cert-manager {version} (bench/build-cert-manager.sh)")
        result = subprocess.run(
            [str(REPO / "bench" / "build-cert-manager.sh")], capture_output=True, text=True
        )
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
            return None, f"bench/build-cert-manager.sh failed: {reason}", version
    return binary, None, version


def main() -> int:
    parser = argparse.ArgumentParser(description="trustwarden benchmark harness")
    parser.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"])
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated scenario names (a name that is not a scenario's is a prefix)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results directory (default bench/results; smoke: bench/results/smoke)",
    )
    parser.add_argument(
        "--no-cert-manager", action="store_true", help="skip the cert-manager side by side"
    )
    parser.add_argument(
        "--with-cert-manager", action="store_true", help="smoke profile: include cert-manager"
    )
    parser.add_argument(
        "--keep-cluster", action="store_true", help="leave the benchmark control plane running"
    )
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    parser.add_argument(
        "--report-only", action="store_true", help="regenerate plot and docs from existing results"
    )
    args = parser.parse_args()

    if args.report_only:
        out = args.out or REPO / "bench" / "results"
        results = json.loads((out / "latest.json").read_text())
        run = json.loads((out / "latest-run.json").read_text())
        run["targets"] = report.targets(results)
        report.write_json(out / "latest-run.json", run)
        samples = json.loads((out / "latest-samples.json").read_text())
        report.plot(samples, results, out / "latest.png")
        if not args.no_docs:
            report.update_docs(REPO / "docs" / "performance.md", report.markdown(results, run))
        print(
            f"regenerated {out / 'latest.png'} and docs/performance.md from {out / 'latest.json'}"
        )
        return 0
    out = args.out or (REPO / "bench" / "results" / ("smoke" if args.profile == "smoke" else ""))
    state = Path(os.environ.get("BENCH_STATE", STATE))
    state.mkdir(parents=True, exist_ok=True)
    (state / "logs").mkdir(exist_ok=True)
    t0 = time.monotonic()

    def log(message: str) -> None:
        print(f"[bench {time.monotonic() - t0:6.0f}s] {message}", flush=True)

    with_cm = not args.no_cert_manager and (args.profile != "smoke" or args.with_cert_manager)
    steps = profile_steps(args.profile, with_cm)
    if args.only:
        steps = select(steps, args.only)
    log(f"profile {args.profile}: {', '.join(name for name, _ in steps)}")

    busy0, total0 = machine_cpu()
    time.sleep(5)
    busy1, total1 = machine_cpu()
    load_before = {
        "loadavg": loadavg(),
        "busy_fraction": round((busy1 - busy0) / max(total1 - total0, 1), 3),
        "calibration_ms": calibration_ms(),
    }
    log(f"machine load before the run: {load_before}")

    cm_binary, cm_error, cm_version = (None, "skipped (--no-cert-manager or smoke profile)", None)
    if with_cm and any(name.startswith("cert-manager") for name, _ in steps):
        cm_binary, cm_error, cm_version = build_cert_manager(log)
        if cm_error:
            log(f"cert-manager unavailable: {cm_error}")

    started = datetime.now(UTC)
    cluster = start_cluster(state, log=log)
    start_kwok(cluster.directory, log=log)
    results: dict[str, Any] = {}
    previous_samples: dict[str, Any] = {}
    if args.only and (out / "latest.json").exists():
        # a partial run updates the scenarios it ran and keeps the others
        results = json.loads((out / "latest.json").read_text())
        with contextlib.suppress(OSError, ValueError):
            previous_samples = json.loads((out / "latest-samples.json").read_text())
    bench = None
    try:
        op_kc = cluster.identity_kubeconfig(OPERATOR_SA, state / "operator.kubeconfig")
        cm_kc = cluster.identity_kubeconfig(CERT_MANAGER_SA, state / "cert-manager.kubeconfig")
        cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "deploy" / "crds")
        )
        for crd in ("trustdomains.trustwarden.io", "workloadidentities.trustwarden.io"):
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        bench = Bench(cluster, op_kc, cm_kc, state, log, cm_binary, cm_error, cm_version)
        ctx: dict[str, Any] = {}
        for name, fn in steps:
            if "restart_state" in ctx and not name.startswith("restart-"):
                # the burst kept its operator for a restart that was not selected: stop it,
                # or it would keep reconciling (and writing) during the next scenario
                bench.finish(ctx.pop("restart_state"))
            try:
                results[name] = fn(bench, ctx)
            except Exception as exc:
                log(f"[{name}] FAILED: {exc}")
                traceback.print_exc()
                failed = blank(0, 0)
                failed["error"] = f"{type(exc).__name__}: {exc}"
                failed["errors"] = 1
                results[name] = failed
                bench.reap()
            # ratios against the shared run of the same N
            if name.startswith("cert-manager-"):
                tw = results.get("shared-" + name.split("-")[-1]) or {}
                if not results[name].get("error") and tw:
                    cmp = report.compare(tw, results[name])
                    cmp["against_scenario"] = "shared-" + name.split("-")[-1]
                    cmp["trustwarden_time_to_all_ready_s"] = tw.get("time_to_all_ready_s")
                    results[name]["vs_trustwarden"] = cmp
            ceiling_rate = next(
                (
                    r.get("creates_per_s")
                    for k, r in results.items()
                    if k.startswith("write-ceiling")
                ),
                None,
            )
            # only this invocation's results: a partial run keeps older ones unchanged
            add_shares({k: results[k] for k, _ in steps if k in results}, ceiling_rate)
            report.write_json(out / "latest.json", results)
    finally:
        if bench is not None:
            bench.reap()
            bench.monitor.stop()
        if args.keep_cluster:
            log(f"leaving the benchmark cluster running in {cluster.directory}")
        else:
            log("stopping the benchmark cluster")
            stop_cluster(cluster.directory)

    run = {
        "profile": args.profile,
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "machine": report.machine(),
        "versions": report.versions(cm_version),
        "load_before": load_before,
        "cert_manager_error": cm_error if with_cm else "skipped",
        "targets": report.targets(results),
    }
    report.write_json(out / "latest.json", results)
    report.write_json(out / "latest-run.json", run)
    samples = {**previous_samples, **(bench.samples if bench else {})}
    report.write_json(out / "latest-samples.json", samples)
    png = report.plot(samples, results, out / "latest.png")
    log(
        f"wrote {out / 'latest.json'}"
        + (f" and {png}" if png else " (matplotlib missing: no plot)")
    )
    if args.profile != "smoke" and not args.no_docs and out == REPO / "bench" / "results":
        report.update_docs(REPO / "docs" / "performance.md", report.markdown(results, run))
        log("updated docs/performance.md")
    for row in run["targets"]:
        met = {True: "met", False: "MISSED", None: "n/a"}[row["met"]]
        log(f"target {row['figure']} {row['target']}: {row['value']} ({met}) [{row['scenario']}]")
    log(f"done in {time.monotonic() - t0:.0f}s")
    return 0 if all(not r.get("error") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
