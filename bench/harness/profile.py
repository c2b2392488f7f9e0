"""Attribute py-spy samples of the operator to crypto, API client, kopf, JSON, ..."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

# (category, path prefixes); the innermost frame with a known prefix decides.
CATEGORIES = [
    ("crypto", ("cryptography/",)),
    ("trustwarden.pki", ("trustwarden/pki/",)),
    ("json", ("json/",)),
    ("yaml", ("yaml/",)),
    ("ssl/socket", ("ssl.py", "socket.py")),
    ("kubernetes client", ("kubernetes/", "urllib3/")),
    ("aiohttp", ("aiohttp/", "yarl/", "multidict/")),
    ("kopf", ("kopf/",)),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("trustwarden.reconcile", ("trustwarden/reconcile/",)),
    ("trustwarden.k8s", ("trustwarden/k8s/",)),
    ("trustwarden.handlers", ("trustwarden/handlers/",)),
    ("trustwarden (other)", ("trustwarden/",)),
    ("prometheus", ("prometheus_client/",)),
    ("logging", ("logging/",)),
    ("asyncio", ("asyncio/",)),
    ("threading/concurrent", ("threading.py", "concurrent/", "queue.py")),
    ("copy", ("copy.py",)),
]
# Innermost frames that mean "waiting", not "computing": py-spy's idle detection misses some
# of them when it samples without pausing the process (--nonblocking).
IDLE_LEAVES = (
    "select (selectors.py",
    "_worker (concurrent/futures/thread.py",
    "wait (threading.py",
    "get (queue.py",
    "SSLSocket.read (ssl.py",
    "SSLSocket.recv_into (ssl.py",
    "_wait_for_tstate_lock (threading.py",
)


def _path(frame: str) -> str:
    start = frame.rfind("(")
    end = frame.rfind(":")
    return frame[start + 1 : end] if 0 <= start < end else frame


def _category(frames: list[str]) -> str:
    for frame in reversed(frames):
        path = _path(frame)
        for name, prefixes in CATEGORIES:
            if path.startswith(prefixes):
                return name
    return "other"


def analyse(path: Path, top: int = 15) -> dict[str, object]:
    """Shares of busy samples. `crypto_share`: samples with a frame in the `cryptography`
    package (key generation, signing, PEM and certificate parsing; the native code runs under
    those frames). `pki_and_crypto_share` adds frames in trustwarden.pki, which calls the
    Rust-backed cryptography functions directly (those have no Python frame of their own)."""
    by_category: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = crypto = pki = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        if any(leaf in frames[-1] for leaf in IDLE_LEAVES):
            idle += count
            continue
        total += count
        paths = [_path(f) for f in frames]
        if any(p.startswith("cryptography/") for p in paths):
            crypto += count
        if any(p.startswith(("cryptography/", "trustwarden/pki/")) for p in paths):
            pki += count
        by_category[_category(frames)] += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            if _path(frame).startswith("trustwarden/"):
                inclusive[frame] += count
    if total == 0:
        return {"samples": 0, "idle_samples": idle}
    return {
        "samples": total,
        "idle_samples": idle,
        "crypto_share": round(crypto / total, 3),
        "pki_and_crypto_share": round(pki / total, 3),
        "by_category": {k: round(v / total, 3) for k, v in by_category.most_common()},
        "top_self": [[f, round(n / total, 3)] for f, n in self_time.most_common(top)],
        "top_trustwarden_inclusive": [
            [f, round(n / total, 3)] for f, n in inclusive.most_common(top)
        ],
    }
