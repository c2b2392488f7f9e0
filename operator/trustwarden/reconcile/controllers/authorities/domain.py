from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from trustwarden.names import (
    API_VERSION,
)
from trustwarden.pki._x509util import sha256_hex
from trustwarden.pki.ca import (
    load_anchors,
)
from trustwarden.pki.errors import PKIError
from trustwarden.reconcile.controllers.authorities.casecret import CASecrets
from trustwarden.reconcile.controllers.authorities.secretref import SECRET_REF_POLL, SecretRef
from trustwarden.reconcile.controllers.authorities.selfsigned import SelfSigned
from trustwarden.reconcile.controllers.base import (
    Context,
    Controller,
    Revoker,
    domain_ref,
)
from trustwarden.reconcile.domains import (
    DomainRuntime,
)
from trustwarden.reconcile.model import (
    CAKind,
    SpecError,
    TrustDomainSpec,
)
from trustwarden.reconcile.ports import ObjectRef
from trustwarden.reconcile.work import (
    DomainKey,
    DomainStatusKey,
)


class Authorities(Controller):
    """A TrustDomain's CA lifecycle: parse, claim its trust domain name, converge its
    authorities by kind, schedule its next transition and CRL refresh."""

    def __init__(self, ctx: Context, revoker: Revoker) -> None:
        super().__init__(ctx)
        self.revoker = revoker
        self.ca = CASecrets(ctx)
        self.self_signed = SelfSigned(ctx, self.ca, revoker)
        self.secret_ref = SecretRef(ctx, self.ca)
        self._ca_series: dict[str, set[tuple[str, str, str]]] = {}

    async def reconcile_domain(self, name: str) -> None:
        body = self.store.td_bodies.get(name)
        status_key = DomainStatusKey(name)
        if body is None:
            runtime = self.store.domains.pop(name, None)
            if runtime is not None:
                self.dirty_bundles.update(self.store.namespaces)
                self._reschedule_domain_identities(name)
            return
        try:
            spec = TrustDomainSpec.from_body(body)
        except SpecError as exc:
            self.store.domain_errors.add(name)  # its status says why; the last spec stays
            runtime = self.store.domains.get(name)
            if runtime is None:
                self.store.invalid_domains.add(name)  # nothing to load: it must not block the rest
            self._set_condition(status_key, "Ready", False, exc.reason, exc.message)
            if runtime is None:
                self._set_condition(status_key, "CAReady", False, exc.reason, exc.message)
            self.dirty_status.add(status_key)
            await self._event(
                ObjectRef(
                    API_VERSION,
                    "TrustDomain",
                    name,
                    None,
                    str((body.get("metadata") or {}).get("uid")),
                ),
                "Warning",
                exc.reason,
                exc.message,
            )
            return
        self.store.invalid_domains.discard(name)
        self.store.domain_errors.discard(name)
        runtime = self.store.domains.get(name)
        owner = self.store.trust_domain_owner(spec.trust_domain)
        if owner != name:
            await self._refuse_claim(name, owner, spec, runtime)
            return
        if runtime is None:
            runtime = DomainRuntime(spec=spec)
            self.store.domains[name] = runtime
        elif runtime.conflict is not None:
            runtime.conflict = None  # the older claim went away: this one owns the name now
            self._mark_domain_bundles(runtime)
            self._reschedule_domain_identities(name)
        previous_spec = runtime.spec
        runtime.spec = spec
        now = self.clock()
        anchors_before = {sha256_hex(c) for c in runtime.anchors(now)}
        active_before = runtime.active()
        if not runtime.loaded:
            await self.ca.load_revocations(runtime)
        next_at: datetime | None = None
        try:
            if spec.ca_kind is CAKind.SELF_SIGNED:
                next_at = await self.self_signed.converge_self_signed(runtime, body, now)
            elif spec.ca_kind is CAKind.SECRET_REF:
                next_at = await self.secret_ref.converge_secret_ref(runtime, now)
            else:
                runtime.external_anchors = tuple(
                    load_anchors(str(spec.external_bundle).encode(), now)
                )
                runtime.ca_ready, runtime.ca_reason = True, "AnchorsLoaded"
                runtime.ca_message = f"{len(runtime.external_anchors)} external anchor(s) loaded"
                soonest = min(
                    (c.not_valid_after_utc for c in runtime.external_anchors), default=None
                )
                next_at = soonest
        except PKIError as exc:
            runtime.ca_ready, runtime.ca_reason, runtime.ca_message = False, "CAInvalid", str(exc)
            self.metrics.errors.labels(reason="CAInvalid").inc()
            await self._event(domain_ref(runtime), "Warning", "CAInvalid", str(exc))
            next_at = now + SECRET_REF_POLL
        if runtime.authorities is not None and runtime.bound_revocations():
            self.dirty_revocations.add(name)  # entries an earlier version took at their word
            self._mark_domain_bundles(runtime)
        if not runtime.loaded and runtime.stored_revocations is not None:
            runtime.reuse_stored_crl(runtime.stored_revocations, now)
            runtime.stored_revocations = None
        first_load = not runtime.loaded
        runtime.loaded = True
        anchors_after = {sha256_hex(c) for c in runtime.anchors(now)}
        if anchors_after != anchors_before or previous_spec != spec:
            self._mark_domain_bundles(runtime)
            self._reschedule_domain_identities(name)
        active_after = runtime.active()
        if active_after is not None and (
            active_before is None or active_before.sha256 != active_after.sha256
        ):
            self._reschedule_domain_identities(name)
        if runtime.issues:
            crl_due = (runtime.crl_built_at or now) + timedelta(hours=12)
            next_at = min(x for x in (next_at, crl_due) if x is not None)
            if runtime.prune_revocations(now):
                self.dirty_revocations.add(name)
                self._mark_domain_bundles(runtime)
        self._publish_ca_metrics(runtime)
        if first_load:
            # A list that was already large when we started must say so now, not at the
            # next write (which may never come).
            await self.revoker.note_revocation_load(runtime)
        self.dirty_status.add(status_key)
        if next_at is not None:
            self._schedule(DomainKey(name), max(next_at, now + timedelta(seconds=1)))

    async def _refuse_claim(
        self,
        name: str,
        owner: str | None,
        spec: TrustDomainSpec,
        runtime: DomainRuntime | None,
    ) -> None:
        if runtime is None:
            runtime = self.store.domains[name] = DomainRuntime(spec=spec)
        newly = runtime.conflict != owner
        runtime.spec = spec
        runtime.conflict = owner or ""
        runtime.ca_ready, runtime.ca_reason = False, "TrustDomainConflict"
        runtime.ca_message = (
            f"TrustDomain {name}: spec.trustDomain {spec.trust_domain!r} is already owned by "
            f"TrustDomain {owner}, the older claim; this one is ignored: it issues nothing and "
            "none of its anchors reach any bundle. Choose another spec.trustDomain, or delete "
            "one of the two"
        )
        self.dirty_status.add(DomainStatusKey(name))
        if newly:
            self._mark_domain_bundles(runtime)
            self._reschedule_domain_identities(name)
            await self._event(
                domain_ref(runtime), "Warning", "TrustDomainConflict", runtime.ca_message
            )
            owner_runtime = self.store.domains.get(owner or "")
            if owner_runtime is not None:
                await self._event(
                    domain_ref(owner_runtime),
                    "Warning",
                    "TrustDomainConflict",
                    f"TrustDomain {name} also claims spec.trustDomain {spec.trust_domain!r}, "
                    f"which TrustDomain {owner} owns; the later claim is ignored",
                )

    def _publish_ca_metrics(self, runtime: DomainRuntime) -> None:
        if runtime.authorities is None:
            return
        current = {
            (runtime.trust_domain, r.serial_hex, r.state.value): r.authority.not_after.timestamp()
            for r in runtime.authorities.records
        }
        # Drop series of authorities that changed state or were dropped, so no stale
        # Prepared/Active series lingers next to the current one.
        for labels in self._ca_series.get(runtime.name, set()) - set(current):
            with contextlib.suppress(KeyError):
                self.metrics.ca_not_after.remove(*labels)
        for labels, value in current.items():
            self.metrics.ca_not_after.labels(*labels).set(value)
        self._ca_series[runtime.name] = set(current)
