"""What the operator has seen of the cluster, reduced to the few fields it decides on.

Kept small on purpose: 10,000 pods and Secrets must fit in a few tens of MiB.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from sys import intern
from typing import Any

from trustwarden.names import (
    ADMISSION_ANNOTATION,
    IDENTITY_LABEL,
    INJECT_LABEL,
    MANAGED_BY,
    MANAGER,
    REVOKE_ANNOTATION,
    REVOKE_FINALIZER,
    SECRET_ANNOTATION,
    SVID_VOLUME,
)
from trustwarden.names import (
    PREFIX as ANNOTATION_PREFIX,
)
from trustwarden.pki.errors import PKIError
from trustwarden.pki.issue import LeafFacts, inspect_leaf
from trustwarden.sharing import Interned


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def metadata_digest(meta: Mapping[str, Any]) -> bytes:
    """A digest of the metadata trustwarden sets on an SVID Secret and nothing else: our
    labels, our finalizer, our annotations (but the revocation request) and the owners. Any
    of it stripped or edited by hand changes the digest, and the operator restores it."""
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    ours = {
        "labels": [labels.get(MANAGED_BY), labels.get(IDENTITY_LABEL)],
        "finalizer": REVOKE_FINALIZER in (meta.get("finalizers") or ()),
        "annotations": sorted(
            (str(k), str(v))
            for k, v in annotations.items()
            if str(k).startswith(ANNOTATION_PREFIX) and k != REVOKE_ANNOTATION
        ),
        "owners": sorted(str(o.get("uid")) for o in meta.get("ownerReferences") or ()),
    }
    return hashlib.sha256(json.dumps(ours, sort_keys=True).encode()).digest()[:16]


def data_digest(data: Mapping[str, Any]) -> bytes:
    """A digest of every data key and value of a Secret, to notice any edit of one we own
    (16 bytes: it is compared, never shown, and a hex string cost 113 bytes per Secret)."""
    digest = hashlib.sha256()
    for key_name in sorted(data):
        digest.update(f"{key_name}\0{data[key_name]}\0".encode())
    return digest.digest()[:16]


# Shared by every pod with the same labels (a Deployment's pods carry identical ones): a dict
# of its own cost each pod about 220 bytes. Entries go with the last pod that uses them.
class _Labels(dict[str, str]):
    __slots__ = ("__weakref__",)


_LABEL_SETS: weakref.WeakValueDictionary[tuple[tuple[str, str], ...], _Labels] = (
    weakref.WeakValueDictionary()
)


def shared_labels(raw: Mapping[str, Any]) -> Mapping[str, str]:
    """The pod's labels, as one dict shared with every other pod carrying the same ones.
    Read-only by contract (PodInfo is frozen); nobody may mutate it."""
    items = tuple(sorted((intern(str(k)), intern(str(v))) for k, v in raw.items()))
    found = _LABEL_SETS.get(items)
    if found is None:
        found = _Labels(items)
        _LABEL_SETS[items] = found
    return found


def resource_version(body: Mapping[str, Any]) -> int:
    try:
        return int(_meta(body).get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    name: str
    labels: Mapping[str, str]
    terminating: bool

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> NamespaceInfo:
        meta = _meta(body)
        return cls(
            name=str(meta.get("name")),
            labels=dict(meta.get("labels") or {}),
            terminating=bool(meta.get("deletionTimestamp")),
        )

    @property
    def injection_enabled(self) -> bool:
        return self.labels.get(INJECT_LABEL) == "enabled"


@dataclass(frozen=True, slots=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str]
    service_account: str
    identity: str | None
    # The Secret the webhook named at admission (SECRET_ANNOTATION), when the pod's volume
    # (immutable after creation) mounts that very Secret; None otherwise.
    secret_name: str | None
    deleting: bool
    resource_version: int
    admission_tag: str | None = None  # ADMISSION_ANNOTATION, checked by the engine
    volume_mismatch: bool = False  # a trustwarden-svid volume naming another Secret

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PodInfo:
        meta = _meta(body)
        spec = body.get("spec") or {}
        # Interned: 100,000 pods repeat a few namespaces, label keys, values and identities;
        # each parsed body would otherwise keep its own copy of every one.
        labels = shared_labels(meta.get("labels") or {})
        annotations = meta.get("annotations") or {}
        volume_secret = None
        for volume in spec.get("volumes") or ():
            if volume.get("name") == SVID_VOLUME:
                volume_secret = (volume.get("secret") or {}).get("secretName")
        annotated = annotations.get(SECRET_ANNOTATION)
        secret_name = annotated if annotated and annotated == volume_secret else None
        return cls(
            namespace=intern(str(meta.get("namespace"))),
            name=str(meta.get("name")),
            # Interned: the Secret's owner reference and the store's indexes hold it too.
            uid=intern(str(meta.get("uid"))),
            labels=labels,
            service_account=intern(str(spec.get("serviceAccountName") or "default")),
            identity=labels.get(IDENTITY_LABEL),
            secret_name=secret_name,
            deleting=bool(meta.get("deletionTimestamp")),
            resource_version=resource_version(body),
            admission_tag=annotations.get(ADMISSION_ANNOTATION),
            volume_mismatch=volume_secret is not None and secret_name is None,
        )


@dataclass(frozen=True, slots=True)
class SecretInfo:
    namespace: str
    name: str
    uid: str
    managed: bool
    owner_uids: tuple[str, ...]
    identity: str | None
    facts: LeafFacts | None = field(repr=False)
    facts_error: str | None
    ca_sha256: str
    data_digest: bytes  # of every data key, to notice any edit of a Secret we own
    # The leaf fingerprint trustwarden annotated when it wrote it; None also when it is the
    # fingerprint of the leaf there now, the usual case (nothing to compare, 113 bytes saved).
    recorded_sha256: str | None
    revoke_request: str | None  # `trustwarden revoke` asks for an emergency revocation here
    deleting: bool
    resource_version: int
    finalizers: tuple[str, ...] = ()
    meta_digest: bytes = b""  # metadata_digest of what it carries now

    @classmethod
    def from_body(
        cls,
        body: Mapping[str, Any],
        *,
        parse_leaf: bool = True,
        previous: SecretInfo | None = None,
        facts: LeafFacts | None = None,
    ) -> SecretInfo:
        """`previous` lets an unchanged Secret (the watch echo of our own write) skip parsing;
        `facts` are what the writer already knows about the leaf it just wrote."""
        known_facts = facts
        meta = _meta(body)
        labels = meta.get("labels") or {}
        data = body.get("data") or {}
        digest = data_digest(data)
        facts = known_facts
        error: str | None = None
        if facts is None and previous is not None and previous.data_digest == digest:
            facts, error = previous.facts, previous.facts_error
        elif facts is None and parse_leaf:
            try:
                chain = _b64(data.get("tls.crt"))
                key = _b64(data.get("tls.key"))
                if chain:
                    facts = inspect_leaf(chain, key or None)
                else:
                    error = "tls.crt is missing"
            except (PKIError, ValueError, binascii.Error) as exc:
                error = f"unreadable certificate: {exc}"
        try:
            ca_sha = intern(hashlib.sha256(_b64(data.get("ca.crt"))).hexdigest())
        except (ValueError, binascii.Error):
            ca_sha = ""
        recorded = (meta.get("annotations") or {}).get(f"{ANNOTATION_PREFIX}sha256")
        if recorded is not None and facts is not None and recorded == facts.sha256:
            recorded = None
        identity = labels.get(IDENTITY_LABEL)
        return cls(
            # Interned where 100,000 Secrets repeat a few values, or share them with a pod.
            namespace=intern(str(meta.get("namespace"))),
            name=str(meta.get("name")),
            uid=str(meta.get("uid")),
            managed=labels.get(MANAGED_BY) == MANAGER,
            owner_uids=tuple(intern(str(o.get("uid"))) for o in meta.get("ownerReferences") or ()),
            identity=intern(str(identity)) if identity is not None else None,
            facts=facts,
            facts_error=error,
            ca_sha256=ca_sha,
            data_digest=digest,
            recorded_sha256=recorded,
            revoke_request=(meta.get("annotations") or {}).get(REVOKE_ANNOTATION),
            deleting=bool(meta.get("deletionTimestamp")),
            resource_version=resource_version(body),
            finalizers=_finalizers(meta.get("finalizers") or ()),
            meta_digest=metadata_digest(meta) if parse_leaf else b"",
        )

    def owned_by(self, uid: str) -> bool:
        return self.managed and uid in self.owner_uids

    @property
    def held(self) -> bool:
        """Deleted, and waiting for trustwarden to record its revocation before it goes."""
        return self.deleting and REVOKE_FINALIZER in self.finalizers


@dataclass(frozen=True, slots=True)
class BundleInfo:
    namespace: str
    uid: str
    managed: bool
    content_hash: str  # of the data as it is now, not as annotated: edits are noticed
    resource_version: int

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> BundleInfo:
        from trustwarden.pki.bundle import content_hash

        meta = _meta(body)
        data = {str(k): str(v) for k, v in (body.get("data") or {}).items()}
        return cls(
            namespace=str(meta.get("namespace")),
            uid=str(meta.get("uid")),
            managed=(meta.get("labels") or {}).get(MANAGED_BY) == MANAGER,
            content_hash=content_hash(data),
            resource_version=resource_version(body),
        )


# Usually none or ours alone: one tuple shared by every Secret with the same list.
_FINALIZER_SETS: Interned[tuple[str, ...]] = Interned(256)


def _finalizers(raw: Any) -> tuple[str, ...]:
    return _FINALIZER_SETS(tuple(intern(str(f)) for f in raw))


def _b64(value: Any) -> bytes:
    if not value:
        return b""
    return base64.b64decode(str(value), validate=True)
