"""The pod-certificate controller: watch PodCertificateRequests, sign or refuse them, keep the
ClusterTrustBundles, record every serial per pod UID, revoke on pod deletion.

- PCRs of other signers are dropped as they arrive: never stored, updated or logged.
- A PCR with a terminal condition (Issued, Denied, Failed) is never touched: its status is
  immutable. A PCR created while the operator was down is in the first listing and signed
  once the engine's domains are loaded.
- A PCR is signed only for a pod that exists with the UID the PCR names (the API server has
  checked that at creation; the pod may have gone since).
- Every serial goes into the pod-certificate ledger (ConfigMap
  `trustwarden-podcerts-<namespace>` in the operator namespace), written in batches every
  `EngineConfig.ledger_interval`: one write covers every certificate of that interval. When
  a pod is deleted, its still-valid serials go into its domain's CRL; after a restart, every
  ledger serial whose pod no longer exists is revoked the same way.
- A new authority signs only once the ClusterTrustBundle holds its anchor: the publisher is
  one of the engine's anchor gates, and the signer checks it again before each signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Callable, Mapping
from datetime import datetime
from sys import intern
from typing import Any

from trustwarden.metrics import Metrics
from trustwarden.names import MANAGED_BY, MANAGER
from trustwarden.reconcile import podcert
from trustwarden.reconcile.ledger import LEDGER_KEY, Ledger
from trustwarden.reconcile.model import DeliveryMode
from trustwarden.reconcile.observed import shared_labels
from trustwarden.reconcile.podcerts.recovery import backfill_ledger, recover_pod_identities
from trustwarden.reconcile.podcerts.requests import Requests
from trustwarden.reconcile.podcerts.trust_bundles import TrustBundlePublisher
from trustwarden.reconcile.podcerts.views import (
    CERTIFICATES_V1,
    LEDGER_PREFIX,
    LEDGER_ROLE,
    NEEDED,
    RESTART_SECONDS,
    RETRY,
    RETRY_MAX,
    WORKERS,
    EngineView,
    IdentityRecord,
    PodCertKube,
    PodSeen,
)
from trustwarden.reconcile.ports import (
    InvalidError,
)
from trustwarden.reconcile.reflector import Key, Reflector, key_of
from trustwarden.reconcile.scheduler import utcnow
from trustwarden.reconcile.state_objects import write_dirty_ledgers

log = logging.getLogger("trustwarden.podcerts")


class PodCertificates(Requests):
    def __init__(
        self,
        kube: PodCertKube,
        engine: EngineView,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime] = utcnow,
        workers: int = WORKERS,
    ) -> None:
        self.kube = kube
        self.engine = engine
        self.metrics = metrics
        self.clock = clock
        self.workers = workers
        self.available: bool | None = None  # None until the API has been asked
        self.unavailable_message = ""
        self.bundles = TrustBundlePublisher(kube)
        self.ledger = Ledger(LEDGER_PREFIX, engine.config.ledger_shards)
        self.pods: dict[Key, PodSeen] = {}
        self.pod_identity: dict[str, tuple[str, str]] = {}  # pod UID -> identity it got
        self.identities: dict[tuple[str, str], IdentityRecord] = {}
        self.queue: asyncio.Queue[Key] = asyncio.Queue()
        self.pending: dict[Key, tuple[Mapping[str, Any], float]] = {}
        self.attempts: dict[Key, int] = {}
        self.ready = asyncio.Event()
        self._seq = 0
        self._seen: dict[Key, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._bundles_dirty = asyncio.Event()
        self._listed_issued: list[Mapping[str, Any]] = []  # Issued PCRs of the first listing
        engine.status_extras = self.status_extras

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Ask the API whether it serves pod certificates; if it does, sign until cancelled.

        A failure (RBAC that lacks the pod-certificate rules, say) never blocks the Secret
        path: the signer says why in every TrustDomain's status and in the log, stops gating
        CA activation on its ClusterTrustBundles, and starts again after a pause."""
        while True:
            try:
                await self._run_once()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._stop(exc)
            await asyncio.sleep(RESTART_SECONDS)

    def _stop(self, exc: Exception) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        with contextlib.suppress(ValueError):
            self.engine.anchor_gates.remove(self.bundles.published)
        self.available = False
        self.unavailable_message = (
            f"the pod-certificate signer stopped ({type(exc).__name__}: {exc}); it starts "
            f"again in {RESTART_SECONDS:.0f}s. Check the operator's RBAC for "
            "podcertificaterequests, signers and clustertrustbundles; Secret delivery is "
            "unaffected"
        )
        log.error("pod certificates: %s", self.unavailable_message)
        self._mark_domains()

    async def _run_once(self) -> None:
        served = await self.kube.served_resources(CERTIFICATES_V1)
        missing = NEEDED - (served or set())
        if missing:
            self.available = False
            self.unavailable_message = (
                "this cluster does not serve certificates.k8s.io/v1 "
                f"{', '.join(sorted(missing))} (Kubernetes 1.37+ is needed); PodCertificate "
                "identities are not signed, Secret delivery works as before"
            )
            log.warning("pod certificates unavailable: %s", self.unavailable_message)
            self._mark_domains()
            return
        await self._load_state()
        scopes: list[str | None] = (
            sorted(self.engine.config.watch_namespaces)
            if self.engine.config.watch_namespaces
            else [None]
        )
        pods = [
            Reflector(
                self.kube,
                "Pod",
                "",
                scope,
                upsert=self._pod_seen,
                delete=self._pod_deleted,
                prune=self._prune_pods,
                mark=lambda: self._seq,
            )
            for scope in scopes
        ]
        requests = [
            Reflector(
                self.kube,
                "PodCertificateRequest",
                "",
                scope,
                upsert=self._pcr_seen,
                delete=self._pcr_deleted,
                prune=lambda _live, _mark: None,
                mark=lambda: self._seq,
            )
            for scope in scopes
        ]
        # Our ClusterTrustBundles, watched: one edited or deleted by hand is written back at
        # the next bundle sync, and the anchor gate follows what is really published.
        trust_bundles = Reflector(
            self.kube,
            "ClusterTrustBundle",
            f"{MANAGED_BY}={MANAGER}",
            None,
            upsert=self._ctb_seen,
            delete=self._ctb_deleted,
            prune=self._prune_ctbs,
            mark=lambda: self._seq,
        )
        pods.append(trust_bundles)
        for reflector in pods + requests:
            await reflector.list()
        # From here on a new authority signs only once its anchor is in the ClusterTrustBundle.
        self.available = True
        self.engine.anchor_gates.append(self.bundles.published)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(r.watch(), name=f"trustwarden-podcerts-watch-{r.kind}")
            for r in pods + requests
        ]
        while not (self.engine.started and self.engine.domains_loaded()):
            await asyncio.sleep(0.2)
        self._backfill_ledger()
        self._catch_up()
        self._recover_pod_identities()
        await self._sync_bundles()
        self._mark_domains()
        self.ready.set()
        self._tasks += [
            loop.create_task(self._worker(), name=f"trustwarden-podcerts-{i}")
            for i in range(self.workers)
        ]
        self._tasks.append(loop.create_task(self._flush_loop(), name="trustwarden-podcerts-flush"))
        try:
            await self._bundle_loop()
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):
                await self.flush_ledger()

    async def _load_state(self) -> None:
        opns = self.engine.config.operator_namespace
        async for page in self.kube.list_pages(
            "ConfigMap", label_selector=f"trustwarden.io/role={LEDGER_ROLE}", namespace=opns
        ):
            for body in page.items:
                name = str((body.get("metadata") or {}).get("name") or "")
                if not self.ledger.owns(name):
                    continue
                try:
                    self.ledger.load(
                        name,
                        str((body.get("binaryData") or {}).get(LEDGER_KEY) or ""),
                    )
                except (ValueError, zlib.error) as exc:
                    log.warning("pod-certificate ledger %s is unreadable: %s", name, exc)
        async for page in self.kube.list_pages(
            "ClusterTrustBundle", label_selector=f"{MANAGED_BY}={MANAGER}"
        ):
            for body in page.items:
                self.bundles.observe(body)

    def _mark_domains(self) -> None:
        self.engine.dirty_status.update(("td", "", name) for name in self.engine.domains)

    # ------------------------------------------------------------------ observation

    def _note(self, key: Key) -> None:
        self._seq += 1
        self._seen[key] = self._seq

    def _pod_seen(self, body: Mapping[str, Any]) -> None:
        """Keep the pods that can hold one of our pod certificates: those mounting a volume of
        one of our signers, and any pod the ledger records a serial for. Every other pod (all of
        them on a Secret-only cluster) costs nothing here: at 100,000 pods a copy of each one's
        UID and labels was about 1 KiB per pod. A request for a pod not kept is answered from a
        GET of the pod; its deletion still revokes (the watch event carries its UID)."""
        meta = body.get("metadata") or {}
        key = key_of(body)
        uid = intern(str(meta.get("uid") or ""))
        if not podcert.mounts_our_signer(body) and not self.ledger.owns_any(key[0], uid):
            if self.pods.pop(key, None) is not None:
                self._seen.pop(key, None)
            return
        self._note(key)
        self.pods[key] = PodSeen(uid, shared_labels(meta.get("labels") or {}))

    def _pod_deleted(self, body: Mapping[str, Any]) -> None:
        key = key_of(body)
        seen = self.pods.pop(key, None)
        self._seen.pop(key, None)
        uid = str((body.get("metadata") or {}).get("uid") or (seen.uid if seen else ""))
        if uid and self.ready.is_set():
            self._revoke_pod(key[0], uid, "PodDeleted")

    def _prune_pods(self, live: set[Key], mark: int) -> None:
        for key in [k for k in self.pods if k not in live and self._seen.get(k, 0) <= mark]:
            seen = self.pods[key]
            self._pod_deleted({"metadata": {"namespace": key[0], "name": key[1], "uid": seen.uid}})

    def _pcr_seen(self, body: Mapping[str, Any]) -> None:
        spec = body.get("spec") or {}
        if podcert.domain_of(str(spec.get("signerName") or "")) is None:
            return  # another signer's request: not ours to keep, touch or log
        status = body.get("status") or {}
        outcome = next(
            (
                c.get("type")
                for c in status.get("conditions") or ()
                if isinstance(c, Mapping) and c.get("type") in podcert.TERMINAL
            ),
            None,
        )
        if outcome is not None:
            self.pending.pop(key_of(body), None)
            if outcome == "Issued" and not self.ready.is_set():
                self._listed_issued.append(body)  # see _backfill_ledger
            return  # issued, denied or failed: immutable
        key = key_of(body)
        if key not in self.pending:
            self.queue.put_nowait(key)
        self.pending[key] = (body, time.perf_counter())

    def _ctb_seen(self, body: Mapping[str, Any]) -> None:
        if self.bundles.observe(body):
            self._bundles_dirty.set()

    def _ctb_deleted(self, body: Mapping[str, Any]) -> None:
        self.bundles.forget(body)
        self._bundles_dirty.set()

    def _prune_ctbs(self, live: set[Key], mark: int) -> None:
        names = {name for _, name in live}
        for name in [n for n in self.bundles.stored if n not in names]:
            self.bundles.forget({"metadata": {"name": name}})
            self._bundles_dirty.set()

    def _pcr_deleted(self, body: Mapping[str, Any]) -> None:
        self.pending.pop(key_of(body), None)

    # ------------------------------------------------------------------ revocation

    def _revoke_pod(self, namespace: str, uid: str, reason: str) -> None:
        entries = self.ledger.owned_by(namespace, uid)
        for entry in entries:
            self.engine.revoke_issued(namespace, entry, reason)
        if entries:
            self.ledger.forget(namespace, [e.serial for e in entries])
            log.info(
                "revoked %d pod certificate(s) of pod %s in %s (%s)",
                len(entries),
                uid,
                namespace,
                reason,
            )
        identity = self.pod_identity.pop(uid, None)
        if identity is not None:
            self.engine.dirty_status.add(("wid", *identity))

    def _catch_up(self) -> None:
        """Serials of pods deleted while the operator was down (or while its watch lagged)."""
        live = {seen.uid for seen in self.pods.values()}
        dead = {(ns, e.owner_uid) for ns, e in self.ledger.all() if e.owner_uid not in live}
        for namespace, uid in sorted(dead):
            self._revoke_pod(namespace, uid, "OwnerDeletedWhileDown")

    def _backfill_ledger(self) -> None:
        recorded = backfill_ledger(
            self.ledger, self._listed_issued, self.engine.domains, self.clock()
        )
        self._listed_issued = []
        if recorded:
            log.info("recorded %d pod certificate serial(s) missing from the ledger", recorded)

    def _recover_pod_identities(self) -> None:
        found = recover_pod_identities(
            self.pods, self.ledger, self.engine.wids.values(), self.clock()
        )
        for uid, identity in found.items():
            if uid not in self.pod_identity:
                self.pod_identity[uid] = identity
                self.engine.dirty_status.add(("wid", *identity))

    # ------------------------------------------------------------------ signing

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            item = self.pending.pop(key, None)
            if item is None:
                continue
            body, seen_at = item
            retry: bool | float
            try:
                retry = await self._handle(body, seen_at)
            except InvalidError as exc:
                retry = await self._invalid(key, body, str(exc))
            except Exception as exc:
                log.warning("PodCertificateRequest %s/%s not handled: %s", *key, exc)
                retry = True
            if retry is False:
                self.attempts.pop(key, None)
            elif key not in self.pending:
                if retry is True:  # an error: back off
                    attempts = self.attempts[key] = self.attempts.get(key, 0) + 1
                    delay = min(RETRY_MAX, RETRY.total_seconds() * 2 ** min(attempts - 1, 6))
                else:  # waiting for the domain or its bundle: look again soon
                    delay = float(retry)
                self.pending[key] = (body, seen_at)
                asyncio.get_running_loop().call_later(delay, self.queue.put_nowait, key)

    # ------------------------------------------------------------------ writing

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.engine.config.ledger_interval.total_seconds())
            try:
                await self.flush_ledger()
            except Exception as exc:
                log.warning("pod-certificate ledger not written: %s", exc)

    async def flush_ledger(self) -> None:
        self.ledger.prune(self.clock())
        await write_dirty_ledgers(
            self.kube,
            self.ledger,
            self.engine.config.operator_namespace,
            role=LEDGER_ROLE,
            log=log,
        )

    async def _bundle_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._bundles_dirty.wait(), timeout=0.5)
            self._bundles_dirty.clear()
            try:
                await self._sync_bundles()
            except Exception as exc:
                log.warning("ClusterTrustBundles not written: %s", exc)

    async def _sync_bundles(self) -> None:
        if self.engine.domains_loaded():
            await self.bundles.sync(list(self.engine.domains.values()), self.clock())

    # ------------------------------------------------------------------ status

    def status_extras(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == "td":
            signer: dict[str, Any] = {"name": podcert.signer_name(name)}
            if self.available is False:
                signer.update(available=False, message=self.unavailable_message)
            elif self.available:
                signer.update(
                    available=True,
                    clusterTrustBundle=podcert.bundle_name(name),
                    message="signs PodCertificateRequests of PodCertificate identities",
                )
            return {"signer": signer}
        spec = self.engine.wids.get((namespace, name))
        if spec is None or spec.mode is not DeliveryMode.POD_CERTIFICATE:
            return None
        record = self.identities.get((namespace, name), IdentityRecord())
        live = sum(1 for identity in self.pod_identity.values() if identity == (namespace, name))
        summary: dict[str, Any] = {
            "signerName": podcert.signer_name(spec.trust_domain_ref),
            "issued": record.issued,
            "denied": record.denied,
        }
        extra: dict[str, Any] = {"selectedPods": live, "issued": live}
        if self.available is False:
            extra["denial"] = ("SignerUnavailable", self.unavailable_message)
        if record.last_denial is not None:
            pod, reason, message, at, mono = record.last_denial
            summary["lastDenial"] = {"pod": pod, "reason": reason, "message": message, "at": at}
            if mono >= record.last_issued:
                extra["denial"] = (reason, f"pod {pod}: {message}")
        extra["podCertificates"] = summary
        return extra
