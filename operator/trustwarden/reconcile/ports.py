"""The small ports the reconcile layer talks through; trustwarden.k8s implements them.

Bodies are plain dicts in Kubernetes' JSON shape, so tests fake these with a few lines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

Body = Mapping[str, Any]


class ConflictError(Exception):
    """A write lost an optimistic-concurrency race (HTTP 409); re-read and try again."""


class NotFoundError(Exception):
    """The object does not exist (HTTP 404)."""


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    name: str
    namespace: str | None
    uid: str


class KubePort(Protocol):
    async def get(self, kind: str, namespace: str | None, name: str) -> Body | None: ...

    def list_pages(
        self, kind: str, *, label_selector: str, namespaces: list[str] | None = None
    ) -> AsyncIterator[list[Body]]:
        """Every Pod or Secret matching a label selector, one page at a time. The caller
        reduces each page before asking for the next, so the full bodies of a large listing
        never coexist in memory."""
        ...

    async def create(self, kind: str, namespace: str, body: Body) -> Body: ...

    async def replace(self, kind: str, namespace: str, name: str, body: Body) -> Body: ...

    async def patch_data(
        self,
        kind: str,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        *,
        resource_version: str,
    ) -> Body:
        """Set these `data` keys (others untouched) if the object still has that
        resourceVersion (ConflictError otherwise); the written object."""
        ...

    async def delete(
        self, kind: str, namespace: str, name: str, *, uid: str | None = None
    ) -> bool: ...

    async def remove_finalizer(
        self, kind: str, namespace: str, name: str, finalizer: str, *, uid: str
    ) -> None:
        """Drop one finalizer from the object with that uid (NotFoundError if it is gone)."""
        ...

    async def patch_status(
        self, kind: str, namespace: str | None, name: str, status: Body
    ) -> None: ...

    async def emit_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None: ...
