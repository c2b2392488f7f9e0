"""The aiohttp API client and the gateway's error mapping, against a local HTTP server that
answers like the API server (status bodies, Retry-After, chunked watch streams)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from trustwarden.k8s.config import ClusterConfig
from trustwarden.k8s.gateway import KubeGateway
from trustwarden.k8s.http import ApiClient, ApiError
from trustwarden.reconcile.ports import ConflictError, GoneError, NotFoundError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "status": "Failure", "code": code, "reason": reason}
    return web.json_response({**body, "message": message}, status=code)


@asynccontextmanager
async def _server(routes: dict[str, Handler], token_file: Path) -> AsyncIterator[ApiClient]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = ApiClient(ClusterConfig(server=f"http://127.0.0.1:{port}", token_file=token_file))
    try:
        yield client
    finally:
        await client.close()
        await runner.cleanup()


def test_requests_carry_the_token_and_renew_it_once_after_a_401(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("old")
    seen: list[str] = []

    async def secret(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Bearer new":
            return _status(401, "Unauthorized", "token expired")
        return web.json_response({"metadata": {"name": "s"}})

    async def scenario() -> None:
        async with _server({"/api/v1/namespaces/a/secrets/s": secret}, token) as api:
            assert api.config.credentials().token == "old"  # read once, then cached
            token.write_text("new")  # the kubelet rotated the projected token
            body = await api.request("GET", "/api/v1/namespaces/a/secrets/s")
            assert body == {"metadata": {"name": "s"}}
            assert seen == ["Bearer old", "Bearer new"]

    asyncio.run(scenario())


def test_errors_keep_the_servers_status(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")
    attempts: list[int] = []

    async def busy(request: web.Request) -> web.StreamResponse:
        attempts.append(1)
        if len(attempts) < 3:
            response = _status(429, "TooManyRequests", "slow down")
            response.headers["Retry-After"] = "0"
            return response
        return web.json_response({"metadata": {"name": "ok"}})

    async def conflict(request: web.Request) -> web.StreamResponse:
        return _status(409, "Conflict", 'Operation cannot be fulfilled on secrets "s"')

    async def missing(request: web.Request) -> web.StreamResponse:
        return _status(404, "NotFound", 'secrets "s" not found')

    async def invalid(request: web.Request) -> web.StreamResponse:
        return _status(422, "Invalid", "the server rejected our request")

    routes: dict[str, Handler] = {
        "/api/v1/namespaces/a/secrets/busy": busy,
        "/api/v1/namespaces/a/secrets/conflict": conflict,
        "/api/v1/namespaces/a/secrets/missing": missing,
        "/api/v1/namespaces/a/secrets/invalid": invalid,
    }

    async def scenario() -> None:
        async with _server(routes, tmp_path / "token") as api:
            gateway = KubeGateway(api)
            assert await gateway.get("Secret", "a", "busy") == {"metadata": {"name": "ok"}}
            assert len(attempts) == 3, "429 with Retry-After is retried"
            assert await gateway.get("Secret", "a", "missing") is None
            with pytest.raises(ConflictError, match="cannot be fulfilled"):
                await gateway.replace("Secret", "a", "conflict", {"metadata": {}})
            with pytest.raises(NotFoundError):
                await gateway.patch_data("Secret", "a", "missing", {}, resource_version="1")
            with pytest.raises(ApiError) as invalid_error:  # not retried, not mapped
                await gateway.replace("Secret", "a", "invalid", {"metadata": {}})
            assert invalid_error.value.status == 422
            assert invalid_error.value.reason == "Invalid"

    asyncio.run(scenario())


def test_list_pages_follow_continue_tokens(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")
    queries: list[dict[str, str]] = []

    async def pods(request: web.Request) -> web.StreamResponse:
        queries.append(dict(request.query))
        if "continue" not in request.query:
            return web.json_response(
                {"metadata": {"resourceVersion": "41", "continue": "next"}, "items": [{"n": 1}]}
            )
        return web.json_response({"metadata": {"resourceVersion": "41"}, "items": [{"n": 2}]})

    async def scenario() -> None:
        async with _server({"/api/v1/namespaces/a/pods": pods}, tmp_path / "token") as api:
            gateway = KubeGateway(api)
            pages = [
                page
                async for page in gateway.list_pages(
                    "Pod", label_selector="trustwarden.io/identity", namespace="a"
                )
            ]
            assert [p.items for p in pages] == [[{"n": 1}], [{"n": 2}]]
            assert {p.resource_version for p in pages} == {"41"}
            assert queries[0] == {"labelSelector": "trustwarden.io/identity", "limit": "500"}
            assert queries[1]["continue"] == "next"

    asyncio.run(scenario())


def _requests_running() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and getattr(t.get_coro(), "__qualname__", "") == "KubeGateway._send"
    ]


def test_list_pages_request_the_next_page_while_the_caller_reduces_this_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "token").write_text("t")
    queries: list[str] = []

    async def pods(request: web.Request) -> web.StreamResponse:
        at = int(request.query.get("continue") or 0)
        queries.append(str(at))
        more = {"continue": str(at + 1)} if at < 2 else {}
        return web.json_response(
            {"metadata": {"resourceVersion": "7", **more}, "items": [{"n": at}]}
        )

    async def scenario() -> None:
        async with _server({"/api/v1/pods": pods}, tmp_path / "token") as api:
            gateway = KubeGateway(api)
            loop = asyncio.get_running_loop()
            seen = []
            async for page in gateway.list_pages("Pod", label_selector=""):
                seen.append(page.items[0]["n"])
                if len(seen) == 1:  # still on the first page: the second is already asked for
                    deadline = loop.time() + 10
                    while len(queries) < 2:
                        assert loop.time() < deadline, "the next page was not requested"
                        await asyncio.sleep(0.01)
            assert seen == [0, 1, 2] and queries == ["0", "1", "2"]
            # A caller that stops early leaves no request running behind it.
            pages = gateway.list_pages("Pod", label_selector="")
            assert (await pages.__anext__()).items == [{"n": 0}]
            assert len(_requests_running()) == 1  # the next page's
            await pages.aclose()
            assert not _requests_running()

    asyncio.run(scenario())


def _event(type_: str, name: str, version: str) -> bytes:
    return json.dumps(
        {"type": type_, "object": {"metadata": {"name": name, "resourceVersion": version}}}
    ).encode()


def test_watch_stream_splits_lines_across_chunks_and_maps_410(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")
    watches: list[dict[str, Any]] = []

    async def secrets(request: web.Request) -> web.StreamResponse:
        watches.append(dict(request.query))
        response = web.StreamResponse()
        await response.prepare(request)
        if request.query["resourceVersion"] == "old":
            gone = {"code": 410, "reason": "Expired", "message": "too old resource version"}
            await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
            return response
        first, second = _event("ADDED", "a", "5"), _event("MODIFIED", "a", "6")
        stream = first + b"\n" + second + b"\n" + _event("BOOKMARK", "", "9") + b"\n"
        # One event split over two writes, two events in one write.
        await response.write(stream[:10])
        await response.write(stream[10:])
        await response.write_eof()
        return response

    async def scenario() -> None:
        async with _server({"/api/v1/secrets": secrets}, tmp_path / "token") as api:
            gateway = KubeGateway(api)
            events = [
                (t, b["metadata"]["resourceVersion"])
                async for t, b in gateway.watch(
                    "Secret", label_selector="x=y", namespace=None, resource_version="4"
                )
            ]
            assert events == [("ADDED", "5"), ("MODIFIED", "6"), ("BOOKMARK", "9")]
            assert watches[0]["watch"] == "true"
            assert watches[0]["allowWatchBookmarks"] == "true"
            with pytest.raises(GoneError, match="too old"):
                async for _ in gateway.watch(
                    "Secret", label_selector="x=y", namespace=None, resource_version="old"
                ):
                    pass

    asyncio.run(scenario())


def test_an_unreachable_server_is_status_zero(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")

    async def scenario() -> None:
        api = ApiClient(ClusterConfig(server="http://127.0.0.1:9", token_file=tmp_path / "token"))
        try:
            with pytest.raises(ApiError) as raised:
                await api.request("GET", "/api/v1/namespaces", timeout=5)
            assert raised.value.status == 0
        finally:
            await api.close()

    asyncio.run(scenario())
