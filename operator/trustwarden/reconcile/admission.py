"""Proof that trustwarden's injection webhook admitted a pod.

The webhook generates a pod's Secret name at CREATE. Labels and annotations stay writable by
the pod's owner afterwards, and a pod created before its namespace opted in never met the
webhook at all, so neither the identity label nor a volume is evidence of anything: a hand-made
`trustwarden-svid` volume would otherwise choose which Secret the operator writes. The webhook
therefore binds namespace, identity and Secret name with an HMAC under a key only the operator
holds (a Secret in its own namespace), in the annotation ADMISSION_ANNOTATION. The operator
issues only to a pod whose tag verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from trustwarden.names import (
    ADMISSION_KEY_SECRET as KEY_SECRET,
)
from trustwarden.names import (
    ROLE_LABEL,
)
from trustwarden.reconcile.ports import ConflictError, KubePort

KEY_BYTES = 32
KEY_DATA = "hmac.key"


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


@dataclass(frozen=True)
class AdmissionKey:
    """The webhook's signing key; repr never shows it."""

    secret: bytes = field(repr=False)

    def tag(self, namespace: str, identity: str, secret_name: str) -> str:
        message = f"v1\0{namespace}\0{identity}\0{secret_name}".encode()
        digest = hmac.new(self.secret, message, hashlib.sha256).digest()
        return "v1." + base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def verify(self, tag: str | None, namespace: str, identity: str, secret_name: str) -> bool:
        if not tag:
            return False
        return hmac.compare_digest(tag, self.tag(namespace, identity, secret_name))


async def ensure_key(kube: KubePort, namespace: str, labels: dict[str, str]) -> AdmissionKey:
    """The key every replica shares: read from the Secret KEY_SECRET in the operator namespace,
    created by whichever replica starts first. Pods admitted before a restart still verify."""
    for _ in range(3):
        body = await kube.get("Secret", namespace, KEY_SECRET)
        if body is not None:
            raw = (body.get("data") or {}).get(KEY_DATA, "")
            try:
                key = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) < KEY_BYTES:
                raise RuntimeError(
                    f"Secret {namespace}/{KEY_SECRET} does not hold a {KEY_BYTES}-byte "
                    f"{KEY_DATA}; delete it so the operator creates a new one (pods admitted "
                    "with the old key then need to be recreated)"
                )
            return AdmissionKey(key)
        try:
            await kube.create(
                "Secret",
                namespace,
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": "Opaque",
                    "metadata": {
                        "name": KEY_SECRET,
                        "namespace": namespace,
                        "labels": {**labels, ROLE_LABEL: "admission-key"},
                    },
                    "data": {KEY_DATA: base64.b64encode(new_key()).decode()},
                },
            )
        except ConflictError:
            continue  # another replica created it first: read theirs
    raise RuntimeError(f"could not read or create Secret {namespace}/{KEY_SECRET}")
