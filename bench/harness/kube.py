"""Object builders and fast parallel creators (admin client, JSON in and out)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from e2e.bodies import identity_body, shared_identity_body, trust_domain_body
from kubernetes import client

RUN_LABEL = "bench.trustwarden.io/run"
INJECT = {"trustwarden.io/inject": "enabled"}
GROUP, VERSION = "trustwarden.io", "v1alpha1"


@dataclass
class Created:
    """Client-side times (wall clock) of create responses, and failures."""

    times: dict[tuple[str, str], float] = field(default_factory=dict)
    bodies: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def ignore_conflict(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except client.ApiException as exc:
        if exc.status != 409:
            raise


def trust_domain(name: str, trust_domain_name: str) -> dict[str, Any]:
    return trust_domain_body(name, trust_domain=trust_domain_name)


def per_pod_identity(namespace: str, domain: str, *, ttl: str, renew_at: str) -> dict[str, Any]:
    return identity_body(
        namespace,
        "app",
        domain,
        podSelector={"matchLabels": {"app": "bench"}},
        spiffeID="/ns/{namespace}/sa/{serviceAccount}",
        dnsNames=["{pod.name}.{namespace}.pod"],
        ttl=ttl,
        renewAt=renew_at,
        keyAlgorithm="ECDSAP256",
        owner="bench@example.org",
    )


def shared_identity(namespace: str, name: str, domain: str, *, ttl: str) -> dict[str, Any]:
    return shared_identity_body(
        namespace,
        name,
        domain,
        serviceAccountName=name,
        dnsNames=[f"{name}.{{namespace}}.svc"],
        ttl=ttl,
        keyAlgorithm="ECDSAP256",
        usages=["server", "client"],
        owner="bench@example.org",
    )


def certificate(
    namespace: str, name: str, trust_domain_name: str, run: str, *, ttl: str
) -> dict[str, Any]:
    """The cert-manager equivalent of `shared_identity`: same SANs, key type, TTL, usages."""
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "secretName": f"{name}-svid",
            "secretTemplate": {"labels": {RUN_LABEL: run.replace("/", "-")}},
            "duration": ttl,
            "uris": [f"spiffe://{trust_domain_name}/ns/{namespace}/sa/{name}"],
            "dnsNames": [f"{name}.{namespace}.svc"],
            "privateKey": {
                "algorithm": "ECDSA",
                "size": 256,
                "encoding": "PKCS8",
                "rotationPolicy": "Always",
            },
            "usages": ["digital signature", "key encipherment", "server auth", "client auth"],
            "issuerRef": {"name": "bench-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"},
        },
    }


def pod(name: str, run: str, node: str | None = None) -> dict[str, Any]:
    """A selected pod; with `node`, bound to that kwok Node (it then runs, and drains on delete
    for its grace period as with a kubelet)."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", RUN_LABEL: run.replace("/", "-")}},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}],
        },
    }
    if node is not None:
        body["spec"]["nodeName"] = node
        body["spec"]["terminationGracePeriodSeconds"] = 1
        body["spec"]["tolerations"] = [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}]
    return body


def create_nodes(api: client.ApiClient, names: Iterable[str], timeout: float = 300) -> None:
    """kwok Nodes (hack/kwok-up.sh manages those annotated kwok.x-k8s.io/node=fake), ready."""
    core = client.CoreV1Api(api)
    names = list(names)

    def create(name: str) -> None:
        body = {
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"type": "kwok"},
            },
            "spec": {
                "taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]
            },
        }
        ignore_conflict(lambda: core.create_node(body))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, names))
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for node in core.list_node(label_selector="type=kwok").items:
            if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or ()):
                pending.discard(node.metadata.name)
        if pending:
            time.sleep(1)
    if pending:
        raise TimeoutError(f"{len(pending)} kwok Node(s) not Ready after {timeout:.0f}s")


def delete_nodes(api: client.ApiClient, names: Iterable[str]) -> None:
    core = client.CoreV1Api(api)
    for name in names:
        try:
            core.delete_node(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise


def create_namespaces(api: client.ApiClient, names: Iterable[str], labels: dict[str, str]) -> None:
    core = client.CoreV1Api(api)
    names = list(names)
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda n: ignore_conflict(
                    lambda: core.create_namespace({"metadata": {"name": n, "labels": labels}})
                ),
                names,
            )
        )
    # The ServiceAccount admission plugin rejects pods until `default` exists.
    deadline = time.monotonic() + 120
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for n in list(pending):
            try:
                core.read_namespaced_service_account("default", n)
                pending.discard(n)
            except client.ApiException:
                pass
        if pending:
            time.sleep(0.2)


def create_many(
    api: client.ApiClient,
    items: list[tuple[str, str, dict[str, Any]]],
    *,
    threads: int = 16,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> Created:
    """Create `items` = [(kind, namespace, body)] from a thread pool, as fast as the API allows
    or at a fixed `rate` per second. Records when each create response arrived."""
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    created = Created()
    start = time.monotonic()
    done = [0]

    def one(index: int) -> None:
        kind, namespace, body = items[index]
        if rate:
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        name = body["metadata"]["name"]
        for attempt in range(6):
            try:
                if kind == "Pod":
                    response = core.create_namespaced_pod(namespace, body, _preload_content=False)
                elif kind == "WorkloadIdentity":
                    response = custom.create_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        namespace,
                        "workloadidentities",
                        body,
                        _preload_content=False,
                    )
                elif kind == "Certificate":
                    response = custom.create_namespaced_custom_object(
                        "cert-manager.io",
                        "v1",
                        namespace,
                        "certificates",
                        body,
                        _preload_content=False,
                    )
                else:
                    raise ValueError(kind)
                now = time.time()
                data = json.loads(response.data)
                with created.lock:
                    created.times[(namespace, name)] = now
                    created.bodies[(namespace, name)] = data.get("metadata") or {}
                    done[0] += 1
                    if progress is not None and done[0] % 250 == 0:
                        progress(done[0])
                return
            except client.ApiException as exc:
                if exc.status in (429, 500, 503, 504) and attempt < 5:
                    time.sleep(0.2 * 2**attempt)
                    continue
                with created.lock:
                    created.errors.append(f"{kind} {namespace}/{name}: {exc.status} {exc.reason}")
                return
            except Exception as exc:
                with created.lock:
                    created.errors.append(f"{kind} {namespace}/{name}: {exc}")
                return

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(len(items))))
    return created


def drop_secret_finalizers(api: client.ApiClient, names: Iterable[str], threads: int = 16) -> int:
    """Remove every finalizer from the Secrets in these namespaces (teardown only, with the
    operator stopped: nothing would ever release trustwarden's revocation finalizer, and the
    namespaces would stay Terminating). Returns how many Secrets were patched."""
    core = client.CoreV1Api(api)
    held = [
        (s.metadata.namespace, s.metadata.name)
        for n in names
        for s in core.list_namespaced_secret(n).items
        if s.metadata.finalizers
    ]

    def drop(item: tuple[str, str]) -> None:
        try:
            core.patch_namespaced_secret(
                item[1],
                item[0],
                [{"op": "remove", "path": "/metadata/finalizers"}],
                _content_type="application/json-patch+json",
            )
        except client.ApiException as exc:
            if exc.status not in (404, 422):  # gone, or no finalizers left
                raise

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(drop, held))
    return len(held)


def delete_namespaces(api: client.ApiClient, names: Iterable[str], timeout: float = 900) -> float:
    core = client.CoreV1Api(api)
    names = list(names)
    started = time.monotonic()
    for n in names:
        try:
            core.delete_namespace(n, propagation_policy="Background")
        except client.ApiException as exc:
            if exc.status != 404:
                raise
    pending = set(names)
    while pending and time.monotonic() - started < timeout:
        existing = {ns.metadata.name for ns in core.list_namespace().items}
        pending &= existing
        if pending:
            time.sleep(1)
    return time.monotonic() - started
