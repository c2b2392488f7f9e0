"""The measured controllers as separate processes: `trustwarden run --local` and the
cert-manager controller, each authenticating with its own ServiceAccount token."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from e2e.operator import free_port, run_command

PY_SPY = str(Path(sys.executable).with_name("py-spy"))


class Process:
    name = "process"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.started_at = time.time()
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, needle: str, timeout: float, *, after: int = 0) -> float:
        """Wait for `needle` in the log (past byte `after`); returns the time it was seen."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise RuntimeError(f"{self.name} exited; log tail:\n{self.log()[-3000:]}")
            if needle in self.log()[after:]:
                return time.time()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no '{needle}' after {timeout:.0f}s")
            time.sleep(0.05)

    def stop(self, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


class Operator(Process):
    name = "trustwarden"

    def __init__(self, kubeconfig: Path, namespace: str, log_path: Path) -> None:
        super().__init__(log_path)
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.metrics_port = free_port()

    def start(self) -> Operator:
        self._spawn(
            run_command(
                self.kubeconfig,
                namespace=self.namespace,
                metrics_port=self.metrics_port,
                webhook_port=free_port(),
                identity=f"bench-{self.metrics_port}",
                lease_duration=15,  # the CLI's default
            ),
            {"PYTHONUNBUFFERED": "1"},
        )
        return self

    def wait_leading(self, timeout: float = 120, after: int = 0) -> float:
        return self.wait_log("starting reconciliation", timeout, after=after)


class CertManager(Process):
    name = "cert-manager"

    def __init__(self, binary: Path, kubeconfig: Path, log_path: Path) -> None:
        super().__init__(log_path)
        self.binary = binary
        self.kubeconfig = kubeconfig

    def start(self) -> CertManager:
        self._spawn(
            [
                str(self.binary),
                "--kubeconfig",
                str(self.kubeconfig),
                "--cluster-resource-namespace",
                "cert-manager",
                "--leader-elect=false",
                "--v=1",
            ]
        )
        return self


class Profiler:
    """py-spy sampling the operator at 100 Hz without pausing it (--nonblocking); raw
    collapsed stacks, one line per distinct stack with its sample count."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.process: subprocess.Popen[bytes] | None = None
        self.error: str | None = None
        if not Path(PY_SPY).exists() and shutil.which("py-spy") is None:
            self.error = "py-spy is not installed (pip install -e '.[bench]')"
            return
        exe = PY_SPY if Path(PY_SPY).exists() else str(shutil.which("py-spy"))
        self.log = out.with_suffix(".log")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    "100",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> Path | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if not self.out.exists():
            self.error = f"py-spy wrote no profile: {self.log.read_text()[-500:]}"
            return None
        return self.out
