"""The Helm chart on the real control plane: lint, every ci/ values file rendered and validated
by a server-side dry run, install -> upgrade -> uninstall with nothing left behind, CRDs
rendered from the one source in deploy/crds/ and kept on uninstall.

Installs here never start the operator (there is no kubelet). Their webhook configuration is
narrowed with an extra namespace label only these tests use, so a release under test never
gets a say over other tests' pods. The helpers at the top are shared with test_rbac.py and
test_ha.py.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import ssl
import subprocess
import tarfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.conftest import OperatorSlot
from e2e.operator import OperatorProcess
from e2e.support import REPO, Cluster, helm_path, wait_for

CHART = REPO / "deploy" / "helm" / "trustwarden"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
CRD_SOURCES = sorted((REPO / "deploy" / "crds").glob("*.yaml"))
CRD_NAMES = ("trustdomains.trustwarden.io", "workloadidentities.trustwarden.io")
# Only namespaces carrying this label (value: the release) are seen by a test release's webhook.
SCOPE_LABEL = "e2e.trustwarden.io/release"
LEASE = "trustwarden-leader"
WEBHOOK_NAME = "svid-injector.trustwarden.io"
INSTANCE = "app.kubernetes.io/instance"


# --------------------------------------------------------------------------- shared helpers


def helm(
    cluster: Cluster, *args: str, check: bool = True, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [helm_path(), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr.strip()}")
    return result


def release_name(prefix: str = "tw") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def scope_args(release: str) -> list[str]:
    """Values that confine a test release's webhook to namespaces labelled for it."""
    return ["--set-json", f'webhook.namespaceSelector.matchLabels={{"{SCOPE_LABEL}":"{release}"}}']


def render(cluster: Cluster, release: str, namespace: str, *values: str) -> list[dict[str, Any]]:
    out = helm(cluster, "template", release, str(CHART), "--namespace", namespace, *values).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def names_of(docs: list[dict[str, Any]], kind: str) -> list[str]:
    return [d["metadata"]["name"] for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {[names_of(found, kind)]}"
    return found[0]


@contextmanager
def installed(
    cluster: Cluster, release: str, namespace: str, *values: str
) -> Iterator[subprocess.CompletedProcess[str]]:
    """`helm install` (no --wait: pods never run here) and `helm uninstall` afterwards."""
    result = helm(cluster, "install", release, str(CHART), "--namespace", namespace, *values)
    try:
        yield result
    finally:
        helm(cluster, "uninstall", release, "--namespace", namespace, check=False)


def leftovers(cluster: Cluster, release: str) -> list[str]:
    """Objects of `release` still in the cluster, cluster-scoped or in any namespace."""
    kinds = (
        "deployments,services,serviceaccounts,configmaps,secrets,roles,rolebindings,"
        "poddisruptionbudgets,clusterroles,clusterrolebindings,mutatingwebhookconfigurations,"
        "customresourcedefinitions"
    )
    out = cluster.kubectl("get", kinds, "-A", "-l", f"{INSTANCE}={release}", "-o", "name").stdout
    return [line for line in out.splitlines() if line.strip()]


def service_account_kubeconfig(
    cluster: Cluster, namespace: str, service_account: str, path: Path
) -> Path:
    """A kubeconfig that authenticates as `service_account` with a TokenRequest token."""
    token = cluster.core.create_namespaced_service_account_token(
        service_account, namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": server}],
                "users": [{"name": service_account, "user": {"token": token}}],
                "contexts": [
                    {"name": "sa", "context": {"cluster": "local", "user": service_account}}
                ],
                "current-context": "sa",
            }
        )
    )
    path.chmod(0o600)
    return path


class ChartOperator(OperatorProcess):
    """`trustwarden run` with the chart's flags, as a local process: `--local` (the webhook is
    registered by URL) or, given `webhook_service`, exactly the in-cluster mode the
    Deployment runs (shared serving Secret, caBundle patched into the chart's configuration)."""

    def __init__(
        self,
        kubeconfig: Path,
        *,
        namespace: str,
        webhook_configuration: str,
        watch: tuple[str, ...] = (),
        webhook_service: str | None = None,
        name: str = "chart-operator",
        log_dir: Path | None = None,
    ) -> None:
        args = ["--webhook-configuration", webhook_configuration]
        for watched in watch:
            args += ["--watch-namespace", watched]
        super().__init__(
            kubeconfig, namespace=namespace, extra_args=tuple(args), name=name, log_dir=log_dir
        )
        self.webhook_service = webhook_service

    def command(self, **_: Any) -> list[str]:
        if self.webhook_service is None:
            return super().command()
        return super().command(extra=("--webhook-service", self.webhook_service), local=False)

    def forbidden(self) -> list[str]:
        """Log lines that say the API refused a request for lack of permission."""
        return [
            line
            for line in self.log().splitlines()
            if ("forbidden" in line.lower() or "Not enough permissions" in line)
            and "being terminated" not in line  # namespaces of finished tests, not RBAC
        ]


def live_leaders(cluster: Cluster, exclude: tuple[str, ...] = ()) -> list[str]:
    """Namespaces (but `exclude`) where a trustwarden operator holds a fresh Lease right now."""
    coordination = client.CoordinationV1Api(cluster.api)
    found = []
    now = datetime.now(UTC)
    for lease in coordination.list_lease_for_all_namespaces(
        field_selector=f"metadata.name={LEASE}"
    ).items:
        spec = lease.spec
        if lease.metadata.namespace in exclude or not spec.holder_identity or not spec.renew_time:
            continue
        renewed = spec.renew_time
        if renewed.tzinfo is None:
            renewed = renewed.replace(tzinfo=UTC)
        if (now - renewed).total_seconds() < (spec.lease_duration_seconds or 15) + 2:
            found.append(f"{lease.metadata.namespace} (holder {spec.holder_identity})")
    return found


def require_sole_operator(cluster: Cluster, operator_slot: OperatorSlot) -> None:
    """Stop this session's shared operator and make sure no other one is running.

    TrustDomains are cluster-scoped, so every trustwarden operator on a cluster reconciles every
    one of them, and a cluster-wide operator every WorkloadIdentity too: a second installation
    would fight over the test's objects (and disturb the other one's). So the tests that run
    their own operators stop the suite's shared one (the next test that needs it restarts it)
    and wait for any other (another developer's test run on the same cluster) to go away.
    """
    operator_slot.stop()
    deadline = time.monotonic() + 90
    while leaders := live_leaders(cluster):
        if time.monotonic() > deadline:
            message = (
                f"another trustwarden operator is running against this cluster: "
                f"{', '.join(leaders)}; these tests must be the only one"
            )
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        time.sleep(2)


def remove_stale_webhooks(cluster: Cluster) -> list[str]:
    """Delete injection webhook configurations left by `--local` operators that are gone.

    A local operator registers its webhook by URL (https://127.0.0.1:<port>/...). When the
    process stops, the configuration stays and, failing closed, refuses every pod in opted-in
    namespaces. Its owner re-creates it when it starts again.
    """
    admission = client.AdmissionregistrationV1Api(cluster.api)
    removed = []
    for config in admission.list_mutating_webhook_configuration().items:
        for webhook in config.webhooks or ():
            url = webhook.client_config.url
            if webhook.name != WEBHOOK_NAME or not url:
                continue
            parsed = urlparse(url)
            if parsed.hostname != "127.0.0.1" or _listening(parsed.port or 443):
                continue
            try:
                admission.delete_mutating_webhook_configuration(config.metadata.name)
                removed.append(config.metadata.name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
            break
    return removed


def warn_if_not_alone(cluster: Cluster, own: tuple[str, ...]) -> None:
    """After a test that ran its own operator: say so if another one started meanwhile, since
    it reconciles the same TrustDomains and a failure may be its doing, not the test's."""
    if others := live_leaders(cluster, exclude=own):
        warnings.warn(
            f"another trustwarden operator ran during this test ({', '.join(others)}): "
            "a failure here may be interference between the two",
            stacklevel=2,
        )


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def metric_names(expr: str) -> set[str]:
    """The trustwarden_* series an expression reads."""
    return set(re.findall(r"\btrustwarden_[a-z0-9_]+", expr))


def monitoring_expressions(cluster: Cluster) -> dict[str, str]:
    """Every PromQL expression of the PrometheusRule and the dashboard, by where it is."""
    docs = render(cluster, "tw", "tw-system", "-f", str(CHART / "ci" / "monitoring-values.yaml"))
    exprs: dict[str, str] = {}
    rule = one(docs, "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for item in group["rules"]:
            exprs[f"alert {item['alert']}"] = item["expr"]
    dashboard = json.loads(one(docs, "ConfigMap", "-dashboard")["data"]["trustwarden.json"])
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            exprs[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    return exprs


# --------------------------------------------------------------------------- lint and render


def test_lint_passes_for_every_ci_values_file(cluster: Cluster) -> None:
    assert {p.name for p in CI_VALUES} >= {
        "default-values.yaml",
        "namespace-scoped-values.yaml",
        "monitoring-values.yaml",
        "single-replica-values.yaml",
    }
    for values in CI_VALUES:
        result = helm(cluster, "lint", "--strict", str(CHART), "-f", str(values), check=False)
        assert result.returncode == 0, f"{values.name}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize(
    "bad",
    [
        ["--set", "replicas=2"],  # top-level typo
        ["--set", "webhook.failurPolicy=Ignore"],  # nested typo
        ["--set", "metrics.serviceMonitor.intervall=10s"],  # two levels down
        ["--set", "securityContext.runAsRoot=true"],
        ["--set", "webhook.failurePolicy=Maybe"],  # not in the enum
        ["--set", "replicaCount=0"],
        ["--set-json", 'watchNamespaces=["Not_A_Namespace"]'],
    ],
)
def test_schema_rejects_unknown_and_invalid_values(cluster: Cluster, bad: list[str]) -> None:
    result = helm(cluster, "template", "tw", str(CHART), *bad, check=False)
    assert result.returncode != 0, f"{bad} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr


def test_every_value_is_documented() -> None:
    """values.yaml has a comment right above every setting. A section header without one
    (e.g. `crds:`) is fine when its settings are documented; a documented key that opens a
    block (e.g. `resources:`) documents the example content under it."""
    undocumented = []
    exempt_below: int | None = None  # indentation of a documented block's header
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        match = re.match(r"^(\s*)(?:- )?([A-Za-z][\w./-]*):(.*)$", line)
        if match and not line.lstrip().startswith("#"):
            indent, key, rest = len(match.group(1)), match.group(2), match.group(3).strip()
            if exempt_below is not None and indent <= exempt_below:
                exempt_below = None
            documented = previous.lstrip().startswith("#")
            header = rest == ""
            if exempt_below is None:
                if documented and header:
                    exempt_below = indent
                elif not documented and not header:
                    undocumented.append(key)
        if line.strip():
            previous = line
    assert not undocumented, f"values.yaml settings without a comment: {undocumented}"


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_ci_values_pass_a_server_side_dry_run(cluster: Cluster, values: Path) -> None:
    release = release_name("dry")
    given = yaml.safe_load(values.read_text()) or {}
    extra: list[str] = []
    with (
        cluster.namespace(prefix="tw-dry") as namespace,
        _namespaces(cluster, len(given.get("watchNamespaces") or [])) as watched,
    ):
        if watched:
            # Same shape, namespaces that exist (a dry run still needs them).
            extra = ["--set-json", f"watchNamespaces={json.dumps(watched)}"]
        docs = render(cluster, release, namespace, "-f", str(values), *extra)
        served = _served_kinds(cluster)
        crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
        rest = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
        unserved = [d for d in rest if (d["apiVersion"], d["kind"]) not in served]
        checked = [d for d in rest if (d["apiVersion"], d["kind"]) in served]
        # Pass 1: CRDs (they exist already: this validates the update). Pass 2: the rest.
        for batch in (crds, checked):
            if not batch:
                continue
            result = cluster.kubectl(
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=trustwarden-e2e-dry-run",
                "--dry-run=server",
                "-f",
                "-",
                input_text=yaml.safe_dump_all(batch),
                check=False,
            )
            assert result.returncode == 0, f"{values.name}: {result.stderr}"
            assert result.stdout.count("(server dry run)") == len(batch), result.stdout
        # prometheus-operator's CRDs are not installed here: check those objects' shape.
        for doc in unserved:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1", doc["kind"]
            _check_monitoring_object(doc)
        if values.stem == "monitoring-values":
            assert {d["kind"] for d in docs} >= {"ServiceMonitor", "PrometheusRule", "ConfigMap"}


@contextmanager
def _namespaces(cluster: Cluster, count: int) -> Iterator[list[str]]:
    names: list[str] = []
    try:
        for _ in range(count):
            name = f"tw-dry-w-{uuid.uuid4().hex[:6]}"
            cluster.core.create_namespace({"metadata": {"name": name}})
            names.append(name)
        yield names
    finally:
        for name in names:
            cluster.core.delete_namespace(name)


def _served_kinds(cluster: Cluster) -> set[tuple[str, str]]:
    out = cluster.kubectl("api-resources", "-o", "wide", "--no-headers").stdout
    served = set()
    for line in out.splitlines():
        parts = line.split()
        # NAME [SHORTNAMES] APIVERSION NAMESPACED KIND VERBS...
        for i, part in enumerate(parts):
            if part in ("true", "false") and i >= 1:
                served.add((parts[i - 1], parts[i + 1]))
                break
    return served


def _check_monitoring_object(doc: dict[str, Any]) -> None:
    spec = doc["spec"]
    if doc["kind"] == "ServiceMonitor":
        assert spec["selector"]["matchLabels"]
        (endpoint,) = spec["endpoints"]
        assert endpoint["port"] == "http-metrics" and endpoint["path"] == "/metrics"
        assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
    elif doc["kind"] == "PrometheusRule":
        for group in spec["groups"]:
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
                assert rule["alert"] and rule["expr"].strip() and rule["labels"]["severity"]
                assert re.fullmatch(r"\d+[smh]", rule["for"])
                assert rule["expr"].count("(") == rule["expr"].count(")")
    else:
        raise AssertionError(f"unexpected monitoring kind {doc['kind']}")


def test_rendered_objects_follow_the_contract(cluster: Cluster) -> None:
    docs = render(cluster, "trustwarden", "trustwarden-system")
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 2
    assert container["args"][:6] == [
        "--namespace=trustwarden-system",
        "--webhook-service=trustwarden-webhook",
        "--webhook-configuration=trustwarden-webhook",
        "--metrics-port=8080",
        "--health-port=8081",
        "--webhook-port=9443",
    ]
    assert "command" not in container  # the image's entrypoint is `trustwarden run`
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "webhook": 9443,
        "metrics": 8080,
        "health": 8081,
    }
    service = one(docs, "Service", "-webhook")
    assert service["spec"]["ports"][0]["port"] == 443
    assert service["spec"]["ports"][0]["targetPort"] == "webhook"
    config = one(docs, "MutatingWebhookConfiguration")
    assert config["metadata"]["name"] == "trustwarden-webhook"  # the CLI's default name
    (webhook,) = config["webhooks"]
    assert webhook["name"] == WEBHOOK_NAME
    assert webhook["failurePolicy"] == "Fail" and webhook["sideEffects"] == "None"
    assert webhook["clientConfig"]["service"] == {
        "name": "trustwarden-webhook",
        "namespace": "trustwarden-system",
        "path": "/inject-svid",
        "port": 443,
    }
    assert webhook["rules"][0]["operations"] == ["CREATE"]
    selector = webhook["namespaceSelector"]
    assert selector["matchLabels"] == {"trustwarden.io/inject": "enabled"}
    assert {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": ["trustwarden-system"],
    } in selector["matchExpressions"]
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert not [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com")]
    # Single replica: no PDB (it would block every drain), and NOTES.txt warns.
    single = render(
        cluster, "tw", "tw-system", "-f", str(CHART / "ci" / "single-replica-values.yaml")
    )
    assert not names_of(single, "PodDisruptionBudget")
    notes = helm(
        cluster,
        "install",
        "tw",
        str(CHART),
        "--dry-run=client",
        "--namespace",
        "tw-system",
        "-f",
        str(CHART / "ci" / "single-replica-values.yaml"),
        "--set",
        "crds.enabled=false",  # a client dry run still checks that it could adopt them
    ).stdout
    assert "WARNING: replicaCount is 1" in notes
    assert (
        "WARNING"
        not in helm(
            cluster,
            "install",
            "tw",
            str(CHART),
            "--dry-run=client",
            "--namespace",
            "tw-system",
            "--set",
            "crds.enabled=false",
        ).stdout.split("NOTES:")[1]
    )


def test_rbac_has_no_wildcards_and_every_rule_has_a_reason(cluster: Cluster) -> None:
    for values in CI_VALUES:
        docs = render(cluster, "tw", "tw-system", "-f", str(values))
        for doc in docs:
            if doc["kind"] not in ("ClusterRole", "Role"):
                continue
            for rule in doc["rules"]:
                for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in rule.get(key, []), f"{values.name}: wildcard in {rule}"
    # Every rule in the templates is preceded by a comment saying why.
    for source in (CHART / "templates" / "rbac.yaml", CHART / "templates" / "_helpers.tpl"):
        lines = source.read_text().splitlines()
        for index, line in enumerate(lines):
            if line.strip().startswith("- apiGroups:"):
                assert lines[index - 1].strip().startswith("#"), f"{source.name}:{index + 1}"


def test_namespace_scoped_mode_uses_roles(cluster: Cluster) -> None:
    docs = render(
        cluster, "tw", "tw-system", "-f", str(CHART / "ci" / "namespace-scoped-values.yaml")
    )
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--watch-namespace=team-a" in args and "--watch-namespace=team-b" in args
    roles = {
        (d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "Role"
    }
    assert roles == {
        ("team-a", "tw-trustwarden-workloads"),
        ("team-b", "tw-trustwarden-workloads"),
        ("tw-system", "tw-trustwarden-operator"),
        ("default", "tw-trustwarden-events"),  # Events about TrustDomains must live there
    }
    (cluster_role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    granted = {
        (group, resource, verb)
        for rule in cluster_role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # Cluster-wide, only reads of cluster-scoped kinds, TrustDomain status, one webhook, and
    # the cluster-scoped parts of pod certificates (our signers, our ClusterTrustBundles).
    writes = {g for g in granted if g[2] not in ("get", "list", "watch")}
    assert writes == {
        ("trustwarden.io", "trustdomains/status", "patch"),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch"),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "update"),
        ("certificates.k8s.io", "signers", "sign"),
        ("certificates.k8s.io", "signers", "attest"),
        ("certificates.k8s.io", "clustertrustbundles", "create"),
        ("certificates.k8s.io", "clustertrustbundles", "update"),
        ("certificates.k8s.io", "clustertrustbundles", "delete"),
    }
    signers = [r for r in cluster_role["rules"] if "signers" in r["resources"]]
    assert [r.get("resourceNames") for r in signers] == [["trustwarden.io/*"]]
    # PodCertificateRequests are namespaced: in namespace-scoped mode, only in Roles.
    assert not {g for g in granted if g[1].startswith("podcertificaterequests")}
    assert not {g for g in granted if g[1] in ("secrets", "configmaps", "pods")}


def test_crds_are_rendered_from_the_one_source(cluster: Cluster, tmp_path: Path) -> None:
    sources = {yaml.safe_load(p.read_text())["metadata"]["name"]: p for p in CRD_SOURCES}
    rendered = {
        d["metadata"]["name"]: d
        for d in render(cluster, "tw", "tw-system")
        if d["kind"] == "CustomResourceDefinition"
    }
    assert set(rendered) == set(sources) == set(CRD_NAMES)
    for name, path in sources.items():
        source = yaml.safe_load(path.read_text())
        assert rendered[name]["spec"] == source["spec"], f"{name}: spec differs from {path}"
        assert rendered[name]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert source["metadata"]["labels"].items() <= rendered[name]["metadata"]["labels"].items()
    unkept = render(cluster, "tw", "tw-system", "--set", "crds.keep=false")
    for doc in unkept:
        if doc["kind"] == "CustomResourceDefinition":
            assert "helm.sh/resource-policy" not in (doc["metadata"].get("annotations") or {})
    off = render(cluster, "tw", "tw-system", "--set", "crds.enabled=false")
    assert not names_of(off, "CustomResourceDefinition")
    # A packaged chart (helm package, OCI push) carries the files themselves, not a link.
    helm(cluster, "package", str(CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("trustwarden-*.tgz")
    with tarfile.open(archive) as tar:
        for path in CRD_SOURCES:
            member = tar.extractfile(f"trustwarden/crds-source/{path.name}")
            assert member is not None and member.read() == path.read_bytes()
    assert (CHART / "crds-source").resolve() == (REPO / "deploy" / "crds").resolve()


def test_monitoring_objects(cluster: Cluster) -> None:
    docs = render(cluster, "tw", "tw-system", "-f", str(CHART / "ci" / "monitoring-values.yaml"))
    rule = one(docs, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) >= {
        "TrustwardenCertificateExpiringSoon",
        "TrustwardenRenewalFailing",
        "TrustwardenCAExpiringSoon",
        "TrustwardenWebhookRejectingPods",
        "TrustwardenNoLeader",
    }
    for name, alert in alerts.items():
        assert 'job="tw-trustwarden-metrics"' in alert["expr"], name
        assert alert["labels"]["team"] == "platform", name
    monitor = one(docs, "ServiceMonitor")
    metrics_service = one(docs, "Service", "-metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= metrics_service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == metrics_service["spec"]["ports"][0]["name"]
    dashboard_cm = one(docs, "ConfigMap", "-dashboard")
    assert dashboard_cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(dashboard_cm["data"]["trustwarden.json"])
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10 and all(p["targets"] for p in panels)
    used = set().union(*(metric_names(e) for e in monitoring_expressions(cluster).values()))
    # Every family the operator exports is on the dashboard or in an alert.
    assert {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used} >= {
        "trustwarden_certificates_issued",
        "trustwarden_certificates_renewed",
        "trustwarden_certificates_revoked",
        "trustwarden_issuance_errors",
        "trustwarden_issuance_duration_seconds",
        "trustwarden_identity_soonest_expiry_timestamp_seconds",
        "trustwarden_ca_not_after_timestamp_seconds",
        "trustwarden_bundle_writes",
        "trustwarden_scheduler_queue_depth",
        "trustwarden_ca_recoveries",
        "trustwarden_webhook_requests",
        "trustwarden_leader",
    }


# --------------------------------------------------------------------------- real installs


def test_install_upgrade_uninstall_leaves_nothing_behind(cluster: Cluster, crds: None) -> None:
    release = release_name()
    with (
        cluster.namespace(prefix="tw-helm") as namespace,
        cluster.namespace(prefix="tw-helm-team") as team,
    ):
        with installed(
            cluster, release, namespace, "--set", "crds.enabled=false", *scope_args(release)
        ):
            fullname = f"{release}-trustwarden"
            apps = client.AppsV1Api(cluster.api)
            deployment = apps.read_namespaced_deployment(fullname, namespace)
            assert deployment.spec.replicas == 2
            rbac = client.RbacAuthorizationV1Api(cluster.api)
            rbac.read_cluster_role(f"{fullname}-workloads")
            admission = client.AdmissionregistrationV1Api(cluster.api)
            config = admission.read_mutating_webhook_configuration(f"{fullname}-webhook")
            assert config.webhooks[0].namespace_selector.match_labels == {
                SCOPE_LABEL: release,
                "trustwarden.io/inject": "enabled",
            }
            # Upgrade: more replicas, namespace-scoped, another log level.
            helm(
                cluster,
                "upgrade",
                release,
                str(CHART),
                "--namespace",
                namespace,
                "--reuse-values",
                "--set",
                "replicaCount=3",
                "--set",
                "operator.logLevel=DEBUG",
                "--set-json",
                f'watchNamespaces=["{team}"]',
            )
            deployment = apps.read_namespaced_deployment(fullname, namespace)
            assert deployment.spec.replicas == 3
            args = deployment.spec.template.spec.containers[0].args
            assert f"--watch-namespace={team}" in args and "--log-level=DEBUG" in args
            rbac.read_namespaced_role(f"{fullname}-workloads", team)
            with pytest.raises(ApiException) as gone_role:
                rbac.read_cluster_role(f"{fullname}-workloads")
            assert gone_role.value.status == 404
            history = helm(cluster, "history", release, "-n", namespace, "-o", "json").stdout
            assert [h["revision"] for h in json.loads(history)] == [1, 2]
        assert leftovers(cluster, release) == []


def test_crds_installed_by_the_chart_are_kept_on_uninstall(cluster: Cluster, crds: None) -> None:
    """The CRDs already exist (the suite applies deploy/crds/), so the release adopts them
    (--take-ownership), and keeps them on uninstall: deleting a CRD would delete every
    TrustDomain and WorkloadIdentity in the cluster."""
    release = release_name()
    extensions = client.ApiextensionsV1Api(cluster.api)
    with cluster.namespace(prefix="tw-helm-crds") as namespace:
        try:
            helm(
                cluster,
                "install",
                release,
                str(CHART),
                "--namespace",
                namespace,
                "--take-ownership",
                *scope_args(release),
            )
            for name in CRD_NAMES:
                crd = extensions.read_custom_resource_definition(name)
                annotations = crd.metadata.annotations or {}
                # Guard: never uninstall a release whose CRDs would be deleted.
                assert annotations.get("helm.sh/resource-policy") == "keep", annotations
                assert annotations.get("meta.helm.sh/release-name") == release
            helm(cluster, "uninstall", release, "--namespace", namespace)
            for name in CRD_NAMES:
                crd = extensions.read_custom_resource_definition(name)
                assert crd.metadata.deletion_timestamp is None
                assert any(
                    c.type == "Established" and c.status == "True" for c in crd.status.conditions
                )
            assert leftovers(cluster, release) == [
                f"customresourcedefinition.apiextensions.k8s.io/{n}" for n in CRD_NAMES
            ]
        finally:
            _disown_crds(cluster)


def _disown_crds(cluster: Cluster) -> None:
    """Put the CRDs back as the suite applied them: no Helm ownership metadata."""
    for name in CRD_NAMES:
        cluster.kubectl(
            "annotate",
            "crd",
            name,
            "meta.helm.sh/release-name-",
            "meta.helm.sh/release-namespace-",
            "helm.sh/resource-policy-",
            check=False,
        )
        cluster.kubectl(
            "label",
            "crd",
            name,
            "helm.sh/chart-",
            f"{INSTANCE}-",
            "app.kubernetes.io/version-",
            "app.kubernetes.io/managed-by-",
            "app.kubernetes.io/part-of-",
            check=False,
        )


def test_install_in_a_fresh_namespace_is_valid_for_the_webhook_and_pods(
    cluster: Cluster, crds: None
) -> None:
    """The chart's objects are accepted by the real admission chain, and the Deployment's pods
    pass pod security admission at the restricted level."""
    release = release_name()
    with (
        cluster.namespace(
            prefix="tw-helm-psa", labels={"pod-security.kubernetes.io/enforce": "restricted"}
        ) as namespace,
        installed(cluster, release, namespace, "--set", "crds.enabled=false", *scope_args(release)),
    ):
        pods = wait_for(
            lambda: (
                len(
                    found := cluster.core.list_namespaced_pod(
                        namespace, label_selector=f"{INSTANCE}={release}"
                    ).items
                )
                == 2
                and found
            ),
            timeout=60,
            what="the ReplicaSet to create the operator pods (admitted under restricted PSA)",
        )
        assert all(p.spec.security_context.run_as_non_root for p in pods)
        events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
        assert "violates PodSecurity" not in events


def test_in_cluster_webhook_tls_is_shared_by_every_replica(
    cluster: Cluster, crds: None, operator_slot: OperatorSlot, tmp_path: Path
) -> None:
    """Two replicas in the in-cluster mode the Deployment runs (`--webhook-service`), as the
    chart's ServiceAccount: the first creates the serving Secret, the other reads it, both
    serve that certificate, and the chart's webhook configuration gets its CA by a patch of
    caBundle alone (the chart grants get/patch on it, no create)."""
    require_sole_operator(cluster, operator_slot)
    release = release_name("tls")
    fullname = f"{release}-trustwarden"
    service = f"{fullname}-webhook"
    admission = client.AdmissionregistrationV1Api(cluster.api)
    with cluster.namespace(prefix="tw-tls") as namespace:
        values = ["--set", "crds.enabled=false", "--set-json", f'watchNamespaces=["{namespace}"]']
        with installed(cluster, release, namespace, *values, *scope_args(release)):
            kubeconfig = service_account_kubeconfig(
                cluster, namespace, fullname, tmp_path / "sa.kubeconfig"
            )
            replicas = [
                ChartOperator(
                    kubeconfig,
                    namespace=namespace,
                    webhook_configuration=service,
                    watch=(namespace,),
                    webhook_service=service,
                    name=f"tls-{i}",
                    log_dir=tmp_path,
                )
                for i in range(2)
            ]
            try:
                for replica in replicas:  # at once: both race to create the Secret
                    replica.start()
                for replica in replicas:
                    replica.wait_serving()
                    wait_for(
                        lambda r=replica: _listening(r.webhook_port),
                        timeout=30,
                        what="the webhook port",
                    )
                secret = cluster.core.read_namespaced_secret(f"{service}-tls", namespace)
                assert secret.type == "kubernetes.io/tls"
                assert secret.metadata.labels["app.kubernetes.io/managed-by"] == "trustwarden"
                ca_pem = base64.b64decode(secret.data["ca.crt"])
                leaf_pem = base64.b64decode(secret.data["tls.crt"])

                def ca_bundle() -> bytes:
                    config = admission.read_mutating_webhook_configuration(service)
                    return base64.b64decode(config.webhooks[0].client_config.ca_bundle or "")

                wait_for(lambda: ca_bundle() == ca_pem, timeout=30, what="caBundle = ca.crt")
                served = {
                    _served_certificate(r.webhook_port, ca_pem, f"{service}.{namespace}.svc")
                    for r in replicas
                }
                assert served == {ssl.PEM_cert_to_DER_cert(leaf_pem.decode())}
                # Only caBundle changed: the chart's namespaceSelector is intact.
                config = admission.read_mutating_webhook_configuration(service)
                assert config.webhooks[0].namespace_selector.match_labels[SCOPE_LABEL] == release
                assert config.webhooks[0].client_config.service.name == service
                # A `helm upgrade` or GitOps sync may put the placeholder back: it is repaired.
                admission.patch_mutating_webhook_configuration(
                    service,
                    [
                        {
                            "op": "replace",
                            "path": "/webhooks/0/clientConfig/caBundle",
                            "value": "Cg==",
                        }
                    ],
                )
                wait_for(lambda: ca_bundle() == ca_pem, timeout=45, what="caBundle repaired")
                # A restarted replica serves the same certificate: nothing is re-created.
                uid = secret.metadata.uid
                replicas[1].stop()
                replicas[1] = ChartOperator(
                    kubeconfig,
                    namespace=namespace,
                    webhook_configuration=service,
                    watch=(namespace,),
                    webhook_service=service,
                    name="tls-restarted",
                    log_dir=tmp_path,
                ).start()
                replicas[1].wait_serving()
                wait_for(lambda: _listening(replicas[1].webhook_port), timeout=30, what="webhook")
                again = cluster.core.read_namespaced_secret(f"{service}-tls", namespace)
                assert again.metadata.uid == uid
                assert again.metadata.resource_version == secret.metadata.resource_version
                assert _served_certificate(
                    replicas[1].webhook_port, ca_pem, f"{service}.{namespace}.svc"
                ) == ssl.PEM_cert_to_DER_cert(leaf_pem.decode())
                # Deleting the Secret forces a new certificate: the replicas stop (Kubernetes
                # would restart them), and the first one back creates a new one.
                cluster.core.delete_namespaced_secret(f"{service}-tls", namespace)
                for replica in replicas:
                    wait_for(
                        lambda r=replica: not r.running,
                        timeout=60,
                        what=f"{replica.identity} to stop for its deleted certificate",
                    )
                    assert "was replaced or deleted" in replica.log()
                replicas.append(
                    ChartOperator(
                        kubeconfig,
                        namespace=namespace,
                        webhook_configuration=service,
                        watch=(namespace,),
                        webhook_service=service,
                        name="tls-new",
                        log_dir=tmp_path,
                    ).start()
                )
                replicas[-1].wait_serving()
                wait_for(lambda: _listening(replicas[-1].webhook_port), timeout=30, what="webhook")
                renewed = cluster.core.read_namespaced_secret(f"{service}-tls", namespace)
                assert renewed.metadata.uid != uid
                new_ca = base64.b64decode(renewed.data["ca.crt"])
                assert new_ca != ca_pem
                wait_for(lambda: ca_bundle() == new_ca, timeout=30, what="caBundle = new ca.crt")
                _served_certificate(replicas[-1].webhook_port, new_ca, f"{service}.{namespace}.svc")
                for replica in replicas:
                    assert replica.forbidden() == [], replica.log()[-3000:]
            finally:
                warn_if_not_alone(cluster, own=(namespace,))
                for replica in replicas:
                    replica.stop()
        assert leftovers(cluster, release) == []


def _served_certificate(port: int, ca_pem: bytes, hostname: str) -> bytes:
    """The certificate served on `port`, verified against `ca_pem` for `hostname`: what the
    API server checks when it calls the webhook through the Service."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=hostname) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der
