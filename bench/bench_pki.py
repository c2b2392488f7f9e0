"""Micro-benchmark of the X.509-SVID issue path, single process.

For each leaf key algorithm: generate the key, sign the certificate with a P-256 CA, and
serialise certificate and key to PEM -- everything ``issue_leaf`` does. A second column
reuses a pre-generated key to separate signing from key generation.

    .venv/bin/python bench/bench_pki.py [--seconds 2] [--output bench/results/pki.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cryptography

from trustwarden.pki import (
    KeyAlgorithm,
    LeafRequest,
    SpiffeID,
    Usage,
    create_self_signed_ca,
    generate_private_key,
    issue_leaf,
)

TARGET_P256_PER_SECOND = 4000
# RSA key generation takes 50 ms to seconds; cap the iterations so the run stays short.
MAX_ITERATIONS = {KeyAlgorithm.RSA2048: 200, KeyAlgorithm.RSA3072: 40, KeyAlgorithm.RSA4096: 12}


def measure(fn, seconds: float, max_iterations: int | None) -> list[float]:  # type: ignore[no-untyped-def]
    for _ in range(3):  # warm-up
        fn()
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline and (
        max_iterations is None or len(samples) < max_iterations
    ):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def summarise(samples: list[float]) -> dict[str, float | int]:
    ordered = sorted(samples)
    total = sum(samples)
    return {
        "iterations": len(samples),
        "per_second": round(len(samples) / total, 1),
        "mean_us": round(statistics.fmean(samples) * 1e6, 1),
        "p50_us": round(ordered[len(ordered) // 2] * 1e6, 1),
        "p99_us": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time budget per measurement")
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "pki.json"
    )
    args = parser.parse_args()

    now = datetime.now(UTC)
    ca = create_self_signed_ca(
        "bench.example.org", KeyAlgorithm.ECDSAP256, timedelta(days=30), now=now
    )
    spiffe_id = SpiffeID("bench.example.org", "/ns/bench/sa/bench")
    rows = []
    for alg in KeyAlgorithm:
        request = LeafRequest(
            spiffe_id,
            ("bench.bench.svc",),
            timedelta(hours=1),
            alg,
            frozenset({Usage.server, Usage.client}),
        )
        cap = MAX_ITERATIONS.get(alg)
        full = measure(lambda r=request: issue_leaf(ca, r, now), args.seconds, cap)
        key = generate_private_key(alg)
        sign_only = measure(
            lambda r=request, k=key: issue_leaf(ca, r, now, private_key=k), args.seconds, None
        )
        rows.append(
            {
                "key_algorithm": alg.value,
                "issue": summarise(full),
                "sign_only": summarise(sign_only),
            }
        )

    header = f"{'leaf key':<10} {'leaves/s':>10} {'mean us':>9} {'p99 us':>9} {'n':>7}   {'sign-only/s':>11}"
    print(
        f"trustwarden PKI issue path (CA ECDSAP256, Python {platform.python_version()}, "
        f"cryptography {cryptography.__version__})"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        issue, sign = row["issue"], row["sign_only"]
        print(
            f"{row['key_algorithm']:<10} {issue['per_second']:>10,.0f} {issue['mean_us']:>9,.0f} "
            f"{issue['p99_us']:>9,.0f} {issue['iterations']:>7}   {sign['per_second']:>11,.0f}"
        )
    p256 = next(r for r in rows if r["key_algorithm"] == "ECDSAP256")["issue"]["per_second"]
    met = p256 >= TARGET_P256_PER_SECOND
    print(
        f"\nP-256 target {TARGET_P256_PER_SECOND}/s: {'met' if met else 'NOT met'} ({p256:,.0f}/s)"
    )

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "benchmark": "pki.issue_leaf",
                "generated_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "python": platform.python_version(),
                "cryptography": cryptography.__version__,
                "machine": platform.machine(),
                "ca_key_algorithm": "ECDSAP256",
                "seconds_per_measurement": args.seconds,
                "target": {"ECDSAP256_per_second": TARGET_P256_PER_SECOND, "met": met},
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
