"""What a PodCertificateRequest gets: pure policy, no I/O.

Kubernetes 1.37 serves `certificates.k8s.io/v1` PodCertificateRequests (PCRs). The kubelet
makes the key on the node and sends a stub PKCS#10 request naming the pod; the API server has
already checked (Node authorizer, NodeRestriction) that the node runs that pod, that the pod,
its ServiceAccount and the node have the UIDs given, and that the pod mounts a podCertificate
volume for the signer. So the pod's name, UID and ServiceAccount are taken from the spec. Its
labels (for podSelector and `{label:*}`) come from the pod itself. `unverifiedUserAnnotations`
are what their name says and never choose anything.

`decide` answers with an Issue (a certificate inside every limit) or a Refusal (Denied or
Failed, with a reason and a message a person can act on). A lifetime the policy cannot meet is
refused, never stretched.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trustwarden.names import PREFIX
from trustwarden.pki._clock import floor_second, from_rfc3339, to_rfc3339
from trustwarden.pki.ca import Authority
from trustwarden.pki.durations import format_duration
from trustwarden.pki.errors import PKIError
from trustwarden.pki.issue import LeafRequest
from trustwarden.pki.keys import KeyAlgorithm, key_algorithm_of
from trustwarden.pki.renewal import renew_point
from trustwarden.pki.spiffe import SpiffeID, TemplateContext, render_dns_names, render_spiffe_path
from trustwarden.reconcile.dnspolicy import DNSNameNotAllowed, check_dns_names
from trustwarden.reconcile.model import DeliveryMode, TrustDomainSpec, WorkloadIdentitySpec

SIGNER_PREFIX = PREFIX  # a TrustDomain <name> signs as trustwarden.io/<name>
PCR_API_VERSION = "certificates.k8s.io/v1"
# What the API server enforces on an issued PodCertificateRequest.
API_MIN_LIFETIME = timedelta(hours=1)
API_DEFAULT_MAX_EXPIRATION = timedelta(hours=24)
# beginRefreshAt is kept this far inside the validity, so the kubelet never refreshes at the
# instant of issue or after expiry.
REFRESH_MARGIN = timedelta(minutes=10)
# The API server wants notBefore within 5 minutes of its own clock: back-date by less than
# the Secret path's 5 minutes, leaving room for clock skew between it and us.
PCR_BACKDATE = timedelta(minutes=2)
BUNDLE_SUFFIX = "anchors"

ISSUED, DENIED, FAILED = "Issued", "Denied", "Failed"
# The Issued condition's message ends with this and <namespace>/<WorkloadIdentity>: the only
# place a PCR can say which identity it got (the signer may write the status, nothing else).
ISSUED_FOR = "for WorkloadIdentity "
TERMINAL = frozenset({ISSUED, DENIED, FAILED})

# Reasons (the API defines UnsupportedKeyType; the others are ours).
NO_IDENTITY = "NoIdentity"
AMBIGUOUS_IDENTITY = "AmbiguousIdentity"
NAMESPACE_NOT_ALLOWED = "NamespaceNotAllowed"
UNSUPPORTED_KEY_TYPE = "UnsupportedKeyType"
INVALID_REQUEST = "InvalidRequest"
TRUST_DOMAIN_CONFLICT = "TrustDomainConflict"
LIFETIME_TOO_SHORT = "LifetimeTooShort"
ISSUER_EXPIRING = "IssuerExpiring"
INVALID_TEMPLATE = "InvalidTemplate"


def signer_name(domain: str) -> str:
    """The signer of a TrustDomain: `trustwarden.io/<TrustDomain name>`."""
    return f"{SIGNER_PREFIX}{domain}"


def domain_of(signer: str) -> str | None:
    """The TrustDomain name a signer names, or None when the signer is not ours."""
    if not signer.startswith(SIGNER_PREFIX):
        return None
    rest = signer[len(SIGNER_PREFIX) :]
    return rest if rest and "/" not in rest else None


def mounts_our_signer(pod: Mapping[str, Any]) -> bool:
    """Whether a pod body has a projected podCertificate source naming one of our signers: the
    kubelet asks for pod certificates only for such volumes, and pod volumes are immutable."""
    for volume in (pod.get("spec") or {}).get("volumes") or ():
        for source in (volume.get("projected") or {}).get("sources") or ():
            signer = (source.get("podCertificate") or {}).get("signerName")
            if isinstance(signer, str) and domain_of(signer) is not None:
                return True
    return False


def bundle_name(domain: str) -> str:
    """The ClusterTrustBundle of a TrustDomain. The API requires a name made of the signer
    name with '/' replaced by ':', then ':' and a suffix of our choice."""
    return f"{signer_name(domain).replace('/', ':')}:{BUNDLE_SUFFIX}"


@dataclass(frozen=True)
class PCRInfo:
    """The fields of a PodCertificateRequest that policy uses."""

    namespace: str
    name: str
    uid: str
    generation: int
    signer: str
    pod_name: str
    pod_uid: str
    service_account: str
    node_name: str
    max_expiration: timedelta
    csr_der: bytes
    outcome: str | None  # Issued, Denied or Failed once the status says so

    @property
    def where(self) -> str:
        return f"PodCertificateRequest {self.namespace}/{self.name}"

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PCRInfo:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        outcome = next(
            (
                str(c.get("type"))
                for c in status.get("conditions") or ()
                if isinstance(c, Mapping) and c.get("type") in TERMINAL
            ),
            None,
        )
        raw_csr = spec.get("stubPKCS10Request") or ""
        try:
            csr_der = base64.b64decode(str(raw_csr), validate=True)
        except (binascii.Error, ValueError):
            csr_der = b""
        seconds = spec.get("maxExpirationSeconds")
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 0),
            signer=str(spec.get("signerName") or ""),
            pod_name=str(spec.get("podName") or ""),
            pod_uid=str(spec.get("podUID") or ""),
            service_account=str(spec.get("serviceAccountName") or ""),
            node_name=str(spec.get("nodeName") or ""),
            max_expiration=(
                timedelta(seconds=int(seconds))
                if isinstance(seconds, int) and seconds > 0
                else API_DEFAULT_MAX_EXPIRATION
            ),
            csr_der=csr_der,
            outcome=outcome,
        )


@dataclass(frozen=True)
class Refusal:
    """Denied (the policy says no; asking again gives the same answer) or Failed (the signer
    cannot issue now, e.g. its authority expires too soon)."""

    condition: str  # DENIED or FAILED
    reason: str
    message: str
    identity: WorkloadIdentitySpec | None = None  # the identity it concerns, if one


@dataclass(frozen=True)
class Issue:
    identity: WorkloadIdentitySpec
    request: LeafRequest
    public_key: Any  # a cryptography public key of a supported type
    not_before: datetime
    not_after: datetime
    begin_refresh_at: datetime

    @property
    def lifetime(self) -> timedelta:
        return self.not_after - self.not_before


@dataclass(frozen=True)
class DomainView:
    """What policy needs of a TrustDomain: its spec, its active authority, and whether its
    trust domain name is refused because another TrustDomain owns it."""

    spec: TrustDomainSpec
    authority: Authority | None
    conflict: str | None = None


def candidates(
    identities: Iterable[WorkloadIdentitySpec], namespace: str, domain: str
) -> list[WorkloadIdentitySpec]:
    """The PodCertificate identities of a namespace that issue from `domain`."""
    return sorted(
        (
            w
            for w in identities
            if w.namespace == namespace
            and w.mode is DeliveryMode.POD_CERTIFICATE
            and w.trust_domain_ref == domain
        ),
        key=lambda w: w.name,
    )


def select_identity(
    pcr: PCRInfo, pod_labels: Mapping[str, str], identities: Iterable[WorkloadIdentitySpec]
) -> WorkloadIdentitySpec | Refusal:
    domain = domain_of(pcr.signer) or ""
    pool = candidates(identities, pcr.namespace, domain)
    chosen = [w for w in pool if w.pod_selector is not None and w.pod_selector.matches(pod_labels)]
    if len(chosen) == 1:
        return chosen[0]
    pod = f"pod {pcr.namespace}/{pcr.pod_name}"
    if not chosen:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(pod_labels.items())[:8]) or "none"
        return Refusal(
            DENIED,
            NO_IDENTITY,
            f"no WorkloadIdentity in namespace {pcr.namespace} with spec.delivery.mode "
            f"PodCertificate and spec.trustDomain {domain} selects {pod} (its labels: {labels}); "
            f"create one whose spec.podSelector matches these labels, then recreate the pod",
        )
    names = ", ".join(w.name for w in chosen)
    return Refusal(
        DENIED,
        AMBIGUOUS_IDENTITY,
        f"{len(chosen)} PodCertificate WorkloadIdentities select {pod} ({names}); narrow "
        "their spec.podSelector so exactly one selects it",
        identity=chosen[0],
    )


def _public_key(pcr: PCRInfo, identity: WorkloadIdentitySpec) -> Any | Refusal:
    try:
        csr = x509.load_der_x509_csr(pcr.csr_der)
    except ValueError:
        return Refusal(
            DENIED,
            INVALID_REQUEST,
            f"{pcr.where}: spec.stubPKCS10Request is not a DER PKCS#10 request",
            identity,
        )
    if not csr.is_signature_valid:
        return Refusal(
            DENIED,
            INVALID_REQUEST,
            f"{pcr.where}: spec.stubPKCS10Request is not signed by its own key",
            identity,
        )
    public_key = csr.public_key()
    try:
        algorithm = key_algorithm_of(public_key, source=f"{pcr.where}: key")
    except PKIError as exc:
        return Refusal(DENIED, UNSUPPORTED_KEY_TYPE, f"{exc}", identity)
    if algorithm is not identity.key_algorithm:
        return Refusal(
            DENIED,
            UNSUPPORTED_KEY_TYPE,
            f"{pcr.where}: the key is {_volume_key_type(algorithm)}, but {identity.where} allows "
            f"only {identity.key_algorithm.value}; set keyType: "
            f"{_volume_key_type(identity.key_algorithm)} in the pod's podCertificate volume",
            identity,
        )
    return public_key


def _volume_key_type(algorithm: KeyAlgorithm) -> str:
    """The podCertificate volume's spelling of a key algorithm."""
    return {KeyAlgorithm.Ed25519: "ED25519"}.get(algorithm, algorithm.value)


def lifetime_limits(
    pcr: PCRInfo, identity: WorkloadIdentitySpec, domain: DomainView, now: datetime
) -> list[tuple[timedelta, str]]:
    """Every bound on the span notBefore..notAfter, with where it comes from."""
    assert domain.authority is not None
    authority = domain.authority
    return [
        (pcr.max_expiration, f"{pcr.where} spec.maxExpirationSeconds"),
        (identity.ttl, f"{identity.where} spec.ttl"),
        (domain.spec.max_ttl, f"TrustDomain {domain.spec.name} spec.policy.maxTTL"),
        (authority.lifetime / 6, f"TrustDomain {domain.spec.name} CA lifetime / 6"),
    ]


def decide(
    pcr: PCRInfo,
    *,
    pod_labels: Mapping[str, str],
    identities: Iterable[WorkloadIdentitySpec],
    domain: DomainView,
    namespace_labels: Mapping[str, str],
    cluster_domain: str,
    now: datetime,
    max_jitter_fraction: float,
    backdate: timedelta = PCR_BACKDATE,
) -> Issue | Refusal:
    """Issue or refuse one PCR of `domain`'s signer, for a pod that exists with these labels."""
    chosen = select_identity(pcr, pod_labels, identities)
    if isinstance(chosen, Refusal):
        return chosen
    identity = chosen
    spec = domain.spec
    if domain.conflict is not None:
        return Refusal(
            DENIED,
            TRUST_DOMAIN_CONFLICT,
            f"TrustDomain {spec.name} claims trust domain {spec.trust_domain}, which TrustDomain "
            f"{domain.conflict} already owns; it signs nothing. Use signer "
            f"{signer_name(domain.conflict)} or rename spec.trustDomain",
            identity,
        )
    if not spec.allowed_namespaces.matches(namespace_labels):
        return Refusal(
            DENIED,
            NAMESPACE_NOT_ALLOWED,
            f"TrustDomain {spec.name} spec.policy.allowedNamespaces does not include namespace "
            f"{pcr.namespace}; label the namespace to match it, or use another TrustDomain",
            identity,
        )
    public_key = _public_key(pcr, identity)
    if isinstance(public_key, Refusal):
        return public_key
    context = TemplateContext(
        namespace=pcr.namespace,
        name=identity.name,
        service_account=pcr.service_account,
        trust_domain=spec.trust_domain,
        pod_name=pcr.pod_name,
        pod_uid=pcr.pod_uid,
        pod_labels=dict(pod_labels),
    )
    try:
        path = render_spiffe_path(identity.spiffe_template, context)
        dns = tuple(render_dns_names(identity.dns_templates, context))
        check_dns_names(
            dns,
            namespace=pcr.namespace,
            labels=namespace_labels,
            grants=spec.allowed_dns_names,
            cluster_domain=cluster_domain,
            where=identity.where,
            domain=spec.name,
        )
        request = LeafRequest(
            spiffe_id=SpiffeID(spec.trust_domain, path),
            dns_names=dns,
            ttl=identity.ttl,
            key_algorithm=identity.key_algorithm,
            usages=identity.usages,
        )
    except DNSNameNotAllowed as exc:
        return Refusal(DENIED, exc.reason, exc.message, identity)
    except PKIError as exc:
        return Refusal(DENIED, INVALID_TEMPLATE, f"{identity.where}: {exc}", identity)
    if domain.authority is None:
        return Refusal(
            FAILED,
            ISSUER_EXPIRING,
            f"TrustDomain {spec.name} has no active authority; see its status",
            identity,
        )
    limits = lifetime_limits(pcr, identity, domain, now)
    span, bound = min(limits, key=lambda item: item[0])
    if span < API_MIN_LIFETIME:
        return Refusal(
            DENIED,
            LIFETIME_TOO_SHORT,
            f"{bound} allows {format_duration(span)}, below the 1h minimum that Kubernetes "
            "requires of pod certificates; raise it to at least 1h",
            identity,
        )
    authority = domain.authority
    not_before = floor_second(max(now - backdate, authority.not_before))
    not_after = floor_second(min(not_before + span, authority.path_not_after))
    if not_after - not_before < API_MIN_LIFETIME:
        return Refusal(
            FAILED,
            ISSUER_EXPIRING,
            f"authority {authority.serial_hex} of TrustDomain {spec.name} expires at "
            f"{to_rfc3339(authority.path_not_after)}, too soon for a 1h pod certificate; "
            "rotate the CA (trustwarden ca rotate) or renew its Secret",
            identity,
        )
    refresh = begin_refresh_at(
        not_before, not_after, identity.renew_at, pcr.pod_uid, max_jitter_fraction, backdate
    )
    return Issue(identity, request, public_key, not_before, not_after, refresh)


@dataclass(frozen=True)
class _Validity:
    not_before: datetime
    not_after: datetime


def begin_refresh_at(
    not_before: datetime,
    not_after: datetime,
    renew_at: float,
    jitter_key: str,
    max_jitter_fraction: float,
    backdate: timedelta,
) -> datetime:
    """`renewAt` of the usable lifetime, less our deterministic jitter (the same as for
    Secrets), kept REFRESH_MARGIN inside the validity."""
    at = renew_point(
        _Validity(not_before, not_after),
        renew_at,
        jitter_key,
        max_jitter_fraction,
        backdate=backdate,
    )
    at = min(max(at, not_before + REFRESH_MARGIN), not_after - REFRESH_MARGIN)
    return floor_second(at)


def _condition(
    type_: str, reason: str, message: str, generation: int, now: datetime
) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message[:1000],
        "lastTransitionTime": to_rfc3339(floor_second(now)),
        "observedGeneration": generation,
    }


def issued_status(
    pcr: PCRInfo, plan: Issue, certificate: x509.Certificate, chain_pem: bytes, now: datetime
) -> dict[str, Any]:
    leaf_pem = certificate.public_bytes(serialization.Encoding.PEM)
    return {
        "certificateChain": (leaf_pem + chain_pem).decode("ascii"),
        "notBefore": to_rfc3339(plan.not_before),
        "notAfter": to_rfc3339(plan.not_after),
        "beginRefreshAt": to_rfc3339(plan.begin_refresh_at),
        "conditions": [
            _condition(
                ISSUED,
                ISSUED,
                f"issued {plan.request.spiffe_id.uri} serial {certificate.serial_number:x} "
                f"{ISSUED_FOR}{plan.identity.namespace}/{plan.identity.name}",
                pcr.generation,
                now,
            )
        ],
    }


def refused_status(pcr: PCRInfo, refusal: Refusal, now: datetime) -> dict[str, Any]:
    return {
        "conditions": [
            _condition(refusal.condition, refusal.reason, refusal.message, pcr.generation, now)
        ]
    }


def parse_time(text: str, field: str) -> datetime:
    return from_rfc3339(text, field)
