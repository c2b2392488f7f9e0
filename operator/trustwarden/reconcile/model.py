"""Specs validated from CR bodies into typed models.

The CRD schema and CEL rules reject most bad input at admission; this is the second line, for
objects admitted before a rule existed and for rules that need other objects. Every error names
the object's field and says how to fix it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from trustwarden.pki import durations, spiffe
from trustwarden.pki.errors import PKIError
from trustwarden.pki.issue import Usage
from trustwarden.pki.keys import KeyAlgorithm
from trustwarden.reconcile.dnspolicy import DNSGrant, validate_grant_pattern
from trustwarden.reconcile.selectors import LabelSelector, SelectorError

DEFAULT_SPIFFE_TEMPLATE = "/ns/{namespace}/sa/{serviceAccount}"
MIN_LEAF_TTL = timedelta(minutes=10)
DNS1123_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class SpecError(ValueError):
    """An invalid spec. `reason` is the condition reason, the message names the field."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class DeliveryMode(StrEnum):
    PER_POD = "PerPod"
    SHARED = "Shared"
    POD_CERTIFICATE = "PodCertificate"  # Kubernetes 1.37+: signed from PodCertificateRequests


class CAKind(StrEnum):
    SELF_SIGNED = "selfSigned"
    SECRET_REF = "secretRef"
    EXTERNAL = "external"


@dataclass(frozen=True)
class TrustDomainSpec:
    name: str  # the TrustDomain object's name
    trust_domain: str  # the SPIFFE trust domain name
    ca_kind: CAKind
    key_algorithm: KeyAlgorithm = KeyAlgorithm.ECDSAP256
    ca_ttl: timedelta = timedelta(hours=2160)
    secret_name: str | None = None
    external_bundle: str | None = None
    max_ttl: timedelta = timedelta(hours=24)
    allowed_namespaces: LabelSelector = field(default_factory=LabelSelector)
    bundle_namespaces: LabelSelector | None = None
    allowed_dns_names: tuple[DNSGrant, ...] = ()
    generation: int = 0
    uid: str = ""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TrustDomainSpec:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        name = str(meta.get("name", ""))
        where = f"TrustDomain {name}"
        trust_domain = str(spec.get("trustDomain", ""))
        try:
            spiffe.validate_trust_domain(trust_domain)
        except PKIError as exc:
            raise SpecError("InvalidTrustDomain", f"{where}: spec.trustDomain: {exc}") from exc
        ca = spec.get("ca") or {}
        kinds = [k for k in CAKind if ca.get(k.value) is not None]
        if len(kinds) != 1:
            raise SpecError(
                "InvalidCA",
                f"{where}: spec.ca must set exactly one of selfSigned, secretRef or external "
                f"(found {', '.join(k.value for k in kinds) or 'none'})",
            )
        kind = kinds[0]
        policy = spec.get("policy") or {}
        bundle = spec.get("bundle") or {}
        values: dict[str, Any] = {}
        if kind is CAKind.SELF_SIGNED:
            self_signed = ca["selfSigned"] or {}
            values["key_algorithm"] = _key_algorithm(
                self_signed.get("keyAlgorithm", "ECDSAP256"),
                f"{where}: spec.ca.selfSigned.keyAlgorithm",
            )
            values["ca_ttl"] = _duration(
                self_signed.get("ttl", "2160h"),
                f"{where}: spec.ca.selfSigned.ttl",
                timedelta(hours=1),
            )
        elif kind is CAKind.SECRET_REF:
            secret_name = str((ca["secretRef"] or {}).get("name", ""))
            if not DNS1123_SUBDOMAIN.match(secret_name):
                raise SpecError(
                    "InvalidCA",
                    f"{where}: spec.ca.secretRef.name must name a Secret (got {secret_name!r})",
                )
            values["secret_name"] = secret_name
        else:
            values["external_bundle"] = str((ca["external"] or {}).get("bundle", ""))
        try:
            allowed = LabelSelector.parse(
                policy.get("allowedNamespaces"), f"{where}: spec.policy.allowedNamespaces"
            )
            extra = (
                LabelSelector.parse(
                    bundle["namespaceSelector"], f"{where}: spec.bundle.namespaceSelector"
                )
                if bundle.get("namespaceSelector") is not None
                else None
            )
        except SelectorError as exc:
            raise SpecError("InvalidSelector", str(exc)) from exc
        grants = _dns_grants(policy.get("allowedDNSNames"), f"{where}: spec.policy.allowedDNSNames")
        return cls(
            name=name,
            trust_domain=trust_domain,
            allowed_dns_names=grants,
            ca_kind=kind,
            max_ttl=_duration(
                policy.get("maxTTL", "24h"), f"{where}: spec.policy.maxTTL", MIN_LEAF_TTL
            ),
            allowed_namespaces=allowed,
            bundle_namespaces=extra,
            generation=int(meta.get("generation") or 0),
            uid=str(meta.get("uid", "")),
            **values,
        )


@dataclass(frozen=True)
class WorkloadIdentitySpec:
    namespace: str
    name: str
    trust_domain_ref: str
    pod_selector: LabelSelector | None
    spiffe_template: str
    dns_templates: tuple[str, ...]
    ttl: timedelta
    renew_at: float
    key_algorithm: KeyAlgorithm
    usages: frozenset[Usage]
    federates_with: tuple[str, ...]
    mode: DeliveryMode
    secret_name: str | None
    service_account: str
    owner: str
    generation: int = 0
    uid: str = ""

    @property
    def where(self) -> str:
        return f"WorkloadIdentity {self.namespace}/{self.name}"

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> WorkloadIdentitySpec:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        where = f"WorkloadIdentity {namespace}/{name}"
        delivery = spec.get("delivery") or {}
        try:
            mode = DeliveryMode(delivery.get("mode", "PerPod"))
        except ValueError as exc:
            raise SpecError(
                "InvalidSpec",
                f"{where}: spec.delivery.mode must be PerPod, Shared or PodCertificate",
            ) from exc
        shared = mode is DeliveryMode.SHARED
        secret_name = delivery.get("secretName")
        if shared and not (isinstance(secret_name, str) and DNS1123_SUBDOMAIN.match(secret_name)):
            raise SpecError(
                "InvalidSpec",
                f"{where}: spec.delivery.secretName must name the Secret to write when mode is Shared",
            )
        raw_selector = spec.get("podSelector")
        if not shared and raw_selector is None:
            raise SpecError(
                "InvalidSpec", f"{where}: spec.podSelector is required when mode is {mode.value}"
            )
        try:
            selector = (
                LabelSelector.parse(raw_selector, f"{where}: spec.podSelector")
                if raw_selector is not None
                else None
            )
        except SelectorError as exc:
            raise SpecError("InvalidSelector", str(exc)) from exc
        template = str(spec.get("spiffeID") or DEFAULT_SPIFFE_TEMPLATE)
        dns_templates = tuple(str(d) for d in spec.get("dnsNames") or ())
        try:
            spiffe.validate_template(template, shared=shared)
        except PKIError as exc:
            raise SpecError("InvalidTemplate", f"{where}: spec.spiffeID: {exc}") from exc
        if len(set(dns_templates)) != len(dns_templates):
            raise SpecError(
                "InvalidSpec", f"{where}: spec.dnsNames has duplicate entries; list each name once"
            )
        usages_raw = spec.get("usages") or ["server", "client"]
        try:
            usages = frozenset(Usage(u) for u in usages_raw)
        except ValueError as exc:
            raise SpecError(
                "InvalidSpec", f"{where}: spec.usages may only hold server and client"
            ) from exc
        try:
            renew_at = durations.parse_percent(str(spec.get("renewAt", "50%")))
        except PKIError as exc:
            raise SpecError("InvalidSpec", f"{where}: spec.renewAt: {exc}") from exc
        if not 0.1 <= renew_at <= 0.9:
            raise SpecError("InvalidSpec", f"{where}: spec.renewAt must be between 10% and 90%")
        trust_domain_ref = str(spec.get("trustDomain", ""))
        if not DNS1123_SUBDOMAIN.match(trust_domain_ref):
            raise SpecError("InvalidSpec", f"{where}: spec.trustDomain must name a TrustDomain")
        return cls(
            namespace=namespace,
            name=name,
            trust_domain_ref=trust_domain_ref,
            pod_selector=selector,
            spiffe_template=template,
            dns_templates=dns_templates,
            ttl=_duration(spec.get("ttl", "1h"), f"{where}: spec.ttl", MIN_LEAF_TTL),
            renew_at=renew_at,
            key_algorithm=_key_algorithm(
                spec.get("keyAlgorithm", "ECDSAP256"), f"{where}: spec.keyAlgorithm"
            ),
            usages=usages,
            federates_with=tuple(str(f) for f in spec.get("federatesWith") or ()),
            mode=mode,
            secret_name=secret_name if shared else None,
            service_account=str(spec.get("serviceAccountName") or "default"),
            owner=str(spec.get("owner") or ""),
            generation=int(meta.get("generation") or 0),
            uid=str(meta.get("uid", "")),
        )


def _dns_grants(raw: Any, where: str) -> tuple[DNSGrant, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError("InvalidSpec", f"{where} must be a list of {{pattern, namespaceSelector}}")
    grants = []
    for index, item in enumerate(raw):
        field = f"{where}[{index}]"
        if not isinstance(item, Mapping) or "namespaceSelector" not in item:
            raise SpecError(
                "InvalidSpec",
                f"{field} must set pattern and namespaceSelector ({{}} grants it to every "
                "namespace; say so explicitly)",
            )
        try:
            pattern = validate_grant_pattern(
                str(item.get("pattern") or ""), field=f"{field}.pattern"
            )
            namespaces = LabelSelector.parse(
                item.get("namespaceSelector"), f"{field}.namespaceSelector"
            )
        except SelectorError as exc:
            raise SpecError("InvalidSelector", str(exc)) from exc
        except ValueError as exc:
            raise SpecError("InvalidSpec", str(exc)) from exc
        grants.append(DNSGrant(pattern, namespaces))
    return tuple(grants)


def _duration(raw: Any, where: str, minimum: timedelta) -> timedelta:
    try:
        value = durations.parse_duration(str(raw))
    except PKIError as exc:
        raise SpecError("InvalidDuration", f"{where}: {exc}") from exc
    if value < minimum:
        raise SpecError(
            "InvalidDuration",
            f"{where}: {raw} is below the minimum of {durations.format_duration(minimum)}; raise it",
        )
    return value


def _key_algorithm(raw: Any, where: str) -> KeyAlgorithm:
    try:
        return KeyAlgorithm(str(raw))
    except ValueError as exc:
        allowed = ", ".join(a.value for a in KeyAlgorithm)
        raise SpecError("InvalidSpec", f"{where}: {raw!r} is not one of {allowed}") from exc
