from __future__ import annotations

import hashlib
import time
from collections.abc import Hashable, Iterable
from datetime import datetime, timedelta

from cryptography import x509

from trustwarden.pki import bundle as bundle_mod
from trustwarden.pki._clock import to_rfc3339
from trustwarden.pki.errors import PKIError
from trustwarden.pki.issue import LeafFacts, issue_leaf
from trustwarden.pki.renewal import (
    DesiredLeaf,
    RenewalAction,
    RenewalDecision,
    RenewalReason,
    decide_renewal,
    revocation_requested,
    unreadable,
)
from trustwarden.pki.spiffe import (
    render_dns_names,
    render_spiffe_id,
)
from trustwarden.reconcile.controllers.base import (
    Context,
    Controller,
    Revoker,
    wid_ref,
)
from trustwarden.reconcile.controllers.leaves.target import LeafTarget
from trustwarden.reconcile.controllers.leaves.writing import Writer
from trustwarden.reconcile.dnspolicy import (
    DNSNameNotAllowed,
    check_dns_names,
)
from trustwarden.reconcile.domains import (
    DomainRuntime,
)
from trustwarden.reconcile.handover import HandoverPacer
from trustwarden.reconcile.ledger import LedgerEntry
from trustwarden.reconcile.model import (
    WorkloadIdentitySpec,
)
from trustwarden.reconcile.observed import (
    SecretInfo,
)
from trustwarden.reconcile.revocationquota import emergency_quota
from trustwarden.reconcile.secretbody import svid_secret
from trustwarden.reconcile.store import Failure
from trustwarden.reconcile.work import (
    DomainStatusKey,
)


class Issuer(Controller):
    """Converges one target's Secret: decide (pki/renewal.py) whether it must be issued,
    renewed, repaired, refreshed or left alone, then issue through the writer."""

    def __init__(self, ctx: Context, revoker: Revoker) -> None:
        super().__init__(ctx)
        self.revoker = revoker
        self.writer = Writer(ctx)
        self.handover = HandoverPacer(ctx.config.reissue_rate)
        self._written: set[Hashable] = set()  # targets whose Secret we wrote (repair backoff)
        self._ca_pem_cache: dict[tuple[str, ...], tuple[tuple[x509.Certificate, ...], bytes]] = {}

    def forget(self, key: Hashable) -> None:
        self.handover.forget(key)
        self._written.discard(key)
        self.writer.forget(key)

    async def converge_leaf(self, target: LeafTarget, *, per_pod: bool) -> None:
        now = self.clock()
        try:
            desired = self._desired_leaf(target)
        except DNSNameNotAllowed as exc:
            self.store.failures[target.key] = Failure(exc.reason, exc.message)
            if not per_pod:
                self.store.problems[(target.wid.namespace, target.wid.name)] = (
                    exc.reason,
                    exc.message,
                )
            await self._event(wid_ref(target.wid), "Warning", exc.reason, exc.message)
            return
        except PKIError as exc:
            reason = "InvalidTemplate"
            self.store.failures[target.key] = Failure(reason, f"{target.wid.where}: {exc}")
            if not per_pod:
                self.store.problems[(target.wid.namespace, target.wid.name)] = (reason, str(exc))
            await self._event(wid_ref(target.wid), "Warning", reason, str(exc))
            return
        observed = self.store.secrets.get((target.namespace, target.secret_name))
        if observed is not None and not observed.owned_by(target.owner.uid):
            self.writer.report_conflict(target, per_pod=per_pod)
            await self.writer.conflict_event(target, per_pod=per_pod)
            return
        if not per_pod:
            problem = self.store.problems.get((target.wid.namespace, target.wid.name))
            if problem is not None and problem[0] == "SecretConflict":
                self.store.problems.pop((target.wid.namespace, target.wid.name), None)
        if observed is not None and observed.deleting:
            self._schedule(target.key, now + timedelta(seconds=1))
            return
        facts: LeafFacts | None = observed.facts if observed is not None else None
        if observed is not None and observed.revoke_request is not None:
            # Emergency revocation requested (trustwarden revoke): the serial goes into the CRL
            # now, and the workload gets a fresh key and certificate in the same Secret.
            reason = observed.revoke_request[:256] or "requested"
            over = emergency_quota(
                target.domain.revocations.values(), target.namespace, target.domain.name
            )
            if over is not None and facts is not None:
                await self._event(
                    wid_ref(target.wid),
                    "Warning",
                    "RevocationQuotaExceeded",
                    over.message(
                        f"{target.namespace}/{target.secret_name}",
                        facts.serial_hex,
                        facts.not_after,
                    ),
                )
            elif self.revoker.revoke_current(observed, target.owner.uid, "Emergency") is not None:
                await self._event(
                    wid_ref(target.wid),
                    "Warning",
                    "Revoked",
                    f"serial {facts.serial_hex if facts else '?'} in Secret {target.namespace}/"
                    f"{target.secret_name} revoked on request: {reason}; issuing a replacement",
                )
            else:
                # Whatever the Secret holds now was not issued by trustwarden to this owner (an
                # edited or foreign certificate): it is never revoked on anyone's behalf.
                await self._event(
                    wid_ref(target.wid),
                    "Warning",
                    "RevocationRefused",
                    f"Secret {target.namespace}/{target.secret_name} asks for revocation, but "
                    f"the certificate it holds (serial {facts.serial_hex if facts else 'none'}) "
                    f"is not one trustwarden issued to {target.owner.kind} {target.owner.name}; "
                    "nothing was revoked. Issuing a replacement",
                )
            decision = revocation_requested(reason, now)
            ca_pem = self._ca_pem_for(target.wid, target.domain)
            await self._issue(target, desired, decision, observed, ca_pem, per_pod=per_pod)
            return
        if observed is not None and facts is None:
            decision = unreadable(observed.facts_error or "unreadable", now)
        else:
            decision = self._decide(
                target,
                desired,
                facts,
                now,
                expected_sha256=observed.recorded_sha256 if observed is not None else None,
            )
        if decision.reason is RenewalReason.IssuerNotActive and facts is not None:
            point = target.renew_point(desired, facts, self.config.max_jitter_fraction)
            later = self.handover.defer(target.key, target.domain.authorities, facts, point, now)
            if later is not None:  # a scheduled hand-over, or an emergency one's paced slot
                self._schedule(target.key, later)
                return
        ca_pem = self._ca_pem_for(target.wid, target.domain)
        if decision.action is RenewalAction.wait:
            assert observed is not None
            if observed.ca_sha256 != hashlib.sha256(ca_pem).hexdigest():
                await self.writer.refresh_ca(target, ca_pem)
            else:
                await self.writer.restore_metadata(target, observed, desired, now)
            self._schedule(target.key, decision.at)
            return
        # A repair: our Secret was edited, or deleted after we wrote it. If something keeps
        # doing that (another controller, a GitOps prune), back off instead of a tight loop.
        edited = observed is not None and decision.reason in (
            RenewalReason.Tampered,
            RenewalReason.Unreadable,
            RenewalReason.KeyMismatch,
        )
        recreating = observed is None and (
            target.key in self._written
            or (target.namespace, target.secret_name) in self.store.departed
        )
        if recreating and per_pod and not await self._pod_alive(target):
            # The Secret went because its pod did (garbage collection), and the pod's own
            # deletion has not reached us yet: issue nothing for a pod that is gone.
            self.ctx.apply(self.store.forget_pod_named(target.namespace, target.owner.name))
            return
        if edited or recreating:
            delay = self.writer.repair_backoff(target.key, now)
            if delay is not None:
                await self.writer.report_fight(
                    target,
                    now,
                    delay,
                    f"Secret {target.namespace}/{target.secret_name} keeps being "
                    f"{'changed' if edited else 'deleted'} by something else; "
                    f"repairing again in {delay:.0f}s",
                )
                return
        await self._issue(target, desired, decision, observed, ca_pem, per_pod=per_pod)

    def _desired_leaf(self, target: LeafTarget) -> DesiredLeaf:
        spec = target.wid
        spiffe_id = render_spiffe_id(spec.spiffe_template, target.context)
        dns = (
            tuple(render_dns_names(spec.dns_templates, target.context))
            if spec.dns_templates
            else ()
        )
        if dns:
            self.check_dns(spec, target.domain, dns)
        active = target.domain.active()
        assert active is not None
        return DesiredLeaf(
            spiffe_id=spiffe_id,
            dns_names=dns,
            ttl=spec.ttl,
            max_ttl=target.domain.spec.max_ttl,
            key_algorithm=spec.key_algorithm,
            usages=spec.usages,
            renew_at=spec.renew_at,
        )

    def check_dns(
        self, spec: WorkloadIdentitySpec, runtime: DomainRuntime, names: Iterable[str]
    ) -> None:
        info = self.store.namespaces.get(spec.namespace)
        check_dns_names(
            names,
            namespace=spec.namespace,
            labels=info.labels if info is not None else {},
            grants=runtime.spec.allowed_dns_names,
            cluster_domain=self.config.cluster_domain,
            where=spec.where,
            domain=runtime.name,
        )

    def _ca_pem_for(self, spec: WorkloadIdentitySpec, runtime: DomainRuntime) -> bytes:
        """The anchors a workload's ca.crt holds: its domain's plus its federatesWith. Cached
        per set of domains and their anchors, since every issuance asks for it."""
        now = self.clock()
        domains = [runtime] + [
            d for n in spec.federates_with if (d := self.store.domains.get(n)) is not None
        ]
        certs = tuple(c for d in domains for c in d.anchors(now))
        key = tuple(d.name for d in domains)
        cached = self._ca_pem_cache.get(key)
        # The domains hand out the same certificate objects until their anchors change, so
        # this tuple comparison is settled by identity (no DER compared) on every hit.
        if cached is None or cached[0] != certs:
            if len(self._ca_pem_cache) > 256:
                self._ca_pem_cache.clear()
            pem = bundle_mod.anchors_to_pem(bundle_mod.filter_anchors(certs, now)).encode()
            cached = self._ca_pem_cache[key] = (certs, pem)
        return cached[1]

    def _decide(
        self,
        target: LeafTarget,
        desired: DesiredLeaf,
        facts: LeafFacts | None,
        now: datetime,
        *,
        expected_sha256: str | None = None,
    ) -> RenewalDecision:
        """decide_renewal for a target, against its domain's authorities and our jitter."""
        assert target.domain.authorities is not None
        return decide_renewal(
            facts,
            desired,
            target.domain.authorities,
            now,
            jitter_key=target.jitter_key,
            max_jitter_fraction=self.config.max_jitter_fraction,
            expected_sha256=expected_sha256,
            revoked=target.domain.revocations,
        )

    async def _issue(
        self,
        target: LeafTarget,
        desired: DesiredLeaf,
        decision: RenewalDecision,
        observed: SecretInfo | None,
        ca_pem: bytes,
        *,
        per_pod: bool,
    ) -> None:
        started = time.perf_counter()
        authority = target.domain.active()
        assert authority is not None
        request = desired.to_request(authority.lifetime)
        now = self.clock()
        leaf = issue_leaf(authority, request, now, cross_chain_pem=target.domain.cross_chain_pem())
        renew_at = target.renew_point(desired, leaf, self.config.max_jitter_fraction)
        owner = target.owner
        facts = leaf.to_facts(authority)
        metadata = target.metadata(
            facts,
            issuer_sha256=authority.sha256,
            renew_at=renew_at,
            finalizers=observed.finalizers if observed else (),
        )
        body = svid_secret(metadata, leaf.secret_data(ca_pem))
        secret_key = (target.namespace, target.secret_name)
        self.store.writing[secret_key] = SecretInfo.from_body(body, facts=facts)
        try:
            written = await self.writer.write_secret(target, body, observed, per_pod=per_pod)
        finally:
            self.store.writing.pop(secret_key, None)
        if written is None:
            return
        self.store.secrets[secret_key] = SecretInfo.from_body(written, facts=facts)
        self.store.ledger.record(
            target.namespace,
            LedgerEntry(
                leaf.serial, owner.uid, leaf.not_after, target.domain.name, authority.sha256
            ),
        )
        self._written.add(target.key)
        self.metrics.issue_latency.observe(time.perf_counter() - started)
        domain = target.domain.trust_domain
        mode = "PerPod" if per_pod else "Shared"
        if decision.reason is RenewalReason.NotIssued:
            self.metrics.issued.labels(trust_domain=domain, mode=mode).inc()
        else:
            self.metrics.renewed.labels(trust_domain=domain, reason=decision.reason.value).inc()
        if not per_pod:
            verb = "Issued" if decision.reason is RenewalReason.NotIssued else "Renewed"
            await self._event(
                wid_ref(target.wid),
                "Normal",
                verb,
                f"{verb.lower()} {leaf.spiffe_id.uri} serial {leaf.serial_hex} into Secret "
                f"{target.secret_name}, valid until {to_rfc3339(leaf.not_after)} ({decision.message})",
            )
        self.dirty_status.add(DomainStatusKey(target.domain.name))
        next_decision = self._decide(target, desired, facts, now)
        self._schedule(target.key, max(next_decision.at, now + timedelta(seconds=1)))

    async def _pod_alive(self, target: LeafTarget) -> bool:
        return await self._pod_lives(target.namespace, target.owner.name, target.owner.uid)
