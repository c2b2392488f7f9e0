"""The benchmark's own control plane: hack/cluster-up.sh in bench/.state/cluster, with an audit
policy that logs (Metadata level) only the requests of the measured controllers' identities,
and ServiceAccount-token kubeconfigs for those identities."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client, config

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / "bench" / ".state"
BENCH_NS = "trustwarden-bench"
OPERATOR_SA = "trustwarden-operator"
CERT_MANAGER_SA = "cert-manager"
AUDITED_USERS = {
    "trustwarden": f"system:serviceaccount:{BENCH_NS}:{OPERATOR_SA}",
    "cert-manager": f"system:serviceaccount:{BENCH_NS}:{CERT_MANAGER_SA}",
}


def pinned(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            pins[key.strip()] = value.strip()
    return pins


def cache_root() -> Path:
    return Path(os.environ.get("TRUSTWARDEN_CACHE", Path.home() / ".cache" / "trustwarden"))


def kubectl_path() -> str:
    return os.environ.get("TRUSTWARDEN_KUBECTL") or str(
        cache_root()
        / "kubernetes"
        / pinned(REPO / "hack" / "versions.env")["KUBE_VERSION"]
        / "kubectl"
    )


AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    # One event per request, written when the response is complete.
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        {"level": "Metadata", "users": sorted(AUDITED_USERS.values())},
        {"level": "None"},
    ],
}


@dataclass
class BenchCluster:
    directory: Path
    audit_log: Path
    admin_kubeconfig: Path
    api: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def pids(self) -> dict[str, int]:
        found = {}
        for name in ("kube-apiserver", "etcd", "kube-controller-manager"):
            with contextlib.suppress(OSError, ValueError):
                found[name] = int((self.directory / "pids" / f"{name}.pid").read_text().strip())
        return found

    def kubectl(self, *args: str, input_text: str | None = None) -> str:
        result = subprocess.run(
            [kubectl_path(), "--kubeconfig", str(self.admin_kubeconfig), *args],
            capture_output=True,
            text=True,
            input=input_text,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def identity_kubeconfig(self, sa: str, path: Path) -> Path:
        """A kubeconfig that authenticates as ServiceAccount `sa` (bound to cluster-admin), so
        the audit policy can attribute its requests."""
        core = self.core
        try:
            core.create_namespace({"metadata": {"name": BENCH_NS}})
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        try:
            core.create_namespaced_service_account(BENCH_NS, {"metadata": {"name": sa}})
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        rbac = client.RbacAuthorizationV1Api(self.api)
        try:
            rbac.create_cluster_role_binding(
                {
                    "metadata": {"name": f"bench-{sa}"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "cluster-admin",
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": BENCH_NS}],
                }
            )
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        token = core.create_namespaced_service_account_token(
            sa, BENCH_NS, {"spec": {"expirationSeconds": 24 * 3600}}
        ).status.token
        admin = yaml.safe_load(self.admin_kubeconfig.read_text())
        cluster = admin["clusters"][0]
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{"name": sa, "user": {"token": token}}],
            "contexts": [{"name": sa, "context": {"cluster": cluster["name"], "user": sa}}],
            "current-context": sa,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(kubeconfig))
        path.chmod(0o600)
        return path


def _env(directory: Path) -> dict[str, str]:
    return {**os.environ, "CLUSTER_DIR": str(directory)}


def stop_cluster(directory: Path) -> None:
    subprocess.run(
        [str(REPO / "hack" / "cluster-down.sh")], check=False, env=_env(directory), timeout=120
    )


def start_cluster(state: Path, *, log=print) -> BenchCluster:  # type: ignore[no-untyped-def]
    """A fresh control plane in `state`/cluster with the audit policy; any previous one there is
    stopped first, so every run starts from an empty etcd."""
    directory = state / "cluster"
    audit_dir = state / "audit"
    if directory.exists():
        log(f"stopping the previous benchmark cluster in {directory}")
        stop_cluster(directory)
    audit_dir.mkdir(parents=True, exist_ok=True)
    policy = audit_dir / "policy.yaml"
    policy.write_text(yaml.safe_dump(AUDIT_POLICY))
    audit_log = audit_dir / "audit.log"
    audit_log.unlink(missing_ok=True)
    extra = " ".join(
        [
            os.environ.get("APISERVER_EXTRA_ARGS", ""),
            f"--audit-policy-file={policy}",
            f"--audit-log-path={audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--audit-log-maxsize=0",
        ]
    ).strip()
    started = time.monotonic()
    env = {**_env(directory), "APISERVER_EXTRA_ARGS": extra}
    subprocess.run([str(REPO / "hack" / "cluster-up.sh")], check=True, env=env, timeout=900)
    log(f"control plane up in {time.monotonic() - started:.0f}s ({directory})")
    kubeconfig = directory / "kubeconfig"
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = 64
    api = client.ApiClient(configuration)
    return BenchCluster(directory, audit_log, kubeconfig, api)


def start_kwok(directory: Path, *, log=print) -> None:  # type: ignore[no-untyped-def]
    """kwok against the benchmark's control plane (hack/kwok-up.sh): simulated Nodes for the
    scenarios that bind pods to them."""
    subprocess.run(
        [str(REPO / "hack" / "kwok-up.sh")], check=True, env=_env(directory), timeout=900
    )
    log("kwok managing simulated Nodes")
