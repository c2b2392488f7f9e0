"""Hostile and bad input, table-driven (issue 8). Every case gets a clear error, at admission or
as a status reason plus an Event, and nothing already issued is lost or changed: a sentinel
namespace with per-pod and Shared identities is compared after every case.

The 75 CRD admission cases in tests/data/crds/ (run by e2e/test_crd_admission.py) already
cover the CEL and schema rules, path traversal ('..', '//', '.'), percent-encoding, Cyrillic
and fullwidth look-alikes, template injection ('{namespace}}{', nested braces, unknown
variables), a foreign '/ns/kube-system/' prefix, 101 dnsNames and unknown fields; they are
not repeated here. The cases below are the ones they do not reach.

PYTEST_DONT_REWRITE: a failing assert must never print Secret data (private keys) into CI
logs, so asserts carry their own messages instead of pytest's introspection.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client

from e2e.reliability.conftest import OPNS, OperatorSlot, make_namespace
from e2e.reliability.controlplane import OPERATOR_USER, ControlPlane
from e2e.reliability.harness import INJECT, PodFactory, Results, pod_body
from e2e.reliability.invariants import Invariants
from e2e.reliability.pkifactory import bad_ca_secrets
from e2e.reliability.scenario import per_pod_identity, shared_identity, wait_served
from e2e.support import (
    GROUP,
    VERSION,
    Cluster,
    apply_yaml,
    bundle_data,
    condition,
    custom,
    get_td,
    get_wid,
    secret_data,
    unique,
    wait_for,
)

# ----------------------------------------------------------------------------- the sentinel


@dataclass
class Sentinel:
    """Workloads issued before any hostile input; nothing about them may change."""

    namespace: str
    secrets: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def snapshot(self, cluster: Cluster) -> dict[str, tuple[bytes, bytes]]:
        out = {}
        for name in self.secrets:
            data = secret_data(cluster, self.namespace, name)
            assert data is not None, f"sentinel Secret {name} was lost"
            out[name] = (data["tls.crt"], data["tls.key"])
        return out

    def assert_unchanged(self, cluster: Cluster) -> None:
        now = self.snapshot(cluster)
        for name, (crt, key) in now.items():
            assert crt == self.secrets[name]["tls.crt"], f"sentinel {name}: certificate changed"
            assert key == self.secrets[name]["tls.key"], f"sentinel {name}: key changed"


@pytest.fixture(scope="module")
def sentinel(
    cluster: Cluster, slot: OperatorSlot, suite_domain: str, invariants: Invariants
) -> Sentinel:
    slot.ensure()
    ns = make_namespace(cluster, "tw-rel-sentinel", INJECT)
    invariants.track(ns)
    per_pod_identity(cluster, ns, suite_domain, name="payments", app="payments")
    shared_identity(cluster, ns, suite_domain, "ledger")
    factory = PodFactory(cluster, ns)
    refs = [factory.create(f"pay-{i}", {"app": "payments"}) for i in range(2)]
    wait_served(cluster, refs)
    wait_for(lambda: secret_data(cluster, ns, "ledger-svid"), timeout=60, what="Shared Secret")
    found = Sentinel(ns)
    for name in [r.secret_name for r in refs] + ["ledger-svid"]:
        data = secret_data(cluster, ns, name)
        assert data is not None
        found.secrets[name] = data
    return found


@pytest.fixture(scope="module")
def playground(cluster: Cluster) -> str:
    """An opted-in namespace for the hostile objects (not tracked by the invariant checker:
    half of what lives here is deliberately broken)."""
    return make_namespace(cluster, "tw-rel-hostile", INJECT)


# ----------------------------------------------------------------------------- admission


def wid(
    spec: dict[str, Any], *, name: str = "bad", meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    base = {"trustDomain": "rel", "podSelector": {"matchLabels": {"app": "x"}}}
    return {
        "apiVersion": "trustwarden.io/v1alpha1",
        "kind": "WorkloadIdentity",
        "metadata": {"name": name, **(meta or {})},
        "spec": {**base, **spec},
    }


def td(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "trustwarden.io/v1alpha1",
        "kind": "TrustDomain",
        "metadata": {"name": "bad-td"},
        "spec": {"trustDomain": "bad.example.org", "ca": {"selfSigned": {}}, **spec},
    }


ADMISSION: list[tuple[str, dict[str, Any], str]] = [
    (
        "dnsnames-10000",
        wid({"dnsNames": [f"n{i}.{{namespace}}.svc" for i in range(10_000)]}),
        "must have at most 100 items",
    ),
    (
        "podselector-label-value-64",
        wid({"podSelector": {"matchLabels": {"app": "x" * 64}}}),
        "Too long",
    ),
    (
        "metadata-label-oversized",
        wid({}, meta={"labels": {"team": "y" * 64}}),
        "must be no more than 63",
    ),
    (
        "metadata-annotations-300k",
        wid({}, meta={"annotations": {"blob": "z" * 300_000}}),
        "262144 bytes",
    ),
    ("ttl-overflow-digits", wid({"ttl": "99999999h"}), "spec.ttl must be a Go duration"),
    ("ttl-negative", wid({"ttl": "-1h"}), "spec.ttl must be a Go duration"),
    ("unknown-field-spec", wid({"issuerOverride": "root"}), 'unknown field "spec.issuerOverride"'),
    (
        "unknown-field-nested",
        wid({"delivery": {"mode": "PerPod", "hostPath": "/etc"}}),
        'unknown field "spec.delivery.hostPath"',
    ),
    (
        "spiffeid-label-first-segment",
        wid({"spiffeID": "/ns/{label:ns}/sa/x"}),
        "must start with /ns/{namespace}/",
    ),
    (
        "spiffeid-namespace-suffix",
        wid({"spiffeID": "/ns/{namespace}x/sa/y"}),
        "must start with /ns/{namespace}/",
    ),
    (
        "spiffeid-division-slash",
        wid({"spiffeID": "/ns/{namespace}/sa\u2215admin"}),
        "may only contain ASCII",
    ),
    (
        "spiffeid-zero-width-space",
        wid({"spiffeID": "/ns/{namespace}/sa/\u200badmin"}),
        "may only contain ASCII",
    ),
    (
        "spiffeid-nul-byte",
        wid({"spiffeID": "/ns/{namespace}/sa/a\u0000b"}),
        "may only contain ASCII",
    ),
    (
        "spiffeid-backslash-traversal",
        wid({"spiffeID": "/ns/{namespace}/..\\..\\ns\\kube-system"}),
        "may only contain ASCII",
    ),
    (
        "spiffeid-label-key-traversal",
        wid({"spiffeID": "/ns/{namespace}/{label:../../x}"}),
        "unknown or malformed template variable",
    ),
    (
        "spiffeid-go-template",
        wid({"spiffeID": "/ns/{namespace}/{{.Namespace}}"}),
        "unknown or malformed template variable",
    ),
    (
        "spiffeid-too-long",
        wid({"spiffeID": "/ns/{namespace}/" + "a" * 1100}),
        "Too long",
    ),
    (
        "dnsname-ideographic-full-stop",
        wid({"dnsNames": ["{namespace}.svc\u3002evil.example.com"]}),
        "may only contain",
    ),
    ("dnsname-wildcard-middle", wid({"dnsNames": ["a.*.{namespace}.svc"]}), "cannot be wildcards"),
    ("dnsname-env-injection", wid({"dnsNames": ["${HOSTNAME}.svc"]}), "may only contain"),
    (
        "td-trustdomain-path",
        td({"trustDomain": "evil.example.org/ns/x"}),
        "spec.trustDomain",
    ),
    ("td-unknown-nested", td({"ca": {"selfSigned": {"exportKey": True}}}), "unknown field"),
    ("td-maxttl-negative", td({"policy": {"maxTTL": "-24h"}}), "maxTTL"),
]


@pytest.mark.parametrize(("case", "obj", "expected"), ADMISSION, ids=[c[0] for c in ADMISSION])
def test_rejected_at_admission(
    cluster: Cluster,
    crds: None,
    sentinel: Sentinel,
    playground: str,
    results: Results,
    case: str,
    obj: dict[str, Any],
    expected: str,
) -> None:
    result = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-n",
        playground,
        "-f",
        "-",
        check=False,
        input_text=json.dumps(obj),
    )
    error = " ".join(result.stderr.split())
    results.case(category="admission", case=case, error=_short(error, expected))
    assert result.returncode != 0, f"{case} was admitted"
    assert expected in error, f"{case}: expected {expected!r} in:\n{error[:2000]}"
    sentinel.assert_unchanged(cluster)


# ----------------------------------------------------------------------------- bring-your-own CA


BYO = bad_ca_secrets()


def _events(cluster: Cluster, name: str) -> list[tuple[str, str]]:
    events = client.EventsV1Api(cluster.api).list_event_for_all_namespaces().items
    return [
        (e.reason or "", e.note or "")
        for e in events
        if e.regarding is not None and e.regarding.name == name
    ]


@pytest.mark.parametrize("case", sorted(BYO), ids=sorted(BYO))
def test_bring_your_own_ca_rejected(
    cluster: Cluster,
    slot: OperatorSlot,
    sentinel: Sentinel,
    results: Results,
    case: str,
) -> None:
    slot.ensure()
    data, expected = BYO[case]
    name = unique(f"byo-{case}")[:50]
    secret = f"{name}-ca"
    client.CoreV1Api(cluster.api).create_namespaced_secret(
        OPNS,
        {
            "metadata": {"name": secret},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        },
    )
    apply_yaml(
        cluster,
        f"""
apiVersion: trustwarden.io/v1alpha1
kind: TrustDomain
metadata: {{name: {name}}}
spec:
  trustDomain: {name}.example.org
  ca: {{secretRef: {{name: {secret}}}}}
""",
    )
    try:
        obj = wait_for(
            lambda: (
                (c := condition(t := get_td(cluster, name), "Ready")) is not None
                and c["status"] == "False"
                and c["reason"] == "CAInvalid"
                and t
            ),
            timeout=60,
            what=f"{name}: Ready=False CAInvalid",
        )
        message = condition(obj, "Ready")["message"]  # type: ignore[index]
        event = wait_for(
            lambda: [n for r, n in _events(cluster, name) if r == "CAInvalid"],
            timeout=30,
            what=f"{name}: Event CAInvalid",
        )
        results.case(category="bring-your-own CA", case=case, error=f"CAInvalid: {message}")
        assert expected.lower() in message.lower(), f"{case}: {expected!r} not in {message!r}"
        assert expected.lower() in event[0].lower()
        assert secret in message  # names the Secret the problem is in
        assert "PRIVATE KEY" not in message and "PRIVATE KEY" not in event[0]
        sentinel.assert_unchanged(cluster)
    finally:
        custom(cluster).delete_cluster_custom_object(GROUP, VERSION, "trustdomains", name)
        client.CoreV1Api(cluster.api).delete_namespaced_secret(secret, OPNS)


# ----------------------------------------------------------------------------- hijack and policy


@dataclass
class Outcome:
    error: str
    checks: list[Callable[[], None]] = field(default_factory=list)


def _secret_rv(cluster: Cluster, namespace: str, name: str) -> str:
    return str(
        client.CoreV1Api(cluster.api)
        .read_namespaced_secret(name, namespace)
        .metadata.resource_version
    )


def _victim(cluster: Cluster, namespace: str, name: str = "victim") -> str:
    client.CoreV1Api(cluster.api).create_namespaced_secret(
        namespace, {"metadata": {"name": name}, "stringData": {"password": "hunter2"}}
    )
    return _secret_rv(cluster, namespace, name)


def _wid_reason(cluster: Cluster, namespace: str, name: str, reason: str) -> str:
    obj = wait_for(
        lambda: (
            (c := condition(w := get_wid(cluster, namespace, name), "Ready")) is not None
            and c["reason"] == reason
            and w
        ),
        timeout=60,
        what=f"{namespace}/{name}: Ready=False {reason}",
    )
    message = str(condition(obj, "Ready")["message"])  # type: ignore[index]
    wait_for(
        lambda: reason in [r for r, _ in _events(cluster, name)],
        timeout=30,
        what=f"Event {reason} about {name}",
    )
    return f"{reason}: {message}"


def _no_secret_access(plane: ControlPlane, namespace: str, name: str) -> None:
    """The operator's user never read, wrote or deleted that Secret (API server audit log).
    A create refused with 409 (the name is taken) neither reads nor writes it."""
    touched = [
        e
        for e in plane.audit_events()
        if (e.get("user") or {}).get("username") == OPERATOR_USER  # type: ignore[union-attr]
        and (e.get("objectRef") or {}).get("namespace") == namespace  # type: ignore[union-attr]
        and (e.get("objectRef") or {}).get("name") == name  # type: ignore[union-attr]
        and not (
            e.get("verb") == "create" and (e.get("responseStatus") or {}).get("code") == 409  # type: ignore[union-attr]
        )
    ]
    assert not touched, (
        f"the operator touched {namespace}/{name}: {[e.get('verb') for e in touched]}"
    )


def hijack_annotation_names_foreign_secret(
    cluster: Cluster, plane: ControlPlane, ns: str
) -> Outcome:
    rv = _victim(cluster, ns)
    body = pod_body("hijack-annotation", {"app": "svc"})
    body["metadata"]["annotations"] = {"trustwarden.io/secret": "victim"}
    pod = client.CoreV1Api(cluster.api).create_namespaced_pod(ns, body)
    chosen = pod.metadata.annotations["trustwarden.io/secret"]
    wait_for(lambda: secret_data(cluster, ns, chosen), timeout=60, what="the pod's own Secret")

    def check() -> None:
        assert chosen != "victim"
        assert _secret_rv(cluster, ns, "victim") == rv
        _no_secret_access(plane, ns, "victim")

    return Outcome(f"annotation replaced by the webhook: trustwarden.io/secret={chosen}", [check])


def hijack_other_pods_svid(cluster: Cluster, plane: ControlPlane, ns: str) -> Outcome:
    core = client.CoreV1Api(cluster.api)
    owner = core.create_namespaced_pod(ns, pod_body("svid-owner", {"app": "svc"}))
    target = owner.metadata.annotations["trustwarden.io/secret"]
    wait_for(lambda: secret_data(cluster, ns, target), timeout=60, what="the owner's Secret")
    before = secret_data(cluster, ns, target)
    body = pod_body("svid-thief", {"app": "svc"})
    body["metadata"]["annotations"] = {"trustwarden.io/secret": target}
    thief = core.create_namespaced_pod(ns, body)
    chosen = thief.metadata.annotations["trustwarden.io/secret"]

    def check() -> None:
        assert chosen != target
        assert secret_data(cluster, ns, target) == before

    return Outcome(f"another pod's SVID Secret not reused; thief got {chosen}", [check])


def hijack_identity_label(cluster: Cluster, plane: ControlPlane, ns: str) -> Outcome:
    """A pod claims an identity (label) whose selector does not select it."""
    pod = client.CoreV1Api(cluster.api).create_namespaced_pod(
        ns, pod_body("claims-identity", {"app": "other", "trustwarden.io/identity": "svc"})
    )
    labels = pod.metadata.labels or {}
    volumes = [v.name for v in pod.spec.volumes or ()]

    def check() -> None:
        assert "trustwarden.io/identity" not in labels, labels
        assert "trustwarden-svid" not in volumes

    return Outcome(
        "hand-set trustwarden.io/identity label removed by the webhook; no SVID", [check]
    )


def hijack_premade_volume(cluster: Cluster, plane: ControlPlane, ns: str) -> Outcome:
    rv = _victim(cluster, ns, "victim-volume")
    body = pod_body("premade-volume", {"app": "svc"})
    body["spec"]["volumes"] = [
        {"name": "trustwarden-svid", "secret": {"secretName": "victim-volume"}}
    ]
    pod = client.CoreV1Api(cluster.api).create_namespaced_pod(ns, body)
    mounted = [v.secret.secret_name for v in pod.spec.volumes if v.name == "trustwarden-svid"]

    def check() -> None:
        assert mounted and mounted[0] != "victim-volume"
        assert _secret_rv(cluster, ns, "victim-volume") == rv
        _no_secret_access(plane, ns, "victim-volume")

    return Outcome(f"pre-made trustwarden-svid volume replaced ({mounted})", [check])


def hijack_opted_in_later(cluster: Cluster, plane: ControlPlane, ns: str) -> Outcome:
    """A pod created before its namespace opted in (no webhook ran) carrying the identity
    label and a trustwarden-svid volume that names a foreign Secret."""
    late = make_namespace(cluster, "tw-rel-late")
    per_pod_identity(cluster, late, "rel", name="svc", app="svc")
    rv = _victim(cluster, late, "victim-late")
    body = pod_body("pre-opt-in", {"app": "svc", "trustwarden.io/identity": "svc"})
    body["spec"]["volumes"] = [
        {"name": "trustwarden-svid", "secret": {"secretName": "victim-late"}}
    ]
    client.CoreV1Api(cluster.api).create_namespaced_pod(late, body)
    client.CoreV1Api(cluster.api).patch_namespace(late, {"metadata": {"labels": INJECT}})
    error = _wid_reason(cluster, late, "svc", "NotAdmitted")

    def check() -> None:
        assert _secret_rv(cluster, late, "victim-late") == rv
        _no_secret_access(plane, late, "victim-late")

    return Outcome(error, [check])


def cross_namespace_selector(cluster: Cluster, plane: ControlPlane, ns: str) -> Outcome:
    """A WorkloadIdentity in namespace A selects app=svc; a pod with that label in namespace B
    (opted in, no identity of its own) must not get A's identity."""
    other = make_namespace(cluster, "tw-rel-b", INJECT)
    pod = client.CoreV1Api(cluster.api).create_namespaced_pod(
        other, pod_body("b-pod", {"app": "svc"})
    )

    def check() -> None:
        assert "trustwarden.io/identity" not in (pod.metadata.labels or {})
        assert not [v for v in pod.spec.volumes or () if v.name == "trustwarden-svid"]

    return Outcome("a selector only ever selects pods of its own namespace", [check])


def shared_secret_squatting(cluster: Cluster, plane: ControlPlane, ns: str) -> Outcome:
    """A Shared identity whose secretName is an existing foreign Secret, even one that forges
    the managed-by label."""
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {
                "name": "forged-svid",
                "labels": {"app.kubernetes.io/managed-by": "trustwarden"},
            },
            "stringData": {"tls.crt": "forged"},
        },
    )
    rv = _secret_rv(cluster, ns, "forged-svid")
    apply_yaml(
        cluster,
        f"""
apiVersion: trustwarden.io/v1alpha1
kind: WorkloadIdentity
metadata: {{name: forged, namespace: {ns}}}
spec:
  trustDomain: rel
  delivery: {{mode: Shared, secretName: forged-svid}}
""",
    )
    error = _wid_reason(cluster, ns, "forged", "SecretConflict")

    def check() -> None:
        assert _secret_rv(cluster, ns, "forged-svid") == rv

    return Outcome(error, [check])


def namespace_not_allowed(cluster: Cluster, plane: ControlPlane, ns: str) -> Outcome:
    name = unique("restricted")
    apply_yaml(
        cluster,
        f"""
apiVersion: trustwarden.io/v1alpha1
kind: TrustDomain
metadata: {{name: {name}}}
spec:
  trustDomain: {name}.example.org
  ca: {{selfSigned: {{}}}}
  policy: {{allowedNamespaces: {{matchLabels: {{team: payments}}}}}}
""",
    )
    apply_yaml(
        cluster,
        f"""
apiVersion: trustwarden.io/v1alpha1
kind: WorkloadIdentity
metadata: {{name: sneaky, namespace: {ns}}}
spec:
  trustDomain: {name}
  delivery: {{mode: Shared, secretName: sneaky-svid}}
""",
    )
    error = _wid_reason(cluster, ns, "sneaky", "NamespaceNotAllowed")

    def check() -> None:
        assert secret_data(cluster, ns, "sneaky-svid") is None
        assert f"{name}.example.org.pem" not in (bundle_data(cluster, ns) or {})

    return Outcome(error, [check])


def federation_not_allowed(cluster: Cluster, plane: ControlPlane, ns: str) -> Outcome:
    partner = unique("partner")
    apply_yaml(
        cluster,
        f"""
apiVersion: trustwarden.io/v1alpha1
kind: TrustDomain
metadata: {{name: {partner}}}
spec:
  trustDomain: {partner}.example.net
  ca: {{selfSigned: {{}}}}
  policy: {{allowedNamespaces: {{matchLabels: {{team: partners}}}}}}
""",
    )
    wait_for(
        lambda: (condition(get_td(cluster, partner), "Ready") or {}).get("status") == "True",
        timeout=60,
        what="the partner domain",
    )
    apply_yaml(
        cluster,
        f"""
apiVersion: trustwarden.io/v1alpha1
kind: WorkloadIdentity
metadata: {{name: greedy, namespace: {ns}}}
spec:
  trustDomain: rel
  federatesWith: [{partner}]
  delivery: {{mode: Shared, secretName: greedy-svid}}
""",
    )
    error = _wid_reason(cluster, ns, "greedy", "FederationNotAllowed")
    anchor = get_td(cluster, partner)["status"]["authorities"][0]["sha256"]

    def check() -> None:
        bundle = bundle_data(cluster, ns) or {}
        assert f"{partner}.example.net.pem" not in bundle
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        shas = (
            {
                c.fingerprint(hashes.SHA256()).hex()
                for c in x509.load_pem_x509_certificates(bundle.get("ca.crt", "").encode() or b"")
            }
            if bundle.get("ca.crt")
            else set()
        )
        assert anchor not in shas
        assert secret_data(cluster, ns, "greedy-svid") is None

    return Outcome(error, [check])


def ttl_far_above_cap(cluster: Cluster, plane: ControlPlane, ns: str) -> Outcome:
    apply_yaml(
        cluster,
        f"""
apiVersion: trustwarden.io/v1alpha1
kind: WorkloadIdentity
metadata: {{name: forever, namespace: {ns}}}
spec:
  trustDomain: rel
  ttl: 876000h
  delivery: {{mode: Shared, secretName: forever-svid}}
""",
    )
    error = _wid_reason(cluster, ns, "forever", "TTLAboveCap")

    def check() -> None:
        assert secret_data(cluster, ns, "forever-svid") is None

    return Outcome(error, [check])


def label_value_injection(cluster: Cluster, plane: ControlPlane, ns: str) -> Outcome:
    """A pod author controls label values: `{label:tier}` rendered into a DNS name with a
    value that is a valid label but not a DNS label (uppercase, '_')."""
    apply_yaml(
        cluster,
        f"""
apiVersion: trustwarden.io/v1alpha1
kind: WorkloadIdentity
metadata: {{name: tiered, namespace: {ns}}}
spec:
  trustDomain: rel
  podSelector: {{matchLabels: {{app: tiered}}}}
  dnsNames: ["{{label:tier}}.{{namespace}}.svc"]
""",
    )
    wait_for(
        lambda: (condition(get_wid(cluster, ns, "tiered"), "Ready") or {}).get("status") == "True",
        timeout=60,
        what="identity tiered",
    )
    pod = client.CoreV1Api(cluster.api).create_namespaced_pod(
        ns, pod_body("tier-inject", {"app": "tiered", "tier": "Evil_Tier"})
    )
    secret = pod.metadata.annotations["trustwarden.io/secret"]
    obj = wait_for(
        lambda: (
            (c := condition(w := get_wid(cluster, ns, "tiered"), "Ready")) is not None
            and c["status"] == "False"
            and c["reason"] == "InvalidTemplate"
            and w
        ),
        timeout=60,
        what="Ready=False InvalidTemplate on the identity",
    )

    def check() -> None:
        assert secret_data(cluster, ns, secret) is None

    return Outcome(f"InvalidTemplate: {condition(obj, 'Ready')['message']}", [check])  # type: ignore[index]


def bundle_squatting(cluster: Cluster, plane: ControlPlane, ns: str) -> Outcome:
    """Someone pre-creates `trustwarden-bundle` in a namespace to feed it their own anchors."""
    squat = make_namespace(cluster, "tw-rel-squat")
    client.CoreV1Api(cluster.api).create_namespaced_config_map(
        squat, {"metadata": {"name": "trustwarden-bundle"}, "data": {"ca.crt": "attacker root"}}
    )
    shared_identity(cluster, squat, "rel", "squatted")
    obj = wait_for(
        lambda: (
            (c := condition(t := get_td(cluster, "rel"), "BundlesPublished")) is not None
            and c["reason"] == "BundleConflict"
            and t
        ),
        timeout=60,
        what="BundlesPublished=False BundleConflict on TrustDomain rel",
    )
    message = condition(obj, "BundlesPublished")["message"]  # type: ignore[index]
    wait_for(
        lambda: "BundleConflict" in [r for r, _ in _events(cluster, "rel")],
        timeout=30,
        what="Event BundleConflict",
    )

    def check() -> None:
        assert (bundle_data(cluster, squat) or {}).get("ca.crt") == "attacker root"
        client.CoreV1Api(cluster.api).delete_namespace(squat)

    return Outcome(f"BundleConflict: {message}", [check])


HIJACK: dict[str, Callable[[Cluster, ControlPlane, str], Outcome]] = {
    "pod-annotation-names-foreign-secret": hijack_annotation_names_foreign_secret,
    "pod-annotation-names-other-pods-svid": hijack_other_pods_svid,
    "pod-label-claims-identity": hijack_identity_label,
    "pod-premade-svid-volume": hijack_premade_volume,
    "pod-from-before-opt-in-names-foreign-secret": hijack_opted_in_later,
    "selector-across-namespaces": cross_namespace_selector,
    "shared-secretname-squats-forged-secret": shared_secret_squatting,
    "namespace-not-allowed-by-policy": namespace_not_allowed,
    "federateswith-not-entitled": federation_not_allowed,
    "ttl-far-above-cap": ttl_far_above_cap,
    "pod-label-value-template-injection": label_value_injection,
    "bundle-configmap-squatting": bundle_squatting,
}


@pytest.fixture(scope="module")
def hijack_ns(cluster: Cluster, slot: OperatorSlot, suite_domain: str) -> Iterator[str]:
    slot.ensure()
    ns = make_namespace(cluster, "tw-rel-hijack", INJECT)
    per_pod_identity(cluster, ns, suite_domain, name="svc", app="svc")
    yield ns


@pytest.mark.parametrize("case", sorted(HIJACK), ids=sorted(HIJACK))
def test_hijack_and_policy(
    cluster: Cluster,
    control_plane: ControlPlane,
    slot: OperatorSlot,
    sentinel: Sentinel,
    hijack_ns: str,
    results: Results,
    case: str,
) -> None:
    slot.ensure()
    outcome = HIJACK[case](cluster, control_plane, hijack_ns)
    results.case(category="hijack and policy", case=case, error=outcome.error)
    for check in outcome.checks:
        check()
    sentinel.assert_unchanged(cluster)


def test_sentinel_and_invariants_after_all_cases(
    cluster: Cluster, sentinel: Sentinel, invariants: Invariants
) -> None:
    sentinel.assert_unchanged(cluster)
    invariants.converge(timeout=60, what="after the hostile inputs")


def _short(error: str, expected: str) -> str:
    """The part of a long admission error around the expected text."""
    at = error.find(expected)
    if at < 0 or len(error) <= 400:
        return error[:400]
    start = error.rfind(" ", 0, max(0, at - 160)) + 1  # from a word boundary
    return error[start : at + len(expected) + 120].strip()
