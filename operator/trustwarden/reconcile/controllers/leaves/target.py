"""What the leaves controller converges: one Secret, its owner, and what it must hold."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from trustwarden.pki.spiffe import TemplateContext
from trustwarden.reconcile.domains import DomainRuntime
from trustwarden.reconcile.model import WorkloadIdentitySpec
from trustwarden.reconcile.ports import ObjectRef


@dataclass
class LeafTarget:
    """Everything needed to converge one Secret: who owns it and what it must hold."""

    key: Hashable
    namespace: str
    secret_name: str
    owner: ObjectRef
    wid: WorkloadIdentitySpec
    domain: DomainRuntime
    context: TemplateContext
    jitter_key: str
