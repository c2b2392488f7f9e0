"""Answering one PodCertificateRequest: sign it (reconcile/podcerts/signer.py decides), write
its status, or refuse it with a reason the pod's owner can act on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from trustwarden.metrics import Metrics
from trustwarden.names import API_VERSION
from trustwarden.pki._clock import to_rfc3339
from trustwarden.pki._x509util import sha256_hex
from trustwarden.reconcile import podcert
from trustwarden.reconcile.ledger import Ledger
from trustwarden.reconcile.observed import shared_labels
from trustwarden.reconcile.podcerts.signer import Refused, Signed, sign
from trustwarden.reconcile.podcerts.trust_bundles import TrustBundlePublisher
from trustwarden.reconcile.podcerts.views import (
    WAIT,
    EngineView,
    IdentityRecord,
    PodCertKube,
    PodSeen,
)
from trustwarden.reconcile.ports import (
    ConflictError,
    InvalidError,
    NotFoundError,
    ObjectRef,
)
from trustwarden.reconcile.reflector import Key

log = logging.getLogger("trustwarden.podcerts")


class Requests:
    """The signing half of PodCertificates (its state is the controller's)."""

    kube: PodCertKube
    engine: EngineView
    metrics: Metrics
    clock: Callable[[], datetime]
    bundles: TrustBundlePublisher
    ledger: Ledger
    pods: dict[Key, PodSeen]
    pod_identity: dict[str, tuple[str, str]]
    identities: dict[tuple[str, str], IdentityRecord]
    _bundles_dirty: asyncio.Event

    async def _invalid(self, key: Key, body: Mapping[str, Any], message: str) -> bool:
        """The API server refused our answer. A 422 will not pass by trying again: the request
        is Failed, with the API server's words, so the kubelet can ask anew."""
        spec = body.get("spec") or {}
        self.metrics.pcr_results.labels(signer=str(spec.get("signerName")), result="error").inc()
        log.error(
            "PodCertificateRequest %s/%s: the API server refused our status: %s", *key, message
        )
        pcr = podcert.PCRInfo.from_body(body)
        refusal = podcert.Refusal(
            podcert.FAILED,
            "SignerError",
            f"the API server refused the certificate trustwarden made: {message[:500]}; "
            "report this to the trustwarden maintainers",
        )
        try:
            await self._refuse(
                body, pcr, refusal, podcert.refused_status(pcr, refusal, self.clock())
            )
        except InvalidError as again:
            log.error("PodCertificateRequest %s/%s left undecided: %s", *key, again)
        return False

    async def _handle(self, body: Mapping[str, Any], seen_at: float) -> bool | float:
        """Sign or refuse one PCR; True to try again with backoff, a number of seconds to
        look again after a wait that is no error, False when done."""
        pcr = podcert.PCRInfo.from_body(body)
        domain = podcert.domain_of(pcr.signer)
        assert domain is not None
        runtime = self.engine.domains.get(domain)
        if runtime is None or not runtime.issues:
            what = "does not exist" if runtime is None else "holds external anchors only"
            refusal = podcert.Refusal(
                podcert.DENIED,
                "UnknownSigner",
                f"signer {pcr.signer}: TrustDomain {domain} {what}; use the signer of an "
                "issuing TrustDomain (trustwarden.io/<TrustDomain name>)",
            )
            await self._refuse(
                body, pcr, refusal, podcert.refused_status(pcr, refusal, self.clock())
            )
            return False
        pod = self.pods.get((pcr.namespace, pcr.pod_name))
        if pod is None or pod.uid != pcr.pod_uid:
            fetched = await self.kube.get("Pod", pcr.namespace, pcr.pod_name)
            meta = (fetched or {}).get("metadata") or {}
            if fetched is None or meta.get("uid") != pcr.pod_uid or meta.get("deletionTimestamp"):
                log.info("%s names a pod that no longer exists; not issued", pcr.where)
                return False
            pod = PodSeen(pcr.pod_uid, shared_labels(meta.get("labels") or {}))
        if not runtime.loaded and runtime.conflict is None:
            return WAIT
        active = runtime.active()
        if active is not None and not self.bundles.published(runtime, sha256_hex(active.anchor)):
            self._bundles_dirty.set()  # a new authority signs only once its anchor is out
            return WAIT
        namespace = self.engine.namespaces.get(pcr.namespace)
        now = self.clock()
        outcome = sign(
            pcr,
            runtime,
            pod_labels=pod.labels,
            identities=self.engine.wids.values(),
            namespace_labels=namespace.labels if namespace is not None else {},
            cluster_domain=self.engine.config.cluster_domain,
            now=now,
            max_jitter_fraction=self.engine.config.max_jitter_fraction,
        )
        if isinstance(outcome, Refused):
            await self._refuse(body, pcr, outcome.refusal, outcome.status)
            return False
        assert isinstance(outcome, Signed)
        if not await self._write(body, outcome.status):
            return False
        self.ledger.record(pcr.namespace, outcome.entry)
        # A pod without a volume of ours (the watch keeps none of those) holds a serial now:
        # keep it, so a relisting that misses it revokes the serial.
        self.pods[(pcr.namespace, pcr.pod_name)] = pod
        identity = (outcome.plan.identity.namespace, outcome.plan.identity.name)
        record = self.identities.setdefault(identity, IdentityRecord())
        record.issued += 1
        record.last_issued = time.monotonic()
        self.pod_identity[pcr.pod_uid] = identity
        self.engine.dirty_status.add(("wid", *identity))
        self.engine.dirty_status.add(("td", "", runtime.name))
        self.metrics.pcr_results.labels(signer=pcr.signer, result="issued").inc()
        self.metrics.pcr_latency.observe(time.perf_counter() - seen_at)
        return False

    async def _write(self, body: Mapping[str, Any], status: dict[str, Any]) -> bool:
        """Set the status of a PCR that has none yet; False if it is gone or was decided by
        someone else meanwhile."""
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        try:
            await self.kube.update_status(
                "PodCertificateRequest", namespace, name, {**dict(body), "status": status}
            )
        except NotFoundError:
            return False
        except ConflictError:
            current = await self.kube.get("PodCertificateRequest", namespace, name)
            if current is None or podcert.PCRInfo.from_body(current).outcome is not None:
                return False
            return await self._write(current, status)
        return True

    async def _refuse(
        self,
        body: Mapping[str, Any],
        pcr: podcert.PCRInfo,
        refusal: podcert.Refusal,
        status: dict[str, Any],
    ) -> None:
        if not await self._write(body, status):
            return
        result = "denied" if refusal.condition == podcert.DENIED else "failed"
        self.metrics.pcr_results.labels(signer=pcr.signer, result=result).inc()
        log.info("%s %s: %s", pcr.where, refusal.condition.lower(), refusal.reason)
        message = f"{pcr.where} {refusal.condition.lower()}: {refusal.message}"
        with contextlib.suppress(Exception):
            await self.kube.emit_event(
                ObjectRef("v1", "Pod", pcr.pod_name, pcr.namespace, pcr.pod_uid),
                "Warning",
                refusal.reason,
                message,
            )
        if refusal.identity is not None:
            identity = (refusal.identity.namespace, refusal.identity.name)
            record = self.identities.setdefault(identity, IdentityRecord())
            record.denied += 1
            record.last_denial = (
                f"{pcr.namespace}/{pcr.pod_name}",
                refusal.reason,
                refusal.message,
                to_rfc3339(self.clock().replace(microsecond=0)),
                time.monotonic(),
            )
            self.engine.dirty_status.add(("wid", *identity))
            with contextlib.suppress(Exception):
                await self.kube.emit_event(
                    ObjectRef(
                        API_VERSION,
                        "WorkloadIdentity",
                        refusal.identity.name,
                        refusal.identity.namespace,
                        refusal.identity.uid,
                    ),
                    "Warning",
                    refusal.reason,
                    message,
                )
