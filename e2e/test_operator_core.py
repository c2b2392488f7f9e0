"""Operator core on the real control plane: TrustDomains, Shared identities, scoped bundles."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from e2e.conftest import OperatorSlot
from e2e.operator import OperatorProcess
from e2e.support import (
    GROUP,
    VERSION,
    Cluster,
    apply_identity,
    apply_yaml,
    bundle_data,
    condition,
    custom,
    get_td,
    get_wid,
    leaf_of,
    make_test_ca,
    openssl_verify,
    secret_data,
    serial_of,
    trust_domain,
    unique,
    wait_condition,
    wait_for,
)


class Domain:
    def __init__(self, cluster: Cluster, name: str, trust_domain: str) -> None:
        self.cluster, self.name, self.trust_domain = cluster, name, trust_domain

    def read(self) -> dict[str, object]:
        return get_td(self.cluster, self.name)


@pytest.fixture
def domain(cluster: Cluster, operator: OperatorProcess) -> Iterator[Domain]:
    with trust_domain(cluster, {"selfSigned": {"ttl": "2160h"}}, policy={"maxTTL": "24h"}) as (
        name,
        td,
    ):
        yield Domain(cluster, name, td)


def shared_identity(
    cluster: Cluster,
    namespace: str,
    domain: Domain,
    name: str = "api",
    *,
    ttl: str = "1h",
    renew_at: str = "50%",
    extra: dict[str, Any] | None = None,
) -> None:
    apply_identity(
        cluster,
        namespace,
        name,
        domain.name,
        delivery={"mode": "Shared", "secretName": f"{name}-svid"},
        serviceAccountName=name,
        dnsNames=[f"{name}.{{namespace}}.svc"],
        ttl=ttl,
        renewAt=renew_at,
        usages=["server"],
        owner="team@example.org",
        **(extra or {}),
    )


def wait_secret(
    cluster: Cluster, namespace: str, name: str, *, timeout: float = 60
) -> dict[str, bytes]:
    return wait_for(
        lambda: secret_data(cluster, namespace, name),
        timeout=timeout,
        what=f"Secret {namespace}/{name}",
    )


def test_self_signed_domain_becomes_ready(cluster: Cluster, domain: Domain) -> None:
    obj = wait_condition(domain.read, "Ready", "True")
    status = obj["status"]
    assert condition(obj, "CAReady")["status"] == "True"
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    (authority,) = status["authorities"]
    assert authority["state"] == "Active"
    # The CA key lives only in the operator namespace.
    ca = secret_data(cluster, "trustwarden-system", f"trustwarden-ca-{domain.name}")
    assert ca is not None and any(k.endswith(".key") for k in ca)


def test_shared_identity_secret_verifies_with_openssl(
    cluster: Cluster, domain: Domain, namespace: str, tmp_path: Path
) -> None:
    shared_identity(cluster, namespace, domain)
    data = wait_secret(cluster, namespace, "api-svid")
    bundle = wait_for(
        lambda: bundle_data(cluster, namespace), timeout=30, what="the namespace bundle"
    )
    result = openssl_verify(
        tmp_path, data["tls.crt"], bundle["ca.crt"], bundle[f"{domain.trust_domain}.crl.pem"]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    leaf = leaf_of(data["tls.crt"])
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://{domain.trust_domain}/ns/{namespace}/sa/api"
    ]
    assert sans.get_values_for_type(x509.DNSName) == [f"api.{namespace}.svc"]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    # TTL exact: notAfter is issuance + 1h; notBefore is back-dated 5 minutes for clock skew.
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=1, minutes=5)
    assert data["ca.crt"].decode() == bundle[f"{domain.trust_domain}.pem"]
    secret = cluster.core.read_namespaced_secret("api-svid", namespace)
    assert secret.type == "kubernetes.io/tls"
    assert secret.metadata.owner_references[0].kind == "WorkloadIdentity"
    annotations = secret.metadata.annotations
    assert annotations["trustwarden.io/serial"] == format(leaf.serial_number, "x")
    wid = wait_condition(lambda: get_wid(cluster, namespace, "api"), "Ready", "True")
    assert wid["status"]["issued"] == 1
    assert wid["status"]["spiffeID"] == f"spiffe://{domain.trust_domain}/ns/{namespace}/sa/api"


def test_bundles_are_scoped_to_entitled_namespaces(
    cluster: Cluster, domain: Domain, operator: OperatorProcess
) -> None:
    partner_pem = _external_anchor_pem(cluster, domain)
    partner = unique("partner")
    apply_yaml(
        cluster,
        f"""
apiVersion: trustwarden.io/v1alpha1
kind: TrustDomain
metadata: {{name: {partner}}}
spec:
  trustDomain: {partner}.example.net
  ca:
    external:
      bundle: |
{_indent(partner_pem, 8)}
""",
    )
    try:
        with (
            cluster.namespace() as empty,
            cluster.namespace() as plain,
            cluster.namespace() as federated,
        ):
            shared_identity(cluster, plain, domain)
            shared_identity(cluster, federated, domain, extra={"federatesWith": [partner]})
            plain_bundle = wait_for(
                lambda: bundle_data(cluster, plain), timeout=30, what="plain bundle"
            )
            fed_bundle = wait_for(
                lambda: (
                    (b := bundle_data(cluster, federated))
                    and f"{partner}.example.net.pem" in b
                    and b
                ),
                timeout=30,
                what="federated bundle with the partner anchors",
            )
            assert set(plain_bundle) == {
                "ca.crt",
                f"{domain.trust_domain}.pem",
                f"{domain.trust_domain}.crl.pem",
                "bundle.spiffe",
            }
            assert fed_bundle[f"{partner}.example.net.pem"].strip() == partner_pem.strip()
            assert partner_pem.strip() not in plain_bundle["ca.crt"]
            assert partner_pem.strip() in fed_bundle["ca.crt"]
            assert (
                f"{partner}.example.net.crl.pem" not in fed_bundle
            )  # external domains issue nothing
            # Operator has had time to publish everywhere it wants to; the empty one stays empty.
            wait_for(
                lambda: secret_data(cluster, federated, "api-svid"),
                timeout=30,
                what="federated Secret",
            )
            assert bundle_data(cluster, empty) is None
            fed_secret = secret_data(cluster, federated, "api-svid")
            assert fed_secret is not None and partner_pem.strip().encode() in fed_secret["ca.crt"]
    finally:
        custom(cluster).delete_cluster_custom_object(GROUP, VERSION, "trustdomains", partner)


def test_bundle_is_restored_after_edit_and_delete(
    cluster: Cluster, domain: Domain, namespace: str
) -> None:
    shared_identity(cluster, namespace, domain)
    original = wait_for(lambda: bundle_data(cluster, namespace), timeout=30, what="bundle")
    cluster.core.patch_namespaced_config_map(
        "trustwarden-bundle", namespace, {"data": {"ca.crt": "tampered"}}
    )
    wait_for(
        lambda: bundle_data(cluster, namespace) == original,
        timeout=30,
        what="the edited bundle to be restored",
    )
    cluster.core.delete_namespaced_config_map("trustwarden-bundle", namespace)
    wait_for(
        lambda: bundle_data(cluster, namespace) == original,
        timeout=30,
        what="the deleted bundle to be restored",
    )


def test_short_ttl_renews_within_the_jitter_bound(
    cluster: Cluster, domain: Domain, namespace: str
) -> None:
    shared_identity(cluster, namespace, domain, ttl="10m", renew_at="10%")
    first = wait_secret(cluster, namespace, "api-svid")
    first_leaf = leaf_of(first["tls.crt"])
    issued_at = first_leaf.not_valid_after_utc - timedelta(minutes=10)
    renewed = wait_for(
        lambda: (
            (d := secret_data(cluster, namespace, "api-svid"))
            and serial_of(d["tls.crt"]) != first_leaf.serial_number
            and d
        ),
        timeout=150,
        what="the 10m certificate to renew",
    )
    second_leaf = leaf_of(renewed["tls.crt"])
    renewed_at = second_leaf.not_valid_after_utc - timedelta(minutes=10)
    # 10% of 10m is 60s after issuance; the jitter brings it forward by at most half of that.
    assert timedelta(seconds=25) <= renewed_at - issued_at <= timedelta(seconds=75)


def test_spec_change_tampering_and_deletion_are_repaired(
    cluster: Cluster, domain: Domain, namespace: str
) -> None:
    shared_identity(cluster, namespace, domain)
    first = wait_secret(cluster, namespace, "api-svid")
    serial = serial_of(first["tls.crt"])
    # Spec change: a new DNS name means a new certificate.
    custom(cluster).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "workloadidentities",
        "api",
        {"spec": {"dnsNames": ["edge.{namespace}.svc"]}},
    )

    def reissued_with_new_dns() -> bool:
        data = secret_data(cluster, namespace, "api-svid")
        if not data or serial_of(data["tls.crt"]) == serial:
            return False
        sans = (
            leaf_of(data["tls.crt"])
            .extensions.get_extension_for_class(x509.SubjectAlternativeName)
            .value
        )
        return sans.get_values_for_type(x509.DNSName) == [f"edge.{namespace}.svc"]

    wait_for(reissued_with_new_dns, timeout=60, what="re-issue after the dnsNames change")
    # Tampering: garbage in tls.crt is replaced by a valid certificate.
    cluster.core.patch_namespaced_secret(
        "api-svid", namespace, {"data": {"tls.crt": base64.b64encode(b"garbage").decode()}}
    )

    def valid_again() -> bool:
        data = secret_data(cluster, namespace, "api-svid")
        return bool(data and data["tls.crt"].startswith(b"-----BEGIN CERTIFICATE-----"))

    wait_for(valid_again, timeout=60, what="the tampered Secret to be repaired")
    # Deletion: the Secret comes back.
    cluster.core.delete_namespaced_secret("api-svid", namespace)
    wait_secret(cluster, namespace, "api-svid")


def test_deleting_the_identity_revokes_its_serial(
    cluster: Cluster, domain: Domain, namespace: str, tmp_path: Path
) -> None:
    shared_identity(cluster, namespace, domain)
    data = wait_secret(cluster, namespace, "api-svid")
    serial = serial_of(data["tls.crt"])
    # A second identity keeps the namespace entitled, so its bundle (and CRL) stays.
    shared_identity(cluster, namespace, domain, name="keeper")
    wait_secret(cluster, namespace, "keeper-svid")
    custom(cluster).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "workloadidentities", "api"
    )

    def crl_lists_serial() -> bool:
        bundle = bundle_data(cluster, namespace) or {}
        crl = bundle.get(f"{domain.trust_domain}.crl.pem")
        if not crl:
            return False
        (tmp_path / "crl.pem").write_text(crl)
        text = subprocess.run(
            ["openssl", "crl", "-in", str(tmp_path / "crl.pem"), "-noout", "-text"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return format(serial, "X") in text.replace(":", "").upper()

    wait_for(crl_lists_serial, timeout=60, what=f"serial {serial:x} in the CRL")
    bundle = bundle_data(cluster, namespace)
    assert bundle is not None
    result = openssl_verify(
        tmp_path, data["tls.crt"], bundle["ca.crt"], bundle[f"{domain.trust_domain}.crl.pem"]
    )
    assert result.returncode != 0 and "revoked" in (result.stdout + result.stderr)
    # The Secret goes once the revocation is stored; the same flush may publish the CRL first.
    wait_for(
        lambda: secret_data(cluster, namespace, "api-svid") is None,
        timeout=30,
        what="the deleted identity's Secret to be removed",
    )


def test_restart_reissues_nothing_valid(
    cluster: Cluster, domain: Domain, namespace: str, operator_slot: OperatorSlot
) -> None:
    for name in ("a", "b", "c"):
        shared_identity(cluster, namespace, domain, name=name)
    before = {
        n: serial_of(wait_secret(cluster, namespace, f"{n}-svid")["tls.crt"])
        for n in ("a", "b", "c")
    }
    operator_slot.start()  # stops the running operator and starts a fresh one
    # The new process has loaded every cache and reconciled every identity: statuses agree.
    for name in ("a", "b", "c"):
        wait_condition(lambda n=name: get_wid(cluster, namespace, n), "Ready", "True")
    wait_for(
        lambda: "trustwarden_certificates_issued_total" in (operator_slot.ensure().metrics() or ""),
        timeout=30,
        what="metrics from the restarted operator",
    )
    after = {
        n: serial_of(secret_data(cluster, namespace, f"{n}-svid")["tls.crt"])
        for n in ("a", "b", "c")
    }  # type: ignore[index]
    assert after == before
    metrics = operator_slot.ensure().metrics() or ""
    assert "trustwarden_certificates_renewed_total{" not in metrics


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        ("missing-domain", "TrustDomainNotFound"),
        ("ttl-above-cap", "TTLAboveCap"),
        ("unknown-federation", "FederationNotFound"),
        ("namespace-not-allowed", "NamespaceNotAllowed"),
    ],
)
def test_rules_needing_other_objects_are_reported_on_status(
    cluster: Cluster, domain: Domain, namespace: str, problem: str, reason: str
) -> None:
    ref = domain.name
    extra = ""
    ttl = "1h"
    if problem == "missing-domain":
        ref = "no-such-domain"
    elif problem == "ttl-above-cap":
        ttl = "48h"
    elif problem == "unknown-federation":
        extra = "  federatesWith: [no-such-partner]"
    elif problem == "namespace-not-allowed":
        custom(cluster).patch_cluster_custom_object(
            GROUP,
            VERSION,
            "trustdomains",
            domain.name,
            {"spec": {"policy": {"allowedNamespaces": {"matchLabels": {"team": "payments"}}}}},
        )
    apply_yaml(
        cluster,
        f"""
apiVersion: trustwarden.io/v1alpha1
kind: WorkloadIdentity
metadata: {{name: api, namespace: {namespace}}}
spec:
  trustDomain: {ref}
  delivery: {{mode: Shared, secretName: api-svid}}
  ttl: {ttl}
{extra}
""",
    )
    obj = wait_condition(
        lambda: get_wid(cluster, namespace, "api"), "Ready", "False", reason=reason
    )
    message = condition(obj, "Ready")["message"]  # type: ignore[index]
    assert f"WorkloadIdentity {namespace}/api" in message or "TrustDomain" in message
    assert secret_data(cluster, namespace, "api-svid") is None
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "-o", "jsonpath={.items[*].reason}"
    ).stdout
    assert reason in events


def test_invalid_later_spec_keeps_the_issued_certificate(
    cluster: Cluster, domain: Domain, namespace: str
) -> None:
    shared_identity(cluster, namespace, domain)
    serial = serial_of(wait_secret(cluster, namespace, "api-svid")["tls.crt"])
    custom(cluster).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "workloadidentities", "api", {"spec": {"ttl": "48h"}}
    )
    wait_condition(
        lambda: get_wid(cluster, namespace, "api"), "Ready", "False", reason="TTLAboveCap"
    )
    data = secret_data(cluster, namespace, "api-svid")
    assert data is not None and serial_of(data["tls.crt"]) == serial


def test_foreign_secret_is_never_touched(cluster: Cluster, domain: Domain, namespace: str) -> None:
    cluster.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "api-svid"}, "stringData": {"owner": "someone else"}}
    )
    shared_identity(cluster, namespace, domain)
    wait_condition(
        lambda: get_wid(cluster, namespace, "api"), "Ready", "False", reason="SecretConflict"
    )
    secret = cluster.core.read_namespaced_secret("api-svid", namespace)
    assert secret.data == {"owner": base64.b64encode(b"someone else").decode()}
    assert not (secret.metadata.labels or {})


def test_ca_rollover_publishes_before_signing(
    cluster: Cluster, domain: Domain, tmp_path: Path
) -> None:
    with cluster.namespace() as ns_a, cluster.namespace() as ns_b:
        for ns in (ns_a, ns_b):
            shared_identity(cluster, ns, domain)
            wait_secret(cluster, ns, "api-svid")
        old = wait_condition(domain.read, "Ready", "True")["status"]["authorities"][0]["sha256"]
        custom(cluster).patch_cluster_custom_object(
            GROUP,
            VERSION,
            "trustdomains",
            domain.name,
            {
                "metadata": {
                    "annotations": {
                        "trustwarden.io/rotate": "e2e-1",
                        "trustwarden.io/activate-after": "5s",
                    }
                }
            },
        )
        seen_new_anchor: set[str] = set()
        new_sha: str | None = None

        def rolled_over() -> bool:
            nonlocal new_sha
            authorities = (domain.read().get("status") or {}).get("authorities") or []
            for item in authorities:
                if item["sha256"] != old:
                    new_sha = item["sha256"]
            for ns in (ns_a, ns_b):
                bundle = bundle_data(cluster, ns) or {}
                data = secret_data(cluster, ns, "api-svid")
                assert data is not None, f"Secret in {ns} vanished"
                # Every live leaf verifies against its namespace bundle at every observation.
                result = openssl_verify(tmp_path / ns, data["tls.crt"], bundle.get("ca.crt", ""))
                assert result.returncode == 0, f"{ns}: {result.stdout}{result.stderr}"
                anchors = {
                    _sha(c) for c in x509.load_pem_x509_certificates(bundle["ca.crt"].encode())
                }
                if new_sha in anchors:
                    seen_new_anchor.add(ns)
                issuer_is_new = new_sha is not None and _issued_by_sha(
                    data["tls.crt"], new_sha, bundle["ca.crt"]
                )
                if issuer_is_new:
                    # The new authority signed this leaf: its anchor must already be everywhere.
                    assert seen_new_anchor == {ns_a, ns_b}, (
                        "a leaf was signed before every bundle held its anchor"
                    )
            return all(
                new_sha is not None
                and (d := secret_data(cluster, ns, "api-svid")) is not None
                and _issued_by_sha(
                    d["tls.crt"], new_sha, (bundle_data(cluster, ns) or {}).get("ca.crt", "")
                )
                for ns in (ns_a, ns_b)
            )

        wait_for(
            rolled_over,
            timeout=120,
            interval=0.5,
            what="both identities to move to the new authority",
        )

        def states() -> dict[str, str]:
            return {a["sha256"]: a["state"] for a in domain.read()["status"]["authorities"]}

        wait_for(
            lambda: states().get(old) == "Retired" and states().get(new_sha or "") == "Active",
            timeout=30,
            what="status to show the old authority Retired and the new one Active",
        )


def _sha(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import hashes

    return cert.fingerprint(hashes.SHA256()).hex()


def _issued_by_sha(chain: bytes, sha: str, anchors_pem: str) -> bool:
    if not anchors_pem:
        return False
    leaf = leaf_of(chain)
    for anchor in x509.load_pem_x509_certificates(anchors_pem.encode()):
        if _sha(anchor) == sha:
            try:
                leaf.verify_directly_issued_by(anchor)
                return True
            except (ValueError, TypeError, Exception):
                return False
    return False


def _external_anchor_pem(cluster: Cluster, domain: Domain) -> str:
    return make_test_ca("partner root", days=30)[0].decode()


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.strip().splitlines())
