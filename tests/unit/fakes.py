"""An in-memory KubePort and helpers to drive the engine without a cluster or sleeping."""

from __future__ import annotations

import copy
import itertools
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from trustwarden.metrics import Metrics
from trustwarden.reconcile.admission import AdmissionKey
from trustwarden.reconcile.engine import Engine, EngineConfig
from trustwarden.reconcile.ports import Body, ConflictError, ListPage, NotFoundError, ObjectRef

START = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
# The webhook's signing key in these tests (the operator reads it from a Secret).
ADMISSION_KEY = AdmissionKey(b"k" * 32)


class FakeClock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class FakeKube:
    """Objects by (kind, namespace, name); counts every call by verb."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.events: list[tuple[ObjectRef, str, str, str]] = []
        self.statuses: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self._rv = itertools.count(1)
        self.page_size = 500
        self.pages_listed = 0
        self._last_rv = 0
        self.watch_script: dict[str, list[tuple[str, Body] | Exception]] = {}
        self.watch_versions: list[tuple[str, str]] = []

    def _stamp(self, body: Mapping[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(dict(body))
        meta = stored.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = self._next_rv()
        return stored

    def _next_rv(self) -> str:
        self._last_rv = next(self._rv)
        return str(self._last_rv)

    async def get(self, kind: str, namespace: str | None, name: str) -> Body | None:
        self.calls["get"] += 1
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def list_pages(
        self, kind: str, *, label_selector: str, namespace: str | None = None
    ) -> AsyncIterator[ListPage]:
        """Pages of `page_size`, like the API server's paginated list."""
        self.calls["list"] += 1
        key, _, value = label_selector.partition("=")
        matching = [
            copy.deepcopy(body)
            for (k, ns, _), body in self.objects.items()
            if k == kind
            and (namespace is None or ns == namespace)
            and key in (body["metadata"].get("labels") or {})
            and (not value or body["metadata"]["labels"][key] == value)
        ]
        version = str(self._last_rv)
        for start in range(0, max(len(matching), 1), self.page_size):
            self.pages_listed += 1
            yield ListPage(matching[start : start + self.page_size], version)

    async def watch(
        self, kind: str, *, label_selector: str, namespace: str | None, resource_version: str
    ) -> AsyncIterator[tuple[str, Body]]:
        """The scripted events in `watch_script[kind]`, then the end of the watch."""
        self.calls["watch"] += 1
        self.watch_versions.append((kind, resource_version))
        script = self.watch_script.get(kind) or []
        while script:
            event = script.pop(0)
            if isinstance(event, Exception):
                raise event
            yield event

    async def create(self, kind: str, namespace: str, body: Body) -> Body:
        self.calls["create"] += 1
        key = (kind, namespace, str(body["metadata"]["name"]))
        if key in self.objects:
            raise ConflictError("already exists")
        self.objects[key] = self._stamp(body)
        return copy.deepcopy(self.objects[key])

    async def replace(self, kind: str, namespace: str, name: str, body: Body) -> Body:
        self.calls["replace"] += 1
        key = (kind, namespace, name)
        current = self.objects.get(key)
        if current is None:
            raise NotFoundError(name)
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise ConflictError("resourceVersion")
        stored = self._stamp(body)
        stored["metadata"]["uid"] = current["metadata"]["uid"]
        self.objects[key] = stored
        return copy.deepcopy(stored)

    async def patch_data(
        self,
        kind: str,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        *,
        resource_version: str,
    ) -> dict[str, Any]:
        self.calls["patch"] += 1
        current = self.objects.get((kind, namespace, name))
        if current is None:
            raise NotFoundError(name)
        if current["metadata"]["resourceVersion"] != resource_version:
            raise ConflictError("resourceVersion")
        current["data"] = {**(current.get("data") or {}), **data}
        current["metadata"]["resourceVersion"] = self._next_rv()
        return copy.deepcopy(current)

    async def delete(self, kind: str, namespace: str, name: str, *, uid: str | None = None) -> bool:
        self.calls["delete"] += 1
        key = (kind, namespace, name)
        current = self.objects.get(key)
        if current is None or (uid and current["metadata"]["uid"] != uid):
            return False
        if current["metadata"].get("finalizers"):
            current["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
            current["metadata"]["resourceVersion"] = self._next_rv()
        else:
            del self.objects[key]
        return True

    async def remove_finalizer(
        self, kind: str, namespace: str, name: str, finalizer: str, *, uid: str
    ) -> None:
        self.calls["patch"] += 1
        key = (kind, namespace, name)
        current = self.objects.get(key)
        if current is None or current["metadata"]["uid"] != uid:
            raise NotFoundError(name)
        meta = current["metadata"]
        meta["finalizers"] = [f for f in meta.get("finalizers") or () if f != finalizer]
        meta["resourceVersion"] = self._next_rv()
        if not meta["finalizers"] and meta.get("deletionTimestamp"):
            del self.objects[key]

    async def patch_status(self, kind: str, namespace: str | None, name: str, status: Body) -> None:
        self.calls["patch_status"] += 1
        self.statuses[(kind, namespace, name)] = copy.deepcopy(dict(status))

    async def emit_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        self.calls["event"] += 1
        self.events.append((ref, type_, reason, message))

    def writes(self) -> int:
        return (
            self.calls["create"]
            + self.calls["replace"]
            + self.calls["delete"]
            + self.calls["patch"]
        )


def make_engine(kube: FakeKube, clock: FakeClock) -> Engine:
    return Engine(
        kube,
        EngineConfig(operator_namespace="trustwarden-system", admission_key=ADMISSION_KEY),
        Metrics(),
        clock=clock,
    )


async def drain(engine: Engine, clock: FakeClock, *, rounds: int = 50) -> None:
    """Run every due key (and what it schedules for now) until nothing is due, then flush."""
    engine.started = True
    for _ in range(5):  # a flush can make work due (a held Secret's release), and vice versa
        for _ in range(rounds):
            due = engine.scheduler.pop_due(clock())
            if not due:
                break
            for key in due:
                await engine.dispatch(key)
        for _ in range(5):  # the flush loop runs every half second; run it until nothing is dirty
            await engine.flush()
            if not (engine.dirty_bundles or engine.dirty_revocations or engine.ledger.dirty):
                break
        upcoming = engine.scheduler.next_deadline()
        if upcoming is None or upcoming > clock():
            break


def observe_written(engine: Engine, kube: FakeKube) -> None:
    """Feed what the fake API holds back into the caches, as the watches would."""
    for (kind, _ns, name), body in kube.objects.items():
        if kind == "Secret":
            engine.observe_secret(body)
        elif kind == "ConfigMap" and name == "trustwarden-bundle":
            engine.observe_bundle(body)
        elif kind == "ConfigMap" and name.startswith("trustwarden-ledger"):
            engine.observe_ledger(body)


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/metadata.name": name, **(labels or {})},
        }
    }


def trust_domain(name: str = "prod", *, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "trustwarden.io/v1alpha1",
        "kind": "TrustDomain",
        "metadata": {"name": name, "uid": f"uid-td-{name}", "generation": 1},
        "spec": spec or {"trustDomain": f"{name}.example.org", "ca": {"selfSigned": {}}},
    }


def workload_identity(
    namespace_name: str, name: str, *, domain: str = "prod", spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "trustwarden.io/v1alpha1",
        "kind": "WorkloadIdentity",
        "metadata": {
            "name": name,
            "namespace": namespace_name,
            "uid": f"uid-wid-{name}",
            "generation": 1,
        },
        "spec": spec
        or {"trustDomain": domain, "delivery": {"mode": "Shared", "secretName": f"{name}-svid"}},
    }


def per_pod_world(engine: Engine) -> None:
    """Namespace `shop` (opted in), the operator namespace, TrustDomain `prod` and the PerPod
    WorkloadIdentity shop/web selecting app=web."""
    engine.observe_namespace(namespace("shop", {"trustwarden.io/inject": "enabled"}))
    engine.observe_namespace(namespace("trustwarden-system"))
    engine.observe_trust_domain(trust_domain())
    engine.observe_workload_identity(
        workload_identity(
            "shop",
            "web",
            spec={
                "trustDomain": "prod",
                "podSelector": {"matchLabels": {"app": "web"}},
                "delivery": {"mode": "PerPod"},
            },
        )
    )


def add_web_pod(engine: Engine, kube: FakeKube, name: str, uid: str) -> dict[str, Any]:
    """Pod shop/<name> as the webhook leaves it (Secret web-svid-<name>), in the fake API and
    in the engine's cache."""
    secret = f"web-svid-{name}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": uid,
            "labels": {"app": "web", "trustwarden.io/identity": "web"},
            "annotations": {
                "trustwarden.io/secret": secret,
                "trustwarden.io/admission": ADMISSION_KEY.tag("shop", "web", secret),
            },
        },
        "spec": {
            "serviceAccountName": "default",
            "volumes": [{"name": "trustwarden-svid", "secret": {"secretName": secret}}],
        },
    }
    kube.objects[("Pod", "shop", name)] = pod
    engine.observe_pod(pod)
    return pod


async def issued_pods(kube: FakeKube, clock: FakeClock, count: int) -> None:
    """`count` PerPod SVIDs, for pods shop/w0.., written to the fake API by an engine that is
    then thrown away (tests prime a fresh one from the fake API)."""
    engine = make_engine(kube, clock)
    per_pod_world(engine)
    for i in range(count):
        add_web_pod(engine, kube, f"w{i}", f"uid-pod-w{i}")
        engine.scheduler.schedule(("pod", "shop", f"w{i}"), clock())
    engine.scheduler.schedule(("td", "prod"), clock())
    await drain(engine, clock)
