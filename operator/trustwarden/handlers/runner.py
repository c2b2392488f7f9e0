"""`trustwarden run`: wire the gateway, engine, metrics, webhook and leader election into kopf."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import signal
import sys
from datetime import UTC, datetime
from typing import Any

import kopf
from cryptography.hazmat.primitives import serialization
from prometheus_client import start_http_server

from trustwarden.handlers.registry import build_registry
from trustwarden.handlers.services import OperatorConfig, Services
from trustwarden.handlers.webhook import WEBHOOK_ID, InjectionWebhook
from trustwarden.handlers.webhook_tls import (
    ServingCertificate,
    SharedServingCertificate,
    ca_bundle_b64,
    expires_soon,
    issuing_ca,
    make_serving_certificate,
    server_context,
    service_hosts,
)
from trustwarden.k8s import config as cluster_config
from trustwarden.k8s.gateway import KubeGateway
from trustwarden.k8s.http import ApiClient
from trustwarden.k8s.leader import LeaderElector
from trustwarden.metrics import Metrics
from trustwarden.names import INJECT_LABEL, MANAGED_BY, MANAGER
from trustwarden.reconcile.admission import AdmissionKey, ensure_key
from trustwarden.reconcile.aimd import AdaptiveGate, AimdLimit
from trustwarden.reconcile.engine import Engine, EngineConfig
from trustwarden.reconcile.podcerts import PodCertificates

log = logging.getLogger("trustwarden")


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    # Our own aggregated Events only: kopf would post one per handler run per pod.
    settings.posting.enabled = False
    # Watch only what we need, filtered by the API server. Pods and Secrets are not watched
    # through kopf at all (the engine's reflectors do it).
    settings.watching.label_selectors["v1", "configmaps"] = f"{MANAGED_BY}={MANAGER}"
    # kopf lists everything in one response by default: 10,000 Secrets at once on a restart.
    settings.watching.chunk_size = 500
    # An idle per-object worker keeps its last event (the full body) until it exits; with the
    # default 5 s, a restart's listing of 10,000 pods and Secrets was held in full once more.
    # Our handlers keep no per-object state in kopf, so a new worker per burst of events is
    # all a short timeout costs.
    settings.queueing.idle_timeout = 0.5
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.peering.standalone = True
    settings.persistence.finalizer = "trustwarden.io/kopf-unused"


def webhook_configuration(config: OperatorConfig, ca_pem: bytes, url: str | None) -> dict[str, Any]:
    client_config: dict[str, Any] = {"caBundle": base64.b64encode(ca_pem).decode()}
    if url is not None:
        client_config["url"] = url
    else:
        client_config["service"] = {
            "name": config.webhook_service,
            "namespace": config.operator_namespace,
            "path": f"/{WEBHOOK_ID}",
            "port": 443,
        }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": config.webhook_configuration, "labels": {MANAGED_BY: MANAGER}},
        "webhooks": [
            {
                "name": "svid-injector.trustwarden.io",
                "clientConfig": client_config,
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "operations": ["CREATE"],
                        "scope": "Namespaced",
                    }
                ],
                # Only opted-in namespaces, never the operator's own.
                "namespaceSelector": {
                    "matchLabels": {INJECT_LABEL: "enabled"},
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": [config.operator_namespace],
                        }
                    ],
                },
                # Fail closed: a pod that should carry an identity is not admitted without it.
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
                "matchPolicy": "Equivalent",
                "reinvocationPolicy": "Never",
            }
        ],
    }


def connection_info(cluster: cluster_config.ClusterConfig) -> kopf.ConnectionInfo:
    """kopf's credentials from the same configuration the gateway uses, so `--kubeconfig`,
    `--context`, exec plugins and rotating service-account tokens behave alike (kopf asks
    again on a 401 or when `expiration` passes)."""
    credentials = cluster.credentials(refresh=True)
    cert = cluster.client_cert_pem or credentials.client_cert_pem
    key = cluster.client_key_pem or credentials.client_key_pem
    return kopf.ConnectionInfo(
        server=cluster.server,
        ca_data=cluster.ca_pem,
        insecure=cluster.insecure,
        certificate_data=cert,
        private_key_data=key,
        token=credentials.token,
        username=credentials.basic[0] if credentials.basic else None,
        password=credentials.basic[1] if credentials.basic else None,
        expiration=credentials.expires,
    )


CA_BUNDLE_SYNC_SECONDS = 15.0


async def _keep_ca_bundle(
    shared: SharedServingCertificate,
    config: OperatorConfig,
    serving: ServingCertificate,
    stop: asyncio.Event,
) -> None:
    """In-cluster: keep the webhook configuration's caBundle equal to the shared Secret's
    ca.crt (a `helm upgrade` or a GitOps sync may put the chart's placeholder back), and stop
    this replica when its certificate is no longer the shared one or is about to expire:
    Kubernetes restarts it, and the restart picks up (or rotates) the shared certificate."""
    own_ca = issuing_ca(serving)
    while not stop.is_set():
        try:
            stored = await shared.read()
            current = stored[0] if stored is not None else None
            if (
                current is None
                or own_ca is None
                or own_ca.public_bytes(serialization.Encoding.PEM) not in current.ca_pem
            ):
                log.error(
                    "webhook serving certificate %s/%s was replaced or deleted; restarting to "
                    "serve the current one",
                    shared.namespace,
                    shared.secret_name,
                )
                stop.set()
                return
            await shared.sync_ca_bundle(config.webhook_configuration, ca_bundle_b64(current))
            if expires_soon(serving, datetime.now(UTC)):
                log.warning("webhook serving certificate expires soon; restarting to rotate it")
                stop.set()
                return
        except Exception as exc:  # keep serving; the API may be briefly unavailable
            log.warning("could not check the webhook caBundle: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=CA_BUNDLE_SYNC_SECONDS)


def engine_config(config: OperatorConfig, admission_key: AdmissionKey) -> EngineConfig:
    """Every engine setting, from the one settings object the CLI filled."""
    return EngineConfig(
        admission_key=admission_key,
        operator_namespace=config.operator_namespace,
        # handlers may run up to the gate's ceiling; the gate bounds the writes in flight
        concurrency=config.max_concurrency,
        reissue_rate=config.reissue_rate,
        cluster_domain=config.cluster_domain,
        watch_namespaces=frozenset(config.watch_namespaces) or None,
        propagation_delay=config.propagation_delay,
        min_activate_after=config.min_activate_after,
        ca_recovery_grace=config.ca_recovery_grace,
        flush_interval=config.flush_interval.total_seconds(),
        status_interval=config.status_interval.total_seconds(),
        status_timing_interval=config.status_timing_interval,
        ledger_interval=config.ledger_interval,
        max_jitter_fraction=config.max_jitter_fraction,
        ledger_shards=config.ledger_shards,
    )


def allocator_report() -> None:
    """SIGUSR1: the Python allocator's arena, pool and block statistics on stderr. Sizes and
    counts only, never an object's content: it tells a growing cache from memory the
    allocator holds but does not use (fragmentation)."""
    log.warning("allocator statistics requested (SIGUSR1): printed to stderr")
    sys.stderr.flush()
    sys._debugmallocstats()


async def run(config: OperatorConfig, *, stop_flag: asyncio.Event | None = None) -> None:
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, allocator_report)
    try:
        cluster = cluster_config.load(config.kubeconfig, config.context)
    except cluster_config.ConfigError as exc:
        raise SystemExit(f"trustwarden: {exc}") from None
    api = ApiClient(cluster)
    gate = AdaptiveGate(
        AimdLimit(initial=config.concurrency, maximum=config.max_concurrency),
        on_change=lambda limit: log.debug("API write concurrency now %d", limit),
    )
    gateway = KubeGateway(api, instance=config.identity, write_gate=gate)
    metrics = Metrics()
    if config.local:
        await gateway.ensure_namespace(config.operator_namespace, {MANAGED_BY: MANAGER})
    admission_key = await ensure_key(gateway, config.operator_namespace, {MANAGED_BY: MANAGER})
    engine = Engine(
        gateway,
        engine_config(config, admission_key),
        metrics,
    )
    services = Services(config=config, engine=engine, gateway=gateway, metrics=metrics)
    if config.metrics_port:
        start_http_server(
            config.metrics_port, addr=config.metrics_address, registry=metrics.registry
        )

    shared: SharedServingCertificate | None = None
    if config.local:
        hosts = ["127.0.0.1"]
        serving: ServingCertificate = make_serving_certificate(hosts)
    elif config.webhook_service:
        # Every replica behind the Service serves the one certificate kept in a Secret.
        hosts = service_hosts(config.webhook_service, config.operator_namespace)
        shared = SharedServingCertificate(
            api, namespace=config.operator_namespace, service=config.webhook_service
        )
        serving = await shared.ensure()
    else:
        # No Service in front: the webhook is served but registered nowhere.
        hosts = ["localhost"]
        serving = make_serving_certificate(hosts)
    tls_context = server_context(serving)

    # The large caches (labelled pods, managed Secrets) are listed before kopf starts, and
    # watched by the engine itself from there on (reconcile/reflector.py).
    await engine.prime(
        sorted({*config.watch_namespaces, config.operator_namespace})
        if config.watch_namespaces
        else None
    )
    engine.follow()
    # Pod certificates (Kubernetes 1.37+): a controller of its own that the engine only feeds.
    pod_certificates = PodCertificates(gateway, engine, metrics)
    pod_certificates_task = asyncio.create_task(pod_certificates.run(), name="pod-certificates")
    registry = build_registry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(cluster)

    settings = kopf.OperatorSettings()
    configure(settings, config)
    # The injection webhook is our own aiohttp server (handlers/webhook.py), not kopf's.
    settings.admission.server = None
    settings.admission.managed = None
    webhook = InjectionWebhook(services)

    if config.local:
        url = f"https://127.0.0.1:{config.webhook_port}/{WEBHOOK_ID}"
        await gateway.upsert_webhook_configuration(
            webhook_configuration(config, serving.ca_pem, url)
        )
    elif shared is not None:
        await shared.sync_ca_bundle(
            config.webhook_configuration,
            ca_bundle_b64(serving),
            create=webhook_configuration(config, serving.ca_pem, None),
        )

    elector: LeaderElector | None = None
    tasks: list[asyncio.Task[None]] = [
        asyncio.create_task(
            webhook.serve(
                address=config.webhook_address,
                port=config.webhook_port,
                context=tls_context,
                ready=services.caches_loaded,
            ),
            name="injection-webhook",
        )
    ]
    if config.leader_elect:
        elector = LeaderElector(
            api,
            namespace=config.operator_namespace,
            name=config.lease_name,
            identity=config.identity,
            lease_duration=config.lease_duration,
            on_change=services.on_leadership,
        )
        tasks.append(asyncio.create_task(elector.run(), name="leader-election"))
    else:
        services.on_leadership(True)

    namespaces = (
        sorted({*config.watch_namespaces, config.operator_namespace})
        if config.watch_namespaces
        else []
    )
    operator_stop = stop_flag or asyncio.Event()

    def lost(leading: bool) -> None:
        services.on_leadership(leading)
        if not leading:
            operator_stop.set()  # never keep issuing without the lease

    if elector is not None:
        elector.on_change = lost

    def webhook_stopped(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the injection webhook stopped: %s", task.exception())
            operator_stop.set()  # exit, so the replica restarts rather than serve no webhook

    tasks[0].add_done_callback(webhook_stopped)
    if shared is not None:
        tasks.append(
            asyncio.create_task(
                _keep_ca_bundle(shared, config, serving, operator_stop), name="webhook-ca-bundle"
            )
        )
    host = f"[{config.health_address}]" if ":" in config.health_address else config.health_address
    liveness = f"http://{host}:{config.health_port}/healthz" if config.health_port else None
    try:
        await kopf.operator(
            registry=registry,
            settings=settings,
            memo=kopf.Memo(services=services),
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
            liveness_endpoint=liveness,
            stop_flag=operator_stop,
        )
    finally:
        for task in tasks:
            task.cancel()
        pod_certificates_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pod_certificates_task
        await webhook.close()
        await engine.stop()
        if elector is not None:
            await elector.release()
        await gateway.close()
