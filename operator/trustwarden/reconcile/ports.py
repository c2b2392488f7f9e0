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


class InvalidError(Exception):
    """The API server refused the object as invalid (HTTP 422); trying again will not help."""


class GoneError(Exception):
    """A watch's resourceVersion is too old (HTTP 410 Gone): list again, then watch."""


@dataclass
class ListPage:
    """One page of a paginated list; `resource_version` is the whole listing's (every page of
    one list is the same snapshot), the point a watch continues from."""

    items: list[Body]
    resource_version: str


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
        self, kind: str, *, label_selector: str, namespace: str | None = None
    ) -> AsyncIterator[ListPage]:
        """Every Pod or Secret matching a label selector (in one namespace, or in all), one
        page at a time. The caller reduces each page before asking for the next, so the full
        bodies of a large listing never coexist in memory."""
        ...

    def watch(
        self, kind: str, *, label_selector: str, namespace: str | None, resource_version: str
    ) -> AsyncIterator[tuple[str, Body]]:
        """(type, object) events after `resource_version`: ADDED, MODIFIED, DELETED and
        BOOKMARK (only its resourceVersion is meaningful). Ends when the server ends the
        watch; GoneError when the version is too old."""
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
