"""e2e fixtures: a real local control plane (started or reused) and a namespace per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

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
