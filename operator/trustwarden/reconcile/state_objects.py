"""The operator's own state objects in its namespace (CA Secrets, revocation lists, ledgers):
one way to write them, whichever controller owns them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from trustwarden.names import LEDGER_SHARDS_ANNOTATION, MANAGED_BY, MANAGER, ROLE_LABEL
from trustwarden.reconcile.ledger import LEDGER_KEY, Ledger
from trustwarden.reconcile.ports import ConflictError, KubePort, NotFoundError


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
    role: str,
    log: logging.Logger,
) -> None:
    """Write every ledger shard that changed (delete it once empty). A shard whose write fails
    stays dirty for the next flush; the others are written. Once every shard is stored, the
    ConfigMaps of an earlier layout are deleted."""
    for name in ledger.dirty_shards():
        ledger.mark_clean(name)
        try:
            if not ledger.holds(name):
                if ledger.is_stored(name):
                    await kube.delete("ConfigMap", operator_namespace, name)
                    ledger.mark_stored(name, False)
                continue
            await upsert_state(
                kube,
                operator_namespace,
                "ConfigMap",
                name,
                role=role,
                annotations={LEDGER_SHARDS_ANNOTATION: str(ledger.shards)},
                payload={"binaryData": {LEDGER_KEY: ledger.encode(name)}},
                exists=ledger.is_stored(name),
            )
            ledger.mark_stored(name)
        except Exception as exc:
            ledger.mark_dirty(name)
            log.warning("ledger shard %s not written: %s", name, exc)
    for name in ledger.take_legacy():
        try:
            await kube.delete("ConfigMap", operator_namespace, name)
        except NotFoundError:
            pass
        except Exception as exc:
            ledger.legacy.add(name)
            log.warning("ledger %s of the earlier layout not deleted: %s", name, exc)
