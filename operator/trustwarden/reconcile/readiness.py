"""Whether a WorkloadIdentity is Ready or Degraded: a chain of pure checks over its facts.

Each check looks at the counted facts and either settles the answer or passes to the next one
(as cert-manager's readiness policy chain does); the first that answers wins, and an identity
none of them stops is Ready. Status building (reconcile/controllers/statuses.py) only counts
the facts and writes what the chain answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from trustwarden.pki._clock import to_rfc3339


@dataclass(frozen=True)
class IdentityFacts:
    namespace: str
    name: str
    problem: tuple[str, str] | None  # what keeps the identity from issuing at all
    selected: int  # targets: the Shared Secret, or the selected live pods
    issued: int  # targets holding a valid certificate trustwarden issued to them
    failed: int
    first_failure: tuple[str, str] | None  # (reason, message) of the first failing target
    soonest: datetime | None  # the soonest expiry among the valid certificates


@dataclass(frozen=True)
class Readiness:
    ready: bool
    degraded: bool
    reason: str
    message: str


Check = Callable[[IdentityFacts], Readiness | None]


def blocked(facts: IdentityFacts) -> Readiness | None:
    """A problem with the identity itself (its domain, policy, spec, Secret name)."""
    if facts.problem is None:
        return None
    reason, message = facts.problem
    if facts.issued and facts.soonest is not None:
        # Certificates issued before the problem (e.g. the namespace left the domain's
        # allowedNamespaces) are kept until they expire, not revoked: a label typo must not
        # cut a namespace off at once. Say so, and how to cut them off.
        message += (
            f". {facts.issued} certificate(s) issued earlier stay valid until they expire "
            f"(soonest {to_rfc3339(facts.soonest)}) and are not renewed; run "
            f"`trustwarden revoke -n {facts.namespace} --identity {facts.name} --reason ... "
            "--no-wait` to cut them off now"
        )
    return Readiness(False, True, reason, message)


def failing(facts: IdentityFacts) -> Readiness | None:
    """Some targets fail (conflict, fight, refused DNS name, not admitted, ...)."""
    if facts.first_failure is None:
        return None
    reason, first = facts.first_failure
    if 0 < facts.failed <= facts.selected:
        message = f"{facts.failed} of {facts.selected} certificate(s) failing; first: {first}"
    else:  # the identity as a whole fails (e.g. its signer is down), with no pod selected yet
        message = first
    return Readiness(False, True, reason, message)


def issuing(facts: IdentityFacts) -> Readiness | None:
    """Targets still waiting for their first certificate."""
    if facts.issued >= facts.selected:
        return None
    message = f"{facts.issued} of {facts.selected} selected workload(s) hold a valid certificate"
    return Readiness(False, False, "Issuing", message)


IDENTITY_CHAIN: Sequence[Check] = (blocked, failing, issuing)


def identity_readiness(facts: IdentityFacts, chain: Sequence[Check] = IDENTITY_CHAIN) -> Readiness:
    for check in chain:
        answer = check(facts)
        if answer is not None:
            return answer
    message = (
        f"{facts.issued} certificate(s) valid"
        if facts.selected
        else "no pod is selected yet; certificates are issued when pods are created"
    )
    return Readiness(True, False, "Ready", message)
