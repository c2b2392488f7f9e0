"""What the injection webhook does to a pod at CREATE: a pure decision over plain data."""

from __future__ import annotations

import secrets as _secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trustwarden.names import (
    ADMISSION_ANNOTATION,
    IDENTITY_LABEL,
    MANAGED_BY,
    MANAGER,
    SECRET_ANNOTATION,
    SVID_VOLUME,
)
from trustwarden.reconcile.admission import AdmissionKey
from trustwarden.reconcile.model import DeliveryMode, WorkloadIdentitySpec

MOUNT_PATH = "/var/run/secrets/trustwarden.io/"
# PodCertificate identities: the projected volume the kubelet fills (key made on the node).
POD_CERTIFICATE_VOLUME = "trustwarden-pod-certificate"
# The podCertificate volume's key types (RSA2048 has none: the kubelet does not make it).
VOLUME_KEY_TYPES = {
    "ECDSAP256": "ECDSAP256",
    "ECDSAP384": "ECDSAP384",
    "Ed25519": "ED25519",
    "RSA3072": "RSA3072",
    "RSA4096": "RSA4096",
}
MAX_EXPIRATION_SECONDS = 7_862_400  # the API's maximum (91 days)


class InjectionRejected(Exception):
    """The pod must not be admitted; the message tells the user what to change."""


@dataclass(frozen=True)
class InjectionPatch:
    """The decision for one pod: which identity and Secret (None when no PerPod identity
    selects it), and our label and annotation, a value of None meaning "remove this key"."""

    labels: dict[str, str | None] = field(default_factory=dict)
    annotations: dict[str, str | None] = field(default_factory=dict)
    identity: str | None = None
    secret_name: str | None = None
    volume: dict[str, Any] | None = None  # PodCertificate: the projected volume to add


def new_secret_name(identity: str) -> str:
    """Unique per pod and never taken from user input: the pod's name may not exist yet at
    admission (generateName), so a random suffix makes it unique."""
    return f"{identity[:40]}-svid-{_secrets.token_hex(5)}"


def plan_injection(
    pod: Mapping[str, Any],
    identities: Iterable[WorkloadIdentitySpec],
    *,
    key: AdmissionKey,
    name_factory: Callable[[str], str] = new_secret_name,
) -> InjectionPatch:
    meta = pod.get("metadata") or {}
    labels = dict(meta.get("labels") or {})
    annotations = dict(meta.get("annotations") or {})
    namespace = str(meta.get("namespace") or "")
    pod_name = meta.get("name") or meta.get("generateName") or "<generated>"
    matches = sorted(
        (
            w
            for w in identities
            if w.mode is DeliveryMode.PER_POD
            and w.pod_selector is not None
            and w.pod_selector.matches(labels)
        ),
        key=lambda w: w.name,
    )
    if len(matches) > 1:
        names = ", ".join(w.name for w in matches)
        raise InjectionRejected(
            f"pod {namespace}/{pod_name} is selected by more than one PerPod WorkloadIdentity "
            f"({names}); a pod can hold one identity: make their spec.podSelector disjoint"
        )
    # Whatever a user wrote by hand in our label or annotation never chooses anything.
    strip_labels: dict[str, str | None] = {str(k): None for k in labels if k == IDENTITY_LABEL}
    strip_annotations: dict[str, str | None] = {
        str(k): None for k in annotations if k in (SECRET_ANNOTATION, ADMISSION_ANNOTATION)
    }
    native = sorted(
        (
            w
            for w in identities
            if w.mode is DeliveryMode.POD_CERTIFICATE
            and w.pod_selector is not None
            and w.pod_selector.matches(labels)
        ),
        key=lambda w: w.name,
    )
    if native and (matches or len(native) > 1):
        names = ", ".join(w.name for w in [*matches, *native])
        raise InjectionRejected(
            f"pod {namespace}/{pod_name} is selected by more than one WorkloadIdentity "
            f"({names}); a pod can hold one identity: make their spec.podSelector disjoint"
        )
    if native:
        return InjectionPatch(
            labels=strip_labels,
            annotations=strip_annotations,
            identity=native[0].name,
            volume=pod_certificate_volume(native[0], namespace, str(pod_name)),
        )
    if not matches:
        return InjectionPatch(labels=strip_labels, annotations=strip_annotations)
    identity = matches[0]
    secret_name = name_factory(identity.name)
    return InjectionPatch(
        labels={IDENTITY_LABEL: identity.name},
        annotations={
            SECRET_ANNOTATION: secret_name,
            ADMISSION_ANNOTATION: key.tag(namespace, identity.name, secret_name),
        },
        identity=identity.name,
        secret_name=secret_name,
    )


def pod_certificate_volume(
    identity: WorkloadIdentitySpec, namespace: str, pod_name: str
) -> dict[str, Any]:
    """A podCertificate source for the identity's signer and the ClusterTrustBundle, with the
    Secret path's file names (tls.key, tls.crt, ca.crt), so applications do not change."""
    key_type = VOLUME_KEY_TYPES.get(identity.key_algorithm.value)
    if key_type is None:
        raise InjectionRejected(
            f"pod {namespace}/{pod_name}: {identity.where} asks for "
            f"{identity.key_algorithm.value}, which the kubelet cannot make for a pod "
            f"certificate; set spec.keyAlgorithm to one of {', '.join(VOLUME_KEY_TYPES)}"
        )
    signer = f"trustwarden.io/{identity.trust_domain_ref}"
    seconds = int(identity.ttl.total_seconds())
    return {
        "name": POD_CERTIFICATE_VOLUME,
        "projected": {
            "defaultMode": 0o440,
            "sources": [
                {
                    "podCertificate": {
                        "signerName": signer,
                        "keyType": key_type,
                        "maxExpirationSeconds": min(max(seconds, 3600), MAX_EXPIRATION_SECONDS),
                        "keyPath": "tls.key",
                        "certificateChainPath": "tls.crt",
                    }
                },
                {
                    "clusterTrustBundle": {
                        "signerName": signer,
                        "labelSelector": {"matchLabels": {MANAGED_BY: MANAGER}},
                        "path": "ca.crt",
                    }
                },
            ],
        },
    }


# --- the decision as an RFC 6902 JSON Patch against the pod the API server sent -----------
#
# Built from the few places it touches, never by copying and diffing the whole pod: the
# webhook answers every pod CREATE in opted-in namespaces, and a deep copy plus a whole-body
# diff per pod was a large share of the operator's CPU in bursts. A map or list that the pod
# does not have is added whole ("add" of a missing member's parent fails).

JsonPatch = list[dict[str, Any]]

# The container lists a pod can be created with. Ephemeral containers cannot be set at
# CREATE (the API server refuses them), so the webhook never sees any.
CONTAINER_FIELDS = ("initContainers", "containers")


def pointer_token(key: str) -> str:
    """One JSON Pointer reference token (RFC 6901): '~' is '~0', '/' is '~1'."""
    return key.replace("~", "~0").replace("/", "~1")


def svid_volume(secret_name: str) -> dict[str, Any]:
    return {"name": SVID_VOLUME, "secret": {"secretName": secret_name, "defaultMode": 0o440}}


def svid_mount(volume: str = SVID_VOLUME) -> dict[str, Any]:
    return {"name": volume, "mountPath": MOUNT_PATH, "readOnly": True}


def _map_ops(path: str, current: Any, changes: Mapping[str, str | None]) -> JsonPatch:
    """Set (value) or remove (None) keys of the map at `path`, which may be absent."""
    present = current if isinstance(current, Mapping) else None
    if present is None:
        added = {k: v for k, v in changes.items() if v is not None}
        return [{"op": "add", "path": path, "value": added}] if added else []
    ops: JsonPatch = []
    for key, value in changes.items():
        member = f"{path}/{pointer_token(key)}"
        if value is None:
            if key in present:
                ops.append({"op": "remove", "path": member})
        elif present.get(key) != value:
            ops.append({"op": "add", "path": member, "value": value})  # add also replaces
    return ops


def _list_ops(
    path: str, current: Any, item: dict[str, Any], replaces: Callable[[Any], bool]
) -> JsonPatch:
    """Append `item` to the list at `path` (absent or not), dropping entries it replaces."""
    if not isinstance(current, list) or not current:
        return [{"op": "add", "path": path, "value": [item]}]
    if any(replaces(entry) for entry in current):
        # Rare (a hand-written entry of ours): rewrite the list rather than remove by index.
        kept = [entry for entry in current if not replaces(entry)]
        return [{"op": "replace", "path": path, "value": [*kept, item]}]
    return [{"op": "add", "path": f"{path}/-", "value": item}]


def _is_svid_volume(volume: Any) -> bool:
    return isinstance(volume, Mapping) and volume.get("name") == SVID_VOLUME


def _is_svid_mount(mount: Any) -> bool:
    return isinstance(mount, Mapping) and (
        mount.get("name") in (SVID_VOLUME, POD_CERTIFICATE_VOLUME)
        or mount.get("mountPath") == MOUNT_PATH
    )


def _is_our_volume(volume: Any) -> bool:
    return isinstance(volume, Mapping) and volume.get("name") in (
        SVID_VOLUME,
        POD_CERTIFICATE_VOLUME,
    )


def json_patch(pod: Mapping[str, Any], plan: InjectionPatch) -> JsonPatch:
    """The JSON Patch that applies `plan` to `pod`: our label and annotation, and for an
    injected pod the SVID volume and a read-only mount in every (init) container. A volume
    or mount of ours that the user wrote by hand is replaced: the user never picks the
    Secret."""
    meta = pod.get("metadata") or {}
    ops = _map_ops("/metadata/labels", meta.get("labels"), plan.labels)
    ops += _map_ops("/metadata/annotations", meta.get("annotations"), plan.annotations)
    spec = pod.get("spec") or {}
    if plan.volume is not None:
        # PodCertificate: the projected volume (replacing one of ours written by hand).
        ops += _list_ops("/spec/volumes", spec.get("volumes"), plan.volume, _is_our_volume)
        for container_field in CONTAINER_FIELDS:
            for index, container in enumerate(spec.get(container_field) or ()):
                ops += _list_ops(
                    f"/spec/{container_field}/{index}/volumeMounts",
                    container.get("volumeMounts"),
                    svid_mount(POD_CERTIFICATE_VOLUME),
                    _is_svid_mount,
                )
        return ops
    if plan.secret_name is None:
        # No identity for this pod: a hand-made volume of ours (and its mounts) goes, so it
        # can never name the Secret trustwarden would write if the pod were labelled later.
        return ops + _strip_ops(spec)
    ops += _list_ops(
        "/spec/volumes", spec.get("volumes"), svid_volume(plan.secret_name), _is_svid_volume
    )
    for container_field in CONTAINER_FIELDS:
        for index, container in enumerate(spec.get(container_field) or ()):
            ops += _list_ops(
                f"/spec/{container_field}/{index}/volumeMounts",
                container.get("volumeMounts"),
                svid_mount(),
                _is_svid_mount,
            )
    return ops


def _strip_ops(spec: Mapping[str, Any]) -> JsonPatch:
    ops: JsonPatch = []
    for container_field in CONTAINER_FIELDS:
        for index, container in enumerate(spec.get(container_field) or ()):
            mounts = container.get("volumeMounts") if isinstance(container, Mapping) else None
            if isinstance(mounts, list) and any(_is_svid_volume(m) for m in mounts):
                kept = [m for m in mounts if not _is_svid_volume(m)]  # by name only
                ops.append(
                    {
                        "op": "replace",
                        "path": f"/spec/{container_field}/{index}/volumeMounts",
                        "value": kept,
                    }
                )
    volumes = spec.get("volumes")
    if isinstance(volumes, list) and any(_is_svid_volume(v) for v in volumes):
        ops.append(
            {
                "op": "replace",
                "path": "/spec/volumes",
                "value": [v for v in volumes if not _is_svid_volume(v)],
            }
        )
    return ops
