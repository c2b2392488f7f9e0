from __future__ import annotations

from collections.abc import Hashable

from trustwarden.names import (
    API_VERSION,
)
from trustwarden.pki.durations import format_duration
from trustwarden.pki.errors import PKIError
from trustwarden.pki.issue import ttl_cap
from trustwarden.pki.spiffe import (
    TemplateContext,
    render_dns_names,
    template_variables,
)
from trustwarden.reconcile.controllers.base import (
    Context,
    Controller,
    Revoker,
    wid_ref,
)
from trustwarden.reconcile.controllers.leaves.issuing import Issuer
from trustwarden.reconcile.controllers.leaves.target import LeafTarget
from trustwarden.reconcile.dnspolicy import (
    DNSNameNotAllowed,
)
from trustwarden.reconcile.domains import (
    DomainRuntime,
)
from trustwarden.reconcile.model import (
    DeliveryMode,
    WorkloadIdentitySpec,
)
from trustwarden.reconcile.observed import (
    PodInfo,
)
from trustwarden.reconcile.ports import ObjectRef
from trustwarden.reconcile.store import Failure
from trustwarden.reconcile.work import (
    IdentityKey,
    PodKey,
)


class Leaves(Controller):
    """Which Secret each WorkloadIdentity (Shared) or admitted pod (PerPod) gets, and whether
    it may have one now; the issuer converges each target."""

    def __init__(self, ctx: Context, revoker: Revoker) -> None:
        super().__init__(ctx)
        self.revoker = revoker
        self.issuer = Issuer(ctx, revoker)

    def forget(self, key: Hashable) -> None:
        """Drop the bookkeeping of a target that is gone."""
        self.issuer.forget(key)

    async def reconcile_identity(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        status_key = IdentityKey(namespace, name)
        spec = self.store.wids.get(key)
        if key not in self.store.wid_bodies:
            # Deleted: revoke everything it issued.
            self.store.drop_identity(namespace, name)
            self.forget(status_key)
            await self.revoker.revoke_identity_secrets(namespace, name, spec)
            self.dirty_bundles.add(namespace)
            self.status.forget(status_key)
            return
        self.dirty_status.add(status_key)
        error = self.store.wid_errors.get(key)
        if error is not None:
            self.store.problems[key] = (error.reason, error.message)
            body = self.store.wid_bodies[key]
            meta = body.get("metadata") or {}
            await self._event(
                ObjectRef(API_VERSION, "WorkloadIdentity", name, namespace, str(meta.get("uid"))),
                "Warning",
                error.reason,
                error.message + ("; the last valid spec stays in force" if spec else ""),
            )
            return
        assert spec is not None
        problem = self._identity_problem(spec)
        if isinstance(problem, tuple):
            self.store.problems[key] = problem
            await self._event(wid_ref(spec), "Warning", *problem)
            if spec.mode is DeliveryMode.SHARED and spec.secret_name:
                await self._revoke_without_replacement(spec, spec.secret_name, spec.uid)
            else:
                for pod_name in list(self.store.pods_by_wid.get(key, ())):
                    self._schedule(PodKey(namespace, pod_name))
            return
        self.store.problems.pop(key, None)
        if spec.mode is DeliveryMode.SHARED:
            assert spec.secret_name is not None
            context = TemplateContext(
                namespace=namespace,
                name=name,
                service_account=spec.service_account,
                trust_domain=problem.trust_domain,
                pod_name=None,
                pod_uid=None,
                pod_labels=None,
            )
            target = LeafTarget(
                key=IdentityKey(namespace, name),
                namespace=namespace,
                secret_name=spec.secret_name,
                owner=wid_ref(spec),
                wid=spec,
                domain=problem,
                context=context,
                jitter_key=f"{spec.uid}/{spec.secret_name}",
            )
            await self.issuer.converge_leaf(target, per_pod=False)
        else:
            for pod_name in list(self.store.pods_by_wid.get(key, ())):
                self._schedule(PodKey(namespace, pod_name))

    async def reconcile_pod(self, namespace: str, name: str) -> None:
        pod = self.store.pods.get((namespace, name))
        if pod is None or pod.deleting:
            # A terminating pod still drains connections with its certificate: it keeps it
            # until the pod is gone (forget_pod schedules the revocation then).
            return
        ns_info = self.store.namespaces.get(namespace)
        if ns_info is None or not ns_info.injection_enabled or not pod.identity:
            return  # not opted in: never touched
        key = PodKey(namespace, name)
        if not self._admitted(pod):
            await self._refuse_unadmitted(pod, key)
            return
        assert pod.secret_name is not None
        self.store.admitted_secret[pod.uid] = pod.secret_name
        spec = self.store.wids.get((namespace, pod.identity))
        if spec is None or spec.mode is not DeliveryMode.PER_POD:
            self.store.failures[key] = Failure(
                "IdentityNotFound",
                f"pod {namespace}/{name} names WorkloadIdentity {pod.identity}, which is not a PerPod identity",
            )
            return
        if spec.pod_selector is None or not spec.pod_selector.matches(pod.labels):
            self.store.failures[key] = Failure(
                "NotSelected", f"{spec.where}: spec.podSelector no longer selects pod {name}"
            )
            return
        problem = self._identity_problem(spec)
        if isinstance(problem, tuple):
            self.store.failures[key] = Failure(*problem)
            self.dirty_status.add(IdentityKey(namespace, spec.name))
            await self._revoke_without_replacement(spec, pod.secret_name, pod.uid)
            return
        context = TemplateContext(
            namespace=namespace,
            name=spec.name,
            service_account=pod.service_account,
            trust_domain=problem.trust_domain,
            pod_name=pod.name,
            pod_uid=pod.uid,
            pod_labels=pod.labels,
        )
        target = LeafTarget(
            key=key,
            namespace=namespace,
            secret_name=pod.secret_name,
            owner=ObjectRef("v1", "Pod", pod.name, namespace, pod.uid),
            wid=spec,
            domain=problem,
            context=context,
            jitter_key=pod.uid,
        )
        await self.issuer.converge_leaf(target, per_pod=True)
        self.dirty_status.add(IdentityKey(namespace, spec.name))

    def _identity_problem(self, spec: WorkloadIdentitySpec) -> tuple[str, str] | DomainRuntime:
        """Rules that need other objects; returns (reason, message) or the usable domain."""
        runtime = self.store.domains.get(spec.trust_domain_ref)
        if runtime is None:
            return (
                "TrustDomainNotFound",
                f"{spec.where}: spec.trustDomain names TrustDomain {spec.trust_domain_ref!r}, which does not exist; create it or fix the name",
            )
        if runtime.conflict is not None:
            return (
                "TrustDomainConflict",
                f"{spec.where}: spec.trustDomain names TrustDomain {runtime.name}, which is "
                f"refused: {runtime.ca_message}",
            )
        if not runtime.issues:
            return (
                "TrustDomainCannotIssue",
                f"{spec.where}: TrustDomain {runtime.name} is external (anchors only) and cannot issue; use a selfSigned or secretRef domain",
            )
        if not self.store.allowed(runtime, spec.namespace):
            return (
                "NamespaceNotAllowed",
                f"{spec.where}: TrustDomain {runtime.name} spec.policy.allowedNamespaces does not select namespace {spec.namespace}; label the namespace or change the policy",
            )
        for other in spec.federates_with:
            federated = self.store.domains.get(other)
            if federated is None:
                return (
                    "FederationNotFound",
                    f"{spec.where}: spec.federatesWith names TrustDomain {other!r}, which does not exist",
                )
            if federated.conflict is not None:
                return (
                    "TrustDomainConflict",
                    f"{spec.where}: spec.federatesWith names TrustDomain {other}, which is "
                    f"refused: {federated.ca_message}",
                )
            if not self.store.allowed(federated, spec.namespace):
                return (
                    "FederationNotAllowed",
                    f"{spec.where}: spec.federatesWith names TrustDomain {other}, whose spec.policy.allowedNamespaces does not select namespace {spec.namespace}",
                )
        active = runtime.active()
        if active is None:
            return (
                "TrustDomainNotReady",
                f"TrustDomain {runtime.name} has no active authority yet: {runtime.ca_message}",
            )
        dns_problem = self._static_dns_problem(spec, runtime)
        if dns_problem is not None:
            return dns_problem
        cap = ttl_cap(runtime.spec.max_ttl, active.lifetime)
        if spec.ttl > cap:
            return (
                "TTLAboveCap",
                f"{spec.where}: spec.ttl {format_duration(spec.ttl)} is above the cap of "
                f"TrustDomain {runtime.name} ({format_duration(cap)} = min(policy.maxTTL, CA "
                "lifetime / 6)); lower spec.ttl",
            )
        return runtime

    def _admitted(self, pod: PodInfo) -> bool:
        """Whether trustwarden's webhook admitted this pod with the Secret it names: the
        admission tag verifies for (namespace, identity, Secret). A pod admitted before tags
        existed passes only if trustwarden already issued into that Secret for this very pod
        (its ledger says so); labels, annotations and volumes alone never choose anything."""
        if pod.secret_name is None or pod.identity is None:
            return False
        if pod.admission_tag is not None:
            return self.config.admission_key.verify(
                pod.admission_tag, pod.namespace, pod.identity, pod.secret_name
            )
        observed = self.store.secrets.get((pod.namespace, pod.secret_name))
        return (
            observed is not None
            and observed.owned_by(pod.uid)
            and bool(self.store.ledger.owned_by(pod.namespace, pod.uid))
        )

    async def _refuse_unadmitted(self, pod: PodInfo, key: Hashable) -> None:
        why = (
            "its trustwarden-svid volume does not mount the Secret the webhook named"
            if pod.volume_mismatch
            else "it carries no valid admission tag (created before the namespace opted in, "
            "or labelled by hand)"
        )
        message = (
            f"pod {pod.namespace}/{pod.name} was not admitted by trustwarden's injection "
            f"webhook: {why}; it gets no certificate. Recreate it (e.g. kubectl rollout "
            "restart) so the webhook injects its identity"
        )
        self.store.failures[key] = Failure("NotAdmitted", message)
        self.dirty_status.add(IdentityKey(pod.namespace, pod.identity or ""))
        await self._event(
            ObjectRef("v1", "Pod", pod.name, pod.namespace, pod.uid),
            "Warning",
            "NotAdmitted",
            message,
        )
        spec = self.store.wids.get((pod.namespace, pod.identity or ""))
        if spec is not None:  # and where the identity's owner looks
            await self._event(wid_ref(spec), "Warning", "NotAdmitted", message)

    async def _revoke_without_replacement(
        self, spec: WorkloadIdentitySpec, secret_name: str, owner_uid: str
    ) -> None:
        """`trustwarden revoke` must work even while an identity cannot be issued (e.g. its
        namespace left the domain's allowedNamespaces): revoke what trustwarden issued into
        the Secret; no replacement can be issued until the problem is fixed."""
        observed = self.store.secrets.get((spec.namespace, secret_name))
        if observed is None or observed.revoke_request is None or observed.facts is None:
            return
        if self.revoker.revoke_current(observed, owner_uid, "Emergency") is not None:
            await self._event(
                wid_ref(spec),
                "Warning",
                "Revoked",
                f"serial {observed.facts.serial_hex} in Secret {spec.namespace}/{secret_name} "
                f"revoked on request: {observed.revoke_request[:256]}; no replacement is issued "
                "until the identity's problem is fixed",
            )

    def _static_dns_problem(
        self, spec: WorkloadIdentitySpec, runtime: DomainRuntime
    ) -> tuple[str, str] | None:
        """DNS names that do not depend on a pod are judged once per identity, so a refused
        name shows on the WorkloadIdentity before any pod exists."""
        pod_free = {"namespace", "name", "trustDomain"}
        static = []
        for template in spec.dns_templates:
            try:
                if template_variables(template) <= pod_free:
                    static.append(template)
            except PKIError:
                continue  # reported as InvalidTemplate when rendered
        if not static:
            return None
        context = TemplateContext(
            namespace=spec.namespace,
            name=spec.name,
            service_account=spec.service_account,
            trust_domain=runtime.trust_domain,
            pod_name=None,
            pod_uid=None,
            pod_labels=None,
        )
        try:
            self.issuer.check_dns(spec, runtime, render_dns_names(static, context))
        except DNSNameNotAllowed as exc:
            return exc.reason, exc.message
        except PKIError:
            return None
        return None
