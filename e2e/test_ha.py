"""High availability on the real control plane: two operator processes share one operator
namespace and its leader Lease; the leader is SIGKILLed in the middle of a burst of Shared
identities. The standby must take over within 30 s, issue everything that was missing, and
issue nothing twice: every Secret is written with exactly one serial, ever.

A watch on the Secrets records every write, so "nothing issued twice" is checked against what
the API server saw, not against what either process says about itself. The counters agree:
what the dead leader issued (the Secrets that existed when it died) plus what the new leader's
trustwarden_certificates_issued_total says is exactly one per identity.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from prometheus_client.parser import text_string_to_metric_families

from e2e.bodies import shared_identity_body, trust_domain_body
from e2e.conftest import OperatorSlot
from e2e.operator import OperatorProcess
from e2e.support import (
    GROUP,
    VERSION,
    Cluster,
    apply_body,
    apply_yaml,
    custom,
    get_wid,
    kubectl_path,
    unique,
    wait_for,
)
from e2e.test_helm import require_sole_operator, warn_if_not_alone

LEASE_SECONDS = 6  # OperatorProcess passes --lease-duration 6
TAKEOVER_BUDGET = 30.0
BEFORE = 30  # identities issued by the first leader before it dies
DURING = 60  # identities created while it dies


def sample_sum(metrics_text: str | None, name: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(metrics_text or ""):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


@dataclass
class SecretWrites:
    """Every serial the API server stored in each managed Secret of a namespace."""

    cluster: Cluster
    namespace: str
    serials: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _watch: watch.Watch = field(default_factory=watch.Watch)
    _thread: threading.Thread | None = None
    _stopping: bool = False
    error: BaseException | None = None

    def start(self) -> SecretWrites:
        self._thread = threading.Thread(target=self._run, daemon=True, name="secret-writes")
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for event in self._watch.stream(
                self.cluster.core.list_namespaced_secret,
                self.namespace,
                label_selector="app.kubernetes.io/managed-by=trustwarden",
                timeout_seconds=600,
            ):
                secret = event["object"]
                serial = (secret.metadata.annotations or {}).get("trustwarden.io/serial")
                if event["type"] in ("ADDED", "MODIFIED") and serial:
                    with self.lock:
                        seen = self.serials.setdefault(secret.metadata.name, [])
                        if not seen or seen[-1] != serial:
                            seen.append(serial)
        except BaseException as exc:  # surfaced by the test, unless we closed the stream
            if not self._stopping:
                self.error = exc
        else:
            if not self._stopping:
                self.error = AssertionError("the Secret watch ended early")

    def count(self) -> int:
        with self.lock:
            return len(self.serials)

    def stop(self) -> dict[str, list[str]]:
        self._stopping = True
        self._watch.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self.lock:
            return {k: list(v) for k, v in self.serials.items()}


def identities_yaml(namespace: str, domain: str, names: list[str]) -> str:
    return "\n---\n".join(
        json.dumps(shared_identity_body(namespace, name, domain, ttl="1h")) for name in names
    )


@dataclass
class Pair:
    operator_ns: str
    workload_ns: str
    domain: str
    first: OperatorProcess
    second: OperatorProcess


@pytest.fixture
def pair(
    cluster: Cluster, crds: None, operator_slot: OperatorSlot, tmp_path: Path
) -> Iterator[Pair]:
    require_sole_operator(cluster, operator_slot)
    domain = unique("ha")
    webhook_configuration = f"{domain}-webhook"
    with (
        cluster.namespace(prefix="tw-ha-op") as operator_ns,
        cluster.namespace(prefix="tw-ha") as workload_ns,
    ):
        apply_body(cluster, trust_domain_body(domain))
        # Served only for this namespace; two issuers at a time make the burst last long
        # enough to kill the leader in its middle.
        args = (
            "--watch-namespace",
            workload_ns,
            "--webhook-configuration",
            webhook_configuration,
            "--concurrency",
            "2",
        )
        first = OperatorProcess(
            cluster.kubeconfig,
            namespace=operator_ns,
            extra_args=args,
            name="ha-a",
            log_dir=tmp_path,
        )
        second = OperatorProcess(
            cluster.kubeconfig,
            namespace=operator_ns,
            extra_args=args,
            name="ha-b",
            log_dir=tmp_path,
        )
        try:
            first.start().wait_leading()
            second.start().wait_serving()
            # Shared identities need no webhook. Each --local process registered one by URL at
            # start-up (the second last): once the second has, drop it, so that it never
            # answers for other tests' pods.
            wait_for(
                lambda: f":{second.webhook_port}/" in _webhook_url(cluster, webhook_configuration),
                timeout=30,
                what="the standby to register its webhook",
            )
            _delete_webhook(cluster, webhook_configuration)
            yield Pair(operator_ns, workload_ns, domain, first, second)
        finally:
            warn_if_not_alone(cluster, own=(operator_ns,))
            first.stop()
            second.stop()
            _delete_webhook(cluster, webhook_configuration)
            custom(cluster).delete_cluster_custom_object(GROUP, VERSION, "trustdomains", domain)


def _webhook_url(cluster: Cluster, name: str) -> str:
    admission = client.AdmissionregistrationV1Api(cluster.api)
    try:
        config = admission.read_mutating_webhook_configuration(name)
    except ApiException as exc:
        if exc.status == 404:
            return ""
        raise
    return str(config.webhooks[0].client_config.url or "")


def _delete_webhook(cluster: Cluster, name: str) -> None:
    try:
        client.AdmissionregistrationV1Api(cluster.api).delete_mutating_webhook_configuration(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _all_secrets(cluster: Cluster, namespace: str) -> dict[str, str]:
    return {
        s.metadata.name: (s.metadata.annotations or {}).get("trustwarden.io/serial", "")
        for s in cluster.core.list_namespaced_secret(
            namespace, label_selector="app.kubernetes.io/managed-by=trustwarden"
        ).items
    }


def _holder(cluster: Cluster, namespace: str) -> str | None:
    lease = client.CoordinationV1Api(cluster.api).read_namespaced_lease(
        "trustwarden-leader", namespace
    )
    return lease.spec.holder_identity  # type: ignore[no-any-return]


def test_standby_takes_over_after_sigkill_without_double_issuance(
    cluster: Cluster, pair: Pair
) -> None:
    first, second, ns = pair.first, pair.second, pair.workload_ns
    assert _holder(cluster, pair.operator_ns) == first.identity
    writes = SecretWrites(cluster, ns).start()

    # Phase 1: the first leader issues a burst; the standby issues nothing.
    before = [f"before-{i:03d}" for i in range(BEFORE)]
    apply_yaml(cluster, identities_yaml(ns, pair.domain, before))
    wait_for(lambda: len(_all_secrets(cluster, ns)) == BEFORE, timeout=90, what=f"{BEFORE} Secrets")
    # The counter moves once the create's answer is back, just after the Secret is visible.
    wait_for(
        lambda: sample_sum(first.metrics(), "trustwarden_certificates_issued_total") >= BEFORE,
        timeout=30,
        what=f"the leader to count {BEFORE} issued certificates",
    )
    first_metrics = first.metrics()
    assert sample_sum(first_metrics, "trustwarden_certificates_issued_total") == BEFORE
    assert sample_sum(second.metrics(), "trustwarden_certificates_issued_total") == 0
    assert sample_sum(second.metrics(), "trustwarden_leader") == 0
    serials_before = _all_secrets(cluster, ns)

    # Phase 2: another burst; SIGKILL the leader once it has issued part of it.
    during = [f"during-{i:03d}" for i in range(DURING)]
    applying = subprocess.Popen(
        [kubectl_path(), "--kubeconfig", str(cluster.kubeconfig), "apply", "-f", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert applying.stdin is not None
    applying.stdin.write(identities_yaml(ns, pair.domain, during))
    applying.stdin.close()
    wait_for(
        lambda: writes.count() >= BEFORE + 5, timeout=60, interval=0.02, what="the second burst"
    )
    last_scrape = first.metrics()
    first.kill()
    killed_at = time.monotonic()
    assert applying.wait(timeout=120) == 0, applying.stderr.read() if applying.stderr else ""
    # What the dead leader issued: whatever landed before it died. The standby cannot lead
    # before the Lease expires (LEASE_SECONDS after the last renewal), so this is exact.
    time.sleep(2)
    assert sample_sum(second.metrics(), "trustwarden_leader") == 0, "took over too early"
    issued_by_first = set(_all_secrets(cluster, ns))
    issued_by_first_during = len(issued_by_first) - BEFORE
    assert 0 < issued_by_first_during < DURING, (
        f"the leader died with {issued_by_first_during}/{DURING} issued: not mid-burst"
    )

    # Takeover.
    wait_for(
        lambda: sample_sum(second.metrics(), "trustwarden_leader") == 1,
        timeout=TAKEOVER_BUDGET + 10,
        interval=0.1,
        what="the standby to lead",
    )
    takeover = time.monotonic() - killed_at
    print(
        f"\nHA: leader SIGKILLed with {issued_by_first_during}/{DURING} of the burst issued; "
        f"standby {second.identity} leads after {takeover:.1f}s (lease {LEASE_SECONDS}s)"
    )
    assert takeover < TAKEOVER_BUDGET
    assert _holder(cluster, pair.operator_ns) == second.identity

    # Nothing lost: every identity gets its Secret and is Ready.
    wait_for(
        lambda: len(_all_secrets(cluster, ns)) == BEFORE + DURING,
        timeout=90,
        what=f"all {BEFORE + DURING} Secrets",
    )
    for name in before + during:
        wait_for(
            lambda n=name: _ready(get_wid(cluster, ns, n)),
            timeout=60,
            what=f"WorkloadIdentity {name} Ready",
        )
    time.sleep(3)  # room for any (wrong) re-issue to show up in the watch
    history = writes.stop()
    assert writes.error is None, writes.error

    # Nothing issued twice: every Secret was only ever written with one serial.
    assert len(history) == BEFORE + DURING
    reissued = {name: serials for name, serials in history.items() if len(serials) != 1}
    assert not reissued, f"Secrets written with more than one serial: {reissued}"
    after = _all_secrets(cluster, ns)
    assert {k: after[k] for k in serials_before} == serials_before
    # And the counters agree: the new leader issued exactly what was missing, renewed nothing.
    second_metrics = second.metrics()
    issued_by_second = sample_sum(second_metrics, "trustwarden_certificates_issued_total")
    assert issued_by_second == DURING - issued_by_first_during
    assert sample_sum(second_metrics, "trustwarden_certificates_renewed_total") == 0
    last_count = sample_sum(last_scrape, "trustwarden_certificates_issued_total")
    assert BEFORE <= last_count <= len(issued_by_first)
    assert len(issued_by_first) + issued_by_second == BEFORE + DURING
    print(
        f"HA: issued {len(issued_by_first)} by {first.identity} (last scrape "
        f"{last_count:.0f}) + "
        f"{issued_by_second:.0f} by {second.identity} = {BEFORE + DURING} identities, "
        f"each Secret written once"
    )
    assert first_metrics is not None


def _ready(obj: dict[str, object]) -> bool:
    status = obj.get("status") or {}
    assert isinstance(status, dict)
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
