"""Per-pod identities on the real control plane: injection webhook, issue on pod creation,
revocation on pod deletion, resume after restart. Pods stay Pending (no kubelet)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.conftest import OperatorSlot
from e2e.operator import OperatorProcess
from e2e.support import (
    Cluster,
    apply_identity,
    bundle_data,
    get_wid,
    gone,
    leaf_of,
    openssl_verify,
    secret_data,
    serial_of,
    trust_domain,
    wait_condition,
    wait_for,
)

INJECT = {"trustwarden.io/inject": "enabled"}
MOUNT = "/var/run/secrets/trustwarden.io/"


@pytest.fixture
def domain(cluster: Cluster, operator: OperatorProcess) -> Iterator[tuple[str, str]]:
    with trust_domain(cluster) as created:
        yield created


@pytest.fixture
def injected_ns(cluster: Cluster) -> Iterator[str]:
    with cluster.namespace(prefix="tw-pod", labels=INJECT) as name:
        yield name


def per_pod_identity(
    cluster: Cluster,
    namespace: str,
    domain: str,
    name: str = "payments",
    *,
    app: str = "payments",
    ttl: str = "1h",
    renew_at: str = "50%",
) -> None:
    apply_identity(
        cluster,
        namespace,
        name,
        domain,
        podSelector={"matchLabels": {"app": app}},
        spiffeID="/ns/{namespace}/sa/{serviceAccount}",
        dnsNames=["{pod.name}.{namespace}.pod", f"{app}.{{namespace}}.svc"],
        ttl=ttl,
        renewAt=renew_at,
        owner="team-payments@example.org",
    )
    wait_condition(lambda: get_wid(cluster, namespace, name), "Ready", "True", timeout=60)


def pod_body(
    name: str,
    labels: dict[str, str],
    *,
    annotations: dict[str, str] | None = None,
    sa: str = "default",
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
        "spec": {
            "serviceAccountName": sa,
            "automountServiceAccountToken": False,
            "initContainers": [{"name": "init", "image": "busybox:1.36", "command": ["true"]}],
            "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}],
        },
    }


def create_pod(
    cluster: Cluster, namespace: str, name: str, labels: dict[str, str], **kw: Any
) -> client.V1Pod:
    return cluster.core.create_namespaced_pod(namespace, pod_body(name, labels, **kw))


def pod_secret_name(pod: client.V1Pod) -> str:
    return str(pod.metadata.annotations["trustwarden.io/secret"])


def wait_pod_secret(
    cluster: Cluster, namespace: str, pod: client.V1Pod, timeout: float = 60
) -> dict[str, bytes]:
    return wait_for(
        lambda: secret_data(cluster, namespace, pod_secret_name(pod)),
        timeout=timeout,
        what=f"the SVID Secret of pod {pod.metadata.name}",
    )


def ensure_service_account(cluster: Cluster, namespace: str, name: str) -> None:
    try:
        cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    except ApiException as exc:
        if exc.status != 409:
            raise


def test_pod_is_injected_and_gets_a_verifiable_svid(
    cluster: Cluster, domain: tuple[str, str], injected_ns: str, tmp_path: Path
) -> None:
    name, trust_domain = domain
    per_pod_identity(cluster, injected_ns, name)
    ensure_service_account(cluster, injected_ns, "payments-sa")
    pod = create_pod(cluster, injected_ns, "pay-0", {"app": "payments"}, sa="payments-sa")
    # 1. Volume, mounts (init containers included), label and annotation.
    assert pod.metadata.labels["trustwarden.io/identity"] == "payments"
    secret_name = pod_secret_name(pod)
    volumes = {v.name: v for v in pod.spec.volumes}
    assert volumes["trustwarden-svid"].secret.secret_name == secret_name
    for container in [*pod.spec.init_containers, *pod.spec.containers]:
        mounts = [m for m in container.volume_mounts if m.name == "trustwarden-svid"]
        assert len(mounts) == 1 and mounts[0].mount_path == MOUNT and mounts[0].read_only
    # 2. The Secret, owned by the pod, verifying against the namespace bundle.
    data = wait_pod_secret(cluster, injected_ns, pod)
    secret = cluster.core.read_namespaced_secret(secret_name, injected_ns)
    (owner,) = secret.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Pod", "pay-0", pod.metadata.uid)
    bundle = wait_for(lambda: bundle_data(cluster, injected_ns), timeout=30, what="bundle")
    result = openssl_verify(
        tmp_path, data["tls.crt"], bundle["ca.crt"], bundle[f"{trust_domain}.crl.pem"]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sans = (
        leaf_of(data["tls.crt"])
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://{trust_domain}/ns/{injected_ns}/sa/payments-sa"
    ]
    assert sans.get_values_for_type(x509.DNSName) == [
        f"pay-0.{injected_ns}.pod",
        f"payments.{injected_ns}.svc",
    ]
    # Aggregated status, not per-pod writes.
    wid = wait_for(
        lambda: (w := get_wid(cluster, injected_ns, "payments"))["status"].get("issued") == 1 and w,
        timeout=30,
        what="status.issued=1",
    )
    assert wid["status"]["selectedPods"] == 1


def test_replicaset_pods_get_distinct_keys_and_serials(
    cluster: Cluster, domain: tuple[str, str], injected_ns: str
) -> None:
    per_pod_identity(cluster, injected_ns, domain[0])
    apps = client.AppsV1Api(cluster.api)
    apps.create_namespaced_replica_set(
        injected_ns,
        {
            "metadata": {"name": "payments"},
            "spec": {
                "replicas": 20,
                "selector": {"matchLabels": {"app": "payments"}},
                "template": {
                    "metadata": {"labels": {"app": "payments"}},
                    "spec": pod_body("x", {})["spec"],
                },
            },
        },
    )

    def all_served() -> list[dict[str, bytes]] | None:
        pods = cluster.core.list_namespaced_pod(injected_ns, label_selector="app=payments").items
        if len(pods) != 20:
            return None
        secrets = [secret_data(cluster, injected_ns, pod_secret_name(p)) for p in pods]
        return secrets if all(secrets) else None  # type: ignore[return-value]

    secrets = wait_for(all_served, timeout=120, what="20 ReplicaSet pods with Secrets")
    serials = {serial_of(s["tls.crt"]) for s in secrets}
    keys = {
        serialization.load_pem_private_key(s["tls.key"], None)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        for s in secrets
    }
    assert len(serials) == 20 and len(keys) == 20


def test_pod_deletion_revokes_and_removes_the_secret(
    cluster: Cluster, domain: tuple[str, str], injected_ns: str, tmp_path: Path
) -> None:
    name, trust_domain = domain
    per_pod_identity(cluster, injected_ns, name)
    keeper = create_pod(cluster, injected_ns, "keeper", {"app": "payments"})
    doomed = create_pod(cluster, injected_ns, "doomed", {"app": "payments"})
    wait_pod_secret(cluster, injected_ns, keeper)
    data = wait_pod_secret(cluster, injected_ns, doomed)
    cluster.core.delete_namespaced_pod("doomed", injected_ns, grace_period_seconds=0)
    wait_for(
        lambda: secret_data(cluster, injected_ns, pod_secret_name(doomed)) is None,
        timeout=30,
        what="the deleted pod's Secret to go",
    )

    def revoked() -> bool:
        bundle = bundle_data(cluster, injected_ns) or {}
        if f"{trust_domain}.crl.pem" not in bundle:
            return False
        result = openssl_verify(
            tmp_path, data["tls.crt"], bundle["ca.crt"], bundle[f"{trust_domain}.crl.pem"]
        )
        return result.returncode != 0 and "revoked" in result.stdout + result.stderr

    wait_for(
        revoked,
        timeout=30,
        what="openssl verify -crl_check to reject the deleted pod's certificate",
    )


def test_short_ttl_pod_renews_within_the_jitter_bound(
    cluster: Cluster, domain: tuple[str, str], injected_ns: str
) -> None:
    per_pod_identity(cluster, injected_ns, domain[0], ttl="10m", renew_at="10%")
    pod = create_pod(cluster, injected_ns, "short", {"app": "payments"})
    first = wait_pod_secret(cluster, injected_ns, pod)
    first_serial = serial_of(first["tls.crt"])
    renewed = wait_for(
        lambda: (
            (d := secret_data(cluster, injected_ns, pod_secret_name(pod)))
            and serial_of(d["tls.crt"]) != first_serial
            and d
        ),
        timeout=150,
        what="the pod certificate to renew",
    )
    issued = leaf_of(first["tls.crt"]).not_valid_after_utc
    again = leaf_of(renewed["tls.crt"]).not_valid_after_utc
    # renewAt 10% of 10m = 60s; jitter may bring it forward by at most half of that.
    delay = (again - issued).total_seconds()
    assert 25 <= delay <= 75, delay


def test_namespaces_not_opted_in_are_untouched(
    cluster: Cluster, domain: tuple[str, str], namespace: str
) -> None:
    per_pod_identity(cluster, namespace, domain[0])
    pod = create_pod(cluster, namespace, "plain", {"app": "payments"})
    assert "trustwarden.io/identity" not in (pod.metadata.labels or {})
    assert not [v for v in pod.spec.volumes or () if v.name == "trustwarden-svid"]
    secrets = cluster.core.list_namespaced_secret(
        namespace, label_selector="app.kubernetes.io/managed-by=trustwarden"
    )
    assert secrets.items == []


def test_pod_selected_by_two_identities_is_rejected(
    cluster: Cluster, domain: tuple[str, str], injected_ns: str
) -> None:
    per_pod_identity(cluster, injected_ns, domain[0], name="first", app="shared")
    per_pod_identity(cluster, injected_ns, domain[0], name="second", app="shared")
    with pytest.raises(ApiException) as info:
        create_pod(cluster, injected_ns, "ambiguous", {"app": "shared"})
    assert info.value.status in (400, 403)
    assert "first, second" in info.value.body and "podSelector" in info.value.body


def test_hand_set_secret_annotation_cannot_hijack_a_secret(
    cluster: Cluster, domain: tuple[str, str], injected_ns: str
) -> None:
    per_pod_identity(cluster, injected_ns, domain[0])
    victim = cluster.core.create_namespaced_secret(
        injected_ns, {"metadata": {"name": "victim"}, "stringData": {"password": "hunter2"}}
    )
    pod = create_pod(
        cluster,
        injected_ns,
        "hijacker",
        {"app": "payments", "trustwarden.io/identity": "payments"},
        annotations={"trustwarden.io/secret": "victim"},
    )
    assert pod_secret_name(pod) != "victim"
    assert [v.secret.secret_name for v in pod.spec.volumes if v.name == "trustwarden-svid"] == [
        pod_secret_name(pod)
    ]
    wait_pod_secret(cluster, injected_ns, pod)
    after = cluster.core.read_namespaced_secret("victim", injected_ns)
    assert after.metadata.resource_version == victim.metadata.resource_version
    assert after.data == victim.data


def test_restart_reissues_nothing_and_catches_up(
    cluster: Cluster,
    domain: tuple[str, str],
    injected_ns: str,
    operator_slot: OperatorSlot,
    tmp_path: Path,
) -> None:
    name, trust_domain = domain
    per_pod_identity(cluster, injected_ns, name)
    pods = [create_pod(cluster, injected_ns, f"p{i}", {"app": "payments"}) for i in range(50)]
    before = {
        p.metadata.name: serial_of(wait_pod_secret(cluster, injected_ns, p, timeout=120)["tls.crt"])
        for p in pods
    }
    doomed = pods[0]
    doomed_chain = secret_data(cluster, injected_ns, pod_secret_name(doomed))
    assert doomed_chain is not None
    operator_slot.stop()
    # While it is down: the webhook fails closed, and the message says what to do.
    with pytest.raises(ApiException) as info:
        create_pod(cluster, injected_ns, "while-down", {"app": "payments"})
    assert "svid-injector.trustwarden.io" in info.value.body
    # A pod deleted while down: the garbage collector deletes its Secret meanwhile, but the
    # finalizer keeps it (terminating, serial and all) until the operator has revoked it.
    cluster.core.delete_namespaced_pod(doomed.metadata.name, injected_ns, grace_period_seconds=0)

    def held_by_finalizer() -> bool:
        meta = cluster.core.read_namespaced_secret(pod_secret_name(doomed), injected_ns).metadata
        return bool(meta.deletion_timestamp) and "trustwarden.io/revoke" in (meta.finalizers or [])

    wait_for(
        held_by_finalizer,
        timeout=60,
        what="the garbage collector to delete the Secret, and the finalizer to hold it",
    )
    operator_slot.start()
    late = create_pod(cluster, injected_ns, "after-resume", {"app": "payments"})
    wait_pod_secret(cluster, injected_ns, late)
    after = {
        p.metadata.name: serial_of(secret_data(cluster, injected_ns, pod_secret_name(p))["tls.crt"])  # type: ignore[index]
        for p in pods[1:]
    }
    assert after == {k: v for k, v in before.items() if k != doomed.metadata.name}

    def doomed_revoked() -> bool:
        bundle = bundle_data(cluster, injected_ns) or {}
        crl = bundle.get(f"{trust_domain}.crl.pem")
        if not crl:
            return False
        result = openssl_verify(tmp_path, doomed_chain["tls.crt"], bundle["ca.crt"], crl)
        return result.returncode != 0 and "revoked" in result.stdout + result.stderr

    wait_for(
        doomed_revoked, timeout=60, what="the pod deleted while down to be revoked after resume"
    )
    wait_for(
        lambda: gone(
            lambda: cluster.core.read_namespaced_secret(pod_secret_name(doomed), injected_ns)
        ),
        timeout=60,
        what="the revoked Secret to be released and removed",
    )
    metrics = operator_slot.ensure().metrics() or ""
    assert "trustwarden_certificates_renewed_total{" not in metrics


def test_openssl_is_available() -> None:
    assert subprocess.run(["openssl", "version"], capture_output=True, check=False).returncode == 0
