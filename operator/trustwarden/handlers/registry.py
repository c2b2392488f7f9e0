"""Thin kopf adapters: every handler hands the object to the engine and returns.

Index handlers run for every event, including the initial listing, and kopf holds every other
handler back until all indexes have their first full listing. The small sets (TrustDomains,
WorkloadIdentities, namespaces, our ConfigMaps) are cached that way, and their deletions come
through `on.event`. The large ones (labelled pods, managed Secrets) never pass through kopf:
the engine lists them before kopf starts and watches them itself (reconcile/reflector.py). So
the caches are complete before reconciliation starts, and a restart re-issues nothing that is
still valid. The injection webhook is not a kopf handler (handlers/webhook.py). No handler here uses kopf's
per-object state: nothing is written to pods, Secrets or custom resources by kopf itself (no
finalizers, no annotations).
"""

from __future__ import annotations

import copy
from typing import Any

import kopf

from trustwarden.handlers.services import Services
from trustwarden.names import BUNDLE_CONFIGMAP, GROUP, VERSION


def _services(memo: Any) -> Services:
    services = memo.services
    assert isinstance(services, Services)
    return services


def _started(memo: Any) -> Services:
    services = _services(memo)
    services.on_caches_complete()
    return services


def build_registry() -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    # --- caches (indexes): complete before any other handler runs ---

    @kopf.index(GROUP, VERSION, "trustdomains", registry=registry)
    async def index_trust_domains(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        _services(memo).engine.observe_trust_domain(copy.deepcopy(dict(body)))

    @kopf.index(GROUP, VERSION, "workloadidentities", registry=registry)
    async def index_workload_identities(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        _services(memo).engine.observe_workload_identity(copy.deepcopy(dict(body)))

    @kopf.index("v1", "namespaces", registry=registry)
    async def index_namespaces(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        _services(memo).engine.observe_namespace(body)

    @kopf.index("v1", "configmaps", registry=registry)
    async def index_configmaps(
        body: kopf.Body, name: str, namespace: str | None, memo: kopf.Memo, **_: Any
    ) -> None:
        services = _services(memo)
        if name == BUNDLE_CONFIGMAP:
            services.engine.observe_bundle(body)
        elif namespace == services.config.operator_namespace and services.engine.ledger.owns(name):
            services.engine.observe_ledger(body)

    # --- changes and deletions ---

    @kopf.on.event(GROUP, VERSION, "trustdomains", registry=registry)
    async def trust_domain_event(type: str, name: str, memo: kopf.Memo, **_: Any) -> None:
        services = _started(memo)
        if type == "DELETED":
            services.engine.forget_trust_domain(name)

    @kopf.on.event(GROUP, VERSION, "workloadidentities", registry=registry)
    async def workload_identity_event(
        type: str, name: str, namespace: str | None, memo: kopf.Memo, **_: Any
    ) -> None:
        services = _started(memo)
        if type == "DELETED":
            services.engine.forget_workload_identity(str(namespace), name)

    @kopf.on.event("v1", "namespaces", registry=registry)
    async def namespace_event(type: str, name: str, memo: kopf.Memo, **_: Any) -> None:
        services = _started(memo)
        if type == "DELETED":
            services.engine.forget_namespace(name)

    @kopf.on.event("v1", "configmaps", registry=registry)
    async def configmap_event(
        type: str, name: str, namespace: str | None, memo: kopf.Memo, **_: Any
    ) -> None:
        services = _started(memo)
        if type == "DELETED" and name == BUNDLE_CONFIGMAP:
            services.engine.forget_bundle(str(namespace))

    return registry
