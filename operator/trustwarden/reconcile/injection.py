"""What the injection webhook does to a pod at CREATE: a pure decision over plain data."""

from __future__ import annotations

import copy
import secrets as _secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trustwarden.reconcile.model import DeliveryMode, WorkloadIdentitySpec
from trustwarden.reconcile.observed import IDENTITY_LABEL, SECRET_ANNOTATION, SVID_VOLUME

MOUNT_PATH = "/var/run/secrets/trustwarden.io/"


class InjectionRejected(Exception):
    """The pod must not be admitted; the message tells the user what to change."""


@dataclass(frozen=True)
class InjectionPatch:
    """Merge-patch content for the pod: full replacement lists for volumes and containers."""

    labels: dict[str, str | None] = field(default_factory=dict)
    annotations: dict[str, str | None] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    identity: str | None = None
    secret_name: str | None = None


def new_secret_name(identity: str) -> str:
    """Unique per pod and never taken from user input: the pod's name may not exist yet at
    admission (generateName), so a random suffix makes it unique."""
    return f"{identity[:40]}-svid-{_secrets.token_hex(5)}"


def plan_injection(
    pod: Mapping[str, Any],
    identities: Iterable[WorkloadIdentitySpec],
    *,
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
        str(k): None for k in annotations if k == SECRET_ANNOTATION
    }
    if not matches:
        return InjectionPatch(labels=strip_labels, annotations=strip_annotations)
    identity = matches[0]
    secret_name = name_factory(identity.name)
    spec = pod.get("spec") or {}
    volumes = [v for v in spec.get("volumes") or () if v.get("name") != SVID_VOLUME]
    volumes.append(
        {"name": SVID_VOLUME, "secret": {"secretName": secret_name, "defaultMode": 0o440}}
    )
    new_spec: dict[str, Any] = {"volumes": volumes}
    for container_field in ("initContainers", "containers"):
        containers = spec.get(container_field)
        if not containers:
            continue
        updated = []
        for container in containers:
            container = copy.deepcopy(dict(container))
            mounts = [
                m
                for m in container.get("volumeMounts") or ()
                if m.get("name") != SVID_VOLUME and m.get("mountPath") != MOUNT_PATH
            ]
            mounts.append({"name": SVID_VOLUME, "mountPath": MOUNT_PATH, "readOnly": True})
            container["volumeMounts"] = mounts
            updated.append(container)
        new_spec[container_field] = updated
    return InjectionPatch(
        labels={IDENTITY_LABEL: identity.name},
        annotations={SECRET_ANNOTATION: secret_name},
        spec=new_spec,
        identity=identity.name,
        secret_name=secret_name,
    )
