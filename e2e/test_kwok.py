"""Per-pod identities on simulated Nodes (kwok): pods that run, drain and go as with a kubelet.

- a pod on a kwok Node becomes Running and gets its SVID;
- a terminating pod keeps its certificate while it drains; it is revoked once the pod is gone;
- deleting a Node: the pod garbage collector removes its pods, and every one is revoked.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from cryptography import x509
from kubernetes.client import V1Pod
from kubernetes.client.rest import ApiException

from e2e.kwok import create_node, delete_node, ensure_kwok, node_ready, pod_on_node
from e2e.operator import OperatorProcess
from e2e.support import (
    Cluster,
    apply_identity,
    bundle_data,
    get_wid,
    secret_data,
    serial_of,
    trust_domain,
    wait_condition,
    wait_for,
)

APP = {"app": "kwok-web"}


@pytest.fixture(scope="module")
def kwok(cluster: Cluster) -> Cluster:
    ensure_kwok(cluster)
    return cluster


@pytest.fixture
def node(kwok: Cluster) -> Iterator[str]:
    name = f"kwok-{uuid.uuid4().hex[:8]}"
    create_node(kwok, name)
    wait_for(lambda: node_ready(kwok, name), timeout=60, what=f"kwok Node {name} Ready")
    yield name
    delete_node(kwok, name)


@pytest.fixture
def world(kwok: Cluster, operator: OperatorProcess) -> Iterator[tuple[str, str]]:
    """(namespace, SPIFFE trust domain) with a PerPod identity selecting app=kwok-web."""
    with (
        trust_domain(kwok) as (td, spiffe_domain),
        kwok.namespace(prefix="tw-kwok", labels={"trustwarden.io/inject": "enabled"}) as ns,
    ):
        apply_identity(kwok, ns, "web", td, podSelector={"matchLabels": APP}, ttl="1h")
        wait_condition(lambda: get_wid(kwok, ns, "web"), "Ready", "True", timeout=60)
        yield ns, spiffe_domain


def revoked_serials(cluster: Cluster, namespace: str, spiffe_domain: str) -> set[int]:
    pem = (bundle_data(cluster, namespace) or {}).get(f"{spiffe_domain}.crl.pem")
    if not pem:
        return set()
    crl = x509.load_pem_x509_crl(pem.encode())
    return {entry.serial_number for entry in crl}


def read_pod(cluster: Cluster, namespace: str, name: str) -> V1Pod | None:
    try:
        return cluster.core.read_namespaced_pod(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def pod_exists(cluster: Cluster, namespace: str, name: str) -> bool:
    return read_pod(cluster, namespace, name) is not None


def running_with_secret(cluster: Cluster, namespace: str, name: str) -> tuple[str, int] | None:
    pod = cluster.core.read_namespaced_pod(name, namespace)
    if pod.status.phase != "Running":
        return None
    secret_name = pod.metadata.annotations["trustwarden.io/secret"]
    data = secret_data(cluster, namespace, secret_name)
    return (secret_name, serial_of(data["tls.crt"])) if data else None


def test_a_pod_on_a_kwok_node_runs_and_gets_its_svid(
    kwok: Cluster, node: str, world: tuple[str, str]
) -> None:
    ns, _ = world
    for i in range(3):
        kwok.core.create_namespaced_pod(ns, pod_on_node(f"web-{i}", node, APP))
    served = [
        wait_for(
            lambda i=i: running_with_secret(kwok, ns, f"web-{i}"),
            timeout=60,
            what=f"pod web-{i} Running with its Secret",
        )
        for i in range(3)
    ]
    assert len({serial for _, serial in served}) == 3


def test_a_draining_pod_keeps_its_certificate_until_it_is_gone(
    kwok: Cluster, node: str, world: tuple[str, str]
) -> None:
    ns, spiffe_domain = world
    kwok.core.create_namespaced_pod(ns, pod_on_node("drain", node, APP, grace_seconds=8))
    secret_name, serial = wait_for(
        lambda: running_with_secret(kwok, ns, "drain"), timeout=60, what="pod drain served"
    )
    kwok.core.delete_namespaced_pod("drain", ns)  # graceful: kwok removes it after 8 s
    observed_draining = 0
    while (pod := read_pod(kwok, ns, "drain")) is not None:
        time.sleep(0.2)  # poll interval while kwok holds the pod for its grace period
        if pod.metadata.deletion_timestamp is None:
            continue
        # read the pod again after the checks: they count only if it was still draining
        present = secret_data(kwok, ns, secret_name) is not None
        revoked = serial in revoked_serials(kwok, ns, spiffe_domain)
        if pod_exists(kwok, ns, "drain"):
            assert present, "the Secret went while the pod still drained"
            assert not revoked, "the serial was revoked while the pod still drained"
            observed_draining += 1
    assert observed_draining > 0, "never saw the pod terminating"
    wait_for(
        lambda: serial in revoked_serials(kwok, ns, spiffe_domain),
        timeout=60,
        what="the serial in the CRL once the pod is gone",
    )
    wait_for(
        lambda: secret_data(kwok, ns, secret_name) is None,
        timeout=60,
        what="the Secret to go once the pod is gone",
    )


def test_a_deleted_nodes_pods_are_all_revoked(
    kwok: Cluster, node: str, world: tuple[str, str]
) -> None:
    ns, spiffe_domain = world
    names = [f"lost-{i}" for i in range(5)]
    for name in names:
        kwok.core.create_namespaced_pod(ns, pod_on_node(name, node, APP))
    served = {
        name: wait_for(
            lambda name=name: running_with_secret(kwok, ns, name),
            timeout=60,
            what=f"pod {name} served",
        )
        for name in names
    }
    delete_node(kwok, node)
    # the pod garbage collector removes pods bound to a Node that no longer exists (after its
    # quarantine of about 40 s)
    wait_for(
        lambda: not any(pod_exists(kwok, ns, name) for name in names),
        timeout=180,
        interval=1,
        what="the pod garbage collector to remove the lost Node's pods",
    )
    serials = {serial for _, serial in served.values()}
    wait_for(
        lambda: serials <= revoked_serials(kwok, ns, spiffe_domain),
        timeout=60,
        what="every serial of the lost Node's pods in the CRL",
    )
    wait_for(
        lambda: all(secret_data(kwok, ns, s) is None for s, _ in served.values()),
        timeout=60,
        what="every Secret of the lost Node's pods to go",
    )
