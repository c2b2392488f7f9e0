"""Prometheus metrics, all prefixed `trustwarden_`. One registry object, no module-level state."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


def _registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=_registry)

    def __post_init__(self) -> None:
        r = self.registry
        self.issued = Counter(
            "trustwarden_certificates_issued",
            "Certificates issued for the first time, by trust domain and delivery mode.",
            ["trust_domain", "mode"],
            registry=r,
        )
        self.renewed = Counter(
            "trustwarden_certificates_renewed",
            "Certificates re-issued, by trust domain and the reason for renewal.",
            ["trust_domain", "reason"],
            registry=r,
        )
        self.revoked = Counter(
            "trustwarden_certificates_revoked",
            "Serials added to a CRL, by trust domain and reason.",
            ["trust_domain", "reason"],
            registry=r,
        )
        self.errors = Counter(
            "trustwarden_issuance_errors",
            "Failed issuance attempts, by reason.",
            ["reason"],
            registry=r,
        )
        self.issue_latency = Histogram(
            "trustwarden_issuance_duration_seconds",
            "Time from a decision to issue until the Secret is written.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.soonest_expiry = Gauge(
            "trustwarden_identity_soonest_expiry_timestamp_seconds",
            "Unix time of the soonest certificate expiry per WorkloadIdentity.",
            ["namespace", "identity"],
            registry=r,
        )
        self.ca_not_after = Gauge(
            "trustwarden_ca_not_after_timestamp_seconds",
            "Unix time at which each authority of a trust domain expires.",
            ["trust_domain", "serial", "state"],
            registry=r,
        )
        self.bundle_writes = Counter(
            "trustwarden_bundle_writes",
            "Trust bundle ConfigMap writes (create, update or delete).",
            ["operation"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "trustwarden_scheduler_queue_depth",
            "Deadlines waiting in the renewal scheduler.",
            registry=r,
        )
        self.ca_recoveries = Counter(
            "trustwarden_ca_recoveries",
            "CA Secrets restored or replaced after loss or corruption, by trust domain and outcome.",
            ["trust_domain", "outcome"],
            registry=r,
        )
        self.webhook_requests = Counter(
            "trustwarden_webhook_requests",
            "Admission reviews answered by the injection webhook, by result.",
            ["result"],
            registry=r,
        )
        self.revocation_entries = Gauge(
            "trustwarden_revocation_entries",
            "Revoked serials still inside their validity, per trust domain (the CRL's size).",
            ["trust_domain"],
            registry=r,
        )
        self.revocation_store_ratio = Gauge(
            "trustwarden_revocation_store_ratio",
            "How full the largest ConfigMap holding a trust domain's revocations is (1 = the "
            "1 MiB object limit); the TrustDomain is Degraded from 0.5.",
            ["trust_domain"],
            registry=r,
        )
        self.pcr_results = Counter(
            "trustwarden_pod_certificate_requests",
            "PodCertificateRequests answered, by signer and result (issued, denied, failed, "
            "error).",
            ["signer", "result"],
            registry=r,
        )
        self.pcr_latency = Histogram(
            "trustwarden_pod_certificate_duration_seconds",
            "Time from seeing a PodCertificateRequest until its Issued status is written.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.is_leader = Gauge(
            "trustwarden_leader",
            "1 when this replica holds the leader lease and reconciles, else 0.",
            registry=r,
        )
