"""What each pod costs the operator in memory, by structure (issue 19).

Runs the real engine in-process against the unit tests' in-memory API (`tests.unit.fakes`):
N PerPod pods over M namespaces are issued, the caches are read back as the watches would
deliver them, and then a fresh engine is primed from the same objects, as after a restart.
For both it prints the Python objects each cache holds per pod, split by type, and
tracemalloc's total and top allocation sites. An object reachable from two caches (an
interned namespace, a pod UID shared by a Secret's owner reference) is counted once, in the
first cache that reaches it.

    .venv/bin/python -m bench.heap --pods 10000 --namespaces 100

No cluster, no timing: the figures are bytes, and they do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tracemalloc
import types
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]

from tests.unit import fakes  # noqa: E402

from trustwarden.reconcile.engine import Engine  # noqa: E402

# Not data: shared by every instance, or the machinery itself.
_SKIP = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
    types.FrameType,
    asyncio.AbstractEventLoop,
)


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sizer:
    """Deep sizes of object graphs, each object counted once across every call."""

    def __init__(self, exclude: Iterable[object] = ()) -> None:
        self.seen: set[int] = {id(o) for o in exclude}

    def measure(self, root: object) -> tuple[int, Counter[str]]:
        total = 0
        by_type: Counter[str] = Counter()
        stack = [root]
        while stack:
            obj = stack.pop()
            if id(obj) in self.seen or isinstance(obj, _SKIP):
                continue
            self.seen.add(id(obj))
            size = sys.getsizeof(obj)
            total += size
            by_type[type(obj).__name__] += size
            stack.extend(gc.get_referents(obj))
        return total, by_type


def world(kube: fakes.FakeKube, engine: Engine, pods: int, namespaces: int) -> None:
    engine.observe_namespace(fakes.namespace("trustwarden-system"))
    engine.observe_trust_domain(fakes.trust_domain())
    for n in range(namespaces):
        ns = f"team-{n:04d}"
        engine.observe_namespace(fakes.namespace(ns, {"trustwarden.io/inject": "enabled"}))
        engine.observe_workload_identity(
            fakes.workload_identity(
                ns,
                "web",
                spec={
                    "trustDomain": "prod",
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "delivery": {"mode": "PerPod"},
                },
            )
        )
    for i in range(pods):
        ns = f"team-{i % namespaces:04d}"
        name = f"web-7d9f8c6b5-{i:06d}"
        secret = f"web-svid-{name}"
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": f"6f1c2d3e-4b5a-4c6d-8e9f-{i:012d}",
                "resourceVersion": str(100000 + i),
                "labels": {
                    "app": "web",
                    "pod-template-hash": "7d9f8c6b5",
                    "trustwarden.io/identity": "web",
                },
                "annotations": {
                    "trustwarden.io/secret": secret,
                    "trustwarden.io/admission": fakes.ADMISSION_KEY.tag(ns, "web", secret),
                },
            },
            "spec": {
                "serviceAccountName": "default",
                "volumes": [{"name": "trustwarden-svid", "secret": {"secretName": secret}}],
            },
        }
        kube.objects[("Pod", ns, name)] = body
        engine.observe_pod(body)


def breakdown(engine: Engine, pods: int, title: str) -> None:
    gc.collect()
    sizer = Sizer(exclude=[engine.kube, engine.metrics, engine.config])
    rows: list[tuple[str, int, Counter[str]]] = []
    store = engine.store
    for name, value in sorted(vars(store).items()):
        size, kinds = sizer.measure(value)
        rows.append((f"store.{name}", size, kinds))
    for name in (
        "scheduler",
        "status",
        "events",
        "bundles",
        "revocation",
        "authorities",
        "leaves",
        "statuses",
    ):
        size, kinds = sizer.measure(getattr(engine, name))
        rows.append((name, size, kinds))
    rows.sort(key=lambda r: -r[1])
    total = sum(r[1] for r in rows)
    print(f"\n## {title}: {pods:,} pods, Python objects held by the engine")
    print(f"{'structure':34} {'MiB':>8} {'B/pod':>7}  largest types (B/pod)")
    for name, size, kinds in rows:
        if size < 64 * 1024:
            continue
        top = ", ".join(f"{k} {v / pods:.0f}" for k, v in kinds.most_common(4))
        print(f"{name:34} {size / 2**20:8.1f} {size / pods:7.0f}  {top}")
    print(f"{'total':34} {total / 2**20:8.1f} {total / pods:7.0f}")


def top_sites(snapshot: tracemalloc.Snapshot, pods: int, limit: int = 12) -> None:
    stats = snapshot.filter_traces([tracemalloc.Filter(True, str(ROOT / "operator") + "/*")])
    total = sum(s.size for s in snapshot.statistics("filename"))
    print(f"tracemalloc: {total / 2**20:.1f} MiB traced, {total / pods:.0f} B/pod; top sites:")
    for stat in stats.statistics("lineno")[:limit]:
        frame = stat.traceback[0]
        where = frame.filename.split("/operator/", 1)[-1]
        print(f"  {stat.size / pods:7.0f} B/pod  {where}:{frame.lineno}")


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--no-tracemalloc", action="store_true")
    args = parser.parse_args(argv)
    kube, clock = fakes.FakeKube(), fakes.FakeClock()
    rss0 = _vm("VmRSS")
    if not args.no_tracemalloc:
        tracemalloc.start(1)
    engine = fakes.make_engine(kube, clock)
    world(kube, engine, args.pods, args.namespaces)
    for ns, name in list(engine.pods):
        engine.scheduler.schedule(("pod", ns, name), clock())
    engine.scheduler.schedule(("td", "prod"), clock())
    await fakes.drain(engine, clock)
    fakes.observe_written(engine, kube)
    issued = sum(1 for s in engine.secrets.values() if s.managed and s.facts is not None)
    print(
        f"issued {issued:,} of {args.pods:,}; RSS {_vm('VmRSS') - rss0:.0f} MiB over start"
        " (includes the fake API's own copies)"
    )
    breakdown(engine, args.pods, "after issuing")
    if not args.no_tracemalloc:
        top_sites(tracemalloc.take_snapshot(), args.pods)
    del engine
    gc.collect()
    if not args.no_tracemalloc:
        tracemalloc.stop()
        tracemalloc.start(1)
    fresh = fakes.make_engine(kube, clock)
    await fresh.prime()
    breakdown(fresh, args.pods, "after a restart (primed from the API)")
    if not args.no_tracemalloc:
        top_sites(tracemalloc.take_snapshot(), args.pods)


if __name__ == "__main__":
    asyncio.run(main())
