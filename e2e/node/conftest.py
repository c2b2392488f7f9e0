"""The local node (hack/node-up.sh): started by the tests that need it, removed at the end."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.operator import OperatorProcess
from e2e.support import REPO, Cluster, trust_domain

# Run order inside the node suite, by `@pytest.mark.node_order(n)` (default DEFAULT_ORDER, then
# as collected). The in-cluster tests go first: they stop the suite's operator and run their
# own. A test that starts a long wait on the kubelet goes right after them, and the test that
# checks it goes last, so the other tests run during the wait.
DEFAULT_ORDER = 5
IN_CLUSTER_ORDER = 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent

    def order(item: pytest.Item) -> int:
        marker = item.get_closest_marker("node_order")
        if marker is not None:
            return int(marker.args[0])
        return IN_CLUSTER_ORDER if item.path.name == "test_in_cluster.py" else DEFAULT_ORDER

    # Only this directory's tests move, and only among the places they already hold.
    places = [i for i, item in enumerate(items) if here in item.path.parents]
    ranked = sorted((items[i] for i in places), key=order)  # stable within a rank
    for i, item in zip(places, ranked, strict=True):
        items[i] = item


@dataclass(frozen=True)
class Node:
    name: str
    images: dict[str, str]  # pause / operator / workload -> image reference in containerd


@pytest.fixture(scope="session")
def node(cluster: Cluster) -> Iterator[Node]:
    name = "trustwarden-node"
    env = {**os.environ, "CLUSTER_DIR": str(cluster.directory), "NODE_NAME": name}
    try:
        subprocess.run([str(REPO / "hack" / "node-up.sh")], check=True, env=env, timeout=1800)
        listing = (cluster.directory / "node" / "images").read_text()
        images = {}
        for line in listing.splitlines():
            key, _, rest = line.partition("=")
            images[key] = rest.split()[0]
        yield Node(name=name, images=images)
    finally:
        subprocess.run([str(REPO / "hack" / "node-down.sh")], check=True, env=env, timeout=300)


@pytest.fixture
def domain(cluster: Cluster, operator: OperatorProcess) -> Iterator[tuple[str, str]]:
    """A fresh TrustDomain (object name, SPIFFE trust domain) under the suite's operator."""
    with trust_domain(cluster) as created:
        yield created


def printed_spiffe_id(cluster: Cluster, namespace: str, pod: str) -> str | None:
    """The SPIFFE ID the workload image's `identity` mode printed (it prints once its chain
    verifies against its ca.crt and its key matches), or None while it has not."""
    out = cluster.kubectl("-n", namespace, "logs", pod, check=False).stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("SPIFFE ID: ")]
    return lines[0].removeprefix("SPIFFE ID: ") if lines else None
