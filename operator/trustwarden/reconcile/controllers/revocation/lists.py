from __future__ import annotations

from datetime import datetime

from trustwarden.names import (
    TRUST_DOMAIN_ANNOTATION,
)
from trustwarden.reconcile.controllers.base import (
    Controller,
    domain_ref,
)
from trustwarden.reconcile.domains import (
    DomainRuntime,
    revocations_name,
)
from trustwarden.reconcile.ledger import LedgerEntry
from trustwarden.reconcile.observed import (
    SecretInfo,
)
from trustwarden.reconcile.ports import ObjectRef
from trustwarden.reconcile.work import (
    DomainStatusKey,
)

# A certificate found in a Secret is never evidence of anything: a tenant can write any
# bytes into its own Secrets, including a look-alike (or a verbatim copy, leaves are public)
# of another namespace's certificate. Only what trustwarden itself recorded when it issued
# (the ledger, kept in memory at once and persisted in batches) is revoked, and only on
# behalf of the owner it was issued to.


class RevocationLists(Controller):
    """Serials into each domain's revocation list, by ledger entry only; the list's store."""

    def _revoke(
        self,
        runtime: DomainRuntime,
        serial: int,
        issuer: str,
        not_after: datetime,
        reason: str,
        *,
        namespace: str = "",
    ) -> bool:
        if runtime.revoke(serial, issuer, not_after, self.clock(), reason, namespace=namespace):
            self.metrics.revoked.labels(trust_domain=runtime.trust_domain, reason=reason).inc()
            self.dirty_revocations.add(runtime.name)
            self._mark_domain_bundles(runtime)
            self.dirty_status.add(DomainStatusKey(runtime.name))
            return True
        return False

    def revoke_entry(self, namespace: str, entry: LedgerEntry, reason: str) -> str | None:
        """Revoke one serial trustwarden issued; the TrustDomain it went into, if any."""
        runtime = self.store.domains.get(entry.domain)
        if runtime is None:
            return None
        if self._revoke(
            runtime,
            entry.serial,
            entry.issuer_sha256,
            entry.not_after,
            reason,
            namespace=namespace,
        ):
            owner = self.store.owner_key(entry.owner_uid)
            if owner is not None:
                self._schedule(owner)  # a live owner gets a fresh certificate now
        return runtime.name

    def _revoke_owner(self, namespace: str, owner_uid: str, reason: str) -> set[str]:
        """Revoke every ledger serial of a dead owner, current and superseded ones alike; the
        TrustDomains whose revocation lists now hold them."""
        domains: set[str] = set()
        revoked = []
        for entry in self.store.ledger.owned_by(namespace, owner_uid):
            domain = self.revoke_entry(namespace, entry, reason)
            if domain is not None:
                domains.add(domain)
            revoked.append(entry.serial)
        self.store.ledger.forget(namespace, revoked)
        return domains

    def revoke_current(self, info: SecretInfo, owner_uid: str, reason: str) -> str | None:
        """Revoke the certificate a Secret holds, if trustwarden issued exactly that serial to
        `owner_uid` in that namespace. Anything else in the Secret is ignored."""
        facts = info.facts
        if facts is None:
            return None
        entry = self.store.ledger.issued_to(info.namespace, facts.serial, (owner_uid,))
        if entry is None:
            return None
        domain = self.revoke_entry(info.namespace, entry, reason)
        self.store.ledger.forget(info.namespace, [entry.serial])
        return domain

    async def refuse_targetless_revocation(self, namespace: str, name: str) -> None:
        """A Secret asks for revocation but is no identity's or admitted pod's Secret (e.g. one
        made by hand, labelled as ours): it revokes nothing, and says so where its author
        looks. A target's own Secret is answered by the target (Revoked or RevocationRefused)."""
        info = self.store.secrets.get((namespace, name))
        if info is None or info.revoke_request is None:
            return
        if self.store.is_target_secret(namespace, name, info.identity):
            return
        await self._event(
            ObjectRef("v1", "Secret", name, namespace, info.uid),
            "Warning",
            "RevocationRefused",
            f"Secret {namespace}/{name} asks for revocation, but trustwarden issued nothing into "
            "it for a WorkloadIdentity or an admitted pod of this namespace; nothing was revoked. "
            "A certificate in a Secret is never evidence: trustwarden revokes only what its "
            "ledger says it issued to that owner",
        )

    async def write_revocations(self, runtime: DomainRuntime) -> None:
        await self._upsert_state(
            "ConfigMap",
            revocations_name(runtime.name),
            role="revocations",
            annotations={TRUST_DOMAIN_ANNOTATION: runtime.trust_domain},
            payload={"data": runtime.revocations_data(self.clock())},
            exists=runtime.revocations_exist,
        )
        runtime.revocations_exist = True
        await self.note_revocation_load(runtime)

    async def note_revocation_load(self, runtime: DomainRuntime) -> None:
        """Say, long before the 1 MiB limit, that a domain's revocation list is growing large:
        metric always, condition (via status) and an Event when it crosses into degraded."""
        load = runtime.revocation_load()
        was_degraded = runtime.last_load is not None and runtime.last_load.degraded
        runtime.last_load = load
        self.metrics.revocation_entries.labels(trust_domain=runtime.trust_domain).set(load.entries)
        self.metrics.revocation_store_ratio.labels(trust_domain=runtime.trust_domain).set(
            load.fraction
        )
        if load.degraded != was_degraded:
            self.dirty_status.add(DomainStatusKey(runtime.name))
        if load.degraded and not was_degraded:
            await self._event(
                domain_ref(runtime),
                "Warning",
                "RevocationListLarge",
                load.message(runtime.name),
            )
