"""The reconciliation engine: gather from the observed caches, decide with trustwarden.pki, act
through the KubePort.

Everything funnels through one DeadlineScheduler keyed by work items:
- ("td", name): a TrustDomain's CA, rotation schedule, CRL refresh and secretRef polling;
- ("wid", ns, name): a WorkloadIdentity (Shared: its Secret; PerPod: fan out to its pods);
- ("pod", ns, name): one pod's SVID;
- ("gone", ns, secret, owner_uid): revoke and delete the Secret of a deleted pod.

Trust bundles, revocation lists and statuses are aggregated: many changes mark them dirty and
a periodic flush writes each at most once, and only when its content changed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import random
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from cryptography import x509

from trustwarden.metrics import Metrics
from trustwarden.names import (
    API_VERSION,
    BUNDLE_CONFIGMAP,
    CA_SECRET_PREFIX,
    CONTENT_HASH_ANNOTATION,
    IDENTITY_LABEL,
    LEDGER_PREFIX,
    MANAGED_BY,
    MANAGER,
    NAMESPACE_ANNOTATION,
    REVOKE_FINALIZER,
    ROLE_LABEL,
    ROTATE_ANNOTATION,
    TRUST_DOMAIN_ANNOTATION,
)
from trustwarden.pki import bundle as bundle_mod
from trustwarden.pki import rotation
from trustwarden.pki._clock import to_rfc3339
from trustwarden.pki._x509util import sha256_hex
from trustwarden.pki.ca import (
    Authority,
    create_self_signed_ca,
    load_anchors,
    load_authority_from_pem,
)
from trustwarden.pki.durations import format_duration
from trustwarden.pki.errors import PKIError
from trustwarden.pki.issue import LeafFacts, LeafRequest, issue_leaf, ttl_cap
from trustwarden.pki.propagation import DEFAULT_PROPAGATION_DELAY, MIN_ACTIVATE_AFTER
from trustwarden.pki.renewal import (
    DesiredLeaf,
    RenewalAction,
    RenewalDecision,
    RenewalReason,
    decide_renewal,
    renew_point,
)
from trustwarden.pki.spiffe import (
    SpiffeID,
    TemplateContext,
    render_dns_names,
    render_spiffe_path,
    template_variables,
)
from trustwarden.reconcile.admission import AdmissionKey, new_key
from trustwarden.reconcile.dnspolicy import (
    DEFAULT_CLUSTER_DOMAIN,
    DNSNameNotAllowed,
    check_dns_names,
)
from trustwarden.reconcile.domains import (
    DomainRuntime,
    ca_secret_name,
    decode_authorities,
    encode_authorities,
    revocations_name,
)
from trustwarden.reconcile.events import EventRecorder
from trustwarden.reconcile.handover import HandoverPacer
from trustwarden.reconcile.ledger import LEDGER_KEY, Ledger, LedgerEntry, ledger_name
from trustwarden.reconcile.model import (
    CAKind,
    DeliveryMode,
    SpecError,
    TrustDomainSpec,
    WorkloadIdentitySpec,
)
from trustwarden.reconcile.observed import (
    BundleInfo,
    NamespaceInfo,
    PodInfo,
    SecretInfo,
    metadata_digest,
)
from trustwarden.reconcile.ports import ConflictError, KubePort, NotFoundError, ObjectRef
from trustwarden.reconcile.reflector import Reflector, key_of
from trustwarden.reconcile.revocationquota import emergency_quota
from trustwarden.reconcile.rotation_request import (
    RotationMode,
    RotationRequestError,
    parse_request,
    rotation_status,
    started_message,
)
from trustwarden.reconcile.scheduler import DeadlineScheduler, utcnow
from trustwarden.reconcile.secretbody import leaf_annotations, svid_metadata, svid_secret
from trustwarden.reconcile.status import StatusWriter

log = logging.getLogger("trustwarden.engine")

SECRET_REF_POLL = timedelta(seconds=30)
RETRY_BASE = 2.0
RETRY_MAX = 300.0
REPAIR_WINDOW = timedelta(minutes=10)
REPAIRS_BEFORE_BACKOFF = 3
DEPARTED_MAX = 10_000
CREATE_CONFLICT_RECHECK = 3.0
BUNDLE_CONFLICT_RETRY = timedelta(seconds=30)


@dataclass
class EngineConfig:
    operator_namespace: str = "trustwarden-system"
    concurrency: int = 8
    flush_interval: float = 0.5
    status_interval: float = 2.0
    ca_recovery_grace: timedelta = timedelta(minutes=2)
    # The kubelet's worst-case delay before a pod sees a changed Secret or ConfigMap
    # (--propagation-delay): the default activation delay of a forced rotation derives from
    # it (pki/propagation.py), never shorter than min_activate_after.
    propagation_delay: timedelta = DEFAULT_PROPAGATION_DELAY
    min_activate_after: timedelta = MIN_ACTIVATE_AFTER
    max_jitter_fraction: float = 0.1
    # The ledger only matters if the operator dies with pods deleted during its outage:
    # batching it wider trades a few seconds of that window for far fewer writes.
    ledger_interval: timedelta = timedelta(seconds=5)
    # A WorkloadIdentity status change that only moves timing fields (STATUS_TIMING_FIELDS)
    # is written at most this often; any other change is written at the next status flush.
    status_timing_interval: timedelta = timedelta(seconds=30)
    # Namespace-scoped mode: never write outside these namespaces (RBAC would refuse anyway).
    watch_namespaces: frozenset[str] | None = None
    # The cluster's DNS domain: a namespace owns the DNS names under <ns>.svc.<cluster_domain>.
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    # Verifies the injection webhook's admission tags (reconcile/admission.py); every replica
    # reads the same key from the operator namespace at start.
    admission_key: AdmissionKey = field(default_factory=lambda: AdmissionKey(new_key()))
    # Emergency CA rotation: leaves re-issued at most this many per second (None: unpaced).
    reissue_rate: float | None = 50.0


@dataclass
class Failure:
    reason: str
    message: str
    attempts: int = 1


@dataclass
class RepairHistory:
    times: list[datetime] = field(default_factory=list)  # repairs done, within REPAIR_WINDOW
    not_before: datetime | None = None  # the next repair waits until then


@dataclass
class LeafTarget:
    """Everything needed to converge one Secret: who owns it and what it must hold."""

    key: Hashable
    namespace: str
    secret_name: str
    owner: ObjectRef
    wid: WorkloadIdentitySpec
    domain: DomainRuntime
    context: TemplateContext
    jitter_key: str


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Engine:
    def __init__(
        self,
        kube: KubePort,
        config: EngineConfig,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.kube = kube
        self.config = config
        self.handover = HandoverPacer(config.reissue_rate)
        self.metrics = metrics
        self.clock = clock
        self.scheduler = DeadlineScheduler(
            self._dispatch,
            concurrency=config.concurrency,
            clock=clock,
            on_depth=metrics.queue_depth.set,
        )
        # observed state
        self.td_bodies: dict[str, Mapping[str, Any]] = {}
        self.domains: dict[str, DomainRuntime] = {}
        self.wids: dict[tuple[str, str], WorkloadIdentitySpec] = {}
        self.wid_bodies: dict[tuple[str, str], Mapping[str, Any]] = {}
        self.wid_errors: dict[tuple[str, str], SpecError] = {}
        self.wids_by_ns: dict[str, set[str]] = defaultdict(set)
        self.pods: dict[tuple[str, str], PodInfo] = {}
        self.pods_by_wid: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.secrets: dict[tuple[str, str], SecretInfo] = {}
        self.bundles: dict[str, BundleInfo] = {}
        self.namespaces: dict[str, NamespaceInfo] = {}
        # decisions and bookkeeping
        self.failures: dict[Hashable, Failure] = {}
        self.repairs: dict[Hashable, RepairHistory] = defaultdict(RepairHistory)
        self.wid_problems: dict[tuple[str, str], tuple[str, str]] = {}
        self.dirty_bundles: set[str] = set()
        self.dirty_revocations: set[str] = set()
        # Statuses (conditions, what was last written, deferred writes) and Events are kept
        # by their own writers; the engine marks status keys dirty and builds the statuses.
        self.status = StatusWriter(kube, self.clock, config.status_timing_interval)
        self.dirty_status = self.status.dirty
        self.last_status = self.status.last
        self.conditions = self.status.conditions
        self.events = EventRecorder(kube)
        self.bundle_conflicts: set[str] = set()
        self.ledger = Ledger()
        self._written: set[Hashable] = set()  # targets whose Secret we wrote (repair backoff)
        self._departed: dict[tuple[str, str], SecretInfo] = {}  # managed Secrets seen to go
        self._create_conflicts: set[Hashable] = set()  # targets whose create met a 409 once
        # Secrets being written right now, as we expect to read them back: the watch can
        # deliver the echo before the write's own answer, and must not take it for news.
        self._writing: dict[tuple[str, str], SecretInfo] = {}
        self._invalid_domains: set[str] = set()  # TrustDomains whose spec never parsed
        self._bundle_retry: dict[str, datetime] = {}  # namespaces whose bundle name is taken
        # Deleted Secrets we hold with REVOKE_FINALIZER: (namespace, name) -> the TrustDomain
        # whose revocation list must be persisted before the Secret may go.
        self._held: dict[tuple[str, str], frozenset[str]] = {}
        # Deleted Secrets and the TrustDomains into which their owner's serials were revoked
        # just before: _release waits for those lists to be stored.
        self._revoked_for: dict[tuple[str, str], frozenset[str]] = {}
        # Owner UID -> its work key, so an owner whose serial is revoked while it lives is
        # reissued at once rather than at its next renewal.
        self._keys_by_uid: dict[str, Hashable] = {}
        # Pod UID -> the Secret the webhook named for it, as verified at its first admitted
        # reconcile. Revocation on deletion goes by this (and the ledger), never by the pod's
        # annotations at that time: their owner can edit them after admission.
        self._admitted_secret: dict[str, str] = {}
        self._persisted: set[tuple[str, str]] = set()  # held ones whose revocation is stored
        self._observed_seq = 0
        self._seen: dict[tuple[str, str, str], int] = {}
        self.reflectors: list[Reflector] = []
        self._watch_tasks: list[asyncio.Task[None]] = []
        self._ca_series: dict[str, set[tuple[str, str, str]]] = {}
        self._ca_pem_cache: dict[tuple[str, ...], tuple[tuple[x509.Certificate, ...], bytes]] = {}
        self._ledger_flushed_at: datetime | None = None
        # Pod certificates (reconcile/podcerts) plug in here: a new authority may sign only
        # once every gate says its anchor is published; extra status fields per object.
        self.anchor_gates: list[Callable[[DomainRuntime, str], bool]] = []
        self.status_extras: Callable[[str, str, str], dict[str, Any] | None] | None = None
        self.started = False
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Begin reconciling. Called once every cache has its initial listing."""
        if self.started:
            return
        self.started = True
        for name in self.td_bodies:
            self.scheduler.schedule(("td", name))
        for ns, name in self.wids:
            self.scheduler.schedule(("wid", ns, name))
        for ns, name in self.pods:
            self.scheduler.schedule(("pod", ns, name))
        self.scheduler.schedule(("catchup",))
        self.dirty_bundles.update(self.namespaces)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.scheduler.run(), name="trustwarden-scheduler"),
            loop.create_task(self._flush_loop(), name="trustwarden-flush"),
            loop.create_task(self._status_loop(), name="trustwarden-status"),
        ]

    async def stop(self) -> None:
        for task in self._watch_tasks:
            task.cancel()
        for task in self._tasks:
            task.cancel()
        if self.started:
            # A clean shutdown loses nothing pending: ledger, revocations, bundles, statuses.
            self._ledger_flushed_at = None
            with contextlib.suppress(Exception):
                await self.flush()
                await self.flush_status(final=True)
        for task in [*self._watch_tasks, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):  # shutting down
                await task
        self._tasks, self._watch_tasks = [], []
        self.started = False

    def _schedule(self, key: Hashable, at: datetime | None = None) -> None:
        if self.started:
            self.scheduler.schedule(key, at)

    # ------------------------------------------------------------------ observation

    async def prime(self, namespaces: list[str] | None = None) -> None:
        """List every labelled pod and managed Secret (in `namespaces`, or everywhere) into
        the caches; `follow` then keeps them current from the listings' resourceVersions.

        The large sets are listed and watched here rather than through kopf: kopf keeps a
        record and a worker per object, copies every body and, for indexes, wakes all waiting
        workers per indexed object (quadratic in the object count at start-up)."""
        scopes: list[str | None] = [*namespaces] if namespaces else [None]
        self.reflectors = [
            Reflector(
                self.kube,
                kind,
                selector,
                scope,
                upsert=upsert,
                delete=delete,
                prune=partial(self._prune, kind, scope),
                mark=lambda: self._observed_seq,
            )
            for kind, selector, upsert, delete in (
                ("Pod", IDENTITY_LABEL, self.observe_pod, self.forget_pod),
                (
                    "Secret",
                    f"{MANAGED_BY}={MANAGER}",
                    self.observe_secret,
                    self._forget_secret_body,
                ),
            )
            for scope in scopes
        ]
        for reflector in self.reflectors:
            await reflector.list()

    def follow(self) -> None:
        """Watch pods and Secrets from where `prime` listed them, until `stop`."""
        loop = asyncio.get_running_loop()
        self._watch_tasks = [
            loop.create_task(reflector.watch(), name=f"trustwarden-watch-{reflector.kind}")
            for reflector in self.reflectors
        ]

    def _prune(self, kind: str, scope: str | None, live: set[tuple[str, str]], mark: int) -> None:
        """After a listing: forget what it lacks (deleted while no watch was looking), except
        what was observed after the listing began."""
        tag = "pod" if kind == "Pod" else "secret"
        cache: Mapping[tuple[str, str], object] = self.pods if kind == "Pod" else self.secrets
        gone = [
            key
            for key in cache
            if (scope is None or key[0] == scope)
            and key not in live
            and self._seen.get((tag, *key), 0) <= mark
        ]
        for namespace, name in gone:
            if kind == "Pod":
                self.forget_pod({"metadata": {"namespace": namespace, "name": name}})
            else:
                self.forget_secret(namespace, name)

    def _forget_secret_body(self, body: Mapping[str, Any]) -> None:
        self.forget_secret(*key_of(body))

    def _note_seen(self, kind: str, namespace: str, name: str) -> None:
        self._observed_seq += 1
        self._seen[(kind, namespace, name)] = self._observed_seq

    def observe_namespace(self, body: Mapping[str, Any]) -> None:
        info = NamespaceInfo.from_body(body)
        previous = self.namespaces.get(info.name)
        self.namespaces[info.name] = info
        if previous is None or previous.labels != info.labels:
            self.dirty_bundles.add(info.name)
            for name in self.wids_by_ns.get(info.name, ()):
                self._schedule(("wid", info.name, name))
            if previous is not None:  # which domains allow it may have changed: their counts
                self.dirty_status.update(("td", "", name) for name in self.domains)

    def forget_namespace(self, name: str) -> None:
        self.namespaces.pop(name, None)
        self.dirty_bundles.discard(name)
        self.bundle_conflicts.discard(name)
        self._bundle_retry.pop(name, None)

    def _seed_status(self, status_key: tuple[str, str, str], body: Mapping[str, Any]) -> None:
        """Before start, take the status an earlier process wrote as what was last written:
        a restart then rewrites only the statuses whose content changes (10,000 pods over 100
        identities rewrote every status)."""
        status = body.get("status")
        if not self.started and isinstance(status, Mapping):
            self.status.seed(status_key, status)

    def observe_trust_domain(self, body: Mapping[str, Any]) -> None:
        name = str((body.get("metadata") or {}).get("name"))
        self._seed_status(("td", "", name), body)
        previous = self.td_bodies.get(name)
        self.td_bodies[name] = body
        self._schedule(("td", name))
        self._reschedule_claims(previous)
        self._reschedule_claims(body)

    def forget_trust_domain(self, name: str) -> None:
        previous = self.td_bodies.pop(name, None)
        self._schedule(("td", name))
        self._reschedule_claims(previous)

    def observe_workload_identity(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        self._seed_status(("wid", *key), body)
        self.wid_bodies[key] = body
        uid = str(meta.get("uid") or "")
        if uid:
            self._keys_by_uid[uid] = ("wid", *key)
        try:
            self.wids[key] = WorkloadIdentitySpec.from_body(body)
            self.wids_by_ns[key[0]].add(key[1])
            self.wid_errors.pop(key, None)
        except SpecError as exc:
            # Keep the last valid spec: nothing already issued is lost to a bad edit.
            self.wid_errors[key] = exc
        self.dirty_bundles.add(key[0])
        self._schedule(("wid", *key))

    def forget_workload_identity(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        body = self.wid_bodies.pop(key, None)
        if body is not None:
            self._keys_by_uid.pop(str((body.get("metadata") or {}).get("uid") or ""), None)
        self.wid_errors.pop(key, None)
        self.dirty_bundles.add(namespace)
        self._schedule(("wid", namespace, name))

    def observe_pod(self, body: Mapping[str, Any]) -> None:
        info = PodInfo.from_body(body)
        key = (info.namespace, info.name)
        self._note_seen("pod", *key)
        previous = self.pods.get(key)
        if previous is not None and previous.identity and previous.identity != info.identity:
            self.pods_by_wid[(info.namespace, previous.identity)].discard(info.name)
        self.pods[key] = info
        self._keys_by_uid[info.uid] = ("pod", *key)
        if info.identity:
            self.pods_by_wid[(info.namespace, info.identity)].add(info.name)
        if previous is None or previous.labels != info.labels or info.deleting:
            self._schedule(("pod", *key))

    def forget_pod(self, body: Mapping[str, Any]) -> None:
        info = PodInfo.from_body(body)
        key = (info.namespace, info.name)
        known = self.pods.pop(key, None) or info
        self._keys_by_uid.pop(known.uid, None)
        self._seen.pop(("pod", *key), None)
        if known.identity:
            self.pods_by_wid[(known.namespace, known.identity)].discard(known.name)
            self.dirty_status.add(("wid", known.namespace, known.identity))
        self.scheduler.cancel(("pod", *key))
        self.failures.pop(("pod", *key), None)
        self.handover.forget(("pod", *key))
        self._written.discard(("pod", *key))
        self._create_conflicts.discard(("pod", *key))
        self.repairs.pop(("pod", *key), None)
        secret_name = self._admitted_secret.pop(known.uid, None) or known.secret_name
        if secret_name or known.identity:
            self._schedule(("gone", known.namespace, secret_name or "", known.uid))

    def observe_secret(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        namespace = str(meta.get("namespace"))
        is_state = namespace == self.config.operator_namespace
        key = (namespace, str(meta.get("name")))
        self._note_seen("secret", *key)
        previous = self.secrets.get(key)
        # While we write this Secret, compare with what we are writing: its echo can arrive
        # before the write's answer, and is neither parsed again nor taken for a change.
        reference = self._writing.get(key) or previous
        info = SecretInfo.from_body(body, parse_leaf=not is_state, previous=reference)
        self.secrets[key] = info
        if info.held and not is_state and (previous is None or not previous.held):
            self._schedule(("release", *key))
        if (
            reference is not None
            and reference.data_sha256 == info.data_sha256
            and reference.revoke_request == info.revoke_request
            and reference.meta_digest == info.meta_digest
        ):
            return  # the echo of our own write, or an edit that changes nothing we act on
        self._poke_secret_owner(info)
        if info.revoke_request is not None and not is_state:
            self._schedule(("refuse", *key))

    def forget_secret(self, namespace: str, name: str) -> None:
        info = self.secrets.pop((namespace, name), None)
        self._seen.pop(("secret", namespace, name), None)
        if info is not None:
            if (
                info.managed
                and info.facts is not None
                and namespace != self.config.operator_namespace
            ):
                # The garbage collector may remove a deleted pod's Secret before we hear of the
                # pod: keep what it held, so the pod's deletion still revokes that serial.
                self._departed[(namespace, name)] = info
                if len(self._departed) > DEPARTED_MAX:
                    del self._departed[next(iter(self._departed))]
            self._poke_secret_owner(info)

    def _poke_secret_owner(self, info: SecretInfo) -> None:
        if info.namespace == self.config.operator_namespace and info.name.startswith(
            CA_SECRET_PREFIX
        ):
            for name, runtime in self.domains.items():
                if ca_secret_name(name) == info.name:
                    self._schedule(("td", runtime.name))
            return
        for wid_name in self.wids_by_ns.get(info.namespace, ()):
            spec = self.wids[(info.namespace, wid_name)]
            if spec.mode is DeliveryMode.SHARED and spec.secret_name == info.name:
                self._schedule(("wid", info.namespace, wid_name))
        for pod_name in self.pods_by_wid.get((info.namespace, info.identity or ""), ()):
            pod = self.pods.get((info.namespace, pod_name))
            if pod is not None and pod.secret_name == info.name:
                self._schedule(("pod", info.namespace, pod_name))

    def observe_ledger(self, body: Mapping[str, Any]) -> None:
        """Ledgers are read once, from the initial listing; afterwards we are the only writer."""
        if self.started:
            return
        name = str((body.get("metadata") or {}).get("name"))
        namespace = name.removeprefix(LEDGER_PREFIX)
        try:
            self.ledger.load(namespace, str((body.get("binaryData") or {}).get(LEDGER_KEY) or ""))
        except (ValueError, zlib.error) as exc:
            log.warning("ledger %s is unreadable and is rebuilt from live Secrets: %s", name, exc)

    def observe_bundle(self, body: Mapping[str, Any]) -> None:
        info = BundleInfo.from_body(body)
        previous = self.bundles.get(info.namespace)
        self.bundles[info.namespace] = info
        if previous is None or previous.content_hash != info.content_hash:
            self.dirty_bundles.add(info.namespace)

    def forget_bundle(self, namespace: str) -> None:
        self.bundles.pop(namespace, None)
        self.dirty_bundles.add(namespace)

    # ------------------------------------------------------------------ dispatch

    async def _dispatch(self, key: Hashable) -> None:
        assert isinstance(key, tuple)
        kind = key[0]
        # A failure recorded by this very run (SecretFight, SecretConflict, InvalidTemplate,
        # NotSelected, ...) is the current state of that key and must reach the status; only
        # an older one is cleared by a run that records nothing.
        before = self.failures.get(key)
        try:
            if kind == "td":
                await self._reconcile_domain(key[1])
            elif kind == "wid":
                await self._reconcile_identity(key[1], key[2])
            elif kind == "pod":
                await self._reconcile_pod(key[1], key[2])
            elif kind == "gone":
                await self._revoke_orphan(key[1], key[2], key[3])
            elif kind == "release":
                await self._release(key[1], key[2])
            elif kind == "catchup":
                await self._catch_up()
            elif kind == "refuse":
                await self._refuse_targetless_revocation(key[1], key[2])
            if self.failures.get(key) is before:
                self.failures.pop(key, None)
        except ConflictError:
            self.scheduler.schedule(key, self.clock() + timedelta(seconds=0.2 + random.random()))  # noqa: S311
        except Exception as exc:
            failure = self.failures.get(key)
            attempts = failure.attempts + 1 if failure else 1
            self.failures[key] = Failure("ReconcileError", str(exc), attempts)
            self.metrics.errors.labels(reason="ReconcileError").inc()
            delay = min(RETRY_MAX, RETRY_BASE * (2 ** min(attempts, 10))) * (0.5 + random.random())  # noqa: S311
            log.warning("%s failed (attempt %d, retry in %.0fs): %s", key, attempts, delay, exc)
            self.scheduler.schedule(key, self.clock() + timedelta(seconds=delay))

    # ------------------------------------------------------------------ trust domains

    def _domain_ref(self, runtime: DomainRuntime) -> ObjectRef:
        return ObjectRef(API_VERSION, "TrustDomain", runtime.name, None, runtime.spec.uid)

    async def _reconcile_domain(self, name: str) -> None:
        body = self.td_bodies.get(name)
        status_key = ("td", "", name)
        if body is None:
            runtime = self.domains.pop(name, None)
            if runtime is not None:
                self.dirty_bundles.update(self.namespaces)
                self._reschedule_domain_identities(name)
            return
        try:
            spec = TrustDomainSpec.from_body(body)
        except SpecError as exc:
            runtime = self.domains.get(name)
            if runtime is None:
                self._invalid_domains.add(name)  # nothing to load: it must not block the rest
            self._set_condition(status_key, "Ready", False, exc.reason, exc.message)
            if runtime is None:
                self._set_condition(status_key, "CAReady", False, exc.reason, exc.message)
            self.dirty_status.add(status_key)
            await self._event(
                ObjectRef(
                    API_VERSION,
                    "TrustDomain",
                    name,
                    None,
                    str((body.get("metadata") or {}).get("uid")),
                ),
                "Warning",
                exc.reason,
                exc.message,
            )
            return
        self._invalid_domains.discard(name)
        runtime = self.domains.get(name)
        owner = self._trust_domain_owner(spec.trust_domain)
        if owner != name:
            await self._refuse_claim(name, owner, spec, runtime)
            return
        if runtime is None:
            runtime = DomainRuntime(spec=spec)
            self.domains[name] = runtime
        elif runtime.conflict is not None:
            runtime.conflict = None  # the older claim went away: this one owns the name now
            self._mark_domain_bundles(runtime)
            self._reschedule_domain_identities(name)
        previous_spec = runtime.spec
        runtime.spec = spec
        now = self.clock()
        anchors_before = {sha256_hex(c) for c in runtime.anchors(now)}
        active_before = runtime.active()
        if not runtime.loaded:
            await self._load_revocations(runtime)
        next_at: datetime | None = None
        try:
            if spec.ca_kind is CAKind.SELF_SIGNED:
                next_at = await self._converge_self_signed(runtime, body, now)
            elif spec.ca_kind is CAKind.SECRET_REF:
                next_at = await self._converge_secret_ref(runtime, now)
            else:
                runtime.external_anchors = tuple(
                    load_anchors(str(spec.external_bundle).encode(), now)
                )
                runtime.ca_ready, runtime.ca_reason = True, "AnchorsLoaded"
                runtime.ca_message = f"{len(runtime.external_anchors)} external anchor(s) loaded"
                soonest = min(
                    (c.not_valid_after_utc for c in runtime.external_anchors), default=None
                )
                next_at = soonest
        except PKIError as exc:
            runtime.ca_ready, runtime.ca_reason, runtime.ca_message = False, "CAInvalid", str(exc)
            self.metrics.errors.labels(reason="CAInvalid").inc()
            await self._event(self._domain_ref(runtime), "Warning", "CAInvalid", str(exc))
            next_at = now + SECRET_REF_POLL
        if runtime.authorities is not None and runtime.bound_revocations():
            self.dirty_revocations.add(name)  # entries an earlier version took at their word
            self._mark_domain_bundles(runtime)
        if not runtime.loaded and runtime.stored_revocations is not None:
            runtime.reuse_stored_crl(runtime.stored_revocations, now)
            runtime.stored_revocations = None
        first_load = not runtime.loaded
        runtime.loaded = True
        anchors_after = {sha256_hex(c) for c in runtime.anchors(now)}
        if anchors_after != anchors_before or previous_spec != spec:
            self._mark_domain_bundles(runtime)
            self._reschedule_domain_identities(name)
        active_after = runtime.active()
        if active_after is not None and (
            active_before is None or active_before.sha256 != active_after.sha256
        ):
            self._reschedule_domain_identities(name)
        if runtime.issues:
            crl_due = (runtime.crl_built_at or now) + timedelta(hours=12)
            next_at = min(x for x in (next_at, crl_due) if x is not None)
            if runtime.prune_revocations(now):
                self.dirty_revocations.add(name)
                self._mark_domain_bundles(runtime)
        self._publish_ca_metrics(runtime)
        if first_load:
            # A list that was already large when we started must say so now, not at the
            # next write (which may never come).
            await self._note_revocation_load(runtime)
        self.dirty_status.add(status_key)
        if next_at is not None:
            self._schedule(("td", name), max(next_at, now + timedelta(seconds=1)))

    def _trust_domain_owner(self, trust_domain: str) -> str | None:
        """A SPIFFE trust domain name has one owner: the oldest TrustDomain claiming it (then
        the first by name). Every later claim is refused, so an impostor's anchors never reach
        a bundle under that name."""
        claims = sorted(
            (str((body.get("metadata") or {}).get("creationTimestamp") or ""), name)
            for name, body in self.td_bodies.items()
            if str((body.get("spec") or {}).get("trustDomain", "")) == trust_domain
        )
        return claims[0][1] if claims else None

    def _reschedule_claims(self, body: Mapping[str, Any] | None) -> None:
        """Every TrustDomain claiming the same trust domain name as `body` looks again."""
        if body is None:
            return
        trust_domain = str((body.get("spec") or {}).get("trustDomain", ""))
        for name, other in self.td_bodies.items():
            if str((other.get("spec") or {}).get("trustDomain", "")) == trust_domain:
                self._schedule(("td", name))

    async def _refuse_claim(
        self,
        name: str,
        owner: str | None,
        spec: TrustDomainSpec,
        runtime: DomainRuntime | None,
    ) -> None:
        if runtime is None:
            runtime = self.domains[name] = DomainRuntime(spec=spec)
        newly = runtime.conflict != owner
        runtime.spec = spec
        runtime.conflict = owner or ""
        runtime.ca_ready, runtime.ca_reason = False, "TrustDomainConflict"
        runtime.ca_message = (
            f"TrustDomain {name}: spec.trustDomain {spec.trust_domain!r} is already owned by "
            f"TrustDomain {owner}, the older claim; this one is ignored: it issues nothing and "
            "none of its anchors reach any bundle. Choose another spec.trustDomain, or delete "
            "one of the two"
        )
        self.dirty_status.add(("td", "", name))
        if newly:
            self._mark_domain_bundles(runtime)
            self._reschedule_domain_identities(name)
            await self._event(
                self._domain_ref(runtime), "Warning", "TrustDomainConflict", runtime.ca_message
            )
            owner_runtime = self.domains.get(owner or "")
            if owner_runtime is not None:
                await self._event(
                    self._domain_ref(owner_runtime),
                    "Warning",
                    "TrustDomainConflict",
                    f"TrustDomain {name} also claims spec.trustDomain {spec.trust_domain!r}, "
                    f"which TrustDomain {owner} owns; the later claim is ignored",
                )

    def _make_authority(self, runtime: DomainRuntime) -> Callable[[datetime], Authority]:
        spec = runtime.spec

        def make(now: datetime) -> Authority:
            return create_self_signed_ca(
                spec.trust_domain, spec.key_algorithm, spec.ca_ttl, now=now
            )

        return make

    async def _converge_self_signed(
        self, runtime: DomainRuntime, body: Mapping[str, Any], now: datetime
    ) -> datetime | None:
        opns = self.config.operator_namespace
        secret_name = ca_secret_name(runtime.name)
        observed = self.secrets.get((opns, secret_name))
        if runtime.authorities is None:
            stored = await self.kube.get("Secret", opns, secret_name)
            if stored is not None:
                try:
                    runtime.authorities = decode_authorities(stored.get("data") or {}, now)
                    await self._load_orphan_anchors(runtime, stored)
                    handled = (stored.get("data") or {}).get("rotation-request")
                    runtime.rotation_handled = (
                        base64.b64decode(handled).decode() if handled else None
                    )
                except (PKIError, KeyError, ValueError) as exc:
                    await self._recover_lost_ca(
                        runtime, body, now, f"the CA Secret is corrupted ({exc})"
                    )
            else:
                await self._recover_lost_ca(runtime, body, now, "the CA Secret does not exist")
        elif observed is None or observed.data_sha256 != self._ca_data_sha(runtime):
            # The CA Secret was deleted or edited while we hold the authorities in memory:
            # restore it exactly; no new root, no trust gap.
            what = "deleted" if observed is None else "modified"
            await self._write_ca_secret(runtime)
            self.metrics.ca_recoveries.labels(
                trust_domain=runtime.trust_domain, outcome="restored"
            ).inc()
            await self._event(
                self._domain_ref(runtime),
                "Warning",
                "CASecretRestored",
                f"CA Secret {opns}/{secret_name} was {what}; restored it from memory (no new root was minted)",
            )
        assert runtime.authorities is not None
        await self._maybe_force_rotate(runtime, body, now)
        aset = runtime.authorities
        waiting_recovery = (
            aset.active_record is None
            and aset.prepared_record is not None
            and aset.prepared_record.planned_activation is not None
            and aset.prepared_record.planned_activation > now
        )
        transitions: list[rotation.Transition] = []
        if not waiting_recovery:
            prepared = aset.prepared_record
            activating = prepared is not None and now >= (
                prepared.planned_activation
                or (aset.active_record.successor_activate_at if aset.active_record else now)
            )
            if (
                activating
                and prepared is not None
                and not self._anchor_published(runtime, prepared.sha256)
            ):
                # Never let an authority sign before its anchor is in every entitled bundle.
                runtime.ca_reason = "WaitingForBundles"
                self._mark_domain_bundles(runtime)
                return now + timedelta(seconds=2)
            new_set, transitions = rotation.advance(aset, now, self._make_authority(runtime))
            if transitions:
                runtime.authorities = new_set
                await self._write_ca_secret(runtime)
                for transition in transitions:
                    await self._event(
                        self._domain_ref(runtime),
                        "Normal",
                        f"Authority{transition.kind.value.capitalize()}",
                        f"authority {transition.serial_hex}: {transition.reason}",
                    )
        active = runtime.active()
        if active is None:
            runtime.ca_ready = False
            runtime.ca_reason = "CARecovering"
            prepared_at = aset.prepared_record.planned_activation if aset.prepared_record else None
            runtime.ca_message = (
                "the CA key was lost; a new authority is published in the bundles and becomes "
                f"active at {to_rfc3339(prepared_at) if prepared_at else 'soon'}; existing "
                "certificates stay trusted until they expire"
            )
            return prepared_at
        runtime.ca_ready, runtime.ca_reason = True, "Active"
        runtime.ca_message = (
            f"active authority {active.serial_hex} valid until {to_rfc3339(active.not_after)}"
        )
        pending = rotation.pending_activation(runtime.authorities)
        if pending is not None and pending[0].planned_activation is not None:
            runtime.ca_message += (
                f"; authority {pending[0].serial_hex} activates at {to_rfc3339(pending[1])}: "
                f"{pending[2]}"
            )
        return rotation.next_event_at(runtime.authorities)

    async def _maybe_force_rotate(
        self, runtime: DomainRuntime, body: Mapping[str, Any], now: datetime
    ) -> None:
        """`trustwarden ca rotate` sets the rotate annotation to a new value: prepare a
        successor now, publish it, and activate it as reconcile/rotation_request.py plans
        (and only once every entitled bundle holds it); `compromised` activates at once."""
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        aset = runtime.authorities
        request = annotations.get(ROTATE_ANNOTATION)
        if (
            not request
            or request == runtime.rotation_handled
            or aset is None
            or aset.active_record is None
        ):
            return
        try:
            req = parse_request(
                runtime.name,
                annotations,
                now,
                propagation_delay=self.config.propagation_delay,
                floor=self.config.min_activate_after,
            )
        except RotationRequestError as exc:
            await self._event(
                self._domain_ref(runtime), "Warning", "InvalidRotationRequest", str(exc)
            )
            return
        assert req is not None
        old = aset.active_record
        runtime.authorities = rotation.force_rotate(
            aset,
            now,
            self._make_authority(runtime),
            req.activate_after,
            mode=req.mode,
            activation_reason=req.plan.reason,
        )
        runtime.rotation_handled = request
        await self._write_ca_secret(runtime)
        if req.mode is RotationMode.compromised:
            # Every certificate the old key signed goes on its CRL (only what the ledger
            # says trustwarden issued); the owners get new ones from the new authority now.
            for namespace, entry in list(self.ledger.all()):
                if entry.domain == runtime.name and entry.issuer_sha256 == old.sha256:
                    self._revoke_entry(namespace, entry, "cACompromise")
        self._mark_domain_bundles(runtime)
        self._reschedule_domain_identities(runtime.name)
        self.dirty_status.add(("td", "", runtime.name))
        new = runtime.authorities.prepared_record or runtime.authorities.active_record
        await self._event(
            self._domain_ref(runtime),
            "Normal",
            "RotationStarted",
            started_message(req, new.serial_hex if new else "?"),
        )
        if req.warning:
            await self._event(self._domain_ref(runtime), "Warning", "RotationRisk", req.warning)

    def _ca_data_sha(self, runtime: DomainRuntime) -> str:
        data = self._ca_secret_data(runtime)
        digest = hashlib.sha256()
        for key_name in sorted(data):
            digest.update(f"{key_name}\0{data[key_name]}\0".encode())
        return digest.hexdigest()

    def _ca_secret_data(self, runtime: DomainRuntime) -> dict[str, str]:
        assert runtime.authorities is not None
        data = encode_authorities(runtime.authorities)
        if runtime.rotation_handled:
            data["rotation-request"] = _b64(runtime.rotation_handled.encode())
        if runtime.orphan_anchors:
            data["orphans.pem"] = _b64(bundle_mod.anchors_to_pem(runtime.orphan_anchors).encode())
        return data

    async def _write_ca_secret(self, runtime: DomainRuntime) -> None:
        opns = self.config.operator_namespace
        name = ca_secret_name(runtime.name)
        written = await self._upsert_state(
            "Secret",
            name,
            role="ca",
            annotations={TRUST_DOMAIN_ANNOTATION: runtime.trust_domain},
            payload={"type": "Opaque", "data": self._ca_secret_data(runtime)},
            exists=(opns, name) in self.secrets,
        )
        self.secrets[(opns, name)] = SecretInfo.from_body(written, parse_leaf=False)

    async def _upsert_state(
        self,
        kind: str,
        name: str,
        *,
        role: str,
        annotations: dict[str, str],
        payload: dict[str, Any],
        exists: bool,
    ) -> Mapping[str, Any]:
        """Write one of our state objects in the operator namespace: create it, or replace
        it when it is known to exist (or a create finds it there)."""
        opns = self.config.operator_namespace
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": {
                "name": name,
                "namespace": opns,
                "labels": {MANAGED_BY: MANAGER, ROLE_LABEL: role},
                "annotations": annotations,
            },
            **payload,
        }
        return await self._create_or_replace(kind, opns, name, body, exists=exists)

    async def _create_or_replace(
        self, kind: str, namespace: str, name: str, body: Mapping[str, Any], *, exists: bool
    ) -> Mapping[str, Any]:
        if exists:
            return await self.kube.replace(kind, namespace, name, body)
        try:
            return await self.kube.create(kind, namespace, body)
        except ConflictError:
            return await self.kube.replace(kind, namespace, name, body)

    async def _load_orphan_anchors(self, runtime: DomainRuntime, stored: Mapping[str, Any]) -> None:
        raw = (stored.get("data") or {}).get("orphans.pem")
        if raw:
            try:
                runtime.orphan_anchors = tuple(
                    x509.load_pem_x509_certificates(base64.b64decode(raw))
                )
            except ValueError:
                runtime.orphan_anchors = ()

    async def _recover_lost_ca(
        self, runtime: DomainRuntime, body: Mapping[str, Any], now: datetime, why: str
    ) -> None:
        had_authorities = bool((body.get("status") or {}).get("authorities"))
        make = self._make_authority(runtime)
        if not had_authorities:
            runtime.authorities, _ = rotation.advance(rotation.AuthoritySet(()), now, make)
            await self._write_ca_secret(runtime)
            await self._event(
                self._domain_ref(runtime),
                "Normal",
                "CACreated",
                f"created self-signed authority {runtime.authorities.active_record.serial_hex if runtime.authorities.active_record else ''}",
            )
            return
        # The key is gone: the old anchors stay in the bundles (read back from a published
        # bundle) until they expire, and the new root is published before it signs anything.
        runtime.orphan_anchors = tuple(
            c for c in await self._published_anchors(runtime) if c.not_valid_after_utc > now
        )
        new_authority = make(now)
        runtime.authorities = rotation.AuthoritySet(
            (
                rotation.AuthorityRecord(
                    new_authority,
                    rotation.AuthorityState.Prepared,
                    prepared_at=now,
                    planned_activation=now + self.config.ca_recovery_grace,
                ),
            )
        )
        await self._write_ca_secret(runtime)
        self.metrics.ca_recoveries.labels(
            trust_domain=runtime.trust_domain, outcome="replaced"
        ).inc()
        self._mark_domain_bundles(runtime)
        await self._event(
            self._domain_ref(runtime),
            "Warning",
            "CASecretLost",
            f"{why} and no copy is held in memory: minted authority {new_authority.serial_hex}, "
            f"published it in the bundles and will activate it in {self.config.ca_recovery_grace}; "
            f"{len(runtime.orphan_anchors)} previous anchor(s) stay trusted until they expire",
        )

    async def _published_anchors(self, runtime: DomainRuntime) -> list[x509.Certificate]:
        for namespace in list(self.bundles):
            cm = await self.kube.get("ConfigMap", namespace, BUNDLE_CONFIGMAP)
            pem = ((cm or {}).get("data") or {}).get(f"{runtime.trust_domain}.pem")
            if pem:
                try:
                    return list(x509.load_pem_x509_certificates(pem.encode()))
                except ValueError:
                    continue
        return []

    async def _converge_secret_ref(self, runtime: DomainRuntime, now: datetime) -> datetime:
        opns = self.config.operator_namespace
        assert runtime.spec.secret_name is not None
        where = f"Secret {opns}/{runtime.spec.secret_name} (spec.ca.secretRef of TrustDomain {runtime.name})"
        if runtime.authorities is None:
            stored = await self.kube.get("Secret", opns, ca_secret_name(runtime.name))
            if stored is not None:
                try:
                    runtime.authorities = decode_authorities(stored.get("data") or {}, now)
                except (PKIError, KeyError, ValueError):
                    runtime.authorities = None
        source = await self.kube.get("Secret", opns, runtime.spec.secret_name)
        if source is None:
            raise _CAError(f"{where} does not exist; create it with tls.crt, tls.key and ca.crt")
        data = source.get("data") or {}
        try:
            chain = base64.b64decode(data.get("tls.crt", ""))
            key = base64.b64decode(data.get("tls.key", ""))
            root = base64.b64decode(data["ca.crt"]) if data.get("ca.crt") else None
        except ValueError as exc:
            raise _CAError(f"{where}: data is not valid base64") from exc
        authority = load_authority_from_pem(chain, key, root, now, source=where)
        aset = runtime.authorities or rotation.AuthoritySet(())
        changed = False
        next_at = now + SECRET_REF_POLL
        active = aset.active_record
        if active is None:
            # The first CA of this domain: nothing was signed or published before it.
            aset = rotation.AuthoritySet(
                (
                    *aset.records,
                    rotation.AuthorityRecord(
                        authority, rotation.AuthorityState.Active, activated_at=now
                    ),
                )
            )
            changed = True
        elif active.sha256 != authority.sha256:
            # A new CA in the Secret: publish its root first, sign with it only once every
            # entitled bundle holds it; the old one stays until its leaves expire.
            prepared = aset.prepared_record
            if prepared is None or prepared.sha256 != authority.sha256:
                records = [
                    r for r in aset.records if r.state is not rotation.AuthorityState.Prepared
                ]
                records.append(
                    rotation.AuthorityRecord(
                        authority, rotation.AuthorityState.Prepared, prepared_at=now
                    )
                )
                aset, changed = rotation.AuthoritySet(tuple(records)), True
                runtime.authorities = aset
                self._mark_domain_bundles(runtime)
                await self._event(
                    self._domain_ref(runtime),
                    "Normal",
                    "AuthorityPrepared",
                    f"{where} holds a new CA {authority.serial_hex}; publishing its root before it signs",
                )
            runtime.authorities = aset
            if self._anchor_published(runtime, authority.sha256):
                records = []
                for record in aset.records:
                    if record.state is rotation.AuthorityState.Active:
                        record = replace(
                            record, state=rotation.AuthorityState.Retired, retired_at=now
                        )
                    elif record.sha256 == authority.sha256:
                        record = replace(
                            record, state=rotation.AuthorityState.Active, activated_at=now
                        )
                    records.append(record)
                aset, changed = rotation.AuthoritySet(tuple(records)), True
                await self._event(
                    self._domain_ref(runtime),
                    "Normal",
                    "AuthorityActivated",
                    f"CA {authority.serial_hex} from {where} is in every bundle and now signs; "
                    "the previous one stays in bundles until its leaves expire",
                )
            else:
                next_at = now + timedelta(seconds=2)
        kept = tuple(
            r
            for r in aset.records
            if r.state is not rotation.AuthorityState.Retired or now < r.drop_at
        )
        if len(kept) != len(aset.records):
            aset, changed = rotation.AuthoritySet(kept), True
        runtime.authorities = aset
        if changed or (opns, ca_secret_name(runtime.name)) not in self.secrets:
            await self._write_ca_secret(runtime)
        current = aset.active_authority
        assert current is not None
        runtime.ca_ready, runtime.ca_reason = True, "Active"
        runtime.ca_message = (
            f"loaded {where}: CA {current.serial_hex} valid until {to_rfc3339(current.not_after)}"
        )
        return next_at

    def _anchor_published(self, runtime: DomainRuntime, sha: str) -> bool:
        """True when every namespace entitled to the domain holds a bundle with `sha`."""
        if not all(gate(runtime, sha) for gate in self.anchor_gates):
            return False
        for namespace in self.namespaces:
            domains = self._entitled_domains(namespace)
            if runtime not in domains:
                continue
            if namespace in self.dirty_bundles:
                return False
            desired = self._desired_bundle(namespace, domains)
            observed = self.bundles.get(namespace)
            if observed is None or observed.content_hash != desired.content_hash:
                return False
            if sha not in self._bundle_shas(desired):
                return False
        return True

    @staticmethod
    def _bundle_shas(bundle: bundle_mod.NamespaceBundle) -> set[str]:
        pem = bundle.data.get("ca.crt", "")
        if not pem:
            return set()
        return {sha256_hex(c) for c in x509.load_pem_x509_certificates(pem.encode())}

    async def _load_revocations(self, runtime: DomainRuntime) -> None:
        cm = await self.kube.get(
            "ConfigMap", self.config.operator_namespace, revocations_name(runtime.name)
        )
        if cm is not None:
            runtime.load_revocations(((cm.get("data") or {}).get("revoked.json")) or "[]")
            runtime.revocations_exist = True
            runtime.stored_revocations = dict(cm.get("data") or {})

    def _publish_ca_metrics(self, runtime: DomainRuntime) -> None:
        if runtime.authorities is None:
            return
        current = {
            (runtime.trust_domain, r.serial_hex, r.state.value): r.authority.not_after.timestamp()
            for r in runtime.authorities.records
        }
        # Drop series of authorities that changed state or were dropped, so no stale
        # Prepared/Active series lingers next to the current one.
        for labels in self._ca_series.get(runtime.name, set()) - set(current):
            with contextlib.suppress(KeyError):
                self.metrics.ca_not_after.remove(*labels)
        for labels, value in current.items():
            self.metrics.ca_not_after.labels(*labels).set(value)
        self._ca_series[runtime.name] = set(current)

    def _reschedule_domain_identities(self, domain_name: str) -> None:
        for (ns, name), spec in self.wids.items():
            if spec.trust_domain_ref == domain_name or domain_name in spec.federates_with:
                self._schedule(("wid", ns, name))

    def _mark_domain_bundles(self, runtime: DomainRuntime) -> None:
        for namespace in self.namespaces:
            if runtime in self._entitled_domains(namespace) or namespace in self.bundles:
                self.dirty_bundles.add(namespace)

    # ------------------------------------------------------------------ entitlement and bundles

    def _allowed(self, runtime: DomainRuntime, namespace: str) -> bool:
        info = self.namespaces.get(namespace)
        labels = info.labels if info is not None else {}
        return runtime.spec.allowed_namespaces.matches(labels)

    def _entitled_domains(self, namespace: str) -> list[DomainRuntime]:
        """The domains whose anchors `namespace` may hold: its identities' domains (when the
        domain's policy allows the namespace), their federatesWith (same check), and domains
        whose bundle.namespaceSelector selects it. Never anything else."""
        scope = self.config.watch_namespaces
        if scope is not None and namespace not in scope:
            return []
        chosen: dict[str, DomainRuntime] = {}
        for name in self.wids_by_ns.get(namespace, ()):
            spec = self.wids[(namespace, name)]
            own = self.domains.get(spec.trust_domain_ref)
            if own is None or not self._allowed(own, namespace):
                continue
            chosen[own.name] = own
            for other in spec.federates_with:
                federated = self.domains.get(other)
                if federated is not None and self._allowed(federated, namespace):
                    chosen[federated.name] = federated
        info = self.namespaces.get(namespace)
        labels = info.labels if info is not None else {}
        for runtime in self.domains.values():
            selector = runtime.spec.bundle_namespaces
            if selector is not None and selector.matches(labels):
                chosen[runtime.name] = runtime
        # A refused claim of a trust domain name publishes nothing, anywhere.
        return sorted((r for r in chosen.values() if r.conflict is None), key=lambda r: r.name)

    def _desired_bundle(
        self, namespace: str, domains: Iterable[DomainRuntime]
    ) -> bundle_mod.NamespaceBundle:
        now = self.clock()
        anchors: dict[str, list[x509.Certificate]] = {}
        crls: dict[str, bytes] = {}
        sequence = 0
        for runtime in domains:
            certs = runtime.anchors(now)
            if not certs:
                continue
            anchors.setdefault(runtime.trust_domain, []).extend(certs)
            sequence = max(sequence, *(int(c.not_valid_before_utc.timestamp()) for c in certs))
            if runtime.issues:
                crl = runtime.crl(now)
                if crl:
                    crls[runtime.trust_domain] = crl
        return bundle_mod.build_namespace_bundle(anchors, crls, now, sequence)

    async def _sync_bundle(self, namespace: str) -> None:
        info = self.namespaces.get(namespace)
        observed = self.bundles.get(namespace)
        if info is None or info.terminating:
            return
        domains = [d for d in self._entitled_domains(namespace) if d.anchors(self.clock())]
        if observed is not None and not observed.managed:
            if namespace not in self.bundle_conflicts:
                # Seen by the watch before we ever wrote: say so once, as when a create finds it.
                await self._bundle_conflict(namespace, domains)
            return
        self.bundle_conflicts.discard(namespace)
        if not domains:
            if observed is not None:
                await self.kube.delete("ConfigMap", namespace, BUNDLE_CONFIGMAP, uid=observed.uid)
                self.bundles.pop(namespace, None)
                self.metrics.bundle_writes.labels(operation="delete").inc()
            return
        desired = self._desired_bundle(namespace, domains)
        if observed is not None and observed.content_hash == desired.content_hash:
            return
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": BUNDLE_CONFIGMAP,
                "namespace": namespace,
                "labels": {MANAGED_BY: MANAGER},
                "annotations": {CONTENT_HASH_ANNOTATION: desired.content_hash},
            },
            "data": desired.data,
        }
        if observed is None:
            try:
                written = await self.kube.create("ConfigMap", namespace, body)
            except ConflictError:
                # Not in our (label-filtered) cache: someone else's ConfigMap holds the name.
                # Leave it untouched, report it, and look again later.
                existing = await self.kube.get("ConfigMap", namespace, BUNDLE_CONFIGMAP)
                if existing is not None and not BundleInfo.from_body(existing).managed:
                    await self._bundle_conflict(namespace, domains)
                    return
                written = await self.kube.replace("ConfigMap", namespace, BUNDLE_CONFIGMAP, body)
        else:
            written = await self.kube.replace("ConfigMap", namespace, BUNDLE_CONFIGMAP, body)
        self._bundle_retry.pop(namespace, None)
        operation = "update" if observed is not None else "create"
        self.bundles[namespace] = BundleInfo.from_body(written)
        self.metrics.bundle_writes.labels(operation=operation).inc()

    async def _bundle_conflict(self, namespace: str, domains: Iterable[DomainRuntime]) -> None:
        self.bundle_conflicts.add(namespace)
        self._bundle_retry[namespace] = self.clock() + BUNDLE_CONFLICT_RETRY
        for runtime in domains:
            self.dirty_status.add(("td", "", runtime.name))
            await self._event(
                self._domain_ref(runtime),
                "Warning",
                "BundleConflict",
                f"ConfigMap {namespace}/{BUNDLE_CONFIGMAP} exists and was not created by "
                "trustwarden; it is left untouched and this namespace gets no trust bundle "
                "until it is deleted or renamed",
            )

    # ------------------------------------------------------------------ identities

    def _wid_ref(self, spec: WorkloadIdentitySpec) -> ObjectRef:
        return ObjectRef(API_VERSION, "WorkloadIdentity", spec.name, spec.namespace, spec.uid)

    def _identity_problem(self, spec: WorkloadIdentitySpec) -> tuple[str, str] | DomainRuntime:
        """Rules that need other objects; returns (reason, message) or the usable domain."""
        runtime = self.domains.get(spec.trust_domain_ref)
        if runtime is None:
            return (
                "TrustDomainNotFound",
                f"{spec.where}: spec.trustDomain names TrustDomain {spec.trust_domain_ref!r}, which does not exist; create it or fix the name",
            )
        if runtime.conflict is not None:
            return (
                "TrustDomainConflict",
                f"{spec.where}: spec.trustDomain names TrustDomain {runtime.name}, which is "
                f"refused: {runtime.ca_message}",
            )
        if not runtime.issues:
            return (
                "TrustDomainCannotIssue",
                f"{spec.where}: TrustDomain {runtime.name} is external (anchors only) and cannot issue; use a selfSigned or secretRef domain",
            )
        if not self._allowed(runtime, spec.namespace):
            return (
                "NamespaceNotAllowed",
                f"{spec.where}: TrustDomain {runtime.name} spec.policy.allowedNamespaces does not select namespace {spec.namespace}; label the namespace or change the policy",
            )
        for other in spec.federates_with:
            federated = self.domains.get(other)
            if federated is None:
                return (
                    "FederationNotFound",
                    f"{spec.where}: spec.federatesWith names TrustDomain {other!r}, which does not exist",
                )
            if federated.conflict is not None:
                return (
                    "TrustDomainConflict",
                    f"{spec.where}: spec.federatesWith names TrustDomain {other}, which is "
                    f"refused: {federated.ca_message}",
                )
            if not self._allowed(federated, spec.namespace):
                return (
                    "FederationNotAllowed",
                    f"{spec.where}: spec.federatesWith names TrustDomain {other}, whose spec.policy.allowedNamespaces does not select namespace {spec.namespace}",
                )
        active = runtime.active()
        if active is None:
            return (
                "TrustDomainNotReady",
                f"TrustDomain {runtime.name} has no active authority yet: {runtime.ca_message}",
            )
        dns_problem = self._static_dns_problem(spec, runtime)
        if dns_problem is not None:
            return dns_problem
        cap = ttl_cap(runtime.spec.max_ttl, active.lifetime)
        if spec.ttl > cap:
            return (
                "TTLAboveCap",
                f"{spec.where}: spec.ttl {format_duration(spec.ttl)} is above the cap of "
                f"TrustDomain {runtime.name} ({format_duration(cap)} = min(policy.maxTTL, CA "
                "lifetime / 6)); lower spec.ttl",
            )
        return runtime

    async def _reconcile_identity(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        status_key = ("wid", namespace, name)
        spec = self.wids.get(key)
        if key not in self.wid_bodies:
            # Deleted: revoke everything it issued.
            self.wids.pop(key, None)
            self.wids_by_ns[namespace].discard(name)
            self.wid_problems.pop(key, None)
            self._written.discard(status_key)
            self.repairs.pop(status_key, None)
            await self._revoke_identity_secrets(namespace, name, spec)
            self.dirty_bundles.add(namespace)
            self.status.forget(status_key)
            return
        self.dirty_status.add(status_key)
        error = self.wid_errors.get(key)
        if error is not None:
            self.wid_problems[key] = (error.reason, error.message)
            body = self.wid_bodies[key]
            meta = body.get("metadata") or {}
            await self._event(
                ObjectRef(API_VERSION, "WorkloadIdentity", name, namespace, str(meta.get("uid"))),
                "Warning",
                error.reason,
                error.message + ("; the last valid spec stays in force" if spec else ""),
            )
            return
        assert spec is not None
        problem = self._identity_problem(spec)
        if isinstance(problem, tuple):
            self.wid_problems[key] = problem
            await self._event(self._wid_ref(spec), "Warning", *problem)
            if spec.mode is DeliveryMode.SHARED and spec.secret_name:
                await self._revoke_without_replacement(spec, spec.secret_name, spec.uid)
            else:
                for pod_name in list(self.pods_by_wid.get(key, ())):
                    self._schedule(("pod", namespace, pod_name))
            return
        self.wid_problems.pop(key, None)
        if spec.mode is DeliveryMode.SHARED:
            assert spec.secret_name is not None
            context = TemplateContext(
                namespace=namespace,
                name=name,
                service_account=spec.service_account,
                trust_domain=problem.trust_domain,
                pod_name=None,
                pod_uid=None,
                pod_labels=None,
            )
            target = LeafTarget(
                key=("wid", namespace, name),
                namespace=namespace,
                secret_name=spec.secret_name,
                owner=self._wid_ref(spec),
                wid=spec,
                domain=problem,
                context=context,
                jitter_key=f"{spec.uid}/{spec.secret_name}",
            )
            await self._converge_leaf(target, per_pod=False)
        else:
            for pod_name in list(self.pods_by_wid.get(key, ())):
                self._schedule(("pod", namespace, pod_name))

    async def _reconcile_pod(self, namespace: str, name: str) -> None:
        pod = self.pods.get((namespace, name))
        if pod is None or pod.deleting:
            # A terminating pod still drains connections with its certificate: it keeps it
            # until the pod is gone (forget_pod schedules the revocation then).
            return
        ns_info = self.namespaces.get(namespace)
        if ns_info is None or not ns_info.injection_enabled or not pod.identity:
            return  # not opted in: never touched
        key = ("pod", namespace, name)
        if not self._admitted(pod):
            await self._refuse_unadmitted(pod, key)
            return
        assert pod.secret_name is not None
        self._admitted_secret[pod.uid] = pod.secret_name
        spec = self.wids.get((namespace, pod.identity))
        if spec is None or spec.mode is not DeliveryMode.PER_POD:
            self.failures[key] = Failure(
                "IdentityNotFound",
                f"pod {namespace}/{name} names WorkloadIdentity {pod.identity}, which is not a PerPod identity",
            )
            return
        if spec.pod_selector is None or not spec.pod_selector.matches(pod.labels):
            self.failures[key] = Failure(
                "NotSelected", f"{spec.where}: spec.podSelector no longer selects pod {name}"
            )
            return
        problem = self._identity_problem(spec)
        if isinstance(problem, tuple):
            self.failures[key] = Failure(*problem)
            self.dirty_status.add(("wid", namespace, spec.name))
            await self._revoke_without_replacement(spec, pod.secret_name, pod.uid)
            return
        context = TemplateContext(
            namespace=namespace,
            name=spec.name,
            service_account=pod.service_account,
            trust_domain=problem.trust_domain,
            pod_name=pod.name,
            pod_uid=pod.uid,
            pod_labels=pod.labels,
        )
        target = LeafTarget(
            key=key,
            namespace=namespace,
            secret_name=pod.secret_name,
            owner=ObjectRef("v1", "Pod", pod.name, namespace, pod.uid),
            wid=spec,
            domain=problem,
            context=context,
            jitter_key=pod.uid,
        )
        await self._converge_leaf(target, per_pod=True)
        self.dirty_status.add(("wid", namespace, spec.name))

    async def _revoke_without_replacement(
        self, spec: WorkloadIdentitySpec, secret_name: str, owner_uid: str
    ) -> None:
        """`trustwarden revoke` must work even while an identity cannot be issued (e.g. its
        namespace left the domain's allowedNamespaces): revoke what trustwarden issued into
        the Secret; no replacement can be issued until the problem is fixed."""
        observed = self.secrets.get((spec.namespace, secret_name))
        if observed is None or observed.revoke_request is None or observed.facts is None:
            return
        if self._revoke_current(observed, owner_uid, "Emergency") is not None:
            await self._event(
                self._wid_ref(spec),
                "Warning",
                "Revoked",
                f"serial {observed.facts.serial_hex} in Secret {spec.namespace}/{secret_name} "
                f"revoked on request: {observed.revoke_request[:256]}; no replacement is issued "
                "until the identity's problem is fixed",
            )

    def _admitted(self, pod: PodInfo) -> bool:
        """Whether trustwarden's webhook admitted this pod with the Secret it names: the
        admission tag verifies for (namespace, identity, Secret). A pod admitted before tags
        existed passes only if trustwarden already issued into that Secret for this very pod
        (its ledger says so); labels, annotations and volumes alone never choose anything."""
        if pod.secret_name is None or pod.identity is None:
            return False
        if pod.admission_tag is not None:
            return self.config.admission_key.verify(
                pod.admission_tag, pod.namespace, pod.identity, pod.secret_name
            )
        observed = self.secrets.get((pod.namespace, pod.secret_name))
        return (
            observed is not None
            and observed.owned_by(pod.uid)
            and bool(self.ledger.owned_by(pod.namespace, pod.uid))
        )

    async def _refuse_unadmitted(self, pod: PodInfo, key: Hashable) -> None:
        why = (
            "its trustwarden-svid volume does not mount the Secret the webhook named"
            if pod.volume_mismatch
            else "it carries no valid admission tag (created before the namespace opted in, "
            "or labelled by hand)"
        )
        message = (
            f"pod {pod.namespace}/{pod.name} was not admitted by trustwarden's injection "
            f"webhook: {why}; it gets no certificate. Recreate it (e.g. kubectl rollout "
            "restart) so the webhook injects its identity"
        )
        self.failures[key] = Failure("NotAdmitted", message)
        self.dirty_status.add(("wid", pod.namespace, pod.identity or ""))
        await self._event(
            ObjectRef("v1", "Pod", pod.name, pod.namespace, pod.uid),
            "Warning",
            "NotAdmitted",
            message,
        )
        spec = self.wids.get((pod.namespace, pod.identity or ""))
        if spec is not None:  # and where the identity's owner looks
            await self._event(self._wid_ref(spec), "Warning", "NotAdmitted", message)

    def _desired_leaf(self, target: LeafTarget) -> DesiredLeaf:
        spec = target.wid
        path = render_spiffe_path(spec.spiffe_template, target.context)
        dns = (
            tuple(render_dns_names(spec.dns_templates, target.context))
            if spec.dns_templates
            else ()
        )
        if dns:
            self._check_dns(spec, target.domain, dns)
        active = target.domain.active()
        assert active is not None
        return DesiredLeaf(
            spiffe_id=SpiffeID(target.domain.trust_domain, path),
            dns_names=dns,
            ttl=min(spec.ttl, ttl_cap(target.domain.spec.max_ttl, active.lifetime)),
            key_algorithm=spec.key_algorithm,
            usages=spec.usages,
            renew_at=spec.renew_at,
        )

    def _check_dns(
        self, spec: WorkloadIdentitySpec, runtime: DomainRuntime, names: Iterable[str]
    ) -> None:
        info = self.namespaces.get(spec.namespace)
        check_dns_names(
            names,
            namespace=spec.namespace,
            labels=info.labels if info is not None else {},
            grants=runtime.spec.allowed_dns_names,
            cluster_domain=self.config.cluster_domain,
            where=spec.where,
            domain=runtime.name,
        )

    def _static_dns_problem(
        self, spec: WorkloadIdentitySpec, runtime: DomainRuntime
    ) -> tuple[str, str] | None:
        """DNS names that do not depend on a pod are judged once per identity, so a refused
        name shows on the WorkloadIdentity before any pod exists."""
        pod_free = {"namespace", "name", "trustDomain"}
        static = []
        for template in spec.dns_templates:
            try:
                if template_variables(template) <= pod_free:
                    static.append(template)
            except PKIError:
                continue  # reported as InvalidTemplate when rendered
        if not static:
            return None
        context = TemplateContext(
            namespace=spec.namespace,
            name=spec.name,
            service_account=spec.service_account,
            trust_domain=runtime.trust_domain,
            pod_name=None,
            pod_uid=None,
            pod_labels=None,
        )
        try:
            self._check_dns(spec, runtime, render_dns_names(static, context))
        except DNSNameNotAllowed as exc:
            return exc.reason, exc.message
        except PKIError:
            return None
        return None

    def _ca_pem_for(self, spec: WorkloadIdentitySpec, runtime: DomainRuntime) -> bytes:
        """The anchors a workload's ca.crt holds: its domain's plus its federatesWith. Cached
        per set of domains and their anchors, since every issuance asks for it."""
        now = self.clock()
        domains = [runtime] + [
            d for n in spec.federates_with if (d := self.domains.get(n)) is not None
        ]
        certs = tuple(c for d in domains for c in d.anchors(now))
        key = tuple(d.name for d in domains)
        cached = self._ca_pem_cache.get(key)
        # The domains hand out the same certificate objects until their anchors change, so
        # this tuple comparison is settled by identity (no DER compared) on every hit.
        if cached is None or cached[0] != certs:
            if len(self._ca_pem_cache) > 256:
                self._ca_pem_cache.clear()
            pem = bundle_mod.anchors_to_pem(bundle_mod.filter_anchors(certs, now)).encode()
            cached = self._ca_pem_cache[key] = (certs, pem)
        return cached[1]

    async def _converge_leaf(self, target: LeafTarget, *, per_pod: bool) -> None:
        now = self.clock()
        try:
            desired = self._desired_leaf(target)
        except DNSNameNotAllowed as exc:
            self.failures[target.key] = Failure(exc.reason, exc.message)
            if not per_pod:
                self.wid_problems[(target.wid.namespace, target.wid.name)] = (
                    exc.reason,
                    exc.message,
                )
            await self._event(self._wid_ref(target.wid), "Warning", exc.reason, exc.message)
            return
        except PKIError as exc:
            reason = "InvalidTemplate"
            self.failures[target.key] = Failure(reason, f"{target.wid.where}: {exc}")
            if not per_pod:
                self.wid_problems[(target.wid.namespace, target.wid.name)] = (reason, str(exc))
            await self._event(self._wid_ref(target.wid), "Warning", reason, str(exc))
            return
        observed = self.secrets.get((target.namespace, target.secret_name))
        if observed is not None and not observed.owned_by(target.owner.uid):
            self._report_conflict(target, per_pod=per_pod)
            await self._conflict_event(target, per_pod=per_pod)
            return
        if not per_pod:
            problem = self.wid_problems.get((target.wid.namespace, target.wid.name))
            if problem is not None and problem[0] == "SecretConflict":
                self.wid_problems.pop((target.wid.namespace, target.wid.name), None)
        if observed is not None and observed.deleting:
            self._schedule(target.key, now + timedelta(seconds=1))
            return
        facts: LeafFacts | None = observed.facts if observed is not None else None
        if observed is not None and observed.revoke_request is not None:
            # Emergency revocation requested (trustwarden revoke): the serial goes into the CRL
            # now, and the workload gets a fresh key and certificate in the same Secret.
            reason = observed.revoke_request[:256] or "requested"
            over = emergency_quota(
                target.domain.revocations.values(), target.namespace, target.domain.name
            )
            if over is not None and facts is not None:
                await self._event(
                    self._wid_ref(target.wid),
                    "Warning",
                    "RevocationQuotaExceeded",
                    over.message(
                        f"{target.namespace}/{target.secret_name}",
                        facts.serial_hex,
                        facts.not_after,
                    ),
                )
            elif self._revoke_current(observed, target.owner.uid, "Emergency") is not None:
                await self._event(
                    self._wid_ref(target.wid),
                    "Warning",
                    "Revoked",
                    f"serial {facts.serial_hex if facts else '?'} in Secret {target.namespace}/"
                    f"{target.secret_name} revoked on request: {reason}; issuing a replacement",
                )
            else:
                # Whatever the Secret holds now was not issued by trustwarden to this owner (an
                # edited or foreign certificate): it is never revoked on anyone's behalf.
                await self._event(
                    self._wid_ref(target.wid),
                    "Warning",
                    "RevocationRefused",
                    f"Secret {target.namespace}/{target.secret_name} asks for revocation, but "
                    f"the certificate it holds (serial {facts.serial_hex if facts else 'none'}) "
                    f"is not one trustwarden issued to {target.owner.kind} {target.owner.name}; "
                    "nothing was revoked. Issuing a replacement",
                )
            decision = RenewalDecision(
                RenewalAction.renew, RenewalReason.Tampered, f"revoked: {reason}", now
            )
            ca_pem = self._ca_pem_for(target.wid, target.domain)
            await self._issue(target, desired, decision, observed, ca_pem, per_pod=per_pod)
            return
        if observed is not None and facts is None:
            decision = RenewalDecision(
                RenewalAction.renew,
                RenewalReason.Tampered,
                observed.facts_error or "unreadable",
                now,
            )
        else:
            decision = self._decide(
                target,
                desired,
                facts,
                now,
                expected_sha256=observed.recorded_sha256 if observed is not None else None,
            )
        if decision.reason is RenewalReason.IssuerNotActive and facts is not None:
            point = renew_point(
                facts,
                desired.renew_at,
                target.jitter_key,
                self.config.max_jitter_fraction,
                backdate=desired.backdate,
            )
            later = self.handover.defer(target.key, target.domain.authorities, facts, point, now)
            if later is not None:  # a scheduled hand-over, or an emergency one's paced slot
                self._schedule(target.key, later)
                return
        ca_pem = self._ca_pem_for(target.wid, target.domain)
        if decision.action is RenewalAction.wait:
            assert observed is not None
            if observed.ca_sha256 != hashlib.sha256(ca_pem).hexdigest():
                await self._refresh_ca(target, ca_pem)
            else:
                await self._restore_metadata(target, observed, desired, now)
            self._schedule(target.key, decision.at)
            return
        # A repair: our Secret was edited, or deleted after we wrote it. If something keeps
        # doing that (another controller, a GitOps prune), back off instead of a tight loop.
        edited = observed is not None and decision.reason in (
            RenewalReason.Tampered,
            RenewalReason.KeyMismatch,
        )
        recreating = observed is None and (
            target.key in self._written or (target.namespace, target.secret_name) in self._departed
        )
        if recreating and per_pod and not await self._pod_alive(target):
            # The Secret went because its pod did (garbage collection), and the pod's own
            # deletion has not reached us yet: issue nothing for a pod that is gone.
            self.forget_pod(
                {"metadata": {"namespace": target.namespace, "name": target.owner.name}}
            )
            return
        if edited or recreating:
            delay = self._repair_backoff(target.key, now)
            if delay is not None:
                self.failures[target.key] = Failure(
                    "SecretFight",
                    f"Secret {target.namespace}/{target.secret_name} keeps being "
                    f"{'changed' if edited else 'deleted'} by something else; "
                    f"repairing again in {delay:.0f}s",
                )
                self.metrics.errors.labels(reason="SecretFight").inc()
                await self._event(
                    self._wid_ref(target.wid),
                    "Warning",
                    "SecretFight",
                    self.failures[target.key].message,
                )
                self._schedule(target.key, now + timedelta(seconds=delay))
                return
        await self._issue(target, desired, decision, observed, ca_pem, per_pod=per_pod)

    async def _pod_alive(self, target: LeafTarget) -> bool:
        return await self._pod_lives(target.namespace, target.owner.name, target.owner.uid)

    async def _pod_lives(
        self, namespace: str, name: str, uid: str, *, terminating_lives: bool = False
    ) -> bool:
        """Asked of the API server, not the cache: the pod watch may lag behind the garbage
        collector, and a wrong "alive" would let a serial go unrevoked. A terminating pod
        counts as alive only with `terminating_lives` (it is never issued a new Secret)."""
        try:
            body = await self.kube.get("Pod", namespace, name)
        except ValueError:  # a port that cannot read pods: assume it lives
            return True
        if body is None:
            return False
        meta = body.get("metadata") or {}
        return meta.get("uid") == uid and (terminating_lives or not meta.get("deletionTimestamp"))

    def _report_conflict(self, target: LeafTarget, *, per_pod: bool) -> None:
        message = (
            f"Secret {target.namespace}/{target.secret_name} exists and was not created by "
            f"trustwarden for {target.owner.kind} {target.owner.name}; it is left untouched. "
            "Choose another secretName or delete that Secret"
        )
        self.failures[target.key] = Failure("SecretConflict", message)
        if not per_pod:
            self.wid_problems[(target.wid.namespace, target.wid.name)] = ("SecretConflict", message)
        self.dirty_status.add(("wid", target.wid.namespace, target.wid.name))

    async def _conflict_event(self, target: LeafTarget, *, per_pod: bool) -> None:
        failure = self.failures[target.key]
        await self._event(self._wid_ref(target.wid), "Warning", "SecretConflict", failure.message)

    def _repair_backoff(self, key: Hashable, now: datetime) -> float | None:
        """None: repair now (and count it). Otherwise the seconds to wait: the first
        REPAIRS_BEFORE_BACKOFF repairs in REPAIR_WINDOW are immediate, then each waits twice
        as long as the one before. Changes seen while waiting do not extend the wait, and
        when it is over the repair happens."""
        history = self.repairs[key]
        if history.not_before is not None and now < history.not_before:
            return max(1.0, (history.not_before - now).total_seconds())
        history.times = [t for t in history.times if now - t < REPAIR_WINDOW]
        excess = len(history.times) + 1 - REPAIRS_BEFORE_BACKOFF
        if excess <= 0 or history.not_before is not None:
            history.not_before = None
            history.times.append(now)
            return None
        delay = float(min(RETRY_MAX, 5 * 2**excess))
        history.not_before = now + timedelta(seconds=delay)
        return delay

    async def _issue(
        self,
        target: LeafTarget,
        desired: DesiredLeaf,
        decision: RenewalDecision,
        observed: SecretInfo | None,
        ca_pem: bytes,
        *,
        per_pod: bool,
    ) -> None:
        started = time.perf_counter()
        authority = target.domain.active()
        assert authority is not None
        request = LeafRequest(
            spiffe_id=desired.spiffe_id,
            dns_names=desired.dns_names,
            ttl=desired.ttl,
            key_algorithm=desired.key_algorithm,
            usages=desired.usages,
        )
        now = self.clock()
        leaf = issue_leaf(authority, request, now, cross_chain_pem=target.domain.cross_chain_pem())
        renew_at = renew_point(
            leaf,
            desired.renew_at,
            target.jitter_key,
            self.config.max_jitter_fraction,
            backdate=desired.backdate,
        )
        owner = target.owner
        facts = leaf.to_facts(authority)
        metadata = svid_metadata(
            namespace=target.namespace,
            name=target.secret_name,
            identity=target.wid.name,
            owner=owner,
            annotations=leaf_annotations(
                facts,
                trust_domain=target.domain.trust_domain,
                issuer_sha256=authority.sha256,
                owner=target.wid.owner,
                renew_at=renew_at,
            ),
            finalizers=observed.finalizers if observed else (),
        )
        body = svid_secret(metadata, leaf.secret_data(ca_pem))
        secret_key = (target.namespace, target.secret_name)
        self._writing[secret_key] = SecretInfo.from_body(body, facts=facts)
        try:
            written = await self._write_secret(target, body, observed, per_pod=per_pod)
        finally:
            self._writing.pop(secret_key, None)
        if written is None:
            return
        self.secrets[secret_key] = SecretInfo.from_body(written, facts=facts)
        self.ledger.record(
            target.namespace,
            LedgerEntry(
                leaf.serial, owner.uid, leaf.not_after, target.domain.name, authority.sha256
            ),
        )
        self._written.add(target.key)
        self.metrics.issue_latency.observe(time.perf_counter() - started)
        domain = target.domain.trust_domain
        mode = "PerPod" if per_pod else "Shared"
        if decision.reason is RenewalReason.NotIssued:
            self.metrics.issued.labels(trust_domain=domain, mode=mode).inc()
        else:
            self.metrics.renewed.labels(trust_domain=domain, reason=decision.reason.value).inc()
        if not per_pod:
            verb = "Issued" if decision.reason is RenewalReason.NotIssued else "Renewed"
            await self._event(
                self._wid_ref(target.wid),
                "Normal",
                verb,
                f"{verb.lower()} {leaf.spiffe_id.uri} serial {leaf.serial_hex} into Secret "
                f"{target.secret_name}, valid until {to_rfc3339(leaf.not_after)} ({decision.message})",
            )
        self.dirty_status.add(("td", "", target.domain.name))
        next_decision = self._decide(target, desired, facts, now)
        self._schedule(target.key, max(next_decision.at, now + timedelta(seconds=1)))

    def _decide(
        self,
        target: LeafTarget,
        desired: DesiredLeaf,
        facts: LeafFacts | None,
        now: datetime,
        *,
        expected_sha256: str | None = None,
    ) -> RenewalDecision:
        """decide_renewal for a target, against its domain's authorities and our jitter."""
        assert target.domain.authorities is not None
        return decide_renewal(
            facts,
            desired,
            target.domain.authorities,
            now,
            jitter_key=target.jitter_key,
            max_jitter_fraction=self.config.max_jitter_fraction,
            expected_sha256=expected_sha256,
            revoked=target.domain.revocations,
        )

    async def _write_secret(
        self,
        target: LeafTarget,
        body: dict[str, Any],
        observed: SecretInfo | None,
        *,
        per_pod: bool,
    ) -> Mapping[str, Any] | None:
        """Create or replace the target's Secret; None when a foreign Secret holds the name."""
        if observed is not None:
            body["metadata"]["resourceVersion"] = str(observed.resource_version)
            return await self.kube.replace("Secret", target.namespace, target.secret_name, body)
        try:
            written = await self.kube.create("Secret", target.namespace, body)
        except ConflictError:
            # A Secret by that name exists but is not in our (label-filtered) cache. It may be
            # ours with the watch lagging (an earlier create whose answer was lost), so look
            # again once the watch had time to deliver it; still absent then, it is not ours.
            # Either way it is never read or written.
            now = self.clock()
            if target.key not in self._create_conflicts:
                self._create_conflicts.add(target.key)
                self._schedule(target.key, now + timedelta(seconds=CREATE_CONFLICT_RECHECK))
                return None
            existing = await self.kube.get("Secret", target.namespace, target.secret_name)
            owners = [
                str(o.get("uid"))
                for o in ((existing or {}).get("metadata") or {}).get("ownerReferences") or ()
            ]
            if existing is not None and SecretInfo.from_body(existing).owned_by(target.owner.uid):
                # Ours and still labelled: our watch is only late (a busy API server, or an
                # earlier process wrote it just before it died). Take it as the watch would,
                # and judge it as it is: never issue a second certificate for it.
                self._create_conflicts.discard(target.key)
                self.observe_secret(existing)
                self._schedule(target.key, now)
                return None
            if existing is not None and target.owner.uid in owners:
                # Ours, with its managed-by label stripped by hand (so our watch lost it):
                # write it again, labels and all, instead of leaving its key unmanaged.
                body["metadata"]["resourceVersion"] = str(
                    (existing.get("metadata") or {}).get("resourceVersion") or ""
                )
                self._create_conflicts.discard(target.key)
                return await self.kube.replace("Secret", target.namespace, target.secret_name, body)
            self._report_conflict(target, per_pod=per_pod)
            await self._conflict_event(target, per_pod=per_pod)
            self._schedule(target.key, now + timedelta(seconds=60))
            return None
        self._create_conflicts.discard(target.key)
        return written

    def _expected_metadata(
        self, target: LeafTarget, observed: SecretInfo, desired: DesiredLeaf
    ) -> dict[str, Any] | None:
        """The metadata trustwarden wrote with the certificate `observed` holds, if it issued
        that certificate to this target's owner (else there is nothing to vouch for)."""
        facts = observed.facts
        if facts is None or facts.spiffe_id is None:
            return None
        entry = self.ledger.issued_to(target.namespace, facts.serial, (target.owner.uid,))
        if entry is None:
            return None
        renew_at = renew_point(
            facts,
            desired.renew_at,
            target.jitter_key,
            self.config.max_jitter_fraction,
            backdate=desired.backdate,
        )
        return svid_metadata(
            namespace=target.namespace,
            name=target.secret_name,
            identity=target.wid.name,
            owner=target.owner,
            annotations=leaf_annotations(
                facts,
                trust_domain=target.domain.trust_domain,
                issuer_sha256=entry.issuer_sha256,
                owner=target.wid.owner,
                renew_at=renew_at,
            ),
            finalizers=observed.finalizers,
        )

    async def _restore_metadata(
        self, target: LeafTarget, observed: SecretInfo, desired: DesiredLeaf, now: datetime
    ) -> None:
        """Put back our labels, annotations, finalizer and owner if someone stripped them: a
        Secret without its finalizer could vanish before its serial is revoked, and one without
        its labels would fall out of our watch and never be released."""
        expected = self._expected_metadata(target, observed, desired)
        if expected is None or metadata_digest(expected) == observed.meta_digest:
            return
        delay = self._repair_backoff(target.key, now)
        if delay is not None:
            self.failures[target.key] = Failure(
                "SecretFight",
                f"the metadata of Secret {target.namespace}/{target.secret_name} keeps being "
                f"changed by something else; restoring it again in {delay:.0f}s",
            )
            self.metrics.errors.labels(reason="SecretFight").inc()
            await self._event(
                self._wid_ref(target.wid),
                "Warning",
                "SecretFight",
                self.failures[target.key].message,
            )
            self._schedule(target.key, now + timedelta(seconds=delay))
            return
        current = await self.kube.get("Secret", target.namespace, target.secret_name)
        if current is None or str((current.get("metadata") or {}).get("uid")) != observed.uid:
            return  # gone or replaced meanwhile: the watch brings the news
        meta = current.get("metadata") or {}
        body = {
            **current,
            "metadata": {
                **meta,
                **expected,
                "labels": {**(meta.get("labels") or {}), **expected["labels"]},
                "annotations": {**(meta.get("annotations") or {}), **expected["annotations"]},
                "resourceVersion": str(observed.resource_version),
            },
        }
        written = await self.kube.replace("Secret", target.namespace, target.secret_name, body)
        self.secrets[(target.namespace, target.secret_name)] = SecretInfo.from_body(
            written, facts=observed.facts
        )
        await self._event(
            self._wid_ref(target.wid),
            "Warning",
            "MetadataRestored",
            f"Secret {target.namespace}/{target.secret_name} had trustwarden's labels, "
            "annotations, finalizer or owner reference changed; restored them",
        )

    async def _refresh_ca(self, target: LeafTarget, ca_pem: bytes) -> None:
        """The anchors changed (a prepared authority, federation): update ca.crt only.

        One patch with the cached resourceVersion as precondition: a Secret changed since we
        saw it answers 409 (ConflictError), and the retry judges the new content."""
        key = (target.namespace, target.secret_name)
        cached = self.secrets.get(key)
        if cached is None:
            return
        try:
            written = await self.kube.patch_data(
                "Secret",
                target.namespace,
                target.secret_name,
                {"ca.crt": _b64(ca_pem)},
                resource_version=str(cached.resource_version),
            )
        except NotFoundError:
            return  # deleted meanwhile: its deletion is handled through the watch
        self.secrets[key] = SecretInfo.from_body(written)

    # ------------------------------------------------------------------ revocation

    # A certificate found in a Secret is never evidence of anything: a tenant can write any
    # bytes into its own Secrets, including a look-alike (or a verbatim copy, leaves are public)
    # of another namespace's certificate. Only what trustwarden itself recorded when it issued
    # (the ledger, kept in memory at once and persisted in batches) is revoked, and only on
    # behalf of the owner it was issued to.

    def _revoke(
        self,
        runtime: DomainRuntime,
        serial: int,
        issuer: str,
        not_after: datetime,
        reason: str,
        *,
        namespace: str = "",
    ) -> bool:
        if runtime.revoke(serial, issuer, not_after, self.clock(), reason, namespace=namespace):
            self.metrics.revoked.labels(trust_domain=runtime.trust_domain, reason=reason).inc()
            self.dirty_revocations.add(runtime.name)
            self._mark_domain_bundles(runtime)
            self.dirty_status.add(("td", "", runtime.name))
            return True
        return False

    def _revoke_entry(self, namespace: str, entry: LedgerEntry, reason: str) -> str | None:
        """Revoke one serial trustwarden issued; the TrustDomain it went into, if any."""
        runtime = self.domains.get(entry.domain)
        if runtime is None:
            return None
        if self._revoke(
            runtime,
            entry.serial,
            entry.issuer_sha256,
            entry.not_after,
            reason,
            namespace=namespace,
        ):
            owner = self._keys_by_uid.get(entry.owner_uid)
            if owner is not None:
                self._schedule(owner)  # a live owner gets a fresh certificate now
        return runtime.name

    def _revoke_owner(self, namespace: str, owner_uid: str, reason: str) -> set[str]:
        """Revoke every ledger serial of a dead owner, current and superseded ones alike; the
        TrustDomains whose revocation lists now hold them."""
        domains: set[str] = set()
        revoked = []
        for entry in self.ledger.owned_by(namespace, owner_uid):
            domain = self._revoke_entry(namespace, entry, reason)
            if domain is not None:
                domains.add(domain)
            revoked.append(entry.serial)
        self.ledger.forget(namespace, revoked)
        return domains

    def _revoke_current(self, info: SecretInfo, owner_uid: str, reason: str) -> str | None:
        """Revoke the certificate a Secret holds, if trustwarden issued exactly that serial to
        `owner_uid` in that namespace. Anything else in the Secret is ignored."""
        facts = info.facts
        if facts is None:
            return None
        entry = self.ledger.issued_to(info.namespace, facts.serial, (owner_uid,))
        if entry is None:
            return None
        domain = self._revoke_entry(info.namespace, entry, reason)
        self.ledger.forget(info.namespace, [entry.serial])
        return domain

    async def _refuse_targetless_revocation(self, namespace: str, name: str) -> None:
        """A Secret asks for revocation but is no identity's or admitted pod's Secret (e.g. one
        made by hand, labelled as ours): it revokes nothing, and says so where its author
        looks. A target's own Secret is answered by the target (Revoked or RevocationRefused)."""
        info = self.secrets.get((namespace, name))
        if info is None or info.revoke_request is None:
            return
        for wid_name in self.wids_by_ns.get(namespace, ()):
            spec = self.wids[(namespace, wid_name)]
            if spec.mode is DeliveryMode.SHARED and spec.secret_name == name:
                return
        for pod_name in self.pods_by_wid.get((namespace, info.identity or ""), ()):
            pod = self.pods.get((namespace, pod_name))
            if pod is not None and pod.secret_name == name:
                return
        await self._event(
            ObjectRef("v1", "Secret", name, namespace, info.uid),
            "Warning",
            "RevocationRefused",
            f"Secret {namespace}/{name} asks for revocation, but trustwarden issued nothing into "
            "it for a WorkloadIdentity or an admitted pod of this namespace; nothing was revoked. "
            "A certificate in a Secret is never evidence: trustwarden revokes only what its "
            "ledger says it issued to that owner",
        )

    def _issued_here(self, info: SecretInfo) -> LedgerEntry | None:
        """The ledger entry of the certificate in `info`, if trustwarden issued it into this
        namespace to one of the Secret's owners (what status counts and inventory trust)."""
        if info.facts is None or not info.managed:
            return None
        return self.ledger.issued_to(info.namespace, info.facts.serial, info.owner_uids)

    def domains_loaded(self) -> bool:
        return self._domains_loaded()

    def revoke_issued(self, namespace: str, entry: LedgerEntry, reason: str) -> str | None:
        """Revoke a serial that another issuer of ours recorded (pod certificates)."""
        return self._revoke_entry(namespace, entry, reason)

    def _domains_loaded(self) -> bool:
        return all(
            (
                name in self.domains
                and (self.domains[name].loaded or self.domains[name].conflict is not None)
            )
            or name in self._invalid_domains
            for name in self.td_bodies
        )

    async def _revoke_orphan(self, namespace: str, secret_name: str, owner_uid: str) -> None:
        """A pod is gone: revoke its serials and delete its Secret now, not at GC time."""
        if not self._domains_loaded():
            self._schedule(
                ("gone", namespace, secret_name, owner_uid), self.clock() + timedelta(seconds=1)
            )
            return
        if not secret_name:
            # The pod's Secret annotation was edited after admission and this run never saw
            # it admitted (a restart): the ledger still knows what was issued to the pod.
            secret_name = next(
                (
                    name
                    for (ns, name), info in self.secrets.items()
                    if ns == namespace and owner_uid in info.owner_uids and info.managed
                ),
                "",
            )
        self._departed.pop((namespace, secret_name), None)
        domains = self._revoke_owner(namespace, owner_uid, "PodDeleted")
        if not secret_name:
            return
        observed = self.secrets.get((namespace, secret_name))
        if observed is None:
            # Not in our label-filtered cache: its managed-by label may have been removed by
            # hand. It still holds a private key and our finalizer would keep it terminating
            # for ever, so look it up and finish it if it is the one we issued to this owner.
            observed = await self._lookup_issued(namespace, secret_name, owner_uid)
        if observed is not None and observed.owner_uids and owner_uid in observed.owner_uids:
            await self._delete_issued(observed, domains)

    async def _lookup_issued(self, namespace: str, name: str, owner_uid: str) -> SecretInfo | None:
        body = await self.kube.get("Secret", namespace, name)
        if body is None:
            return None
        info = SecretInfo.from_body(body)
        if owner_uid not in info.owner_uids or REVOKE_FINALIZER not in info.finalizers:
            return None  # not one trustwarden issued to this owner: never touched
        self.secrets[(namespace, name)] = info
        return info

    async def _revoke_identity_secrets(
        self, namespace: str, name: str, spec: WorkloadIdentitySpec | None
    ) -> None:
        owners = {spec.uid} if spec is not None and spec.uid else set()
        for (ns, secret_name), info in list(self.secrets.items()):
            if ns != namespace or not info.managed or info.identity != name:
                continue
            domains: set[str] = set()
            for uid in info.owner_uids:
                domains |= self._revoke_owner(ns, uid, "IdentityDeleted")
            if domains:
                log.info("revoked %s/%s: WorkloadIdentity %s deleted", ns, secret_name, name)
            await self._delete_issued(info, domains)
        for uid in owners:  # a Shared identity whose Secret is already gone
            self._revoke_owner(namespace, uid, "IdentityDeleted")

    async def _delete_issued(self, info: SecretInfo, revoked_into: set[str]) -> None:
        """Delete a Secret whose serials were just revoked into `revoked_into`. One that carries
        REVOKE_FINALIZER stays, terminating, until those revocation lists are stored (see
        _release)."""
        key = (info.namespace, info.name)
        if not info.deleting:
            with contextlib.suppress(NotFoundError):
                if not await self.kube.delete("Secret", info.namespace, info.name, uid=info.uid):
                    self.secrets.pop(key, None)  # a different Secret holds the name now
                    return
        if REVOKE_FINALIZER in info.finalizers:
            self.secrets[key] = replace(info, deleting=True)
            if revoked_into:
                self._revoked_for[key] = self._revoked_for.get(key, frozenset()) | revoked_into
            await self._release(*key)
        else:
            self.secrets.pop(key, None)

    async def _release(self, namespace: str, name: str) -> None:
        """A Secret we issued is being deleted (by us, the garbage collector, or a person) and
        our finalizer holds it. Revoke what trustwarden issued to its owner unless that owner
        still lives (a hand deletion: the owner just gets a fresh one), and let it go once
        those revocations are in the stored revocation lists, so not even a crash right now can
        lose them."""
        key = (namespace, name)
        info = self.secrets.get(key)
        if info is None or not info.held:
            self._held.pop(key, None)
            self._persisted.discard(key)
            self._revoked_for.pop(key, None)
            return
        if key in self._persisted:
            self._persisted.discard(key)
            with contextlib.suppress(NotFoundError):
                await self.kube.remove_finalizer(
                    "Secret", namespace, name, REVOKE_FINALIZER, uid=info.uid
                )
            return
        if key in self._held:
            return  # the next flush decides
        if not self._domains_loaded():
            self._schedule(("release", *key), self.clock() + timedelta(seconds=1))
            return
        waiting = set(self._revoked_for.pop(key, frozenset()))
        facts = info.facts
        if facts is not None and self.ledger.entry(namespace, facts.serial) is None:
            # Issued just before a crash, ahead of the batched ledger write: record it if its
            # contents prove it is ours (see _verified_issuance), so it is revoked below.
            entry = self._verified_issuance(info)
            if entry is not None:
                self.ledger.record(namespace, entry)
        issued = any(self.ledger.owned_by(namespace, uid) for uid in info.owner_uids)
        if issued and not await self._owner_lives(info):
            for uid in info.owner_uids:
                waiting |= self._revoke_owner(namespace, uid, "OwnerDeleted")
        if info.facts is not None:
            # Revoked earlier (an emergency revocation, then a deletion): still wait for the
            # list that holds it. Serials are random 159-bit numbers, so a copy of another
            # namespace's revoked serial only makes this Secret wait for that list's flush.
            serial = info.facts.serial
            waiting |= {d.name for d in self.domains.values() if serial in d.revocations}
        if waiting:
            self._held[key] = frozenset(waiting)  # flush() moves it on once they are stored
            return
        self._persisted.add(key)
        await self._release(namespace, name)

    async def _owner_lives(self, info: SecretInfo) -> bool:
        identity = (info.namespace, info.identity or "")
        if identity not in self.wid_bodies:
            return False  # an identity that is gone takes what it issued with it
        spec = self.wids.get(identity)
        if spec is not None and spec.uid in info.owner_uids:
            return True  # a Shared identity's own Secret
        for pod_name in self.pods_by_wid.get(identity, ()):
            pod = self.pods.get((info.namespace, pod_name))
            if pod is not None and pod.uid in info.owner_uids:
                # a terminating pod still lives: its Secret deleted by hand is not a revocation
                return await self._pod_lives(
                    info.namespace, pod.name, pod.uid, terminating_lives=True
                )
        return False

    async def _catch_up(self) -> None:
        """After a restart: whatever was issued to an owner that vanished while we were down
        (a deleted pod or WorkloadIdentity) is revoked, and its leftover Secret deleted."""
        if not self._domains_loaded():
            self._schedule(("catchup",), self.clock() + timedelta(seconds=1))
            return
        opns = self.config.operator_namespace
        # A serial written just before a crash, ahead of the batched ledger write, lives only
        # in its Secret, which the garbage collector removes with the pod even while we are
        # down. Record every live Secret's certificate that trustwarden provably issued there
        # (signed by one of the domain's authorities, for an identity of that very namespace
        # the domain allows), before anything below revokes by the ledger.
        backfilled = 0
        for (ns, _), info in self.secrets.items():
            if not info.managed or ns == opns or info.facts is None or not info.owner_uids:
                continue
            if self.ledger.entry(ns, info.facts.serial) is not None:
                continue
            entry = self._verified_issuance(info)
            if entry is not None:
                self.ledger.record(ns, entry)
                backfilled += 1
        if backfilled:
            log.info("recorded %d serial(s) missing from the issuance ledger", backfilled)
            self._ledger_flushed_at = None
        live = {pod.uid for pod in self.pods.values()} | {spec.uid for spec in self.wids.values()}
        for (ns, name), info in list(self.secrets.items()):
            if not info.managed or ns == opns or not info.identity:
                continue
            owners = set(info.owner_uids)
            if owners and not owners & live:
                for uid in owners:
                    await self._revoke_orphan(ns, name, uid)
        # A WorkloadIdentity deleted while we were down: its per-pod Secrets are owned by pods
        # that still run, so the loop above keeps them; revoke them as the deletion would have.
        deleted_identities = {
            (ns, info.identity)
            for (ns, _), info in self.secrets.items()
            if info.managed and ns != opns and info.identity
            if (ns, info.identity) not in self.wid_bodies
        }
        for ns, identity in sorted(deleted_identities):
            log.info("WorkloadIdentity %s/%s was deleted while the operator was down", ns, identity)
            await self._revoke_identity_secrets(ns, identity, None)
        dead = {(ns, e.owner_uid) for ns, e in self.ledger.all() if e.owner_uid not in live}
        for ns, uid in dead:
            domains = self._revoke_owner(ns, uid, "OwnerDeletedWhileDown")
            log.info(
                "revoked the serial(s) of %s in %s (into %s), deleted while the operator was down",
                uid,
                ns,
                ", ".join(sorted(domains)) or "no live domain",
            )

    def _verified_issuance(self, info: SecretInfo) -> LedgerEntry | None:
        """The ledger entry for the certificate in a managed Secret, if its contents prove that
        trustwarden issued it to that namespace: the signature verifies against an authority of
        the domain that owns its trust domain name, its SPIFFE ID is under /ns/<namespace>/,
        and the domain allows the namespace. A copy of another namespace's certificate fails
        the path check; a look-alike fails the signature."""
        facts = info.facts
        if facts is None or facts.spiffe_id is None or facts.not_after <= self.clock():
            return None
        runtime = self._owning_domain(facts.spiffe_id.trust_domain)
        if runtime is None or runtime.authorities is None:
            return None
        if not facts.spiffe_id.path.startswith(f"/ns/{info.namespace}/"):
            return None
        if not self._allowed(runtime, info.namespace):
            return None
        issuer = next(
            (r for r in runtime.authorities.records if facts.signed_by(r.authority)), None
        )
        if issuer is None:
            return None
        return LedgerEntry(
            facts.serial, info.owner_uids[0], facts.not_after, runtime.name, issuer.sha256
        )

    def _owning_domain(self, trust_domain: str) -> DomainRuntime | None:
        """The issuing TrustDomain that owns a SPIFFE trust domain name (the oldest claim)."""
        for runtime in self.domains.values():
            if runtime.trust_domain == trust_domain and runtime.issues and not runtime.conflict:
                return runtime
        return None

    # ------------------------------------------------------------------ flushing

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval)
            try:
                await self.flush()
            except Exception:
                log.exception("flush failed; retrying")

    async def flush(self) -> None:
        for name in list(self.dirty_revocations):
            runtime = self.domains.get(name)
            self.dirty_revocations.discard(name)
            if runtime is not None:
                try:
                    await self._write_revocations(runtime)
                except Exception:
                    self.dirty_revocations.add(name)
                    raise
        # Held Secrets whose serials are now stored may go (a domain revoked into since this
        # flush began is dirty again and waits for the next one).
        for key, domains in list(self._held.items()):
            if not domains & self.dirty_revocations:
                del self._held[key]
                self._persisted.add(key)
                self._schedule(("release", *key))
        now = self.clock()
        ledger_due = (
            self._ledger_flushed_at is None
            or now - self._ledger_flushed_at >= self.config.ledger_interval
        )
        if ledger_due:
            self._ledger_flushed_at = now
            self.ledger.prune(now)
        for namespace in list(self.ledger.dirty) if ledger_due else ():
            self.ledger.dirty.discard(namespace)
            try:
                await self._write_ledger(namespace)
            except Exception as exc:
                self.ledger.dirty.add(namespace)
                log.warning("ledger for namespace %s not written: %s", namespace, exc)
        now = self.clock()
        for namespace, at in list(self._bundle_retry.items()):
            if at <= now:  # a foreign ConfigMap held the bundle's name: try again
                del self._bundle_retry[namespace]
                self.dirty_bundles.add(namespace)
        if not self._domains_loaded():
            # Until every TrustDomain's authorities are loaded after a start, a bundle written
            # now would drop that domain's anchors (a trust gap), and a CA recovery reads the
            # previous anchors back from the published bundles. Keep them dirty until then.
            return
        pending = list(self.dirty_bundles)
        self.dirty_bundles.clear()
        for runtime in self.domains.values():
            if (
                runtime.issues
                and runtime.loaded
                and runtime.conflict is None
                and runtime.authorities is not None
            ):
                runtime.crl(self.clock())  # rebuild once here if due, not per namespace
        for namespace in pending:
            try:
                await self._sync_bundle(namespace)
            except ConflictError:
                self.dirty_bundles.add(namespace)
            except Exception as exc:
                self.dirty_bundles.add(namespace)
                log.warning("bundle for namespace %s not written: %s", namespace, exc)
        for runtime in self.domains.values():
            if runtime.crl_changed:
                self.dirty_revocations.add(runtime.name)

    async def _write_ledger(self, namespace: str) -> None:
        name = ledger_name(namespace)
        if not self.ledger.entries.get(namespace):
            if namespace in self.ledger.stored:
                await self.kube.delete("ConfigMap", self.config.operator_namespace, name)
                self.ledger.stored.discard(namespace)
            return
        await self._upsert_state(
            "ConfigMap",
            name,
            role="ledger",
            annotations={NAMESPACE_ANNOTATION: namespace},
            payload={"binaryData": {LEDGER_KEY: self.ledger.encode(namespace)}},
            exists=namespace in self.ledger.stored,
        )
        self.ledger.stored.add(namespace)

    async def _write_revocations(self, runtime: DomainRuntime) -> None:
        await self._upsert_state(
            "ConfigMap",
            revocations_name(runtime.name),
            role="revocations",
            annotations={TRUST_DOMAIN_ANNOTATION: runtime.trust_domain},
            payload={"data": runtime.revocations_data(self.clock())},
            exists=runtime.revocations_exist,
        )
        runtime.revocations_exist = True
        await self._note_revocation_load(runtime)

    async def _note_revocation_load(self, runtime: DomainRuntime) -> None:
        """Say, long before the 1 MiB limit, that a domain's revocation list is growing large:
        metric always, condition (via status) and an Event when it crosses into degraded."""
        load = runtime.revocation_load()
        was_degraded = runtime.last_load is not None and runtime.last_load.degraded
        runtime.last_load = load
        self.metrics.revocation_entries.labels(trust_domain=runtime.trust_domain).set(load.entries)
        self.metrics.revocation_store_ratio.labels(trust_domain=runtime.trust_domain).set(
            load.fraction
        )
        if load.degraded != was_degraded:
            self.dirty_status.add(("td", "", runtime.name))
        if load.degraded and not was_degraded:
            await self._event(
                self._domain_ref(runtime),
                "Warning",
                "RevocationListLarge",
                load.message(runtime.name),
            )

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.status_interval)
            try:
                await self.flush_status()
            except Exception:
                log.exception("status flush failed; retrying")

    async def flush_status(self, *, final: bool = False) -> None:
        """Write the statuses whose content changed (reconcile/status.py decides what and
        when)."""

        def build(status_key: tuple[str, str, str]) -> dict[str, Any] | None:
            kind, namespace, name = status_key
            if kind == "td":
                return self._domain_status(name)
            return self._identity_status(namespace, name)

        await self.status.flush(build, final=final)

    def _set_condition(
        self, status_key: tuple[str, str, str], type_: str, ok: bool, reason: str, message: str
    ) -> None:
        self.status.set_condition(status_key, type_, ok, reason, message)

    def _conditions_list(
        self, status_key: tuple[str, str, str], generation: int
    ) -> list[dict[str, Any]]:
        return self.status.conditions_list(status_key, generation)

    def _valid_svids(self, runtime: DomainRuntime) -> int:
        """What the CRD promises in status.issued: the SVIDs of this domain that are valid
        now, counted from the managed Secrets we see (not a per-process issuance counter,
        which restarted at 0 and counted renewals too)."""
        now = self.clock()
        count = 0
        for info in self.secrets.values():
            if info.deleting or info.facts is None:
                continue
            entry = self._issued_here(info)  # only what trustwarden issued there counts
            if (
                entry is not None
                and entry.domain == runtime.name
                and self._allowed(runtime, info.namespace)  # a namespace that left: not counted
            ):
                count += info.facts.not_before <= now < info.facts.not_after
        return count

    def _domain_status(self, name: str) -> dict[str, Any] | None:
        body = self.td_bodies.get(name)
        runtime = self.domains.get(name)
        if body is None:
            return None
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        status_key = ("td", "", name)
        status: dict[str, Any] = {"observedGeneration": generation}
        if runtime is not None:
            namespaces = [ns for ns in self.namespaces if runtime in self._entitled_domains(ns)]
            published = [
                ns
                for ns in namespaces
                if ns not in self.dirty_bundles
                and ns not in self.bundle_conflicts
                and ns in self.bundles
            ]
            conflicts = sorted(set(namespaces) & self.bundle_conflicts)
            self._set_condition(
                status_key, "CAReady", runtime.ca_ready, runtime.ca_reason, runtime.ca_message
            )
            if conflicts:
                self._set_condition(
                    status_key,
                    "BundlesPublished",
                    False,
                    "BundleConflict",
                    f"ConfigMap {BUNDLE_CONFIGMAP} in namespace(s) {', '.join(conflicts[:5])} was not created by trustwarden; it is left untouched",
                )
            else:
                complete = len(published) == len(namespaces)
                self._set_condition(
                    status_key,
                    "BundlesPublished",
                    complete,
                    "Published" if complete else "Publishing",
                    f"{len(published)}/{len(namespaces)} namespace bundles hold this domain's anchors",
                )
            try:
                TrustDomainSpec.from_body(body)
                spec_ok = True
            except SpecError:
                spec_ok = False
            if spec_ok:
                self._set_condition(
                    status_key,
                    "Ready",
                    runtime.ca_ready,
                    "Ready" if runtime.ca_ready else runtime.ca_reason,
                    runtime.ca_message,
                )
            load = runtime.last_load
            if load is not None and load.degraded:
                self._set_condition(
                    status_key, "Degraded", True, "RevocationListLarge", load.message(name)
                )
            elif runtime.issues:
                self._set_condition(
                    status_key,
                    "Degraded",
                    False,
                    "AsExpected",
                    f"{len(runtime.revocations)} revoked serial(s) inside their validity",
                )
            status["namespaces"] = len(namespaces)
            if runtime.spec.ca_kind is CAKind.SELF_SIGNED:
                status["rotation"] = rotation_status(
                    runtime.authorities,
                    propagation_delay=self.config.propagation_delay,
                    floor=self.config.min_activate_after,
                )
            status["issued"] = self._valid_svids(runtime)
            status["revoked"] = len(runtime.revocations)
            if runtime.authorities is not None:
                status["authorities"] = [
                    {
                        k: v
                        for k, v in rotation.record_to_dict(r).items()
                        if k in _AUTHORITY_STATUS_KEYS
                    }
                    for r in runtime.authorities.records
                ]
                live = [
                    r
                    for r in runtime.authorities.records
                    if r.state is not rotation.AuthorityState.Retired
                ]
                if live:
                    status["soonestExpiry"] = to_rfc3339(min(r.authority.not_after for r in live))
            elif runtime.external_anchors:
                status["soonestExpiry"] = to_rfc3339(
                    min(c.not_valid_after_utc for c in runtime.external_anchors)
                )
        if self.status_extras is not None:
            status.update(self.status_extras("td", "", name) or {})
        status["conditions"] = self._conditions_list(status_key, generation)
        return status

    def _identity_status(self, namespace: str, name: str) -> dict[str, Any] | None:
        key = (namespace, name)
        body = self.wid_bodies.get(key)
        spec = self.wids.get(key)
        if body is None:
            return None
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        status_key = ("wid", namespace, name)
        status: dict[str, Any] = {"observedGeneration": generation}
        problem = self.wid_problems.get(key)
        selected = issued = failed = 0
        soonest: datetime | None = None
        next_renewal: datetime | None = None
        first_failure: Failure | None = None
        now = self.clock()
        targets: list[tuple[Hashable, str | None, str]] = []
        if spec is not None and spec.mode is DeliveryMode.SHARED:
            targets.append((("wid", namespace, name), spec.secret_name, spec.uid))
            status["secretName"] = spec.secret_name
        elif spec is not None:
            for pod_name in self.pods_by_wid.get(key, ()):
                pod = self.pods.get((namespace, pod_name))
                if pod is None or pod.deleting:
                    continue
                targets.append((("pod", namespace, pod_name), pod.secret_name, pod.uid))
        extra = (
            self.status_extras("wid", namespace, name)
            if self.status_extras is not None
            and spec is not None
            and spec.mode is DeliveryMode.POD_CERTIFICATE
            else None
        )
        if extra:  # pod certificates: counted by their controller, no Secrets to look at
            targets = []
            selected, issued = int(extra.pop("selectedPods", 0)), int(extra.pop("issued", 0))
            denial = extra.pop("denial", None)
            if denial is not None:
                failed, first_failure = 1, Failure(*denial)
            status.update(extra)
        for work_key, secret_name, owner_uid in targets:
            selected += 1
            info = self.secrets.get((namespace, secret_name or ""))
            # Only a certificate trustwarden issued to this very owner counts: a foreign Secret
            # holding the name (SecretConflict) or an edited one says nothing about it.
            facts = (
                info.facts
                if info is not None
                and info.facts is not None
                and self.ledger.issued_to(namespace, info.facts.serial, (owner_uid,))
                else None
            )
            failure = self.failures.get(work_key)
            if failure is not None:
                failed += 1
                first_failure = first_failure or failure
            if facts is not None and facts.not_after > now:
                issued += 1
                soonest = facts.not_after if soonest is None else min(soonest, facts.not_after)
                if (
                    spec is not None
                    and spec.mode is DeliveryMode.SHARED
                    and facts.spiffe_id is not None
                ):
                    status["spiffeID"] = facts.spiffe_id.uri
                    status["serial"] = facts.serial_hex
            deadline = self.scheduler.deadline_of(work_key)
            if deadline is not None:
                next_renewal = deadline if next_renewal is None else min(next_renewal, deadline)
        status.update({"selectedPods": selected, "issued": issued, "failed": failed})
        if soonest is not None:
            status["soonestExpiry"] = to_rfc3339(soonest)
            self.metrics.soonest_expiry.labels(namespace=namespace, identity=name).set(
                soonest.timestamp()
            )
        if next_renewal is not None:
            status["nextRenewal"] = to_rfc3339(next_renewal)
        if problem is not None:
            reason, message = problem
            if issued and soonest is not None:
                # Certificates issued before the problem (e.g. the namespace left the domain's
                # allowedNamespaces) are kept until they expire, not revoked: a label typo
                # must not cut a namespace off at once. Say so, and how to cut them off.
                message += (
                    f". {issued} certificate(s) issued earlier stay valid until they expire "
                    f"(soonest {to_rfc3339(soonest)}) and are not renewed; run "
                    f"`trustwarden revoke -n {namespace} --identity {name} --reason ... --no-wait` "
                    "to cut them off now"
                )
            self._set_condition(status_key, "Ready", False, reason, message)
            self._set_condition(status_key, "Degraded", True, reason, message)
        elif first_failure is not None:
            message = (
                f"{failed} of {selected} certificate(s) failing; first: {first_failure.message}"
            )
            self._set_condition(status_key, "Ready", False, first_failure.reason, message)
            self._set_condition(status_key, "Degraded", True, first_failure.reason, message)
        elif issued < selected:
            message = f"{issued} of {selected} selected workload(s) hold a valid certificate"
            self._set_condition(status_key, "Ready", False, "Issuing", message)
            self._set_condition(status_key, "Degraded", False, "Issuing", message)
        else:
            message = (
                f"{issued} certificate(s) valid"
                if selected
                else "no pod is selected yet; certificates are issued when pods are created"
            )
            self._set_condition(status_key, "Ready", True, "Ready", message)
            self._set_condition(status_key, "Degraded", False, "Ready", message)
        status["conditions"] = self._conditions_list(status_key, generation)
        return status

    # ------------------------------------------------------------------ events

    async def _event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        await self.events.post(ref, type_, reason, message)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able view for debugging and tests (no key material)."""
        return {
            "domains": sorted(self.domains),
            "identities": len(self.wids),
            "pods": len(self.pods),
            "secrets": len(self.secrets),
            "queue": len(self.scheduler),
            "failures": {str(k): v.message for k, v in list(self.failures.items())[:20]},
        }


_AUTHORITY_STATUS_KEYS = {
    "serial",
    "sha256",
    "notBefore",
    "notAfter",
    "state",
    "plannedActivation",
    "compromisedAt",
    "crossSigner",
}


class _CAError(PKIError):
    """A CA source problem reported on the TrustDomain."""


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
