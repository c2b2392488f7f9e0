"""The reconciliation engine: wiring only.

It builds one ClusterStore (what was observed), the controllers over it (reconcile/controllers)
and one DeadlineScheduler of typed work keys (reconcile/work.py), and routes each key to the
controller that owns it:
- DomainKey: authorities (a TrustDomain's CA, rotation, CRL refresh, secretRef polling);
- IdentityKey, PodKey: leaves (a Shared identity's Secret; a PerPod identity's pods);
- GoneKey, ReleaseKey, CatchUpKey, RefuseKey: revocation.

Observations go into the store, which answers with the work they imply (`Changes`); the engine
schedules it. Trust bundles, revocation lists, the ledger and statuses are aggregated: changes
mark them dirty and periodic flushes write each at most once, and only when its content changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Hashable, Mapping
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from trustwarden.metrics import Metrics
from trustwarden.names import IDENTITY_LABEL, MANAGED_BY, MANAGER
from trustwarden.reconcile.controllers.authorities.domain import Authorities
from trustwarden.reconcile.controllers.base import AnchorGate, Context, StatusExtras
from trustwarden.reconcile.controllers.bundles import Bundles
from trustwarden.reconcile.controllers.leaves.target import LeafTarget
from trustwarden.reconcile.controllers.leaves.targets import Leaves
from trustwarden.reconcile.controllers.revocation.departures import Revocation
from trustwarden.reconcile.controllers.statuses import Statuses
from trustwarden.reconcile.domains import DomainRuntime
from trustwarden.reconcile.events import EventRecorder
from trustwarden.reconcile.ledger import Ledger, LedgerEntry
from trustwarden.reconcile.model import WorkloadIdentitySpec
from trustwarden.reconcile.observed import NamespaceInfo, PodInfo, SecretInfo
from trustwarden.reconcile.ports import ConflictError, KubePort
from trustwarden.reconcile.reflector import Reflector, key_of
from trustwarden.reconcile.scheduler import DeadlineScheduler, utcnow
from trustwarden.reconcile.settings import RETRY_BASE, RETRY_MAX, EngineConfig
from trustwarden.reconcile.status import StatusWriter
from trustwarden.reconcile.store import ClusterStore, Failure
from trustwarden.reconcile.work import (
    CATCH_UP,
    Changes,
    DomainKey,
    DomainStatusKey,
    IdentityKey,
    PodKey,
)

__all__ = ["Engine", "EngineConfig", "LeafTarget"]

log = logging.getLogger("trustwarden.engine")


LISTINGS_AT_ONCE = 4


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
        self.metrics = metrics
        self.clock = clock
        self.scheduler = DeadlineScheduler(
            self.dispatch,
            concurrency=config.concurrency,
            clock=clock,
            on_depth=metrics.queue_depth.set,
        )
        self.store = ClusterStore(
            config.operator_namespace, config.watch_namespaces, ledger_shards=config.ledger_shards
        )
        # Statuses (conditions, what was last written, deferred writes) and Events are kept
        # by their own writers; controllers mark status keys dirty.
        self.status = StatusWriter(kube, clock, config.status_timing_interval)
        self.events = EventRecorder(kube)
        self.ctx = Context(
            kube=kube,
            config=config,
            metrics=metrics,
            clock=clock,
            store=self.store,
            status=self.status,
            events=self.events,
            schedule=self._schedule,
            deadline_of=self.scheduler.deadline_of,
            apply=self._apply,
        )
        self.bundles = Bundles(self.ctx)  # first: its gate is the namespace bundles'
        self.revocation = Revocation(self.ctx)
        self.authorities = Authorities(self.ctx, self.revocation)
        self.leaves = Leaves(self.ctx, self.revocation)
        self.statuses = Statuses(self.ctx)
        self._routes: dict[str, Callable[[tuple[str, ...]], Awaitable[None]]] = {
            "td": lambda k: self.authorities.reconcile_domain(k[1]),
            "wid": lambda k: self.leaves.reconcile_identity(k[1], k[2]),
            "pod": lambda k: self.leaves.reconcile_pod(k[1], k[2]),
            "gone": lambda k: self.revocation.revoke_orphan(k[1], k[2], k[3]),
            "release": lambda k: self.revocation.release(k[1], k[2]),
            "catchup": lambda k: self.revocation.catch_up(),
            "refuse": lambda k: self.revocation.refuse_targetless_revocation(k[1], k[2]),
        }
        self.reflectors: list[Reflector] = []
        self._watch_tasks: list[asyncio.Task[None]] = []
        self.started = False
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ what others read

    @property
    def domains(self) -> dict[str, DomainRuntime]:
        return self.store.domains

    @property
    def wids(self) -> dict[tuple[str, str], WorkloadIdentitySpec]:
        return self.store.wids

    @property
    def pods(self) -> dict[tuple[str, str], PodInfo]:
        return self.store.pods

    @property
    def secrets(self) -> dict[tuple[str, str], SecretInfo]:
        return self.store.secrets

    @property
    def namespaces(self) -> dict[str, NamespaceInfo]:
        return self.store.namespaces

    @property
    def ledger(self) -> Ledger:
        return self.store.ledger

    @property
    def failures(self) -> dict[Hashable, Failure]:
        return self.store.failures

    @property
    def dirty_status(self) -> set[tuple[str, str, str]]:
        return self.status.dirty

    @property
    def dirty_bundles(self) -> set[str]:
        return self.ctx.dirty_bundles

    @property
    def dirty_revocations(self) -> set[str]:
        return self.ctx.dirty_revocations

    @property
    def anchor_gates(self) -> list[AnchorGate]:
        """Pod certificates (reconcile/podcerts) plug in here: a new authority may sign only
        once every gate says its anchor is published."""
        return self.ctx.anchor_gates

    @property
    def status_extras(self) -> StatusExtras | None:
        """Extra status fields per object, from the pod-certificate controller."""
        return self.ctx.status_extras

    @status_extras.setter
    def status_extras(self, extras: StatusExtras | None) -> None:
        self.ctx.status_extras = extras

    def domains_loaded(self) -> bool:
        return self.store.domains_loaded()

    def revoke_issued(self, namespace: str, entry: LedgerEntry, reason: str) -> str | None:
        """Revoke a serial that another issuer of ours recorded (pod certificates)."""
        return self.revocation.revoke_entry(namespace, entry, reason)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Begin reconciling. Called once every cache has its initial listing."""
        if self.started:
            return
        self.started = True
        for name in self.store.td_bodies:
            self.scheduler.schedule(DomainKey(name))
        for ns, name in self.store.wids:
            self.scheduler.schedule(IdentityKey(ns, name))
        for ns, name in self.store.pods:
            self.scheduler.schedule(PodKey(ns, name))
        self.scheduler.schedule(CATCH_UP)
        self.dirty_bundles.update(self.store.namespaces)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.scheduler.run(), name="trustwarden-scheduler"),
            loop.create_task(
                self._every(self.config.flush_interval, self.flush, "flush"),
                name="trustwarden-flush",
            ),
            loop.create_task(
                self._every(self.config.status_interval, self.flush_status, "status flush"),
                name="trustwarden-status",
            ),
        ]

    async def stop(self) -> None:
        for task in [*self._watch_tasks, *self._tasks]:
            task.cancel()
        if self.started:
            # A clean shutdown loses nothing pending: ledger, revocations, bundles, statuses.
            with contextlib.suppress(Exception):
                await self.flush(final=True)
                await self.flush_status(final=True)
        for task in [*self._watch_tasks, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):  # shutting down
                await task
        self._tasks, self._watch_tasks = [], []
        self.started = False

    async def _every(
        self, interval: float, flush: Callable[[], Awaitable[None]], what: str
    ) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await flush()
            except Exception:
                log.exception("%s failed; retrying", what)

    async def flush(self, *, final: bool = False) -> None:
        """Write what the changes made dirty: revocation lists (and the held Secrets they
        release), the ledger, then the namespace bundles."""
        await self.revocation.flush(final=final)
        await self.bundles.flush()

    async def flush_status(self, *, final: bool = False) -> None:
        await self.statuses.flush_status(final=final)

    def _schedule(self, key: Hashable, at: datetime | None = None) -> None:
        if self.started:
            self.scheduler.schedule(key, at)

    def _apply(self, changes: Changes) -> None:
        for key, at in changes.schedule:
            self._schedule(key, at)
        for key in changes.cancel:
            self.scheduler.cancel(key)
        for key in changes.forgotten:
            self.leaves.forget(key)
        self.dirty_bundles.update(changes.bundles)
        self.dirty_status.update(changes.statuses)

    # ------------------------------------------------------------------ observation

    async def prime(self, namespaces: list[str] | None = None) -> None:
        """List every labelled pod and managed Secret (in `namespaces`, or everywhere) into
        the store; `follow` then keeps it current from the listings' resourceVersions.

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
                listed=partial(upsert, listed=True),
                delete=delete,
                prune=partial(self.prune, kind, scope),
                mark=self.store.begin_listing,
                release=self.store.end_listing,
            )
            for kind, selector, upsert, delete in (
                ("Pod", IDENTITY_LABEL, self.observe_pod, self.forget_pod),
                (
                    "Secret",
                    f"{MANAGED_BY}={MANAGER}",
                    self.observe_secret,
                    lambda body: self.forget_secret(*key_of(body)),
                ),
            )
            for scope in scopes
        ]
        # Pods and Secrets are listed side by side (a few listings at a time): while one
        # page is reduced here, the API server is encoding the next one of the other kind.
        gate = asyncio.Semaphore(LISTINGS_AT_ONCE)

        async def listed(reflector: Reflector) -> None:
            async with gate:
                await reflector.list()

        tasks = [asyncio.create_task(listed(r), name=f"list {r}") for r in self.reflectors]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def follow(self) -> None:
        """Watch pods and Secrets from where `prime` listed them, until `stop`."""
        loop = asyncio.get_running_loop()
        self._watch_tasks = [
            loop.create_task(reflector.watch(), name=f"trustwarden-watch-{reflector.kind}")
            for reflector in self.reflectors
        ]

    def prune(self, kind: str, scope: str | None, live: set[tuple[str, str]], mark: int) -> None:
        """After a listing: forget what it lacks, except what was observed after `mark`."""
        self._apply(self.store.prune(kind, scope, live, mark))

    def _seed_status(self, status_key: tuple[str, str, str], body: Mapping[str, Any]) -> None:
        """Before start, take the status an earlier process wrote as what was last written:
        a restart then rewrites only the statuses whose content changes (10,000 pods over 100
        identities rewrote every status)."""
        status = body.get("status")
        if not self.started and isinstance(status, Mapping):
            self.status.seed(status_key, status)

    def observe_namespace(self, body: Mapping[str, Any]) -> None:
        self._apply(self.store.observe_namespace(body))

    def forget_namespace(self, name: str) -> None:
        self.store.forget_namespace(name)
        self.bundles.forget_namespace(name)

    def observe_trust_domain(self, body: Mapping[str, Any]) -> None:
        self._seed_status(DomainStatusKey(str((body.get("metadata") or {}).get("name"))), body)
        self._apply(self.store.observe_trust_domain(body))

    def forget_trust_domain(self, name: str) -> None:
        # a TrustDomain created again under this name is a new object with no status yet
        self.status.forget(DomainStatusKey(name))
        self._apply(self.store.forget_trust_domain(name))

    def observe_workload_identity(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        self._seed_status(IdentityKey(str(meta.get("namespace")), str(meta.get("name"))), body)
        self._apply(self.store.observe_workload_identity(body))

    def forget_workload_identity(self, namespace: str, name: str) -> None:
        # re-created (a GitOps replace), it starts without a status: what the old object was
        # last written must not make its first status look already written
        self.status.forget(IdentityKey(namespace, name))
        self._apply(self.store.forget_workload_identity(namespace, name))

    def observe_pod(self, body: Mapping[str, Any], *, listed: bool = False) -> None:
        self._apply(self.store.observe_pod(body, listed=listed))

    def forget_pod(self, body: Mapping[str, Any]) -> None:
        self._apply(self.store.forget_pod(body))

    def observe_secret(self, body: Mapping[str, Any], *, listed: bool = False) -> None:
        self._apply(self.store.observe_secret(body, listed=listed))

    def forget_secret(self, namespace: str, name: str) -> None:
        self._apply(self.store.forget_secret(namespace, name))

    def observe_ledger(self, body: Mapping[str, Any]) -> None:
        """Ledgers are read once, from the initial listing; afterwards we are the only writer."""
        if not self.started:
            self.store.observe_ledger(body)

    def observe_bundle(self, body: Mapping[str, Any]) -> None:
        self._apply(self.store.observe_bundle(body))

    def forget_bundle(self, namespace: str) -> None:
        self._apply(self.store.forget_bundle(namespace))

    # ------------------------------------------------------------------ dispatch

    async def dispatch(self, key: Hashable) -> None:
        assert isinstance(key, tuple)
        failures = self.store.failures
        # A failure recorded by this very run (SecretFight, SecretConflict, InvalidTemplate,
        # NotSelected, ...) is the current state of that key and must reach the status; only
        # an older one is cleared by a run that records nothing.
        before = failures.get(key)
        try:
            route = self._routes.get(key[0])
            if route is not None:
                await route(key)
            if failures.get(key) is before:
                failures.pop(key, None)
        except ConflictError:
            self.scheduler.schedule(key, self.clock() + timedelta(seconds=0.2 + random.random()))  # noqa: S311
        except Exception as exc:
            failure = failures.get(key)
            attempts = failure.attempts + 1 if failure else 1
            failures[key] = Failure("ReconcileError", str(exc), attempts)
            self.metrics.errors.labels(reason="ReconcileError").inc()
            delay = min(RETRY_MAX, RETRY_BASE * (2 ** min(attempts, 10))) * (0.5 + random.random())  # noqa: S311
            log.warning("%s failed (attempt %d, retry in %.0fs): %s", key, attempts, delay, exc)
            self.scheduler.schedule(key, self.clock() + timedelta(seconds=delay))

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able view for debugging and tests (no key material)."""
        return {
            "domains": sorted(self.store.domains),
            "identities": len(self.store.wids),
            "pods": len(self.store.pods),
            "secrets": len(self.store.secrets),
            "queue": len(self.scheduler),
            "failures": {str(k): v.message for k, v in list(self.store.failures.items())[:20]},
        }
