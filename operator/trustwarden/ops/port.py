"""What the operations commands need from the cluster; :mod:`trustwarden.k8s.ops_client`
implements it over the ``kubernetes`` client, tests with an in-memory fake.

Bodies are plain JSON dicts. ``get_*`` return None for a missing object; a missing
trustwarden.io resource type raises :class:`~trustwarden.ops.errors.CRDMissingError`, RBAC
denials :class:`~trustwarden.ops.errors.ForbiddenError` (naming the verb and resource).
"""

from __future__ import annotations

from typing import Any, Protocol

Json = dict[str, Any]


class OpsPort(Protocol):
    def default_namespace(self) -> str: ...

    def list_secrets(self, namespace: str | None, label_selector: str) -> list[Json]: ...

    def get_secret(self, namespace: str, name: str) -> Json | None: ...

    def patch_secret(self, namespace: str, name: str, patch: Json) -> Json: ...

    def get_pod(self, namespace: str, name: str) -> Json | None: ...

    def list_bundles(self, namespace: str | None) -> list[Json]: ...

    def get_bundle(self, namespace: str) -> Json | None: ...

    def list_identities(self, namespace: str | None) -> list[Json]: ...

    def list_pod_certificate_requests(self, namespace: str | None) -> list[Json]:
        """PodCertificateRequests (Kubernetes 1.37+); [] where the API does not serve them."""
        ...

    def list_trust_domains(self) -> list[Json]: ...

    def get_trust_domain(self, name: str) -> Json | None: ...

    def patch_trust_domain(self, name: str, patch: Json) -> Json: ...
