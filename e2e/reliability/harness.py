"""Driving load and recording what the operator does: operator processes (optionally supervised,
as a Deployment would restart them), bounded pod bursts that retry like a controller, a Secret
recorder that sees every serial written, and the results table behind docs/reliability.md."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from e2e.operator import OperatorProcess
from e2e.support import REPO, Cluster, wait_for

MANAGED = "app.kubernetes.io/managed-by=trustwarden"
INJECT = {"trustwarden.io/inject": "enabled"}


# ----------------------------------------------------------------------------- the operator


class Operator(OperatorProcess):
    """`trustwarden run --local` as a child process with fixed ports, so that it can be killed
    and started again as the same replica (same webhook URL, same metrics port), optionally
    supervised as a Deployment would restart it."""

    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        *,
        namespace: str,
        name: str = "operator",
        extra_args: tuple[str, ...] = (),
        lease_duration: float = 15,
        ca_recovery_grace: float | None = None,
    ) -> None:
        super().__init__(
            kubeconfig, namespace=namespace, log_dir=log_dir, extra_args=extra_args, name=name
        )
        self.name = name
        self.lease_duration = lease_duration
        self.ca_recovery_grace = ca_recovery_grace
        self.starts = 0
        self._log_offset = 0
        self._supervisor: threading.Thread | None = None
        self._supervise = threading.Event()
        self.supervised_restarts = 0
        self.lives: list[list[float | None]] = []  # [started, ended] per process, wall clock
        self._lock = threading.Lock()

    def command(self, **_: Any) -> list[str]:
        extra = []
        if self.ca_recovery_grace is not None:
            extra.append(f"--ca-recovery-grace={self.ca_recovery_grace:g}s")
        return super().command(lease_duration=self.lease_duration, extra=extra)

    def start(self) -> Operator:
        with self._lock:
            if self.running:
                return self
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            log = self.log_path.open("ab")
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            overlay = os.environ.get("TW_RELIABILITY_OPERATOR_PYTHONPATH")
            if overlay:  # developer knob: run the suite against a patched copy of the operator
                env["PYTHONPATH"] = overlay
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )
            log.close()
            self.starts += 1
            self.lives.append([time.time(), None])
        return self

    def _ended(self) -> None:
        if self.lives and self.lives[-1][1] is None:
            self.lives[-1][1] = time.time()

    def reconciling(self) -> list[tuple[float, float | None]]:
        """(from, until) wall-clock intervals in which a process of this replica led and had
        its caches: from its `starting reconciliation` log line to its end."""
        starts = [
            datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC).timestamp()
            for m in re.finditer(
                r"^(\S+ \S+) INFO trustwarden: starting reconciliation", self.log(), re.M
            )
        ]
        out = []
        for begin, end in self.lives:
            assert begin is not None
            led = [t for t in starts if t >= begin and (end is None or t < end)]
            if led:
                out.append((led[0], end))
        return out

    def log(self, *, current_run_only: bool = False) -> str:
        try:
            with self.log_path.open("rb") as handle:
                if current_run_only:
                    handle.seek(self._log_offset)
                return handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_leading(self, timeout: float = 60) -> Operator:  # type: ignore[override]
        def probe() -> bool:
            if not self.running:
                raise AssertionError(f"{self.identity} exited:\n{self.log()[-2000:]}")
            return "starting reconciliation" in self.log(current_run_only=True)

        wait_for(probe, timeout=timeout, what=f"{self.identity} to lead (log {self.log_path})")
        return self

    def wait_serving(self, timeout: float = 60) -> Operator:  # type: ignore[override]
        wait_for(
            lambda: self.running and self.metrics() is not None,
            timeout=timeout,
            what=f"{self.identity} to serve /metrics",
        )
        return self

    def counter(self, name: str) -> float:
        """Sum of every sample of a metric family (0 when absent)."""
        text = self.metrics() or ""
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def send(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        self.unsupervise()
        with self._lock:
            if self.process is None or self.process.poll() is not None:
                return
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self._ended()

    def kill(self) -> None:
        """SIGKILL without disabling supervision (a crash, not a shutdown)."""
        with self._lock:
            if self.process is not None and self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=10)
            self._ended()

    # A Deployment restarts an operator that exits (e.g. after losing its lease while the
    # API server was down). This does the same, bounded in count.
    def supervise(self, max_restarts: int = 20) -> Operator:
        self._supervise.set()

        def loop() -> None:
            while self._supervise.is_set() and self.supervised_restarts < max_restarts:
                process = self.process
                if process is not None and process.poll() is not None:
                    self._ended()
                    self.supervised_restarts += 1
                    time.sleep(1.0)  # kubelet-like restart delay
                    if self._supervise.is_set():
                        self.start()
                time.sleep(0.2)

        self._supervisor = threading.Thread(target=loop, name=f"supervise-{self.identity}")
        self._supervisor.daemon = True
        self._supervisor.start()
        return self

    def unsupervise(self) -> None:
        self._supervise.clear()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
            self._supervisor = None


# ----------------------------------------------------------------------------- pods


def pod_body(name: str, labels: dict[str, str], *, sa: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "serviceAccountName": sa,
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}],
        },
    }


@dataclass
class PodRef:
    namespace: str
    name: str
    uid: str
    secret_name: str
    attempts: int


@dataclass
class BurstStats:
    created: int = 0
    attempts: int = 0
    rejected_by_webhook: int = 0
    api_errors: int = 0
    deleted: int = 0
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class PodFactory:
    """Creates pods the way a controller does: retry (bounded) until the API admits them."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.core = client.CoreV1Api(cluster.api)
        self.pods: dict[str, PodRef] = {}
        self.stats = BurstStats()
        self._lock = threading.Lock()

    def create(
        self, name: str, labels: dict[str, str], *, deadline_s: float = 180, sa: str = "default"
    ) -> PodRef:
        deadline = time.monotonic() + deadline_s
        attempts = 0
        while True:
            attempts += 1
            try:
                pod = self.core.create_namespaced_pod(
                    self.namespace, pod_body(name, labels, sa=sa), _request_timeout=30
                )
                break
            except ApiException as exc:
                body = exc.body or ""
                if exc.status == 409:  # an earlier attempt went through after all
                    pod = self.core.read_namespaced_pod(name, self.namespace)
                    break
                with self._lock:
                    self.stats.attempts += 1
                    if "svid-injector.trustwarden.io" in str(body):
                        self.stats.rejected_by_webhook += 1
                    else:
                        self.stats.api_errors += 1
                    self.stats.errors[f"{exc.status}"] += 1
            except Exception as exc:  # connection refused / reset while the API restarts
                with self._lock:
                    self.stats.attempts += 1
                    self.stats.api_errors += 1
                    self.stats.errors[type(exc).__name__] += 1
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"pod {self.namespace}/{name} not admitted after {attempts} attempts"
                )
            time.sleep(min(2.0, 0.1 * attempts))
        annotations = pod.metadata.annotations or {}
        ref = PodRef(
            self.namespace,
            name,
            pod.metadata.uid,
            str(annotations.get("trustwarden.io/secret", "")),
            attempts,
        )
        with self._lock:
            self.pods[name] = ref
            self.stats.created += 1
            self.stats.attempts += 1
        return ref

    def delete(self, name: str, *, deadline_s: float = 120) -> None:
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                self.core.delete_namespaced_pod(
                    name, self.namespace, grace_period_seconds=0, _request_timeout=30
                )
                break
            except ApiException as exc:
                if exc.status == 404:
                    break
                if time.monotonic() > deadline:
                    raise
            except Exception:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.3)
        with self._lock:
            self.stats.deleted += 1


def run_paced(
    actions: list[Callable[[], object]], *, duration: float, workers: int = 4
) -> list[object]:
    """Start `actions` evenly spread over `duration` seconds on a small pool; returns results
    (re-raising the first failure)."""
    start = time.monotonic()
    interval = duration / max(1, len(actions))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = []
        for index, action in enumerate(actions):
            target = start + index * interval
            while time.monotonic() < target:
                time.sleep(max(0.0, min(0.05, target - time.monotonic())))
            futures.append(pool.submit(action))
        return [f.result() for f in futures]


# ----------------------------------------------------------------------------- the recorder


@dataclass
class Seen:
    serial: int
    trust_domain: str | None
    not_after: float
    secret: tuple[str, str]
    key_pem: bytes


class SecretRecorder:
    """Watches every trustwarden-managed Secret (admin identity, cluster-wide, label-filtered)
    and remembers every serial and key it ever saw, per owner uid. Survives API restarts by
    listing again. Stop it with stop()."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.core = client.CoreV1Api(cluster.api)
        self.by_owner: dict[str, dict[int, Seen]] = defaultdict(dict)
        self.keys: dict[bytes, bytes] = {}  # SPKI DER -> private key PEM
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="secret-recorder", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> SecretRecorder:
        self._thread.start()
        wait_for(lambda: self.reconnects > 0, timeout=30, what="the recorder's first listing")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=70)

    def _record(self, secret: Any) -> None:
        data = secret.data or {}
        if not data.get("tls.crt"):
            return
        try:
            chain = base64.b64decode(data["tls.crt"])
            leaf = x509.load_pem_x509_certificates(chain)[0]
            key_pem = base64.b64decode(data.get("tls.key") or "")
        except (ValueError, KeyError):
            return
        annotations = secret.metadata.annotations or {}
        owners = [o.uid for o in secret.metadata.owner_references or ()]
        seen = Seen(
            serial=int(leaf.serial_number),
            trust_domain=annotations.get("trustwarden.io/trust-domain"),
            not_after=leaf.not_valid_after_utc.timestamp(),
            secret=(secret.metadata.namespace, secret.metadata.name),
            key_pem=key_pem,
        )
        spki = leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        with self._lock:
            for uid in owners:
                self.by_owner[uid].setdefault(seen.serial, seen)
            if key_pem:
                self.keys[spki] = key_pem

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listing = self.core.list_secret_for_all_namespaces(
                    label_selector=MANAGED, _request_timeout=30
                )
                for item in listing.items:
                    self._record(item)
                self.reconnects += 1
                stream = watch.Watch().stream(
                    self.core.list_secret_for_all_namespaces,
                    label_selector=MANAGED,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=5,
                    _request_timeout=30,
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._record(event["object"])
            except Exception:  # the API is restarting: list again
                time.sleep(0.5)

    def serials_of(self, uid: str) -> dict[int, Seen]:
        with self._lock:
            return dict(self.by_owner.get(uid, {}))

    def all_keys(self) -> list[bytes]:
        with self._lock:
            return list(self.keys.values())


# ----------------------------------------------------------------------------- results


@dataclass
class Results:
    """Measured figures per scenario and per hostile case, for docs/reliability.md."""

    path: Path
    scenarios: dict[str, dict[str, Any]] = field(default_factory=dict)
    hostile: list[dict[str, Any]] = field(default_factory=list)

    def scenario(self, name: str, **figures: Any) -> None:
        self.scenarios.setdefault(name, {}).update(figures)
        self.write()

    def case(self, **row: Any) -> None:
        self.hostile.append(row)
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(
            json.dumps({"scenarios": self.scenarios, "hostile": self.hostile}, indent=2)
        )


def log_waits(text: str) -> list[tuple[int, float]]:
    """(status, seconds) of every `API answered N; retrying in Xs` line of the gateway."""
    return [
        (int(m.group(1)), float(m.group(2)))
        for m in re.finditer(r"API answered (\d+); retrying in ([0-9.]+)s", text)
    ]


def flatten(items: Iterable[Iterable[str]]) -> list[str]:
    return [x for group in items for x in group]
