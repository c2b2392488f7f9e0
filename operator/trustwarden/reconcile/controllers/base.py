"""What every controller shares: the store, the port, the clock, and the wiring to the engine.

A controller owns its own bookkeeping and meets the others only in the store (what was
observed), in the scheduler (work keys) and in the dirty sets the flushes write. Where one
needs what another does (authorities and leaves revoke serials), it holds a Protocol from this
module, never the other controller's class: import-linter checks that controllers do not
import one another.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from trustwarden.metrics import Metrics
from trustwarden.names import API_VERSION
from trustwarden.reconcile.domains import DomainRuntime
from trustwarden.reconcile.events import EventRecorder
from trustwarden.reconcile.ledger import LedgerEntry
from trustwarden.reconcile.model import WorkloadIdentitySpec
from trustwarden.reconcile.observed import SecretInfo
from trustwarden.reconcile.ports import KubePort, ObjectRef
from trustwarden.reconcile.settings import EngineConfig
from trustwarden.reconcile.state_objects import upsert_state
from trustwarden.reconcile.status import StatusWriter
from trustwarden.reconcile.store import ClusterStore
from trustwarden.reconcile.work import Changes

AnchorGate = Callable[[DomainRuntime, str], bool]
StatusExtras = Callable[[str, str, str], "dict[str, Any] | None"]


class Revoker(Protocol):
    """Revocation as the authorities and leaves controllers ask for it."""

    def revoke_entry(self, namespace: str, entry: LedgerEntry, reason: str) -> str | None: ...

    def revoke_current(self, info: SecretInfo, owner_uid: str, reason: str) -> str | None: ...

    async def revoke_identity_secrets(
        self, namespace: str, name: str, spec: WorkloadIdentitySpec | None
    ) -> None: ...

    async def note_revocation_load(self, runtime: DomainRuntime) -> None: ...


@dataclass
class Context:
    kube: KubePort
    config: EngineConfig
    metrics: Metrics
    clock: Callable[[], datetime]
    store: ClusterStore
    status: StatusWriter
    events: EventRecorder
    schedule: Callable[[Hashable, datetime | None], None]
    deadline_of: Callable[[Hashable], datetime | None]
    apply: Callable[[Changes], None]
    dirty_bundles: set[str] = field(default_factory=set)
    dirty_revocations: set[str] = field(default_factory=set)
    # A new authority signs only once every gate says its anchor is published (the
    # namespace bundles' gate first; pod certificates add the ClusterTrustBundles').
    anchor_gates: list[AnchorGate] = field(default_factory=list)
    status_extras: StatusExtras | None = None

    def anchor_published(self, runtime: DomainRuntime, sha: str) -> bool:
        return all(gate(runtime, sha) for gate in self.anchor_gates)


def domain_ref(runtime: DomainRuntime) -> ObjectRef:
    return ObjectRef(API_VERSION, "TrustDomain", runtime.name, None, runtime.spec.uid)


def wid_ref(spec: WorkloadIdentitySpec) -> ObjectRef:
    return ObjectRef(API_VERSION, "WorkloadIdentity", spec.name, spec.namespace, spec.uid)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Controller:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.kube = ctx.kube
        self.config = ctx.config
        self.metrics = ctx.metrics
        self.clock = ctx.clock
        self.store = ctx.store
        self.status = ctx.status
        self.dirty_bundles = ctx.dirty_bundles
        self.dirty_revocations = ctx.dirty_revocations
        self.dirty_status = ctx.status.dirty

    def _schedule(self, key: Hashable, at: datetime | None = None) -> None:
        self.ctx.schedule(key, at)

    async def _event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        await self.ctx.events.post(ref, type_, reason, message)

    def _set_condition(
        self, status_key: tuple[str, str, str], type_: str, ok: bool, reason: str, message: str
    ) -> None:
        self.status.set_condition(status_key, type_, ok, reason, message)

    def _anchor_published(self, runtime: DomainRuntime, sha: str) -> bool:
        return self.ctx.anchor_published(runtime, sha)

    def _reschedule_domain_identities(self, domain_name: str) -> None:
        for key in self.store.identities_of_domain(domain_name):
            self._schedule(key)

    def _mark_domain_bundles(self, runtime: DomainRuntime) -> None:
        self.dirty_bundles.update(self.store.bundle_namespaces_of(runtime))

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
        """Write one of our state objects in the operator namespace."""
        return await upsert_state(
            self.kube,
            self.config.operator_namespace,
            kind,
            name,
            role=role,
            annotations=annotations,
            payload=payload,
            exists=exists,
        )

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
