"""How many emergency revocations one namespace may hold in one TrustDomain's list.

Every serial trustwarden revokes stays in the domain's list until it expires, and the list is
one ConfigMap (1 MiB) shared by every namespace of the domain. An emergency revocation
(`trustwarden.io/revoke`, `trustwarden revoke`) of a live owner is answered with a fresh
certificate at once, so a tenant that loops on its own Secret adds an entry per loop: a few
hundred a minute, enough to fill the list and stall revocation and bundle publishing for the
whole domain. Revocations on deletion are left alone (they are what revocation is for, and are
bounded by pod quotas and TTLs); emergency requests are capped per namespace.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

EMERGENCY_REASON = "Emergency"
EMERGENCY_PER_NAMESPACE = 200  # about 50 KB of the 1 MiB list, so 10 namespaces use half


class _Entry(Protocol):  # the fields of domains.Revocation this module reads
    @property
    def namespace(self) -> str: ...

    @property
    def reason(self) -> str: ...


@dataclass(frozen=True)
class QuotaExceeded:
    namespace: str
    domain: str
    held: int

    def message(self, secret: str, serial_hex: str, not_after: datetime) -> str:
        return (
            f"Secret {secret} asks for revocation, but namespace {self.namespace} already holds "
            f"{self.held} emergency revocations in TrustDomain {self.domain}'s list, the most one "
            f"namespace may hold ({EMERGENCY_PER_NAMESPACE}): serial {serial_hex} was NOT "
            f"revoked and stays valid until {not_after.isoformat()}. A fresh certificate is "
            "issued; to end the old one sooner delete its pod or identity, or wait for earlier "
            "emergency revocations to expire"
        )


def emergency_quota(entries: Iterable[_Entry], namespace: str, domain: str) -> QuotaExceeded | None:
    held = sum(1 for e in entries if e.namespace == namespace and e.reason == EMERGENCY_REASON)
    if held >= EMERGENCY_PER_NAMESPACE:
        return QuotaExceeded(namespace, domain, held)
    return None
