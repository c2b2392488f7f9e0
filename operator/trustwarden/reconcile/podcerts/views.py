"""What the pod-certificate controller needs from the port and the engine, and what it keeps
per pod and per identity."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from trustwarden.reconcile.domains import DomainRuntime
from trustwarden.reconcile.ledger import LedgerEntry
from trustwarden.reconcile.model import WorkloadIdentitySpec
from trustwarden.reconcile.observed import NamespaceInfo
from trustwarden.reconcile.ports import (
    Body,
    KubePort,
)

log = logging.getLogger("trustwarden.podcerts")

LEDGER_PREFIX = "trustwarden-podcerts-"
LEDGER_ROLE = "pcr-ledger"
CERTIFICATES_V1 = "/apis/certificates.k8s.io/v1"
NEEDED = frozenset({"podcertificaterequests", "clustertrustbundles"})
WORKERS = 64
RETRY = timedelta(seconds=1)
RETRY_MAX = 30.0
WAIT = 0.25
RESTART_SECONDS = 30.0  # after the signer failed (see run)


class PodCertKube(KubePort, Protocol):
    async def update_status(self, kind: str, namespace: str, name: str, body: Body) -> Body: ...

    async def served_resources(self, group_version_path: str) -> set[str] | None: ...


class EngineConfigView(Protocol):
    operator_namespace: str
    cluster_domain: str
    max_jitter_fraction: float
    ledger_interval: timedelta
    ledger_shards: int
    watch_namespaces: frozenset[str] | None


class EngineView(Protocol):
    """What this controller reads from and hands to the engine."""

    config: Any  # an EngineConfig (EngineConfigView)
    started: bool
    status_extras: Callable[[str, str, str], dict[str, Any] | None] | None

    @property
    def domains(self) -> dict[str, DomainRuntime]: ...

    @property
    def wids(self) -> dict[tuple[str, str], WorkloadIdentitySpec]: ...

    @property
    def namespaces(self) -> dict[str, NamespaceInfo]: ...

    @property
    def dirty_status(self) -> set[tuple[str, str, str]]: ...

    @property
    def anchor_gates(self) -> list[Callable[[DomainRuntime, str], bool]]: ...

    def domains_loaded(self) -> bool: ...

    def revoke_issued(self, namespace: str, entry: LedgerEntry, reason: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class PodSeen:
    uid: str
    labels: Mapping[str, str]  # read-only: shared with every pod carrying the same labels


@dataclass
class IdentityRecord:
    issued: int = 0  # certificates signed for this identity by this process
    denied: int = 0
    last_issued: float = 0.0
    last_denial: tuple[str, str, str, str, float] | None = None  # pod, reason, msg, at, mono
