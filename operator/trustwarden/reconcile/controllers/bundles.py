from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from trustwarden.names import (
    BUNDLE_CONFIGMAP,
    CONTENT_HASH_ANNOTATION,
    MANAGED_BY,
    MANAGER,
)
from trustwarden.pki import bundle as bundle_mod
from trustwarden.pki._x509util import sha256_hex
from trustwarden.reconcile.controllers.base import (
    Context,
    Controller,
    domain_ref,
)
from trustwarden.reconcile.domains import (
    DomainRuntime,
)
from trustwarden.reconcile.observed import (
    BundleInfo,
)
from trustwarden.reconcile.ports import ConflictError
from trustwarden.reconcile.work import (
    DomainStatusKey,
)

log = logging.getLogger("trustwarden.bundles")


BUNDLE_CONFLICT_RETRY = timedelta(seconds=30)


class Bundles(Controller):
    """Publishes each namespace's trust bundle: the anchors (and CRLs) of exactly the domains
    it is entitled to, written only when the content changes."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._bundle_retry: dict[str, datetime] = {}  # namespaces whose bundle name is taken
        ctx.anchor_gates.append(self.published)

    def published(self, runtime: DomainRuntime, sha: str) -> bool:
        """True when every namespace entitled to the domain holds a bundle with `sha`."""
        for namespace in self.store.namespaces:
            domains = self.store.entitled_domains(namespace)
            if runtime not in domains:
                continue
            if namespace in self.dirty_bundles:
                return False
            desired = self._desired_bundle(namespace, domains)
            observed = self.store.bundles.get(namespace)
            if observed is None or observed.content_hash != desired.content_hash:
                return False
            if sha not in self._bundle_shas(desired):
                return False
        return True

    @staticmethod
    def _bundle_shas(bundle: bundle_mod.NamespaceBundle) -> set[str]:
        pem = bundle.data.get("ca.crt", "")
        if not pem:
            return set()
        return {sha256_hex(c) for c in x509.load_pem_x509_certificates(pem.encode())}

    def _desired_bundle(
        self, namespace: str, domains: Iterable[DomainRuntime]
    ) -> bundle_mod.NamespaceBundle:
        now = self.clock()
        anchors: dict[str, list[x509.Certificate]] = {}
        crls: dict[str, bytes] = {}
        sequence = 0
        for runtime in domains:
            certs = runtime.anchors(now)
            if not certs:
                continue
            anchors.setdefault(runtime.trust_domain, []).extend(certs)
            sequence = max(sequence, *(int(c.not_valid_before_utc.timestamp()) for c in certs))
            if runtime.issues:
                crl = runtime.crl(now)
                if crl:
                    crls[runtime.trust_domain] = crl
        return bundle_mod.NamespaceBundleInput(anchors, crls, sequence).build(now)

    async def _sync_bundle(self, namespace: str) -> None:
        info = self.store.namespaces.get(namespace)
        observed = self.store.bundles.get(namespace)
        if info is None or info.terminating:
            return
        domains = [d for d in self.store.entitled_domains(namespace) if d.anchors(self.clock())]
        if observed is not None and not observed.managed:
            if namespace not in self.store.bundle_conflicts:
                # Seen by the watch before we ever wrote: say so once, as when a create finds it.
                await self._bundle_conflict(namespace, domains)
            return
        self.store.bundle_conflicts.discard(namespace)
        if not domains:
            if observed is not None:
                await self.kube.delete("ConfigMap", namespace, BUNDLE_CONFIGMAP, uid=observed.uid)
                self.store.bundles.pop(namespace, None)
                self.metrics.bundle_writes.labels(operation="delete").inc()
            return
        desired = self._desired_bundle(namespace, domains)
        if observed is not None and observed.content_hash == desired.content_hash:
            return
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": BUNDLE_CONFIGMAP,
                "namespace": namespace,
                "labels": {MANAGED_BY: MANAGER},
                "annotations": {CONTENT_HASH_ANNOTATION: desired.content_hash},
            },
            "data": desired.data,
        }
        if observed is None:
            try:
                written = await self.kube.create("ConfigMap", namespace, body)
            except ConflictError:
                # Not in our (label-filtered) cache: someone else's ConfigMap holds the name.
                # Leave it untouched, report it, and look again later.
                existing = await self.kube.get("ConfigMap", namespace, BUNDLE_CONFIGMAP)
                if existing is not None and not BundleInfo.from_body(existing).managed:
                    await self._bundle_conflict(namespace, domains)
                    return
                written = await self.kube.replace("ConfigMap", namespace, BUNDLE_CONFIGMAP, body)
        else:
            written = await self.kube.replace("ConfigMap", namespace, BUNDLE_CONFIGMAP, body)
        self._bundle_retry.pop(namespace, None)
        operation = "update" if observed is not None else "create"
        self.store.bundles[namespace] = BundleInfo.from_body(written)
        self.metrics.bundle_writes.labels(operation=operation).inc()

    async def _bundle_conflict(self, namespace: str, domains: Iterable[DomainRuntime]) -> None:
        self.store.bundle_conflicts.add(namespace)
        self._bundle_retry[namespace] = self.clock() + BUNDLE_CONFLICT_RETRY
        for runtime in domains:
            self.dirty_status.add(DomainStatusKey(runtime.name))
            await self._event(
                domain_ref(runtime),
                "Warning",
                "BundleConflict",
                f"ConfigMap {namespace}/{BUNDLE_CONFIGMAP} exists and was not created by "
                "trustwarden; it is left untouched and this namespace gets no trust bundle "
                "until it is deleted or renamed",
            )

    def forget_namespace(self, namespace: str) -> None:
        self.dirty_bundles.discard(namespace)
        self._bundle_retry.pop(namespace, None)

    async def flush(self) -> None:
        """Write every dirty namespace bundle whose content changed."""
        now = self.clock()
        for namespace, at in list(self._bundle_retry.items()):
            if at <= now:  # a foreign ConfigMap held the bundle's name: try again
                del self._bundle_retry[namespace]
                self.dirty_bundles.add(namespace)
        if not self.store.domains_loaded():
            # Until every TrustDomain's authorities are loaded after a start, a bundle written
            # now would drop that domain's anchors (a trust gap), and a CA recovery reads the
            # previous anchors back from the published bundles. Keep them dirty until then.
            return
        pending = list(self.dirty_bundles)
        self.dirty_bundles.clear()
        for runtime in self.store.domains.values():
            if (
                runtime.issues
                and runtime.loaded
                and runtime.conflict is None
                and runtime.authorities is not None
            ):
                runtime.crl(self.clock())  # rebuild once here if due, not per namespace
        for namespace in pending:
            try:
                await self._sync_bundle(namespace)
            except ConflictError:
                self.dirty_bundles.add(namespace)
            except Exception as exc:
                self.dirty_bundles.add(namespace)
                log.warning("bundle for namespace %s not written: %s", namespace, exc)
        for runtime in self.store.domains.values():
            if runtime.crl_changed:
                self.dirty_revocations.add(runtime.name)
