"""The kubelet's part in the pod-certificate benchmark: a node's client certificate (signed by
the cluster CA), its Node, pods bound to it, and PodCertificateRequests created as that node,
while a watch records when each request shows Issued."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from e2e.nodecreds import node_client_certificate

CERTS = "/apis/certificates.k8s.io/v1"


class NodeClient:
    """HTTPS as system:node:<name> (O=system:nodes), a certificate signed by the cluster CA."""

    def __init__(self, server: str, pki: Path, name: str, scratch: Path) -> None:
        cert_path, key_path = node_client_certificate(pki, name, scratch, valid=timedelta(hours=4))
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(cert_path), str(key_path))
        self.name = name
        self.server = server
        self.pool = urllib3.PoolManager(ssl_context=context, retries=False, maxsize=32, timeout=30)
        self.uid = self.call("POST", "/api/v1/nodes", {"metadata": {"name": name}})[1]["metadata"][
            "uid"
        ]

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        response = self.pool.request(
            method,
            self.server + path,
            body=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        return response.status, json.loads(response.data or b"{}")


def pod(name: str, node: str, signer: str, run: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "bench.trustwarden.io/run": run}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
            "volumes": [
                {
                    "name": "svid",
                    "projected": {
                        "sources": [
                            {
                                "podCertificate": {
                                    "signerName": signer,
                                    "keyType": "ECDSAP256",
                                    "credentialBundlePath": "credentials.pem",
                                }
                            }
                        ]
                    },
                }
            ],
        },
    }


def stub_csrs(n: int) -> list[str]:
    """n stub PKCS#10 requests (base64 DER), made before the clock starts."""
    out = []
    for _ in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
        )
        out.append(base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode())
    return out


@dataclass
class Burst:
    created: dict[str, float] = field(default_factory=dict)  # PCR name -> create answered
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def create_requests(
    node: NodeClient,
    namespace: str,
    pods: list[dict[str, Any]],
    csrs: list[str],
    signer: str,
    sa_uid: str,
    *,
    threads: int = 16,
    progress: Callable[[int], None] | None = None,
) -> Burst:
    """One PCR per pod, as the node, from a thread pool, as fast as the API takes them."""
    burst = Burst()
    path = f"{CERTS}/namespaces/{namespace}/podcertificaterequests"

    def one(index: int) -> None:
        meta = pods[index]["metadata"]
        name = f"r{index}"
        body = {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "PodCertificateRequest",
            "metadata": {"name": name},
            "spec": {
                "signerName": signer,
                "podName": meta["name"],
                "podUID": meta["uid"],
                "serviceAccountName": "default",
                "serviceAccountUID": sa_uid,
                "nodeName": node.name,
                "nodeUID": node.uid,
                "maxExpirationSeconds": 86400,
                "stubPKCS10Request": csrs[index],
            },
        }
        for attempt in range(8):
            status, answer = node.call("POST", path, body)
            if status < 300:
                with burst.lock:
                    burst.created[name] = time.time()
                    if progress is not None and len(burst.created) % 250 == 0:
                        progress(len(burst.created))
                return
            if status in (429, 500, 503) and attempt < 7:
                time.sleep(0.1 * 2**attempt)  # the API server's pod cache may trail the pod
                continue
            with burst.lock:
                burst.errors.append(f"PCR {name}: {status} {str(answer.get('message'))[:200]}")
            return

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(len(pods))))
    return burst
