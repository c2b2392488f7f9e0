"""The engine's own list-then-watch of pods and Secrets (reconcile/reflector.py)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable

from tests.unit.fakes import FakeClock, FakeKube, issued_pods, make_engine
from trustwarden.reconcile.engine import Engine
from trustwarden.reconcile.ports import GoneError
from trustwarden.reconcile.reflector import Reflector


async def _until(condition: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _primed(pods: int, namespaces: list[str] | None = None) -> tuple[FakeKube, Engine]:
    """`pods` issued PerPod SVIDs in the fake API, and a fresh engine that has listed them."""
    kube, clock = FakeKube(), FakeClock()
    await issued_pods(kube, clock, pods)
    engine = make_engine(kube, clock)
    await engine.prime(namespaces)
    return kube, engine


def _reflector(engine: Engine, kind: str) -> Reflector:
    return next(r for r in engine.reflectors if r.kind == kind)


def _pod(kube: FakeKube, name: str, *, version: str) -> dict:
    body = copy.deepcopy(kube.objects[("Pod", "shop", "w0")])
    body["metadata"].update(name=name, uid=f"uid-pod-{name}", resourceVersion=version)
    for volume in body["spec"]["volumes"]:
        volume["secret"]["secretName"] = f"web-svid-{name}"
    return body


def test_watch_continues_from_the_listing_and_applies_every_event_type() -> None:
    async def scenario() -> None:
        kube, engine = await _primed(2)
        pods = _reflector(engine, "Pod")
        listed_at = pods.resource_version
        assert listed_at and listed_at != "0"
        gone = copy.deepcopy(kube.objects[("Pod", "shop", "w1")])
        gone["metadata"]["resourceVersion"] = "9001"
        kube.watch_script["Pod"] = [
            ("ADDED", _pod(kube, "w7", version="9000")),
            ("DELETED", gone),
            ("BOOKMARK", {"metadata": {"resourceVersion": "9050"}}),
        ]
        engine.follow()
        await _until(lambda: pods.events == 3, "three pod events")
        assert ("shop", "w7") in engine.pods
        assert ("shop", "w1") not in engine.pods
        assert ("shop", "w0") in engine.pods
        assert pods.resource_version == "9050", "a bookmark moves the resume point"
        # The first watch started at the listing's version; the next resumes after the bookmark.
        await _until(lambda: ("Pod", "9050") in kube.watch_versions, "a resumed watch")
        pod_watches = [v for k, v in kube.watch_versions if k == "Pod"]
        assert pod_watches[:2] == [listed_at, "9050"]
        await engine.stop()

    asyncio.run(scenario())


def test_a_failed_watch_is_resumed_from_the_last_version_seen() -> None:
    async def scenario() -> None:
        kube, engine = await _primed(1)
        secrets = _reflector(engine, "Secret")
        kube.watch_script["Secret"] = [ConnectionResetError("API server restarted")]
        kube.watch_script["Pod"] = [("ADDED", _pod(kube, "w5", version="777"))]
        engine.follow()
        pods = _reflector(engine, "Pod")
        await _until(lambda: ("shop", "w5") in engine.pods, "the pod after the first watch")
        await _until(lambda: ("Pod", "777") in kube.watch_versions, "a watch resumed at 777")
        # The Secret watch failed, backed off and was opened again at the same version.
        await _until(
            lambda: kube.watch_versions.count(("Secret", secrets.resource_version)) >= 2,
            "a second watch",
        )
        assert pods.listings == 1 and secrets.listings == 1, "a plain failure never relists"
        await engine.stop()

    asyncio.run(scenario())


def test_gone_relists_and_forgets_only_what_vanished_unseen() -> None:
    """After 410 Gone events were lost: the scope is listed again; a pod deleted meanwhile
    is forgotten (its Secret revoked later), a pod seen after the listing began is kept."""

    async def scenario() -> None:
        kube, engine = await _primed(3)
        pods = _reflector(engine, "Pod")
        del kube.objects[("Pod", "shop", "w2")]  # deleted while the watch was behind
        kube.watch_script["Pod"] = [GoneError("too old resource version")]
        engine.follow()
        await _until(lambda: pods.listings == 2, "a second listing")
        assert ("shop", "w2") not in engine.pods
        assert {("shop", "w0"), ("shop", "w1")} <= set(engine.pods)
        await engine.stop()

    asyncio.run(scenario())


def test_prune_spares_objects_observed_after_the_listing_began() -> None:
    async def scenario() -> None:
        kube, engine = await _primed(1)
        assert engine.store.seen == {} and engine.store.listings_open == 0
        mark = engine.store.begin_listing()
        engine.observe_pod(_pod(kube, "late", version="50"))  # seen after the mark
        engine.prune("Pod", None, {("shop", "w0")}, mark)
        assert ("shop", "late") in engine.pods
        engine.prune("Pod", None, {("shop", "w0")}, engine.store.observed_seq)
        assert ("shop", "late") not in engine.pods

    asyncio.run(scenario())


def test_scoped_reflectors_prune_only_their_namespace() -> None:
    async def scenario() -> None:
        _kube, engine = await _primed(2, ["shop", "trustwarden-system"])
        assert {(r.kind, r.namespace) for r in engine.reflectors} == {
            ("Pod", "shop"),
            ("Pod", "trustwarden-system"),
            ("Secret", "shop"),
            ("Secret", "trustwarden-system"),
        }
        # The operator namespace's Secret reflector lists no workload Secret: relisting it
        # must not forget the ones in `shop`.
        workload = {k for k in engine.secrets if k[0] == "shop"}
        assert workload
        system = next(
            r
            for r in engine.reflectors
            if r.kind == "Secret" and r.namespace == "trustwarden-system"
        )
        await system.list()
        assert workload <= set(engine.secrets)

    asyncio.run(scenario())


def test_an_object_the_engine_cannot_take_is_skipped_not_retried_for_ever() -> None:
    async def scenario() -> None:
        kube, engine = await _primed(1)
        pods = _reflector(engine, "Pod")
        poison = _pod(kube, "bad", version="600")
        poison["metadata"]["labels"] = "not a mapping"
        kube.watch_script["Pod"] = [
            ("ADDED", poison),
            ("ADDED", _pod(kube, "good", version="601")),
        ]
        engine.follow()
        await _until(lambda: ("shop", "good") in engine.pods, "the event after the bad one")
        assert ("shop", "bad") not in engine.pods
        assert pods.listings == 1
        # The same watch went on past the bad event: the next one resumes after both, it does
        # not reopen at the old version (where a real server would send the bad one again).
        await _until(
            lambda: len([v for k, v in kube.watch_versions if k == "Pod"]) >= 2, "a resumed watch"
        )
        assert [v for k, v in kube.watch_versions if k == "Pod"][1] == "601"
        await engine.stop()

    asyncio.run(scenario())


def test_a_listing_that_fails_midway_still_closes_its_mark() -> None:
    """Otherwise the store would record every later observation for a prune never run."""

    async def scenario() -> None:
        kube, engine = await _primed(3)
        pods = _reflector(engine, "Pod")
        real = kube.list_pages

        async def broken(kind: str, **kwargs: object):  # type: ignore[no-untyped-def]
            async for page in real(kind, **kwargs):  # type: ignore[arg-type]
                yield page
                raise ConnectionResetError("API server restarted mid-listing")

        kube.page_size = 1
        kube.list_pages = broken  # type: ignore[method-assign]
        try:
            await pods.list()
        except ConnectionResetError:
            pass
        else:
            raise AssertionError("the listing should have failed")
        assert engine.store.listings_open == 0 and engine.store.seen == {}
        assert {("shop", "w0"), ("shop", "w1"), ("shop", "w2")} <= set(engine.pods)

    asyncio.run(scenario())


def test_prime_lists_kinds_side_by_side_and_fails_as_the_first_failure() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        await issued_pods(kube, clock, 2)
        real = kube.list_pages

        async def secrets_down(kind: str, **kwargs: object):  # type: ignore[no-untyped-def]
            if kind == "Secret":
                raise ConnectionResetError("API server restarted")
            async for page in real(kind, **kwargs):  # type: ignore[arg-type]
                await asyncio.sleep(0)
                yield page

        kube.list_pages = secrets_down  # type: ignore[method-assign]
        engine = make_engine(kube, clock)
        try:
            await engine.prime()
        except ConnectionResetError:
            pass
        else:
            raise AssertionError("prime should fail when a listing does")
        assert engine.store.listings_open == 0
        kube.list_pages = real  # type: ignore[method-assign]
        await engine.prime()
        assert len(engine.pods) == 2 and len(engine.secrets) == 3  # and the CA Secret

    asyncio.run(scenario())
