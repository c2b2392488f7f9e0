"""The TrustDomain and WorkloadIdentity bodies the suites apply, built in one place (e2e,
e2e/reliability and bench import them). Spec fields are passed with their API names, e.g.
`trust_domain_body("prod", policy={"maxTTL": "24h"})`; hostile tests that must send what no
builder would (wrong types, missing fields) still write their bodies out by hand."""

from __future__ import annotations

from typing import Any

from trustwarden.names import API_VERSION

SELF_SIGNED: dict[str, Any] = {"selfSigned": {}}


def trust_domain_body(
    name: str, *, trust_domain: str | None = None, ca: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    """TrustDomain `name` for `<name>.example.org` (or `trust_domain`), selfSigned unless `ca`."""
    return {
        "apiVersion": API_VERSION,
        "kind": "TrustDomain",
        "metadata": {"name": name},
        "spec": {
            "trustDomain": trust_domain or f"{name}.example.org",
            "ca": ca if ca is not None else dict(SELF_SIGNED),
            **spec,
        },
    }


def identity_body(namespace: str, name: str, domain: str, **spec: Any) -> dict[str, Any]:
    """WorkloadIdentity namespace/name issuing from TrustDomain `domain`, with `spec` fields."""
    return {
        "apiVersion": API_VERSION,
        "kind": "WorkloadIdentity",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"trustDomain": domain, **spec},
    }


def shared_identity_body(namespace: str, name: str, domain: str, **spec: Any) -> dict[str, Any]:
    """A Shared WorkloadIdentity delivering into Secret `<name>-svid`."""
    return identity_body(
        namespace, name, domain, delivery={"mode": "Shared", "secretName": f"{name}-svid"}, **spec
    )


def pod_certificate_volume(
    signer: str, *, key_type: str = "ECDSAP256", max_expiration_seconds: int = 86400
) -> dict[str, Any]:
    """The projected volume `svid` of deploy/examples/pod-certificate.yaml: the kubelet's key
    and chain (tls.key, tls.crt) from `signer`, and its ClusterTrustBundle anchors (ca.crt)."""
    return {
        "name": "svid",
        "projected": {
            "sources": [
                {
                    "podCertificate": {
                        "signerName": signer,
                        "keyType": key_type,
                        "maxExpirationSeconds": max_expiration_seconds,
                        "keyPath": "tls.key",
                        "certificateChainPath": "tls.crt",
                    }
                },
                {
                    "clusterTrustBundle": {
                        "signerName": signer,
                        "labelSelector": {
                            "matchLabels": {"app.kubernetes.io/managed-by": "trustwarden"}
                        },
                        "path": "ca.crt",
                    }
                },
            ]
        },
    }
