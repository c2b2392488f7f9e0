"""`trustwarden ca status` and `trustwarden ca rotate`: authorities, bundle coverage,
rotation progress, and the rotate flow against a simulated operator."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

import pytest

from tests.unit.test_ops_fixtures import (
    NOW,
    FakePort,
    bundle_body,
    make_ca,
    td_body,
)
from tests.unit.test_ops_inventory import golden
from trustwarden.ops import ca as ca_mod
from trustwarden.ops import commands
from trustwarden.ops.errors import AbortedError, DeadlineError, NotFoundError, UsageError

OLD = make_ca("ca-old", serial=0x0A11CE, now=NOW - timedelta(days=80))
ACTIVE = make_ca("ca-new", serial=0x0B0B, now=NOW - timedelta(days=10))
NEXT = make_ca("ca-next", serial=0x0C0C, now=NOW)


def status_cluster() -> FakePort:
    port = FakePort()
    body = td_body([(ACTIVE, "Active"), (OLD, "Retired"), (NEXT, "Prepared")], namespaces=4)
    body["status"]["conditions"] += [
        {"type": "CAReady", "status": "True", "reason": "Active", "message": "ok"},
        {
            "type": "BundlesPublished",
            "status": "False",
            "reason": "Publishing",
            "message": "2/4 namespace bundles hold this domain's anchors",
        },
    ]
    port.domains["prod"] = body
    port.bundles["payments"] = bundle_body("payments", [ACTIVE, OLD, NEXT])
    port.bundles["ledger"] = bundle_body("ledger", [ACTIVE, NEXT])
    port.bundles["search"] = bundle_body("search", [ACTIVE])
    other = bundle_body("partner", [make_ca("partner", trust_domain="partner.example.net")])
    other["data"] = {
        k.replace("prod.example.org", "partner.example.net"): v for k, v in other["data"].items()
    }
    port.bundles["partner"] = other
    return port


def ctx(port: FakePort, *, answer: bool = True) -> tuple[commands.Context, io.StringIO]:
    out = io.StringIO()
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    return (
        commands.Context(
            port=port,
            out=out,
            err=io.StringIO(),
            confirm=lambda prompt: answer,
            clock=lambda: NOW,
            sleep=sleep,
            monotonic=lambda: clock[0],
        ),
        out,
    )


def test_domain_view_orders_authorities() -> None:
    view = ca_mod.domain_view(status_cluster().domains["prod"])
    assert [a.state for a in view.authorities] == ["Active", "Prepared", "Retired"]
    assert view.active is not None and view.active.serial == "b0b"
    assert view.ca_kind == "selfSigned" and view.namespaces == 4


def test_bundle_coverage_only_counts_bundles_of_the_domain() -> None:
    port = status_cluster()
    bundles = ca_mod.bundle_views(port.list_bundles(None), "prod.example.org")
    assert [b.namespace for b in bundles] == ["ledger", "payments", "search"]
    assert NEXT.sha256 in bundles[0].anchors and OLD.sha256 not in bundles[0].anchors


def test_golden_status() -> None:
    port = status_cluster()
    context, out = ctx(port)
    assert commands.ca_status(context, name="prod") == 0
    golden("ca-status.golden", out.getvalue())


def test_status_json_and_lookup_by_trust_domain_name() -> None:
    port = status_cluster()
    context, out = ctx(port)
    assert commands.ca_status(context, name="prod.example.org", output="json") == 0
    doc = json.loads(out.getvalue())
    assert doc["name"] == "prod"
    by_serial = {a["serial"]: a for a in doc["authorities"]}
    assert by_serial["c0c"]["bundles"] == ["ledger", "payments"]
    assert by_serial["b0b"]["bundles"] == ["ledger", "payments", "search"]


def test_status_not_ready_exits_1_and_missing_domain_is_named() -> None:
    port = status_cluster()
    port.domains["prod"]["status"]["conditions"][0]["status"] = "False"
    context, _ = ctx(port)
    assert commands.ca_status(context, name="prod") == 1
    with pytest.raises(NotFoundError, match="TrustDomain nope not found"):
        commands.ca_status(context, name="nope")


def test_check_rotatable() -> None:
    view = ca_mod.domain_view(td_body([(ACTIVE, "Active")]))
    ca_mod.check_rotatable(view)
    external = ca_mod.domain_view(td_body([], ca={"external": {"bundle": "x"}}))
    with pytest.raises(UsageError, match="external anchors only"):
        ca_mod.check_rotatable(external)
    byo = ca_mod.domain_view(td_body([(ACTIVE, "Active")], ca={"secretRef": {"name": "c"}}))
    with pytest.raises(UsageError, match="bring-your-own CA"):
        ca_mod.check_rotatable(byo)
    pending = ca_mod.domain_view(td_body([]))
    with pytest.raises(UsageError, match="no Active authority"):
        ca_mod.check_rotatable(pending)


def test_rotation_request_id_is_fresh() -> None:
    first = ca_mod.rotation_request_id(NOW, None)
    assert first == f"rotate-{int(NOW.timestamp())}"
    assert ca_mod.rotation_request_id(NOW, first) != first


def test_rotation_progress() -> None:
    port = status_cluster()
    view = ca_mod.domain_view(port.domains["prod"])
    bundles = ca_mod.bundle_views(port.list_bundles(None), "prod.example.org")
    progress = ca_mod.rotation_progress(view, bundles, {ACTIVE.sha256, OLD.sha256})
    assert progress.new is not None and progress.new.serial == "c0c"
    assert progress.holding == ("ledger", "payments")
    assert progress.missing == ("search",)
    assert progress.expected == 4
    assert not progress.published and not progress.activated
    none_yet = ca_mod.rotation_progress(view, bundles, {a.sha256 for a in (ACTIVE, OLD, NEXT)})
    assert none_yet.new is None


def rotating_operator(steps: list[str]) -> Any:
    """A fake operator that, poll by poll: prepares NEXT, publishes it to the bundles one by
    one, then activates it."""
    state = {"poll": 0}

    def react(port: FakePort) -> None:
        body = port.domains["prod"]
        if "trustwarden.io/rotate" not in (body["metadata"].get("annotations") or {}):
            return
        state["poll"] += 1
        step = steps[min(state["poll"], len(steps)) - 1]
        if step == "prepare":
            body["status"]["authorities"] = td_body([(ACTIVE, "Active"), (NEXT, "Prepared")])[
                "status"
            ]["authorities"]
        elif step.startswith("publish:"):
            namespace = step.split(":", 1)[1]
            port.bundles[namespace] = bundle_body(namespace, [ACTIVE, NEXT])
        elif step == "activate":
            body["status"]["authorities"] = td_body([(ACTIVE, "Retired"), (NEXT, "Active")])[
                "status"
            ]["authorities"]

    return react


def rotate_cluster() -> FakePort:
    port = FakePort()
    port.domains["prod"] = td_body([(ACTIVE, "Active")], namespaces=2)
    port.bundles["payments"] = bundle_body("payments", [ACTIVE])
    port.bundles["ledger"] = bundle_body("ledger", [ACTIVE])
    return port


def test_rotate_reports_progress_until_active() -> None:
    port = rotate_cluster()
    # The first get is the initial read (no annotation yet, nothing happens).
    port.on_poll = rotating_operator(
        ["wait", "prepare", "publish:ledger", "wait", "publish:payments", "wait", "activate"]
    )
    context, out = ctx(port)
    assert commands.ca_rotate(context, name="prod", activate_after="30s", yes=True, force=True) == 0
    (patch,) = [p for _, _, p in port.patches]
    annotations = patch["metadata"]["annotations"]
    assert annotations["trustwarden.io/activate-after"] == "30s"
    assert annotations["trustwarden.io/rotate"].startswith("rotate-")
    text = out.getvalue()
    lines = [line.split("] ", 1)[-1] for line in text.splitlines() if line.startswith("[")]
    assert lines == [
        "prepared authority c0c (sha256 " + NEXT.sha256[:12] + ")",
        "new anchor in 0/2 bundles (waiting: ledger, payments); authority Prepared",
        "new anchor in 1/2 bundles (waiting: payments); authority Prepared",
        "new anchor in 2/2 bundles; authority Prepared",
        "new anchor in 2/2 bundles; authority Active",
        "authority c0c is Active; b0b Retired (kept in the bundles until its last certificate "
        "expires)",
    ]
    assert "Rotation of TrustDomain prod complete" in text


def test_rotate_refusals_and_timeouts() -> None:
    port = rotate_cluster()
    context, _ = ctx(port, answer=False)
    with pytest.raises(AbortedError):
        commands.ca_rotate(context, name="prod")
    assert port.patches == []
    with pytest.raises(UsageError, match="--activate-after"):
        commands.ca_rotate(context, name="prod", activate_after="soon", yes=True)
    context, out = ctx(port)
    assert commands.ca_rotate(context, name="prod", yes=True, wait=False) == 0
    assert "Not waiting" in out.getvalue()
    port = rotate_cluster()
    context, _ = ctx(port)
    with pytest.raises(DeadlineError, match="has not prepared a new authority"):
        commands.ca_rotate(context, name="prod", yes=True, timeout=timedelta(seconds=5))


def test_parse_duration_arg() -> None:
    assert commands.parse_duration_arg("90", "--timeout") == timedelta(seconds=90)
    assert commands.parse_duration_arg("1m30s", "--timeout") == timedelta(seconds=90)
    with pytest.raises(UsageError, match="--timeout"):
        commands.parse_duration_arg("7d", "--timeout")


def test_rotation_defaults_come_from_the_operator_status() -> None:
    body = td_body([(ACTIVE, "Active"), (NEXT, "Prepared")])
    body["status"]["rotation"] = {
        "propagationDelay": "10m",
        "defaultActivateAfter": "15m",
        "nextAuthority": "c0c",
        "activatesAt": "2026-01-01T00:15:00Z",
        "reason": "default: 15m after the request = max(3m, 1.5 x propagationDelay 10m)",
    }
    view = ca_mod.domain_view(body)
    assert view.propagation_delay == timedelta(minutes=10)
    default = ca_mod.choose_rotation(view, None)
    assert default.activate_after == timedelta(minutes=15) and default.risk is None
    assert default.annotation is None  # the operator derives it
    short = ca_mod.choose_rotation(view, timedelta(minutes=5))
    assert short.risk is not None and "shorter than the default 15m" in short.risk
    assert short.annotation == "5m"
    assert ca_mod.choose_rotation(view, timedelta(seconds=5), cross_sign=True).risk is None
    gone = ca_mod.choose_rotation(view, None, compromised=True)
    assert gone.activate_after == timedelta(0) and gone.warning is not None
    with pytest.raises(UsageError, match="drop --activate-after"):
        ca_mod.choose_rotation(view, timedelta(seconds=5), compromised=True)
    text = ca_mod.format_status(view, [], NOW)
    assert "next authority c0c activates at 2026-01-01T00:15:00Z: default: 15m" in text
    # An operator that reports nothing yet: the documented defaults.
    bare = ca_mod.domain_view(td_body([(ACTIVE, "Active")]))
    assert ca_mod.choose_rotation(bare, None).activate_after == timedelta(minutes=3)


def test_rotate_asks_before_a_short_activation() -> None:
    port = rotate_cluster()
    context, _ = ctx(port, answer=False)
    with pytest.raises(AbortedError):
        commands.ca_rotate(context, name="prod", activate_after="30s")
    assert port.patches == []
    assert "CERTIFICATE_VERIFY_FAILED" in context.err.getvalue()  # type: ignore[attr-defined]
