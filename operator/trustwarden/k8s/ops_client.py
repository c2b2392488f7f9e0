"""OpsPort over the official `kubernetes` client, for the operations CLI.

Blocking calls (a CLI has nothing else to do), plain JSON dicts in and out, and every API
failure turned into an actionable :mod:`trustwarden.ops.errors` exception: a missing CRD says
how to install it, an RBAC denial names the verb and resource needed, a missing object names
the object.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from trustwarden.names import (
    BUNDLE_CONFIGMAP,
    GROUP,
    VERSION,
)
from trustwarden.names import MANAGED_SELECTOR as BUNDLE_SELECTOR
from trustwarden.ops.errors import (
    CRD_HINT,
    ConflictError,
    CRDMissingError,
    ForbiddenError,
    NotFoundError,
    OpsError,
    UnreachableError,
)
from trustwarden.ops.port import Json

MERGE_PATCH = "application/merge-patch+json"
PAGE = 500
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
T = TypeVar("T")


def _server_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return str(exc.reason or "")
    return str(body.get("message") or exc.reason or "")


def _names_an_object(exc: ApiException) -> bool:
    """A 404 about a missing object carries details.name; a 404 for a resource type that is
    not served (no CRD) does not."""
    try:
        details = json.loads(exc.body or "{}").get("details") or {}
    except (TypeError, ValueError, AttributeError):
        return False
    return bool(details.get("name"))


def load_api_client(
    kubeconfig: str | None = None, context: str | None = None, pool: int = 4
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


class OpsClient:
    """The cluster, as the CLI commands see it."""

    def __init__(
        self,
        kubeconfig: str | None = None,
        context: str | None = None,
        *,
        request_timeout: float = 30.0,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.timeout = request_timeout
        try:
            self.api = load_api_client(kubeconfig, context, pool=4)
        except (config.ConfigException, OSError, TypeError, ValueError) as exc:
            where = kubeconfig or "$KUBECONFIG or ~/.kube/config"
            raise UnreachableError(
                f"cannot load the kubeconfig ({where}{', context ' + context if context else ''}): "
                f"{str(exc).rstrip('. ')}; pass --kubeconfig FILE and/or --context NAME"
            ) from None
        self.host = str(self.api.configuration.host)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    # ------------------------------------------------------------------ plumbing

    def _call(
        self,
        fn: Callable[[], T],
        *,
        verb: str,
        resource: str,
        namespace: str | None,
        name: str | None = None,
        group: str = "",
    ) -> T:
        try:
            return fn()
        except ApiException as exc:
            raise self._translate(exc, verb, resource, namespace, name, group) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise UnreachableError(
                f"cannot reach the Kubernetes API at {self.host}: {str(exc)[:200]}; check "
                "--kubeconfig/--context and that the cluster is running"
            ) from None

    def _translate(
        self,
        exc: ApiException,
        verb: str,
        resource: str,
        namespace: str | None,
        name: str | None,
        group: str,
    ) -> OpsError:
        message = _server_message(exc)
        qualified = f"{resource}.{group}" if group else resource
        scope = f"in namespace {namespace}" if namespace else "cluster-wide"
        if exc.status == 404 and group == GROUP and not (name and _names_an_object(exc)):
            return CRDMissingError(
                f"the API server does not serve {qualified} (the trustwarden CustomResource"
                f"Definitions are missing): {CRD_HINT}"
            )
        if exc.status == 404:
            target = f"{namespace}/{name}" if namespace and name else (name or resource)
            return NotFoundError(f"{resource} {target} not found")
        if exc.status == 403:
            can_i = f"kubectl auth can-i {verb} {qualified}" + (
                f" -n {namespace}" if namespace else " --all-namespaces"
            )
            return ForbiddenError(
                f"forbidden: RBAC does not allow verb '{verb}' on resource '{qualified}' "
                f"{scope}; grant a (Cluster)Role rule with apiGroups: ['{group}'], resources: "
                f"['{resource}'], verbs: ['{verb}'] (check with: {can_i}). Server said: {message}"
            )
        if exc.status == 401:
            return UnreachableError(
                f"the API server at {self.host} rejected the credentials (401 Unauthorized); "
                "refresh them or pick another --context"
            )
        if exc.status == 409:
            return ConflictError(f"{resource} {name or ''} changed concurrently: {message}")
        return OpsError(f"{verb} {qualified} {scope} failed: {exc.status} {exc.reason}: {message}")

    def _json(self, response: Any) -> Json:
        data = response.data
        return dict(json.loads(data)) if data else {}

    def _list_core(
        self,
        list_ns: Callable[..., Any],
        list_all: Callable[..., Any],
        namespace: str | None,
        **kwargs: Any,
    ) -> list[Json]:
        items: list[Json] = []
        token: str | None = None
        while True:
            args = dict(kwargs, limit=PAGE, _preload_content=False, _request_timeout=self.timeout)
            if token:
                args["_continue"] = token
            response = list_ns(namespace, **args) if namespace else list_all(**args)
            page = self._json(response)
            items.extend(page.get("items") or ())
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def _get_or_none(self, fn: Callable[[], T], **where: Any) -> T | None:
        try:
            return self._call(fn, **where)
        except NotFoundError:
            return None

    # ------------------------------------------------------------------ OpsPort

    def default_namespace(self) -> str:
        """The kubeconfig context's namespace, as kubectl uses it; in a pod without a
        kubeconfig, the pod's own namespace; else ``default``."""
        try:
            contexts, active = config.list_kube_config_contexts(self.kubeconfig)
        except (config.ConfigException, OSError, TypeError, ValueError, KeyError):
            try:
                return SA_NAMESPACE_FILE.read_text().strip() or "default"
            except OSError:
                return "default"
        chosen = active
        if self.context:
            chosen = next((c for c in contexts if c.get("name") == self.context), active)
        namespace = ((chosen or {}).get("context") or {}).get("namespace")
        return str(namespace) if namespace else "default"

    def list_secrets(self, namespace: str | None, label_selector: str) -> list[Json]:
        return self._call(
            lambda: self._list_core(
                self.core.list_namespaced_secret,
                self.core.list_secret_for_all_namespaces,
                namespace,
                label_selector=label_selector,
            ),
            verb="list",
            resource="secrets",
            namespace=namespace,
        )

    def get_secret(self, namespace: str, name: str) -> Json | None:
        return self._get_or_none(
            lambda: self._json(
                self.core.read_namespaced_secret(
                    name, namespace, _preload_content=False, _request_timeout=self.timeout
                )
            ),
            verb="get",
            resource="secrets",
            namespace=namespace,
            name=name,
        )

    def patch_secret(self, namespace: str, name: str, patch: Json) -> Json:
        return self._call(
            lambda: self._json(
                self.core.patch_namespaced_secret(
                    name,
                    namespace,
                    patch,
                    _content_type=MERGE_PATCH,
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            ),
            verb="patch",
            resource="secrets",
            namespace=namespace,
            name=name,
        )

    def get_pod(self, namespace: str, name: str) -> Json | None:
        return self._get_or_none(
            lambda: self._json(
                self.core.read_namespaced_pod(
                    name, namespace, _preload_content=False, _request_timeout=self.timeout
                )
            ),
            verb="get",
            resource="pods",
            namespace=namespace,
            name=name,
        )

    def list_bundles(self, namespace: str | None) -> list[Json]:
        return self._call(
            lambda: self._list_core(
                self.core.list_namespaced_config_map,
                self.core.list_config_map_for_all_namespaces,
                namespace,
                label_selector=BUNDLE_SELECTOR,
                field_selector=f"metadata.name={BUNDLE_CONFIGMAP}",
            ),
            verb="list",
            resource="configmaps",
            namespace=namespace,
        )

    def get_bundle(self, namespace: str) -> Json | None:
        return self._get_or_none(
            lambda: self._json(
                self.core.read_namespaced_config_map(
                    BUNDLE_CONFIGMAP,
                    namespace,
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            ),
            verb="get",
            resource="configmaps",
            namespace=namespace,
            name=BUNDLE_CONFIGMAP,
        )

    def list_pod_certificate_requests(self, namespace: str | None) -> list[Json]:
        try:
            return self._call(
                lambda: self._list_custom(
                    "podcertificaterequests", namespace, group="certificates.k8s.io", version="v1"
                ),
                verb="list",
                resource="podcertificaterequests",
                namespace=namespace,
                group="certificates.k8s.io",
            )
        except NotFoundError:
            return []  # a cluster before 1.37: no pod certificates

    def _list_custom(
        self, plural: str, namespace: str | None, *, group: str = GROUP, version: str = VERSION
    ) -> list[Json]:
        items: list[Json] = []
        token: str | None = None
        while True:
            args: dict[str, Any] = {"limit": PAGE, "_request_timeout": self.timeout}
            if token:
                args["_continue"] = token
            if namespace:
                page = self.custom.list_namespaced_custom_object(
                    group, version, namespace, plural, **args
                )
            else:
                page = self.custom.list_cluster_custom_object(group, version, plural, **args)
            items.extend(dict(i) for i in page.get("items") or ())
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def list_identities(self, namespace: str | None) -> list[Json]:
        return self._call(
            lambda: self._list_custom("workloadidentities", namespace),
            verb="list",
            resource="workloadidentities",
            namespace=namespace,
            group=GROUP,
        )

    def list_trust_domains(self) -> list[Json]:
        return self._call(
            lambda: self._list_custom("trustdomains", None),
            verb="list",
            resource="trustdomains",
            namespace=None,
            group=GROUP,
        )

    def get_trust_domain(self, name: str) -> Json | None:
        return self._get_or_none(
            lambda: dict(
                self.custom.get_cluster_custom_object(
                    GROUP, VERSION, "trustdomains", name, _request_timeout=self.timeout
                )
            ),
            verb="get",
            resource="trustdomains",
            namespace=None,
            name=name,
            group=GROUP,
        )

    def patch_trust_domain(self, name: str, patch: Json) -> Json:
        return self._call(
            lambda: dict(
                self.custom.patch_cluster_custom_object(
                    GROUP,
                    VERSION,
                    "trustdomains",
                    name,
                    patch,
                    _content_type=MERGE_PATCH,
                    _request_timeout=self.timeout,
                )
            ),
            verb="patch",
            resource="trustdomains",
            namespace=None,
            name=name,
            group=GROUP,
        )
