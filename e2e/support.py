"""Shared e2e helpers: the local control plane, per-test namespaces, waiting on conditions."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from kubernetes import client, config
from kubernetes.client.rest import ApiException

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def pinned_versions() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "hack" / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            pins[key.strip()] = value.strip()
    return pins


def cache_root() -> Path:
    return Path(os.environ.get("TRUSTWARDEN_CACHE", Path.home() / ".cache" / "trustwarden"))


def kubectl_path() -> str:
    return os.environ.get("TRUSTWARDEN_KUBECTL") or str(
        cache_root() / "kubernetes" / pinned_versions()["KUBE_VERSION"] / "kubectl"
    )


def helm_path() -> str:
    return os.environ.get("TRUSTWARDEN_HELM") or str(
        cache_root() / "helm" / pinned_versions()["HELM_VERSION"] / "helm"
    )


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except AssertionError as exc:  # a probe may assert to explain what it is waiting for
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last: {last_error})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def gone(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


@dataclass
class Cluster:
    """A running local control plane, reached through its admin kubeconfig."""

    directory: Path
    kubeconfig: Path
    api: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def kubectl(
        self, *args: str, check: bool = True, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [kubectl_path(), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            input=input_text,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    @contextmanager
    def namespace(
        self, prefix: str = "tw-e2e", labels: dict[str, str] | None = None
    ) -> Iterator[str]:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels or {}))
        )
        try:
            yield name
        finally:
            try:
                self.core.delete_namespace(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def ensure_cluster(directory: Path) -> tuple[Cluster, bool]:
    """Start the control plane with hack/cluster-up.sh, or reuse a healthy one.

    Returns the cluster and whether this call started it (so the caller knows to stop it).
    """
    kubeconfig = directory / "kubeconfig"
    already_up = kubeconfig.exists() and _ready(kubeconfig)
    if not already_up:
        env = {**os.environ, "CLUSTER_DIR": str(directory)}
        subprocess.run([str(REPO / "hack" / "cluster-up.sh")], check=True, env=env)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    return Cluster(directory=directory, kubeconfig=kubeconfig, api=api), not already_up


def stop_cluster(directory: Path) -> None:
    env = {**os.environ, "CLUSTER_DIR": str(directory)}
    subprocess.run([str(REPO / "hack" / "cluster-down.sh")], check=True, env=env)


def _ready(kubeconfig: Path) -> bool:
    result = subprocess.run(
        [
            kubectl_path(),
            "--kubeconfig",
            str(kubeconfig),
            "--request-timeout=5s",
            "get",
            "--raw",
            "/readyz",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode == 0 and result.stdout.strip() == "ok"
