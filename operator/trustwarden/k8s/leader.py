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

from trustwarden.k8s.http import ApiClient, ApiError

log = logging.getLogger("trustwarden.leader")


def _now() -> datetime:
    return datetime.now(UTC)


def _micro(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: object) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class LeaderElector:
    def __init__(
        self,
        api: ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        on_change: Callable[[bool], None],
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.retry_period = max(1.0, lease_duration / 5)
        self.on_change = on_change
        self.leading = False
        self.last_renew: datetime | None = None

    async def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        # A renewal that takes longer than a third of the lease is as good as lost.
        return await self.api.request(
            method, path, body=body, timeout=max(1.0, self.lease_duration / 3)
        )

    @property
    def _path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"

    async def _try_acquire(self) -> bool:
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
            lease = await self._request("GET", f"{self._path}/{self.name}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            try:
                await self._request("POST", self._path, body)
                return True
            except ApiError as create_exc:
                if create_exc.status == 409:
                    return False
                raise
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renew = _parse(spec.get("renewTime"))
        duration = timedelta(seconds=spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder != self.identity and holder and renew is not None and renew + duration > now:
            return False
        transitions = (spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        body["metadata"]["resourceVersion"] = (lease.get("metadata") or {}).get("resourceVersion")
        body["spec"]["leaseTransitions"] = transitions
        if holder == self.identity:
            acquired = _parse(spec.get("acquireTime"))
            if acquired is not None:
                body["spec"]["acquireTime"] = _micro(acquired)
        try:
            await self._request("PUT", f"{self._path}/{self.name}", body)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def run(self) -> None:
        while True:
            try:
                acquired = await self._try_acquire()
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

    async def release(self) -> None:
        """Give the lease up on a clean shutdown so a standby takes over at once."""
        if not self.leading:
            return
        try:
            lease = await self._request("GET", f"{self._path}/{self.name}")
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") == self.identity:
                spec["holderIdentity"] = None
                spec["leaseDurationSeconds"] = 1
                await self._request("PUT", f"{self._path}/{self.name}", lease)
        except ApiError as exc:
            log.warning("could not release lease: %s", exc)
