"""The local node (hack/node-up.sh): started by the tests that need it, removed at the end."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from e2e.operator import OperatorProcess
from e2e.support import REPO, Cluster, trust_domain


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
