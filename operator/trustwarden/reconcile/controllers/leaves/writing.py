from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from trustwarden.pki.renewal import (
    DesiredLeaf,
)
from trustwarden.reconcile.controllers.base import (
    Context,
    Controller,
    b64,
    wid_ref,
)
from trustwarden.reconcile.controllers.leaves.target import LeafTarget
from trustwarden.reconcile.observed import (
    SecretInfo,
    metadata_digest,
)
from trustwarden.reconcile.ports import ConflictError, NotFoundError
from trustwarden.reconcile.settings import RETRY_MAX
from trustwarden.reconcile.store import Failure
from trustwarden.reconcile.work import (
    IdentityKey,
)

REPAIR_WINDOW = timedelta(minutes=10)
REPAIRS_BEFORE_BACKOFF = 3
CREATE_CONFLICT_RECHECK = 3.0


@dataclass
class RepairHistory:
    times: list[datetime] = field(default_factory=list)  # repairs done, within REPAIR_WINDOW
    not_before: datetime | None = None  # the next repair waits until then


class Writer(Controller):
    """Writes a target's Secret (create, replace, metadata repair, ca.crt refresh), and backs
    off when something else keeps changing it."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.repairs: dict[Hashable, RepairHistory] = defaultdict(RepairHistory)
        self._create_conflicts: set[Hashable] = set()  # targets whose create met a 409 once

    def forget(self, key: Hashable) -> None:
        self.repairs.pop(key, None)
        self._create_conflicts.discard(key)

    def report_conflict(self, target: LeafTarget, *, per_pod: bool) -> None:
        message = (
            f"Secret {target.namespace}/{target.secret_name} exists and was not created by "
            f"trustwarden for {target.owner.kind} {target.owner.name}; it is left untouched. "
            "Choose another secretName or delete that Secret"
        )
        self.store.failures[target.key] = Failure("SecretConflict", message)
        if not per_pod:
            self.store.problems[(target.wid.namespace, target.wid.name)] = (
                "SecretConflict",
                message,
            )
        self.dirty_status.add(IdentityKey(target.wid.namespace, target.wid.name))

    async def conflict_event(self, target: LeafTarget, *, per_pod: bool) -> None:
        failure = self.store.failures[target.key]
        await self._event(wid_ref(target.wid), "Warning", "SecretConflict", failure.message)

    async def report_fight(
        self, target: LeafTarget, now: datetime, delay: float, message: str
    ) -> None:
        """Something keeps changing or deleting this Secret: say so (failure, metric, Event)
        and repair it again only after `delay` seconds."""
        self.store.failures[target.key] = Failure("SecretFight", message)
        self.metrics.errors.labels(reason="SecretFight").inc()
        await self._event(wid_ref(target.wid), "Warning", "SecretFight", message)
        self._schedule(target.key, now + timedelta(seconds=delay))

    def repair_backoff(self, key: Hashable, now: datetime) -> float | None:
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

    async def write_secret(
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
                self.ctx.apply(self.store.observe_secret(existing))
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
            self.report_conflict(target, per_pod=per_pod)
            await self.conflict_event(target, per_pod=per_pod)
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
        entry = self.store.ledger.issued_to(target.namespace, facts.serial, (target.owner.uid,))
        if entry is None:
            return None
        renew_at = target.renew_point(desired, facts, self.config.max_jitter_fraction)
        return target.metadata(
            facts,
            issuer_sha256=entry.issuer_sha256,
            renew_at=renew_at,
            finalizers=observed.finalizers,
        )

    async def restore_metadata(
        self, target: LeafTarget, observed: SecretInfo, desired: DesiredLeaf, now: datetime
    ) -> None:
        """Put back our labels, annotations, finalizer and owner if someone stripped them: a
        Secret without its finalizer could vanish before its serial is revoked, and one without
        its labels would fall out of our watch and never be released."""
        expected = self._expected_metadata(target, observed, desired)
        if expected is None or metadata_digest(expected) == observed.meta_digest:
            return
        delay = self.repair_backoff(target.key, now)
        if delay is not None:
            await self.report_fight(
                target,
                now,
                delay,
                f"the metadata of Secret {target.namespace}/{target.secret_name} keeps being "
                f"changed by something else; restoring it again in {delay:.0f}s",
            )
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
        self.store.secrets[(target.namespace, target.secret_name)] = SecretInfo.from_body(
            written, facts=observed.facts
        )
        await self._event(
            wid_ref(target.wid),
            "Warning",
            "MetadataRestored",
            f"Secret {target.namespace}/{target.secret_name} had trustwarden's labels, "
            "annotations, finalizer or owner reference changed; restored them",
        )

    async def refresh_ca(self, target: LeafTarget, ca_pem: bytes) -> None:
        """The anchors changed (a prepared authority, federation): update ca.crt only.

        One patch with the cached resourceVersion as precondition: a Secret changed since we
        saw it answers 409 (ConflictError), and the retry judges the new content."""
        key = (target.namespace, target.secret_name)
        cached = self.store.secrets.get(key)
        if cached is None:
            return
        try:
            written = await self.kube.patch_data(
                "Secret",
                target.namespace,
                target.secret_name,
                {"ca.crt": b64(ca_pem)},
                resource_version=str(cached.resource_version),
            )
        except NotFoundError:
            return  # deleted meanwhile: its deletion is handled through the watch
        self.store.secrets[key] = SecretInfo.from_body(written)
