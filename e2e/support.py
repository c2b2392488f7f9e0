"""Shared e2e helpers: the local control plane, per-test namespaces, waiting on conditions."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from e2e.bodies import identity_body, trust_domain_body

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def pinned_versions() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "hack" / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            pins[key.strip()] = value.strip()
    return pins


def cache_root() -> Path:
    return Path(os.environ.get("TRUSTWARDEN_CACHE", Path.home() / ".cache" / "trustwarden"))


def kubectl_path() -> str:
    return os.environ.get("TRUSTWARDEN_KUBECTL") or str(
        cache_root() / "kubernetes" / pinned_versions()["KUBE_VERSION"] / "kubectl"
    )


def helm_path() -> str:
    return os.environ.get("TRUSTWARDEN_HELM") or str(
        cache_root() / "helm" / pinned_versions()["HELM_VERSION"] / "helm"
    )


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except AssertionError as exc:  # a probe may assert to explain what it is waiting for
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last: {last_error})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def gone(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


@dataclass
class Cluster:
    """A running local control plane, reached through its admin kubeconfig."""

    directory: Path
    kubeconfig: Path
    api: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def kubectl(
        self, *args: str, check: bool = True, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [kubectl_path(), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            input=input_text,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    @contextmanager
    def namespace(
        self, prefix: str = "tw-e2e", labels: dict[str, str] | None = None
    ) -> Iterator[str]:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels or {}))
        )
        try:
            yield name
        finally:
            try:
                self.core.delete_namespace(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def ensure_cluster(directory: Path) -> tuple[Cluster, bool]:
    """Start the control plane with hack/cluster-up.sh, or reuse a healthy one.

    Returns the cluster and whether this call started it (so the caller knows to stop it).
    """
    kubeconfig = directory / "kubeconfig"
    already_up = kubeconfig.exists() and api_ready(kubeconfig)
    if not already_up:
        env = {**os.environ, "CLUSTER_DIR": str(directory)}
        subprocess.run([str(REPO / "hack" / "cluster-up.sh")], check=True, env=env)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    return Cluster(directory=directory, kubeconfig=kubeconfig, api=api), not already_up


def stop_cluster(directory: Path) -> None:
    env = {**os.environ, "CLUSTER_DIR": str(directory)}
    subprocess.run([str(REPO / "hack" / "cluster-down.sh")], check=True, env=env)


def api_ready(kubeconfig: Path) -> bool:
    """The API server answers /readyz with ok (an API server that hangs is not ready)."""
    try:
        result = subprocess.run(
            [
                kubectl_path(),
                "--kubeconfig",
                str(kubeconfig),
                "--request-timeout=5s",
                "get",
                "--raw",
                "/readyz",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0 and result.stdout.strip() == "ok"


# --- trustwarden objects and certificate checks ---

GROUP, VERSION = "trustwarden.io", "v1alpha1"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def custom(cluster: Cluster) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(cluster.api)


def get_td(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict(custom(cluster).get_cluster_custom_object(GROUP, VERSION, "trustdomains", name))


def get_wid(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(
        custom(cluster).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "workloadidentities", name
        )
    )


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return dict(cond)
    return None


def wait_condition(
    read: Callable[[], dict[str, Any]],
    type_: str,
    status: str,
    *,
    timeout: float = 60,
    reason: str | None = None,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = read()
        cond = condition(obj, type_)
        if cond is None or cond["status"] != status or (reason and cond["reason"] != reason):
            raise AssertionError(f"{type_} is {cond}")
        return obj

    return wait_for(
        probe, timeout=timeout, what=f"{type_}={status}" + (f" ({reason})" if reason else "")
    )


def secret_data(cluster: Cluster, namespace: str, name: str) -> dict[str, bytes] | None:
    try:
        secret = cluster.core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def bundle_data(cluster: Cluster, namespace: str) -> dict[str, str] | None:
    try:
        cm = cluster.core.read_namespaced_config_map("trustwarden-bundle", namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dict(cm.data or {})


def crl_serials(cluster: Cluster, namespace: str, trust_domain: str) -> set[int]:
    """Every serial revoked in the namespace bundle's CRLs of `trust_domain` (one CRL per
    live authority, concatenated)."""
    pem = (bundle_data(cluster, namespace) or {}).get(f"{trust_domain}.crl.pem", "")
    serials: set[int] = set()
    for block in pem.split("-----END X509 CRL-----")[:-1]:
        crl = x509.load_pem_x509_crl((block + "-----END X509 CRL-----\n").encode())
        serials.update(entry.serial_number for entry in crl)
    return serials


def leaf_of(chain_pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificates(chain_pem)[0]


def serial_of(chain_pem: bytes) -> int:
    return int(leaf_of(chain_pem).serial_number)


def openssl_verify(
    tmp: Path, leaf_chain: bytes, anchors: str, crl: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Verify a leaf with openssl against anchors (and a CRL); returns the completed process."""
    tmp.mkdir(parents=True, exist_ok=True)
    certs = x509.load_pem_x509_certificates(leaf_chain)
    from cryptography.hazmat.primitives.serialization import Encoding

    (tmp / "leaf.pem").write_bytes(certs[0].public_bytes(Encoding.PEM))
    (tmp / "untrusted.pem").write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs[1:]))
    (tmp / "anchors.pem").write_text(anchors)
    args = ["openssl", "verify", "-CAfile", str(tmp / "anchors.pem")]
    if len(certs) > 1:
        args += ["-untrusted", str(tmp / "untrusted.pem")]
    if crl is not None:
        (tmp / "crl.pem").write_text(crl)
        args += ["-crl_check", "-CRLfile", str(tmp / "crl.pem")]
    args.append(str(tmp / "leaf.pem"))
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


def apply_yaml(
    cluster: Cluster, text: str, *extra: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", *extra, "-f", "-", check=check, input_text=text)


def apply_body(cluster: Cluster, body: dict[str, Any]) -> None:
    """kubectl apply one object built by e2e/bodies.py."""
    apply_yaml(cluster, json.dumps(body))


def apply_identity(cluster: Cluster, namespace: str, name: str, domain: str, **spec: Any) -> None:
    """Apply a WorkloadIdentity: spec.trustDomain plus `spec` (API field names)."""
    apply_body(cluster, identity_body(namespace, name, domain, **spec))


@contextmanager
def trust_domain(
    cluster: Cluster, ca: dict[str, Any] | None = None, **spec: Any
) -> Iterator[tuple[str, str]]:
    """A TrustDomain with a unique name (`spec` fields by API name); yields (object name,
    SPIFFE trust domain name)."""
    name = unique("td")
    apply_body(cluster, trust_domain_body(name, ca=ca, **spec))
    try:
        yield name, f"{name}.example.org"
    finally:
        try:
            custom(cluster).delete_cluster_custom_object(GROUP, VERSION, "trustdomains", name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def make_test_ca(common_name: str, *, days: int = 60) -> tuple[bytes, bytes]:
    """A self-signed CA certificate and its PKCS#8 key, both PEM, made independently of
    trustwarden.pki (what a user's own CA or a federated partner's root would be)."""
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "corp"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
