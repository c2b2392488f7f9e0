"""Native pod certificates on the real kubelet: the kubelet makes the key on the node, creates
the PodCertificateRequest itself, writes the chain trustwarden signed and the anchors of the
domain's ClusterTrustBundle into the pod's projected volume, and refreshes it after
beginRefreshAt with a new request and a new key.

The refresh cannot be hurried. The API requires beginRefreshAt to be at least 10 min after
notBefore, and the kubelet (pkg/kubelet/podcertificate) adds a random delay of up to 5 min to
it and looks at its pods once every 1 to 2 min. So a refresh comes 10 to about 17 min after
issue. The pod is started early in the node suite (`node_order`), the other node tests run
meanwhile, and the refresh is checked last.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from e2e.bodies import pod_certificate_volume
from e2e.conftest import OperatorSlot
from e2e.node.conftest import Node, printed_spiffe_id
from e2e.support import (
    Cluster,
    apply_identity,
    custom,
    get_wid,
    serial_of,
    trust_domain,
    wait_condition,
    wait_for,
)

MOUNT = "/var/run/secrets/trustwarden.io"
# After the kubelet's latest refresh time (beginRefreshAt + 5 min jitter + a 2 min pass), what
# a loaded 2-core box may add before the new request is signed and the volume rewritten.
SLACK_SECONDS = 180


@dataclass(frozen=True)
class NativePod:
    namespace: str
    td_name: str
    signer: str
    first: dict[str, Any]  # the kubelet's first request, once signed (the API deletes
    # requests 15 min after creation, so the refresh test must not look it up again)


def _requests(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = custom(cluster).list_namespaced_custom_object(
        "certificates.k8s.io", "v1", ns, "podcertificaterequests"
    )["items"]
    return sorted(items, key=lambda p: p["metadata"]["creationTimestamp"])


def _parsed(status: dict[str, Any], field: str) -> datetime:
    return datetime.fromisoformat(status[field].replace("Z", "+00:00"))


def _mounted_serial(cluster: Cluster, ns: str) -> int | None:
    out = cluster.kubectl(
        "-n", ns, "exec", "native", "--", "python3", "-c",
        f"print(open('{MOUNT}/tls.crt').read())", check=False,
    ).stdout  # fmt: skip
    return serial_of(out.encode()) if "BEGIN CERTIFICATE" in out else None


@pytest.fixture(scope="session")
def native_pod(cluster: Cluster, node: Node, operator_slot: OperatorSlot) -> Iterator[NativePod]:
    """A pod with a podCertificate volume under the suite's operator, kept for the session so
    the refresh test at the end finds it (session scope: the tests are reordered, and a module
    fixture would be made twice)."""
    operator_slot.ensure()
    with trust_domain(cluster) as (td_object, td_name):
        signer = f"trustwarden.io/{td_object}"
        with cluster.namespace(prefix="tw-node-pcr") as ns:
            apply_identity(
                cluster,
                ns,
                "native",
                td_object,
                podSelector={"matchLabels": {"app": "native"}},
                spiffeID="/ns/{namespace}/sa/{serviceAccount}",
                ttl="1h",  # the API's minimum for a pod certificate
                renewAt="10%",  # beginRefreshAt then falls on the API's floor, notBefore + 10 min
                keyAlgorithm="ECDSAP256",
                delivery={"mode": "PodCertificate"},
            )
            wait_condition(lambda: get_wid(cluster, ns, "native"), "Ready", "True", timeout=60)
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "native", "namespace": ns, "labels": {"app": "native"}},
                "spec": {
                    "hostNetwork": True,
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "app",
                            "image": node.images["workload"],
                            "imagePullPolicy": "Never",
                            "args": ["identity"],
                            "volumeMounts": [
                                {"name": "svid", "mountPath": MOUNT, "readOnly": True}
                            ],
                        }
                    ],
                    "volumes": [pod_certificate_volume(signer, max_expiration_seconds=3600)],
                },
            }
            cluster.kubectl("apply", "-f", "-", input_text=json.dumps(pod))
            first = wait_for(
                lambda: next(
                    (
                        p
                        for p in _requests(cluster, ns)
                        if p.get("status", {}).get("certificateChain")
                    ),
                    None,
                ),
                timeout=240,
                what="the kubelet's PodCertificateRequest, signed",
            )
            yield NativePod(namespace=ns, td_name=td_name, signer=signer, first=first)


@pytest.mark.node_order(1)
def test_the_kubelet_requests_and_mounts_a_pod_certificate(
    cluster: Cluster, node: Node, native_pod: NativePod
) -> None:
    ns = native_pod.namespace
    # The workload prints its ID only once the chain verifies against the mounted anchors
    # and the key the kubelet made matches it.
    printed_id = wait_for(
        lambda: printed_spiffe_id(cluster, ns, "native"),
        timeout=240,
        what="the pod printing its SPIFFE ID",
    )
    assert printed_id == f"spiffe://{native_pod.td_name}/ns/{ns}/sa/default"
    # The request was the kubelet's own (the Node authorizer lets only the pod's node make
    # it), and it carries only the public key.
    pcrs = _requests(cluster, ns)
    assert [p["metadata"]["name"] for p in pcrs] == [native_pod.first["metadata"]["name"]]
    first = pcrs[0]
    spec, status = first["spec"], first["status"]
    assert (spec["nodeName"], spec["podName"], spec["signerName"]) == (
        node.name,
        "native",
        native_pod.signer,
    )
    assert status["certificateChain"] and "PRIVATE KEY" not in json.dumps(first)
    refresh = _parsed(status, "beginRefreshAt")
    assert _parsed(status, "notBefore") < refresh < _parsed(status, "notAfter")
    # The files in the running pod are the chain the request got.
    assert _mounted_serial(cluster, ns) == serial_of(status["certificateChain"].encode())


@pytest.mark.node_order(9)
@pytest.mark.timeout(1800)
def test_the_kubelet_refreshes_the_pod_certificate_after_begin_refresh_at(
    cluster: Cluster, native_pod: NativePod, operator_slot: OperatorSlot
) -> None:
    operator_slot.ensure()  # a test in between may have stopped the suite's operator
    ns = native_pod.namespace
    first = native_pod.first
    first_status = first["status"]
    first_serial = serial_of(first_status["certificateChain"].encode())
    refresh = _parsed(first_status, "beginRefreshAt")
    latest = refresh.timestamp() + 5 * 60 + 2 * 60 + SLACK_SECONDS
    budget = max(latest - time.time(), 60.0)

    def refreshed() -> dict[str, Any] | None:
        later = [
            p
            for p in _requests(cluster, ns)
            if p["metadata"]["name"] != first["metadata"]["name"]
            and p.get("status", {}).get("certificateChain")
        ]
        if not later:
            return None
        serial = serial_of(later[-1]["status"]["certificateChain"].encode())
        return later[-1] if _mounted_serial(cluster, ns) == serial else None

    second = wait_for(
        refreshed,
        timeout=budget,
        interval=5,
        what=f"a refreshed pod certificate in the volume (beginRefreshAt {refresh:%H:%M:%S})",
    )
    status = second["status"]
    created = datetime.fromisoformat(second["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    # The kubelet asked again only once the first certificate's refresh time had come, with a
    # new key, and got a certificate for the same identity that is valid now.
    assert created >= refresh
    assert second["spec"]["stubPKCS10Request"] != first["spec"]["stubPKCS10Request"]
    assert (second["spec"]["podName"], second["spec"]["signerName"]) == (
        "native",
        native_pod.signer,
    )
    assert serial_of(status["certificateChain"].encode()) != first_serial
    assert _parsed(status, "notBefore") <= datetime.now(UTC) < _parsed(status, "notAfter")
    # The workload still runs on the same container and still presents its ID.
    assert printed_spiffe_id(cluster, ns, "native") == (
        f"spiffe://{native_pod.td_name}/ns/{ns}/sa/default"
    )
