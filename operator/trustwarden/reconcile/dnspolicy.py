"""Which DNS names a namespace may put in its certificates.

A DNS SAN is a claim other workloads act on: a client in namespace `victim` that checks host
names accepts whoever presents `api.victim.svc`. So a namespace gets only the names it can own:
names under `<namespace>.svc`, `<namespace>.svc.<cluster domain>`, `<namespace>.pod` and
`<namespace>.pod.<cluster domain>`. Anything else (a public name, another namespace's service,
`kubernetes.default.svc`) needs an explicit grant by the TrustDomain's owner in
`spec.policy.allowedDNSNames`, which lists name patterns and the namespaces they are granted to.

Pattern syntax: an exact name (`login.example.com`), or `*.` and a suffix for every name below
that suffix at any depth (`*.apps.example.com`). `{namespace}` in a pattern stands for the
namespace asking, so one grant can delegate a zone per namespace (`*.{namespace}.example.com`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from trustwarden.pki.errors import PKIError
from trustwarden.pki.spiffe import validate_dns_name
from trustwarden.reconcile.selectors import LabelSelector

DEFAULT_CLUSTER_DOMAIN = "cluster.local"
NAMESPACE_VARIABLE = "{namespace}"


class DNSNameNotAllowed(Exception):
    """A DNS name the namespace does not own and was not granted."""

    reason = "DNSNameNotAllowed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class DNSGrant:
    """One entry of a TrustDomain's spec.policy.allowedDNSNames."""

    pattern: str
    namespaces: LabelSelector

    def allows(self, name: str, namespace: str, labels: Mapping[str, str]) -> bool:
        if not self.namespaces.matches(labels):
            return False
        pattern = self.pattern.replace(NAMESPACE_VARIABLE, namespace)
        if pattern.startswith("*."):
            return name.endswith(pattern[1:])
        return name == pattern


def validate_grant_pattern(pattern: str, *, field: str) -> str:
    """A grant pattern is a DNS name, optionally with a leading '*.' and {namespace}."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"{field}: must be a DNS name or '*.' followed by one")
    body = pattern[2:] if pattern.startswith("*.") else pattern
    if "{" in body.replace(NAMESPACE_VARIABLE, ""):
        raise ValueError(f"{field}: {pattern[:80]!r}: the only variable allowed is {{namespace}}")
    try:
        validate_dns_name(body.replace(NAMESPACE_VARIABLE, "ns"), field=field)
    except PKIError as exc:
        raise ValueError(str(exc)) from None
    return pattern.lower()


def owned_zones(namespace: str, cluster_domain: str) -> tuple[str, ...]:
    """The DNS zones a namespace owns without any grant."""
    return (
        f"{namespace}.svc",
        f"{namespace}.svc.{cluster_domain}",
        f"{namespace}.pod",
        f"{namespace}.pod.{cluster_domain}",
    )


def name_allowed(
    name: str,
    *,
    namespace: str,
    labels: Mapping[str, str],
    grants: Iterable[DNSGrant],
    cluster_domain: str,
) -> bool:
    if any(name.endswith("." + zone) for zone in owned_zones(namespace, cluster_domain)):
        return True
    return any(grant.allows(name, namespace, labels) for grant in grants)


def check_dns_names(
    names: Iterable[str],
    *,
    namespace: str,
    labels: Mapping[str, str],
    grants: Iterable[DNSGrant],
    cluster_domain: str,
    where: str,
    domain: str,
) -> None:
    """Raise DNSNameNotAllowed, naming the first name the namespace may not have."""
    grants = tuple(grants)
    for name in names:
        if not name_allowed(
            name,
            namespace=namespace,
            labels=labels,
            grants=grants,
            cluster_domain=cluster_domain,
        ):
            zones = ", ".join(f"*.{z}" for z in owned_zones(namespace, cluster_domain))
            raise DNSNameNotAllowed(
                f"{where}: spec.dnsNames asks for {name[:100]!r}, which namespace {namespace} "
                f"does not own. A namespace gets names matching {zones}; any other name needs a "
                f"grant in TrustDomain {domain} spec.policy.allowedDNSNames (a pattern and a "
                "namespaceSelector), or remove it from spec.dnsNames"
            )
