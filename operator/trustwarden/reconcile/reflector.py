"""List, then watch, one kind of object in one scope, straight into the engine's caches.

Labelled pods and managed Secrets are the two large sets (one of each per workload). They are
not watched through kopf: kopf keeps a per-object record and a worker task per object and
copies every body, which costs about 1 KiB per object and most of the operator's CPU per
event at 10,000 pods. A reflector keeps nothing but the resourceVersion it has reached: the
engine reduces every body to a few fields at once (reconcile.observed).

The watch continues from the listing's resourceVersion, so nothing that happens between the
list and the watch is missed. A watch the server ends (timeout, restart) is resumed from the
last version seen; bookmarks keep that version fresh on quiet scopes. A version the server no
longer has (410 Gone) means events were lost: the scope is listed again, and whatever the
caches held that the new listing lacks is reported deleted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from trustwarden.reconcile.ports import GoneError, KubePort

log = logging.getLogger("trustwarden.reflector")

BACKOFF_MAX = 30.0

Key = tuple[str, str]


def _backoff(failures: int) -> float:
    return min(BACKOFF_MAX, 0.5 * 2.0 ** min(failures, 6)) * (0.5 + random.random())  # noqa: S311


def key_of(body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))


class Reflector:
    def __init__(
        self,
        kube: KubePort,
        kind: str,
        selector: str,
        namespace: str | None,
        *,
        upsert: Callable[[Mapping[str, Any]], object],
        delete: Callable[[Mapping[str, Any]], object],
        prune: Callable[[set[Key], int], object],
        mark: Callable[[], int],
        listed: Callable[[Mapping[str, Any]], object] | None = None,
        release: Callable[[], object] | None = None,
    ) -> None:
        """`upsert`/`delete` get each object's body (`listed`, when given, those of a
        listing); after a listing, `prune(live, mark)` forgets what the listing lacks, unless
        it was observed after `mark()` was taken. `release()` follows every `mark()`, once the
        listing is pruned or has failed."""
        self.kube = kube
        self.kind = kind
        self.selector = selector
        self.namespace = namespace
        self.upsert = upsert
        self.delete = delete
        self.prune = prune
        self.mark = mark
        self.listed = listed or upsert
        self.release = release
        self.resource_version = ""
        self.listings = 0
        self.events = 0

    def __repr__(self) -> str:
        return f"{self.kind} {self.selector!r} in {self.namespace or 'all namespaces'}"

    async def list(self) -> None:
        """Hand every listed object to `upsert`, a page at a time, dropping each full body as
        soon as it is handled (a listing of 10,000 bodies held at once cost hundreds of MiB),
        then prune what the listing lacks."""
        mark = self.mark()
        try:
            live: set[Key] = set()
            version = ""
            async for page in self.kube.list_pages(
                self.kind, label_selector=self.selector, namespace=self.namespace
            ):
                version = page.resource_version or version
                items = page.items
                items.reverse()
                while items:
                    body = items.pop()
                    live.add(key_of(body))
                    self._apply(self.listed, "listed", body)
            self.prune(live, mark)
        finally:
            if self.release is not None:
                self.release()
        self.resource_version = version
        self.listings += 1

    def _apply(
        self, handler: Callable[[Mapping[str, Any]], object], what: str, body: Mapping[str, Any]
    ) -> None:
        """One object into the caches. An object the engine cannot take is logged and
        skipped (the cache keeps what it had): re-watching from the same version would only
        meet it again, and a listing must not fail for one bad object."""
        try:
            handler(body)
        except Exception as exc:
            # Type and place only: a message could quote the object, and Secrets hold keys.
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            namespace, name = key_of(body)
            log.error(
                "%s %s %s/%s could not be cached (%s at %s:%s); skipped",
                what,
                self.kind,
                namespace,
                name,
                type(exc).__name__,
                frame.filename.rsplit("/", 1)[-1],
                frame.lineno,
            )

    async def watch(self) -> None:
        """Follow changes for ever (until cancelled); call after `list`."""
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            started, seen = loop.time(), self.events
            try:
                async for type_, body in self.kube.watch(
                    self.kind,
                    label_selector=self.selector,
                    namespace=self.namespace,
                    resource_version=self.resource_version,
                ):
                    version = str((body.get("metadata") or {}).get("resourceVersion") or "")
                    if type_ == "DELETED":
                        self._apply(self.delete, type_, body)
                    elif type_ in ("ADDED", "MODIFIED"):
                        self._apply(self.upsert, type_, body)
                    if version:
                        self.resource_version = version
                    self.events += 1
                    failures = 0
                if self.events == seen and loop.time() - started < 1.0:
                    # Ended at once with nothing to say: do not spin on a server that keeps
                    # closing the watch.
                    failures += 1
                    await asyncio.sleep(_backoff(failures))
            except GoneError:
                log.info("watch of %s fell behind (410 Gone); listing again", self)
                await self._relist()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API server is restarting, throttling, unreachable
                failures += 1
                wait = _backoff(failures)
                log.warning("watch of %s failed (%s); again in %.1fs", self, exc, wait)
                await asyncio.sleep(wait)

    async def _relist(self) -> None:
        failures = 0
        while True:
            try:
                await self.list()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                wait = _backoff(failures)
                log.warning("listing %s failed (%s); again in %.1fs", self, exc, wait)
                await asyncio.sleep(wait)
