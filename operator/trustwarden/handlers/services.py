"""The one typed object kept in kopf's memo: configuration, engine, gateway, metrics."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from trustwarden.k8s.gateway import KubeGateway
from trustwarden.metrics import Metrics
from trustwarden.reconcile.engine import Engine

log = logging.getLogger("trustwarden")


@dataclass
class OperatorConfig:
    operator_namespace: str = "trustwarden-system"
    local: bool = False
    kubeconfig: str | None = None
    context: str | None = None
    watch_namespaces: list[str] = field(default_factory=list)
    metrics_address: str = "0.0.0.0"  # noqa: S104 - scraped from other pods in-cluster
    metrics_port: int = 8080
    health_address: str = "0.0.0.0"  # noqa: S104 - probed by the kubelet
    health_port: int = 8081
    webhook_address: str = "0.0.0.0"  # noqa: S104
    webhook_port: int = 9443
    webhook_service: str | None = None
    webhook_configuration: str = "trustwarden-webhook"
    concurrency: int = 8
    # Writes in flight grow from `concurrency` up to this while the API server keeps up, and
    # halve on 429/5xx (reconcile/aimd.py).
    max_concurrency: int = 32
    reissue_rate: float = 50.0
    cluster_domain: str = "cluster.local"
    leader_elect: bool = True
    lease_name: str = "trustwarden-leader"
    lease_duration: float = 15.0
    identity: str = "trustwarden"
    propagation_delay: timedelta = timedelta(minutes=2)
    min_activate_after: timedelta = timedelta(minutes=3)
    ca_recovery_grace: timedelta = timedelta(minutes=2)
    # How often the aggregated writes happen (reconcile/settings.py EngineConfig).
    flush_interval: timedelta = timedelta(milliseconds=500)
    status_interval: timedelta = timedelta(seconds=2)
    status_timing_interval: timedelta = timedelta(seconds=30)
    ledger_interval: timedelta = timedelta(seconds=5)
    max_jitter_fraction: float = 0.1
    ledger_shards: int = 16


@dataclass
class Services:
    config: OperatorConfig
    engine: Engine
    gateway: KubeGateway
    metrics: Metrics
    caches_complete: bool = False
    leading: bool = False
    # Set with caches_complete: the injection webhook listens only from then on (fail closed).
    caches_loaded: asyncio.Event = field(default_factory=asyncio.Event)

    def on_caches_complete(self) -> None:
        """Called by every post-index handler; the first call means kopf's caches are full."""
        if self.caches_complete:
            return
        self.caches_complete = True
        self.caches_loaded.set()
        log.info("initial listing complete: %s", self.engine.snapshot())
        self._maybe_start()

    def on_leadership(self, leading: bool) -> None:
        self.leading = leading
        self.metrics.is_leader.set(1 if leading else 0)
        self._maybe_start()

    def _maybe_start(self) -> None:
        if self.caches_complete and self.leading and not self.engine.started:
            log.info("starting reconciliation as %s", self.config.identity)
            self.engine.start()
