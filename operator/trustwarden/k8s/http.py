"""A small asynchronous client for the Kubernetes REST API on aiohttp.

Requests run on the event loop (no thread pool, no blocking calls), bodies are plain JSON
dicts, and errors carry the API server's Status. Retrying is the caller's policy
(trustwarden.k8s.gateway); this layer only renews credentials once on a 401.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from trustwarden.k8s.config import ClusterConfig

log = logging.getLogger("trustwarden.k8s")

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# A watch line is one event with one object; a Secret or a pod is a few KiB, but nothing
# stops an annotation from being larger, so only this guards the buffer.
MAX_WATCH_LINE = 16 * 1024 * 1024


class ApiError(Exception):
    """The API server answered with an error status (or could not be reached: status 0)."""

    def __init__(
        self, status: int, reason: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value else None
    except ValueError:
        return None


class ApiClient:
    def __init__(self, config: ClusterConfig, *, pool: int = 32, timeout: float = 30.0) -> None:
        self.config = config
        self.server = config.server
        self._pool = pool
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._ssl = config.ssl_context()

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool, ssl=self._ssl)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, content_type: str | None, *, refresh: bool = False) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            **self.config.credentials(refresh=refresh).headers(),
        }
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """One request; the decoded JSON answer. ApiError on any error status."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):
            headers = self._headers(content_type if data is not None else None, refresh=attempt > 1)
            try:
                async with self._session_now().request(
                    method,
                    self.server + path,
                    params=params,
                    data=data,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout or self._timeout),
                    server_hostname=self.config.tls_server_name,
                ) as response:
                    raw = await response.read()
                    if response.status == 401 and attempt == 1:
                        continue  # the token may have rotated: renew it once
                    if response.status >= 400:
                        raise _error(response.status, response.reason, raw, response.headers)
                    return dict(json.loads(raw)) if raw else {}
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise ApiError(0, "Unreachable", f"{method} {path}: {exc!r}") from exc
        raise AssertionError("unreachable")

    async def watch(
        self, path: str, params: Mapping[str, str], *, timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of one watch request, decoded, until the server ends it."""
        query = {**params, "watch": "true"}
        try:
            async with self._session_now().get(
                self.server + path,
                params=query,
                headers=self._headers(None),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout),
                server_hostname=self.config.tls_server_name,
            ) as response:
                if response.status == 401:
                    self.config.credentials(refresh=True)
                if response.status >= 400:
                    raise _error(
                        response.status, response.reason, await response.read(), response.headers
                    )
                buffer = b""
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    if len(buffer) > MAX_WATCH_LINE:
                        raise ApiError(0, "WatchLineTooLong", f"watch {path}: event too large")
                    if b"\n" not in chunk:
                        continue
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield json.loads(line)
        except (aiohttp.ClientError, TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            raise ApiError(0, "Unreachable", f"watch {path}: {exc!r}") from exc


def _error(status: int, reason: str | None, raw: bytes, headers: Mapping[str, str]) -> ApiError:
    message = raw.decode(errors="replace")[:500]
    try:
        decoded = json.loads(raw)
        if isinstance(decoded, Mapping):
            message = str(decoded.get("message") or message)
            reason = str(decoded.get("reason") or reason)
    except ValueError:
        pass
    return ApiError(status, reason or "", message, retry_after=_retry_after(headers))
