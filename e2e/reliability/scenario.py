"""Building blocks shared by the fault scenarios: an identity to serve, pods to create and
delete, and "was anything issued twice"."""

from __future__ import annotations

import time
from collections.abc import Iterable

import urllib3
from kubernetes.client.rest import ApiException

from e2e.reliability.harness import PodFactory, PodRef, SecretRecorder
from e2e.reliability.invariants import Invariants
from e2e.support import (
    Cluster,
    apply_identity,
    get_wid,
    secret_data,
    serial_of,
    wait_condition,
    wait_for,
)

APP = {"app": "burst"}


def per_pod_identity(
    cluster: Cluster,
    namespace: str,
    domain: str,
    *,
    name: str = "burst",
    app: str = "burst",
    ttl: str = "1h",
    renew_at: str = "50%",
) -> None:
    apply_identity(
        cluster,
        namespace,
        name,
        domain,
        podSelector={"matchLabels": {"app": app}},
        spiffeID="/ns/{namespace}/sa/{serviceAccount}/{label:app}",
        dnsNames=["{pod.name}.{namespace}.pod"],
        ttl=ttl,
        renewAt=renew_at,
        owner="sre@example.org",
    )
    wait_condition(lambda: get_wid(cluster, namespace, name), "Ready", "True", timeout=60)


def shared_identity(
    cluster: Cluster, namespace: str, domain: str, name: str, ttl: str = "1h"
) -> None:
    apply_identity(
        cluster,
        namespace,
        name,
        domain,
        delivery={"mode": "Shared", "secretName": f"{name}-svid"},
        serviceAccountName=name,
        dnsNames=[f"{name}.{{namespace}}.svc"],
        ttl=ttl,
        owner="sre@example.org",
    )


def read_secret(cluster: Cluster, namespace: str, name: str) -> dict[str, bytes] | None:
    """secret_data that treats an API that is restarting as "not there yet"."""
    try:
        return secret_data(cluster, namespace, name)
    except ApiException as exc:
        if exc.status in (404, 429) or exc.status >= 500:
            return None
        raise
    except (OSError, urllib3.exceptions.HTTPError):
        return None


def wait_served(
    cluster: Cluster, refs: Iterable[PodRef], *, timeout: float = 120
) -> dict[str, int]:
    """Wait until every pod's Secret exists; returns pod name -> serial."""
    pending = [ref for ref in refs if ref.secret_name]
    served: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while pending:
        still = []
        for ref in pending:
            data = read_secret(cluster, ref.namespace, ref.secret_name)
            if data is None:
                still.append(ref)
            else:
                served[ref.name] = serial_of(data["tls.crt"])
        pending = still
        if pending and time.monotonic() > deadline:
            raise AssertionError(f"{len(pending)} pod(s) not served, e.g. {pending[0]}")
        if pending:
            time.sleep(0.3)
    return served


def delete_served(factory: PodFactory, invariants: Invariants, name: str) -> None:
    """Delete a pod that holds a Secret, remembering its serials first."""
    ref = factory.pods.get(name)
    if ref is None or not ref.secret_name:
        return  # admitted without injection (see test_webhook_fails_closed_while_caches_load)
    wait_for(
        lambda: read_secret(factory.cluster, ref.namespace, ref.secret_name),
        timeout=120,
        what=f"pod {name}'s Secret before deleting it",
    )
    for attempt in range(60):  # the API may be restarting: retry (bounded)
        try:
            invariants.before_delete(ref.namespace, f"pod {name}", ref.uid)
            break
        except (ApiException, OSError, urllib3.exceptions.HTTPError):
            if attempt == 59:
                raise
            time.sleep(0.5)
    factory.delete(name)


def uninjected(refs: Iterable[PodRef]) -> list[str]:
    """Pods admitted into an opted-in namespace, selected by a PerPod identity, without the
    webhook's injection: they never get an SVID."""
    return sorted(ref.name for ref in refs if not ref.secret_name)


def issued_more_than_once(recorder: SecretRecorder, refs: Iterable[PodRef]) -> dict[str, list[str]]:
    """Pods for which more than one serial was ever written (none expected without renewals)."""
    twice = {}
    for ref in refs:
        serials = recorder.serials_of(ref.uid)
        if len(serials) > 1:
            twice[ref.name] = [format(s, "x") for s in serials]
    return twice
