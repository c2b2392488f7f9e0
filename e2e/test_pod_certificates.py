"""Native pod certificates on the real 1.37 control plane, the kubelet played through the API.

There is no kubelet here. The test acts as one, with a node's own credentials: a client
certificate for system:node:<n> in system:nodes, signed by the cluster CA. So the Node
authorizer and NodeRestriction judge every request exactly as in a real cluster. As that node it
creates its Node, makes a key, a stub CSR and a PodCertificateRequest for a pod bound to it;
trustwarden signs (or refuses) it.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store

from e2e.bodies import pod_certificate_volume
from e2e.conftest import OperatorSlot
from e2e.nodecreds import node_client_certificate
from e2e.operator import TRUSTWARDEN
from e2e.support import (
    GROUP,
    VERSION,
    Cluster,
    apply_identity,
    crl_serials,
    custom,
    get_td,
    get_wid,
    make_test_ca,
    openssl_verify,
    trust_domain,
    wait_for,
)

CERTS = "/apis/certificates.k8s.io/v1"


# --------------------------------------------------------------------------- API access


class Client:
    """JSON over HTTPS with a client certificate (the node's, or the admin's)."""

    def __init__(self, server: str, ca: Path, cert: Path, key: Path) -> None:
        context = ssl.create_default_context(cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
        self.server = server
        self.pool = urllib3.PoolManager(ssl_context=context, retries=False, timeout=30)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        response = self.pool.request(
            method,
            self.server + path,
            body=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        data = json.loads(response.data or b"{}")
        return response.status, data

    def ok(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        status, data = self.call(method, path, body)
        assert status < 300, f"{method} {path}: {status} {data.get('message')}"
        return data


def node_credentials(cluster: Cluster, node: str, tmp: Path) -> tuple[Path, Path]:
    """A client certificate for system:node:<node>, O=system:nodes, signed by the cluster CA."""
    return node_client_certificate(cluster.directory / "pki", node, tmp)


@dataclass
class Node:
    name: str
    uid: str
    client: Client


@dataclass
class Env:
    cluster: Cluster
    admin: Client
    node: Node
    other_node: Node
    namespace: str
    domain: str  # TrustDomain object name
    trust_domain: str
    signer: str
    tmp: Path


def make_node(cluster: Cluster, admin: Client, tmp: Path, server: str) -> Node:
    name = f"tw-node-{uuid.uuid4().hex[:6]}"
    cert, key = node_credentials(cluster, name, tmp)
    client = Client(server, cluster.directory / "pki" / "ca.crt", cert, key)
    body = client.ok("POST", "/api/v1/nodes", {"metadata": {"name": name}})
    return Node(name, body["metadata"]["uid"], client)


@pytest.fixture(scope="module")
def env(
    cluster: Cluster, operator_slot: OperatorSlot, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    operator_slot.ensure()
    tmp = tmp_path_factory.mktemp("podcert")
    pki = cluster.directory / "pki"
    server = str(cluster.api.configuration.host)
    admin = Client(server, pki / "ca.crt", pki / "admin.crt", pki / "admin.key")
    node = make_node(cluster, admin, tmp, server)
    other = make_node(cluster, admin, tmp, server)
    with (
        cluster.namespace("tw-podcert") as namespace,
        trust_domain(cluster, policy={"maxTTL": "24h"}) as (domain, td),
    ):
        apply_identity(
            cluster,
            namespace,
            "web",
            domain,
            podSelector={"matchLabels": {"app": "web"}},
            spiffeID="/ns/{namespace}/sa/{serviceAccount}/{pod.name}",
            dnsNames=["{pod.name}.{namespace}.pod"],
            ttl="2h",
            renewAt="50%",
            delivery={"mode": "PodCertificate"},
        )
        wait_for(
            lambda: (
                (get_td(cluster, domain).get("status") or {}).get("signer", {}).get("available")
            ),
            # A fresh operator lists every pod, request and bundle first; on a loaded 2-core
            # box that took over 60 s once (a deadline, not a timing assertion).
            timeout=180,
            what="the signer to be available",
        )
        yield Env(
            cluster, admin, node, other, namespace, domain, td, f"trustwarden.io/{domain}", tmp
        )
        for n in (node, other):
            admin.call("DELETE", f"/api/v1/nodes/{n.name}")


# --------------------------------------------------------------------------- the kubelet's part


def make_pod(
    env: Env,
    name: str,
    labels: dict[str, str],
    *,
    signer: str | None = None,
    key_type: str = "ECDSAP256",
) -> dict[str, Any]:
    signer = signer or env.signer
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeName": env.node.name,
            "containers": [
                {
                    "name": "app",
                    "image": "registry.k8s.io/pause:3.10",
                    "volumeMounts": [
                        {
                            "name": "svid",
                            "mountPath": "/var/run/secrets/trustwarden.io",
                            "readOnly": True,
                        }
                    ],
                }
            ],
            # The kubelet's key and chain, and the anchors, as in
            # deploy/examples/pod-certificate.yaml.
            "volumes": [pod_certificate_volume(signer, key_type=key_type)],
        },
    }
    return env.admin.ok("POST", f"/api/v1/namespaces/{env.namespace}/pods", body)


def service_account_uid(env: Env, name: str = "default") -> str:
    def read() -> str | None:
        status, body = env.admin.call(
            "GET", f"/api/v1/namespaces/{env.namespace}/serviceaccounts/{name}"
        )
        return body["metadata"]["uid"] if status == 200 else None

    return wait_for(read, timeout=60, what=f"ServiceAccount {name}")


def stub_csr(key: Any) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA384() if isinstance(key.curve, ec.SECP384R1) else hashes.SHA256())
    )
    return base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()


def pcr_body(
    env: Env, pod: dict[str, Any], node: Node, *, signer: str | None = None, key: Any = None
) -> dict[str, Any]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "PodCertificateRequest",
        "metadata": {"generateName": f"{pod['metadata']['name']}-"},
        "spec": {
            "signerName": signer or env.signer,
            "podName": pod["metadata"]["name"],
            "podUID": pod["metadata"]["uid"],
            "serviceAccountName": "default",
            "serviceAccountUID": service_account_uid(env),
            "nodeName": node.name,
            "nodeUID": node.uid,
            "maxExpirationSeconds": 86400,
            "stubPKCS10Request": stub_csr(key),
        },
    }


def request_certificate(env: Env, pod: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """As the pod's node: a key, a stub CSR and a PCR naming the pod. Like a kubelet, which
    hears of a pod only once the API server's caches hold it, try again while the API server
    does not know the pod yet."""
    path = f"{CERTS}/namespaces/{env.namespace}/podcertificaterequests"
    body = pcr_body(env, pod, env.node, **kwargs)

    def create() -> dict[str, Any] | None:
        status, answer = env.node.client.call("POST", path, body)
        if status < 300:
            return answer
        message = str(answer.get("message"))
        assert "not found" in message, f"POST {path}: {status} {message}"
        return None

    return wait_for(create, timeout=30, what=f"the PCR for pod {pod['metadata']['name']}")


def read_pcr(env: Env, name: str) -> dict[str, Any]:
    return env.admin.ok("GET", f"{CERTS}/namespaces/{env.namespace}/podcertificaterequests/{name}")


def outcome(pcr: dict[str, Any]) -> dict[str, Any] | None:
    for cond in (pcr.get("status") or {}).get("conditions") or ():
        if cond.get("type") in ("Issued", "Denied", "Failed"):
            return dict(cond)
    return None


def wait_outcome(env: Env, pcr: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    name = pcr["metadata"]["name"]

    def probe() -> dict[str, Any] | None:
        current = read_pcr(env, name)
        return current if outcome(current) else None

    return wait_for(probe, timeout=timeout, what=f"PodCertificateRequest {name} to be decided")


def issued(env: Env, pod: dict[str, Any]) -> dict[str, Any]:
    pcr = wait_outcome(env, request_certificate(env, pod))
    cond = outcome(pcr)
    assert cond is not None and cond["type"] == "Issued", cond
    return pcr


def chain_of(pcr: dict[str, Any]) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pcr["status"]["certificateChain"].encode())


def bundle_anchors(env: Env) -> str:
    body = env.admin.ok("GET", f"{CERTS}/clustertrustbundles/trustwarden.io:{env.domain}:anchors")
    assert body["spec"]["signerName"] == env.signer
    return str(body["spec"]["trustBundle"])


def pod_events(env: Env, pod: str) -> list[dict[str, Any]]:
    body = env.admin.ok("GET", f"/apis/events.k8s.io/v1/namespaces/{env.namespace}/events")
    return [e for e in body.get("items") or () if (e.get("regarding") or {}).get("name") == pod]


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def delete_pod(env: Env, name: str) -> None:
    env.admin.ok(
        "DELETE",
        f"/api/v1/namespaces/{env.namespace}/pods/{name}",
        {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
    )


def revoked_serials(env: Env) -> set[int]:
    return crl_serials(env.cluster, env.namespace, env.trust_domain)


# --------------------------------------------------------------------------- the assertions


def test_issued_chain_verifies_and_follows_policy(env: Env) -> None:
    pod = make_pod(env, "web-1", {"app": "web"})
    pcr = issued(env, pod)
    chain = chain_of(pcr)
    leaf = chain[0]
    anchors = bundle_anchors(env)
    pem = pcr["status"]["certificateChain"].encode()
    result = openssl_verify(env.tmp / "verify", pem, anchors)
    assert result.returncode == 0, result.stdout + result.stderr
    store = Store(x509.load_pem_x509_certificates(anchors.encode()))
    verifier = PolicyBuilder().store(store).build_client_verifier()
    verified = verifier.verify(leaf, chain[1:])
    assert verified.chain[-1] in store_certs(anchors)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://{env.trust_domain}/ns/{env.namespace}/sa/default/web-1"
    ]
    assert san.get_values_for_type(x509.DNSName) == [f"web-1.{env.namespace}.pod"]
    status = pcr["status"]
    not_before, not_after = parse(status["notBefore"]), parse(status["notAfter"])
    assert (leaf.not_valid_before_utc, leaf.not_valid_after_utc) == (not_before, not_after)
    # min(maxExpirationSeconds 24h, ttl 2h, maxTTL 24h, CA lifetime/6 = 15 days): the ttl.
    assert not_after - not_before == timedelta(hours=2)
    # renewAt 50% of the usable life (from notBefore + 2 min back-dating), less at most 10%.
    start = not_before + timedelta(minutes=2)
    usable = not_after - start
    refresh = parse(status["beginRefreshAt"])
    assert start + usable * 0.4 - timedelta(seconds=1) <= refresh <= start + usable * 0.5
    # `trustwarden verify` takes the chain as the kubelet writes it (certificateChainPath).
    chain_file = env.tmp / "tls.crt"
    chain_file.write_bytes(pem)
    checked = subprocess.run(
        [
            TRUSTWARDEN,
            "verify",
            "-n",
            env.namespace,
            "--from-file",
            str(chain_file),
            "--kubeconfig",
            str(env.cluster.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "FAIL" not in checked.stdout
    # The inventory lists it with its pod, identity, serial and expiry.
    inventory = [TRUSTWARDEN, "inventory", "-n", env.namespace, "-o", "json"]
    listed = subprocess.run(
        [*inventory, "--kubeconfig", str(env.cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    rows = [
        r
        for r in json.loads(listed.stdout)["items"]
        if r["secret"] == f"pcr/{pcr['metadata']['name']}"
    ]
    assert len(rows) == 1, listed.stdout[:2000] + listed.stderr
    assert (rows[0]["pod"], rows[0]["workloadIdentity"]) == ("web-1", "web")
    assert int(rows[0]["serial"].replace(":", ""), 16) == leaf.serial_number
    assert parse(rows[0]["notAfter"]) == not_after


def store_certs(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode())


def test_each_denial_reason_is_a_condition_an_event_and_status(env: Env) -> None:
    cluster = env.cluster
    apply_identity(
        cluster,
        env.namespace,
        "dup-a",
        env.domain,
        podSelector={"matchLabels": {"app": "dup"}},
        delivery={"mode": "PodCertificate"},
    )
    apply_identity(
        cluster,
        env.namespace,
        "dup-b",
        env.domain,
        podSelector={"matchLabels": {"app": "dup"}},
        delivery={"mode": "PodCertificate"},
    )
    with trust_domain(
        cluster, policy={"allowedNamespaces": {"matchLabels": {"tw-podcert": "allowed"}}}
    ) as (closed, _):
        apply_identity(
            cluster,
            env.namespace,
            "closed",
            closed,
            podSelector={"matchLabels": {"app": "closed"}},
            delivery={"mode": "PodCertificate"},
        )
        cases = [
            ("nobody", {"app": "nobody"}, {}, "NoIdentity", "create one"),
            ("dup", {"app": "dup"}, {}, "AmbiguousIdentity", "dup-a, dup-b"),
            (
                "closed",
                {"app": "closed"},
                {"signer": f"trustwarden.io/{closed}"},
                "NamespaceNotAllowed",
                "allowedNamespaces",
            ),
            ("p384", {"app": "web"}, {"key_type": "ECDSAP384"}, "UnsupportedKeyType", "ECDSAP256"),
        ]
        requests = {}
        for name, labels, opts, _, _ in cases:
            signer = opts.get("signer")
            pod = make_pod(
                env,
                f"deny-{name}",
                labels,
                signer=signer,
                key_type=opts.get("key_type", "ECDSAP256"),
            )
            key = ec.generate_private_key(ec.SECP384R1()) if name == "p384" else None
            requests[name] = (pod, request_certificate(env, pod, signer=signer, key=key))
        for name, _, _, reason, hint in cases:
            pod, pcr = requests[name]
            cond = outcome(wait_outcome(env, pcr))
            assert cond is not None
            assert (cond["type"], cond["reason"]) == ("Denied", reason), cond
            assert hint in cond["message"], cond["message"]
            assert "certificateChain" not in (
                read_pcr(env, pcr["metadata"]["name"]).get("status") or {}
            )
            wait_for(
                lambda pod=pod, reason=reason: any(
                    e.get("reason") == reason and e.get("type") == "Warning"
                    for e in pod_events(env, pod["metadata"]["name"])
                ),
                timeout=30,
                what=f"a {reason} Event on pod {pod['metadata']['name']}",
            )

        # The identity it concerns carries the denial in its status.
        def denied_status() -> dict[str, Any] | None:
            status = get_wid(cluster, env.namespace, "dup-a").get("status") or {}
            last = (status.get("podCertificates") or {}).get("lastDenial") or {}
            return status if last.get("reason") == "AmbiguousIdentity" else None

        status = wait_for(denied_status, timeout=30, what="dup-a status to show the denial")
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "AmbiguousIdentity")


def test_other_signers_requests_are_untouched(env: Env) -> None:
    foreign = "example.com/someone-else"
    pod = make_pod(env, "foreign", {"app": "web"}, signer=foreign)
    theirs = request_certificate(env, pod, signer=foreign)
    # One of ours created after it and decided: the signer has seen both.
    issued(env, make_pod(env, "after-foreign", {"app": "web"}))
    current = read_pcr(env, theirs["metadata"]["name"])
    assert current["metadata"]["resourceVersion"] == theirs["metadata"]["resourceVersion"]
    assert not (current.get("status") or {}).get("conditions")


def test_rotation_publishes_the_anchor_before_it_signs(env: Env) -> None:
    old = {a["sha256"] for a in get_td(env.cluster, env.domain)["status"]["authorities"]}
    custom(env.cluster).patch_cluster_custom_object(
        GROUP,
        VERSION,
        "trustdomains",
        env.domain,
        {
            "metadata": {
                "annotations": {
                    "trustwarden.io/rotate": "podcert-1",
                    "trustwarden.io/activate-after": "3s",
                }
            }
        },
    )
    pod = make_pod(env, "rotating", {"app": "web"})
    signed_by: list[str] = []
    unpublished: list[str] = []

    def signed_by_new_authority() -> bool:
        # The bundle as it is before the request: the PCR's signer must already be in it.
        before = {x509_sha(c) for c in store_certs(bundle_anchors(env))}
        chain = chain_of(issued(env, pod))
        sha = signing_anchor(chain[0], bundle_anchors(env))
        if sha not in before:  # recorded, not asserted: wait_for would retry an assertion
            unpublished.append(sha)
        signed_by.append(sha)
        return sha not in old

    wait_for(
        signed_by_new_authority, timeout=120, what="a PCR signed by the new authority", interval=1.0
    )
    assert not unpublished, "PCRs were signed by an authority not yet in the ClusterTrustBundle"
    assert signed_by[0] in old  # the rotation was observed from before its activation


def test_a_cluster_trust_bundle_edited_or_deleted_by_hand_comes_back(env: Env) -> None:
    """The ClusterTrustBundle is watched: an edit that swaps our anchors for a stranger's, and
    a deletion, are both undone from the domain's authorities, without any other trigger."""
    path = f"{CERTS}/clustertrustbundles/trustwarden.io:{env.domain}:anchors"
    ours = {x509_sha(c) for c in store_certs(bundle_anchors(env))}
    assert ours
    body = env.admin.ok("GET", path)
    body["spec"]["trustBundle"] = make_test_ca("not ours")[0].decode()
    edited = env.admin.ok("PUT", path, body)
    assert {x509_sha(c) for c in store_certs(edited["spec"]["trustBundle"])} != ours

    def anchors_now() -> set[str] | None:
        status, current = env.admin.call("GET", path)
        if status == 404:
            return None
        assert status == 200, current.get("message")
        return {x509_sha(c) for c in store_certs(current["spec"]["trustBundle"])}

    wait_for(lambda: anchors_now() == ours, timeout=60, what="the edited bundle rewritten")
    env.admin.ok("DELETE", path)
    wait_for(lambda: anchors_now() == ours, timeout=60, what="the deleted bundle recreated")
    recreated = env.admin.ok("GET", path)
    assert recreated["spec"]["signerName"] == env.signer
    assert recreated["metadata"]["uid"] != body["metadata"]["uid"]


def x509_sha(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def signing_anchor(leaf: x509.Certificate, anchors_pem: str) -> str:
    for anchor in store_certs(anchors_pem):
        try:
            leaf.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, Exception):
            continue
        return x509_sha(anchor)
    raise AssertionError("the leaf is signed by no anchor of the ClusterTrustBundle")


def test_pod_deletion_and_restart_revoke_and_resume(env: Env, operator_slot: OperatorSlot) -> None:
    # Two certificates for one pod (a refresh), both revoked when it goes.
    pod = make_pod(env, "short-lived", {"app": "web"})
    serials = {chain_of(issued(env, pod))[0].serial_number for _ in range(2)}
    delete_pod(env, "short-lived")
    wait_for(lambda: serials <= revoked_serials(env), timeout=60, what="both serials in the CRL")
    # Across a restart: a pod deleted and a PCR created while the operator is down.
    survivor = make_pod(env, "survivor", {"app": "web"})
    kept = issued(env, survivor)
    doomed = make_pod(env, "doomed", {"app": "web"})
    doomed_serial = chain_of(issued(env, doomed))[0].serial_number
    denied = wait_outcome(
        env, request_certificate(env, make_pod(env, "denied-before", {"app": "none"}))
    )
    operator_slot.stop()
    delete_pod(env, "doomed")
    waiting = request_certificate(env, make_pod(env, "while-down", {"app": "web"}))
    operator_slot.start()
    after = wait_outcome(env, waiting)
    cond = outcome(after)
    assert cond is not None and cond["type"] == "Issued", cond
    wait_for(
        lambda: doomed_serial in revoked_serials(env),
        timeout=60,
        what="the serial of the pod deleted while down in the CRL",
    )
    assert kept["status"]["certificateChain"] and chain_of(kept)[
        0
    ].serial_number not in revoked_serials(env)
    for before in (kept, denied):
        current = read_pcr(env, before["metadata"]["name"])
        assert current["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_another_nodes_credentials_cannot_obtain_this_nodes_pod_certificate(env: Env) -> None:
    pod = make_pod(env, "isolated", {"app": "web"})
    path = f"{CERTS}/namespaces/{env.namespace}/podcertificaterequests"
    # The other node, claiming to be itself, for a pod that is not bound to it.
    status, body = env.other_node.client.call("POST", path, pcr_body(env, pod, env.other_node))
    assert status == 403, (status, body.get("message"))
    # The other node, claiming to be this node.
    status, body = env.other_node.client.call("POST", path, pcr_body(env, pod, env.node))
    assert status == 403, (status, body.get("message"))
    # Only the API server stands between them: the same request from the pod's own node is
    # signed, so nothing in trustwarden would have refused the other node's.
    issued(env, pod)
    listing = env.admin.ok("GET", path)
    mine = [p for p in listing["items"] if p["spec"]["podName"] == "isolated"]
    assert [p["spec"]["nodeName"] for p in mine] == [env.node.name]


def test_webhook_injects_the_projected_volume_in_opted_in_namespaces(env: Env) -> None:
    cluster = env.cluster
    with cluster.namespace("tw-podcert-inj", labels={"trustwarden.io/inject": "enabled"}) as ns:
        apply_identity(
            cluster,
            ns,
            "web",
            env.domain,
            podSelector={"matchLabels": {"app": "web"}},
            delivery={"mode": "PodCertificate"},
        )
        wait_for(
            lambda: (get_wid(cluster, ns, "web").get("status") or {}).get("conditions"),
            timeout=60,
            what="the identity to be reconciled",
        )
        body = {
            "metadata": {"name": "plain", "labels": {"app": "web"}},
            "spec": {
                "nodeName": env.node.name,
                "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
            },
        }
        pod = env.admin.ok("POST", f"/api/v1/namespaces/{ns}/pods", body)
        (volume,) = [
            v for v in pod["spec"]["volumes"] if v["name"] == "trustwarden-pod-certificate"
        ]
        assert volume["projected"]["sources"][0]["podCertificate"]["signerName"] == env.signer
        mounts = pod["spec"]["containers"][0]["volumeMounts"]
        assert {
            "name": volume["name"],
            "mountPath": "/var/run/secrets/trustwarden.io/",
            "readOnly": True,
        } in mounts
        injected = Env(
            cluster,
            env.admin,
            env.node,
            env.other_node,
            ns,
            env.domain,
            env.trust_domain,
            env.signer,
            env.tmp,
        )
        chain = chain_of(issued(injected, pod))
        assert f"/ns/{ns}/sa/default" in str(
            chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        )
