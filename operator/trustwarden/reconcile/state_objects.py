"""The operator's own state objects in its namespace (CA Secrets, revocation lists, ledgers):
one way to write them, whichever controller owns them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from trustwarden.names import MANAGED_BY, MANAGER, NAMESPACE_ANNOTATION, ROLE_LABEL
from trustwarden.reconcile.ledger import LEDGER_KEY, Ledger
from trustwarden.reconcile.ports import ConflictError, KubePort


async def upsert_state(
    kube: KubePort,
    operator_namespace: str,
    kind: str,
    name: str,
    *,
    role: str,
    annotations: dict[str, str],
    payload: dict[str, Any],
    exists: bool,
) -> Mapping[str, Any]:
    """Create one of our state objects, or replace it when it is known to exist (or a create
    finds it there)."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": operator_namespace,
            "labels": {MANAGED_BY: MANAGER, ROLE_LABEL: role},
            "annotations": annotations,
        },
        **payload,
    }
    if exists:
        return await kube.replace(kind, operator_namespace, name, body)
    try:
        return await kube.create(kind, operator_namespace, body)
    except ConflictError:
        return await kube.replace(kind, operator_namespace, name, body)


async def write_dirty_ledgers(
    kube: KubePort,
    ledger: Ledger,
    operator_namespace: str,
    *,
    name_of: Callable[[str], str],
    role: str,
    log: logging.Logger,
) -> None:
    """Write the ConfigMap of every namespace whose ledger changed (delete it once empty).
    A namespace whose write fails stays dirty for the next flush; the others are written."""
    for namespace in ledger.dirty_namespaces():
        ledger.mark_clean(namespace)
        name = name_of(namespace)
        try:
            if not ledger.holds(namespace):
                if ledger.is_stored(namespace):
                    await kube.delete("ConfigMap", operator_namespace, name)
                    ledger.mark_stored(namespace, False)
                continue
            await upsert_state(
                kube,
                operator_namespace,
                "ConfigMap",
                name,
                role=role,
                annotations={NAMESPACE_ANNOTATION: namespace},
                payload={"binaryData": {LEDGER_KEY: ledger.encode(namespace)}},
                exists=ledger.is_stored(namespace),
            )
            ledger.mark_stored(namespace)
        except Exception as exc:
            ledger.mark_dirty(namespace)
            log.warning("ledger for namespace %s not written: %s", namespace, exc)
