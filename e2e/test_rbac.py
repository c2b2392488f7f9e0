"""Least privilege, proven on the real control plane: the chart is installed, and the operator
runs with a TokenRequest token of the chart's ServiceAccount and nothing else. It must pass the
lifecycle (TrustDomain Ready, Shared issuance, bundles, revocation, PerPod issuance) without a
single forbidden request, and that identity must be unable to do what it has no business doing.

Both RBAC layouts run: cluster-wide (ClusterRoles) and namespace-scoped (watchNamespaces:
Roles in the served namespaces). The operator runs `--local` (the PerPod webhook must be
reachable, and only a local process is, without a kubelet). Local mode registers the webhook by
URL into the chart's MutatingWebhookConfiguration, rewriting its namespaceSelector, so the
fixture narrows it again to namespaces labelled for this release: the operator under test
answers only for this test's pods, never for other tests' ones. See require_sole_operator for
why no other trustwarden operator may run meanwhile.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client.parser import text_string_to_metric_families

from e2e.bodies import identity_body, shared_identity_body, trust_domain_body
from e2e.conftest import OperatorSlot
from e2e.support import (
    GROUP,
    VERSION,
    Cluster,
    apply_body,
    bundle_data,
    custom,
    get_td,
    get_wid,
    kubectl_path,
    openssl_verify,
    secret_data,
    serial_of,
    unique,
    wait_condition,
    wait_for,
)
from e2e.test_helm import (
    SCOPE_LABEL,
    ChartOperator,
    helm,
    installed,
    leftovers,
    metric_names,
    monitoring_expressions,
    release_name,
    remove_stale_webhooks,
    require_sole_operator,
    scope_args,
    service_account_kubeconfig,
    warn_if_not_alone,
)

INJECT = "trustwarden.io/inject"


@dataclass
class Env:
    mode: str
    release: str
    namespace: str  # the release and operator namespace
    shared_ns: str  # Shared identities
    pod_ns: str  # PerPod identities (opted in to injection)
    outside_ns: str  # served in cluster-wide mode only
    kubeconfig: Path
    operator: ChartOperator
    domain: str
    trust_domain: str

    @property
    def fullname(self) -> str:
        return f"{self.release}-trustwarden"

    @property
    def webhook_configuration(self) -> str:
        return f"{self.fullname}-webhook"


def _create_namespace(cluster: Cluster, prefix: str, labels: dict[str, str] | None = None) -> str:
    name = unique(prefix)
    cluster.core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    return name


@pytest.fixture(scope="module", params=["namespaced", "clusterwide"])
def env(
    request: pytest.FixtureRequest,
    cluster: Cluster,
    crds: None,
    operator_slot: OperatorSlot,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    mode = str(request.param)
    require_sole_operator(cluster, operator_slot)
    release = release_name(f"rbac-{mode[:2]}")
    tmp = tmp_path_factory.mktemp(release)
    namespace = _create_namespace(cluster, "tw-rbac")
    shared_ns = _create_namespace(cluster, "tw-rbac-shared")
    pod_ns = _create_namespace(cluster, "tw-rbac-pod", {INJECT: "enabled", SCOPE_LABEL: release})
    outside_ns = _create_namespace(cluster, "tw-rbac-outside")
    cluster.core.create_namespaced_secret(
        outside_ns, {"metadata": {"name": "not-yours"}, "stringData": {"password": "hunter2"}}
    )
    domain = unique("rbac")
    operator: ChartOperator | None = None
    values = ["--set", "crds.enabled=false", *scope_args(release)]
    watch: tuple[str, ...] = ()
    if mode == "namespaced":
        watch = (shared_ns, pod_ns)
        values += ["--set-json", f'watchNamespaces=["{shared_ns}", "{pod_ns}"]']
    try:
        with installed(cluster, release, namespace, *values):
            fullname = f"{release}-trustwarden"
            kubeconfig = service_account_kubeconfig(
                cluster, namespace, fullname, tmp / "sa.kubeconfig"
            )
            apply_body(
                cluster,
                trust_domain_body(
                    domain, ca={"selfSigned": {"ttl": "2160h"}}, policy={"maxTTL": "24h"}
                ),
            )
            operator = ChartOperator(
                kubeconfig,
                namespace=namespace,
                webhook_configuration=f"{fullname}-webhook",
                watch=watch,
                name=f"rbac-{mode}",
                log_dir=tmp,
            ).start()
            operator.wait_leading()
            # Its webhook listens once its caches are loaded; until then its own configuration
            # would look stale to remove_stale_webhooks (nothing listening on its port).
            operator.wait_webhook()
            _narrow_webhook(cluster, f"{fullname}-webhook", release)
            remove_stale_webhooks(cluster)
            yield Env(
                mode=mode,
                release=release,
                namespace=namespace,
                shared_ns=shared_ns,
                pod_ns=pod_ns,
                outside_ns=outside_ns,
                kubeconfig=kubeconfig,
                operator=operator,
                domain=domain,
                trust_domain=f"{domain}.example.org",
            )
    finally:
        if operator is not None:
            operator.stop()
        try:
            custom(cluster).delete_cluster_custom_object(GROUP, VERSION, "trustdomains", domain)
        except ApiException as exc:
            if exc.status != 404:
                raise
        for name in (pod_ns, shared_ns, outside_ns, namespace):
            cluster.core.delete_namespace(name)


@pytest.fixture(autouse=True)
def _alone(cluster: Cluster, env: Env) -> Iterator[None]:
    yield
    warn_if_not_alone(cluster, own=(env.namespace,))


def _narrow_webhook(cluster: Cluster, name: str, release: str) -> None:
    """`--local` replaced the chart's namespaceSelector with its own (every opted-in namespace):
    add the release label back, so this operator's webhook only sees this test's namespace."""
    key = SCOPE_LABEL.replace("~", "~0").replace("/", "~1")
    client.AdmissionregistrationV1Api(cluster.api).patch_mutating_webhook_configuration(
        name,
        [
            {
                "op": "add",
                "path": f"/webhooks/0/namespaceSelector/matchLabels/{key}",
                "value": release,
            }
        ],
    )


def _shared_identity(cluster: Cluster, env: Env, name: str) -> None:
    apply_body(
        cluster,
        shared_identity_body(env.shared_ns, name, env.domain, serviceAccountName=name, ttl="1h"),
    )


def _wait_secret(cluster: Cluster, namespace: str, name: str) -> dict[str, bytes]:
    return wait_for(
        lambda: secret_data(cluster, namespace, name), timeout=60, what=f"Secret {namespace}/{name}"
    )


# --------------------------------------------------------------------------- lifecycle


def test_trust_domain_becomes_ready(cluster: Cluster, env: Env) -> None:
    obj = wait_condition(lambda: get_td(cluster, env.domain), "Ready", "True", timeout=60)
    assert obj["status"]["authorities"][0]["state"] == "Active"
    ca = secret_data(cluster, env.namespace, f"trustwarden-ca-{env.domain}")
    assert ca is not None, "the CA lives in the release namespace"


def test_shared_issuance_verifies_against_the_bundle(
    cluster: Cluster, env: Env, tmp_path: Path
) -> None:
    _shared_identity(cluster, env, "api")
    data = _wait_secret(cluster, env.shared_ns, "api-svid")
    bundle = wait_for(
        lambda: bundle_data(cluster, env.shared_ns), timeout=30, what="the namespace bundle"
    )
    result = openssl_verify(
        tmp_path, data["tls.crt"], bundle["ca.crt"], bundle[f"{env.trust_domain}.crl.pem"]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    wid = wait_condition(lambda: get_wid(cluster, env.shared_ns, "api"), "Ready", "True")
    assert wid["status"]["issued"] == 1


def test_deleting_an_identity_revokes_its_certificate(
    cluster: Cluster, env: Env, tmp_path: Path
) -> None:
    _shared_identity(cluster, env, "doomed")
    _shared_identity(cluster, env, "keeper")  # keeps the namespace entitled to its bundle
    serial = serial_of(_wait_secret(cluster, env.shared_ns, "doomed-svid")["tls.crt"])
    _wait_secret(cluster, env.shared_ns, "keeper-svid")
    custom(cluster).delete_namespaced_custom_object(
        GROUP, VERSION, env.shared_ns, "workloadidentities", "doomed"
    )

    def crl_lists_serial() -> bool:
        crl = (bundle_data(cluster, env.shared_ns) or {}).get(f"{env.trust_domain}.crl.pem")
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
    wait_for(
        lambda: secret_data(cluster, env.shared_ns, "doomed-svid") is None,
        timeout=30,
        what="the revoked Secret to be deleted",
    )
    # The revocation list itself is kept in the operator namespace.
    cluster.core.read_namespaced_config_map(f"trustwarden-revocations-{env.domain}", env.namespace)


def test_per_pod_identity_is_injected_and_issued(cluster: Cluster, env: Env) -> None:
    apply_body(
        cluster,
        identity_body(
            env.pod_ns, "web", env.domain, podSelector={"matchLabels": {"app": "web"}}, ttl="1h"
        ),
    )
    wait_condition(lambda: get_wid(cluster, env.pod_ns, "web"), "Ready", "True", timeout=60)
    pod = cluster.core.create_namespaced_pod(
        env.pod_ns,
        {
            "metadata": {"name": "web-0", "labels": {"app": "web"}},
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [{"name": "app", "image": "busybox:1.36"}],
            },
        },
    )
    # The webhook (this operator, through the chart's configuration) mutated the pod.
    assert pod.metadata.labels.get("trustwarden.io/identity") == "web"
    assert "trustwarden-svid" in {v.name for v in pod.spec.volumes}
    secret_name = pod.metadata.annotations["trustwarden.io/secret"]
    wait_for(
        lambda: secret_data(cluster, env.pod_ns, secret_name),
        timeout=60,
        what=f"the pod's Secret {secret_name}",
    )
    secret = cluster.core.read_namespaced_secret(secret_name, env.pod_ns)
    (owner,) = secret.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Pod", "web-0", pod.metadata.uid)
    # Deleting the pod revokes: the Secret goes at once.
    cluster.core.delete_namespaced_pod("web-0", env.pod_ns, grace_period_seconds=0)
    wait_for(
        lambda: secret_data(cluster, env.pod_ns, secret_name) is None,
        timeout=60,
        what="the pod's Secret to be deleted with the pod",
    )


def test_pod_certificate_is_signed_under_the_chart_rbac(
    cluster: Cluster, env: Env, tmp_path: Path
) -> None:
    """A node's PodCertificateRequest, answered by the operator on the chart's RBAC alone
    (list/watch, status update, sign), and its ClusterTrustBundle written (attest)."""
    from e2e import test_pod_certificates as pc

    pki = cluster.directory / "pki"
    server = str(cluster.api.configuration.host)
    admin = pc.Client(server, pki / "ca.crt", pki / "admin.crt", pki / "admin.key")
    node = pc.make_node(cluster, admin, tmp_path, server)
    try:
        apply_body(
            cluster,
            identity_body(
                env.shared_ns,
                "pc",
                env.domain,
                podSelector={"matchLabels": {"app": "pc"}},
                delivery={"mode": "PodCertificate"},
            ),
        )
        penv = pc.Env(
            cluster,
            admin,
            node,
            node,
            env.shared_ns,
            env.domain,
            env.trust_domain,
            f"trustwarden.io/{env.domain}",
            tmp_path,
        )
        pcr = pc.issued(penv, pc.make_pod(penv, "pc-1", {"app": "pc"}))
        anchors = pc.bundle_anchors(penv)
        result = openssl_verify(tmp_path / "v", pcr["status"]["certificateChain"].encode(), anchors)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        admin.call("DELETE", f"/api/v1/nodes/{node.name}")


def test_no_request_was_forbidden(env: Env) -> None:
    """Everything above ran on the chart's RBAC alone: the API refused nothing."""
    assert "starting reconciliation" in env.operator.log()
    assert env.operator.forbidden() == [], "\n".join(env.operator.forbidden()[:20])


def test_alerts_and_dashboard_use_only_exported_metrics(cluster: Cluster, env: Env) -> None:
    text = env.operator.metrics()
    assert text is not None
    available: set[str] = set()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
        }.get(family.type, ("",))
        for suffix in suffixes:
            available.add(family.name + suffix)
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    expressions = monitoring_expressions(cluster)
    missing = {
        where: sorted(metric_names(expr) - available)
        for where, expr in expressions.items()
        if metric_names(expr) - available
    }
    assert not missing, f"series not exported by the operator: {missing}"
    # Labels the expressions aggregate by exist on the series (where there are samples yet).
    for where, expr in expressions.items():
        used = metric_names(expr)
        seen = set().union(*(labels.get(name, set()) for name in used))
        if not seen:
            continue
        for group in re.findall(r"by \(([^)]*)\)", expr):
            for label in (x.strip() for x in group.split(",")):
                assert label in seen | {"le"}, f"{where}: no label {label!r} on {sorted(used)}"


# --------------------------------------------------------------------------- what it cannot do


def _can_i(env: Env, verb: str, resource: str, namespace: str | None = None) -> bool:
    """`kubectl auth can-i` as the ServiceAccount. `resource` is kind[/name][#subresource]."""
    resource, _, subresource = resource.partition("#")
    args = [kubectl_path(), "--kubeconfig", str(env.kubeconfig), "auth", "can-i", verb, resource]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    if subresource:
        args.append(f"--subresource={subresource}")
    result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() in ("yes", "no"), result.stdout + result.stderr
    return result.stdout.strip() == "yes"


def test_the_service_account_cannot_escalate_or_reach_beyond_its_scope(
    cluster: Cluster, env: Env
) -> None:
    denied: list[tuple[str, str, str | None]] = []
    # RBAC itself: no way to grant itself more.
    for resource in ("clusterroles", "clusterrolebindings"):
        for verb in ("create", "update", "patch", "delete", "escalate", "bind"):
            denied.append((verb, f"{resource}.rbac.authorization.k8s.io", None))
    for resource in ("roles", "rolebindings"):
        for verb in ("create", "update", "patch", "delete", "escalate", "bind"):
            for namespace in (env.namespace, env.shared_ns):
                denied.append((verb, f"{resource}.rbac.authorization.k8s.io", namespace))
    # CRDs: read only.
    for verb in ("create", "update", "patch", "delete"):
        denied.append((verb, "customresourcedefinitions.apiextensions.k8s.io", None))
    # Other webhook configurations, and creating new ones.
    for verb in ("get", "update", "patch", "delete"):
        denied.append((verb, "mutatingwebhookconfigurations/trustwarden-webhook", None))
    denied.append(("create", "mutatingwebhookconfigurations", None))
    denied.append(("delete", f"mutatingwebhookconfigurations/{env.webhook_configuration}", None))
    denied.append(("create", "validatingwebhookconfigurations", None))
    # Workloads, identities' specs, other credentials, other namespaces' leases.
    denied += [
        ("create", "pods", env.shared_ns),
        ("delete", "pods", env.pod_ns),
        ("update", "trustdomains.trustwarden.io", None),
        ("update", "trustdomains.trustwarden.io#status", None),  # a merge patch is enough
        ("create", "trustdomains.trustwarden.io", None),
        ("update", "workloadidentities.trustwarden.io", env.shared_ns),
        ("create", "serviceaccounts#token", env.namespace),
        ("impersonate", "serviceaccounts", env.namespace),
        ("create", "namespaces", None),
        ("delete", "namespaces", None),
        ("update", "leases.coordination.k8s.io/other-lease", env.namespace),
        ("create", "leases.coordination.k8s.io", env.shared_ns),
        # ConfigMaps other than the bundle, in the namespaces it serves.
        ("update", "configmaps/kube-root-ca.crt", env.shared_ns),
        ("delete", "configmaps/kube-root-ca.crt", env.shared_ns),
        ("update", "configmaps/extension-apiserver-authentication", "kube-system"),
        ("delete", "configmaps/extension-apiserver-authentication", "kube-system"),
        ("update", "configmaps", env.shared_ns),
        ("patch", "configmaps/trustwarden-bundle", env.shared_ns),
        # Pod certificates: answer requests of its own signers only, never make one.
        ("create", "podcertificaterequests.certificates.k8s.io", env.shared_ns),
        ("update", "podcertificaterequests.certificates.k8s.io", env.shared_ns),
        ("patch", "podcertificaterequests.certificates.k8s.io#status", env.shared_ns),
        ("delete", "podcertificaterequests.certificates.k8s.io", env.shared_ns),
        ("patch", "clustertrustbundles.certificates.k8s.io", None),
        ("update", "certificatesigningrequests.certificates.k8s.io#status", None),
    ]
    if env.mode == "namespaced":
        denied += [
            ("delete", "secrets", env.namespace),  # CA keys are never deleted by the operator
            ("get", "secrets", env.outside_ns),
            ("list", "secrets", env.outside_ns),
            ("list", "secrets", None),
            ("get", "configmaps", env.outside_ns),
            ("list", "podcertificaterequests.certificates.k8s.io", env.outside_ns),
            ("create", "secrets", env.outside_ns),
            ("list", "pods", env.outside_ns),
            ("list", "workloadidentities.trustwarden.io", env.outside_ns),
            ("create", "events.events.k8s.io", env.outside_ns),
        ]
    allowed = [
        ("get", f"mutatingwebhookconfigurations/{env.webhook_configuration}", None),
        ("patch", f"mutatingwebhookconfigurations/{env.webhook_configuration}", None),
        ("create", "secrets", env.shared_ns),
        ("delete", "secrets", env.pod_ns),
        ("update", "leases.coordination.k8s.io/trustwarden-leader", env.namespace),
        ("patch", "trustdomains.trustwarden.io#status", None),
        ("watch", "trustdomains.trustwarden.io", None),
        ("list", "namespaces", None),
        ("create", "configmaps", env.shared_ns),
        ("update", "configmaps/trustwarden-bundle", env.shared_ns),
        ("delete", "configmaps/trustwarden-bundle", env.shared_ns),
        ("update", "configmaps/trustwarden-ledger-x", env.namespace),
        ("update", "configmaps/trustwarden-podcerts-x", env.namespace),
        ("list", "podcertificaterequests.certificates.k8s.io", env.shared_ns),
        ("watch", "podcertificaterequests.certificates.k8s.io", env.pod_ns),
        ("update", "podcertificaterequests.certificates.k8s.io#status", env.shared_ns),
        ("create", "clustertrustbundles.certificates.k8s.io", None),
        ("update", "clustertrustbundles.certificates.k8s.io", None),
        ("delete", "clustertrustbundles.certificates.k8s.io", None),
    ]
    wrongly_allowed = [c for c in denied if _can_i(env, *c)]
    wrongly_denied = [c for c in allowed if not _can_i(env, *c)]
    # Signer names hold a '/', which `kubectl auth can-i` cannot pass: ask the API directly.
    signers = {
        ("sign", "trustwarden.io/*"): True,
        ("attest", "trustwarden.io/*"): True,
        ("sign", "kubernetes.io/*"): False,
        ("sign", "kubernetes.io/kube-apiserver-client"): False,
        ("sign", "example.com/*"): False,
        ("attest", "kubernetes.io/*"): False,
        ("approve", "trustwarden.io/*"): False,
    }
    for (verb, signer), expected in signers.items():
        if _may_signer(env, verb, signer) != expected:
            (wrongly_denied if expected else wrongly_allowed).append(
                (verb, f"signers/{signer}", None)
            )
    assert not wrongly_allowed, f"the ServiceAccount may: {wrongly_allowed}"
    assert not wrongly_denied, f"the ServiceAccount may not: {wrongly_denied}"

    # And for real, not only as the authorizer answers can-i:
    api = _service_account_client(env.kubeconfig)
    rbac = client.RbacAuthorizationV1Api(api)
    with pytest.raises(ApiException) as escalation:
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": f"{env.release}-escalate"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": env.fullname, "namespace": env.namespace}
                ],
            }
        )
    assert escalation.value.status == 403
    extensions = client.ApiextensionsV1Api(api)
    with pytest.raises(ApiException) as crd_write:
        extensions.delete_custom_resource_definition("trustdomains.trustwarden.io")
    assert crd_write.value.status == 403
    if env.mode == "namespaced":
        with pytest.raises(ApiException) as outside:
            client.CoreV1Api(api).read_namespaced_secret("not-yours", env.outside_ns)
        assert outside.value.status == 403
    else:
        # Cluster-wide mode serves every namespace, so it may read Secrets everywhere.
        client.CoreV1Api(api).read_namespaced_secret("not-yours", env.outside_ns)


def _may_signer(env: Env, verb: str, signer: str) -> bool:
    review = client.AuthorizationV1Api(
        _service_account_client(env.kubeconfig)
    ).create_self_subject_access_review(
        {
            "spec": {
                "resourceAttributes": {
                    "group": "certificates.k8s.io",
                    "resource": "signers",
                    "name": signer,
                    "verb": verb,
                }
            }
        }
    )
    return bool(review.status.allowed)


def _service_account_client(kubeconfig: Path) -> client.ApiClient:
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kubeconfig))


def test_uninstall_leaves_no_cluster_scoped_objects(cluster: Cluster, env: Env) -> None:
    """Last in the module: helm removes everything it made; what the operator made lives in
    namespaces (CA Secrets and revocations in the release namespace, issued Secrets and
    bundles in workload namespaces) and is documented in docs/install.md."""
    env.operator.stop()
    helm(cluster, "uninstall", env.release, "--namespace", env.namespace)
    assert leftovers(cluster, env.release) == []
    admission = client.AdmissionregistrationV1Api(cluster.api)
    with pytest.raises(ApiException) as gone:
        admission.read_mutating_webhook_configuration(env.webhook_configuration)
    assert gone.value.status == 404
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    names = [r.metadata.name for r in rbac.list_cluster_role().items]
    assert not [n for n in names if n.startswith(env.fullname)]
    # Kept on purpose: the CA (a reinstall continues with the same trust root) and the
    # identities' Secrets (owned by their WorkloadIdentity or pod, not by the release).
    assert secret_data(cluster, env.namespace, f"trustwarden-ca-{env.domain}") is not None
    assert secret_data(cluster, env.shared_ns, "api-svid") is not None
