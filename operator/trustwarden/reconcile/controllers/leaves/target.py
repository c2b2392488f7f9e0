"""What the leaves controller converges: one Secret, its owner, and what it must hold."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from trustwarden.pki.issue import IssuedLeaf, LeafFacts
from trustwarden.pki.renewal import DesiredLeaf, renew_point
from trustwarden.pki.spiffe import TemplateContext
from trustwarden.reconcile.domains import DomainRuntime
from trustwarden.reconcile.model import WorkloadIdentitySpec
from trustwarden.reconcile.ports import ObjectRef
from trustwarden.reconcile.secretbody import leaf_annotations, svid_metadata


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

    def metadata(
        self,
        facts: LeafFacts,
        *,
        issuer_sha256: str,
        renew_at: datetime,
        finalizers: Iterable[str],
    ) -> dict[str, Any]:
        """The metadata trustwarden writes with this target's certificate `facts`."""
        return svid_metadata(
            namespace=self.namespace,
            name=self.secret_name,
            identity=self.wid.name,
            owner=self.owner,
            annotations=leaf_annotations(
                facts,
                trust_domain=self.domain.trust_domain,
                issuer_sha256=issuer_sha256,
                owner=self.wid.owner,
                renew_at=renew_at,
            ),
            finalizers=finalizers,
        )

    def renew_point(
        self, desired: DesiredLeaf, validity: LeafFacts | IssuedLeaf, max_jitter_fraction: float
    ) -> datetime:
        """When this target's certificate is due: at desired.renew_at of its lifetime, less
        the target's stable jitter (pki/renewal.py)."""
        return renew_point(
            validity,
            desired.renew_at,
            self.jitter_key,
            max_jitter_fraction,
            backdate=desired.backdate,
        )
