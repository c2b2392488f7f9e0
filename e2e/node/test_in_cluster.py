"""The operator as users run it: `helm install` of the chart with the image built from the
project's Dockerfile, two replicas in-cluster on two real kubelets, with their real
ServiceAccount token and leader election; workloads on both nodes mounting what the in-cluster
leader issued; then the leader's container killed, `helm upgrade`, and `helm uninstall`.

Loopback only: the second node's kubelet has InternalIP 127.0.0.2, the chart runs the operator
with `hostNetwork: true`, and each replica binds its pod IP (`--bind-address`), so the two
replicas' ports never collide.

What this host cannot do: the API server cannot call the webhook through the chart's Service.
Kubernetes refuses loopback endpoint addresses ("may not be in the loopback range
(127.0.0.0/8, ::1/128)", from the EndpointSlice and Endpoints controllers), so the Service has
no endpoints, and its ClusterIP is a private range this machine must never send to. So the
workload namespace here is not selected by the release's webhook (pods mount a Shared
identity's Secret), and the tests call each replica's webhook port themselves, exactly as the
API server would: TLS verified against the configuration's caBundle for the Service's DNS
name, an AdmissionReview in, a patch out.

The suite's own operator (a local process) is stopped first: two operators would reconcile the
same TrustDomains.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.conftest import OperatorSlot
from e2e.node.conftest import Node, printed_spiffe_id
from e2e.support import (
    REPO,
    Cluster,
    apply_identity,
    cache_root,
    get_wid,
    pinned_versions,
    serial_of,
    trust_domain,
    wait_condition,
    wait_for,
)
from e2e.test_helm import (
    CHART,
    INSTANCE,
    LEASE,
    helm,
    leftovers,
    release_name,
    remove_stale_webhooks,
    require_sole_operator,
    scope_args,
)

SVID_VOLUME = "trustwarden-svid"
SECOND_NODE = "trustwarden-node-b"
SECOND_NODE_IP = "127.0.0.2"
LEASE_SECONDS = 10


@dataclass
class Release:
    name: str
    namespace: str
    workload_ns: str
    td_object: str
    td_name: str
    values: list[str]
    webhook_port: int
    node_dirs: dict[str, str] = field(default_factory=dict)  # node name -> NODE_DIR

    @property
    def selector(self) -> str:
        return f"{INSTANCE}={self.name},app.kubernetes.io/component=operator"


def _free_port_on(*addresses: str) -> int:
    """A port free on every one of `addresses` (both replicas use the same chart ports)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port = probe.getsockname()[1]
        try:
            for address in addresses:
                with socket.socket() as other:
                    other.bind((address, port))
        except OSError:
            continue
        return port
    raise AssertionError(f"no port free on all of {addresses}")


@pytest.fixture(scope="module")
def second_node(cluster: Cluster, node: Node) -> Iterator[str]:
    env = {
        **os.environ,
        "CLUSTER_DIR": str(cluster.directory),
        "NODE_DIR": str(cluster.directory / "node-b"),
        "NODE_NAME": SECOND_NODE,
        "NODE_IP": SECOND_NODE_IP,
        "NODE_SCHEDULER": "0",  # the first node's kube-scheduler serves both
        "NODE_IMAGES": "pause operator workload",
    }
    try:
        subprocess.run([str(REPO / "hack" / "node-up.sh")], check=True, env=env, timeout=900)
        yield SECOND_NODE
    finally:
        subprocess.run([str(REPO / "hack" / "node-down.sh")], check=True, env=env, timeout=300)


def _operator_pods(cluster: Cluster, release: Release) -> list[client.V1Pod]:
    return list(
        cluster.core.list_namespaced_pod(release.namespace, label_selector=release.selector).items
    )


def _ready(pod: client.V1Pod) -> bool:
    if pod.metadata.deletion_timestamp or pod.status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ())


def _ready_pods(cluster: Cluster, release: Release, count: int = 2) -> list[client.V1Pod]:
    def ready() -> list[client.V1Pod] | None:
        pods = _operator_pods(cluster, release)
        return pods if len(pods) == count and all(_ready(p) for p in pods) else None

    return wait_for(ready, timeout=240, what=f"{count} Ready operator replicas of {release.name}")


def _holder(cluster: Cluster, release: Release) -> str:
    lease = client.CoordinationV1Api(cluster.api).read_namespaced_lease(LEASE, release.namespace)
    return lease.spec.holder_identity or ""


def _pod_body(name: str, namespace: str, image: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "hostNetwork": True,
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {"name": "app", "image": image, "imagePullPolicy": "Never", "args": ["identity"]}
            ],
        },
    }


def _shared_workload(cluster: Cluster, release: Release, node: Node, name: str) -> set[str]:
    """A Shared identity and a 2-replica Deployment mounting its Secret (one pod per node):
    each pod must print the identity's SPIFFE ID. Returns the nodes the pods ran on."""
    ns = release.workload_ns
    apply_identity(
        cluster,
        ns,
        name,
        release.td_object,
        delivery={"mode": "Shared", "secretName": f"{name}-svid"},
        serviceAccountName="default",
        ttl="1h",
    )
    wait_condition(lambda: get_wid(cluster, ns, name), "Ready", "True", timeout=120)
    template = _pod_body(name, ns, node.images["workload"], {"app": name})
    spec = template["spec"]
    spec["volumes"] = [{"name": "svid", "secret": {"secretName": f"{name}-svid"}}]
    spec["containers"][0]["volumeMounts"] = [
        {"name": "svid", "mountPath": "/var/run/secrets/trustwarden.io", "readOnly": True}
    ]
    # hostNetwork pods declare no ports, so spread them explicitly: one per node.
    spec["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": name}},
        }
    ]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }
    cluster.kubectl("apply", "-f", "-", input_text=json.dumps(deployment))

    def running() -> list[client.V1Pod] | None:
        pods = cluster.core.list_namespaced_pod(ns, label_selector=f"app={name}").items
        up = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
        return up if len(up) == 2 else None

    pods = wait_for(running, timeout=240, what=f"2 {name} pods Running")
    expected = f"spiffe://{release.td_name}/ns/{ns}/sa/default"
    for pod in pods:
        printed = wait_for(
            lambda pod=pod: printed_spiffe_id(cluster, ns, pod.metadata.name),
            timeout=120,
            what=f"{pod.metadata.name} printing its SPIFFE ID",
        )
        assert printed == expected
    return {str(p.spec.node_name) for p in pods}


def _webhook_ca(cluster: Cluster, release: Release) -> tuple[bytes, str]:
    """The caBundle the API server would verify the webhook with, and the Service DNS name."""
    admission = client.AdmissionregistrationV1Api(cluster.api)
    config = admission.read_mutating_webhook_configuration(f"{release.name}-trustwarden-webhook")
    (hook,) = config.webhooks
    service = hook.client_config.service
    assert hook.client_config.url is None and service.namespace == release.namespace
    ca = hook.client_config.ca_bundle
    ca_pem = base64.b64decode(ca) if isinstance(ca, str) else ca
    return ca_pem, f"{service.name}.{service.namespace}.svc"


def _review(address: str, port: int, ca_pem: bytes, hostname: str, namespace: str) -> list[Any]:
    """POST one pod-CREATE AdmissionReview to a replica's webhook, as the API server does
    (TLS verified against the caBundle for the Service name); returns the JSON patch."""
    pod = _pod_body(f"review-{uuid.uuid4().hex[:6]}", namespace, "unused", {"app": "probe"})
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "object": pod,
            "userInfo": {"username": "e2e"},
        },
    }
    context = ssl.create_default_context(cadata=ca_pem.decode())
    raw = socket.create_connection((address, port), timeout=10)
    connection = http.client.HTTPSConnection(address, port, timeout=10)
    connection.sock = context.wrap_socket(raw, server_hostname=hostname)
    try:
        connection.request(
            "POST", "/inject-svid", json.dumps(review), {"Content-Type": "application/json"}
        )
        answer = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    response = answer["response"]
    assert response["allowed"], response
    patch: list[Any] = json.loads(base64.b64decode(response.get("patch") or "W10="))
    return patch


def _injects(patch: list[Any]) -> bool:
    """Whether a JSON patch adds the SVID volume (alone, or in a new volumes list)."""
    for op in patch:
        value = op.get("value")
        added = value if isinstance(value, list) else [value]
        if op.get("op") == "add" and any(
            isinstance(v, dict) and v.get("name") == SVID_VOLUME for v in added
        ):
            return True
    return False


@pytest.fixture(scope="module")
def release(
    cluster: Cluster, node: Node, second_node: str, operator_slot: OperatorSlot
) -> Iterator[Release]:
    require_sole_operator(cluster, operator_slot)
    remove_stale_webhooks(cluster)  # a stopped local operator's URL webhook fails closed
    name = release_name("twn")
    namespace = f"{name}-system"
    repository, _, tag = node.images["operator"].rpartition(":")
    api_port = str(urlparse(cluster.api.configuration.host).port)
    webhook_port, metrics_port, health_port = (
        _free_port_on("127.0.0.1", SECOND_NODE_IP) for _ in range(3)
    )
    extra_env = [
        {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": api_port},
    ]
    values = [
        *scope_args(name),  # the API server cannot reach it here: it selects no namespace
        "--set", "crds.enabled=false",  # the suite applied them with kubectl
        "--set", f"image.repository={repository}",
        "--set", f"image.tag={tag}",
        "--set", "image.pullPolicy=Never",
        "--set", "replicaCount=2",
        "--set", "hostNetwork=true",
        "--set", f"operator.leaseDuration={LEASE_SECONDS}",
        "--set", f"webhook.port={webhook_port}",
        "--set", f"metrics.port={metrics_port}",
        "--set", f"healthPort={health_port}",
        "--set", "propagationDelay=20s",
        "--set-json", f"operator.extraEnv={json.dumps(extra_env)}",
    ]  # fmt: skip
    with (
        trust_domain(cluster) as (td_object, td_name),
        # Opted in (the operator's webhook logic injects here) but not selected by the release's
        # webhook configuration, which lacks the scope label.
        cluster.namespace(
            prefix="tw-incluster", labels={"trustwarden.io/inject": "enabled"}
        ) as workload_ns,
    ):
        helm(
            cluster, "install", name, str(CHART), "--namespace", namespace,
            "--create-namespace", *values, timeout=300,
        )  # fmt: skip
        made = Release(
            name=name,
            namespace=namespace,
            workload_ns=workload_ns,
            td_object=td_object,
            td_name=td_name,
            values=values,
            webhook_port=webhook_port,
            node_dirs={
                node.name: str(cluster.directory / "node"),
                second_node: str(cluster.directory / "node-b"),
            },
        )
        try:
            yield made
        finally:
            _cleanup(cluster, made)


def _cleanup(cluster: Cluster, release: Release) -> None:
    """Workloads first (the operator revokes and releases their Secrets), then the release,
    then whatever the uninstall test left on purpose."""
    cluster.kubectl(
        "-n", release.workload_ns, "delete", "deployments,workloadidentities", "--all",
        "--wait=false", check=False,
    )  # fmt: skip
    helm(cluster, "uninstall", release.name, "--namespace", release.namespace, check=False)
    # Secrets the operator did not get to: drop the revoke finalizer (docs/install.md, 9.).
    for secret in cluster.core.list_namespaced_secret(release.workload_ns).items:
        if secret.metadata.finalizers:
            cluster.core.patch_namespaced_secret(
                secret.metadata.name, release.workload_ns, {"metadata": {"finalizers": None}}
            )
    try:
        cluster.core.delete_namespace(release.namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise


def test_helm_installs_two_in_cluster_replicas_that_issue_and_serve_the_webhook(
    cluster: Cluster, node: Node, release: Release
) -> None:
    pods = _ready_pods(cluster, release)
    # One replica per node (their host ports keep them apart), each with its node's address.
    assert {p.spec.node_name for p in pods} == set(release.node_dirs)
    assert {p.status.pod_ip for p in pods} == {"127.0.0.1", SECOND_NODE_IP}
    for pod in pods:
        # In-cluster as the chart's ServiceAccount, with the kubelet's projected (rotating)
        # token and no other credential in the pod.
        assert pod.spec.service_account_name == f"{release.name}-trustwarden"
        projected = [v for v in pod.spec.volumes if v.projected is not None]
        sources = [s.service_account_token for v in projected for s in v.projected.sources]
        assert any(s is not None and s.expiration_seconds for s in sources), pod.spec.volumes
        assert not any(v.secret is not None for v in pod.spec.volumes)
    # Leader election: one holder, named after one of the two pods.
    holder = wait_for(lambda: _holder(cluster, release) or None, timeout=60, what="a leader")
    assert sum(holder.startswith(p.metadata.name + "-") for p in pods) == 1, holder
    # What the in-cluster leader issues, real pods on both nodes mount and present.
    assert _shared_workload(cluster, release, node, "first") == set(release.node_dirs)
    # Both replicas serve the webhook with the shared serving certificate the configuration's
    # caBundle names, for the Service's DNS name; both inject the SVID volume.
    apply_identity(
        cluster,
        release.workload_ns,
        "probe",
        release.td_object,
        podSelector={"matchLabels": {"app": "probe"}},
        spiffeID="/ns/{namespace}/sa/{serviceAccount}/pod/{pod.name}",
        ttl="1h",
    )
    wait_condition(
        lambda: get_wid(cluster, release.workload_ns, "probe"), "Ready", "True", timeout=90
    )
    ca_pem, hostname = wait_for(
        lambda: (found := _webhook_ca(cluster, release))[0] and found,
        timeout=60,
        what="the webhook caBundle",
    )
    for pod in pods:
        patch = wait_for(
            lambda pod=pod: (
                _injects(
                    p := _review(
                        pod.status.pod_ip,
                        release.webhook_port,
                        ca_pem,
                        hostname,
                        release.workload_ns,
                    )
                )
                and p
            ),
            timeout=60,
            what=f"{pod.metadata.name} injecting the SVID volume",
        )
        assert patch


def _kill_container(release: Release, pod: client.V1Pod) -> None:
    """SIGKILL the operator container through the containerd of the pod's node."""
    container_id = pod.status.container_statuses[0].container_id.removeprefix("containerd://")
    ctr = cache_root() / "containerd" / pinned_versions()["CONTAINERD_VERSION"] / "ctr"
    sock = f"{release.node_dirs[pod.spec.node_name]}/containerd/containerd.sock"
    subprocess.run(
        [str(ctr), "--address", sock, "-n", "k8s.io", "tasks", "kill", "-s", "KILL", container_id],
        check=True,
        capture_output=True,
        timeout=30,
    )


class AdmissionProbe:
    """Admission reviews to every replica, each about every half second, as the API server
    would send them: every answer must inject the SVID volume. A replica that is down does not
    answer (the API server then tries an endpoint that does); none may answer without it."""

    def __init__(self, cluster: Cluster, release: Release, addresses: list[str]) -> None:
        self.ca_pem, self.hostname = _webhook_ca(cluster, release)
        self.release, self.addresses = release, addresses
        self.answered: dict[str, int] = dict.fromkeys(addresses, 0)
        self.unreachable: dict[str, int] = dict.fromkeys(addresses, 0)
        self.without_volume: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> AdmissionProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for address in self.addresses:
                try:
                    patch = _review(
                        address,
                        self.release.webhook_port,
                        self.ca_pem,
                        self.hostname,
                        self.release.workload_ns,
                    )
                except OSError:
                    self.unreachable[address] += 1
                    continue
                self.answered[address] += 1
                if not _injects(patch):
                    self.without_volume.append(f"{address}: {patch}")


def test_a_killed_leader_container_restarts_and_the_lease_moves_with_no_pod_admitted_bare(
    cluster: Cluster, node: Node, release: Release
) -> None:
    pods = _ready_pods(cluster, release)
    holder = wait_for(lambda: _holder(cluster, release) or None, timeout=60, what="a leader")
    (leader,) = [p for p in pods if holder.startswith(p.metadata.name + "-")]
    restarts = leader.status.container_statuses[0].restart_count
    addresses = [p.status.pod_ip for p in pods]
    with AdmissionProbe(cluster, release, addresses) as probe:
        _kill_container(release, leader)

        def restarted() -> bool:
            pod = cluster.core.read_namespaced_pod(leader.metadata.name, release.namespace)
            return pod.status.container_statuses[0].restart_count > restarts

        wait_for(restarted, timeout=120, what=f"the kubelet restarting {leader.metadata.name}")
        # A SIGKILLed leader never releases its Lease: another candidate takes it once it
        # expires (the standby, or the restarted container under a new identity).
        new_holder = wait_for(
            lambda: ((h := _holder(cluster, release)) != holder and h) or None,
            timeout=6 * LEASE_SECONDS,
            what="a new Lease holder",
        )
        _ready_pods(cluster, release)
    assert probe.without_volume == [], f"answered without the SVID volume: {probe.without_volume}"
    (standby,) = [p.status.pod_ip for p in pods if p.metadata.name != leader.metadata.name]
    # The standby answered throughout: its process never stopped.
    assert probe.answered[standby] > 0 and probe.unreachable[standby] == 0, probe.unreachable
    assert new_holder != holder
    # The new leader issues: a new identity's pods run with their SVID on both nodes.
    assert _shared_workload(cluster, release, node, "after-failover") == set(release.node_dirs)


def _serials(cluster: Cluster, namespace: str) -> dict[str, int]:
    found = {}
    for secret in cluster.core.list_namespaced_secret(
        namespace, label_selector="app.kubernetes.io/managed-by=trustwarden"
    ).items:
        if secret.data and "tls.crt" in secret.data:
            found[secret.metadata.name] = serial_of(base64.b64decode(secret.data["tls.crt"]))
    return found


def test_helm_upgrade_rolls_one_replica_at_a_time_and_reissues_nothing(
    cluster: Cluster, node: Node, release: Release
) -> None:
    before = {p.metadata.name for p in _ready_pods(cluster, release)}
    serials = _serials(cluster, release.workload_ns)
    assert serials, "the earlier tests left issued Secrets to compare"
    helm(
        cluster, "upgrade", release.name, str(CHART), "--namespace", release.namespace,
        *release.values, "--set", "operator.logLevel=DEBUG", timeout=300,
    )  # fmt: skip
    pod_counts: list[int] = []

    def rolled() -> list[client.V1Pod] | None:
        pods = [p for p in _operator_pods(cluster, release) if not p.metadata.deletion_timestamp]
        pod_counts.append(len(pods))
        fresh = [p for p in pods if p.metadata.name not in before and _ready(p)]
        return fresh if len(fresh) == 2 and len(pods) == 2 else None

    fresh = wait_for(rolled, timeout=300, what="both replicas replaced by the upgrade")
    assert all("--log-level=DEBUG" in p.spec.containers[0].args for p in fresh)
    # No surge with hostNetwork (a third pod would find no node with free ports).
    assert max(pod_counts) <= 2, pod_counts
    assert _shared_workload(cluster, release, node, "after-upgrade") == set(release.node_dirs)
    after = _serials(cluster, release.workload_ns)
    unchanged = {k: after.get(k) for k in serials}
    assert unchanged == serials, "the upgrade re-issued a certificate"


def test_helm_uninstall_removes_the_release_and_keeps_roots_and_issued_secrets(
    cluster: Cluster, release: Release
) -> None:
    issued = _serials(cluster, release.workload_ns)
    assert issued
    helm(
        cluster, "uninstall", release.name, "--namespace", release.namespace, "--wait",
        timeout=300,
    )  # fmt: skip
    assert wait_for(
        lambda: not leftovers(cluster, release.name) and not _operator_pods(cluster, release),
        timeout=120,
        what=f"no object of release {release.name} left",
    )
    # As documented (docs/install.md, 9.): the CA Secrets stay for a reinstall, and issued
    # Secrets stay with their workloads.
    ca_secrets = [
        s.metadata.name
        for s in cluster.core.list_namespaced_secret(release.namespace).items
        if s.metadata.name.startswith("trustwarden-ca-")
    ]
    assert ca_secrets
    assert _serials(cluster, release.workload_ns) == issued
