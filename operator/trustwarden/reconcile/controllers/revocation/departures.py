from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from datetime import datetime, timedelta

from trustwarden.names import (
    REVOKE_FINALIZER,
)
from trustwarden.reconcile.controllers.base import (
    Context,
)
from trustwarden.reconcile.controllers.revocation.lists import RevocationLists
from trustwarden.reconcile.ledger import LedgerEntry
from trustwarden.reconcile.model import (
    WorkloadIdentitySpec,
)
from trustwarden.reconcile.observed import (
    SecretInfo,
)
from trustwarden.reconcile.ports import NotFoundError
from trustwarden.reconcile.state_objects import write_dirty_ledgers
from trustwarden.reconcile.work import (
    CATCH_UP,
    GoneKey,
    ReleaseKey,
)

log = logging.getLogger("trustwarden.revocation.departures")


class Revocation(RevocationLists):
    """Revocation when owners go: a deleted pod or identity, a deleted Secret our finalizer
    holds, whatever vanished while the operator was down. The finalizer is released only once
    the revocation lists holding its serials are stored; the ledger is persisted in batches."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        # Deleted Secrets we hold with REVOKE_FINALIZER: (namespace, name) -> the TrustDomains
        # whose revocation lists must be persisted before the Secret may go.
        self._held: dict[tuple[str, str], frozenset[str]] = {}
        # Deleted Secrets and the TrustDomains into which their owner's serials were revoked
        # just before: release waits for those lists to be stored.
        self._revoked_for: dict[tuple[str, str], frozenset[str]] = {}
        self._persisted: set[tuple[str, str]] = set()  # held ones whose revocation is stored
        self._ledger_flushed_at: datetime | None = None

    async def revoke_orphan(self, namespace: str, secret_name: str, owner_uid: str) -> None:
        """A pod is gone: revoke its serials and delete its Secret now, not at GC time."""
        if not self.store.domains_loaded():
            self._schedule(
                GoneKey(namespace, secret_name, owner_uid), self.clock() + timedelta(seconds=1)
            )
            return
        if not secret_name:
            # The pod's Secret annotation was edited after admission and this run never saw
            # it admitted (a restart): the ledger still knows what was issued to the pod.
            secret_name = next(
                (
                    name
                    for (ns, name), info in self.store.secrets.items()
                    if ns == namespace and owner_uid in info.owner_uids and info.managed
                ),
                "",
            )
        self.store.departed.pop((namespace, secret_name), None)
        domains = self._revoke_owner(namespace, owner_uid, "PodDeleted")
        if not secret_name:
            return
        observed = self.store.secrets.get((namespace, secret_name))
        if observed is None:
            # Not in our label-filtered cache: its managed-by label may have been removed by
            # hand. It still holds a private key and our finalizer would keep it terminating
            # for ever, so look it up and finish it if it is the one we issued to this owner.
            observed = await self._lookup_issued(namespace, secret_name, owner_uid)
        if observed is not None and observed.owner_uids and owner_uid in observed.owner_uids:
            await self._delete_issued(observed, domains)

    async def _lookup_issued(self, namespace: str, name: str, owner_uid: str) -> SecretInfo | None:
        body = await self.kube.get("Secret", namespace, name)
        if body is None:
            return None
        info = SecretInfo.from_body(body)
        if owner_uid not in info.owner_uids or REVOKE_FINALIZER not in info.finalizers:
            return None  # not one trustwarden issued to this owner: never touched
        self.store.secrets[(namespace, name)] = info
        return info

    async def revoke_identity_secrets(
        self, namespace: str, name: str, spec: WorkloadIdentitySpec | None
    ) -> None:
        owners = {spec.uid} if spec is not None and spec.uid else set()
        for (ns, secret_name), info in list(self.store.secrets.items()):
            if ns != namespace or not info.managed or info.identity != name:
                continue
            domains: set[str] = set()
            for uid in info.owner_uids:
                domains |= self._revoke_owner(ns, uid, "IdentityDeleted")
            if domains:
                log.info("revoked %s/%s: WorkloadIdentity %s deleted", ns, secret_name, name)
            await self._delete_issued(info, domains)
        for uid in owners:  # a Shared identity whose Secret is already gone
            self._revoke_owner(namespace, uid, "IdentityDeleted")

    async def _delete_issued(self, info: SecretInfo, revoked_into: set[str]) -> None:
        """Delete a Secret whose serials were just revoked into `revoked_into`. One that carries
        REVOKE_FINALIZER stays, terminating, until those revocation lists are stored (see
        _release)."""
        key = (info.namespace, info.name)
        if not info.deleting:
            with contextlib.suppress(NotFoundError):
                if not await self.kube.delete("Secret", info.namespace, info.name, uid=info.uid):
                    self.store.secrets.pop(key, None)  # a different Secret holds the name now
                    return
        if REVOKE_FINALIZER in info.finalizers:
            self.store.secrets[key] = replace(info, deleting=True)
            if revoked_into:
                self._revoked_for[key] = self._revoked_for.get(key, frozenset()) | revoked_into
            await self.release(*key)
        else:
            self.store.secrets.pop(key, None)

    async def release(self, namespace: str, name: str) -> None:
        """A Secret we issued is being deleted (by us, the garbage collector, or a person) and
        our finalizer holds it. Revoke what trustwarden issued to its owner unless that owner
        still lives (a hand deletion: the owner just gets a fresh one), and let it go once
        those revocations are in the stored revocation lists, so not even a crash right now can
        lose them."""
        key = (namespace, name)
        info = self.store.secrets.get(key)
        if info is None or not info.held:
            self._held.pop(key, None)
            self._persisted.discard(key)
            self._revoked_for.pop(key, None)
            return
        if key in self._persisted:
            self._persisted.discard(key)
            with contextlib.suppress(NotFoundError):
                await self.kube.remove_finalizer(
                    "Secret", namespace, name, REVOKE_FINALIZER, uid=info.uid
                )
            return
        if key in self._held:
            return  # the next flush decides
        if not self.store.domains_loaded():
            self._schedule(ReleaseKey(*key), self.clock() + timedelta(seconds=1))
            return
        waiting = set(self._revoked_for.pop(key, frozenset()))
        facts = info.facts
        if facts is not None and self.store.ledger.entry(namespace, facts.serial) is None:
            # Issued just before a crash, ahead of the batched ledger write: record it if its
            # contents prove it is ours (see _verified_issuance), so it is revoked below.
            entry = self._verified_issuance(info)
            if entry is not None:
                self.store.ledger.record(namespace, entry)
        issued = any(self.store.ledger.owned_by(namespace, uid) for uid in info.owner_uids)
        if issued and not await self._owner_lives(info):
            for uid in info.owner_uids:
                waiting |= self._revoke_owner(namespace, uid, "OwnerDeleted")
        if info.facts is not None:
            # Revoked earlier (an emergency revocation, then a deletion): still wait for the
            # list that holds it. Serials are random 159-bit numbers, so a copy of another
            # namespace's revoked serial only makes this Secret wait for that list's flush.
            serial = info.facts.serial
            waiting |= {d.name for d in self.store.domains.values() if serial in d.revocations}
        if waiting:
            self._held[key] = frozenset(waiting)  # flush() moves it on once they are stored
            return
        self._persisted.add(key)
        await self.release(namespace, name)

    async def _owner_lives(self, info: SecretInfo) -> bool:
        identity = (info.namespace, info.identity or "")
        if identity not in self.store.wid_bodies:
            return False  # an identity that is gone takes what it issued with it
        spec = self.store.wids.get(identity)
        if spec is not None and spec.uid in info.owner_uids:
            return True  # a Shared identity's own Secret
        for pod_name in self.store.pods_by_wid.get(identity, ()):
            pod = self.store.pods.get((info.namespace, pod_name))
            if pod is not None and pod.uid in info.owner_uids:
                # a terminating pod still lives: its Secret deleted by hand is not a revocation
                return await self._pod_lives(
                    info.namespace, pod.name, pod.uid, terminating_lives=True
                )
        return False

    async def catch_up(self) -> None:
        """After a restart: whatever was issued to an owner that vanished while we were down
        (a deleted pod or WorkloadIdentity) is revoked, and its leftover Secret deleted."""
        if not self.store.domains_loaded():
            self._schedule(CATCH_UP, self.clock() + timedelta(seconds=1))
            return
        opns = self.config.operator_namespace
        # A serial written just before a crash, ahead of the batched ledger write, lives only
        # in its Secret, which the garbage collector removes with the pod even while we are
        # down. Record every live Secret's certificate that trustwarden provably issued there
        # (signed by one of the domain's authorities, for an identity of that very namespace
        # the domain allows), before anything below revokes by the ledger.
        backfilled = 0
        for (ns, _), info in self.store.secrets.items():
            if not info.managed or ns == opns or info.facts is None or not info.owner_uids:
                continue
            if self.store.ledger.entry(ns, info.facts.serial) is not None:
                continue
            entry = self._verified_issuance(info)
            if entry is not None:
                self.store.ledger.record(ns, entry)
                backfilled += 1
        if backfilled:
            log.info("recorded %d serial(s) missing from the issuance ledger", backfilled)
            self._ledger_flushed_at = None
        live = {pod.uid for pod in self.store.pods.values()} | {
            spec.uid for spec in self.store.wids.values()
        }
        for (ns, name), info in list(self.store.secrets.items()):
            if not info.managed or ns == opns or not info.identity:
                continue
            owners = set(info.owner_uids)
            if owners and not owners & live:
                for uid in owners:
                    await self.revoke_orphan(ns, name, uid)
        # A WorkloadIdentity deleted while we were down: its per-pod Secrets are owned by pods
        # that still run, so the loop above keeps them; revoke them as the deletion would have.
        deleted_identities = {
            (ns, info.identity)
            for (ns, _), info in self.store.secrets.items()
            if info.managed and ns != opns and info.identity
            if (ns, info.identity) not in self.store.wid_bodies
        }
        for ns, identity in sorted(deleted_identities):
            log.info("WorkloadIdentity %s/%s was deleted while the operator was down", ns, identity)
            await self.revoke_identity_secrets(ns, identity, None)
        dead = {(ns, e.owner_uid) for ns, e in self.store.ledger.all() if e.owner_uid not in live}
        for ns, uid in dead:
            domains = self._revoke_owner(ns, uid, "OwnerDeletedWhileDown")
            log.info(
                "revoked the serial(s) of %s in %s (into %s), deleted while the operator was down",
                uid,
                ns,
                ", ".join(sorted(domains)) or "no live domain",
            )

    def _verified_issuance(self, info: SecretInfo) -> LedgerEntry | None:
        """The ledger entry for the certificate in a managed Secret, if its contents prove that
        trustwarden issued it to that namespace: the signature verifies against an authority of
        the domain that owns its trust domain name, its SPIFFE ID is under /ns/<namespace>/,
        and the domain allows the namespace. A copy of another namespace's certificate fails
        the path check; a look-alike fails the signature."""
        facts = info.facts
        if facts is None or facts.spiffe_id is None or facts.not_after <= self.clock():
            return None
        runtime = self.store.owning_domain(facts.spiffe_id.trust_domain)
        if runtime is None or runtime.authorities is None:
            return None
        if not facts.spiffe_id.path.startswith(f"/ns/{info.namespace}/"):
            return None
        if not self.store.allowed(runtime, info.namespace):
            return None
        issuer = next(
            (r for r in runtime.authorities.records if facts.signed_by(r.authority)), None
        )
        if issuer is None:
            return None
        return LedgerEntry(
            facts.serial, info.owner_uids[0], facts.not_after, runtime.name, issuer.sha256
        )

    async def flush(self, *, final: bool = False) -> None:
        """Store the dirty revocation lists, release the held Secrets whose serials they now
        hold, and write the ledger when due (at once when `final`)."""
        for name in list(self.dirty_revocations):
            runtime = self.store.domains.get(name)
            self.dirty_revocations.discard(name)
            if runtime is not None:
                try:
                    await self.write_revocations(runtime)
                except Exception:
                    self.dirty_revocations.add(name)
                    raise
        # Held Secrets whose serials are now stored may go (a domain revoked into since this
        # flush began is dirty again and waits for the next one).
        for key, domains in list(self._held.items()):
            if not domains & self.dirty_revocations:
                del self._held[key]
                self._persisted.add(key)
                self._schedule(ReleaseKey(*key))
        now = self.clock()
        ledger_due = (
            final
            or self._ledger_flushed_at is None
            or now - self._ledger_flushed_at >= self.config.ledger_interval
        )
        if not ledger_due:
            return
        self._ledger_flushed_at = now
        self.store.ledger.prune(now)
        await write_dirty_ledgers(
            self.kube,
            self.store.ledger,
            self.config.operator_namespace,
            role="ledger",
            log=log,
        )
