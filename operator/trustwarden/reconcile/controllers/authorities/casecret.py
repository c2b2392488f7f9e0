from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from cryptography import x509

from trustwarden.names import (
    BUNDLE_CONFIGMAP,
    TRUST_DOMAIN_ANNOTATION,
)
from trustwarden.pki import bundle as bundle_mod
from trustwarden.reconcile.controllers.base import (
    Controller,
    b64,
)
from trustwarden.reconcile.domains import (
    DomainRuntime,
    ca_secret_name,
    encode_authorities,
    revocations_name,
)
from trustwarden.reconcile.observed import (
    SecretInfo,
    data_digest,
)


class CASecrets(Controller):
    """The CA Secret in the operator namespace (authorities, handled rotation request, orphan
    anchors) and the domain's stored revocation list: read back and written."""

    def ca_data_digest(self, runtime: DomainRuntime) -> bytes:
        """What SecretInfo.data_digest reads from the CA Secret when it holds this state."""
        return data_digest(self._ca_secret_data(runtime))

    def _ca_secret_data(self, runtime: DomainRuntime) -> dict[str, str]:
        assert runtime.authorities is not None
        data = encode_authorities(runtime.authorities)
        if runtime.rotation_handled:
            data["rotation-request"] = b64(runtime.rotation_handled.encode())
        if runtime.orphan_anchors:
            data["orphans.pem"] = b64(bundle_mod.anchors_to_pem(runtime.orphan_anchors).encode())
        return data

    async def write_ca_secret(self, runtime: DomainRuntime) -> None:
        opns = self.config.operator_namespace
        name = ca_secret_name(runtime.name)
        written = await self._upsert_state(
            "Secret",
            name,
            role="ca",
            annotations={TRUST_DOMAIN_ANNOTATION: runtime.trust_domain},
            payload={"type": "Opaque", "data": self._ca_secret_data(runtime)},
            exists=(opns, name) in self.store.secrets,
        )
        self.store.secrets[(opns, name)] = SecretInfo.from_body(written, parse_leaf=False)

    async def load_orphan_anchors(self, runtime: DomainRuntime, stored: Mapping[str, Any]) -> None:
        raw = (stored.get("data") or {}).get("orphans.pem")
        if raw:
            try:
                runtime.orphan_anchors = tuple(
                    x509.load_pem_x509_certificates(base64.b64decode(raw))
                )
            except ValueError:
                runtime.orphan_anchors = ()

    async def published_anchors(self, runtime: DomainRuntime) -> list[x509.Certificate]:
        for namespace in list(self.store.bundles):
            cm = await self.kube.get("ConfigMap", namespace, BUNDLE_CONFIGMAP)
            pem = ((cm or {}).get("data") or {}).get(f"{runtime.trust_domain}.pem")
            if pem:
                try:
                    return list(x509.load_pem_x509_certificates(pem.encode()))
                except ValueError:
                    continue
        return []

    async def load_revocations(self, runtime: DomainRuntime) -> None:
        cm = await self.kube.get(
            "ConfigMap", self.config.operator_namespace, revocations_name(runtime.name)
        )
        if cm is not None:
            runtime.load_revocations(((cm.get("data") or {}).get("revoked.json")) or "[]")
            runtime.revocations_exist = True
            runtime.stored_revocations = dict(cm.get("data") or {})
