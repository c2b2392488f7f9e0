"""Leader election on a coordination.k8s.io/v1 Lease.

Exactly one replica reconciles and issues; every replica keeps its caches warm and serves the
webhook. A leader that cannot renew before its lease runs out stops leading (the caller exits,
as controller-runtime does), so two replicas never issue at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("trustwarden.leader")


def _now() -> datetime:
    return datetime.now(UTC)


def _micro(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        on_change: Callable[[bool], None],
    ) -> None:
        self.coordination = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.retry_period = max(1.0, lease_duration / 5)
        self.on_change = on_change
        self.leading = False
        self.last_renew: datetime | None = None

    def _try_acquire(self) -> bool:
        now = _now()
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.lease_duration),
                "acquireTime": _micro(now),
                "renewTime": _micro(now),
                "leaseTransitions": 0,
            },
        }
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            try:
                self.coordination.create_namespaced_lease(self.namespace, body)
                return True
            except ApiException as create_exc:
                if create_exc.status == 409:
                    return False
                raise
        spec = lease.spec
        holder = spec.holder_identity
        renew = _parse(spec.renew_time)
        duration = timedelta(seconds=spec.lease_duration_seconds or self.lease_duration)
        if holder != self.identity and holder and renew is not None and renew + duration > now:
            return False
        transitions = (spec.lease_transitions or 0) + (0 if holder == self.identity else 1)
        body["metadata"]["resourceVersion"] = lease.metadata.resource_version
        body["spec"]["leaseTransitions"] = transitions
        if holder == self.identity and spec.acquire_time is not None:
            acquired = _parse(spec.acquire_time)
            if acquired is not None:
                body["spec"]["acquireTime"] = _micro(acquired)
        try:
            self.coordination.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def run(self) -> None:
        while True:
            try:
                acquired = await asyncio.to_thread(self._try_acquire)
            except Exception as exc:
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
                acquired = False
            now = _now()
            if acquired:
                self.last_renew = now
                if not self.leading:
                    self.leading = True
                    log.info("acquired lease %s/%s as %s", self.namespace, self.name, self.identity)
                    self.on_change(True)
            elif self.leading:
                expired = (
                    self.last_renew is None
                    or (now - self.last_renew).total_seconds() > self.lease_duration * 0.8
                )
                if expired:
                    self.leading = False
                    log.error(
                        "lost lease %s/%s; stopping reconciliation", self.namespace, self.name
                    )
                    self.on_change(False)
                    return
            await asyncio.sleep(self.retry_period)

    def release(self) -> None:
        """Give the lease up on a clean shutdown so a standby takes over at once."""
        if not self.leading:
            return
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                self.coordination.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            log.warning("could not release lease: %s", exc)
