"""KubePort over the official `kubernetes` client.

Calls are blocking, so they run on a bounded thread pool and never on the event loop. Bodies go
in and come out as plain JSON dicts (no model objects: cheaper, and what the engine expects).
429 and 5xx answers are retried with backoff, honouring Retry-After; 404 and 409 become the
port's NotFoundError and ConflictError.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from trustwarden.reconcile.ports import Body, ConflictError, NotFoundError, ObjectRef

log = logging.getLogger("trustwarden.k8s")
T = TypeVar("T")

GROUP = "trustwarden.io"
VERSION = "v1alpha1"
PLURALS = {"TrustDomain": "trustdomains", "WorkloadIdentity": "workloadidentities"}
MAX_ATTEMPTS = 8
COMPONENT = "trustwarden"


def load_api_client(
    kubeconfig: str | None = None, context: str | None = None, pool: int = 32
) -> client.ApiClient:
    """In-cluster config when running in a pod, the kubeconfig otherwise."""
    configuration = client.Configuration()
    try:
        if kubeconfig is None and context is None:
            config.load_incluster_config(client_configuration=configuration)
        else:
            raise config.ConfigException("explicit kubeconfig")
    except config.ConfigException:
        config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    configuration.connection_pool_maxsize = pool
    return client.ApiClient(configuration)


class KubeGateway:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        workers: int = 16,
        instance: str = "trustwarden",
        event_namespace: str = "default",
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.events = client.EventsV1Api(api)
        self.instance = instance
        # The API server accepts Events about cluster-scoped objects (TrustDomains) only in
        # `default`; the parameter stays for clusters that relax that.
        self.event_namespace = event_namespace
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="k8s")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _call(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        delay = 0.2
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await loop.run_in_executor(self._pool, fn)
            except ApiException as exc:
                if exc.status == 404:
                    raise NotFoundError(_reason(exc)) from exc
                if exc.status == 409:
                    raise ConflictError(_reason(exc)) from exc
                retryable = exc.status in (429, 500, 502, 503, 504) or exc.status == 0
                if not retryable or attempt == MAX_ATTEMPTS:
                    raise
                wait = _retry_after(exc) or delay * (0.5 + random.random())  # noqa: S311
                log.info(
                    "API answered %s; retrying in %.1fs (attempt %d)", exc.status, wait, attempt
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        data = response.data
        return dict(json.loads(data)) if data else {}

    async def get(self, kind: str, namespace: str | None, name: str) -> Body | None:
        try:
            if kind == "Secret":
                assert namespace is not None
                return await self._call(
                    lambda: self._json(
                        self.core.read_namespaced_secret(name, namespace, _preload_content=False)
                    )
                )
            if kind == "ConfigMap":
                assert namespace is not None
                return await self._call(
                    lambda: self._json(
                        self.core.read_namespaced_config_map(
                            name, namespace, _preload_content=False
                        )
                    )
                )
            if kind == "Pod":
                assert namespace is not None
                return await self._call(
                    lambda: self._json(
                        self.core.read_namespaced_pod(name, namespace, _preload_content=False)
                    )
                )
            plural = PLURALS[kind]
            if namespace:
                return await self._call(
                    lambda: dict(
                        self.custom.get_namespaced_custom_object(
                            GROUP, VERSION, namespace, plural, name
                        )
                    )
                )
            return await self._call(
                lambda: dict(self.custom.get_cluster_custom_object(GROUP, VERSION, plural, name))
            )
        except NotFoundError:
            return None

    async def list_pages(
        self, kind: str, *, label_selector: str, namespaces: list[str] | None = None
    ) -> AsyncIterator[list[Body]]:
        """Every Pod or Secret matching a label selector, 500 per page, yielded page by page
        (the next page is fetched only when the caller has handled this one)."""
        scopes: list[str | None] = list(namespaces) if namespaces else [None]
        for scope in scopes:
            token: str | None = None
            while True:
                page = await self._call(
                    partial(self._list_page, kind, scope, label_selector, token)
                )
                token = (page.get("metadata") or {}).get("continue") or None
                # Popped, not read: this frame keeps no reference to the items while the
                # caller works through them.
                yield list(page.pop("items", None) or ())
                if not token:
                    break

    def _list_page(
        self, kind: str, namespace: str | None, selector: str, token: str | None
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "label_selector": selector,
            "limit": 500,
            "_preload_content": False,
        }
        if token:
            kwargs["_continue"] = token
        if kind == "Pod":
            call = (
                self.core.list_namespaced_pod(namespace, **kwargs)
                if namespace
                else self.core.list_pod_for_all_namespaces(**kwargs)
            )
        elif kind == "Secret":
            call = (
                self.core.list_namespaced_secret(namespace, **kwargs)
                if namespace
                else self.core.list_secret_for_all_namespaces(**kwargs)
            )
        else:
            raise ValueError(f"cannot list {kind}")
        return self._json(call)

    async def create(self, kind: str, namespace: str, body: Body) -> Body:
        if kind == "Secret":
            return await self._call(
                lambda: self._json(
                    self.core.create_namespaced_secret(
                        namespace, dict(body), _preload_content=False
                    )
                )
            )
        if kind == "ConfigMap":
            return await self._call(
                lambda: self._json(
                    self.core.create_namespaced_config_map(
                        namespace, dict(body), _preload_content=False
                    )
                )
            )
        raise ValueError(f"cannot create {kind}")

    async def replace(self, kind: str, namespace: str, name: str, body: Body) -> Body:
        if kind == "Secret":
            return await self._call(
                lambda: self._json(
                    self.core.replace_namespaced_secret(
                        name, namespace, dict(body), _preload_content=False
                    )
                )
            )
        if kind == "ConfigMap":
            return await self._call(
                lambda: self._json(
                    self.core.replace_namespaced_config_map(
                        name, namespace, dict(body), _preload_content=False
                    )
                )
            )
        raise ValueError(f"cannot replace {kind}")

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
        return await self._call(
            lambda: self._json(
                self.core.patch_namespaced_secret(
                    name,
                    namespace,
                    patch,
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                )
            )
        )

    async def delete(self, kind: str, namespace: str, name: str, *, uid: str | None = None) -> bool:
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=uid) if uid else None
        )
        try:
            if kind == "Secret":
                await self._call(
                    lambda: self.core.delete_namespaced_secret(name, namespace, body=options)
                )
            elif kind == "ConfigMap":
                await self._call(
                    lambda: self.core.delete_namespaced_config_map(name, namespace, body=options)
                )
            else:
                raise ValueError(f"cannot delete {kind}")
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
                await self._call(
                    partial(
                        self.core.patch_namespaced_secret,
                        name,
                        namespace,
                        ops,
                        _content_type="application/json-patch+json",
                        _preload_content=False,
                    )
                )
                return
            except ConflictError:
                continue
            except ApiException as exc:
                if exc.status != 422:  # a failed "test": the list changed meanwhile
                    raise
        raise ConflictError(f"{kind} {namespace}/{name} kept changing; finalizer not removed")

    async def patch_status(self, kind: str, namespace: str | None, name: str, status: Body) -> None:
        plural = PLURALS[kind]
        body = {"status": dict(status)}
        if namespace:
            await self._call(
                lambda: self.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, plural, name, body
                )
            )
        else:
            await self._call(
                lambda: self.custom.patch_cluster_custom_object_status(
                    GROUP, VERSION, plural, name, body
                )
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
                "labels": {"app.kubernetes.io/managed-by": "trustwarden"},
            },
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": "trustwarden.io/operator",
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
        await self._call(lambda: self.events.create_namespaced_event(namespace, body))

    async def upsert_webhook_configuration(self, body: Mapping[str, Any]) -> None:
        api = client.AdmissionregistrationV1Api(self.api)
        name = str(body["metadata"]["name"])
        try:
            current = await self._call(lambda: api.read_mutating_webhook_configuration(name))
        except NotFoundError:
            await self._call(lambda: api.create_mutating_webhook_configuration(dict(body)))
            return
        patched = dict(body)
        patched["metadata"] = {
            **dict(body["metadata"]),
            "resourceVersion": current.metadata.resource_version,
        }
        await self._call(lambda: api.replace_mutating_webhook_configuration(name, patched))


def _reason(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)


def _retry_after(exc: ApiException) -> float | None:
    headers = exc.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return min(float(value), 30.0) + random.random() if value else None  # noqa: S311
    except ValueError:
        return None


def monotonic() -> float:
    return time.monotonic()
