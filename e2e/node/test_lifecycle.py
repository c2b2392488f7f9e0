"""Workloads on the real kubelet across the SVID life cycle: mTLS through leaf renewals and a
forced CA rotation with no failed handshake, and revocation when a real pod goes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from typing import Any

from e2e.node.conftest import Node
from e2e.operator import TRUSTWARDEN
from e2e.support import (
    Cluster,
    apply_body,
    apply_identity,
    crl_serials,
    get_td,
    get_wid,
    secret_data,
    serial_of,
    wait_condition,
    wait_for,
)

INJECT = {"trustwarden.io/inject": "enabled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deployment(ns: str, app: str, image: str, args: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app, "mtls": "yes"}},
                "spec": {
                    "hostNetwork": True,
                    "serviceAccountName": app,
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": app,
                            "image": image,
                            "imagePullPolicy": "Never",
                            "args": args,
                        }
                    ],
                },
            },
        },
    }


def running_pod(cluster: Cluster, ns: str, app: str) -> str | None:
    pods = cluster.core.list_namespaced_pod(ns, label_selector=f"app={app}").items
    live = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
    return live[0].metadata.name if len(live) == 1 else None


def records(cluster: Cluster, ns: str, pod: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("-n", ns, "logs", pod, check=False).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def handshakes(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in log if r.get("event") == "handshake"]


def test_mtls_holds_through_renewals_and_a_forced_ca_rotation(
    cluster: Cluster, node: Node, domain: tuple[str, str]
) -> None:
    """A server and a client Deployment make an mTLS call every second, each accepting only
    the other's SPIFFE ID. Leaves renew every 30-60 s (ttl 10m, renewAt 10%), and then
    `trustwarden ca rotate` forces a new authority with the default activation delay (3 min,
    longer than the kubelet's volume sync). Not one handshake may fail, and both sides must
    end up presenting leaves of the new authority."""
    td_object, td_name = domain
    port = free_port()
    with cluster.namespace(prefix="tw-mtls", labels=INJECT) as ns:
        for sa in ("server", "client"):
            cluster.core.create_namespaced_service_account(ns, {"metadata": {"name": sa}})
        apply_identity(
            cluster,
            ns,
            "mtls",
            td_object,
            podSelector={"matchLabels": {"mtls": "yes"}},
            spiffeID="/ns/{namespace}/sa/{serviceAccount}",
            ttl="10m",
            renewAt="10%",
        )
        wait_condition(lambda: get_wid(cluster, ns, "mtls"), "Ready", "True", timeout=60)
        server_id = f"spiffe://{td_name}/ns/{ns}/sa/server"
        client_id = f"spiffe://{td_name}/ns/{ns}/sa/client"
        image = node.images["workload"]
        apply_body(
            cluster,
            deployment(
                ns, "server", image, ["server", "--port", str(port), "--peer-id", client_id]
            ),
        )
        apply_body(
            cluster,
            deployment(
                ns, "client", image, ["client", "--port", str(port), "--peer-id", server_id]
            ),
        )
        server = wait_for(
            lambda: running_pod(cluster, ns, "server"), timeout=240, what="the server Running"
        )
        client = wait_for(
            lambda: running_pod(cluster, ns, "client"), timeout=240, what="the client Running"
        )

        def ok_calls(minimum: int) -> bool:
            return sum(1 for h in handshakes(records(cluster, ns, client)) if h["ok"]) >= minimum

        wait_for(lambda: ok_calls(5), timeout=120, what="the first mTLS calls", interval=2)
        first_issuer = handshakes(records(cluster, ns, client))[0]["peer_issuer"]
        old = {a["sha256"] for a in get_td(cluster, td_object)["status"]["authorities"]}
        # at least one renewal of each leaf reaches the workloads before the rotation
        wait_for(
            lambda: (
                len({h["peer_serial"] for h in handshakes(records(cluster, ns, client)) if h["ok"]})
                >= 2
                and len(
                    {h["peer_serial"] for h in handshakes(records(cluster, ns, server)) if h["ok"]}
                )
                >= 2
            ),
            timeout=300,
            what="a renewed leaf on both sides",
            interval=5,
        )
        rotate = subprocess.run(
            [TRUSTWARDEN, "ca", "rotate", td_object, "--yes", "--no-wait"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        )
        assert rotate.returncode == 0, rotate.stdout + rotate.stderr

        def rotated() -> bool:
            status = get_td(cluster, td_object)["status"]
            active = [a for a in status["authorities"] if a["state"] == "Active"]
            if not active or active[0]["sha256"] in old:
                return False
            last = [handshakes(records(cluster, ns, p)) for p in (client, server)]
            return all(h and h[-1]["ok"] and h[-1]["peer_issuer"] != first_issuer for h in last)

        wait_for(
            rotated, timeout=600, what="both workloads on leaves of the new authority", interval=5
        )
        for pod in (client, server):
            log = handshakes(records(cluster, ns, pod))
            failed = [h for h in log if not h["ok"]]
            assert not failed, f"{pod}: {len(failed)} failed handshakes, first: {failed[0]}"
            assert len(log) >= 60, f"{pod}: only {len(log)} handshakes"
        reloads = [r for r in records(cluster, ns, client) if r.get("event") == "reload"]
        assert len(reloads) >= 3, "the client never re-read its files after the kubelet's update"


def test_deleting_a_real_pod_revokes_its_serial(
    cluster: Cluster, node: Node, domain: tuple[str, str]
) -> None:
    """Graceful termination runs through the kubelet; once the pod is gone its Secret is
    deleted and its serial is in the namespace's CRL."""
    td_object, td_name = domain
    with cluster.namespace(prefix="tw-revoke", labels=INJECT) as ns:
        apply_identity(
            cluster, ns, "goner", td_object, podSelector={"matchLabels": {"app": "goner"}}
        )
        wait_condition(lambda: get_wid(cluster, ns, "goner"), "Ready", "True", timeout=60)
        apply_body(
            cluster,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "goner", "namespace": ns, "labels": {"app": "goner"}},
                "spec": {
                    "hostNetwork": True,
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "goner",
                            "image": node.images["workload"],
                            "imagePullPolicy": "Never",
                            "args": ["identity"],
                        }
                    ],
                },
            },
        )
        wait_for(lambda: running_pod(cluster, ns, "goner"), timeout=240, what="the pod Running")
        pod = cluster.core.read_namespaced_pod("goner", ns)
        secret = pod.metadata.annotations["trustwarden.io/secret"]
        data = wait_for(
            lambda: secret_data(cluster, ns, secret), timeout=60, what="the pod's Secret"
        )
        serial = serial_of(data["tls.crt"])
        cluster.kubectl("-n", ns, "delete", "pod", "goner", "--wait=true", "--timeout=120s")
        wait_for(
            lambda: secret_data(cluster, ns, secret) is None, timeout=60, what="the Secret deleted"
        )

        wait_for(
            lambda: serial in crl_serials(cluster, ns, td_name),
            timeout=60,
            what=f"serial {serial:x} in the namespace CRL",
        )
