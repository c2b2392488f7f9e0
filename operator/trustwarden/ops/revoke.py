"""`trustwarden revoke`: which Secrets to annotate, the annotation, and how to tell that the
operator has acted (the Secret holds a new serial and the bundle CRL lists the old one).

Contract with the operator: a Secret annotated ``trustwarden.io/revoke: <reason>`` has its
serial put into the trust domain's CRL at once and a fresh key and certificate written into
the same Secret, without the annotation; an Event ``Revoked`` is recorded on the
WorkloadIdentity. The operator can only revoke the certificate a Secret currently holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trustwarden.names import (
    IDENTITY_LABEL,
    REVOKE_ANNOTATION,
    SECRET_ANNOTATION,
    SERIAL_ANNOTATION,
    SVID_VOLUME,
    TRUST_DOMAIN_ANNOTATION,
)
from trustwarden.pki._x509util import serial_hex

from .errors import NotFoundError, UsageError
from .model import (
    Body,
    annotations_of,
    is_managed,
    labels_of,
    load_pem_certs,
    load_pem_crls,
    meta,
    name_of,
    namespace_of,
    normalize_serial,
    owner_refs,
    secret_bytes,
)

MAX_REASON = 256


@dataclass(frozen=True)
class Target:
    namespace: str
    name: str
    identity: str
    serial: str  # normalised lowercase hex; "" when the Secret holds no readable certificate
    trust_domain: str
    resource_version: str

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def current_serial(secret: Body) -> str:
    """The serial of the certificate the Secret holds (its tls.crt, else the annotation)."""
    certs = load_pem_certs(secret_bytes(secret, "tls.crt"))
    if certs:
        return serial_hex(certs[0].serial_number)
    try:
        return normalize_serial(str(annotations_of(secret).get(SERIAL_ANNOTATION) or ""))
    except ValueError:
        return ""


def target_of(secret: Body) -> Target:
    return Target(
        namespace=namespace_of(secret),
        name=name_of(secret),
        identity=str(labels_of(secret).get(IDENTITY_LABEL) or ""),
        serial=current_serial(secret),
        trust_domain=str(annotations_of(secret).get(TRUST_DOMAIN_ANNOTATION) or ""),
        resource_version=str(meta(secret).get("resourceVersion") or ""),
    )


def check_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise UsageError("--reason must not be empty: say why (it is recorded in the Event)")
    if len(reason) > MAX_REASON:
        raise UsageError(f"--reason is {len(reason)} characters; keep it under {MAX_REASON}")
    return reason


def parse_serial(text: str) -> str:
    try:
        return normalize_serial(text)
    except ValueError:
        raise UsageError(
            f"--serial {text!r} is not a hexadecimal serial (e.g. 3f:a2:91 or 3FA291)"
        ) from None


def select_by_identity(secrets: Sequence[Body], namespace: str, identity: str) -> list[Target]:
    targets = [
        target_of(s)
        for s in secrets
        if is_managed(s)
        and namespace_of(s) == namespace
        and labels_of(s).get(IDENTITY_LABEL) == identity
    ]
    if not targets:
        raise NotFoundError(
            f"no trustwarden Secret carries label {IDENTITY_LABEL}={identity} in namespace "
            f"{namespace}; list them with: trustwarden inventory -n {namespace}"
        )
    return sorted(targets, key=lambda t: t.name)


def pod_secret_name(pod: Body) -> str | None:
    """The Secret the webhook bound to the pod: annotation trustwarden.io/secret, else the
    injected volume."""
    name = annotations_of(pod).get(SECRET_ANNOTATION)
    if name:
        return str(name)
    for volume in (pod.get("spec") or {}).get("volumes") or ():
        if volume.get("name") == SVID_VOLUME:
            secret_name = (volume.get("secret") or {}).get("secretName")
            if secret_name:
                return str(secret_name)
    return None


def select_by_pod(pod: Body, secret: Body | None) -> Target:
    """The pod's Secret, only if the pod owns it (ownerReference uid = pod uid)."""
    pod_ref = f"{namespace_of(pod)}/{name_of(pod)}"
    secret_name = pod_secret_name(pod)
    if secret_name is None:
        raise NotFoundError(
            f"pod {pod_ref} has no {SECRET_ANNOTATION} annotation: it was not injected with a "
            "trustwarden identity (is its namespace labelled trustwarden.io/inject=enabled and "
            "does a PerPod WorkloadIdentity select it?)"
        )
    if secret is None:
        raise NotFoundError(f"pod {pod_ref} names Secret {secret_name}, which does not exist")
    uid = str(meta(pod).get("uid") or "")
    if not any(ref.kind == "Pod" and ref.uid == uid for ref in owner_refs(secret)):
        raise UsageError(
            f"Secret {namespace_of(secret)}/{secret_name} is not owned by pod {pod_ref} "
            f"(uid {uid}); refusing to revoke a certificate of another workload"
        )
    if not is_managed(secret):
        raise UsageError(
            f"Secret {namespace_of(secret)}/{secret_name} is not managed by trustwarden"
        )
    return target_of(secret)


def select_by_serial(secrets: Sequence[Body], namespace: str, serial: str) -> list[Target]:
    """Secrets whose trustwarden.io/serial annotation (or certificate) carries ``serial``."""
    wanted = parse_serial(serial)
    targets = []
    for secret in secrets:
        if not is_managed(secret) or namespace_of(secret) != namespace:
            continue
        try:
            annotated = normalize_serial(str(annotations_of(secret).get(SERIAL_ANNOTATION) or ""))
        except ValueError:
            annotated = ""
        if wanted in (annotated, current_serial(secret)):
            targets.append(target_of(secret))
    if not targets:
        raise NotFoundError(
            f"no trustwarden Secret in namespace {namespace} holds serial {wanted}; a "
            "certificate that was already renewed is no longer held by any Secret (it stays "
            "valid until its notAfter). List serials with: trustwarden inventory -o wide"
        )
    return sorted(targets, key=lambda t: t.name)


def revoke_patch(reason: str, resource_version: str | None = None) -> dict[str, Any]:
    """Merge patch for the Secret; with a resourceVersion, the API rejects it (409) if the
    Secret changed since it was selected (e.g. renewed: another serial would be revoked)."""
    metadata: dict[str, Any] = {"annotations": {REVOKE_ANNOTATION: reason}}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {"metadata": metadata}


def replacement(target: Target, secret: Body | None) -> str | None:
    """The new serial once the operator replaced the certificate; "" when the Secret is
    gone (e.g. its pod was deleted); None while still waiting."""
    if secret is None:
        return ""
    if REVOKE_ANNOTATION in annotations_of(secret):
        return None
    serial = current_serial(secret)
    return serial if serial and serial != target.serial else None


def crl_lists(bundle: Mapping[str, Any] | None, trust_domain: str, serial: str) -> bool:
    """True when the namespace bundle's CRL for ``trust_domain`` lists ``serial``."""
    if bundle is None or not serial:
        return False
    data = bundle.get("data") or {}
    keys = (
        [f"{trust_domain}.crl.pem"] if trust_domain else [k for k in data if k.endswith(".crl.pem")]
    )
    wanted = int(serial, 16)
    for key in keys:
        for crl in load_pem_crls(data.get(key)):
            if crl.get_revoked_certificate_by_serial_number(wanted) is not None:
                return True
    return False
