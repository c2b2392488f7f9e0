from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from trustwarden.names import (
    ROTATE_ANNOTATION,
)
from trustwarden.pki import rotation
from trustwarden.pki._clock import to_rfc3339
from trustwarden.pki.ca import (
    Authority,
    create_self_signed_ca,
)
from trustwarden.pki.errors import PKIError
from trustwarden.reconcile.controllers.authorities.casecret import CASecrets
from trustwarden.reconcile.controllers.base import (
    Context,
    Controller,
    Revoker,
    domain_ref,
)
from trustwarden.reconcile.domains import (
    DomainRuntime,
    ca_secret_name,
    decode_authorities,
)
from trustwarden.reconcile.rotation_request import (
    RotationMode,
    RotationRequestError,
    parse_request,
    started_message,
)
from trustwarden.reconcile.work import (
    DomainStatusKey,
)


class SelfSigned(Controller):
    """A selfSigned domain: mint, restore, recover and rotate its authorities
    (pki/rotation.py decides each step)."""

    def __init__(self, ctx: Context, ca: CASecrets, revoker: Revoker) -> None:
        super().__init__(ctx)
        self.ca = ca
        self.revoker = revoker

    def _make_authority(self, runtime: DomainRuntime) -> Callable[[datetime], Authority]:
        spec = runtime.spec

        def make(now: datetime) -> Authority:
            return create_self_signed_ca(
                spec.trust_domain, spec.key_algorithm, spec.ca_ttl, now=now
            )

        return make

    async def converge_self_signed(
        self, runtime: DomainRuntime, body: Mapping[str, Any], now: datetime
    ) -> datetime | None:
        opns = self.config.operator_namespace
        secret_name = ca_secret_name(runtime.name)
        observed = self.store.secrets.get((opns, secret_name))
        if runtime.authorities is None:
            stored = await self.kube.get("Secret", opns, secret_name)
            if stored is not None:
                try:
                    runtime.authorities = decode_authorities(stored.get("data") or {}, now)
                    await self.ca.load_orphan_anchors(runtime, stored)
                    handled = (stored.get("data") or {}).get("rotation-request")
                    runtime.rotation_handled = (
                        base64.b64decode(handled).decode() if handled else None
                    )
                except (PKIError, KeyError, ValueError) as exc:
                    await self._recover_lost_ca(
                        runtime, body, now, f"the CA Secret is corrupted ({exc})"
                    )
            else:
                await self._recover_lost_ca(runtime, body, now, "the CA Secret does not exist")
        elif observed is None or observed.data_digest != self.ca.ca_data_digest(runtime):
            # The CA Secret was deleted or edited while we hold the authorities in memory:
            # restore it exactly; no new root, no trust gap.
            what = "deleted" if observed is None else "modified"
            await self.ca.write_ca_secret(runtime)
            self.metrics.ca_recoveries.labels(
                trust_domain=runtime.trust_domain, outcome="restored"
            ).inc()
            await self._event(
                domain_ref(runtime),
                "Warning",
                "CASecretRestored",
                f"CA Secret {opns}/{secret_name} was {what}; restored it from memory (no new root was minted)",
            )
        assert runtime.authorities is not None
        await self._maybe_force_rotate(runtime, body, now)
        aset = runtime.authorities
        waiting_recovery = (
            aset.active_record is None
            and aset.prepared_record is not None
            and aset.prepared_record.planned_activation is not None
            and aset.prepared_record.planned_activation > now
        )
        transitions: list[rotation.Transition] = []
        if not waiting_recovery:
            prepared = aset.prepared_record
            activating = prepared is not None and now >= (
                prepared.planned_activation
                or (aset.active_record.successor_activate_at if aset.active_record else now)
            )
            if (
                activating
                and prepared is not None
                and not self._anchor_published(runtime, prepared.sha256)
            ):
                # Never let an authority sign before its anchor is in every entitled bundle.
                runtime.ca_reason = "WaitingForBundles"
                self._mark_domain_bundles(runtime)
                return now + timedelta(seconds=2)
            new_set, transitions = rotation.advance(aset, now, self._make_authority(runtime))
            if transitions:
                runtime.authorities = new_set
                await self.ca.write_ca_secret(runtime)
                for transition in transitions:
                    await self._event(
                        domain_ref(runtime),
                        "Normal",
                        f"Authority{transition.kind.value.capitalize()}",
                        f"authority {transition.serial_hex}: {transition.reason}",
                    )
        active = runtime.active()
        if active is None:
            runtime.ca_ready = False
            runtime.ca_reason = "CARecovering"
            prepared_at = aset.prepared_record.planned_activation if aset.prepared_record else None
            runtime.ca_message = (
                "the CA key was lost; a new authority is published in the bundles and becomes "
                f"active at {to_rfc3339(prepared_at) if prepared_at else 'soon'}; existing "
                "certificates stay trusted until they expire"
            )
            return prepared_at
        runtime.ca_ready, runtime.ca_reason = True, "Active"
        runtime.ca_message = (
            f"active authority {active.serial_hex} valid until {to_rfc3339(active.not_after)}"
        )
        pending = rotation.pending_activation(runtime.authorities)
        if pending is not None and pending[0].planned_activation is not None:
            runtime.ca_message += (
                f"; authority {pending[0].serial_hex} activates at {to_rfc3339(pending[1])}: "
                f"{pending[2]}"
            )
        return rotation.next_event_at(runtime.authorities)

    async def _maybe_force_rotate(
        self, runtime: DomainRuntime, body: Mapping[str, Any], now: datetime
    ) -> None:
        """`trustwarden ca rotate` sets the rotate annotation to a new value: prepare a
        successor now, publish it, and activate it as reconcile/rotation_request.py plans
        (and only once every entitled bundle holds it); `compromised` activates at once."""
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        aset = runtime.authorities
        request = annotations.get(ROTATE_ANNOTATION)
        if (
            not request
            or request == runtime.rotation_handled
            or aset is None
            or aset.active_record is None
        ):
            return
        try:
            req = parse_request(
                runtime.name,
                annotations,
                now,
                propagation_delay=self.config.propagation_delay,
                floor=self.config.min_activate_after,
            )
        except RotationRequestError as exc:
            await self._event(domain_ref(runtime), "Warning", "InvalidRotationRequest", str(exc))
            return
        assert req is not None
        old = aset.active_record
        runtime.authorities = rotation.force_rotate(
            aset,
            now,
            self._make_authority(runtime),
            req.activate_after,
            mode=req.mode,
            activation_reason=req.plan.reason,
        )
        runtime.rotation_handled = request
        await self.ca.write_ca_secret(runtime)
        if req.mode is RotationMode.compromised:
            # Every certificate the old key signed goes on its CRL (only what the ledger
            # says trustwarden issued); the owners get new ones from the new authority now.
            for namespace, entry in list(self.store.ledger.all()):
                if entry.domain == runtime.name and entry.issuer_sha256 == old.sha256:
                    self.revoker.revoke_entry(namespace, entry, "cACompromise")
        self._mark_domain_bundles(runtime)
        self._reschedule_domain_identities(runtime.name)
        self.dirty_status.add(DomainStatusKey(runtime.name))
        new = runtime.authorities.prepared_record or runtime.authorities.active_record
        await self._event(
            domain_ref(runtime),
            "Normal",
            "RotationStarted",
            started_message(req, new.serial_hex if new else "?"),
        )
        if req.warning:
            await self._event(domain_ref(runtime), "Warning", "RotationRisk", req.warning)

    async def _recover_lost_ca(
        self, runtime: DomainRuntime, body: Mapping[str, Any], now: datetime, why: str
    ) -> None:
        had_authorities = bool((body.get("status") or {}).get("authorities"))
        make = self._make_authority(runtime)
        if not had_authorities:
            runtime.authorities, _ = rotation.advance(rotation.AuthoritySet(()), now, make)
            await self.ca.write_ca_secret(runtime)
            await self._event(
                domain_ref(runtime),
                "Normal",
                "CACreated",
                f"created self-signed authority {runtime.authorities.active_record.serial_hex if runtime.authorities.active_record else ''}",
            )
            return
        # The key is gone: the old anchors stay in the bundles (read back from a published
        # bundle) until they expire, and the new root is published before it signs anything.
        runtime.orphan_anchors = tuple(
            c for c in await self.ca.published_anchors(runtime) if c.not_valid_after_utc > now
        )
        new_authority = make(now)
        runtime.authorities = rotation.AuthoritySet(
            (
                rotation.AuthorityRecord(
                    new_authority,
                    rotation.AuthorityState.Prepared,
                    prepared_at=now,
                    planned_activation=now + self.config.ca_recovery_grace,
                ),
            )
        )
        await self.ca.write_ca_secret(runtime)
        self.metrics.ca_recoveries.labels(
            trust_domain=runtime.trust_domain, outcome="replaced"
        ).inc()
        self._mark_domain_bundles(runtime)
        await self._event(
            domain_ref(runtime),
            "Warning",
            "CASecretLost",
            f"{why} and no copy is held in memory: minted authority {new_authority.serial_hex}, "
            f"published it in the bundles and will activate it in {self.config.ca_recovery_grace}; "
            f"{len(runtime.orphan_anchors)} previous anchor(s) stay trusted until they expire",
        )
