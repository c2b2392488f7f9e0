"""KubePort over trustwarden.k8s.http (aiohttp on the event loop).

Bodies go in and come out as plain JSON dicts. 429 and 5xx answers (and an unreachable API
server) are retried with backoff, honouring Retry-After; 404, 409 and 410 become the port's
NotFoundError, ConflictError and GoneError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from trustwarden.k8s.http import JSON_PATCH, MERGE_PATCH, ApiClient, ApiError
from trustwarden.names import (
    EVENT_REPORTER,
    GROUP,
    MANAGED_BY,
    MANAGER,
    VERSION,
)
from trustwarden.reconcile.aimd import AdaptiveGate
from trustwarden.reconcile.ports import (
    Body,
    ConflictError,
    GoneError,
    InvalidError,
    ListPage,
    NotFoundError,
    ObjectRef,
)

log = logging.getLogger("trustwarden.k8s")
T = TypeVar("T")

PLURALS = {"TrustDomain": "trustdomains", "WorkloadIdentity": "workloadidentities"}
CORE_PLURALS = {"Secret": "secrets", "ConfigMap": "configmaps", "Pod": "pods"}
# Kubernetes 1.37+: pod certificates and their trust bundles.
CERTIFICATES = "/apis/certificates.k8s.io/v1"
CERT_PLURALS = {
    "PodCertificateRequest": "podcertificaterequests",
    "ClusterTrustBundle": "clustertrustbundles",
}
LISTABLE = frozenset({"Pod", "Secret", "ConfigMap", *CERT_PLURALS})
MAX_ATTEMPTS = 8
LIST_PAGE = 500
WATCH_SECONDS = 300
RETRYABLE = frozenset({0, 429, 500, 502, 503, 504})


def object_path(kind: str, namespace: str | None, name: str | None = None) -> str:
    """The REST path of a kind we use: a collection, or one object when `name` is given."""
    if kind in CORE_PLURALS:
        scope = f"/namespaces/{namespace}" if namespace else ""
        base = f"/api/v1{scope}/{CORE_PLURALS[kind]}"
    elif kind in CERT_PLURALS:
        scope = f"/namespaces/{namespace}" if namespace else ""
        base = f"{CERTIFICATES}{scope}/{CERT_PLURALS[kind]}"
    elif kind in PLURALS:
        scope = f"/namespaces/{namespace}" if namespace else ""
        base = f"/apis/{GROUP}/{VERSION}{scope}/{PLURALS[kind]}"
    else:
        raise ValueError(f"no path for {kind}")
    return f"{base}/{name}" if name else base


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    what: str = "",
    on_overload: Callable[[], None] | None = None,
) -> T:
    """`call`, retried on 429, 5xx and unreachable with capped exponential backoff (or the
    server's Retry-After); 404 and 409 become NotFoundError and ConflictError. `on_overload`
    hears of every 429 and 5xx (the API server pushing back)."""
    delay = 0.2
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return await call()
        except ApiError as exc:
            if exc.status == 404:
                raise NotFoundError(exc.message) from exc
            if exc.status == 409:
                raise ConflictError(exc.message) from exc
            if on_overload is not None and (exc.status == 429 or exc.status >= 500):
                on_overload()
            if exc.status not in RETRYABLE or attempt == MAX_ATTEMPTS:
                raise
            if exc.retry_after is not None:
                wait = min(exc.retry_after, 30.0) + random.random()  # noqa: S311
            else:
                wait = delay * (0.5 + random.random())  # noqa: S311
            log.info(
                "API answered %s; retrying in %.1fs (attempt %d: %s)",
                exc.status or exc.reason,
                wait,
                attempt,
                what,
            )
            await asyncio.sleep(wait)
            delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")


class KubeGateway:
    def __init__(
        self,
        api: ApiClient,
        *,
        instance: str = "trustwarden",
        event_namespace: str = "default",
        write_gate: AdaptiveGate | None = None,
    ) -> None:
        self.api = api
        # Writes (not reads or watches) go through the adaptive concurrency gate, if any.
        self.write_gate = write_gate
        self.instance = instance
        # The API server accepts Events about cluster-scoped objects (TrustDomains) only in
        # `default`; the parameter stays for clusters that relax that.
        self.event_namespace = event_namespace

    async def close(self) -> None:
        await self.api.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        def call() -> Awaitable[dict[str, Any]]:
            return self.api.request(
                method, path, params=params, body=body, content_type=content_type
            )

        gate = self.write_gate
        if gate is None or method == "GET":
            return await call_with_retries(call, f"{method} {path}")
        async with gate.slot():
            result = await call_with_retries(call, f"{method} {path}", gate.overloaded)
        gate.succeeded()
        return result

    async def get(self, kind: str, namespace: str | None, name: str) -> Body | None:
        try:
            return await self._send("GET", object_path(kind, namespace, name))
        except NotFoundError:
            return None

    async def list_pages(
        self, kind: str, *, label_selector: str, namespace: str | None = None
    ) -> AsyncIterator[ListPage]:
        """Every Pod or Secret matching a label selector, 500 per page, yielded page by page.
        The next page is requested before this one is yielded, so the API server encodes it
        while the caller works through this one (a restart lists 200,000 objects); no more
        than two pages are held at once."""
        if kind not in LISTABLE:
            raise ValueError(f"cannot list {kind}")
        path = object_path(kind, namespace)

        def fetch(token: str | None) -> asyncio.Task[Any]:
            params = {"limit": str(LIST_PAGE)}
            if label_selector:
                params["labelSelector"] = label_selector
            if token:
                params["continue"] = token
            return asyncio.ensure_future(self._send("GET", path, params=params))

        pending: asyncio.Task[Any] | None = fetch(None)
        try:
            while pending is not None:
                page = await pending
                meta = page.get("metadata") or {}
                token = meta.get("continue") or None
                pending = fetch(token) if token else None
                # Popped, not read: this frame keeps no reference to the items while the
                # caller works through them.
                items = list(page.pop("items", None) or ())
                del page
                yield ListPage(items, str(meta.get("resourceVersion")))
                del items
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending

    async def watch(
        self, kind: str, *, label_selector: str, namespace: str | None, resource_version: str
    ) -> AsyncIterator[tuple[str, Body]]:
        params = {
            **({"labelSelector": label_selector} if label_selector else {}),
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        try:
            async for event in self.api.watch(
                object_path(kind, namespace), params, timeout=WATCH_SECONDS + 30
            ):
                type_, body = str(event.get("type")), event.get("object") or {}
                if type_ == "ERROR":
                    code = body.get("code")
                    if code == 410:
                        raise GoneError(str(body.get("message") or "resourceVersion too old"))
                    raise ApiError(
                        int(code or 0), str(body.get("reason")), str(body.get("message"))
                    )
                yield type_, body
        except ApiError as exc:
            if exc.status == 410:
                raise GoneError(exc.message) from exc
            raise

    async def create(self, kind: str, namespace: str, body: Body) -> Body:
        """Create a Secret or ConfigMap (in `namespace`) or a ClusterTrustBundle (pass "")."""
        if kind not in ("Secret", "ConfigMap", "ClusterTrustBundle"):
            raise ValueError(f"cannot create {kind}")
        return await self._send("POST", object_path(kind, namespace or None), body=dict(body))

    async def replace(self, kind: str, namespace: str, name: str, body: Body) -> Body:
        if kind not in ("Secret", "ConfigMap", "ClusterTrustBundle"):
            raise ValueError(f"cannot replace {kind}")
        return await self._send("PUT", object_path(kind, namespace or None, name), body=dict(body))

    async def update_status(self, kind: str, namespace: str, name: str, body: Body) -> Body:
        """PUT the whole object to its status subresource (a PodCertificateRequest's status
        is set with `update`; its resourceVersion makes a concurrent writer fail with 409)."""
        if kind != "PodCertificateRequest":
            raise ValueError(f"cannot update the status of {kind}")
        try:
            return await self._send(
                "PUT", object_path(kind, namespace, name) + "/status", body=dict(body)
            )
        except ApiError as exc:
            if exc.status == 422:
                raise InvalidError(exc.message) from exc
            raise

    async def served_resources(self, group_version_path: str) -> set[str] | None:
        """The resource names an API group version serves, or None when it is not served."""
        try:
            answer = await self._send("GET", group_version_path)
        except NotFoundError:
            return None
        return {str(r.get("name")) for r in answer.get("resources") or ()}

    async def patch_data(
        self,
        kind: str,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        *,
        resource_version: str,
    ) -> Body:
        """A merge patch of some `data` keys, with the resourceVersion as precondition (the
        API server answers 409 when it changed): one request instead of a GET and a PUT."""
        if kind != "Secret":
            raise ValueError(f"cannot patch the data of {kind}")
        patch = {"metadata": {"resourceVersion": resource_version}, "data": dict(data)}
        return await self._send(
            "PATCH", object_path(kind, namespace, name), body=patch, content_type=MERGE_PATCH
        )

    async def delete(self, kind: str, namespace: str, name: str, *, uid: str | None = None) -> bool:
        if kind not in ("Secret", "ConfigMap", "ClusterTrustBundle"):
            raise ValueError(f"cannot delete {kind}")
        options: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            await self._send("DELETE", object_path(kind, namespace or None, name), body=options)
        except NotFoundError:
            return False
        except ConflictError:
            return False  # the uid precondition failed: a different object now has that name
        return True

    async def remove_finalizer(
        self, kind: str, namespace: str, name: str, finalizer: str, *, uid: str
    ) -> None:
        """A JSON patch that removes exactly that finalizer from exactly that object: it tests
        the uid and the list entry first, so a concurrent change makes it fail, not misfire."""
        if kind != "Secret":
            raise ValueError(f"cannot remove a finalizer from {kind}")
        for _attempt in range(5):
            current = await self.get(kind, namespace, name)
            meta = (current or {}).get("metadata") or {}
            if current is None or meta.get("uid") != uid:
                raise NotFoundError(f"{kind} {namespace}/{name} with uid {uid}")
            finalizers = list(meta.get("finalizers") or ())
            if finalizer not in finalizers:
                return
            index = finalizers.index(finalizer)
            ops = [
                {"op": "test", "path": "/metadata/uid", "value": uid},
                {"op": "test", "path": f"/metadata/finalizers/{index}", "value": finalizer},
                {"op": "remove", "path": f"/metadata/finalizers/{index}"},
            ]
            try:
                await self._send(
                    "PATCH", object_path(kind, namespace, name), body=ops, content_type=JSON_PATCH
                )
                return
            except ConflictError:
                continue
            except ApiError as exc:
                if exc.status != 422:  # a failed "test": the list changed meanwhile
                    raise
        raise ConflictError(f"{kind} {namespace}/{name} kept changing; finalizer not removed")

    async def patch_status(self, kind: str, namespace: str | None, name: str, status: Body) -> None:
        await self._send(
            "PATCH",
            object_path(kind, namespace, name) + "/status",
            body={"status": dict(status)},
            content_type=MERGE_PATCH,
        )

    async def emit_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        now = datetime.now(UTC)
        namespace = ref.namespace or self.event_namespace
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {
                "name": f"{ref.name[:200]}.{uuid.uuid4().hex[:16]}",
                "namespace": namespace,
                "labels": {MANAGED_BY: MANAGER},
            },
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": EVENT_REPORTER,
            "reportingInstance": self.instance[:128],
            "action": reason[:128],
            "reason": reason[:128],
            "note": message[:1024],
            "type": type_,
            "regarding": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
        }
        await self._send("POST", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events", body=body)

    async def ensure_namespace(self, name: str, labels: Mapping[str, str]) -> None:
        try:
            await self._send("GET", f"/api/v1/namespaces/{name}")
        except NotFoundError:
            with contextlib.suppress(ConflictError):  # created meanwhile
                await self._send(
                    "POST",
                    "/api/v1/namespaces",
                    body={"metadata": {"name": name, "labels": dict(labels)}},
                )

    async def upsert_webhook_configuration(self, body: Mapping[str, Any]) -> None:
        base = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
        name = str(body["metadata"]["name"])
        try:
            current = await self._send("GET", f"{base}/{name}")
        except NotFoundError:
            await self._send("POST", base, body=dict(body))
            return
        patched = dict(body)
        patched["metadata"] = {
            **dict(body["metadata"]),
            "resourceVersion": (current.get("metadata") or {}).get("resourceVersion"),
        }
        await self._send("PUT", f"{base}/{name}", body=patched)
