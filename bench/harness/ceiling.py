"""The yardstick: the API server's raw write ceiling on this control plane, in this run.

N Secrets the size of an SVID Secret are created from one client (one connection pool, so
connections persist) by as many parallel requests as the operator runs (its --concurrency).
Every throughput figure of the run is also reported as a share of this rate: a share is
comparable across runs on a noisy machine, an absolute rate is not."""

from __future__ import annotations

import base64
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client

from bench.harness import kube
from bench.harness.procmon import CpuWindow, cpu_per_item

# Sizes of a PerPod ECDSA P-256 SVID Secret as the operator writes it (bytes before base64):
# the leaf chain, the PKCS#8 key and the anchors, plus its annotations (about 460 bytes;
# measured on an issued Secret: 3.5 KB of JSON in all).
SVID_DATA_BYTES = {"tls.crt": 794, "tls.key": 241, "ca.crt": 798}
SVID_ANNOTATION_BYTES = 64


def svid_sized_secret(name: str) -> dict[str, Any]:
    data = {
        key: base64.b64encode(os.urandom(size)).decode() for key, size in SVID_DATA_BYTES.items()
    }
    annotations = {f"bench.trustwarden.io/a{i}": "x" * SVID_ANNOTATION_BYTES for i in range(5)}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "annotations": annotations, "labels": {"app": "ceiling"}},
        "data": data,
    }


def write_ceiling(
    api: client.ApiClient, namespace: str, n: int, *, concurrency: int
) -> dict[str, Any]:
    """Create `n` SVID-sized Secrets in `namespace` with `concurrency` requests in flight over
    one client's persistent connections; returns creates/s and latency figures."""
    core = client.CoreV1Api(api)
    kube.create_namespaces(api, [namespace], {})
    bodies = [svid_sized_secret(f"s{i}") for i in range(n)]
    latencies: list[float] = []
    errors: list[str] = []
    throttled = [0]

    def one(body: dict[str, Any]) -> None:
        for attempt in range(6):
            started = time.monotonic()
            try:
                core.create_namespaced_secret(namespace, body, _preload_content=False)
                latencies.append(time.monotonic() - started)
                return
            except client.ApiException as exc:
                if exc.status == 429 and attempt < 5:
                    throttled[0] += 1
                    time.sleep(0.05 * 2**attempt)
                    continue
                errors.append(f"{exc.status} {exc.reason}")
                return

    # warm the connections so the measure is of steady writes, not TLS handshakes
    with ThreadPoolExecutor(concurrency) as pool:
        list(
            pool.map(lambda i: core.list_namespaced_secret(namespace, limit=1), range(concurrency))
        )
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, bodies))
    elapsed = time.monotonic() - started
    kube.delete_namespaces(api, [namespace])
    ordered = sorted(latencies)

    def pct(q: float) -> float | None:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4) if ordered else None

    return {
        "n": n,
        "concurrency": concurrency,
        "creates_per_s": round(len(latencies) / max(elapsed, 1e-3), 1),
        "duration_s": round(elapsed, 2),
        "p50_s": pct(0.5),
        "p99_s": pct(0.99),
        "throttled_429": throttled[0],
        "errors": len(errors),
        "error_samples": errors[:3],
        "secret_bytes": sum(len(v) for v in bodies[0]["data"].values()) + 5 * SVID_ANNOTATION_BYTES,
    }


def write_ceiling_async(
    kubeconfig: str,
    api: client.ApiClient,
    namespace: str,
    n: int,
    *,
    concurrency: int,
    pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The same measure through the operator's own HTTP client (aiohttp on one event loop,
    one connection pool): what the operator's process could get at most, without the
    per-request cost of the kubernetes Python client's threads. With `pids`, also the CPU
    each of those processes spent per create, over the creates alone."""
    import asyncio

    from trustwarden.k8s import config as cluster_config
    from trustwarden.k8s.http import ApiClient, ApiError

    kube.create_namespaces(api, [namespace], {})
    bodies = [svid_sized_secret(f"s{i}") for i in range(n)]
    latencies: list[float] = []
    errors: list[str] = []
    usage: dict[str, Any] = {}

    async def run() -> float:
        http = ApiClient(cluster_config.load(kubeconfig), pool=concurrency)
        path = f"/api/v1/namespaces/{namespace}/secrets"
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.monotonic()
                try:
                    await http.request("POST", path, body=body)
                    latencies.append(time.monotonic() - started)
                except ApiError as exc:
                    errors.append(f"{exc.status} {exc.reason}")

        try:
            await http.request("GET", path, params={"limit": "1"})  # warm the pool
            window = CpuWindow(pids).start() if pids else None
            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.monotonic() - started
            if window is not None:
                usage.update(cpu_per_item(window.stop(), len(latencies)))
            return elapsed
        finally:
            await http.close()

    elapsed = asyncio.run(run())
    kube.delete_namespaces(api, [namespace])
    ordered = sorted(latencies)
    return {
        "n": n,
        "concurrency": concurrency,
        "client": "aiohttp (trustwarden.k8s.http)",
        "creates_per_s": round(len(latencies) / max(elapsed, 1e-3), 1),
        "duration_s": round(elapsed, 2),
        "p50_s": round(ordered[len(ordered) // 2], 4) if ordered else None,
        "p99_s": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 4)
        if ordered
        else None,
        "throttled_429": 0,
        "errors": len(errors),
        "error_samples": errors[:3],
        **({"cpu": usage} if usage else {}),
    }


def add_shares(results: dict[str, Any], ceiling: float | None) -> None:
    """Every throughput figure also as a share of the ceiling measured in the same run."""
    if not ceiling:
        return
    for result in results.values():
        if not isinstance(result, dict):
            continue
        for rate_key, share_key in (
            ("certs_per_s", "ceiling_share"),
            ("renewals_per_s", "renewals_ceiling_share"),
            ("revocations_per_s", "revocations_ceiling_share"),
        ):
            rate = result.get(rate_key)
            if isinstance(rate, int | float) and rate:
                result[share_key] = round(rate / ceiling, 3)
