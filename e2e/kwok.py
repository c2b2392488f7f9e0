"""Simulated Nodes for e2e cases that need a kubelet's pod lifecycle: kwok (hack/kwok-up.sh)
makes pods bound to a fake Node Running, and removes a deleted pod when its grace period ends."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from kubernetes.client.rest import ApiException

from e2e.support import REPO, Cluster

FAKE_NODE = {"kwok.x-k8s.io/node": "fake"}
TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}


def ensure_kwok(cluster: Cluster) -> None:
    env = {**os.environ, "CLUSTER_DIR": str(cluster.directory)}
    subprocess.run([str(REPO / "hack" / "kwok-up.sh")], check=True, env=env, timeout=600)


def create_node(cluster: Cluster, name: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "annotations": FAKE_NODE, "labels": {"type": "kwok"}},
        "spec": {
            "taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]
        },
    }
    cluster.core.create_node(body)


def delete_node(cluster: Cluster, name: str) -> None:
    try:
        cluster.core.delete_node(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def node_ready(cluster: Cluster, name: str) -> bool:
    node = cluster.core.read_node(name)
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or ())


def pod_on_node(
    name: str, node: str, labels: dict[str, str], *, grace_seconds: int = 1
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeName": node,
            "tolerations": [TOLERATION],
            "terminationGracePeriodSeconds": grace_seconds,
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
        },
    }
