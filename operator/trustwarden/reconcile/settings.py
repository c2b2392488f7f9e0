"""The engine's settings: one typed object the CLI (handlers/runner.py) fills from its flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from trustwarden.pki.propagation import DEFAULT_PROPAGATION_DELAY, MIN_ACTIVATE_AFTER
from trustwarden.reconcile.admission import AdmissionKey, new_key
from trustwarden.reconcile.dnspolicy import DEFAULT_CLUSTER_DOMAIN
from trustwarden.reconcile.ledger import DEFAULT_SHARDS

# Retries of a failed work item back off from RETRY_BASE seconds, doubling, to RETRY_MAX.
RETRY_BASE = 2.0
RETRY_MAX = 300.0


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
    # The ledger's shard ConfigMaps at start (reconcile/ledger.py); it doubles as it grows.
    ledger_shards: int = DEFAULT_SHARDS
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
