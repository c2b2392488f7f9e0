"""The exact Secret trustwarden writes for an X.509-SVID, built in one pure function.

Everything that decides a Secret's metadata lives here, so issuing a new certificate and
restoring metadata someone stripped from an existing one produce the same object.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from trustwarden.names import (
    IDENTITY_LABEL,
    MANAGED_BY,
    MANAGER,
    PREFIX,
    RENEW_AT_ANNOTATION,
    REVOKE_FINALIZER,
)
from trustwarden.pki._clock import to_rfc3339
from trustwarden.pki.issue import LeafFacts
from trustwarden.reconcile.ports import ObjectRef


def leaf_annotations(
    facts: LeafFacts,
    *,
    trust_domain: str,
    issuer_sha256: str,
    owner: str,
    renew_at: datetime,
) -> dict[str, str]:
    """What a Secret says about its certificate (never any key material)."""
    assert facts.spiffe_id is not None
    return {
        f"{PREFIX}spiffe-id": facts.spiffe_id.uri,
        f"{PREFIX}serial": facts.serial_hex,
        f"{PREFIX}not-after": to_rfc3339(facts.not_after),
        f"{PREFIX}sha256": facts.sha256,
        f"{PREFIX}trust-domain": trust_domain,
        f"{PREFIX}issuer": issuer_sha256,
        f"{PREFIX}owner": owner,
        RENEW_AT_ANNOTATION: to_rfc3339(renew_at),
    }


def svid_metadata(
    *,
    namespace: str,
    name: str,
    identity: str,
    owner: ObjectRef,
    annotations: Mapping[str, str],
    finalizers: Iterable[str] = (),
) -> dict[str, Any]:
    """The metadata of an SVID Secret; other finalizers already on it are kept, ours last."""
    return {
        "name": name,
        "namespace": namespace,
        "labels": {MANAGED_BY: MANAGER, IDENTITY_LABEL: identity},
        "finalizers": [*(f for f in finalizers if f != REVOKE_FINALIZER), REVOKE_FINALIZER],
        "annotations": dict(annotations),
        "ownerReferences": [
            {
                "apiVersion": owner.api_version,
                "kind": owner.kind,
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ],
    }


def svid_secret(metadata: Mapping[str, Any], data: Mapping[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": dict(metadata),
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }
