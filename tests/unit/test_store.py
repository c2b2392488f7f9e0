"""The ClusterStore: observing returns the work it implies and never schedules; the typed
work keys; the readiness chain."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.unit.fakes import START, namespace, trust_domain, workload_identity
from trustwarden.reconcile.domains import DomainRuntime
from trustwarden.reconcile.model import TrustDomainSpec
from trustwarden.reconcile.readiness import IdentityFacts, identity_readiness
from trustwarden.reconcile.store import ClusterStore
from trustwarden.reconcile.work import (
    CATCH_UP,
    Changes,
    DomainKey,
    DomainStatusKey,
    GoneKey,
    IdentityKey,
    PodKey,
    RefuseKey,
    ReleaseKey,
)

OPNS = "trustwarden-system"


def _pod(name: str, uid: str, *, identity: str = "web", secret: str | None = None) -> Any:
    annotations = {"trustwarden.io/secret": secret} if secret else {}
    return {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": uid,
            "labels": {"app": "web", "trustwarden.io/identity": identity},
            "annotations": annotations,
        },
        "spec": {"serviceAccountName": "default"},
    }


def _secret(name: str, *, revoke: str | None = None, finalizers: list[str] | None = None) -> Any:
    annotations = {"trustwarden.io/revoke": revoke} if revoke else {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": f"uid-{name}",
            "resourceVersion": "1",
            "labels": {"app.kubernetes.io/managed-by": "trustwarden"},
            "annotations": annotations,
            "finalizers": finalizers or [],
        },
        "data": {},
    }


def _keys(changes: Changes) -> list[object]:
    return [key for key, _ in changes.schedule]


def test_work_keys_are_the_tuples_they_replace() -> None:
    assert DomainKey("prod") == ("td", "prod")
    assert DomainStatusKey("prod") == ("td", "", "prod")
    assert IdentityKey("shop", "web") == ("wid", "shop", "web")
    assert PodKey("shop", "w0") == ("pod", "shop", "w0")
    assert GoneKey("shop", "s", "u") == ("gone", "shop", "s", "u")
    assert ReleaseKey("shop", "s") == ("release", "shop", "s")
    assert RefuseKey("shop", "s") == ("refuse", "shop", "s")
    assert CATCH_UP == ("catchup",)
    # A status key and a work key of the same domain never collide in one map.
    assert len({DomainKey("prod"), DomainStatusKey("prod")}) == 2
    assert hash(IdentityKey("shop", "web")) == hash(("wid", "shop", "web"))


def test_observing_returns_work_and_schedules_nothing() -> None:
    store = ClusterStore(OPNS, None)
    changes = store.observe_namespace(namespace("shop"))
    assert changes.bundles == {"shop"} and not changes.schedule
    changes = store.observe_trust_domain(trust_domain())
    assert _keys(changes) == [DomainKey("prod"), DomainKey("prod")]  # itself, and its claims
    changes = store.observe_workload_identity(workload_identity("shop", "api"))
    assert _keys(changes) == [IdentityKey("shop", "api")] and changes.bundles == {"shop"}
    assert [s.name for s in store.identities_in("shop")] == ["api"]
    assert store.owner_key("uid-wid-api") == IdentityKey("shop", "api")
    # A relabelled namespace: its identities run again, and every domain's status counts.
    store.domains["prod"] = DomainRuntime(spec=TrustDomainSpec.from_body(trust_domain()))
    changes = store.observe_namespace(namespace("shop", {"team": "a"}))
    assert _keys(changes) == [IdentityKey("shop", "api")]
    assert changes.statuses == {DomainStatusKey("prod")}


def test_a_bad_edit_keeps_the_last_valid_identity_spec() -> None:
    store = ClusterStore(OPNS, None)
    store.observe_workload_identity(workload_identity("shop", "api"))
    broken = workload_identity("shop", "api", spec={"trustDomain": "prod", "delivery": {}})
    store.observe_workload_identity(broken)
    assert ("shop", "api") in store.wid_errors
    assert store.wids[("shop", "api")].secret_name == "api-svid"


def test_forgetting_a_pod_cancels_its_work_and_schedules_its_revocation() -> None:
    store = ClusterStore(OPNS, None)
    assert _keys(store.observe_pod(_pod("w0", "u0", secret="web-svid-w0"))) == [
        PodKey("shop", "w0")
    ]
    store.admitted_secret["u0"] = "web-svid-w0"  # as the leaves controller records it
    assert not store.observe_pod(_pod("w0", "u0", secret="web-svid-w0"))  # nothing changed
    assert store.owner_key("u0") == PodKey("shop", "w0")
    changes = store.forget_pod_named("shop", "w0")
    assert changes.cancel == [PodKey("shop", "w0")]
    assert changes.forgotten == [PodKey("shop", "w0")]
    assert _keys(changes) == [GoneKey("shop", "web-svid-w0", "u0")]
    assert changes.statuses == {IdentityKey("shop", "web")}
    assert ("shop", "w0") not in store.pods and store.owner_key("u0") is None
    assert not store.pods_by_wid[("shop", "web")]


def test_a_secret_asking_for_revocation_is_answered_and_a_held_one_released() -> None:
    store = ClusterStore(OPNS, None)
    changes = store.observe_secret(_secret("loose", revoke="compromised"))
    assert RefuseKey("shop", "loose") in _keys(changes)
    assert not store.is_target_secret("shop", "loose", None)
    held = _secret("gone", finalizers=["trustwarden.io/revoke"])
    held["metadata"]["deletionTimestamp"] = "2026-11-23T12:00:00Z"
    assert ReleaseKey("shop", "gone") in _keys(store.observe_secret(held))
    # Its echo changes nothing: no second release, no owner poked.
    assert not store.observe_secret(held)


def test_prune_forgets_only_what_was_not_seen_since_the_listing_began() -> None:
    store = ClusterStore(OPNS, None)
    store.observe_pod(_pod("w0", "u0"))
    mark = store.begin_listing()
    store.observe_pod(_pod("w1", "u1"))  # seen after the listing began
    store.observe_pod(_pod("w2", "u2"), listed=True)  # the listing's own: in its live set
    assert set(store.seen) == {("pod", "shop", "w1")}
    changes = store.prune("Pod", None, {("shop", "w2")}, mark)
    assert ("shop", "w0") not in store.pods and ("shop", "w1") in store.pods
    assert changes.cancel == [PodKey("shop", "w0")]
    store.end_listing()
    assert store.seen == {}  # no listing open: nothing is recorded per object
    store.observe_pod(_pod("w3", "u3"))
    assert store.seen == {}


def _facts(**overrides: Any) -> IdentityFacts:
    base: dict[str, Any] = {
        "namespace": "shop",
        "name": "web",
        "problem": None,
        "selected": 2,
        "issued": 2,
        "failed": 0,
        "first_failure": None,
        "soonest": START + timedelta(hours=1),
    }
    return IdentityFacts(**{**base, **overrides})


@pytest.mark.parametrize(
    ("overrides", "ready", "degraded", "reason", "says"),
    [
        ({}, True, False, "Ready", "2 certificate(s) valid"),
        ({"selected": 0, "issued": 0, "soonest": None}, True, False, "Ready", "no pod"),
        ({"issued": 1}, False, False, "Issuing", "1 of 2 selected"),
        (
            {"failed": 1, "first_failure": ("SecretConflict", "taken")},
            False,
            True,
            "SecretConflict",
            "1 of 2 certificate(s) failing; first: taken",
        ),
        (  # an identity-wide failure before any pod is selected: no "1 of 0" count
            {
                "selected": 0,
                "issued": 0,
                "soonest": None,
                "failed": 1,
                "first_failure": ("SignerUnavailable", "the pod-certificate signer stopped"),
            },
            False,
            True,
            "SignerUnavailable",
            "the pod-certificate signer stopped",
        ),
        (
            {"problem": ("NamespaceNotAllowed", "left"), "first_failure": ("X", "y")},
            False,
            True,
            "NamespaceNotAllowed",
            "stay valid until they expire",
        ),
    ],
)
def test_readiness_chain_first_answer_wins(
    overrides: dict[str, Any], ready: bool, degraded: bool, reason: str, says: str
) -> None:
    answer = identity_readiness(_facts(**overrides))
    assert (answer.ready, answer.degraded, answer.reason) == (ready, degraded, reason)
    assert says in answer.message
    assert " of 0 " not in answer.message


def test_a_problem_without_valid_certificates_says_nothing_of_them() -> None:
    answer = identity_readiness(_facts(problem=("TrustDomainNotFound", "no such"), issued=0))
    assert answer.message == "no such"


def test_a_changed_pod_secret_runs_its_pod_found_by_owner_or_by_name() -> None:
    store = ClusterStore(OPNS, None)
    for i in range(3):
        pod = _pod(f"w{i}", f"u{i}", secret=f"web-svid-w{i}")
        pod["spec"]["volumes"] = [
            {"name": "trustwarden-svid", "secret": {"secretName": f"web-svid-w{i}"}}
        ]
        store.observe_pod(pod)

    def secret(name: str, owner: str | None) -> Any:
        body = _secret(name)
        body["metadata"]["labels"]["trustwarden.io/identity"] = "web"
        if owner:
            body["metadata"]["ownerReferences"] = [{"kind": "Pod", "name": "x", "uid": owner}]
        return body

    assert _keys(store.observe_secret(secret("web-svid-w1", "u1"))) == [PodKey("shop", "w1")]
    # No owner (or one that is not the pod mounting it): the identity's pods are looked at.
    assert _keys(store.observe_secret(secret("web-svid-w2", None))) == [PodKey("shop", "w2")]
    assert _keys(store.observe_secret(secret("web-svid-w0", "u1"))) == [PodKey("shop", "w0")]
    assert _keys(store.observe_secret(secret("stray", "u1"))) == []
