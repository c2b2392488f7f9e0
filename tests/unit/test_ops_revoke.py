"""`trustwarden revoke`: target selection (--identity, --pod, --serial), the annotation
patch, confirmation, and waiting for the operator (simulated by the fake port)."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest

from tests.unit.test_ops_fixtures import (
    NOW,
    FakePort,
    b64,
    bundle_body,
    is_revoke_requested,
    make_ca,
    make_leaf,
    pod_body,
    secret_body,
)
from trustwarden.ops import commands
from trustwarden.ops import revoke as rev
from trustwarden.ops.errors import (
    AbortedError,
    ConflictError,
    DeadlineError,
    NotFoundError,
    UsageError,
)
from trustwarden.pki import Authority

CA = make_ca()


def leaf(serial: int, path: str = "/ns/payments/sa/api") -> Any:
    return make_leaf(CA, path, serial=serial)


def cluster() -> FakePort:
    port = FakePort(namespace="payments")
    port.add_secret(secret_body("payments", "api-svid", leaf(0xA1), CA, identity="api"))
    for i, uid in ((2, "uid-2"), (3, "uid-3")):
        port.add_secret(
            secret_body(
                "payments",
                f"worker-svid-{i}",
                leaf(0xA0 + i, "/ns/payments/sa/worker"),
                CA,
                identity="worker",
                pod=(f"worker-{i}", uid),
            )
        )
        port.pods[("payments", f"worker-{i}")] = pod_body(
            "payments", f"worker-{i}", uid, f"worker-svid-{i}"
        )
    port.add_secret(secret_body("ledger", "api-svid", leaf(0xB1), CA, identity="api"))
    port.bundles["payments"] = bundle_body("payments", [CA])
    return port


def ctx(port: FakePort, *, answer: bool = True) -> tuple[commands.Context, io.StringIO]:
    out = io.StringIO()
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    context = commands.Context(
        port=port,
        out=out,
        err=io.StringIO(),
        confirm=lambda prompt: answer,
        clock=lambda: NOW,
        sleep=sleep,
        monotonic=lambda: clock[0],
    )
    return context, out


# --------------------------------------------------------------------------- selection


def test_select_by_identity_only_that_identity_in_that_namespace() -> None:
    port = cluster()
    secrets = list(port.secrets.values())
    targets = rev.select_by_identity(secrets, "payments", "worker")
    assert [t.name for t in targets] == ["worker-svid-2", "worker-svid-3"]
    assert [t.serial for t in targets] == ["a2", "a3"]
    (api,) = rev.select_by_identity(secrets, "payments", "api")
    assert api.ref == "payments/api-svid" and api.trust_domain == "prod.example.org"
    with pytest.raises(NotFoundError, match=r"trustwarden\.io/identity=nope in namespace payments"):
        rev.select_by_identity(secrets, "payments", "nope")


def test_select_by_identity_ignores_unmanaged_secrets() -> None:
    body = secret_body("payments", "copy", leaf(0xC1), CA, identity="api")
    body["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "someone-else"
    with pytest.raises(NotFoundError):
        rev.select_by_identity([body], "payments", "api")


def test_select_by_pod_checks_the_owner_uid() -> None:
    port = cluster()
    pod = port.pods[("payments", "worker-2")]
    secret = port.secrets[("payments", "worker-svid-2")]
    assert rev.select_by_pod(pod, secret).name == "worker-svid-2"
    imposter = pod_body("payments", "worker-2", "another-uid", "worker-svid-2")
    with pytest.raises(UsageError, match="not owned by pod payments/worker-2"):
        rev.select_by_pod(imposter, secret)
    with pytest.raises(NotFoundError, match="names Secret worker-svid-2, which does not exist"):
        rev.select_by_pod(pod, None)
    bare = pod_body("payments", "plain", "uid-x", None)
    with pytest.raises(NotFoundError, match=r"no trustwarden\.io/secret annotation"):
        rev.select_by_pod(bare, None)


def test_pod_secret_name_falls_back_to_the_injected_volume() -> None:
    pod = pod_body("payments", "p", "u", None)
    pod["spec"]["volumes"] = [{"name": "trustwarden-svid", "secret": {"secretName": "s-1"}}]
    assert rev.pod_secret_name(pod) == "s-1"


@pytest.mark.parametrize("text", ["a2", "A2", "0xa2", "00:a2", "00:A2", " 0a2 "])
def test_select_by_serial_normalises(text: str) -> None:
    port = cluster()
    (target,) = rev.select_by_serial(list(port.secrets.values()), "payments", text)
    assert target.name == "worker-svid-2"


def test_select_by_serial_errors() -> None:
    secrets = list(cluster().secrets.values())
    with pytest.raises(NotFoundError, match="holds serial b1"):
        rev.select_by_serial(secrets, "payments", "b1")  # it lives in namespace ledger
    with pytest.raises(UsageError, match="not a hexadecimal serial"):
        rev.select_by_serial(secrets, "payments", "xyz")


def test_select_by_serial_uses_the_certificate_when_the_annotation_is_missing() -> None:
    body = secret_body("payments", "s", leaf(0xD1), CA, identity="api")
    del body["metadata"]["annotations"]["trustwarden.io/serial"]
    assert rev.select_by_serial([body], "payments", "D1")[0].name == "s"


def test_reason_is_required() -> None:
    with pytest.raises(UsageError, match="must not be empty"):
        rev.check_reason("  ")
    with pytest.raises(UsageError, match="keep it under"):
        rev.check_reason("x" * 300)


def test_revoke_patch() -> None:
    assert rev.revoke_patch("key leaked", "42") == {
        "metadata": {
            "annotations": {"trustwarden.io/revoke": "key leaked"},
            "resourceVersion": "42",
        }
    }


# --------------------------------------------------------------------------- flow


def operator_reacts(after_polls: int, ca: Authority = CA) -> Any:
    """A fake operator: after N polls, every annotated Secret gets a new certificate and the
    bundle CRL lists the old serial."""
    state = {"polls": 0, "revoked": []}

    def react(port: FakePort) -> None:
        state["polls"] += 1
        if state["polls"] < after_polls:
            return
        for (ns, name), body in list(port.secrets.items()):
            if not is_revoke_requested(body):
                continue
            old = rev.current_serial(body)
            state["revoked"].append(make_leaf(ca, "/ns/x/sa/y", serial=int(old, 16)))
            fresh = make_leaf(ca, "/ns/payments/sa/api", serial=int(old, 16) + 0x1000)
            identity = body["metadata"]["labels"]["trustwarden.io/identity"]
            new = secret_body(ns, name, fresh, ca, identity=identity)
            port.secrets[(ns, name)] = new
            port.bundles[ns] = bundle_body(ns, [ca], revoked=[(ca, x) for x in state["revoked"]])

    return react


def test_revoke_identity_waits_for_new_serials_and_the_crl() -> None:
    port = cluster()
    port.on_poll = operator_reacts(after_polls=3)
    context, out = ctx(port)
    code = commands.revoke(
        context, namespace="payments", identity="worker", reason="key leaked", yes=True
    )
    assert code == 0
    assert [(ns, name) for ns, name, _ in port.patches] == [
        ("payments", "worker-svid-2"),
        ("payments", "worker-svid-3"),
    ]
    assert port.patches[0][2]["metadata"]["annotations"] == {"trustwarden.io/revoke": "key leaked"}
    text = out.getvalue()
    assert "payments/worker-svid-2: a2 → 10a2" in text
    assert "payments/worker-svid-3: a3 → 10a3" in text
    assert text.rstrip().endswith("Revoked 2 certificate(s).")


def test_revoke_asks_and_aborts_without_touching_anything() -> None:
    port = cluster()
    context, _ = ctx(port, answer=False)
    with pytest.raises(AbortedError):
        commands.revoke(context, namespace="payments", identity="api", reason="r")
    assert port.patches == []


def test_revoke_no_wait() -> None:
    port = cluster()
    context, out = ctx(port)
    code = commands.revoke(
        context, namespace="payments", serial="A1", reason="r", yes=True, wait=False
    )
    assert code == 0 and len(port.patches) == 1
    assert "Not waiting" in out.getvalue()


def test_revoke_pod() -> None:
    port = cluster()
    port.on_poll = operator_reacts(after_polls=1)
    context, _out = ctx(port)
    assert commands.revoke(context, namespace="payments", pod="worker-3", reason="r", yes=True) == 0
    assert [name for _, name, _ in port.patches] == ["worker-svid-3"]
    with pytest.raises(NotFoundError, match="pod payments/gone not found"):
        commands.revoke(context, namespace="payments", pod="gone", reason="r", yes=True)


def test_revoke_times_out_when_the_operator_does_not_act() -> None:
    port = cluster()
    context, _ = ctx(port)
    with pytest.raises(DeadlineError, match="waiting for a new certificate"):
        commands.revoke(
            context,
            namespace="payments",
            identity="api",
            reason="r",
            yes=True,
            timeout=timedelta(seconds=5),
        )


def test_revoke_refuses_when_the_secret_was_renewed_meanwhile() -> None:
    """Between selection and the patch the operator renewed the Secret: annotating it now
    would revoke the new serial, not the one shown; refuse and say so."""
    port = cluster()
    original = port.patch_secret

    def renew_then_patch(namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        renewed = secret_body(
            namespace, name, leaf(0xEE), CA, identity="api", resource_version="200"
        )
        port.add_secret(renewed)
        return original(namespace, name, patch)

    port.patch_secret = renew_then_patch  # type: ignore[method-assign]
    context, _ = ctx(port)
    with pytest.raises(ConflictError, match="serial a1 is now ee"):
        commands.revoke(context, namespace="payments", identity="api", reason="r", yes=True)
    assert port.patches == []


def test_revoke_retries_a_conflict_that_did_not_change_the_serial() -> None:
    port = cluster()
    port.conflict_once = True
    context, _ = ctx(port)
    code = commands.revoke(
        context, namespace="payments", identity="api", reason="r", yes=True, wait=False
    )
    assert code == 0
    assert port.patches[0][2] == {"metadata": {"annotations": {"trustwarden.io/revoke": "r"}}}


def test_replacement_and_crl_lists() -> None:
    port = cluster()
    target = rev.target_of(port.secrets[("payments", "api-svid")])
    body = port.secrets[("payments", "api-svid")]
    assert rev.replacement(target, body) is None
    assert rev.replacement(target, None) == ""
    body["data"]["tls.crt"] = b64(leaf(0xF1).chain_pem)
    body["metadata"]["annotations"]["trustwarden.io/revoke"] = "r"
    assert rev.replacement(target, body) is None  # the annotation is still there
    del body["metadata"]["annotations"]["trustwarden.io/revoke"]
    assert rev.replacement(target, body) == "f1"
    assert not rev.crl_lists(port.bundles["payments"], "prod.example.org", "a1")
    revoked = bundle_body("payments", [CA], revoked=[(CA, leaf(0xA1))])
    assert rev.crl_lists(revoked, "prod.example.org", "a1")
    assert rev.crl_lists(revoked, "", "a1")
    assert not rev.crl_lists(None, "prod.example.org", "a1")
