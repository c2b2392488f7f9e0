"""The benchmark scenarios. Each runs against a fresh operator process (or cert-manager) and
returns one result dict; see docs/performance.md for the method."""

from __future__ import annotations

import base64
import datetime as dt
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from kubernetes import client

from bench.harness import kube, rollover
from bench.harness.audit import AuditLog
from bench.harness.cluster import AUDITED_USERS, REPO, BenchCluster
from bench.harness.events import Events, Watcher
from bench.harness.processes import CertManager, Operator, Profiler
from bench.harness.procmon import (
    CpuWindow,
    Monitor,
    cpu_per_item,
    cpu_seconds,
    hwm_mib,
    rss_mib,
)
from bench.harness.profile import analyse
from trustwarden.reconcile.settings import EngineConfig

# After the last issuance the operator still writes what it batches: statuses, bundles and
# the issuance ledger (the slowest, every ledger_interval). Count requests until those have
# landed, or writes the scenario caused would fall outside its window.
_DEFAULTS = EngineConfig()
SETTLE_S = (
    max(_DEFAULTS.ledger_interval.total_seconds(), _DEFAULTS.status_interval)
    + _DEFAULTS.flush_interval
    + 1.0
)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return round(ordered[rank], 3)


def blank(n: int, namespaces: int) -> dict[str, Any]:
    return {
        "n": n,
        "namespaces": namespaces,
        "p50_s": None,
        "p95_s": None,
        "p99_s": None,
        "certs_per_s": None,
        "api_writes_per_cert": None,
        "api_reads_per_cert": None,
        "peak_rss_mib": None,
        "cpu_s": None,
        "errors": 0,
    }


@dataclass
class Bench:
    cluster: BenchCluster
    operator_kubeconfig: Path
    cert_manager_kubeconfig: Path
    state: Path
    log: Callable[[str], None]
    cert_manager_binary: Path | None = None
    cert_manager_error: str | None = None
    cert_manager_version: str | None = None
    monitor: Monitor = field(default_factory=Monitor)
    samples: dict[str, Any] = field(default_factory=dict)
    index: int = 0
    live: list[Any] = field(default_factory=list)
    audit: AuditLog = field(init=False)

    def __post_init__(self) -> None:
        self.audit = AuditLog(self.cluster.audit_log)
        self.monitor.start()

    # ---------------------------------------------------------------- plumbing

    def prefix(self) -> str:
        self.index += 1
        return f"b{self.index}"

    def watcher(self, tag: str, kinds: list[str]) -> tuple[Watcher, Events]:
        tag = tag.replace("/", "-")
        watcher = Watcher(self.cluster.admin_kubeconfig, self.state / f"events-{tag}.jsonl", kinds)
        self.live.append(watcher)
        return watcher, watcher.wait_ready()

    def operator(self, opns: str, tag: str) -> Operator:
        tag = tag.replace("/", "-")
        op = Operator(self.operator_kubeconfig, opns, self.state / "logs" / f"operator-{tag}.log")
        self.live.append(op)
        op.start()
        self.monitor.watch("trustwarden", op.pid)
        op.wait_leading()
        return op

    def pids(self, *extra: tuple[str, int]) -> dict[str, int]:
        import os

        pids = {**self.cluster.pids(), "harness": os.getpid()}
        pids.update(dict(extra))
        return pids

    def domain(self, name: str, td: str) -> None:
        custom = client.CustomObjectsApi(self.cluster.api)
        custom.create_cluster_custom_object(
            kube.GROUP, kube.VERSION, "trustdomains", kube.trust_domain(name, td)
        )
        self.wait(
            lambda: _ready_condition(
                custom.get_cluster_custom_object(kube.GROUP, kube.VERSION, "trustdomains", name)
            ),
            60,
            f"TrustDomain {name} Ready",
        )

    def rotate(self, td: str, activate_after: str) -> None:
        """A forced rotation of TrustDomain `td`, as `trustwarden ca rotate` requests it."""
        client.CustomObjectsApi(self.cluster.api).patch_cluster_custom_object(
            kube.GROUP,
            kube.VERSION,
            "trustdomains",
            td,
            {
                "metadata": {
                    "annotations": {
                        "trustwarden.io/rotate": f"bench-{time.time_ns()}",
                        "trustwarden.io/activate-after": activate_after,
                    }
                }
            },
        )

    def wait(
        self, probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.2
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)

    def identities(self, events: Events, items: list[tuple[str, str, dict[str, Any]]]) -> None:
        created = kube.create_many(self.cluster.api, items, threads=8)
        if created.errors:
            raise RuntimeError(f"creating WorkloadIdentities failed: {created.errors[:3]}")
        keys = {(ns, body["metadata"]["name"]) for _, ns, body in items}

        def all_ready() -> bool:
            events.poll()
            return all(("wids", *k) in events.cr_ready for k in keys)

        self.wait(all_ready, 120 + len(items) / 10, "WorkloadIdentities Ready")

    def waiting_identities(self, items: list[tuple[str, str, dict[str, Any]]], reason: str) -> None:
        """Create WorkloadIdentities that cannot be Ready yet, and wait until the operator has
        said why (`reason` on the Ready condition): it has them in its cache, so its webhook
        injects the pods that follow."""
        created = kube.create_many(self.cluster.api, items, threads=8)
        if created.errors:
            raise RuntimeError(f"creating WorkloadIdentities failed: {created.errors[:3]}")
        custom = client.CustomObjectsApi(self.cluster.api)
        pending = {(ns, body["metadata"]["name"]) for _, ns, body in items}

        def all_waiting() -> bool:
            for ns, name in list(pending):
                body = custom.get_namespaced_custom_object(
                    kube.GROUP, kube.VERSION, ns, "workloadidentities", name
                )
                conditions = (body.get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Ready" and c.get("reason") == reason for c in conditions):
                    pending.discard((ns, name))
            return not pending

        self.wait(all_waiting, 120 + len(items) / 10, f"WorkloadIdentities to report {reason}", 1)

    def requests(self, who: str, start: float, end: float) -> dict[str, Any]:
        counts = self.audit.count(AUDITED_USERS[who], start, end)
        return counts.as_dict()

    def cleanup(
        self, namespaces: list[str], *, domain: str | None = None, opns: str | None = None
    ) -> None:
        started = time.monotonic()
        if domain:
            custom = client.CustomObjectsApi(self.cluster.api)
            try:
                custom.delete_cluster_custom_object(
                    kube.GROUP, kube.VERSION, "trustdomains", domain
                )
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
        kube.drop_secret_finalizers(self.cluster.api, [*namespaces, *([opns] if opns else [])])
        kube.delete_namespaces(self.cluster.api, [*namespaces, *([opns] if opns else [])])
        self.log(
            f"  cleaned up {len(namespaces)} namespace(s) in {time.monotonic() - started:.0f}s"
        )

    def wait_quiet(self, seconds: float) -> None:
        time.sleep(seconds)

    def reap(self) -> None:
        """Stop every process a scenario left running (after a failure)."""
        for item in reversed(self.live):
            try:
                item.stop()
            except Exception as exc:
                self.log(f"  could not stop {item}: {exc}")
        self.live.clear()

    # ---------------------------------------------------------------- per-pod (burst, steady)

    def per_pod(
        self,
        name: str,
        n: int,
        namespaces: int,
        *,
        rate: float | None = None,
        threads: int = 16,
        profile: bool = False,
        keep: bool = False,
        ttl: str = "1h",
        renew_at: str = "50%",
        nodes: int = 0,
        watch: tuple[str, ...] = (),
        before_domain: Callable[[str, str, str], None] | None = None,
        backlog: bool = False,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Create `n` selected pods across `namespaces` namespaces (burst: as fast as possible
        from a pool of creator threads; steady: at `rate` per second) and time each pod's
        Secret. With `nodes`, the pods are spread over that many kwok Nodes. `watch` adds
        watched kinds; `before_domain(opns, td, trust_domain)` runs once the operator is up
        and before the TrustDomain is created. With `backlog`, every pod exists before the
        TrustDomain its identities name: the operator then issues against a queue of `n`,
        bound by itself and the API server rather than by the pod creator, and latencies and
        certs/s count from the TrustDomain's creation. Returns (result, state for follow-up
        scenarios)."""
        prefix = self.prefix()
        opns, td = f"{prefix}-tw", f"{prefix}-td"
        trust_domain = f"{prefix}.bench.example.org"
        nss = [f"{prefix}-ns{i}" for i in range(namespaces)]
        self.log(
            f"[{name}] {n} pods in {namespaces} namespace(s)"
            + (f" at {rate}/s" if rate else " (burst)")
        )
        watcher, events = self.watcher(name, ["pods", "secrets", "wids", *watch])
        op = self.operator(opns, name)
        if before_domain is not None:
            before_domain(opns, td, trust_domain)
        if not backlog:
            self.domain(td, trust_domain)
        kube.create_namespaces(self.cluster.api, nss, kube.INJECT)
        identity_items = [
            ("WorkloadIdentity", ns, kube.per_pod_identity(ns, td, ttl=ttl, renew_at=renew_at))
            for ns in nss
        ]
        if backlog:
            self.waiting_identities(identity_items, "TrustDomainNotFound")
        else:
            self.identities(events, identity_items)
        node_names = [f"{prefix}-node{i}" for i in range(nodes)]
        if node_names:
            kube.create_nodes(self.cluster.api, node_names)
            self.log(f"  {nodes} kwok Node(s) Ready")
        self.wait_quiet(3)
        items = [
            (
                "Pod",
                nss[i % namespaces],
                kube.pod(f"p{i}", name, node_names[i % nodes] if nodes else None),
            )
            for i in range(n)
        ]
        baseline_rss = rss_mib(op.pid)
        profiler = (
            Profiler(op.pid, self.state / f"profile-{name.replace('/', '-')}.txt")
            if profile
            else None
        )
        if profiler is not None:
            self.live.append(profiler)
        window = CpuWindow(self.pids(("trustwarden", op.pid), ("watcher", watcher.pid))).start()
        self.monitor.reset_peak("trustwarden")
        t_start = time.time()
        created = kube.create_many(
            self.cluster.api,
            items,
            threads=threads,
            rate=rate,
            progress=lambda k: self.log(f"  created {k}/{n} pods"),
        )
        t_created = time.time()
        t_domain: float | None = None
        issue_window: CpuWindow | None = None
        if backlog:
            pod_keys = list(created.times)

            def all_pods_seen() -> bool:
                events.poll()
                return all(k in events.pods for k in pod_keys)

            self.wait(all_pods_seen, 120 + n / 50, f"the watcher to see {n} pods")
            self.wait_quiet(3)  # the operator's pod watch is no further behind than ours
            self.log(f"  {n} pods wait for TrustDomain {td}: creating it")
            issue_window = CpuWindow(
                self.pids(("trustwarden", op.pid), ("watcher", watcher.pid))
            ).start()
            t_domain = time.time()
            self.domain(td, trust_domain)
        secret_of = {
            key: (meta.get("annotations") or {}).get("trustwarden.io/secret")
            for key, meta in created.bodies.items()
        }
        expected = {key: s for key, s in secret_of.items() if s}
        not_injected = [key for key, s in secret_of.items() if not s]
        timeout = 120 + n / 20
        last_report = [time.monotonic()]

        def all_issued() -> bool:
            events.poll()
            have = sum(1 for (ns, _), s in expected.items() if (ns, s) in events.secrets)
            if time.monotonic() - last_report[0] > 5:
                last_report[0] = time.monotonic()
                self.log(f"  {have}/{len(expected)} Secrets")
            return have == len(expected)

        try:
            self.wait(all_issued, timeout, f"{len(expected)} Secrets")
        except TimeoutError as exc:
            self.log(f"  {exc}")
        # while a backlog is issued, what each certificate costs each process (the write
        # ceiling reports the same per create): which process the box runs out of CPU for
        issue_cpu = (
            cpu_per_item(issue_window.stop(), len(expected)) if issue_window is not None else None
        )
        secret_times = {
            key: events.secrets[(key[0], s)].first
            for key, s in expected.items()
            if (key[0], s) in events.secrets
        }
        t_done = max(secret_times.values(), default=time.time())
        time.sleep(max(0.0, t_done + SETTLE_S - time.time()))
        usage = window.stop()
        profile_result = None
        if profiler is not None:
            path = profiler.stop()
            profile_result = analyse(path) if path else {"error": profiler.error}
        latencies = []
        for key, t_secret in secret_times.items():
            t_create = min(created.times[key], events.pods.get(key, created.times[key]))
            latencies.append(t_secret - (t_domain if t_domain is not None else t_create))
        first = t_domain if t_domain is not None else min(created.times.values(), default=t_start)
        requests = self.requests("trustwarden", t_start - 0.5, t_done + SETTLE_S)
        issued = len(secret_times)
        result = blank(n, namespaces)
        result.update(
            {
                "p50_s": percentile(latencies, 50),
                "p95_s": percentile(latencies, 95),
                "p99_s": percentile(latencies, 99),
                "max_s": percentile(latencies, 100),
                "certs_per_s": round(issued / max(t_done - first, 1e-3), 1) if issued else 0,
                "create_rate_per_s": round(len(created.times) / max(t_created - t_start, 1e-3), 1),
                "issued": issued,
                "errors": len(created.errors) + len(not_injected) + (len(expected) - issued),
                "error_samples": (created.errors + [f"not injected: {k}" for k in not_injected])[
                    :5
                ],
                "api_writes_per_cert": round(requests["writes"] / max(issued, 1), 3),
                "api_reads_per_cert": round(requests["reads"] / max(issued, 1), 3),
                "api_requests": requests,
                "peak_rss_mib": _round(self.monitor.peak("trustwarden")),
                "baseline_rss_mib": _round(baseline_rss),
                "bytes_per_pod": _bytes_per_pod(
                    self.monitor.peak("trustwarden"), baseline_rss, issued
                ),
                "kwok_nodes": nodes,
                "cpu_s": usage["cpu_s"].get("trustwarden"),
                "cpu_ms_per_cert": round(
                    1000 * usage["cpu_s"].get("trustwarden", 0) / max(issued, 1), 2
                ),
                "load": usage,
                "duration_s": round(t_done - first, 2),
            }
        )
        if profile_result is not None:
            result["profile"] = profile_result
            result["crypto_cpu_share"] = profile_result.get("crypto_share")
        if issue_cpu is not None:
            result["issue_cpu"] = issue_cpu
        self.samples[name] = {"latencies": sorted(round(x, 4) for x in latencies)}
        self.log(
            f"  {issued}/{n} issued, p50 {result['p50_s']}s p99 {result['p99_s']}s, "
            f"{result['certs_per_s']} certs/s, {result['api_writes_per_cert']} writes/cert, "
            f"peak RSS {result['peak_rss_mib']} MiB, CPU {result['cpu_s']}s"
        )
        state = {
            "op": op,
            "opns": opns,
            "td": td,
            "namespaces": nss,
            "watcher": watcher,
            "events": events,
            "secrets": {(k[0], s) for k, s in expected.items()},
            "nodes": node_names,
        }
        if not keep:
            self.finish(state)
        return result, state

    def finish(self, state: dict[str, Any]) -> None:
        state["op"].stop()
        self.monitor.unwatch("trustwarden")
        state["watcher"].stop()
        kube.delete_nodes(self.cluster.api, state.get("nodes") or ())
        self.cleanup(state["namespaces"], domain=state["td"], opns=state["opns"])

    # ---------------------------------------------------------------- node loss

    def node_loss(self, name: str, n: int, namespaces: int = 10) -> dict[str, Any]:
        """`n` pods on one kwok Node; the Node is deleted and the pod garbage collector removes
        its pods. Measures how long until every serial is in its namespace's CRL after the last
        pod is gone, and how many CRL/bundle writes that took (one per bundle per flush is the
        goal, not one per pod)."""
        result, state = self.per_pod(name, n, namespaces, nodes=1, keep=True)
        events: Events = state["events"]
        try:
            events.poll()
            serials = {
                key: events.secrets[key].serial for key in state["secrets"] if key in events.secrets
            }
            domain_name = f"{state['opns'].removesuffix('-tw')}.bench.example.org"
            self.log(f"[{name}] deleting kwok Node {state['nodes'][0]} with {len(serials)} pods")
            t_delete = time.time()
            kube.delete_nodes(self.cluster.api, state["nodes"][:1])
            pod_keys = [k for k in events.pods if k[0] in state["namespaces"]]

            def all_gone() -> bool:
                events.poll()
                return all(k in events.pods_gone for k in pod_keys)

            self.wait(all_gone, 300 + n / 20, "the pod garbage collector to remove the pods", 1)
            t_last_gone = max(events.pods_gone[k] for k in pod_keys)
            t_first_gone = min(events.pods_gone[k] for k in pod_keys)
            core = self.cluster.core
            want: dict[str, set[int]] = {}
            for (ns, _), serial in serials.items():
                if serial:
                    want.setdefault(ns, set()).add(int(serial, 16))
            t_listed: dict[str, float] = {}

            def all_listed() -> bool:
                for ns, wanted in want.items():
                    if ns in t_listed:
                        continue
                    data = core.read_namespaced_config_map("trustwarden-bundle", ns).data or {}
                    pem = data.get(f"{domain_name}.crl.pem")
                    if pem and wanted <= {
                        e.serial_number for e in x509.load_pem_x509_crl(pem.encode())
                    }:
                        t_listed[ns] = time.time()
                return len(t_listed) == len(want)

            self.wait(all_listed, 120, "every serial in its namespace's CRL", 0.25)
            t_crl = max(t_listed.values())
            time.sleep(SETTLE_S)
            requests = self.requests("trustwarden", t_delete, time.time())
            by = requests["by_verb_resource"]
            cm_writes = sum(
                v
                for k, v in by.items()
                if k.split()[0] in ("create", "update", "patch") and k.split()[1] == "configmaps"
            )
            revoked = sum(len(v) for v in want.values())
            out = blank(n, namespaces)
            out.update(
                {
                    "revoked": revoked,
                    "pod_gc_s": round(t_last_gone - t_delete, 2),
                    "pods_removed_over_s": round(t_last_gone - t_first_gone, 2),
                    "crl_complete_after_last_pod_s": round(t_crl - t_last_gone, 2),
                    "revocations_per_s": round(revoked / max(t_crl - t_first_gone, 1e-3), 1),
                    "configmap_writes": cm_writes,
                    "affected_bundles": len(want),
                    "api_requests": requests,
                    "api_writes_per_cert": round(requests["writes"] / max(revoked, 1), 3),
                    "errors": n - revoked,
                    "burst": {k: result[k] for k in ("certs_per_s", "p99_s", "issued")},
                }
            )
            self.log(
                f"  {revoked} revoked; pods gone {out['pod_gc_s']}s after the Node, CRLs complete "
                f"{out['crl_complete_after_last_pod_s']}s after the last pod, "
                f"{cm_writes} ConfigMap writes for {len(want)} bundles"
            )
            return out
        finally:
            self.finish(state)

    # ---------------------------------------------------------------- restart

    def restart(
        self, name: str, state: dict[str, Any], settle: float, *, profile: bool = False
    ) -> dict[str, Any]:
        """With every Secret of a finished burst in place, restart the operator: time from the
        new process's start to 'starting reconciliation', and Secrets re-issued (must be 0)."""
        events: Events = state["events"]
        secrets = state["secrets"]
        n = len(secrets)
        self.log(f"[{name}] restart with {n} valid certificates")
        events.poll()
        before = {key: events.secrets[key].serial for key in secrets if key in events.secrets}
        state["op"].stop()
        self.monitor.unwatch("trustwarden")
        op = Operator(
            self.operator_kubeconfig, state["opns"], self.state / "logs" / f"operator-{name}.log"
        )
        self.live.append(op)
        op.start()
        self.monitor.watch("trustwarden", op.pid)
        t0 = op.started_at
        profiler = Profiler(op.pid, self.state / f"profile-{name}.txt") if profile else None
        if profiler is not None:
            self.live.append(profiler)
        window = CpuWindow(
            self.pids(("trustwarden", op.pid), ("watcher", state["watcher"].pid))
        ).start()
        listed = op.wait_log("initial listing complete", 600)
        ready = op.wait_leading(600)
        time.sleep(settle)
        t_end = time.time()
        usage = window.stop()
        profile_result = None
        if profiler is not None:
            path = profiler.stop()
            profile_result = analyse(path) if path else {"error": profiler.error}
        events.poll()
        changed = sum(
            1
            for key in secrets
            if key in events.secrets and events.secrets[key].serial != before.get(key)
        )
        # A long burst leaves leaves at their renew point by the time of the restart: those
        # renewals are due, not the restart's doing. Only a re-issue ahead of the renew-at its
        # previous version announced counts as re-issued.
        reissued, renewals_due = rollover.ahead_of_renew_at(
            {k: events.secrets[k].history for k in secrets if k in events.secrets},
            t0,
            slack_s=5.0,
        )
        requests = self.requests("trustwarden", t0, t_end)
        secret_writes = sum(
            v
            for k, v in requests["by_verb_resource"].items()
            if k.split()[0] in ("create", "update", "patch") and k.split()[1] == "secrets"
        )
        result = blank(n, len(state["namespaces"]))
        result.update(
            {
                "ready_s": round(ready - t0, 2),
                "initial_listing_s": round(listed - t0, 2),
                "reissued": reissued,
                "renewals_due": renewals_due,
                "secrets_changed": changed,
                "secret_writes": secret_writes,
                "observed_for_s": round(t_end - t0, 1),
                "api_requests": requests,
                "api_writes_per_cert": round(requests["writes"] / max(n, 1), 3),
                "api_reads_per_cert": round(requests["reads"] / max(n, 1), 3),
                "peak_rss_mib": _round(
                    max(self.monitor.peak("trustwarden") or 0, hwm_mib(op.pid) or 0)
                ),
                "cpu_s": cpu_seconds(op.pid),
                "load": usage,
                "errors": reissued,
            }
        )
        if profile_result is not None:
            result["profile"] = profile_result
            result["crypto_cpu_share"] = profile_result.get("crypto_share")
        self.log(
            f"  ready in {result['ready_s']}s (listing {result['initial_listing_s']}s), "
            f"{reissued} re-issued ahead of their renew-at, {renewals_due} renewals due, "
            f"{secret_writes} Secret writes, peak RSS {result['peak_rss_mib']} MiB"
        )
        state["op"] = op
        return result

    # ---------------------------------------------------------------- shared

    def shared(self, name: str, n: int, namespaces: int) -> dict[str, Any]:
        prefix = self.prefix()
        opns, td = f"{prefix}-tw", f"{prefix}-td"
        nss = [f"{prefix}-ns{i}" for i in range(namespaces)]
        self.log(f"[{name}] {n} Shared identities in {namespaces} namespace(s)")
        watcher, events = self.watcher(name, ["secrets", "wids"])
        op = self.operator(opns, name)
        self.domain(td, f"{prefix}.bench.example.org")
        kube.create_namespaces(self.cluster.api, nss, {})
        self.wait_quiet(2)
        items = [
            (
                "WorkloadIdentity",
                nss[i % namespaces],
                kube.shared_identity(nss[i % namespaces], f"id{i}", td, ttl="1h"),
            )
            for i in range(n)
        ]
        window = CpuWindow(self.pids(("trustwarden", op.pid), ("watcher", watcher.pid))).start()
        self.monitor.reset_peak("trustwarden")
        result = self._timed_objects(
            name,
            "trustwarden",
            "wids",
            items,
            events,
            window,
            lambda: self.monitor.peak("trustwarden"),
        )
        op.stop()
        self.monitor.unwatch("trustwarden")
        watcher.stop()
        self.cleanup(nss, domain=td, opns=opns)
        return result

    def _timed_objects(
        self,
        name: str,
        who: str,
        ready_kind: str,
        items: list[tuple[str, str, dict[str, Any]]],
        events: Events,
        window: CpuWindow,
        peak: Callable[[], float | None],
    ) -> dict[str, Any]:
        n = len(items)
        namespaces = len({ns for _, ns, _ in items})
        t_start = time.time()
        created = kube.create_many(
            self.cluster.api, items, threads=16, progress=lambda k: self.log(f"  created {k}/{n}")
        )
        secret_keys = {
            (ns, body["metadata"]["name"]): (ns, f"{body['metadata']['name']}-svid")
            for _, ns, body in items
        }
        last_report = [time.monotonic()]

        def done() -> bool:
            events.poll()
            secrets = sum(1 for s in secret_keys.values() if s in events.secrets)
            ready = sum(1 for k in secret_keys if (ready_kind, *k) in events.cr_ready)
            if time.monotonic() - last_report[0] > 5:
                last_report[0] = time.monotonic()
                self.log(f"  {secrets}/{n} Secrets, {ready}/{n} Ready")
            return secrets == n and ready == n

        try:
            self.wait(done, 180 + n / 5, f"{n} Secrets and Ready conditions")
        except TimeoutError as exc:
            self.log(f"  {exc}")
        secret_t = {
            k: events.secrets[s].first for k, s in secret_keys.items() if s in events.secrets
        }
        ready_t = {
            k: events.cr_ready[(ready_kind, *k)]
            for k in secret_keys
            if (ready_kind, *k) in events.cr_ready
        }
        t_done = max([*secret_t.values(), *ready_t.values()], default=time.time())
        time.sleep(max(0.0, t_done + SETTLE_S - time.time()))
        usage = window.stop()
        first = min(created.times.values(), default=t_start)
        latencies = [secret_t[k] - created.times[k] for k in secret_t if k in created.times]
        ready_lat = [ready_t[k] - created.times[k] for k in ready_t if k in created.times]
        requests = self.requests(who, t_start - 0.5, t_done + SETTLE_S)
        issued = len(secret_t)
        result = blank(n, namespaces)
        result.update(
            {
                "tool": who,
                "p50_s": percentile(latencies, 50),
                "p95_s": percentile(latencies, 95),
                "p99_s": percentile(latencies, 99),
                "max_s": percentile(latencies, 100),
                "ready_p99_s": percentile(ready_lat, 99),
                "certs_per_s": round(
                    issued / max(max(secret_t.values(), default=first) - first, 1e-3), 1
                )
                if issued
                else 0,
                "time_to_all_secrets_s": round(max(secret_t.values(), default=first) - first, 2),
                "time_to_all_ready_s": round(max(ready_t.values(), default=first) - first, 2)
                if ready_t
                else None,
                "issued": issued,
                "ready": len(ready_t),
                "errors": len(created.errors) + (n - issued) + (n - len(ready_t)),
                "error_samples": created.errors[:5],
                "api_writes_per_cert": round(requests["writes"] / max(issued, 1), 3),
                "api_reads_per_cert": round(requests["reads"] / max(issued, 1), 3),
                "api_requests": requests,
                "peak_rss_mib": _round(peak()),
                "cpu_s": usage["cpu_s"].get(who),
                "cpu_ms_per_cert": round(1000 * usage["cpu_s"].get(who, 0) / max(issued, 1), 2),
                "load": usage,
            }
        )
        self.samples[name] = {"latencies": sorted(round(x, 4) for x in latencies)}
        self.log(
            f"  {issued}/{n} Secrets, all Ready after {result['time_to_all_ready_s']}s, "
            f"{result['certs_per_s']} certs/s, {result['api_writes_per_cert']} writes/cert, "
            f"peak RSS {result['peak_rss_mib']} MiB, CPU {result['cpu_s']}s"
        )
        return result

    # ---------------------------------------------------------------- cert-manager

    def cert_manager(self, name: str, n: int, namespaces: int) -> dict[str, Any]:
        result = blank(n, namespaces)
        result["tool"] = "cert-manager"
        if self.cert_manager_binary is None:
            result["error"] = self.cert_manager_error or "cert-manager was not built"
            self.log(f"[{name}] skipped: {result['error']}")
            return result
        prefix = self.prefix()
        nss = [f"{prefix}-ns{i}" for i in range(namespaces)]
        self.log(
            f"[{name}] cert-manager {self.cert_manager_version}: {n} Certificates in {namespaces} namespace(s)"
        )
        self._install_cert_manager()
        watcher, events = self.watcher(name, ["secrets", "certificates"])
        cm = CertManager(
            self.cert_manager_binary,
            self.cert_manager_kubeconfig,
            self.state / "logs" / f"{name}.log",
        )
        self.live.append(cm)
        cm.start()
        self.monitor.watch("cert-manager", cm.pid)
        custom = client.CustomObjectsApi(self.cluster.api)
        try:
            self.wait(
                lambda: _ready_condition(
                    custom.get_cluster_custom_object(
                        "cert-manager.io", "v1", "clusterissuers", "bench-ca"
                    )
                ),
                120,
                "ClusterIssuer bench-ca Ready",
            )
            kube.create_namespaces(self.cluster.api, nss, {})
            self.wait_quiet(2)
            items = [
                (
                    "Certificate",
                    nss[i % namespaces],
                    kube.certificate(
                        nss[i % namespaces], f"id{i}", "cm.bench.example.org", name, ttl="1h"
                    ),
                )
                for i in range(n)
            ]
            window = CpuWindow(
                self.pids(("cert-manager", cm.pid), ("watcher", watcher.pid))
            ).start()
            self.monitor.reset_peak("cert-manager")
            result = self._timed_objects(
                name,
                "cert-manager",
                "certificates",
                items,
                events,
                window,
                lambda: self.monitor.peak("cert-manager"),
            )
            result["version"] = self.cert_manager_version
        finally:
            cm.stop()
            self.monitor.unwatch("cert-manager")
            watcher.stop()
            self.cleanup(nss)
        return result

    def _install_cert_manager(self) -> None:
        assert self.cert_manager_binary is not None
        crds = self.cert_manager_binary.parent / "crds"
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
        for crd in ("certificates", "certificaterequests", "issuers", "clusterissuers"):
            self.cluster.kubectl(
                "wait", "--for=condition=Established", f"crd/{crd}.cert-manager.io", "--timeout=60s"
            )
        core = self.cluster.core
        kube.ignore_conflict(lambda: core.create_namespace({"metadata": {"name": "cert-manager"}}))
        cert_pem, key_pem = _ca_pem()
        kube.ignore_conflict(
            lambda: core.create_namespaced_secret(
                "cert-manager",
                {
                    "metadata": {"name": "bench-ca"},
                    "type": "kubernetes.io/tls",
                    "data": {"tls.crt": _b64(cert_pem), "tls.key": _b64(key_pem)},
                },
            )
        )
        custom = client.CustomObjectsApi(self.cluster.api)
        kube.ignore_conflict(
            lambda: custom.create_cluster_custom_object(
                "cert-manager.io",
                "v1",
                "clusterissuers",
                {
                    "apiVersion": "cert-manager.io/v1",
                    "kind": "ClusterIssuer",
                    "metadata": {"name": "bench-ca"},
                    "spec": {"ca": {"secretName": "bench-ca"}},
                },
            )
        )

    # ---------------------------------------------------------------- rotation sweep

    def rotation_sweep(
        self, name: str, n: int, namespaces: int, *, ttl: str, renew_at: str
    ) -> dict[str, Any]:
        """Issue `n` short-lived SVIDs in a burst, then watch every Secret's first renewal (a
        serial change) and compare the busiest second with the mean rate."""
        issued, state = self.per_pod(
            name + "/issue", n, namespaces, keep=True, ttl=ttl, renew_at=renew_at
        )
        events: Events = state["events"]
        secrets = state["secrets"]
        fraction = float(renew_at.rstrip("%")) / 100
        lifetime = _seconds(ttl)
        horizon = lifetime * fraction + issued.get("duration_s", 0) + 120
        self.log(
            f"[{name}] waiting for {len(secrets)} renewals (due {lifetime * fraction * 0.5:.0f}-{lifetime * fraction:.0f}s after issuance)"
        )
        window = CpuWindow(
            self.pids(("trustwarden", state["op"].pid), ("watcher", state["watcher"].pid))
        ).start()
        last_report = [time.monotonic()]

        def renewed() -> bool:
            events.poll()
            count = sum(1 for k in secrets if k in events.secrets and events.secrets[k].changes)
            if time.monotonic() - last_report[0] > 10:
                last_report[0] = time.monotonic()
                self.log(f"  {count}/{len(secrets)} renewed")
            return count == len(secrets)

        try:
            self.wait(renewed, horizon, "every certificate's first renewal", interval=0.5)
        except TimeoutError as exc:
            self.log(f"  {exc}")
        times = sorted(
            events.secrets[k].changes[0][0]
            for k in secrets
            if k in events.secrets and events.secrets[k].changes
        )
        t_end = (times[-1] if times else time.time()) + SETTLE_S
        time.sleep(max(0.0, t_end - time.time()))
        usage = window.stop()
        result = blank(n, namespaces)
        result.update(
            {
                "ttl": ttl,
                "renew_at": renew_at,
                "issue": {k: issued[k] for k in ("p50_s", "p99_s", "certs_per_s", "duration_s")},
            }
        )
        if times:
            span = max(times[-1] - times[0], 1.0)
            buckets: dict[int, int] = {}
            for t in times:
                buckets[int(t - times[0])] = buckets.get(int(t - times[0]), 0) + 1
            mean = len(times) / (int(span) + 1)
            peak = max(buckets.values())
            requests = self.requests("trustwarden", times[0] - 0.5, t_end)
            result.update(
                {
                    "renewals": len(times),
                    "renewal_window_s": round(span, 1),
                    "mean_renewals_per_s": round(mean, 2),
                    "peak_renewals_per_s": peak,
                    "peak_to_mean": round(peak / mean, 2),
                    "certs_per_s": round(mean, 2),
                    "api_requests": requests,
                    "api_writes_per_cert": round(requests["writes"] / len(times), 3),
                    "api_reads_per_cert": round(requests["reads"] / len(times), 3),
                    "peak_rss_mib": _round(self.monitor.peak("trustwarden")),
                    "cpu_s": usage["cpu_s"].get("trustwarden"),
                    "load": usage,
                    "errors": len(secrets) - len(times),
                    "issue_window_s": issued.get("duration_s"),
                }
            )
            self.samples[name] = {
                "renewal_offsets": [round(t - times[0], 3) for t in times],
                "renewals_per_s": [buckets.get(i, 0) for i in range(int(span) + 1)],
            }
            self.log(
                f"  {len(times)} renewals over {span:.0f}s: mean {mean:.1f}/s, peak {peak}/s "
                f"(peak/mean {result['peak_to_mean']}), {result['api_writes_per_cert']} writes/renewal"
            )
        else:
            result["errors"] = len(secrets)
        self.finish(state)
        return result

    # ---------------------------------------------------------------- CA rollover

    def rollover(
        self,
        name: str,
        n: int,
        namespaces: int,
        *,
        activate_in: float = 420.0,
        ttl: str = "10m",
        renew_at: str = "25%",
        emergency_after: str = "30s",
    ) -> dict[str, Any]:
        """A scheduled CA activation with `n` live leaves, then an emergency rotation.

        The domain starts from a CA Secret whose (1 h) authority is `activate_in` seconds
        from its 5/6 point, so the successor is prepared at once and activates on schedule
        while the leaves are live. Measured: renewals per second in two renewal periods
        (2 x renew_at x ttl) after the activation against as long before it (the hand-over
        must not be a storm), leaves that moved ahead of their own renew-at, and
        verification gaps (a current leaf whose issuer's anchor is not in its namespace
        bundle). Then `trustwarden.io/rotate` with
        `emergency_after` retires the new authority early: every leaf is re-issued at once,
        paced by the operator's --reissue-rate; its rate and the operator's 429s are reported."""
        activate_at = time.time() + activate_in
        seeded: dict[str, str] = {}

        def aged_ca(opns: str, td: str, trust_domain: str) -> None:
            seeded["sha"] = _seed_aged_ca(self.cluster.core, opns, td, trust_domain, activate_at)

        issued, state = self.per_pod(
            name + "/issue",
            n,
            namespaces,
            keep=True,
            ttl=ttl,
            renew_at=renew_at,
            watch=("bundles", "trustdomains"),
            before_domain=aged_ca,
        )
        events: Events = state["events"]
        secrets: set[tuple[str, str]] = state["secrets"]
        td, old = state["td"], seeded["sha"]
        window_s = 2 * float(renew_at.rstrip("%")) / 100 * _seconds(ttl)
        result = blank(n, namespaces)
        result.update({"ttl": ttl, "renew_at": renew_at, "issue": _brief(issued)})
        try:
            events.poll()
            by_old = sum(
                1 for k in secrets if k in events.secrets and events.secrets[k].issuer == old
            )
            self.log(
                f"[{name}] {by_old}/{len(secrets)} leaves by the aged authority; it hands over "
                f"in {activate_at - time.time():.0f}s"
            )
            t_act, new = self._await_active(events, td, {old}, activate_in + 120)
            self.log(f"  new authority {new[:12]} Active {t_act - activate_at:+.1f}s from plan")
            window = CpuWindow(
                self.pids(("trustwarden", state["op"].pid), ("watcher", state["watcher"].pid))
            ).start()
            moved_all = self._await_issuer(events, secrets, new, window_s + 120)
            t_end = max(moved_all or time.time(), t_act + window_s) + 1
            time.sleep(max(0.0, t_end - time.time()))
            usage = window.stop()
            events.poll()
            histories = {k: events.secrets[k].history for k in secrets if k in events.secrets}
            times = rollover.renewals(histories)
            before = rollover.rate(times, t_act - window_s, t_act)
            after = rollover.rate(times, t_act, t_act + window_s)
            moved = rollover.moves(histories, new)
            early = rollover.off_schedule(histories, new, slack_s=5.0)
            gaps = rollover.verification_gaps(histories, dict(events.bundles))
            requests = self.requests("trustwarden", t_act, t_act + window_s)
            # the same renewals by the time each was due: waves here are the schedule's
            pairs = [
                (due, seen)
                for due, seen in rollover.due_and_arrived(histories)
                if t_act <= seen < t_act + window_s
            ]
            by_due = rollover.rate([due for due, _ in pairs], t_act, t_act + window_s)
            result["scheduled"] = {
                "activation_vs_plan_s": round(t_act - activate_at, 1),
                "window_s": window_s,
                "renewals_before": before.as_dict(),
                "renewals_after": after.as_dict(),
                "renewals_after_by_due_time": by_due.as_dict(),
                "renewal_lag_s": rollover.lag_summary(pairs),
                "moved": len(moved),
                "all_moved_after_s": round(moved_all - t_act, 1) if moved_all else None,
                "moved_ahead_of_renew_at": len(early),
                "early_samples": early[:5],
                "verification_gaps": len(gaps),
                "gap_samples": gaps[:5],
                "api_writes_per_renewal": round(requests["writes"] / max(after.count, 1), 3),
                "cpu_s": usage["cpu_s"].get("trustwarden"),
            }
            per_second = Counter(int(t - t_act + window_s) for t in times)
            due_per_second = Counter(int(due - t_act + window_s) for due, _ in pairs)
            self.samples[name] = {
                "renewals_per_s": [per_second[i] for i in range(int(2 * window_s))],
                "due_per_s_after": [
                    due_per_second[i] for i in range(int(window_s), int(2 * window_s))
                ],
            }
            self.log(
                f"  scheduled: {len(moved)}/{len(secrets)} moved, {len(early)} ahead of their "
                f"renew-at; renewals/s before mean {before.mean_per_s:.1f} peak {before.peak_per_s}, "
                f"after mean {after.mean_per_s:.1f} peak {after.peak_per_s} "
                f"(peak/mean {after.peak_to_mean}); by due time peak {by_due.peak_per_s} "
                f"(peak/mean {by_due.peak_to_mean}); lag {rollover.lag_summary(pairs)}; "
                f"{len(gaps)} verification gaps"
            )
            result.update(self._emergency(name, state, secrets, emergency_after))
            sched = result["scheduled"]
            result["peak_to_mean"] = sched["renewals_after"]["peak_to_mean"]
            result["certs_per_s"] = sched["renewals_after"]["mean_per_s"]
            result["api_writes_per_cert"] = sched["api_writes_per_renewal"]
            result["peak_rss_mib"] = _round(self.monitor.peak("trustwarden"))
            result["errors"] = (
                (len(secrets) - len(moved))
                + len(gaps)
                + result["emergency"]["verification_gaps"]
                + result["emergency"]["not_reissued"]
            )
            return result
        finally:
            self.finish(state)

    def _await_active(
        self, events: Events, td: str, old: set[str], timeout: float
    ) -> tuple[float, str]:
        """When the TrustDomain's status first shows an authority outside `old` Active."""

        def active() -> str | None:
            events.poll()
            for sha, auth_state in events.authorities.get(td, []):
                if sha not in old and auth_state == "Active":
                    return sha
            return None

        sha = self.wait(active, timeout, "the next authority Active in status", 0.25)
        return time.time(), sha

    def _await_issuer(
        self, events: Events, secrets: set[tuple[str, str]], issuer: str, timeout: float
    ) -> float | None:
        """Time of the last Secret's first version by `issuer` once all have one, else None."""
        last_report = [time.monotonic()]

        def all_moved() -> bool:
            events.poll()
            count = sum(
                1 for k in secrets if k in events.secrets and events.secrets[k].issuer == issuer
            )
            if time.monotonic() - last_report[0] > 15:
                last_report[0] = time.monotonic()
                self.log(f"  {count}/{len(secrets)} leaves by {issuer[:12]}")
            return count == len(secrets)

        try:
            self.wait(all_moved, timeout, f"every leaf issued by {issuer[:12]}", 0.5)
        except TimeoutError as exc:
            self.log(f"  {exc}")
            return None
        moved = rollover.moves(
            {k: events.secrets[k].history for k in secrets if k in events.secrets}, issuer
        )
        return max((v[0] for v in moved.values()), default=None)

    def _emergency(
        self,
        name: str,
        state: dict[str, Any],
        secrets: set[tuple[str, str]],
        activate_after: str,
    ) -> dict[str, Any]:
        events: Events = state["events"]
        td = state["td"]
        self.log(
            f"[{name}] emergency rotation (trustwarden.io/rotate, activate-after {activate_after})"
        )
        self.rotate(td, activate_after)
        known = {sha for sha, _ in events.authorities.get(td, [])}
        t_act, new = self._await_active(events, td, known, _seconds(activate_after) + 120)
        reissue_rate = _DEFAULTS.reissue_rate or float(len(secrets))
        moved_all = self._await_issuer(events, secrets, new, len(secrets) / reissue_rate + 180)
        t_end = (moved_all or time.time()) + 1
        events.poll()
        histories = {k: events.secrets[k].history for k in secrets if k in events.secrets}
        moved = rollover.moves(histories, new)
        pace = rollover.rate([v[0] for v in moved.values()], t_act, t_end)
        gaps = rollover.verification_gaps(histories, dict(events.bundles))
        requests = self.requests("trustwarden", t_act, t_end)
        throttled = sum(v for k, v in requests["errors"].items() if k.endswith(" 429"))
        out = {
            "emergency": {
                "activate_after": activate_after,
                "reissue_rate_bound_per_s": reissue_rate,
                "reissued": len(moved),
                "not_reissued": len(secrets) - len(moved),
                "all_reissued_after_s": round(moved_all - t_act, 1) if moved_all else None,
                "reissues": pace.as_dict(),
                "operator_429s": throttled,
                "verification_gaps": len(gaps),
                "gap_samples": gaps[:5],
                "api_writes_per_reissue": round(requests["writes"] / max(len(moved), 1), 3),
            }
        }
        self.log(
            f"  emergency: {len(moved)}/{len(secrets)} re-issued in "
            f"{out['emergency']['all_reissued_after_s']}s, mean {pace.mean_per_s:.1f}/s peak "
            f"{pace.peak_per_s}/s (bound {reissue_rate}/s), {throttled} 429s, {len(gaps)} gaps"
        )
        return out

    # ---------------------------------------------------------------- CA rotation fan-out

    def ca_fanout(self, name: str, namespaces: int, activate_after: str = "30s") -> dict[str, Any]:
        prefix = self.prefix()
        opns, td = f"{prefix}-tw", f"{prefix}-td"
        nss = [f"{prefix}-ns{i}" for i in range(namespaces)]
        self.log(f"[{name}] forced CA rotation across {namespaces} namespaces")
        watcher, events = self.watcher(name, ["secrets", "wids", "bundles", "trustdomains"])
        op = self.operator(opns, name)
        self.domain(td, f"{prefix}.bench.example.org")
        kube.create_namespaces(self.cluster.api, nss, {})
        self.identities(
            events,
            [("WorkloadIdentity", ns, kube.shared_identity(ns, "api", td, ttl="1h")) for ns in nss],
        )

        def active_sha() -> str | None:
            events.poll()
            for sha, state in events.authorities.get(td, []):
                if state == "Active":
                    return sha
            return None

        old = self.wait(active_sha, 60, "the active authority in status")

        def holds(ns: str, sha: str) -> float | None:
            for t, anchors in events.bundles.get(ns, []):
                if sha in anchors:
                    return t
            return None

        self.wait(
            lambda: (events.poll(), all(holds(ns, old) for ns in nss))[1],
            120,
            "every bundle to hold the anchor",
        )
        self.wait(
            lambda: all((ns, "api-svid") in events.secrets for ns in nss), 120, "every Secret"
        )
        self.wait_quiet(3)
        window = CpuWindow(self.pids(("trustwarden", op.pid), ("watcher", watcher.pid))).start()
        self.monitor.reset_peak("trustwarden")
        self.rotate(td, activate_after)
        t0 = time.time()

        def new_sha() -> str | None:
            events.poll()
            for sha, _state in events.authorities.get(td, []):
                if sha != old:
                    return sha
            return None

        new = self.wait(new_sha, 60, "a new authority in status")
        per_ns: dict[str, float] = {}
        try:

            def fanned_out() -> bool:
                events.poll()
                for ns in nss:
                    if ns not in per_ns:
                        t = holds(ns, new)
                        if t is not None:
                            per_ns[ns] = t
                return len(per_ns) == len(nss)

            self.wait(fanned_out, 180, "every bundle to hold the new anchor")
        except TimeoutError as exc:
            self.log(f"  {exc}")
        t_fanout = max(per_ns.values(), default=time.time())

        def reissued() -> bool:
            events.poll()
            return all(
                (ns, "api-svid") in events.secrets
                and events.secrets[(ns, "api-svid")].issuer == new
                for ns in nss
            )

        reissue_s = None
        try:
            self.wait(reissued, 240, "every leaf re-issued by the new authority", interval=0.5)
            reissue_s = round(time.time() - t0, 2)
        except TimeoutError as exc:
            self.log(f"  {exc}")
        usage = window.stop()
        requests_fanout = self.requests("trustwarden", t0 - 0.5, t_fanout + 0.5)
        bundle_writes = sum(
            v
            for k, v in requests_fanout["by_verb_resource"].items()
            if k.split()[0] in ("create", "update", "patch") and k.split()[1] == "configmaps"
        )
        latencies = [t - t0 for t in per_ns.values()]
        result = blank(namespaces, namespaces)
        result.update(
            {
                "p50_s": percentile(latencies, 50),
                "p95_s": percentile(latencies, 95),
                "p99_s": percentile(latencies, 99),
                "fanout_s": round(t_fanout - t0, 2) if per_ns else None,
                "bundles_updated": len(per_ns),
                "configmap_writes_during_fanout": bundle_writes,
                "activate_after": activate_after,
                "all_leaves_reissued_s": reissue_s,
                "api_requests": requests_fanout,
                "api_writes_per_cert": round(requests_fanout["writes"] / max(len(per_ns), 1), 3),
                "api_reads_per_cert": round(requests_fanout["reads"] / max(len(per_ns), 1), 3),
                "per": "namespace bundle",
                "peak_rss_mib": _round(self.monitor.peak("trustwarden")),
                "cpu_s": usage["cpu_s"].get("trustwarden"),
                "load": usage,
                "errors": len(nss) - len(per_ns),
            }
        )
        self.samples[name] = {"bundle_latencies": sorted(round(x, 4) for x in latencies)}
        self.log(
            f"  every bundle held the new anchor after {result['fanout_s']}s "
            f"({bundle_writes} ConfigMap writes), all leaves re-issued after {reissue_s}s"
        )
        op.stop()
        self.monitor.unwatch("trustwarden")
        watcher.stop()
        self.cleanup(nss, domain=td, opns=opns)
        return result

    # ---------------------------------------------------------------- pod certificates

    def pcr_burst(self, name: str, n: int, *, threads: int = 16) -> dict[str, Any]:
        """`n` PodCertificateRequests created by a node client, one per pod bound to it, as
        fast as the API takes them; each timed from its create answer to the first watch
        event that shows it Issued. Pods, node and CSRs are made before the clock starts."""
        import threading

        from kubernetes import watch

        from bench.harness import podcerts

        prefix = self.prefix()
        opns, td, ns = f"{prefix}-tw", f"{prefix}-td", f"{prefix}-ns0"
        signer = f"trustwarden.io/{td}"
        self.log(f"[{name}] {n} PodCertificateRequests from one node (burst)")
        op = self.operator(opns, name)
        self.domain(td, f"{prefix}.bench.example.org")
        kube.create_namespaces(self.cluster.api, [ns], {})
        custom = client.CustomObjectsApi(self.cluster.api)
        custom.create_namespaced_custom_object(
            kube.GROUP,
            kube.VERSION,
            ns,
            "workloadidentities",
            {
                "apiVersion": f"{kube.GROUP}/{kube.VERSION}",
                "kind": "WorkloadIdentity",
                "metadata": {"name": "bench"},
                "spec": {
                    "trustDomain": td,
                    "podSelector": {"matchLabels": {"app": "bench"}},
                    "ttl": "1h",
                    "delivery": {"mode": "PodCertificate"},
                },
            },
        )
        server = str(self.cluster.api.configuration.host)
        node = podcerts.NodeClient(
            server, self.cluster.directory / "pki", f"{prefix}-node", self.state / "node"
        )
        core = client.CoreV1Api(self.cluster.api)
        sa_uid = str(self.wait(lambda: _sa_uid(core, ns), 60, f"ServiceAccount default in {ns}"))
        items = [("Pod", ns, podcerts.pod(f"p{i}", node.name, signer, name)) for i in range(n)]
        made = kube.create_many(self.cluster.api, items, threads=threads)
        if made.errors:
            raise RuntimeError(f"creating pods failed: {made.errors[:3]}")
        pods = [{"metadata": made.bodies[(ns, f"p{i}")]} for i in range(n)]
        csrs = podcerts.stub_csrs(n)
        self.wait(
            lambda: (
                custom.get_cluster_custom_object(kube.GROUP, kube.VERSION, "trustdomains", td)
                .get("status", {})
                .get("signer", {})
                .get("available")
            ),
            60,
            "the signer to be available",
        )
        self.wait_quiet(3)
        issued_at: dict[str, float] = {}
        outcomes: dict[str, str] = {}
        stop = threading.Event()
        listing = custom.list_namespaced_custom_object(
            "certificates.k8s.io", "v1", ns, "podcertificaterequests"
        )
        version = listing["metadata"]["resourceVersion"]

        failures: list[str] = []

        def follow() -> None:
            # Reconnects from the last version seen: a burst must not lose its watch.
            last = version
            while not stop.is_set():
                stream = watch.Watch()
                try:
                    for event in stream.stream(
                        custom.list_namespaced_custom_object,
                        "certificates.k8s.io",
                        "v1",
                        ns,
                        "podcertificaterequests",
                        resource_version=last,
                        timeout_seconds=60,
                    ):
                        obj = event["object"]
                        if event["type"] not in ("ADDED", "MODIFIED") or not isinstance(obj, dict):
                            continue
                        last = obj["metadata"].get("resourceVersion") or last
                        status = obj.get("status")
                        conditions = status.get("conditions") if isinstance(status, dict) else ()
                        for cond in conditions or ():
                            key = obj["metadata"]["name"]
                            if cond.get("type") in ("Issued", "Denied", "Failed") and (
                                key not in outcomes
                            ):
                                outcomes[key] = str(cond["type"])
                                issued_at[key] = time.time()
                        if stop.is_set():
                            stream.stop()
                except Exception as exc:
                    failures.append(repr(exc)[:200])

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        window = CpuWindow(self.pids(("trustwarden", op.pid))).start()
        self.monitor.reset_peak("trustwarden")
        t_start = time.time()
        burst = podcerts.create_requests(
            node,
            ns,
            pods,
            csrs,
            signer,
            sa_uid,
            threads=threads,
            progress=lambda k: self.log(f"  created {k}/{n} PCRs"),
        )
        try:
            self.wait(
                lambda: len(outcomes) >= len(burst.created), 120 + n / 10, f"{n} PCRs decided"
            )
        except TimeoutError as exc:
            self.log(f"  {exc}")
        t_done = max(issued_at.values(), default=time.time())
        time.sleep(max(0.0, t_done + SETTLE_S - time.time()))
        stop.set()
        usage = window.stop()
        requests = self.requests("trustwarden", t_start - 0.5, t_done + SETTLE_S)
        issued = sum(1 for v in outcomes.values() if v == "Issued")
        latencies = [issued_at[k] - t for k, t in burst.created.items() if k in issued_at]
        first = min(burst.created.values(), default=t_start)
        result = blank(n, 1)
        result.update(
            {
                "p50_s": percentile(latencies, 50),
                "p95_s": percentile(latencies, 95),
                "p99_s": percentile(latencies, 99),
                "max_s": percentile(latencies, 100),
                "certs_per_s": round(issued / max(t_done - first, 1e-3), 1) if issued else 0,
                "issued": issued,
                "errors": len(burst.errors) + (len(burst.created) - issued),
                "error_samples": burst.errors[:5] + failures[:3],
                "api_writes_per_cert": round(requests["writes"] / max(issued, 1), 3),
                "api_reads_per_cert": round(requests["reads"] / max(issued, 1), 3),
                "api_requests": requests,
                "peak_rss_mib": _round(self.monitor.peak("trustwarden")),
                "cpu_s": usage["cpu_s"].get("trustwarden"),
                "cpu_ms_per_cert": round(
                    1000 * usage["cpu_s"].get("trustwarden", 0) / max(issued, 1), 2
                ),
                "load": usage,
                "duration_s": round(t_done - first, 2),
            }
        )
        self.samples[name] = {"latencies": sorted(round(x, 4) for x in latencies)}
        self.log(
            f"  {issued}/{n} issued, p50 {result['p50_s']}s p99 {result['p99_s']}s, "
            f"{result['certs_per_s']} PCRs/s, {result['api_writes_per_cert']} writes/cert, "
            f"CPU {result['cpu_s']}s"
        )
        op.stop()
        self.monitor.unwatch("trustwarden")
        # Pods bound to a node wait for its kubelet to confirm a graceful deletion; there is
        # none, so they go at once.
        core.delete_collection_namespaced_pod(ns, grace_period_seconds=0)
        node.call("DELETE", f"/api/v1/nodes/{node.name}")
        self.cleanup([ns], domain=td, opns=opns)
        return result


def _sa_uid(core: client.CoreV1Api, namespace: str) -> str | None:
    try:
        return str(core.read_namespaced_service_account("default", namespace).metadata.uid)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _ready_condition(obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or ()
    )


def _bytes_per_pod(peak: float | None, baseline: float | None, pods: int) -> int | None:
    if peak is None or baseline is None or not pods:
        return None
    return int(max(peak - baseline, 0) * 1024 * 1024 / pods)


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result.get(k) for k in ("p50_s", "p99_s", "certs_per_s", "duration_s", "errors")}


def _seed_aged_ca(
    core: client.CoreV1Api, opns: str, td: str, trust_domain: str, activate_at: float
) -> str:
    """The CA Secret of TrustDomain `td` as the operator stores it, holding one Active
    self-signed authority of 1 h whose 5/6 point is `activate_at`: the operator adopts it,
    prepares the successor at once (past 1/2) and activates it on schedule. Returns the
    authority's SHA-256."""
    from trustwarden.names import MANAGED_BY, MANAGER, ROLE_LABEL, TRUST_DOMAIN_ANNOTATION
    from trustwarden.pki.ca import CA_BACKDATE, create_self_signed_ca
    from trustwarden.pki.rotation import (
        ACTIVATE_FRACTION,
        AuthorityRecord,
        AuthoritySet,
        AuthorityState,
    )
    from trustwarden.reconcile.domains import ca_secret_name, encode_authorities

    ttl = dt.timedelta(hours=1)
    lifetime = ttl + CA_BACKDATE
    activate = dt.datetime.fromtimestamp(activate_at, dt.UTC)
    not_before = activate - lifetime * ACTIVATE_FRACTION
    authority = create_self_signed_ca(trust_domain, ttl=ttl, now=not_before + CA_BACKDATE)
    record = AuthorityRecord(
        authority=authority, state=AuthorityState.Active, activated_at=authority.not_before
    )
    core.create_namespaced_secret(
        opns,
        {
            "metadata": {
                "name": ca_secret_name(td),
                "labels": {MANAGED_BY: MANAGER, ROLE_LABEL: "ca"},
                "annotations": {TRUST_DOMAIN_ANNOTATION: trust_domain},
            },
            "type": "Opaque",
            "data": encode_authorities(AuthoritySet((record,))),
        },
    )
    return authority.sha256


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _seconds(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1}
    return float(text[:-1]) * units[text[-1]]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _ca_pem() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cert-manager bench CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


__all__ = ["REPO", "Bench"]
