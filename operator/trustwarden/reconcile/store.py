"""The ClusterStore: what was observed, indexed once, and the queries every controller shares.

`observe_*` and `forget_*` take an object as the API server (or a reflector) delivers it,
update the caches and indexes, and return the `Changes` it implies (work keys to run, bundles
and statuses to recompute). The store never schedules and never writes: the engine applies the
changes, the controllers act. Readers outside reconcile (the webhook) use its queries, such as
`identities_in(namespace)`.
"""

from __future__ import annotations

import logging
import zlib
from collections import defaultdict
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from trustwarden.names import CA_SECRET_PREFIX, LEDGER_PREFIX
from trustwarden.reconcile.domains import DomainRuntime, ca_secret_name
from trustwarden.reconcile.ledger import DEFAULT_SHARDS, LEDGER_KEY, Ledger, LedgerEntry
from trustwarden.reconcile.model import DeliveryMode, SpecError, WorkloadIdentitySpec
from trustwarden.reconcile.observed import BundleInfo, NamespaceInfo, PodInfo, SecretInfo
from trustwarden.reconcile.work import (
    Changes,
    DomainKey,
    DomainStatusKey,
    GoneKey,
    IdentityKey,
    PodKey,
    RefuseKey,
    ReleaseKey,
)

log = logging.getLogger("trustwarden.store")

DEPARTED_MAX = 10_000


@dataclass
class Failure:
    """Why a work key's last run did not converge; shown in the owner's status."""

    reason: str
    message: str
    attempts: int = 1


class ClusterStore:
    def __init__(
        self,
        operator_namespace: str,
        watch_namespaces: frozenset[str] | None,
        *,
        ledger_shards: int = DEFAULT_SHARDS,
    ) -> None:
        self.operator_namespace = operator_namespace
        self.watch_namespaces = watch_namespaces
        # observed objects
        self.td_bodies: dict[str, Mapping[str, Any]] = {}
        self.domains: dict[str, DomainRuntime] = {}
        self.invalid_domains: set[str] = set()  # TrustDomains whose spec never parsed
        self.domain_errors: set[str] = set()  # TrustDomains whose current spec does not parse
        self.wids: dict[tuple[str, str], WorkloadIdentitySpec] = {}
        self.wid_bodies: dict[tuple[str, str], Mapping[str, Any]] = {}
        self.wid_errors: dict[tuple[str, str], SpecError] = {}
        self.wids_by_ns: dict[str, set[str]] = defaultdict(set)
        self.pods: dict[tuple[str, str], PodInfo] = {}
        self.pods_by_wid: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.secrets: dict[tuple[str, str], SecretInfo] = {}
        self.bundles: dict[str, BundleInfo] = {}
        self.bundle_conflicts: set[str] = set()  # namespaces whose bundle name is foreign
        self.namespaces: dict[str, NamespaceInfo] = {}
        # what trustwarden issued, per namespace (persisted by the revocation controller)
        self.ledger = Ledger(LEDGER_PREFIX, ledger_shards)
        # per work key: why its last run failed; per identity: what keeps it from issuing
        self.failures: dict[Hashable, Failure] = {}
        self.problems: dict[tuple[str, str], tuple[str, str]] = {}
        # Owner UID -> its work key, so an owner whose serial is revoked while it lives is
        # reissued at once rather than at its next renewal.
        self.keys_by_uid: dict[str, Hashable | PodInfo] = {}
        # Pod UID -> the Secret the webhook named for it, as verified at its first admitted
        # reconcile. Revocation on deletion goes by this (and the ledger), never by the pod's
        # annotations at that time: their owner can edit them after admission.
        self.admitted_secret: dict[str, str] = {}
        self.departed: dict[tuple[str, str], SecretInfo] = {}  # managed Secrets seen to go
        # Secrets being written right now, as we expect to read them back: the watch can
        # deliver the echo before the write's own answer, and must not take it for news.
        self.writing: dict[tuple[str, str], SecretInfo] = {}
        # Reflector bookkeeping: a listing forgets only what was not observed since it began.
        # Only observations made while a listing is open are recorded (not the listing's own
        # objects, which it knows): a record per cached object cost 250 bytes per pod.
        self.observed_seq = 0
        self.listings_open = 0
        self.seen: dict[tuple[str, str, str], int] = {}

    # ------------------------------------------------------------------ observation

    def _note_seen(self, kind: str, namespace: str, name: str) -> None:
        self.observed_seq += 1
        if self.listings_open:
            self.seen[(kind, namespace, name)] = self.observed_seq

    def owner_key(self, uid: str) -> Hashable | None:
        """The work key of the live pod or identity with this UID."""
        owner = self.keys_by_uid.get(uid)
        if isinstance(owner, PodInfo):
            return PodKey(owner.namespace, owner.name)
        return owner

    def begin_listing(self) -> int:
        """A listing starts: the mark its `prune` compares against."""
        self.listings_open += 1
        return self.observed_seq

    def end_listing(self) -> None:
        """A listing ended (pruned, or failed): with none left open, nothing needs `seen`."""
        self.listings_open = max(0, self.listings_open - 1)
        if not self.listings_open:
            self.seen.clear()

    def observe_namespace(self, body: Mapping[str, Any]) -> Changes:
        changes = Changes()
        info = NamespaceInfo.from_body(body)
        previous = self.namespaces.get(info.name)
        self.namespaces[info.name] = info
        if previous is None or previous.labels != info.labels:
            changes.bundles.add(info.name)
            for name in self.wids_by_ns.get(info.name, ()):
                changes.run(IdentityKey(info.name, name))
            if previous is not None:  # which domains allow it may have changed: their counts
                changes.statuses.update(DomainStatusKey(name) for name in self.domains)
        return changes

    def forget_namespace(self, name: str) -> None:
        self.namespaces.pop(name, None)
        self.bundle_conflicts.discard(name)

    def observe_trust_domain(self, body: Mapping[str, Any]) -> Changes:
        name = str((body.get("metadata") or {}).get("name"))
        previous = self.td_bodies.get(name)
        self.td_bodies[name] = body
        changes = Changes()
        changes.run(DomainKey(name))
        self._claims_of(previous, changes)
        self._claims_of(body, changes)
        return changes

    def forget_trust_domain(self, name: str) -> Changes:
        previous = self.td_bodies.pop(name, None)
        self.domain_errors.discard(name)
        changes = Changes()
        changes.run(DomainKey(name))
        self._claims_of(previous, changes)
        return changes

    def _claims_of(self, body: Mapping[str, Any] | None, changes: Changes) -> None:
        """Every TrustDomain claiming the same trust domain name as `body` looks again."""
        if body is None:
            return
        trust_domain = str((body.get("spec") or {}).get("trustDomain", ""))
        for name, other in self.td_bodies.items():
            if str((other.get("spec") or {}).get("trustDomain", "")) == trust_domain:
                changes.run(DomainKey(name))

    def observe_workload_identity(self, body: Mapping[str, Any]) -> Changes:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        self.wid_bodies[key] = body
        uid = str(meta.get("uid") or "")
        if uid:
            self.keys_by_uid[uid] = IdentityKey(*key)
        try:
            self.wids[key] = WorkloadIdentitySpec.from_body(body)
            self.wids_by_ns[key[0]].add(key[1])
            self.wid_errors.pop(key, None)
        except SpecError as exc:
            # Keep the last valid spec: nothing already issued is lost to a bad edit.
            self.wid_errors[key] = exc
        changes = Changes(bundles={key[0]})
        changes.run(IdentityKey(*key))
        return changes

    def forget_workload_identity(self, namespace: str, name: str) -> Changes:
        key = (namespace, name)
        body = self.wid_bodies.pop(key, None)
        if body is not None:
            self.keys_by_uid.pop(str((body.get("metadata") or {}).get("uid") or ""), None)
        self.wid_errors.pop(key, None)
        changes = Changes(bundles={namespace})
        changes.run(IdentityKey(namespace, name))
        return changes

    def drop_identity(self, namespace: str, name: str) -> None:
        """The last of a deleted identity, once its controller has revoked what it issued."""
        self.wids.pop((namespace, name), None)
        self.wids_by_ns[namespace].discard(name)
        self.problems.pop((namespace, name), None)

    def observe_pod(self, body: Mapping[str, Any], *, listed: bool = False) -> Changes:
        """`listed`: delivered by a listing, which spares it from its own prune."""
        info = PodInfo.from_body(body)
        key = (info.namespace, info.name)
        if not listed:
            self._note_seen("pod", *key)
        previous = self.pods.get(key)
        if previous is not None and previous.identity and previous.identity != info.identity:
            self.pods_by_wid[(info.namespace, previous.identity)].discard(info.name)
        self.pods[key] = info
        self.keys_by_uid[info.uid] = info  # its key when asked (owner_key): no copy per pod
        if info.identity:
            self.pods_by_wid[(info.namespace, info.identity)].add(info.name)
        changes = Changes()
        if previous is None or previous.labels != info.labels or info.deleting:
            changes.run(PodKey(*key))
        return changes

    def forget_pod(self, body: Mapping[str, Any]) -> Changes:
        info = PodInfo.from_body(body)
        key = (info.namespace, info.name)
        work = PodKey(*key)
        known = self.pods.pop(key, None) or info
        self.keys_by_uid.pop(known.uid, None)
        self.seen.pop(("pod", *key), None)
        self.failures.pop(work, None)
        changes = Changes(cancel=[work], forgotten=[work])
        if known.identity:
            self.pods_by_wid[(known.namespace, known.identity)].discard(known.name)
            changes.statuses.add(IdentityKey(known.namespace, known.identity))
        secret_name = self.admitted_secret.pop(known.uid, None) or known.secret_name
        if secret_name or known.identity:
            changes.run(GoneKey(known.namespace, secret_name or "", known.uid))
        return changes

    def forget_pod_named(self, namespace: str, name: str) -> Changes:
        return self.forget_pod({"metadata": {"namespace": namespace, "name": name}})

    def observe_secret(self, body: Mapping[str, Any], *, listed: bool = False) -> Changes:
        meta = body.get("metadata") or {}
        namespace = str(meta.get("namespace"))
        is_state = namespace == self.operator_namespace
        key = (namespace, str(meta.get("name")))
        if not listed:
            self._note_seen("secret", *key)
        previous = self.secrets.get(key)
        # While we write this Secret, compare with what we are writing: its echo can arrive
        # before the write's answer, and is neither parsed again nor taken for a change.
        reference = self.writing.get(key) or previous
        info = SecretInfo.from_body(body, parse_leaf=not is_state, previous=reference)
        self.secrets[key] = info
        changes = Changes()
        if info.held and not is_state and (previous is None or not previous.held):
            changes.run(ReleaseKey(*key))
        if (
            reference is not None
            and reference.data_digest == info.data_digest
            and reference.revoke_request == info.revoke_request
            and reference.meta_digest == info.meta_digest
        ):
            return changes  # the echo of our own write, or an edit that changes nothing
        self._owner_of(info, changes)
        if info.revoke_request is not None and not is_state:
            changes.run(RefuseKey(*key))
        return changes

    def forget_secret(self, namespace: str, name: str) -> Changes:
        info = self.secrets.pop((namespace, name), None)
        self.seen.pop(("secret", namespace, name), None)
        changes = Changes()
        if info is not None:
            if info.managed and info.facts is not None and namespace != self.operator_namespace:
                # The garbage collector may remove a deleted pod's Secret before we hear of the
                # pod: keep what it held, so the pod's deletion still revokes that serial.
                self.departed[(namespace, name)] = info
                if len(self.departed) > DEPARTED_MAX:
                    del self.departed[next(iter(self.departed))]
            self._owner_of(info, changes)
        return changes

    def _owner_of(self, info: SecretInfo, changes: Changes) -> None:
        """The work key(s) that own a Secret run again when it changes."""
        if info.namespace == self.operator_namespace and info.name.startswith(CA_SECRET_PREFIX):
            for name, runtime in self.domains.items():
                if ca_secret_name(name) == info.name:
                    changes.run(DomainKey(runtime.name))
            return
        for wid_name in self.wids_by_ns.get(info.namespace, ()):
            spec = self.wids[(info.namespace, wid_name)]
            if spec.mode is DeliveryMode.SHARED and spec.secret_name == info.name:
                changes.run(IdentityKey(info.namespace, wid_name))
        # A pod's Secret names it as owner: found at once. Only a Secret whose owner is not
        # the live pod that mounts it is looked for among the identity's pods (one Secret per
        # pod: that scan for every Secret was quadratic in the pods of an identity).
        for uid in info.owner_uids:
            owner = self.keys_by_uid.get(uid)
            if (
                isinstance(owner, PodInfo)
                and owner.namespace == info.namespace
                and owner.secret_name == info.name
            ):
                changes.run(PodKey(info.namespace, owner.name))
                return
        for pod_name in self.pods_by_wid.get((info.namespace, info.identity or ""), ()):
            pod = self.pods.get((info.namespace, pod_name))
            if pod is not None and pod.secret_name == info.name:
                changes.run(PodKey(info.namespace, pod_name))

    def observe_ledger(self, body: Mapping[str, Any]) -> None:
        """Ledgers are read once, from the initial listing; afterwards we are the only writer."""
        name = str((body.get("metadata") or {}).get("name"))
        if not self.ledger.owns(name):
            return
        try:
            self.ledger.load(name, str((body.get("binaryData") or {}).get(LEDGER_KEY) or ""))
        except (ValueError, zlib.error) as exc:
            log.warning("ledger %s is unreadable and is rebuilt from live Secrets: %s", name, exc)

    def observe_bundle(self, body: Mapping[str, Any]) -> Changes:
        info = BundleInfo.from_body(body)
        previous = self.bundles.get(info.namespace)
        self.bundles[info.namespace] = info
        if previous is None or previous.content_hash != info.content_hash:
            return Changes(bundles={info.namespace})
        return Changes()

    def forget_bundle(self, namespace: str) -> Changes:
        self.bundles.pop(namespace, None)
        return Changes(bundles={namespace})

    def prune(self, kind: str, scope: str | None, live: set[tuple[str, str]], mark: int) -> Changes:
        """After a listing: forget what it lacks (deleted while no watch was looking), except
        what was observed after the listing began."""
        tag = "pod" if kind == "Pod" else "secret"
        cache: Mapping[tuple[str, str], object] = self.pods if kind == "Pod" else self.secrets
        gone = [
            key
            for key in cache
            if (scope is None or key[0] == scope)
            and key not in live
            and self.seen.get((tag, *key), 0) <= mark
        ]
        changes = Changes()
        for namespace, name in gone:
            if kind == "Pod":
                changes.merge(self.forget_pod_named(namespace, name))
            else:
                changes.merge(self.forget_secret(namespace, name))
        return changes

    # ------------------------------------------------------------------ queries

    def identities_in(self, namespace: str) -> list[WorkloadIdentitySpec]:
        """The valid WorkloadIdentities of a namespace (what the webhook injects from)."""
        return [self.wids[(namespace, name)] for name in self.wids_by_ns.get(namespace, ())]

    def identities_of_domain(self, domain_name: str) -> list[IdentityKey]:
        """The identities that issue from a domain or federate with it."""
        return [
            IdentityKey(ns, name)
            for (ns, name), spec in self.wids.items()
            if spec.trust_domain_ref == domain_name or domain_name in spec.federates_with
        ]

    def target_pods(self, namespace: str, identity: str) -> Iterator[PodInfo]:
        for pod_name in self.pods_by_wid.get((namespace, identity), ()):
            pod = self.pods.get((namespace, pod_name))
            if pod is not None:
                yield pod

    def is_target_secret(self, namespace: str, name: str, identity: str | None) -> bool:
        """Whether a Secret is a Shared identity's Secret or an (indexed) pod's Secret."""
        for spec in self.identities_in(namespace):
            if spec.mode is DeliveryMode.SHARED and spec.secret_name == name:
                return True
        return any(pod.secret_name == name for pod in self.target_pods(namespace, identity or ""))

    def trust_domain_owner(self, trust_domain: str) -> str | None:
        """A SPIFFE trust domain name has one owner: the oldest TrustDomain claiming it (then
        the first by name). Every later claim is refused, so an impostor's anchors never reach
        a bundle under that name."""
        claims = sorted(
            (str((body.get("metadata") or {}).get("creationTimestamp") or ""), name)
            for name, body in self.td_bodies.items()
            if str((body.get("spec") or {}).get("trustDomain", "")) == trust_domain
        )
        return claims[0][1] if claims else None

    def owning_domain(self, trust_domain: str) -> DomainRuntime | None:
        """The issuing TrustDomain that owns a SPIFFE trust domain name (the oldest claim)."""
        for runtime in self.domains.values():
            if runtime.trust_domain == trust_domain and runtime.issues and not runtime.conflict:
                return runtime
        return None

    def domains_loaded(self) -> bool:
        """Every TrustDomain has its authorities loaded, is refused, or never parsed."""
        return all(
            (
                name in self.domains
                and (self.domains[name].loaded or self.domains[name].conflict is not None)
            )
            or name in self.invalid_domains
            for name in self.td_bodies
        )

    def allowed(self, runtime: DomainRuntime, namespace: str) -> bool:
        info = self.namespaces.get(namespace)
        labels = info.labels if info is not None else {}
        return runtime.spec.allowed_namespaces.matches(labels)

    def entitled_domains(self, namespace: str) -> list[DomainRuntime]:
        """The domains whose anchors `namespace` may hold: its identities' domains (when the
        domain's policy allows the namespace), their federatesWith (same check), and domains
        whose bundle.namespaceSelector selects it. Never anything else."""
        scope = self.watch_namespaces
        if scope is not None and namespace not in scope:
            return []
        chosen: dict[str, DomainRuntime] = {}
        for spec in self.identities_in(namespace):
            own = self.domains.get(spec.trust_domain_ref)
            if own is None or not self.allowed(own, namespace):
                continue
            chosen[own.name] = own
            for other in spec.federates_with:
                federated = self.domains.get(other)
                if federated is not None and self.allowed(federated, namespace):
                    chosen[federated.name] = federated
        info = self.namespaces.get(namespace)
        labels = info.labels if info is not None else {}
        for runtime in self.domains.values():
            selector = runtime.spec.bundle_namespaces
            if selector is not None and selector.matches(labels):
                chosen[runtime.name] = runtime
        # A refused claim of a trust domain name publishes nothing, anywhere.
        return sorted((r for r in chosen.values() if r.conflict is None), key=lambda r: r.name)

    def bundle_namespaces_of(self, runtime: DomainRuntime) -> list[str]:
        """The namespaces whose bundle may change with this domain's anchors or CRL."""
        return [
            namespace
            for namespace in self.namespaces
            if runtime in self.entitled_domains(namespace) or namespace in self.bundles
        ]

    def issued_here(self, info: SecretInfo) -> LedgerEntry | None:
        """The ledger entry of the certificate in `info`, if trustwarden issued it into this
        namespace to one of the Secret's owners (what status counts and inventory trust)."""
        if info.facts is None or not info.managed:
            return None
        return self.ledger.issued_to(info.namespace, info.facts.serial, info.owner_uids)
