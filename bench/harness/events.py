"""The harness's view of the watcher's JSON-lines file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.cluster import REPO

Key = tuple[str, str]


@dataclass
class SecretState:
    first: float
    listed: bool
    serial: str | None
    issuer: str | None
    renew_at: str | None
    cm: str | None
    mgr: str | None
    changes: list[tuple[float, str | None, str | None]] = field(default_factory=list)
    deleted: float | None = None
    # every version seen, first included: (time, serial, issuer, renew_at of that version)
    history: list[tuple[float, str | None, str | None, str | None]] = field(default_factory=list)


class Events:
    """Tails the watcher's file and keeps first-seen times, serial changes and conditions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self.ready = False
        self.pods: dict[Key, float] = {}
        self.pods_gone: dict[Key, float] = {}
        self.pod_secret: dict[Key, str] = {}
        self.secrets: dict[Key, SecretState] = {}
        self.cr_ready: dict[tuple[str, str, str], float] = {}
        self.bundles: dict[str, list[tuple[float, list[str]]]] = defaultdict(list)
        self.authorities: dict[str, list[list[str]]] = {}
        self.errors: list[str] = []

    def poll(self) -> None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        self._offset += end + 1
        for line in chunk[: end + 1].splitlines():
            self._apply(json.loads(line))

    def _apply(self, r: dict[str, Any]) -> None:
        kind, event, t = r["k"], r["e"], r["t"]
        if event == "READY":
            self.ready = True
            return
        if event == "WATCH_ERROR":
            self.errors.append(f"{kind}: {r.get('error')}")
            return
        if event == "SYNCED":
            return
        key = (r.get("ns") or "", r.get("n") or "")
        if kind == "pods":
            if event in ("ADDED", "LIST"):
                self.pods.setdefault(key, t)
            elif event == "DELETED":
                self.pods_gone[key] = t
            if r.get("secret"):
                self.pod_secret[key] = r["secret"]
        elif kind == "secrets":
            state = self.secrets.get(key)
            if event == "DELETED":
                if state is not None:
                    state.deleted = t
                return
            version = (t, r.get("serial"), r.get("issuer"), r.get("renew_at"))
            if state is None or state.deleted is not None:
                self.secrets[key] = SecretState(
                    t,
                    event == "LIST",
                    r.get("serial"),
                    r.get("issuer"),
                    r.get("renew_at"),
                    r.get("cm"),
                    r.get("mgr"),
                    history=[version],
                )
                return
            if r.get("serial") != state.serial:
                state.changes.append((t, state.serial, r.get("serial")))
                state.history.append(version)
            state.serial = r.get("serial")
            state.issuer = r.get("issuer")
            state.renew_at = r.get("renew_at")
        elif kind in ("wids", "certificates"):
            if r.get("ready") == "True":
                self.cr_ready.setdefault((kind, *key), t)
            elif event != "DELETED":
                self.cr_ready.pop((kind, *key), None)
        elif kind == "bundles":
            if event != "DELETED":
                self.bundles[key[0]].append((t, r.get("anchors") or []))
        elif kind == "trustdomains" and event != "DELETED":
            self.authorities[key[1]] = r.get("authorities") or []


class Watcher:
    """The watcher subprocess for one scenario."""

    def __init__(self, kubeconfig: Path, out: Path, kinds: list[str]) -> None:
        self.out = out
        out.unlink(missing_ok=True)
        self.log = out.with_suffix(".log")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.harness.watcher",
                    "--kubeconfig",
                    str(kubeconfig),
                    "--out",
                    str(out),
                    *kinds,
                ],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        self.events = Events(out)

    def wait_ready(self, timeout: float = 120) -> Events:
        deadline = time.monotonic() + timeout
        while not self.events.ready:
            if self.process.poll() is not None:
                raise RuntimeError(f"watcher exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("watcher did not sync in time")
            time.sleep(0.1)
            self.events.poll()
        return self.events

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.events.poll()
