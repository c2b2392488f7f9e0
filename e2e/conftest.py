"""e2e fixtures: a real local control plane (started or reused) and a namespace per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.operator import OperatorProcess
from e2e.support import REPO, Cluster, ensure_cluster, stop_cluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    directory = Path(os.environ.get("CLUSTER_DIR", REPO / ".cluster"))
    running, started_here = ensure_cluster(directory)
    yield running
    # Stop only a cluster this session started, unless asked to keep it for a faster next run.
    if started_here and not os.environ.get("TRUSTWARDEN_KEEP_CLUSTER"):
        stop_cluster(directory)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    with cluster.namespace() as name:
        yield name


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "deploy" / "crds")
    )
    for crd in ("trustdomains.trustwarden.io", "workloadidentities.trustwarden.io"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")


class OperatorSlot:
    """The one operator the suite runs; tests that restart it go through here."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.current: OperatorProcess | None = None

    def start(self, *extra_args: str) -> OperatorProcess:
        self.stop()
        self.current = OperatorProcess(self.cluster.kubeconfig, extra_args=extra_args).start()
        self.current.wait_leading()
        self.current.wait_webhook()
        return self.current

    def ensure(self) -> OperatorProcess:
        if self.current is None or not self.current.running:
            return self.start()
        return self.current

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None


@pytest.fixture(scope="session")
def operator_slot(cluster: Cluster, crds: None) -> Iterator[OperatorSlot]:
    slot = OperatorSlot(cluster)
    yield slot
    slot.stop()


@pytest.fixture
def operator(operator_slot: OperatorSlot) -> OperatorProcess:
    return operator_slot.ensure()
