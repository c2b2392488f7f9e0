"""One ClusterTrustBundle per TrustDomain, `signerName: trustwarden.io/<name>`.

It holds the same anchors as the namespace bundles, with the same overlap: the rotation
schedule publishes a prepared authority long before it activates, and the engine asks
`published` (one of its anchor gates) before letting a new authority sign. A retired
authority stays in `DomainRuntime.anchors` until its last leaf expires, so it stays here too.
Written only when the content changes; deleted with its TrustDomain.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from cryptography import x509

from trustwarden.names import MANAGED_BY, MANAGER
from trustwarden.pki import bundle as bundle_mod
from trustwarden.pki._x509util import sha256_hex
from trustwarden.reconcile.domains import DomainRuntime
from trustwarden.reconcile.podcert import PCR_API_VERSION, bundle_name, domain_of, signer_name
from trustwarden.reconcile.ports import Body, ConflictError, NotFoundError

log = logging.getLogger("trustwarden.podcerts")
KIND = "ClusterTrustBundle"


class BundleKube(Protocol):
    async def get(self, kind: str, namespace: str | None, name: str) -> Body | None: ...

    async def create(self, kind: str, namespace: str, body: Body) -> Body: ...

    async def replace(self, kind: str, namespace: str, name: str, body: Body) -> Body: ...

    async def delete(
        self, kind: str, namespace: str, name: str, *, uid: str | None = None
    ) -> bool: ...


def desired_body(domain: str, pem: str) -> dict[str, Any]:
    return {
        "apiVersion": PCR_API_VERSION,
        "kind": KIND,
        "metadata": {"name": bundle_name(domain), "labels": {MANAGED_BY: MANAGER}},
        "spec": {"signerName": signer_name(domain), "trustBundle": pem},
    }


def _shas(pem: str) -> frozenset[str]:
    try:
        return frozenset(sha256_hex(c) for c in x509.load_pem_x509_certificates(pem.encode()))
    except ValueError:
        return frozenset()


class TrustBundlePublisher:
    def __init__(self, kube: BundleKube) -> None:
        self.kube = kube
        self.stored: dict[str, str] = {}  # bundle name -> trustBundle as stored
        self.versions: dict[str, str] = {}  # bundle name -> its resourceVersion (updates need it)
        self.shas: dict[str, frozenset[str]] = {}  # domain -> anchor sha256s as stored
        self.writes = 0

    def observe(self, body: Mapping[str, Any]) -> bool:
        """A ClusterTrustBundle of ours, as listed or watched. True when it differs from what
        we stored (someone edited it): the next sync writes it back. What the anchor gate
        trusts follows what is really there, so an anchor removed by hand holds back the
        authority it belongs to until it is published again."""
        meta = body.get("metadata") or {}
        name = str(meta.get("name") or "")
        spec = body.get("spec") or {}
        pem = str(spec.get("trustBundle") or "")
        changed = self.stored.get(name) != pem
        self.stored[name] = pem
        self.versions[name] = str(meta.get("resourceVersion") or "")
        domain = domain_of(str(spec.get("signerName") or ""))
        if domain is not None and changed:
            self.shas[domain] = _shas(pem)
        return changed

    def forget(self, body: Mapping[str, Any]) -> None:
        """One of ours was deleted: nothing is published for its domain until it is rewritten."""
        meta = body.get("metadata") or {}
        name = str(meta.get("name") or "")
        self.stored.pop(name, None)
        self.versions.pop(name, None)
        domain = domain_of(str((body.get("spec") or {}).get("signerName") or ""))
        if domain is not None:
            self.shas.pop(domain, None)

    def published(self, runtime: DomainRuntime, sha: str) -> bool:
        return sha in self.shas.get(runtime.name, frozenset())

    async def sync(self, domains: Iterable[DomainRuntime], now: datetime) -> None:
        wanted: dict[str, tuple[str, str, frozenset[str]]] = {}
        for runtime in domains:
            if runtime.conflict is not None or not (runtime.loaded or not runtime.issues):
                continue
            certs = bundle_mod.filter_anchors(runtime.anchors(now), now)
            if not certs:
                continue
            pem = bundle_mod.anchors_to_pem(sorted(certs, key=sha256_hex))
            shas = frozenset(sha256_hex(c) for c in certs)
            wanted[bundle_name(runtime.name)] = (runtime.name, pem, shas)
        for name, (domain, pem, shas) in wanted.items():
            if self.stored.get(name) != pem:
                await self._write(name, domain, pem)
                log.info("ClusterTrustBundle %s holds %d anchor(s)", name, len(shas))
            self.shas[domain] = shas
        for name in [n for n in self.stored if n not in wanted]:
            await self.kube.delete(KIND, "", name)
            self.writes += 1
            # The watch may have seen the deletion (and forgotten the name) while we waited.
            self.stored.pop(name, None)
            self.versions.pop(name, None)
        for domain in [d for d in self.shas if bundle_name(d) not in wanted]:
            del self.shas[domain]

    async def _write(self, name: str, domain: str, pem: str) -> None:
        body = desired_body(domain, pem)
        for _attempt in range(3):
            self.writes += 1
            version = self.versions.get(name)
            try:
                if name in self.stored and version:
                    body["metadata"]["resourceVersion"] = version
                    written = await self.kube.replace(KIND, "", name, body)
                else:
                    body["metadata"].pop("resourceVersion", None)
                    written = await self.kube.create(KIND, "", body)
            except (ConflictError, NotFoundError):
                current = await self.kube.get(KIND, None, name)
                if current is None:
                    self.stored.pop(name, None)
                    self.versions.pop(name, None)
                else:
                    self.observe(current)
                continue
            self.stored[name] = pem
            self.versions[name] = str((written.get("metadata") or {}).get("resourceVersion") or "")
            return
        raise ConflictError(f"ClusterTrustBundle {name} kept changing; not written")
