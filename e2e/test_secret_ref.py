"""Bring-your-own CA (`ca.secretRef`): issuance from it, and a CA swap without a trust gap."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography import x509

from e2e.bodies import shared_identity_body, trust_domain_body
from e2e.operator import OperatorProcess
from e2e.support import (
    GROUP,
    VERSION,
    Cluster,
    apply_body,
    bundle_data,
    custom,
    get_td,
    leaf_of,
    make_test_ca,
    openssl_verify,
    secret_data,
    unique,
    wait_condition,
    wait_for,
)

OPERATOR_NS = "trustwarden-system"


def ca_secret_body(name: str, cert: bytes, key: bytes) -> dict[str, object]:
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return {
        "metadata": {"name": name},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(cert), "tls.key": b64(key), "ca.crt": b64(cert)},
    }


def issued_by(chain: bytes, ca_pem: bytes) -> bool:
    try:
        leaf_of(chain).verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    except Exception:
        return False
    return True


def test_secret_ref_ca_swap_has_no_trust_gap(
    cluster: Cluster, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    secret_name, td = unique("corp-ca"), unique("byo")
    ca_a, key_a = make_test_ca("corp CA A")
    ca_b, key_b = make_test_ca("corp CA B")
    cluster.core.create_namespaced_secret(OPERATOR_NS, ca_secret_body(secret_name, ca_a, key_a))
    apply_body(
        cluster,
        trust_domain_body(
            td, trust_domain=f"{td}.example.com", ca={"secretRef": {"name": secret_name}}
        ),
    )
    try:
        wait_condition(lambda: get_td(cluster, td), "Ready", "True")
        apply_body(cluster, shared_identity_body(namespace, "api", td))
        first = wait_for(
            lambda: secret_data(cluster, namespace, "api-svid"), timeout=60, what="the first SVID"
        )
        assert issued_by(first["tls.crt"], ca_a)
        cluster.core.replace_namespaced_secret(
            secret_name, OPERATOR_NS, ca_secret_body(secret_name, ca_b, key_b)
        )

        def moved_to_b() -> bool:
            data = secret_data(cluster, namespace, "api-svid")
            bundle = bundle_data(cluster, namespace) or {}
            assert data is not None, "the SVID Secret vanished"
            result = openssl_verify(tmp_path, data["tls.crt"], bundle.get("ca.crt", ""))
            assert result.returncode == 0, f"trust gap: {result.stdout}{result.stderr}"
            return issued_by(data["tls.crt"], ca_b)

        wait_for(moved_to_b, timeout=120, interval=0.5, what="re-issue from the new CA")
        bundle = bundle_data(cluster, namespace)
        assert bundle is not None
        anchors = bundle[f"{td}.example.com.pem"]
        assert ca_a.decode().strip() in anchors and ca_b.decode().strip() in anchors

        def states() -> list[str]:
            return sorted(
                a["state"]
                for a in (get_td(cluster, td).get("status") or {}).get("authorities") or []
            )

        wait_for(
            lambda: states() == ["Active", "Retired"], timeout=30, what="A Retired and B Active"
        )
    finally:
        custom(cluster).delete_cluster_custom_object(GROUP, VERSION, "trustdomains", td)
        cluster.core.delete_namespaced_secret(secret_name, OPERATOR_NS)
