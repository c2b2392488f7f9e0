"""Real pods on a real kubelet get real SVIDs: the kubelet waits for each pod's Secret, mounts
it, and the container prints the SPIFFE ID it presents."""

from __future__ import annotations

import json

from e2e.node.conftest import Node, printed_spiffe_id
from e2e.support import Cluster, apply_identity, get_wid, wait_condition, wait_for

INJECT = {"trustwarden.io/inject": "enabled"}


def test_three_replicas_print_their_own_spiffe_id(
    cluster: Cluster, node: Node, domain: tuple[str, str]
) -> None:
    td_object, td_name = domain
    with cluster.namespace(prefix="tw-node", labels=INJECT) as ns:
        apply_identity(
            cluster,
            ns,
            "hello",
            td_object,
            podSelector={"matchLabels": {"app": "hello"}},
            spiffeID="/ns/{namespace}/sa/{serviceAccount}/pod/{pod.name}",
            ttl="1h",
        )
        wait_condition(lambda: get_wid(cluster, ns, "hello"), "Ready", "True", timeout=60)
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "hello", "namespace": ns},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "hello"}},
                "template": {
                    "metadata": {"labels": {"app": "hello"}},
                    "spec": {
                        "hostNetwork": True,
                        "terminationGracePeriodSeconds": 5,
                        "containers": [
                            {
                                "name": "hello",
                                "image": node.images["workload"],
                                "imagePullPolicy": "Never",
                                "args": ["identity"],
                            }
                        ],
                    },
                },
            },
        }
        cluster.kubectl("apply", "-f", "-", input_text=json.dumps(deployment))

        def running() -> list[str] | None:
            pods = cluster.core.list_namespaced_pod(ns, label_selector="app=hello").items
            names = [p.metadata.name for p in pods if p.status.phase == "Running"]
            return names if len(names) == 3 and len(pods) == 3 else None

        pods = wait_for(running, timeout=240, what="3 hello pods Running on the node")
        for pod in pods:
            obj = cluster.core.read_namespaced_pod(pod, ns)
            assert obj.spec.node_name == node.name
            expected = f"spiffe://{td_name}/ns/{ns}/sa/default/pod/{pod}"
            printed = wait_for(
                lambda pod=pod: printed_spiffe_id(cluster, ns, pod),
                timeout=60,
                what=f"{pod} printing its SPIFFE ID",
            )
            assert printed == expected
