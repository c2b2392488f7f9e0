"""Run `trustwarden run --local` as a separate process, exactly as a developer would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from e2e.support import REPO, wait_for

TRUSTWARDEN = str(Path(sys.executable).with_name("trustwarden"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_command(
    kubeconfig: Path,
    *,
    namespace: str,
    metrics_port: int,
    webhook_port: int,
    identity: str,
    lease_duration: float,
    extra_args: Sequence[str] = (),
    prefix: Sequence[str] = (TRUSTWARDEN,),
    local: bool = True,
) -> list[str]:
    """`trustwarden run --local` as the e2e suites and the benchmarks start it: their own
    ports, no health port. Without `local`, as the chart runs it (a webhook Service)."""
    return [
        *prefix,
        "run",
        *(["--local"] if local else []),
        "--kubeconfig",
        str(kubeconfig),
        "--namespace",
        namespace,
        "--metrics-port",
        str(metrics_port),
        "--health-port",
        "0",
        "--webhook-port",
        str(webhook_port),
        "--identity",
        identity,
        "--lease-duration",
        str(lease_duration),
        *extra_args,
    ]


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        *,
        namespace: str = "trustwarden-system",
        log_dir: Path | None = None,
        extra_args: tuple[str, ...] = (),
        name: str = "operator",
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.extra_args = extra_args
        self.metrics_port = free_port()
        self.webhook_port = free_port()
        self.log_path = (log_dir or REPO / ".cluster" / "logs") / f"{name}-{self.metrics_port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.identity = f"{name}-{self.metrics_port}"

    def command(
        self, *, lease_duration: float = 6, extra: Sequence[str] = (), local: bool = True
    ) -> list[str]:
        """This replica's command line: its ports and identity, then `extra`, then the
        extra_args it was made with."""
        return run_command(
            self.kubeconfig,
            namespace=self.namespace,
            metrics_port=self.metrics_port,
            webhook_port=self.webhook_port,
            identity=self.identity,
            lease_duration=lease_duration,
            extra_args=(*extra, *self.extra_args),
            local=local,
        )

    def start(self) -> OperatorProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        log.close()
        return self

    def wait_leading(self, timeout: float = 60) -> None:
        wait_for(
            lambda: self._check_alive() and "starting reconciliation" in self.log(),
            timeout=timeout,
            what=f"operator {self.identity} to start reconciling (log: {self.log_path})",
        )

    def wait_webhook(self, timeout: float = 60) -> None:
        """The webhook binds its port only after the caches are loaded, just after
        reconciliation starts; until then pod creation in injected namespaces is refused."""
        wait_for(
            lambda: self._check_alive() and "injection webhook listening" in self.log(),
            timeout=timeout,
            what=f"operator {self.identity} to serve its webhook (log: {self.log_path})",
        )

    def wait_serving(self, timeout: float = 60) -> None:
        wait_for(
            lambda: self._check_alive() and self.metrics() is not None,
            timeout=timeout,
            what=f"operator {self.identity} to serve metrics (log: {self.log_path})",
        )

    def _check_alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"operator exited with {self.process.returncode}; log:\n{self.log()[-3000:]}"
            )
        return True

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def metrics(self) -> str | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
            ) as response:
                return str(response.read().decode())
        except OSError:
            return None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def wait_gone(proc: OperatorProcess) -> None:
    deadline = time.monotonic() + 30
    while proc.running and time.monotonic() < deadline:
        time.sleep(0.1)
