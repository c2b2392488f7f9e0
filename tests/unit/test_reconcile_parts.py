"""Pure parts of the reconcile layer: scheduler, selectors, models, injection, ledger."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonpatch
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.fakes import ADMISSION_KEY, FakeClock, workload_identity
from trustwarden.pki.ca import create_self_signed_ca
from trustwarden.pki.rotation import AuthorityRecord, AuthoritySet, AuthorityState
from trustwarden.reconcile.domains import DomainRuntime
from trustwarden.reconcile.injection import (
    MOUNT_PATH,
    InjectionRejected,
    json_patch,
    plan_injection,
)
from trustwarden.reconcile.ledger import Ledger, LedgerEntry
from trustwarden.reconcile.model import SpecError, TrustDomainSpec, WorkloadIdentitySpec
from trustwarden.reconcile.scheduler import DeadlineScheduler
from trustwarden.reconcile.selectors import LabelSelector, SelectorError

# --------------------------------------------------------------------------- scheduler


def test_scheduler_keeps_the_earliest_deadline_and_pops_in_order() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        seen: list[object] = []

        async def handler(key: object) -> None:
            seen.append(key)

        scheduler = DeadlineScheduler(handler, clock=clock)
        scheduler.schedule("b", clock() + timedelta(seconds=20))
        scheduler.schedule("a", clock() + timedelta(seconds=10))
        scheduler.schedule("b", clock() + timedelta(seconds=5))  # earlier wins
        scheduler.schedule("a", clock() + timedelta(seconds=30))  # later is ignored
        assert len(scheduler) == 2
        assert scheduler.pop_due(clock()) == []
        clock.advance(timedelta(seconds=10))
        assert scheduler.pop_due(clock()) == ["b", "a"]
        scheduler.schedule("c", clock())
        scheduler.cancel("c")
        assert scheduler.pop_due(clock() + timedelta(days=1)) == []

    asyncio.run(scenario())


def test_scheduler_runs_each_key_once_at_a_time_and_again_if_rescheduled() -> None:
    async def scenario() -> None:
        running: set[str] = set()
        runs: list[str] = []
        peak = 0
        release = asyncio.Event()

        async def handler(key: object) -> None:
            nonlocal peak
            assert key not in running, "a key ran twice at once"
            running.add(str(key))
            peak = max(peak, len(running))
            runs.append(str(key))
            await release.wait()
            running.discard(str(key))

        scheduler = DeadlineScheduler(handler, concurrency=2)
        task = asyncio.create_task(scheduler.run())
        for key in ("a", "b", "c"):
            scheduler.schedule(key)
        while len(runs) < 2:
            await asyncio.sleep(0)
        scheduler.schedule("a")  # while running: queued for after
        release.set()
        while len(runs) < 4:
            await asyncio.sleep(0.001)
        task.cancel()
        assert peak == 2
        assert runs.count("a") == 2 and runs[:2] == ["a", "b"]

    asyncio.run(scenario())


# --------------------------------------------------------------------------- selectors


def test_selector_semantics() -> None:
    selector = LabelSelector.parse(
        {
            "matchLabels": {"app": "pay"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web", "api"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        },
        "spec.podSelector",
    )
    assert selector.matches({"app": "pay", "tier": "api"})
    assert not selector.matches({"app": "pay", "tier": "db"})
    assert not selector.matches({"app": "pay", "tier": "api", "canary": "1"})
    assert LabelSelector.parse(None, "x").matches({})
    with pytest.raises(
        SelectorError, match=r"spec.podSelector.matchExpressions\[0\].values must not be empty"
    ):
        LabelSelector.parse(
            {"matchExpressions": [{"key": "a", "operator": "In"}]}, "spec.podSelector"
        )


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=5))
def test_empty_selector_selects_everything(labels: dict[str, str]) -> None:
    assert LabelSelector.parse({}, "x").matches(labels)


# --------------------------------------------------------------------------- models


def test_workload_identity_defaults() -> None:
    spec = WorkloadIdentitySpec.from_body(
        workload_identity(
            "ns", "w", spec={"trustDomain": "prod", "podSelector": {"matchLabels": {"a": "b"}}}
        )
    )
    assert spec.spiffe_template == "/ns/{namespace}/sa/{serviceAccount}"
    assert spec.ttl == timedelta(hours=1) and spec.renew_at == 0.5
    assert spec.mode.value == "PerPod" and {u.value for u in spec.usages} == {"server", "client"}


@pytest.mark.parametrize(
    ("spec", "reason", "message"),
    [
        (
            {"trustDomain": "prod"},
            "InvalidSpec",
            "spec.podSelector is required when mode is PerPod",
        ),
        (
            {"trustDomain": "prod", "delivery": {"mode": "Shared"}},
            "InvalidSpec",
            "spec.delivery.secretName must name the Secret",
        ),
        (
            {"trustDomain": "prod", "podSelector": {}, "spiffeID": "/ns/other/sa/x"},
            "InvalidTemplate",
            "spec.spiffeID",
        ),
        (
            {"trustDomain": "prod", "podSelector": {}, "ttl": "5m"},
            "InvalidDuration",
            "below the minimum of 10m",
        ),
        (
            {"trustDomain": "prod", "podSelector": {}, "renewAt": "95%"},
            "InvalidSpec",
            "between 10% and 90%",
        ),
        (
            {"trustDomain": "prod", "podSelector": {}, "keyAlgorithm": "DSA"},
            "InvalidSpec",
            "is not one of",
        ),
        (
            {"trustDomain": "prod", "podSelector": {}, "dnsNames": ["a", "a"]},
            "InvalidSpec",
            "duplicate",
        ),
    ],
)
def test_workload_identity_errors_name_the_field(
    spec: dict[str, Any], reason: str, message: str
) -> None:
    with pytest.raises(SpecError) as info:
        WorkloadIdentitySpec.from_body(workload_identity("ns", "w", spec=spec))
    assert info.value.reason == reason
    assert "WorkloadIdentity ns/w" in info.value.message and message in info.value.message


def test_trust_domain_needs_exactly_one_ca() -> None:
    body = {
        "metadata": {"name": "td"},
        "spec": {"trustDomain": "a.org", "ca": {"selfSigned": {}, "external": {"bundle": "x"}}},
    }
    with pytest.raises(SpecError, match="exactly one of selfSigned, secretRef or external"):
        TrustDomainSpec.from_body(body)


# --------------------------------------------------------------------------- injection


def _pod(labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "generateName": "web-",
            "labels": labels,
            "annotations": annotations or {},
        },
        "spec": {
            "initContainers": [{"name": "init"}],
            "containers": [
                {"name": "app", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
            ],
            "volumes": [{"name": "trustwarden-svid", "secret": {"secretName": "victim"}}],
        },
    }


def _identity(name: str, labels: dict[str, str]) -> WorkloadIdentitySpec:
    return WorkloadIdentitySpec.from_body(
        workload_identity(
            "ns", name, spec={"trustDomain": "prod", "podSelector": {"matchLabels": labels}}
        )
    )


def test_injection_for_one_identity() -> None:
    pod = _pod({"app": "web"})
    plan = plan_injection(
        pod,
        [_identity("web", {"app": "web"})],
        key=ADMISSION_KEY,
        name_factory=lambda w: f"{w}-svid-x",
    )
    assert plan.labels == {"trustwarden.io/identity": "web"}
    assert plan.annotations == {
        "trustwarden.io/secret": "web-svid-x",
        # binds namespace, identity and Secret name under the operator's key
        "trustwarden.io/admission": ADMISSION_KEY.tag("ns", "web", "web-svid-x"),
    }
    injected = jsonpatch.apply_patch(pod, json_patch(pod, plan))
    # A hand-written volume of the same name is replaced: the user never picks the Secret.
    assert injected["spec"]["volumes"] == [
        {"name": "trustwarden-svid", "secret": {"secretName": "web-svid-x", "defaultMode": 0o440}}
    ]
    for field in ("initContainers", "containers"):
        for container in injected["spec"][field]:
            assert {
                "name": "trustwarden-svid",
                "mountPath": MOUNT_PATH,
                "readOnly": True,
            } in container["volumeMounts"]
    assert {"name": "data", "mountPath": "/data"} in injected["spec"]["containers"][0][
        "volumeMounts"
    ]


def test_injection_rejects_two_identities_naming_both() -> None:
    with pytest.raises(InjectionRejected, match=r"\(a, b\).*podSelector disjoint"):
        plan_injection(
            _pod({"app": "web"}),
            [_identity("b", {"app": "web"}), _identity("a", {})],
            key=ADMISSION_KEY,
        )


def test_unselected_pod_loses_hand_set_label_annotations_and_volume() -> None:
    pod = _pod(
        {"app": "x", "trustwarden.io/identity": "web"},
        {"trustwarden.io/secret": "victim", "trustwarden.io/admission": "v1.forged"},
    )
    pod["spec"]["containers"][0]["volumeMounts"].append(
        {"name": "trustwarden-svid", "mountPath": "/var/run/secrets/trustwarden.io/"}
    )
    plan = plan_injection(pod, [_identity("web", {"app": "web"})], key=ADMISSION_KEY)
    assert plan.labels == {"trustwarden.io/identity": None}
    assert plan.annotations == {
        "trustwarden.io/secret": None,
        "trustwarden.io/admission": None,
    }
    assert plan.identity is None and plan.secret_name is None
    unselected = jsonpatch.apply_patch(pod, json_patch(pod, plan))
    assert unselected["metadata"]["labels"] == {"app": "x"}
    assert unselected["metadata"]["annotations"] == {}
    # The hand-made volume (and its mount) is gone: if the pod is labelled later, it can never
    # choose the Secret trustwarden writes.
    assert unselected["spec"]["volumes"] == []
    assert unselected["spec"]["containers"][0]["volumeMounts"] == [
        {"name": "data", "mountPath": "/data"}
    ]
    assert unselected["spec"]["initContainers"] == pod["spec"]["initContainers"]


# --------------------------------------------------------------------------- ledger


def test_ledger_round_trip_owner_lookup_and_prune() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ledger = Ledger()
    ledger.record("ns", LedgerEntry(0xABC, "pod-1", now + timedelta(hours=1), "prod", "f" * 64))
    ledger.record("ns", LedgerEntry(0xDEF, "pod-1", now + timedelta(minutes=1), "prod", "f" * 64))
    ledger.record("ns", LedgerEntry(0x123, "pod-2", now + timedelta(hours=1), "prod", "e" * 64))
    restored = Ledger()
    shard = ledger.name_for("ns")
    restored.load(shard, ledger.encode(shard))
    assert {e.serial for e in restored.owned_by("ns", "pod-1")} == {0xABC, 0xDEF}
    restored.prune(now + timedelta(minutes=2))
    assert {e.serial for e in restored.owned_by("ns", "pod-1")} == {0xABC}
    assert restored.name_for("ns") in restored.dirty


# --------------------------------------------------------------------------- domain anchors


def test_domain_anchors_follow_replacements_and_expiry_despite_the_memo() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    short = create_self_signed_ca("a.org", ttl=timedelta(hours=1), now=now).anchor
    long = create_self_signed_ca("a.org", ttl=timedelta(hours=3), now=now).anchor
    spec = TrustDomainSpec.from_body(
        {"metadata": {"name": "td"}, "spec": {"trustDomain": "a.org", "ca": {"selfSigned": {}}}}
    )
    runtime = DomainRuntime(spec, orphan_anchors=(short, long))
    assert runtime.anchors(now) == [short, long]
    assert runtime.anchors(now + timedelta(minutes=30)) == [short, long]
    # The short-lived anchor drops out once it expires, even though nothing was replaced.
    later = now + timedelta(hours=2)
    assert runtime.anchors(later) == [long]
    # A clock that steps back recomputes instead of reusing a later answer.
    assert runtime.anchors(now) == [short, long]
    # Replacing a source is seen at once.
    runtime.orphan_anchors = (long,)
    assert runtime.anchors(now) == [long]
    fresh = create_self_signed_ca("a.org", now=now)
    runtime.authorities = AuthoritySet(
        (AuthorityRecord(fresh, AuthorityState.Active, prepared_at=now, activated_at=now),)
    )
    assert fresh.anchor in runtime.anchors(now)
    # Callers get their own list: changing it does not change the domain's anchors.
    runtime.anchors(now).clear()
    assert fresh.anchor in runtime.anchors(now)
