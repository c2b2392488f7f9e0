"""The reliability suite's own control plane: started with hack/cluster-up.sh in a private
directory, with an audit log of Secret access, a least-privilege identity for the operator,
and the ability to restart one component (etcd or kube-apiserver) with the same or extra flags.

Processes are only ever stopped by the pid that hack/cluster-up.sh (or this module) recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client, config

from e2e.support import REPO, Cluster, api_ready, wait_for

OPERATOR_USER = "trustwarden-operator"
OPERATOR_NAMESPACE = "tw-rel-system"

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  # Who touched which Secret, never the Secret's content (level Metadata): every request of
  # the operator's user, and every write by anyone (the garbage collector, the tests).
  - level: Metadata
    users: ["trustwarden-operator"]
    resources: [{group: "", resources: ["secrets"]}]
  - level: Metadata
    verbs: ["create", "update", "patch", "delete"]
    resources: [{group: "", resources: ["secrets", "pods"]}]
  - level: None
"""

# What the operator needs, and nothing else (cluster-wide because Secrets, bundles and pods
# live in every workload namespace).
OPERATOR_RBAC = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "trustwarden-reliability"},
        "rules": [
            {
                "apiGroups": ["trustwarden.io"],
                "resources": ["trustdomains", "workloadidentities"],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": ["trustwarden.io"],
                "resources": ["trustdomains/status", "workloadidentities/status"],
                "verbs": ["get", "patch", "update"],
            },
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            },
            # As the chart's ClusterRole: outside its own namespace, ConfigMaps are read,
            # rewritten and deleted by the name trustwarden-bundle only (issue 15).
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "verbs": ["list", "watch", "create"],
            },
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["trustwarden-bundle"],
                "verbs": ["get", "update", "delete"],
            },
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {
                "apiGroups": [""],
                "resources": ["namespaces"],
                "verbs": ["get", "list", "watch", "create"],
            },
            {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            },
            {
                "apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["mutatingwebhookconfigurations"],
                "verbs": ["get", "list", "watch", "create", "update", "patch"],
            },
            {
                "apiGroups": ["apiextensions.k8s.io"],
                "resources": ["customresourcedefinitions"],
                "verbs": ["get", "list", "watch"],
            },
            # Pod certificates, as in the chart (Kubernetes 1.37+).
            {
                "apiGroups": ["certificates.k8s.io"],
                "resources": ["podcertificaterequests"],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": ["certificates.k8s.io"],
                "resources": ["podcertificaterequests/status"],
                "verbs": ["update"],
            },
            {
                "apiGroups": ["certificates.k8s.io"],
                "resources": ["signers"],
                "resourceNames": ["trustwarden.io/*"],
                "verbs": ["sign", "attest"],
            },
            {
                "apiGroups": ["certificates.k8s.io"],
                "resources": ["clustertrustbundles"],
                "verbs": ["create", "update", "delete"],
            },
        ],
    },
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "trustwarden-reliability", "namespace": OPERATOR_NAMESPACE},
        "rules": [
            {  # its ledgers and revocation lists
                "apiGroups": [""],
                "resources": ["configmaps"],
                "verbs": ["get", "list", "watch", "create", "update", "delete"],
            }
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "trustwarden-reliability", "namespace": OPERATOR_NAMESPACE},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "trustwarden-reliability",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "trustwarden-reliability"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "trustwarden-reliability",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}
        ],
    },
]


@dataclass
class ControlPlane:
    """hack/cluster-up.sh's processes in `directory`, and ways to disturb them."""

    directory: Path
    cluster: Cluster
    started_here: bool
    restarts: list[dict[str, object]] = field(default_factory=list)
    _children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # --- start and stop ---

    @classmethod
    def up(cls, directory: Path) -> ControlPlane:
        directory.parent.mkdir(parents=True, exist_ok=True)
        kubeconfig = directory / "kubeconfig"
        started_here = False
        if not (kubeconfig.exists() and api_ready(kubeconfig)):
            audit_dir = directory.parent
            policy = audit_dir / "audit-policy.yaml"
            policy.write_text(AUDIT_POLICY)
            audit_log = audit_dir / "audit.log"
            audit_log.unlink(missing_ok=True)
            extra = (
                f"--audit-policy-file={policy} --audit-log-path={audit_log} "
                "--audit-log-maxsize=200 --audit-log-maxbackup=1"
            )
            env = {**os.environ, "CLUSTER_DIR": str(directory), "APISERVER_EXTRA_ARGS": extra}
            subprocess.run([str(REPO / "hack" / "cluster-up.sh")], check=True, env=env)
            started_here = True
        api = config.new_client_from_config(config_file=str(kubeconfig))
        return cls(
            directory=directory,
            cluster=Cluster(directory=directory, kubeconfig=kubeconfig, api=api),
            started_here=started_here,
        )

    def down(self) -> None:
        env = {**os.environ, "CLUSTER_DIR": str(self.directory)}
        subprocess.run([str(REPO / "hack" / "cluster-down.sh")], check=False, env=env)
        for child in self._children:
            if child.poll() is None:
                child.wait(timeout=30)

    @property
    def audit_log(self) -> Path:
        return self.directory.parent / "audit.log"

    # --- one component at a time ---

    def pid(self, component: str) -> int:
        return int((self.directory / "pids" / f"{component}.pid").read_text().strip())

    def argv(self, component: str) -> list[str]:
        raw = Path(f"/proc/{self.pid(component)}/cmdline").read_bytes()
        return [part.decode() for part in raw.split(b"\0") if part]

    def stop_component(self, component: str, timeout: float = 30) -> list[str]:
        """SIGTERM one component (by its recorded pid) and wait for it to exit; returns the
        command line to start it again."""
        pid = self.pid(component)
        argv = self.argv(component)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid):
            self._reap()
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
            time.sleep(0.05)
        return argv

    def start_component(self, component: str, argv: list[str]) -> None:
        log = (self.directory / "logs" / f"{component}.log").open("ab")
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self._children.append(process)
        (self.directory / "pids" / f"{component}.pid").write_text(f"{process.pid}\n")

    def restart(
        self,
        component: str,
        *,
        add: tuple[str, ...] = (),
        drop_prefixes: tuple[str, ...] = (),
        down_for: float = 0.0,
    ) -> float:
        """Restart etcd or kube-apiserver, optionally with changed flags; wait until the API
        answers /readyz again. Returns the seconds the API was unavailable (as seen by us)."""
        started = time.monotonic()
        argv = self.stop_component(component)
        argv = [a for a in argv if not a.startswith(drop_prefixes)] if drop_prefixes else argv
        argv = [*argv, *add]
        if down_for:
            _sleep_until(started + down_for)
        self.start_component(component, argv)
        self.wait_ready()
        elapsed = time.monotonic() - started
        self.restarts.append({"component": component, "seconds": round(elapsed, 1), "add": add})
        return elapsed

    def wait_ready(self, timeout: float = 120) -> None:
        wait_for(
            lambda: api_ready(self.cluster.kubeconfig),
            timeout=timeout,
            interval=0.5,
            what="the API server to answer /readyz",
        )

    def _reap(self) -> None:
        for child in self._children:
            child.poll()

    # --- the operator's own identity ---

    def operator_kubeconfig(self) -> Path:
        """A client certificate for user trustwarden-operator (not system:masters, so API
        priority and max-in-flight limits apply to it) bound to a least-privilege role."""
        target = self.directory / "operator.kubeconfig"
        for obj in OPERATOR_RBAC:  # idempotent, and current for a kept control plane
            self.cluster.kubectl("apply", "-f", "-", input_text=json.dumps(obj))
        if target.exists():
            return target
        pki = self.directory / "pki"
        ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, OPERATOR_USER)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        (pki / "operator.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path = pki / "operator.key"
        key_path.touch(mode=0o600)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        server = self.cluster.api.configuration.host
        target.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "local",
                            "cluster": {
                                "server": server,
                                "certificate-authority": str(pki / "ca.crt"),
                            },
                        }
                    ],
                    "users": [
                        {
                            "name": OPERATOR_USER,
                            "user": {
                                "client-certificate": str(pki / "operator.crt"),
                                "client-key": str(key_path),
                            },
                        }
                    ],
                    "contexts": [
                        {"name": "local", "context": {"cluster": "local", "user": OPERATOR_USER}}
                    ],
                    "current-context": "local",
                }
            )
        )
        target.chmod(0o600)
        return target

    # --- reading the audit log ---

    def audit_events(self) -> Iterator[dict[str, object]]:
        for path in sorted(self.audit_log.parent.glob("audit*.log")):
            with path.open() as handle:
                for line in handle:
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _sleep_until(deadline: float) -> None:
    while time.monotonic() < deadline:
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def core(cluster: Cluster) -> client.CoreV1Api:
    return client.CoreV1Api(cluster.api)
