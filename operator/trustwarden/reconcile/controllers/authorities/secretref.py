from __future__ import annotations

import base64
from dataclasses import replace
from datetime import datetime, timedelta

from trustwarden.pki import rotation
from trustwarden.pki._clock import to_rfc3339
from trustwarden.pki.ca import (
    load_authority_from_pem,
)
from trustwarden.pki.errors import PKIError
from trustwarden.reconcile.controllers.authorities.casecret import CASecrets
from trustwarden.reconcile.controllers.base import (
    Context,
    Controller,
    domain_ref,
)
from trustwarden.reconcile.domains import (
    DomainRuntime,
    ca_secret_name,
    decode_authorities,
)

SECRET_REF_POLL = timedelta(seconds=30)


class CASourceError(PKIError):
    """A CA source problem reported on the TrustDomain."""


class SecretRef(Controller):
    """A secretRef domain: load the CA from the user's Secret, publish a new one before it
    signs, retire the previous one once its leaves expire."""

    def __init__(self, ctx: Context, ca: CASecrets) -> None:
        super().__init__(ctx)
        self.ca = ca

    async def converge_secret_ref(self, runtime: DomainRuntime, now: datetime) -> datetime:
        opns = self.config.operator_namespace
        assert runtime.spec.secret_name is not None
        where = f"Secret {opns}/{runtime.spec.secret_name} (spec.ca.secretRef of TrustDomain {runtime.name})"
        if runtime.authorities is None:
            stored = await self.kube.get("Secret", opns, ca_secret_name(runtime.name))
            if stored is not None:
                try:
                    runtime.authorities = decode_authorities(stored.get("data") or {}, now)
                except (PKIError, KeyError, ValueError):
                    runtime.authorities = None
        source = await self.kube.get("Secret", opns, runtime.spec.secret_name)
        if source is None:
            raise CASourceError(
                f"{where} does not exist; create it with tls.crt, tls.key and ca.crt"
            )
        data = source.get("data") or {}
        try:
            chain = base64.b64decode(data.get("tls.crt", ""))
            key = base64.b64decode(data.get("tls.key", ""))
            root = base64.b64decode(data["ca.crt"]) if data.get("ca.crt") else None
        except ValueError as exc:
            raise CASourceError(f"{where}: data is not valid base64") from exc
        authority = load_authority_from_pem(chain, key, root, now, source=where)
        aset = runtime.authorities or rotation.AuthoritySet(())
        changed = False
        next_at = now + SECRET_REF_POLL
        active = aset.active_record
        if active is None:
            # The first CA of this domain: nothing was signed or published before it.
            aset = rotation.AuthoritySet(
                (
                    *aset.records,
                    rotation.AuthorityRecord(
                        authority, rotation.AuthorityState.Active, activated_at=now
                    ),
                )
            )
            changed = True
        elif active.sha256 != authority.sha256:
            # A new CA in the Secret: publish its root first, sign with it only once every
            # entitled bundle holds it; the old one stays until its leaves expire.
            prepared = aset.prepared_record
            if prepared is None or prepared.sha256 != authority.sha256:
                records = [
                    r for r in aset.records if r.state is not rotation.AuthorityState.Prepared
                ]
                records.append(
                    rotation.AuthorityRecord(
                        authority, rotation.AuthorityState.Prepared, prepared_at=now
                    )
                )
                aset, changed = rotation.AuthoritySet(tuple(records)), True
                runtime.authorities = aset
                self._mark_domain_bundles(runtime)
                await self._event(
                    domain_ref(runtime),
                    "Normal",
                    "AuthorityPrepared",
                    f"{where} holds a new CA {authority.serial_hex}; publishing its root before it signs",
                )
            runtime.authorities = aset
            if self._anchor_published(runtime, authority.sha256):
                records = []
                for record in aset.records:
                    if record.state is rotation.AuthorityState.Active:
                        record = replace(
                            record, state=rotation.AuthorityState.Retired, retired_at=now
                        )
                    elif record.sha256 == authority.sha256:
                        record = replace(
                            record, state=rotation.AuthorityState.Active, activated_at=now
                        )
                    records.append(record)
                aset, changed = rotation.AuthoritySet(tuple(records)), True
                await self._event(
                    domain_ref(runtime),
                    "Normal",
                    "AuthorityActivated",
                    f"CA {authority.serial_hex} from {where} is in every bundle and now signs; "
                    "the previous one stays in bundles until its leaves expire",
                )
            else:
                next_at = now + timedelta(seconds=2)
        kept = tuple(
            r
            for r in aset.records
            if r.state is not rotation.AuthorityState.Retired or now < r.drop_at
        )
        if len(kept) != len(aset.records):
            aset, changed = rotation.AuthoritySet(kept), True
        runtime.authorities = aset
        if changed or (opns, ca_secret_name(runtime.name)) not in self.store.secrets:
            await self.ca.write_ca_secret(runtime)
        current = aset.active_authority
        assert current is not None
        runtime.ca_ready, runtime.ca_reason = True, "Active"
        runtime.ca_message = (
            f"loaded {where}: CA {current.serial_hex} valid until {to_rfc3339(current.not_after)}"
        )
        return next_at
