from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime
from typing import Any

from trustwarden.names import (
    BUNDLE_CONFIGMAP,
)
from trustwarden.pki import rotation
from trustwarden.pki._clock import to_rfc3339
from trustwarden.reconcile.controllers.base import (
    Controller,
)
from trustwarden.reconcile.domains import (
    DomainRuntime,
)
from trustwarden.reconcile.model import (
    CAKind,
    DeliveryMode,
)
from trustwarden.reconcile.readiness import IdentityFacts, identity_readiness
from trustwarden.reconcile.rotation_request import (
    rotation_status,
)
from trustwarden.reconcile.store import Failure
from trustwarden.reconcile.work import (
    DomainStatusKey,
    IdentityKey,
    PodKey,
)

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


class Statuses(Controller):
    """Builds the TrustDomain and WorkloadIdentity statuses from the store; the StatusWriter
    (reconcile/status.py) decides which to write and when."""

    async def flush_status(self, *, final: bool = False) -> None:
        """Write the statuses whose content changed (reconcile/status.py decides what and
        when)."""

        def build(status_key: tuple[str, str, str]) -> dict[str, Any] | None:
            kind, namespace, name = status_key
            if kind == "td":
                return self._domain_status(name)
            status = self._identity_status(namespace, name)
            if status is not None and "soonestExpiry" in status:
                self._publish_expiry(namespace, name, status["soonestExpiry"])
            return status

        await self.status.flush(build, final=final)

    def _publish_expiry(self, namespace: str, name: str, soonest: str) -> None:
        """The one place the per-identity expiry gauge is set: from the status just built."""
        at = datetime.fromisoformat(soonest)
        self.metrics.soonest_expiry.labels(namespace=namespace, identity=name).set(at.timestamp())

    def _valid_svids(self, runtime: DomainRuntime) -> int:
        """What the CRD promises in status.issued: the SVIDs of this domain that are valid
        now, counted from the managed Secrets we see (not a per-process issuance counter,
        which restarted at 0 and counted renewals too)."""
        now = self.clock()
        count = 0
        for info in self.store.secrets.values():
            if info.deleting or info.facts is None:
                continue
            entry = self.store.issued_here(info)  # only what trustwarden issued there counts
            if (
                entry is not None
                and entry.domain == runtime.name
                and self.store.allowed(
                    runtime, info.namespace
                )  # a namespace that left: not counted
            ):
                count += info.facts.not_before <= now < info.facts.not_after
        return count

    def _domain_status(self, name: str) -> dict[str, Any] | None:
        body = self.store.td_bodies.get(name)
        runtime = self.store.domains.get(name)
        if body is None:
            return None
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        status_key = DomainStatusKey(name)
        status: dict[str, Any] = {"observedGeneration": generation}
        if runtime is not None:
            namespaces = [
                ns for ns in self.store.namespaces if runtime in self.store.entitled_domains(ns)
            ]
            published = [
                ns
                for ns in namespaces
                if ns not in self.dirty_bundles
                and ns not in self.store.bundle_conflicts
                and ns in self.store.bundles
            ]
            conflicts = sorted(set(namespaces) & self.store.bundle_conflicts)
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
            if name not in self.store.domain_errors:
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
        extras = self.ctx.status_extras
        if extras is not None:
            status.update(extras("td", "", name) or {})
        status["conditions"] = self._conditions_list(status_key, generation)
        return status

    def _identity_status(self, namespace: str, name: str) -> dict[str, Any] | None:
        key = (namespace, name)
        body = self.store.wid_bodies.get(key)
        spec = self.store.wids.get(key)
        if body is None:
            return None
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        status_key = IdentityKey(namespace, name)
        status: dict[str, Any] = {"observedGeneration": generation}
        problem = self.store.problems.get(key)
        selected = issued = failed = 0
        soonest: datetime | None = None
        next_renewal: datetime | None = None
        first_failure: Failure | None = None
        now = self.clock()
        targets: list[tuple[Hashable, str | None, str]] = []
        if spec is not None and spec.mode is DeliveryMode.SHARED:
            targets.append((IdentityKey(namespace, name), spec.secret_name, spec.uid))
            status["secretName"] = spec.secret_name
        elif spec is not None:
            for pod_name in self.store.pods_by_wid.get(key, ()):
                pod = self.store.pods.get((namespace, pod_name))
                if pod is None or pod.deleting:
                    continue
                targets.append((PodKey(namespace, pod_name), pod.secret_name, pod.uid))
        extra = (
            self.ctx.status_extras("wid", namespace, name)
            if self.ctx.status_extras is not None
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
            info = self.store.secrets.get((namespace, secret_name or ""))
            # Only a certificate trustwarden issued to this very owner counts: a foreign Secret
            # holding the name (SecretConflict) or an edited one says nothing about it.
            facts = (
                info.facts
                if info is not None
                and info.facts is not None
                and self.store.ledger.issued_to(namespace, info.facts.serial, (owner_uid,))
                else None
            )
            failure = self.store.failures.get(work_key)
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
            deadline = self.ctx.deadline_of(work_key)
            if deadline is not None:
                next_renewal = deadline if next_renewal is None else min(next_renewal, deadline)
        status.update({"selectedPods": selected, "issued": issued, "failed": failed})
        if soonest is not None:
            status["soonestExpiry"] = to_rfc3339(soonest)
        if next_renewal is not None:
            status["nextRenewal"] = to_rfc3339(next_renewal)
        answer = identity_readiness(
            IdentityFacts(
                namespace=namespace,
                name=name,
                problem=problem,
                selected=selected,
                issued=issued,
                failed=failed,
                first_failure=(
                    (first_failure.reason, first_failure.message) if first_failure else None
                ),
                soonest=soonest,
            )
        )
        self._set_condition(status_key, "Ready", answer.ready, answer.reason, answer.message)
        self._set_condition(status_key, "Degraded", answer.degraded, answer.reason, answer.message)
        status["conditions"] = self._conditions_list(status_key, generation)
        return status

    def _conditions_list(
        self, status_key: tuple[str, str, str], generation: int
    ) -> list[dict[str, Any]]:
        return self.status.conditions_list(status_key, generation)
