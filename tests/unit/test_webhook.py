"""The injection webhook: the JSON Patch it answers with, checked by applying it with an
independent RFC 6902 implementation (`jsonpatch`), and the AdmissionReview it returns."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import ssl
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.unit.fakes import (
    ADMISSION_KEY,
    FakeClock,
    FakeKube,
    make_engine,
    namespace,
    workload_identity,
)
from trustwarden.handlers.services import OperatorConfig, Services
from trustwarden.handlers.webhook import WEBHOOK_PATH, InjectionWebhook
from trustwarden.handlers.webhook_tls import make_serving_certificate, server_context
from trustwarden.reconcile.injection import (
    MOUNT_PATH,
    InjectionPatch,
    InjectionRejected,
    json_patch,
    plan_injection,
    pointer_token,
)
from trustwarden.reconcile.model import WorkloadIdentitySpec

SECRET = "web-svid-x"
VOLUME = {"name": "trustwarden-svid", "secret": {"secretName": SECRET, "defaultMode": 0o440}}
MOUNT = {"name": "trustwarden-svid", "mountPath": MOUNT_PATH, "readOnly": True}
INJECTED = InjectionPatch(
    labels={"trustwarden.io/identity": "web"},
    annotations={"trustwarden.io/secret": SECRET},
    identity="web",
    secret_name=SECRET,
)


def _apply(pod: dict[str, Any], plan: InjectionPatch) -> dict[str, Any]:
    before = copy.deepcopy(pod)
    ops = json_patch(pod, plan)
    assert pod == before  # building the patch never changes the request's object
    result: dict[str, Any] = jsonpatch.apply_patch(pod, ops)
    return result


def test_bare_pod_gets_whole_maps_and_lists() -> None:
    pod: dict[str, Any] = {
        "metadata": {"namespace": "ns", "generateName": "web-"},
        "spec": {"containers": [{"name": "app"}]},
    }
    ops = json_patch(pod, INJECTED)
    # Nothing to add to: every target is added whole, never a member of a missing parent.
    assert {op["path"] for op in ops} == {
        "/metadata/labels",
        "/metadata/annotations",
        "/spec/volumes",
        "/spec/containers/0/volumeMounts",
    }
    assert all(op["op"] == "add" for op in ops)
    injected = _apply(pod, INJECTED)
    assert injected["metadata"]["labels"] == {"trustwarden.io/identity": "web"}
    assert injected["metadata"]["annotations"] == {"trustwarden.io/secret": SECRET}
    assert injected["spec"] == {
        "containers": [{"name": "app", "volumeMounts": [MOUNT]}],
        "volumes": [VOLUME],
    }


def test_existing_maps_and_lists_are_extended_with_escaped_keys() -> None:
    pod: dict[str, Any] = {
        "metadata": {
            "labels": {"app": "web"},
            "annotations": {"example.com/owner": "team"},
        },
        "spec": {
            "volumes": [{"name": "data", "emptyDir": {}}],
            "initContainers": [{"name": "init", "volumeMounts": []}],
            "containers": [
                {"name": "app", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "sidecar"},
            ],
        },
    }
    ops = json_patch(pod, INJECTED)
    paths = [op["path"] for op in ops]
    assert "/metadata/labels/trustwarden.io~1identity" in paths
    assert "/metadata/annotations/trustwarden.io~1secret" in paths
    assert "/spec/volumes/-" in paths
    assert "/spec/containers/0/volumeMounts/-" in paths
    injected = _apply(pod, INJECTED)
    assert injected["metadata"]["labels"] == {"app": "web", "trustwarden.io/identity": "web"}
    assert injected["metadata"]["annotations"] == {
        "example.com/owner": "team",
        "trustwarden.io/secret": SECRET,
    }
    assert injected["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}, VOLUME]
    assert injected["spec"]["initContainers"] == [{"name": "init", "volumeMounts": [MOUNT]}]
    assert injected["spec"]["containers"] == [
        {"name": "app", "volumeMounts": [{"name": "data", "mountPath": "/data"}, MOUNT]},
        {"name": "sidecar", "volumeMounts": [MOUNT]},
    ]


def test_hand_written_volume_mount_label_and_annotation_are_replaced() -> None:
    pod: dict[str, Any] = {
        "metadata": {
            "labels": {"trustwarden.io/identity": "other"},
            "annotations": {"trustwarden.io/secret": "victim"},
        },
        "spec": {
            "volumes": [
                {"name": "a", "emptyDir": {}},
                {"name": "trustwarden-svid", "secret": {"secretName": "victim"}},
                {"name": "b", "emptyDir": {}},
            ],
            "containers": [
                {
                    "name": "app",
                    "volumeMounts": [
                        {"name": "other", "mountPath": MOUNT_PATH},
                        {"name": "a", "mountPath": "/a"},
                    ],
                }
            ],
        },
    }
    injected = _apply(pod, INJECTED)
    assert injected["metadata"]["labels"] == {"trustwarden.io/identity": "web"}
    assert injected["metadata"]["annotations"] == {"trustwarden.io/secret": SECRET}
    assert injected["spec"]["volumes"] == [
        {"name": "a", "emptyDir": {}},
        {"name": "b", "emptyDir": {}},
        VOLUME,
    ]
    assert injected["spec"]["containers"][0]["volumeMounts"] == [
        {"name": "a", "mountPath": "/a"},
        MOUNT,
    ]


def test_unselected_pod_only_loses_what_it_wrote_by_hand() -> None:
    plan = InjectionPatch(
        labels={"trustwarden.io/identity": None}, annotations={"trustwarden.io/secret": None}
    )
    bare: dict[str, Any] = {"metadata": {}, "spec": {"containers": [{"name": "app"}]}}
    assert json_patch(bare, plan) == []
    pod: dict[str, Any] = {
        "metadata": {"labels": {"trustwarden.io/identity": "web", "app": "x"}},
        "spec": {"containers": [{"name": "app"}]},
    }
    assert json_patch(pod, plan) == [
        {"op": "remove", "path": "/metadata/labels/trustwarden.io~1identity"}
    ]
    assert _apply(pod, plan)["metadata"] == {"labels": {"app": "x"}}


def test_ephemeral_containers_are_left_alone() -> None:
    # The API server refuses ephemeral containers at CREATE; were one there, it is untouched.
    pod: dict[str, Any] = {
        "metadata": {},
        "spec": {"containers": [{"name": "app"}], "ephemeralContainers": [{"name": "debug"}]},
    }
    injected = _apply(pod, INJECTED)
    assert injected["spec"]["ephemeralContainers"] == [{"name": "debug"}]


@pytest.mark.parametrize(
    ("key", "token"),
    [("plain", "plain"), ("a/b", "a~1b"), ("a~b", "a~0b"), ("~/", "~0~1")],
)
def test_pointer_tokens_are_escaped(key: str, token: str) -> None:
    assert pointer_token(key) == token


def test_plan_and_patch_agree_on_a_selected_pod() -> None:
    identity = WorkloadIdentitySpec.from_body(
        workload_identity(
            "ns",
            "web",
            spec={"trustDomain": "prod", "podSelector": {"matchLabels": {"app": "web"}}},
        )
    )
    pod: dict[str, Any] = {
        "metadata": {"namespace": "ns", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app"}]},
    }
    plan = plan_injection(pod, [identity], key=ADMISSION_KEY, name_factory=lambda w: f"{w}-svid-x")
    injected = _apply(pod, plan)
    assert injected["metadata"]["annotations"] == {
        "trustwarden.io/secret": "web-svid-x",
        "trustwarden.io/admission": ADMISSION_KEY.tag("ns", "web", "web-svid-x"),
    }
    assert injected["spec"]["volumes"][0]["secret"]["secretName"] == "web-svid-x"


# --------------------------------------------------------------------------- the endpoint


def _services() -> Services:
    engine = make_engine(FakeKube(), FakeClock())
    engine.observe_namespace(namespace("apps", {"trustwarden.io/inject": "enabled"}))
    engine.observe_namespace(namespace("plain"))
    engine.observe_namespace(namespace("trustwarden-system", {"trustwarden.io/inject": "enabled"}))
    for name in ("web", "also-web"):
        engine.observe_workload_identity(
            workload_identity(
                "apps",
                name,
                spec={
                    "trustDomain": "prod",
                    "podSelector": {"matchLabels": {"app": "web", "tier": name}},
                },
            )
        )
    engine.observe_workload_identity(
        workload_identity(
            "apps",
            "any-web",
            spec={"trustDomain": "prod", "podSelector": {"matchLabels": {"dup": "yes"}}},
        )
    )
    return Services(
        config=OperatorConfig(operator_namespace="trustwarden-system"),
        engine=engine,
        gateway=None,  # type: ignore[arg-type]  # the webhook never calls the API
        metrics=engine.metrics,
    )


def _review(ns: str, labels: dict[str, str], *, uid: str = "uid-1") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": ns,
            "operation": "CREATE",
            "userInfo": {"username": "someone"},
            "object": {
                "metadata": {"generateName": "web-", "namespace": ns, "labels": labels},
                "spec": {"containers": [{"name": "app"}]},
            },
        },
    }


def _post(services: Services, reviews: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    async def scenario() -> list[tuple[int, Any]]:
        webhook = InjectionWebhook(services)
        answers = []
        async with TestClient(TestServer(webhook.app)) as client:
            for review in reviews:
                response = await client.post(WEBHOOK_PATH, json=review)
                answers.append((response.status, await response.json()))
            response = await client.post(WEBHOOK_PATH, data=b"not json")
            answers.append((response.status, None))
        return answers

    return asyncio.run(scenario())


def _count(services: Services, result: str) -> float:
    value = services.metrics.registry.get_sample_value(
        "trustwarden_webhook_requests_total", {"result": result}
    )
    return value or 0.0


def test_endpoint_answers_admission_reviews() -> None:
    services = _services()
    answers = _post(
        services,
        [
            _review("apps", {"app": "web", "tier": "web"}, uid="injected"),
            _review("apps", {"app": "db"}, uid="unselected"),
            _review("plain", {"app": "web", "tier": "web"}, uid="skipped-ns"),
            _review("trustwarden-system", {"app": "web"}, uid="skipped-own"),
            _review("apps", {"app": "web", "tier": "web", "dup": "yes"}, uid="rejected"),
        ],
    )
    *reviews, (bad_status, _) = answers
    assert bad_status == 400
    by_uid = {body["response"]["uid"]: body for status, body in reviews if status == 200}
    assert set(by_uid) == {"injected", "unselected", "skipped-ns", "skipped-own", "rejected"}
    assert all(b["apiVersion"] == "admission.k8s.io/v1" for b in by_uid.values())
    assert all(b["kind"] == "AdmissionReview" for b in by_uid.values())

    injected = by_uid["injected"]["response"]
    assert injected["allowed"] is True and injected["patchType"] == "JSONPatch"
    pod = _review("apps", {"app": "web", "tier": "web"})["request"]["object"]
    patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(injected["patch"])))
    assert patched["metadata"]["labels"]["trustwarden.io/identity"] == "web"
    secret = patched["metadata"]["annotations"]["trustwarden.io/secret"]
    assert patched["spec"]["volumes"][0]["secret"]["secretName"] == secret

    for uid in ("unselected", "skipped-ns", "skipped-own"):
        assert by_uid[uid]["response"] == {"uid": uid, "allowed": True}

    rejected = by_uid["rejected"]["response"]
    assert rejected["allowed"] is False and "patch" not in rejected
    assert rejected["status"]["code"] == 403
    assert "more than one PerPod WorkloadIdentity" in rejected["status"]["message"]
    assert "any-web" in rejected["status"]["message"]

    assert _count(services, "injected") == 1
    assert _count(services, "unselected") == 1
    assert _count(services, "skipped") == 2
    assert _count(services, "rejected") == 1


def test_endpoint_does_not_listen_before_the_caches_are_loaded() -> None:
    async def scenario() -> bool:
        services = _services()
        webhook = InjectionWebhook(services)
        serving = asyncio.create_task(
            webhook.serve(
                address="127.0.0.1",
                port=0,
                context=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
                ready=services.caches_loaded,
            )
        )
        await asyncio.sleep(0)  # let the task run up to its first wait
        waiting = not serving.done() and webhook._runner is None
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        return waiting

    assert asyncio.run(scenario())


def test_endpoint_serves_tls_once_the_caches_are_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serving = make_serving_certificate(["127.0.0.1"])
    # The key is on disk only while OpenSSL loads it: nothing is left in the temporary
    # directory, even before the server stops (a killed process leaves no key behind).
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    context = server_context(serving)
    assert list(tmp_path.iterdir()) == []

    async def scenario() -> dict[str, Any]:
        services = _services()
        webhook = InjectionWebhook(services)
        serving_task = asyncio.create_task(
            webhook.serve(
                address="127.0.0.1",
                port=0,
                context=context,
                ready=services.caches_loaded,
            )
        )
        services.on_caches_complete()
        await webhook.listening.wait()
        trust = ssl.create_default_context(cadata=serving.ca_pem.decode())
        try:
            async with aiohttp.ClientSession() as session:
                response = await session.post(
                    f"https://127.0.0.1:{webhook.port}{WEBHOOK_PATH}",
                    json=_review("apps", {"app": "db"}, uid="over-tls"),
                    ssl=trust,
                )
                answer: dict[str, Any] = await response.json()
        finally:
            serving_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving_task
        assert webhook.port is None and not webhook.listening.is_set()
        return answer

    answer = asyncio.run(scenario())
    assert answer["response"] == {"uid": "over-tls", "allowed": True}


def _native(name: str = "web", **spec: Any) -> WorkloadIdentitySpec:
    return WorkloadIdentitySpec.from_body(
        {
            "metadata": {"namespace": "ns", "name": name},
            "spec": {
                "trustDomain": "prod",
                "podSelector": {"matchLabels": {"app": "web"}},
                "delivery": {"mode": "PodCertificate"},
                "ttl": "2h",
                **spec,
            },
        }
    )


def test_pod_certificate_identity_gets_the_projected_volume_at_the_secret_paths() -> None:
    pod: dict[str, Any] = {
        "metadata": {"namespace": "ns", "name": "web-1", "labels": {"app": "web"}},
        "spec": {
            "containers": [
                {"name": "app", "volumeMounts": [{"name": "x", "mountPath": MOUNT_PATH}]}
            ]
        },
    }
    plan = plan_injection(pod, [_native()], key=ADMISSION_KEY)
    assert plan.secret_name is None and plan.labels == {} and plan.annotations == {}
    injected = _apply(pod, plan)
    (volume,) = injected["spec"]["volumes"]
    sources = volume["projected"]["sources"]
    assert sources[0]["podCertificate"] == {
        "signerName": "trustwarden.io/prod",
        "keyType": "ECDSAP256",
        "maxExpirationSeconds": 7200,
        "keyPath": "tls.key",
        "certificateChainPath": "tls.crt",
    }
    assert sources[1]["clusterTrustBundle"]["path"] == "ca.crt"
    # The hand-written mount at our path is replaced by ours.
    assert injected["spec"]["containers"][0]["volumeMounts"] == [
        {"name": volume["name"], "mountPath": MOUNT_PATH, "readOnly": True}
    ]


def test_pod_certificate_injection_refuses_two_identities_and_rsa2048() -> None:
    pod = {"metadata": {"namespace": "ns", "name": "p", "labels": {"app": "web"}}, "spec": {}}
    with pytest.raises(InjectionRejected, match="more than one"):
        plan_injection(pod, [_native("a"), _native("b")], key=ADMISSION_KEY)
    with pytest.raises(InjectionRejected, match="keyAlgorithm"):
        plan_injection(pod, [_native(keyAlgorithm="RSA2048")], key=ADMISSION_KEY)
