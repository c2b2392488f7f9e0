"""Fault scenarios 1-9 of issue 8. Each one disturbs the control plane or the operator while
it works, then asserts the shared invariant (invariants.py) and records how long convergence
took and what was lost (must be nothing; see docs/reliability.md) in results.json.

PYTEST_DONT_REWRITE: a failing assert must never print Secret data (private keys) into CI
logs, so asserts carry their own messages instead of pytest's introspection.
"""

from __future__ import annotations

import base64
import json
import os
import random
import statistics
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.bodies import trust_domain_body
from e2e.reliability.conftest import OPNS, OperatorSlot, make_namespace
from e2e.reliability.controlplane import ControlPlane
from e2e.reliability.harness import (
    Operator,
    PodFactory,
    Results,
    SecretRecorder,
    log_waits,
    run_paced,
)
from e2e.reliability.invariants import Invariants
from e2e.reliability.scenario import (
    APP,
    delete_served,
    issued_more_than_once,
    per_pod_identity,
    shared_identity,
    uninjected,
    wait_served,
)
from e2e.support import (
    GROUP,
    VERSION,
    Cluster,
    apply_body,
    bundle_data,
    condition,
    custom,
    get_td,
    get_wid,
    leaf_of,
    secret_data,
    serial_of,
    wait_condition,
    wait_for,
)

SCALE = float(os.environ.get("TW_RELIABILITY_SCALE", "1"))


def scaled(n: int, minimum: int = 1) -> int:
    return max(minimum, int(n * SCALE))


def burst(
    factory: PodFactory,
    invariants: Invariants,
    *,
    creates: int,
    deletes: int,
    duration: float,
    prefix: str,
    workers: int = 6,
) -> None:
    """`creates` pod creations and `deletes` deletions (of pods created earlier and served),
    spread evenly over `duration` seconds."""
    actions: list[object] = []
    every = max(1, creates // max(1, deletes))
    deleted = 0
    for i in range(creates):
        actions.append(lambda i=i: factory.create(f"{prefix}{i}", APP))
        # delete a pod created `lag` actions ago, so it has had time to be served
        lag = 10
        if i >= lag and i % every == 0 and deleted < deletes:
            target = f"{prefix}{i - lag}"
            actions.append(lambda t=target: delete_served(factory, invariants, t))
            deleted += 1
    run_paced(actions, duration=duration, workers=workers)  # type: ignore[arg-type]


def account_for_lost_revocations(
    invariants: Invariants, recorder: SecretRecorder, ops: list[Operator], what: str
) -> dict[str, int]:
    """After a SIGKILL fault: wait until the operator has revoked all it will, then count the
    serials of deleted pods that never reached the CRL, split by whether the pod was deleted
    while an operator process was alive. They are waived for the rest of the suite (so later
    scenarios are judged on their own) and reported; see docs/reliability.md."""
    missing = invariants.settle_revocations(timeout=180, what=what)
    owner_of: dict[int, str] = {}
    for uid, (_, _, at_delete) in invariants.deleted.items():
        for serial in [*at_delete, *recorder.serials_of(uid)]:
            owner_of[serial] = uid
    windows = [w for op in ops for w in op.reconciling()]
    counts = {"while_down_or_starting": 0, "just_before_sigkill": 0, "while_reconciling": 0}
    for serial in missing:
        at = invariants.deleted_at.get(owner_of.get(serial, ""))
        bucket = "while_down_or_starting"
        for begin, end in windows:
            if at is not None and begin <= at and (end is None or at < end):
                killed_soon = end is not None and end - at < 1.0
                bucket = "just_before_sigkill" if killed_soon else "while_reconciling"
        counts[bucket] += 1
        invariants.waived[serial] = what
    return {
        "lost_revocations": len(missing),
        **{f"lost_deleted_{k}": v for k, v in counts.items()},
    }


def assert_nothing_lost(lost: dict[str, int], deleted: int) -> None:
    """Every serial of every deleted pod reached the stored CRL, whatever the fault: the
    Secret's finalizer keeps it (and its serial) until the revocation is stored."""
    assert lost["lost_revocations"] == 0, (
        f"{lost['lost_revocations']} serial(s) of {deleted} deleted pods never reached the CRL: "
        f"{lost['lost_deleted_while_down_or_starting']} deleted while the operator was down or "
        f"starting, {lost['lost_deleted_just_before_sigkill']} less than 1 s before a SIGKILL, "
        f"{lost['lost_deleted_while_reconciling']} while it reconciled"
    )


def diagnose(
    name: str,
    plane: ControlPlane,
    invariants: Invariants,
    recorder: SecretRecorder,
    ops: list[Operator],
    serials: set[int],
    pods: dict[str, str],
) -> None:
    """Write what happened to some serials and pods (audit trail of their Secrets and pods,
    operator lives) to .state/diagnostics-<name>.json, for whoever looks into a finding."""
    owner_of: dict[int, str] = {}
    for uid, (_, _, at_delete) in invariants.deleted.items():
        for serial in [*at_delete, *recorder.serials_of(uid)]:
            owner_of[serial] = uid
    secret_names: dict[str, list[str]] = {}
    for serial in serials:
        uid = owner_of.get(serial, "")
        seen = recorder.serials_of(uid)
        secret_names[format(serial, "x")] = sorted({s.secret[1] for s in seen.values()})
    pod_secrets = {
        name: {format(k, "x"): v.secret[1] for k, v in recorder.serials_of(uid).items()}
        for name, uid in pods.items()
    }
    wanted = (
        {n for names in secret_names.values() for n in names}
        | set(pods)
        | {n for m in pod_secrets.values() for n in m.values()}
    )
    trail = [
        {
            "t": e.get("requestReceivedTimestamp"),
            "user": (e.get("user") or {}).get("username"),  # type: ignore[union-attr]
            "verb": e.get("verb"),
            "resource": (e.get("objectRef") or {}).get("resource"),  # type: ignore[union-attr]
            "name": (e.get("objectRef") or {}).get("name"),  # type: ignore[union-attr]
            "code": (e.get("responseStatus") or {}).get("code"),  # type: ignore[union-attr]
        }
        for e in plane.audit_events()
        if (e.get("objectRef") or {}).get("name") in wanted  # type: ignore[union-attr]
    ]
    lives = [
        [
            datetime.fromtimestamp(a, UTC).isoformat() if a else None,
            datetime.fromtimestamp(b, UTC).isoformat() if b else None,
        ]
        for op in ops
        for a, b in op.lives
    ]
    path = plane.directory.parent / f"diagnostics-{name}.json"
    path.write_text(
        json.dumps(
            {"serials": secret_names, "pods": pods, "trail": trail, "lives": lives}, indent=1
        )
    )


def converge(invariants: Invariants, what: str, timeout: float = 180) -> float:
    seconds, _report = invariants.converge(timeout=timeout, what=what)
    return round(seconds, 1)


# ----------------------------------------------------------------------------- 1. crash loop


def test_1_crash_loop(
    cluster: Cluster,
    control_plane: ControlPlane,
    slot: OperatorSlot,
    suite_domain: str,
    injected_ns: str,
    invariants: Invariants,
    recorder: SecretRecorder,
    results: Results,
) -> None:
    creates, deletes, duration = scaled(300, 30), scaled(100, 10), max(30.0, 120 * SCALE)
    op = slot.ensure()
    per_pod_identity(cluster, injected_ns, suite_domain)
    factory = PodFactory(cluster, injected_ns)
    stop = threading.Event()
    kills: list[str] = []
    startups: list[float] = []

    def killer() -> None:
        # SIGKILL every ~5 s of uptime at random points: one kill in four lands during start-up
        # (initial listing), the others 2-5 s into reconciliation (issuing, revoking, flushing).
        rng = random.Random(8)
        while not stop.is_set():
            born = time.monotonic()
            if len(kills) % 4 == 3:
                if stop.wait(rng.uniform(0.5, 2.0)):
                    return
                kills.append("start-up")
            else:
                while not stop.is_set() and "starting reconciliation" not in op.log(
                    current_run_only=True
                ):
                    if time.monotonic() - born > 90:
                        raise AssertionError("the operator did not come back within 90 s")
                    time.sleep(0.05)
                startups.append(time.monotonic() - born)
                if stop.wait(rng.uniform(2.0, 5.0)):
                    return
                kills.append("working")
            op.kill()
            op.start()

    thread = threading.Thread(target=killer, name="crash-loop", daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        burst(factory, invariants, creates=creates, deletes=deletes, duration=duration, prefix="c")
    finally:
        stop.set()
        thread.join(timeout=30)
    load_done = time.monotonic()
    op.start().wait_leading(timeout=90)
    lost = account_for_lost_revocations(invariants, recorder, [op], "crash loop")
    seconds = converge(invariants, "after the crash loop")
    twice = issued_more_than_once(recorder, factory.pods.values())
    if lost["lost_revocations"] or twice:
        diagnose(
            "crash-loop",
            control_plane,
            invariants,
            recorder,
            [op],
            {s for s, why in invariants.waived.items() if why == "crash loop"},
            {name: factory.pods[name].uid for name in twice},
        )
    results.scenario(
        "1-crash-loop",
        **lost,
        admitted_uninjected=len(uninjected(factory.pods.values())),
        pods_created=factory.stats.created,
        pods_deleted=factory.stats.deleted,
        sigkills=len(kills),
        sigkills_during_startup=kills.count("start-up"),
        startup_to_leading_s_median=round(statistics.median(startups), 1) if startups else None,
        startup_to_leading_s_max=round(max(startups), 1) if startups else None,
        load_seconds=round(load_done - started, 1),
        creates_rejected_while_down=factory.stats.rejected_by_webhook,
        converge_seconds_after_load=seconds,
        issued_twice=len(twice),
    )
    assert not twice, f"issued more than once: {dict(list(twice.items())[:5])}"
    assert len(kills) >= int(duration / 12)
    assert_nothing_lost(lost, factory.stats.deleted)


# ------------------------------------------------- 1b. the webhook while the operator starts


def test_1b_webhook_fails_closed_while_caches_load(
    cluster: Cluster,
    slot: OperatorSlot,
    suite_domain: str,
    injected_ns: str,
    invariants: Invariants,
    results: Results,
) -> None:
    """Between `trustwarden run` serving the webhook and its caches holding the namespaces and
    WorkloadIdentities, a pod must be rejected (failurePolicy Fail semantics), never admitted
    without its SVID: such a pod would never get an identity."""
    op = slot.ensure()
    per_pod_identity(cluster, injected_ns, suite_domain)
    factory = PodFactory(cluster, injected_ns)
    restarts = 3
    for round_ in range(restarts):
        op.kill()
        op.start()
        born = time.monotonic()
        index = 0
        # create pods back to back from process start until its caches are loaded (bounded)
        while "initial listing complete" not in op.log(current_run_only=True) and index < 80:
            assert time.monotonic() - born < 90, "the operator did not start within 90 s"
            factory.create(f"s{round_}-{index}", APP, deadline_s=60)
            index += 1
    op.wait_leading()
    bad = uninjected(factory.pods.values())
    results.scenario(
        "1b-webhook-during-startup",
        restarts=restarts,
        pods_created=factory.stats.created,
        creates_rejected_while_starting=factory.stats.rejected_by_webhook,
        admitted_uninjected=len(bad),
    )
    assert not bad, (
        f"{len(bad)} of {factory.stats.created} pods were admitted without their SVID while "
        f"the operator was starting, e.g. {bad[:5]}"
    )
    converge(invariants, "after the start-up burst")


# ------------------------------------------------------------- 2, 3. API server / etcd restart


def _restart_mid_burst(
    component: str,
    cluster: Cluster,
    control_plane: ControlPlane,
    slot: OperatorSlot,
    suite_domain: str,
    namespace: str,
    invariants: Invariants,
    recorder: SecretRecorder,
    results: Results,
) -> None:
    op = slot.ensure()
    per_pod_identity(cluster, namespace, suite_domain)
    issued_before = op.counter("trustwarden_certificates_issued_total")
    op.supervise()  # the operator exits if it loses its lease; a Deployment would restart it
    factory = PodFactory(cluster, namespace)
    creates, deletes = scaled(60, 20), scaled(20, 5)
    outage: dict[str, float] = {}

    def fault() -> None:
        # wait (bounded) until a third of the pods exist, then restart the component
        wait_for(
            lambda: factory.stats.created >= creates // 3, timeout=60, what="a third of the burst"
        )
        outage["seconds"] = control_plane.restart(component)

    thread = threading.Thread(target=fault, name=f"restart-{component}")
    thread.start()
    started = time.monotonic()
    try:
        burst(factory, invariants, creates=creates, deletes=deletes, duration=20, prefix="r")
    finally:
        thread.join(timeout=180)
    load_done = time.monotonic()
    lost = account_for_lost_revocations(invariants, recorder, [op], f"{component} restart")
    seconds = converge(invariants, f"after the {component} restart")
    op.unsupervise()
    twice = issued_more_than_once(recorder, factory.pods.values())
    restarted = op.supervised_restarts
    issued = (
        op.counter("trustwarden_certificates_issued_total") - issued_before
        if restarted == 0
        else None
    )
    results.scenario(
        f"{'2-apiserver' if component == 'kube-apiserver' else '3-etcd'}-restart",
        **lost,
        pods_created=factory.stats.created,
        pods_deleted=factory.stats.deleted,
        api_unavailable_seconds=round(outage.get("seconds", 0.0), 1),
        client_errors_retried=factory.stats.api_errors,
        load_seconds=round(load_done - started, 1),
        converge_seconds_after_load=seconds,
        operator_restarts=restarted,
        issued_metric=issued,
        issued_twice=len(twice),
    )
    assert "seconds" in outage, "the component was not restarted"
    assert not twice, f"issued more than once: {dict(list(twice.items())[:5])}"
    assert not uninjected(factory.pods.values())
    if issued is not None:
        assert issued == factory.stats.created, (issued, factory.stats.created)
    assert_nothing_lost(lost, factory.stats.deleted)


@pytest.mark.parametrize(
    "component", ["kube-apiserver", "etcd"], ids=["2-apiserver-restart", "3-etcd-restart"]
)
def test_2_3_control_plane_restart_mid_burst(
    component: str,
    cluster: Cluster,
    control_plane: ControlPlane,
    slot: OperatorSlot,
    suite_domain: str,
    injected_ns: str,
    invariants: Invariants,
    recorder: SecretRecorder,
    results: Results,
) -> None:
    _restart_mid_burst(
        component,
        cluster,
        control_plane,
        slot,
        suite_domain,
        injected_ns,
        invariants,
        recorder,
        results,
    )


# ----------------------------------------------------------------------------- 4. throttling

THROTTLE_FLAGS = (
    # The legacy max-in-flight filter answers 429 with Retry-After: 1 at once; API Priority and
    # Fairness would queue instead (and exempts nobody we could throttle less). system:masters
    # is exempt from both, which is why the operator runs as its own user.
    "--enable-priority-and-fairness=false",
    "--max-requests-inflight=1",
    "--max-mutating-requests-inflight=1",
)


def _apiserver_429s(cluster: Cluster) -> float:
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    total = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and 'code="429"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_4_throttling_429_retry_after(
    cluster: Cluster,
    control_plane: ControlPlane,
    slot: OperatorSlot,
    suite_domain: str,
    injected_ns: str,
    invariants: Invariants,
    recorder: SecretRecorder,
    results: Results,
) -> None:
    op = slot.ensure()
    per_pod_identity(cluster, injected_ns, suite_domain)
    op.supervise()
    original = control_plane.argv("kube-apiserver")
    try:
        control_plane.restart(
            "kube-apiserver",
            add=THROTTLE_FLAGS,
            drop_prefixes=("--max-requests-inflight", "--max-mutating-requests-inflight"),
        )
        # A restart of the operator under throttling: its initial listing is throttled too.
        op.stop()
        op.start().supervise()
        log_start = len(op.log())
        factory = PodFactory(cluster, injected_ns)
        started = time.monotonic()
        burst(
            factory,
            invariants,
            creates=scaled(60, 20),
            deletes=scaled(15, 5),
            duration=20,
            prefix="t",
        )
        load_done = time.monotonic()
        lost = account_for_lost_revocations(invariants, recorder, [op], "throttling")
        seconds = converge(invariants, "under throttling", timeout=240)
        waits = log_waits(op.log()[log_start:])
        rejected = _apiserver_429s(cluster)
    finally:
        op.unsupervise()
        # back to the original flags
        argv = control_plane.stop_component("kube-apiserver")
        del argv
        control_plane.start_component("kube-apiserver", original)
        control_plane.wait_ready()
    twice = issued_more_than_once(recorder, factory.pods.values())
    throttled = [w for status, w in waits if status == 429]
    results.scenario(
        "4-throttling",
        **lost,
        apiserver_flags=" ".join(THROTTLE_FLAGS),
        apiserver_429_total=int(rejected),
        operator_429_retries=len(throttled),
        min_wait_after_429_s=round(min(throttled), 2) if throttled else None,
        pods_created=factory.stats.created,
        pods_deleted=factory.stats.deleted,
        load_seconds=round(load_done - started, 1),
        converge_seconds_after_load=seconds,
        operator_restarts=op.supervised_restarts,
        issued_twice=len(twice),
    )
    assert rejected > 0, "the API server never answered 429: the scenario throttled nothing"
    assert throttled, "the operator never met a 429 (nothing to back off from)"
    # Retry-After: 1 is honoured (without it the first retry comes after 0.1-0.3 s).
    assert min(throttled) >= 1.0, throttled[:10]
    assert not twice
    slot.ensure()
    converge(invariants, "after throttling was lifted")
    assert_nothing_lost(lost, factory.stats.deleted)


# ----------------------------------------------------------------------------- 5. two replicas


def test_5_two_replicas_during_a_burst(
    cluster: Cluster,
    slot: OperatorSlot,
    suite_domain: str,
    injected_ns: str,
    invariants: Invariants,
    recorder: SecretRecorder,
    results: Results,
) -> None:
    """Two replicas (leader election on a Lease, 6 s): only the leader issues. Mid-burst the
    leader is SIGKILLed; the standby takes over; still nothing is issued twice."""
    slot.ensure()
    per_pod_identity(cluster, injected_ns, suite_domain)
    slot.replace(None)  # stop the main operator: two fresh replicas take its place
    first = slot.new("replica-a", lease_duration=6).start()
    first.wait_leading(timeout=90)
    second = slot.new("replica-b", lease_duration=6).start()  # registers the webhook URL last
    second.wait_serving(timeout=60)
    wait_for(
        lambda: "initial listing complete" in second.log(current_run_only=True),
        timeout=60,
        what="the standby's caches",
    )
    assert "starting reconciliation" not in second.log(current_run_only=True)
    factory = PodFactory(cluster, injected_ns)
    creates = scaled(80, 20)
    takeover: dict[str, float] = {}

    def fail_over() -> None:
        wait_for(
            lambda: factory.stats.created >= creates // 3, timeout=60, what="a third of the burst"
        )
        first.kill()
        killed = time.monotonic()
        second.wait_leading(timeout=60)
        takeover["seconds"] = time.monotonic() - killed

    thread = threading.Thread(target=fail_over, name="fail-over")
    thread.start()
    started = time.monotonic()
    try:
        burst(factory, invariants, creates=creates, deletes=scaled(20, 5), duration=25, prefix="h")
    finally:
        thread.join(timeout=120)
    load_done = time.monotonic()
    lost = account_for_lost_revocations(invariants, recorder, [first, second], "fail-over")
    seconds = converge(invariants, "after the leader fail-over")
    twice = issued_more_than_once(recorder, factory.pods.values())
    issued_by_standby = second.counter("trustwarden_certificates_issued_total")
    results.scenario(
        "5-two-replicas",
        **lost,
        pods_created=factory.stats.created,
        pods_deleted=factory.stats.deleted,
        leader_killed_after_pods=creates // 3,
        takeover_seconds=round(takeover.get("seconds", -1), 1),
        issued_by_new_leader=int(issued_by_standby),
        load_seconds=round(load_done - started, 1),
        converge_seconds_after_load=seconds,
        issued_twice=len(twice),
    )
    assert "seconds" in takeover
    assert not twice, f"issued more than once: {dict(list(twice.items())[:5])}"
    second.stop()
    slot.replace(None)
    slot.current = None
    slot.ensure()
    assert_nothing_lost(lost, factory.stats.deleted)


# ------------------------------------------------------------------- 6. webhook unavailable


def test_6_webhook_unavailable_fails_closed(
    cluster: Cluster,
    slot: OperatorSlot,
    suite_domain: str,
    injected_ns: str,
    invariants: Invariants,
    results: Results,
) -> None:
    op = slot.ensure()
    per_pod_identity(cluster, injected_ns, suite_domain)
    per_pod_identity(cluster, injected_ns, suite_domain, name="doomed", app="doomed")
    factory = PodFactory(cluster, injected_ns)
    served = [factory.create(f"w{i}", APP) for i in range(3)]
    doomed = [factory.create(f"d{i}", {"app": "doomed"}) for i in range(2)]
    wait_served(cluster, served + doomed)
    plain = make_namespace(cluster, "tw-rel-plain")  # not opted in
    wid_uid = get_wid(cluster, injected_ns, "doomed")["metadata"]["uid"]
    op.stop()
    stopped = time.monotonic()
    try:
        core = client.CoreV1Api(cluster.api)
        with pytest.raises(ApiException) as info:
            core.create_namespaced_pod(injected_ns, factory_body("while-down"))
        message = info.value.body or ""
        # Nothing already issued is lost while the operator is away: no trust gap.
        during, _ = invariants.converge(timeout=30, what="while the operator is down")
        # Namespaces that did not opt in never depend on trustwarden.
        core.create_namespaced_pod(plain, factory_body("plain"))
        # Offboarding while down: a pod and a whole WorkloadIdentity are deleted.
        invariants.before_delete(injected_ns, "pod w0", served[0].uid)
        factory.delete("w0")
        invariants.before_delete(injected_ns, "identity doomed", wid_uid, identity="doomed")
        custom(cluster).delete_namespaced_custom_object(
            GROUP, VERSION, injected_ns, "workloadidentities", "doomed"
        )
    finally:
        op.start().wait_leading(timeout=90)
    outage = time.monotonic() - stopped
    recovered = time.monotonic()
    ref = factory.create("after", APP, deadline_s=60)
    wait_served(cluster, [ref], timeout=60)
    first_served = time.monotonic() - recovered
    offboarded = converge(invariants, "after the pod and identity deleted while down")
    results.scenario(
        "6-webhook-unavailable",
        failure_policy="Fail",
        status=info.value.status,
        message=json.loads(message)["message"][:400],
        outage_seconds=round(outage, 1),
        invariant_held_while_down=True,
        first_pod_served_after_restart_s=round(first_served, 1),
        deleted_while_down_revoked_after_s=offboarded,
        lost=0,
    )
    assert info.value.status in (500, 503), info.value.status
    shown = json.loads(message)["message"]
    assert 'failed calling webhook "svid-injector.trustwarden.io"' in shown, shown
    converge(invariants, "after the webhook came back")
    del during


def factory_body(name: str) -> dict[str, object]:
    from e2e.reliability.harness import pod_body

    return pod_body(name, dict(APP))


# ----------------------------------------------------------------------------- 7. CA Secret


def _ca_secret(cluster: Cluster, td: str) -> client.V1Secret | None:
    try:
        return client.CoreV1Api(cluster.api).read_namespaced_secret(f"trustwarden-ca-{td}", OPNS)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _reasons(cluster: Cluster, namespace: str | None, name: str) -> list[str]:
    """Reasons of the Events about object `name` (namespace None: any namespace; Events
    about cluster-scoped TrustDomains live in `default`)."""
    api = client.EventsV1Api(cluster.api)
    events = (
        api.list_namespaced_event(namespace).items
        if namespace
        else api.list_event_for_all_namespaces().items
    )
    return [e.reason for e in events if e.regarding is not None and e.regarding.name == name]


def _domain(cluster: Cluster, name: str) -> None:
    apply_body(cluster, trust_domain_body(name, ca={"selfSigned": {"ttl": "2160h"}}))
    wait_condition(lambda: get_td(cluster, name), "Ready", "True", timeout=60)


def test_7a_ca_secret_deleted_or_corrupted_while_running(
    cluster: Cluster,
    slot: OperatorSlot,
    injected_ns: str,
    invariants: Invariants,
    results: Results,
) -> None:
    slot.ensure()
    name = "rel-ca-live"
    _domain(cluster, name)
    per_pod_identity(cluster, injected_ns, name)
    factory = PodFactory(cluster, injected_ns)
    wait_served(cluster, [factory.create(f"a{i}", APP) for i in range(3)])
    original = _ca_secret(cluster, name)
    assert original is not None
    authorities = get_td(cluster, name)["status"]["authorities"]
    core = client.CoreV1Api(cluster.api)
    timings = {}
    for how in ("deleted", "corrupted"):
        if how == "deleted":
            core.delete_namespaced_secret(f"trustwarden-ca-{name}", OPNS)
        else:
            core.patch_namespaced_secret(
                f"trustwarden-ca-{name}",
                OPNS,
                {"data": {"state.json": base64.b64encode(b"{not json").decode()}},
            )
        t0 = time.monotonic()
        wait_for(
            lambda: (s := _ca_secret(cluster, name)) is not None and s.data == original.data,
            timeout=60,
            what=f"the {how} CA Secret to be restored from memory",
        )
        timings[how] = round(time.monotonic() - t0, 1)
    wait_for(
        lambda: "CASecretRestored" in _reasons(cluster, None, name),
        timeout=30,
        what="Event CASecretRestored",
    )
    assert get_td(cluster, name)["status"]["authorities"] == authorities  # no new root
    seconds = converge(invariants, "after the CA Secret was restored")
    results.scenario(
        "7a-ca-secret-while-running",
        restored_after_delete_s=timings["deleted"],
        restored_after_corruption_s=timings["corrupted"],
        event="CASecretRestored",
        new_root_minted=False,
        converge_seconds=seconds,
        lost=0,
    )


GRACE = 20.0


def test_7b_ca_secret_lost_while_operator_down(
    cluster: Cluster,
    slot: OperatorSlot,
    injected_ns: str,
    invariants: Invariants,
    results: Results,
    tmp_path: Path,
) -> None:
    """The operator restarts and the CA Secret is gone (or unreadable): it mints a new
    authority in state Prepared, keeps the old anchors in the bundles (no trust gap) and
    activates the new one after ca_recovery_grace (20 s here, 2 min by default)."""
    slot.ensure()
    gone, broken = "rel-ca-gone", "rel-ca-bad"
    for name in (gone, broken):
        _domain(cluster, name)
    per_pod_identity(cluster, injected_ns, gone, name="gone", app="gone")
    per_pod_identity(cluster, injected_ns, broken, name="bad", app="bad")
    factory = PodFactory(cluster, injected_ns)
    refs = [factory.create(f"{app}{i}", {"app": app}) for app in ("gone", "bad") for i in range(3)]
    wait_served(cluster, refs)
    old_anchor = {
        name: get_td(cluster, name)["status"]["authorities"][0]["sha256"] for name in (gone, broken)
    }
    converge(invariants, "before the CA loss")
    # Replace the operator by one whose recovery grace is GRACE seconds.
    slot.replace(None)
    op = slot.new("ca-recovery", ca_recovery_grace=GRACE)
    core = client.CoreV1Api(cluster.api)
    core.delete_namespaced_secret(f"trustwarden-ca-{gone}", OPNS)
    core.patch_namespaced_secret(
        f"trustwarden-ca-{broken}",
        OPNS,
        {"data": {"state.json": base64.b64encode(b'[{"id": 1}]').decode()}},
    )
    op.start().wait_leading(timeout=90)
    slot.current = op
    started = time.monotonic()
    for name in (gone, broken):
        td = wait_condition(
            lambda n=name: get_td(cluster, n),
            "CAReady",
            "False",
            reason="CARecovering",
            timeout=60,
        )
        states = {a["sha256"]: a["state"] for a in td["status"]["authorities"]}
        assert list(states.values()) == ["Prepared"], states
        assert old_anchor[name] not in states
        # The old anchor stays in the bundle, next to the new one: live leaves keep verifying.
        bundle = bundle_data(cluster, injected_ns) or {}
        anchors = {
            _sha(c)
            for c in x509.load_pem_x509_certificates(bundle[f"{name}.example.org.pem"].encode())
        }
        assert old_anchor[name] in anchors
    wait_for(
        lambda: all("CASecretLost" in _reasons(cluster, None, n) for n in (gone, broken)),
        timeout=30,
        what="Event CASecretLost on both domains",
    )
    during, _ = invariants.converge(timeout=30, what="during the recovery grace period")
    # After the grace: the new authority is Active and every leaf moves to it.
    for name in (gone, broken):
        wait_condition(lambda n=name: get_td(cluster, n), "Ready", "True", timeout=GRACE + 60)
    activated = time.monotonic() - started

    def all_on_new_authority() -> bool:
        for ref in refs:
            data = secret_data(cluster, ref.namespace, ref.secret_name)
            td = gone if ref.name.startswith("gone") else broken
            active = [
                a["sha256"]
                for a in get_td(cluster, td)["status"]["authorities"]
                if a["state"] == "Active"
            ]
            if data is None or not active:
                return False
            bundle = bundle_data(cluster, ref.namespace) or {}
            issuer = [
                c
                for c in x509.load_pem_x509_certificates(bundle[f"{td}.example.org.pem"].encode())
                if _sha(c) == active[0]
            ]
            try:
                leaf_of(data["tls.crt"]).verify_directly_issued_by(issuer[0])
            except Exception:
                return False
        return True

    wait_for(all_on_new_authority, timeout=60, what="every leaf to be re-issued by the new CA")
    moved = time.monotonic() - started
    seconds = converge(invariants, "after the recovered CA became active")
    results.scenario(
        "7b-ca-secret-lost-while-down",
        grace_seconds=GRACE,
        state_after_restart="Prepared (CAReady=False CARecovering), old anchor kept in bundles",
        events="CASecretLost",
        invariant_held_during_grace=True,
        active_after_s=round(activated, 1),
        all_leaves_reissued_after_s=round(moved, 1),
        converge_seconds=seconds,
        lost=0,
    )
    del during
    slot.replace(None)
    slot.current = None
    slot.ensure()


def _sha(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import hashes

    return cert.fingerprint(hashes.SHA256()).hex()


# --------------------------------------------------------------- 8. Secrets edited or deleted


def _serial_annotation(cluster: Cluster, namespace: str, name: str) -> str | None:
    try:
        secret = client.CoreV1Api(cluster.api).read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    data = secret.data or {}
    try:
        leaf = x509.load_pem_x509_certificates(base64.b64decode(data.get("tls.crt", "")))[0]
    except ValueError:
        return None
    return format(leaf.serial_number, "x")


class Fighter:
    """Another controller that keeps undoing the operator's work on one Secret: whenever it
    holds a certificate it did not see before, it garbles it (or deletes the Secret)."""

    def __init__(self, cluster: Cluster, namespace: str, name: str, mode: str) -> None:
        self.cluster, self.namespace, self.name, self.mode = cluster, namespace, name, mode
        self.core = client.CoreV1Api(cluster.api)
        self.repairs: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name=f"fight-{name}", daemon=True)

    def run(self) -> None:
        seen: set[str] = set()
        while not self.stop.is_set():
            serial = _serial_annotation(self.cluster, self.namespace, self.name)
            if serial is not None and serial not in seen:
                seen.add(serial)
                self.repairs.append((time.monotonic(), serial))
                try:
                    if self.mode == "delete":
                        self.core.delete_namespaced_secret(self.name, self.namespace)
                    else:
                        self.core.patch_namespaced_secret(
                            self.name,
                            self.namespace,
                            {"data": {"tls.crt": base64.b64encode(b"fight").decode()}},
                        )
                except ApiException:
                    pass
            self.stop.wait(0.1)


FIGHT_SECONDS = 45.0


def test_8_secret_edited_deleted_and_fought_over(
    cluster: Cluster,
    slot: OperatorSlot,
    suite_domain: str,
    injected_ns: str,
    invariants: Invariants,
    results: Results,
) -> None:
    op = slot.ensure()
    per_pod_identity(cluster, injected_ns, suite_domain)
    shared_identity(cluster, injected_ns, suite_domain, "fought")
    factory = PodFactory(cluster, injected_ns)
    pods = [factory.create(f"e{i}", APP) for i in range(5)]
    wait_served(cluster, pods)
    wait_for(
        lambda: secret_data(cluster, injected_ns, "fought-svid"), timeout=60, what="Shared Secret"
    )
    core = client.CoreV1Api(cluster.api)
    figures: dict[str, object] = {}
    # One-off hand edits and a deletion are repaired at once.
    for how, target in (("edited", pods[0]), ("deleted", pods[1]), ("key swapped", pods[2])):
        before = serial_of(secret_data(cluster, injected_ns, target.secret_name)["tls.crt"])  # type: ignore[index]
        if how == "edited":
            core.patch_namespaced_secret(
                target.secret_name,
                injected_ns,
                {"data": {"tls.crt": base64.b64encode(b"hand edit").decode()}},
            )
        elif how == "deleted":
            core.delete_namespaced_secret(target.secret_name, injected_ns)
        else:  # someone puts another workload's key in place
            other = secret_data(cluster, injected_ns, pods[3].secret_name)
            assert other is not None
            core.patch_namespaced_secret(
                target.secret_name,
                injected_ns,
                {"data": {"tls.key": base64.b64encode(other["tls.key"]).decode()}},
            )
        t0 = time.monotonic()
        wait_for(
            lambda t=target, b=before: (
                (d := secret_data(cluster, injected_ns, t.secret_name)) is not None
                and d["tls.crt"].startswith(b"-----BEGIN CERTIFICATE-----")
                and serial_of(d["tls.crt"]) != b
            ),
            timeout=60,
            what=f"the {how} Secret to be repaired",
        )
        figures[f"repaired_after_{how.replace(' ', '_')}_s"] = round(time.monotonic() - t0, 1)
    converge(invariants, "after the one-off edits")
    # Something keeps fighting: a garbling controller on a per-pod Secret and the Shared one,
    # a deleting one on another per-pod Secret. Re-issues must back off, and be reported.
    fighters = [
        Fighter(cluster, injected_ns, pods[3].secret_name, "edit"),
        Fighter(cluster, injected_ns, "fought-svid", "edit"),
        Fighter(cluster, injected_ns, pods[4].secret_name, "delete"),
    ]
    errors_before = op.counter("trustwarden_errors_total")
    for fighter in fighters:
        fighter.thread.start()
    reported: set[str] = set()
    deadline = time.monotonic() + FIGHT_SECONDS
    while time.monotonic() < deadline:
        wid = get_wid(cluster, injected_ns, "burst")
        shared = get_wid(cluster, injected_ns, "fought")
        for obj in (wid, shared):
            cond = condition(obj, "Degraded")
            if cond and cond["reason"] == "SecretFight":
                reported.add(f"status:{obj['metadata']['name']}")
        if "SecretFight" in _reasons(cluster, injected_ns, "fought"):
            reported.add("event:fought")
        time.sleep(1.0)
    for fighter in fighters:
        fighter.stop.set()
        fighter.thread.join(timeout=10)
    counts = {f"{f.mode}:{f.name}": len(f.repairs) for f in fighters}
    errors = op.counter("trustwarden_errors_total") - errors_before
    figures.update(
        fight_seconds=FIGHT_SECONDS,
        reissues_during_fight=counts,
        fight_reported_as=sorted(reported),
        errors_metric_delta=errors,
    )
    results.scenario("8-secret-edits-and-fights", **figures)
    # 3 immediate repairs, then 10 s, 20 s, 40 s... backoff: at most ~6 in 45 s. A tight loop
    # would repair hundreds of times.
    for what, count in counts.items():
        assert count <= 8, f"{what}: {count} re-issues in {FIGHT_SECONDS:.0f}s: no backoff"
    assert "event:fought" in reported or "status:fought" in reported
    assert "status:burst" in reported, "per-pod SecretFight is not reported on the identity"
    # Once the fight stops, every Secret is repaired (within the backoff, at most 5 minutes).
    t0 = time.monotonic()
    converge(invariants, "after the fight stopped", timeout=330)
    results.scenario(
        "8-secret-edits-and-fights", repaired_after_fight_s=round(time.monotonic() - t0, 1)
    )


# ----------------------------------------------------------------------------- 9. clock


def test_9_backdating_and_renewal_after_downtime(
    cluster: Cluster,
    slot: OperatorSlot,
    suite_domain: str,
    injected_ns: str,
    invariants: Invariants,
    results: Results,
    tmp_path: Path,
) -> None:
    """TTL 10m, renewAt 10% (renew ~60 s after issuance, jittered earlier). The operator is
    down from right after issuance until every renew point has passed (~70 s): on return it
    renews at once, before anything expires. Leaves are back-dated (notBefore = issuance - 5m)
    so a verifier whose clock is behind still accepts them."""
    op = slot.ensure()
    per_pod_identity(
        cluster, injected_ns, suite_domain, name="clock", app="clock", ttl="10m", renew_at="10%"
    )
    factory = PodFactory(cluster, injected_ns)
    refs = [factory.create(f"k{i}", {"app": "clock"}) for i in range(5)]
    first = wait_served(cluster, refs)
    issued_at = datetime.now(UTC)
    core = client.CoreV1Api(cluster.api)
    renew_points = []
    for ref in refs:
        secret = core.read_namespaced_secret(ref.secret_name, injected_ns)
        annotations = secret.metadata.annotations or {}
        renew_points.append(
            datetime.fromisoformat(annotations["trustwarden.io/renew-at"].replace("Z", "+00:00"))
        )
        leaf = x509.load_pem_x509_certificates(base64.b64decode(secret.data["tls.crt"]))[0]
        skew = issued_at - leaf.not_valid_before_utc
        assert timedelta(minutes=4, seconds=50) <= skew <= timedelta(minutes=6), skew
    # Back-dating works for a verifier whose clock is 4 minutes behind.
    data = secret_data(cluster, injected_ns, refs[0].secret_name)
    assert data is not None, "the pod's Secret is gone"
    # The bundle ConfigMap is published by the flush loop, so it may trail the first Secrets
    # of a new namespace by a flush or two: wait for it, but not forever.
    bundle = wait_for(
        lambda: bundle_data(cluster, injected_ns), timeout=30, what="the namespace bundle"
    )
    behind = int((datetime.now(UTC) - timedelta(minutes=4)).timestamp())
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-attime",
            str(behind),
            "-CAfile",
            _write(tmp_path / "a.pem", bundle["ca.crt"]),
            _write(tmp_path / "leaf.pem", data["tls.crt"].decode()),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    op.stop()
    down_at = time.monotonic()
    latest = max(renew_points)
    wait_for(
        lambda: (
            datetime.now(UTC) > latest + timedelta(seconds=5) and time.monotonic() - down_at >= 60
        ),
        timeout=120,
        interval=1.0,
        what="every renew point to pass while the operator is down",
    )
    for ref in refs:  # still valid: the renew point is early, expiry far
        leaf = leaf_of(secret_data(cluster, injected_ns, ref.secret_name)["tls.crt"])  # type: ignore[index]
        assert leaf.not_valid_after_utc > datetime.now(UTC) + timedelta(minutes=5)
    downtime = time.monotonic() - down_at
    op.start().wait_leading(timeout=90)
    back = time.monotonic()
    wait_for(
        lambda: all(
            (d := secret_data(cluster, injected_ns, ref.secret_name)) is not None
            and serial_of(d["tls.crt"]) != first[ref.name]
            for ref in refs
        ),
        timeout=60,
        what="every overdue certificate to be renewed",
    )
    renewed_after = time.monotonic() - back
    seconds = converge(invariants, "after the overdue renewals")
    results.scenario(
        "9-clock",
        ttl="10m",
        renew_at="10%",
        backdate="5m (notBefore = issuance - 5m; verified with openssl -attime now-4m)",
        operator_down_s=round(downtime, 1),
        renewed_after_restart_s=round(renewed_after, 1),
        converge_seconds=seconds,
        lost=0,
    )
    assert renewed_after < 30, renewed_after


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)
