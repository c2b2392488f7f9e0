"""The pod injection webhook: a plain aiohttp endpoint answering AdmissionReview v1.

kopf's `on.mutate` deep-copies every pod and diffs the whole body to build its patch, which
was about 14 % of the operator's CPU in a burst. Here the answer is a JSON Patch built from
the few places the decision touches (`reconcile.injection.json_patch`).

The server starts listening only once the caches are loaded (kopf's indexes of namespaces
and WorkloadIdentities have their first full listing): until then the API server cannot
connect, the webhook's `failurePolicy: Fail` refuses pods in opted-in namespaces (fail
closed) and the replica's readiness probe, a TCP check on this port, keeps it out of the
webhook Service. A half-loaded cache would otherwise admit pods without their identity.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from trustwarden.handlers.services import Services
from trustwarden.reconcile.injection import InjectionRejected, json_patch, plan_injection

log = logging.getLogger("trustwarden.webhook")

WEBHOOK_ID = "inject-svid"
WEBHOOK_PATH = f"/{WEBHOOK_ID}"


@dataclass(frozen=True)
class Verdict:
    """The answer to one admission request, before it is wrapped in an AdmissionReview."""

    result: str | None  # the webhook_requests label; None: not a request we count
    allowed: bool = True
    patch: list[dict[str, Any]] | None = None
    code: int | None = None
    message: str | None = None


def decide(services: Services, request: Mapping[str, Any]) -> Verdict:
    """What to do with one AdmissionRequest (the `request` member of the review)."""
    resource = request.get("resource") or {}
    if (
        request.get("operation") != "CREATE"
        or resource.get("resource") != "pods"
        or resource.get("group")
        or request.get("subResource")
    ):
        return Verdict(result=None)  # the configuration never sends these: leave them be
    pod = request.get("object") or {}
    namespace = str(request.get("namespace") or (pod.get("metadata") or {}).get("namespace") or "")
    store = services.engine.store
    ns_info = store.namespaces.get(namespace)
    if (
        namespace == services.config.operator_namespace
        or ns_info is None
        or not ns_info.injection_enabled
    ):
        return Verdict(result="skipped")
    engine = services.engine
    identities = store.identities_in(namespace)
    try:
        plan = plan_injection(pod, identities, key=engine.config.admission_key)
    except InjectionRejected as exc:
        return Verdict(result="rejected", allowed=False, code=403, message=str(exc))
    return Verdict(
        result="injected" if plan.identity else "unselected", patch=json_patch(pod, plan)
    )


def review_response(review: Mapping[str, Any], verdict: Verdict) -> dict[str, Any]:
    """The AdmissionReview v1 answer: the request's uid echoed, the patch base64-encoded."""
    request = review.get("request") or {}
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": verdict.allowed}
    if verdict.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(
            json.dumps(verdict.patch, separators=(",", ":")).encode()
        ).decode("ascii")
    if not verdict.allowed:
        response["status"] = {"code": verdict.code or 500, "message": verdict.message or ""}
    return {
        "apiVersion": review.get("apiVersion") or "admission.k8s.io/v1",
        "kind": review.get("kind") or "AdmissionReview",
        "response": response,
    }


class InjectionWebhook:
    """The aiohttp application and its life cycle."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.app = web.Application(client_max_size=8 * 1024 * 1024)
        self.app.router.add_post(WEBHOOK_PATH, self.handle)
        self._runner: web.AppRunner | None = None
        self.listening = asyncio.Event()  # set once the socket accepts connections

    async def handle(self, http_request: web.Request) -> web.Response:
        try:
            review = json.loads(await http_request.read())
        except ValueError:
            return web.json_response({"message": "body is not JSON"}, status=400)
        if not isinstance(review, dict) or not isinstance(review.get("request"), dict):
            return web.json_response({"message": "not an AdmissionReview request"}, status=400)
        try:
            verdict = decide(self.services, review["request"])
        except Exception as exc:
            # Fail closed, as kopf did: the pod is refused and the API server shows why.
            log.exception("injection webhook failed")
            verdict = Verdict(
                result=None, allowed=False, code=500, message=f"trustwarden webhook: {exc}"
            )
        if verdict.result is not None:
            self.services.metrics.webhook_requests.labels(result=verdict.result).inc()
        return web.json_response(review_response(review, verdict))

    async def serve(
        self, *, address: str, port: int, context: ssl.SSLContext, ready: asyncio.Event
    ) -> None:
        """Listen with `context` (webhook_tls.server_context) once `ready` is set (the caches
        are loaded); serve until cancelled."""
        await ready.wait()
        # No access log: one line per admission review is noise at burst rates.
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, address, port, ssl_context=context)
        await site.start()
        self.listening.set()
        log.info("injection webhook listening on %s:%s%s", address, self.port, WEBHOOK_PATH)
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    @property
    def port(self) -> int | None:
        """The port actually bound (useful when asked for port 0), None before listening."""
        if self._runner is None:
            return None
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                return int(address[1])
        return None

    async def close(self) -> None:
        self.listening.clear()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
