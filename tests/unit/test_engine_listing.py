"""The initial listing is handled page by page, and the caches stay small.

With 10,000 pods and Secrets, holding every body of a listing at once (and a parsed
certificate per Secret) cost hundreds of MiB; see docs/performance.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import kopf
from cryptography import x509

from tests.unit.conftest import NOW, cached_ca, make_cert, request
from tests.unit.fakes import FakeClock, FakeKube, issued_pods, make_engine
from trustwarden.handlers.runner import configure
from trustwarden.handlers.services import OperatorConfig
from trustwarden.pki import inspect_leaf, issue_leaf, load_authority_from_pem
from trustwarden.reconcile.engine import Engine
from trustwarden.reconcile.ports import Body, ListPage


def test_priming_page_by_page_fills_the_same_caches() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        await issued_pods(kube, clock, 7)
        primed: list[Engine] = []
        for page_size in (500, 2):
            kube.page_size, kube.pages_listed = page_size, 0
            engine = make_engine(kube, clock)
            await engine.prime()
            primed.append(engine)
        whole, paged = primed
        assert kube.pages_listed > 2, "the listing was not split into pages"
        assert len(paged.pods) == 7
        assert len([k for k in paged.secrets if k[0] == "shop"]) == 7
        assert paged.pods == whole.pods
        assert paged.secrets == whole.secrets
        assert paged.store.pods_by_wid == whole.store.pods_by_wid

    asyncio.run(scenario())


def test_every_listed_page_is_released_once_handled() -> None:
    """Each page is emptied as its bodies are reduced, so no page outlives its handling."""

    class RecordingKube(FakeKube):
        def __init__(self) -> None:
            super().__init__()
            self.handed_out: list[list[Body]] = []

        async def list_pages(
            self, kind: str, *, label_selector: str, namespace: str | None = None
        ) -> AsyncIterator[ListPage]:
            async for page in super().list_pages(
                kind, label_selector=label_selector, namespace=namespace
            ):
                self.handed_out.append(page.items)
                yield page
                assert not page.items, "a page still held bodies when the next was asked for"

    async def scenario() -> None:
        kube, clock = RecordingKube(), FakeClock()
        await issued_pods(kube, clock, 5)
        kube.page_size = 2
        engine = make_engine(kube, clock)
        await engine.prime()
        assert len(kube.handed_out) >= 6
        assert all(page == [] for page in kube.handed_out)
        assert len(engine.pods) == 5
        assert len([k for k in engine.secrets if k[0] == "shop"]) == 5

    asyncio.run(scenario())


def test_relisting_over_several_pages_drops_only_ghosts() -> None:
    async def scenario() -> None:
        kube, clock = FakeKube(), FakeClock()
        await issued_pods(kube, clock, 5)
        kube.page_size = 2
        engine = make_engine(kube, clock)
        await engine.prime()
        del kube.objects[("Pod", "shop", "w3")]
        del kube.objects[("Secret", "shop", "web-svid-w4")]
        for reflector in engine.reflectors:  # as after a watch's 410 Gone
            await reflector.list()
        assert ("shop", "w3") not in engine.pods
        assert ("shop", "web-svid-w4") not in engine.secrets
        assert ("shop", "w2") in engine.pods
        assert ("shop", "web-svid-w3") in engine.secrets

    asyncio.run(scenario())


def test_leaf_facts_keep_der_not_parsed_certificates() -> None:
    root = make_cert("Root")
    issuing = make_cert("Issuing", issuer=root)
    authority = load_authority_from_pem(issuing.pem, issuing.key_pem, root.pem, NOW)
    leaf = issue_leaf(authority, request(), NOW)
    for facts in (inspect_leaf(leaf.chain_pem, leaf.private_key_pem), leaf.to_facts(authority)):
        assert isinstance(facts.der, bytes)
        assert not any(
            isinstance(getattr(facts, f.name), x509.Certificate) for f in dataclasses.fields(facts)
        )
        assert all(isinstance(k, bytes) for k, _ in facts._answers)
        assert facts.certificate == leaf.certificate
        assert facts.intermediates == (issuing.cert,)
        assert facts.issued_by(authority)
        assert not facts.issued_by(cached_ca())


def test_kopf_lists_in_pages_and_drops_idle_workers_soon() -> None:
    """kopf's own listing comes in pages, and an idle per-object worker (which holds its last
    event's body) does not outlive its events by seconds."""
    settings = kopf.OperatorSettings()
    configure(settings, OperatorConfig())
    assert settings.watching.chunk_size == 500
    assert settings.queueing.idle_timeout <= 1.0
