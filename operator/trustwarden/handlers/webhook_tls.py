"""The webhook's serving certificate: a small CA and a server certificate the operator makes
itself (no cert-manager), valid for the addresses the API server dials.

`trustwarden run --local` makes a throwaway one per process. In a cluster every replica sits
behind one Service, so every replica must serve a certificate that the one `caBundle` of the
MutatingWebhookConfiguration trusts. `SharedServingCertificate` keeps it in a Secret in the
operator namespace (`<webhook service>-tls`): the first replica creates it, the others read it
(a create that loses the race answers 409, and the loser reads the winner's). Every replica
then keeps the webhook configuration's `caBundle` equal to the Secret's `ca.crt`, which also
repairs a `helm upgrade` or a GitOps sync that put the chart's placeholder back.

Rotation: a replica that starts with less than a third of the certificate's life left writes a
new CA and certificate, and keeps the previous CA in `ca.crt` until it expires, so replicas
still serving the old certificate stay trusted. A replica that finds its own CA gone from the
Secret, or its certificate about to expire, stops; Kubernetes restarts it with the current one.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trustwarden.k8s.http import JSON_PATCH, ApiClient, ApiError
from trustwarden.names import DESCRIPTION_ANNOTATION, MANAGED_BY, MANAGER
from trustwarden.pki import signed_by
from trustwarden.pki.serving import issue_serving_pair

log = logging.getLogger("trustwarden.webhook")

SERVING_DAYS = 365
# Rotate at start-up when less than this fraction of the lifetime is left.
ROTATE_FRACTION = 1 / 3
# A running replica restarts itself this long before its certificate expires.
RESTART_BEFORE_EXPIRY = timedelta(days=7)


@dataclass(frozen=True)
class ServingCertificate:
    ca_pem: bytes  # every CA the webhook configuration should trust (current first)
    cert_pem: bytes
    key_pem: bytes = field(repr=False)


def make_serving_certificate(
    hosts: list[str], *, now: datetime | None = None, days: int = SERVING_DAYS
) -> ServingCertificate:
    """A new webhook CA and serving certificate for `hosts`, built by `pki` at `now` (the wall
    clock when not given)."""
    pair = issue_serving_pair(hosts, now=now or datetime.now(UTC), lifetime=timedelta(days=days))
    return ServingCertificate(ca_pem=pair.ca_pem, cert_pem=pair.cert_pem, key_pem=pair.key_pem)


def server_context(serving: ServingCertificate) -> ssl.SSLContext:
    """A TLS server context holding `serving`. OpenSSL loads a key only from a file, so the pair
    is written to a private temporary directory and removed as soon as it is loaded: the key
    stays on disk for milliseconds, not for the life of the process (a killed process would
    otherwise leave it in /tmp)."""
    directory = tempfile.mkdtemp(prefix="trustwarden-webhook-")
    try:
        cert_path = os.path.join(directory, "tls.crt")
        key_path = os.path.join(directory, "tls.key")
        with open(cert_path, "wb") as cert_file:
            cert_file.write(serving.cert_pem)
        key_fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(key_fd, "wb") as key_file:
            key_file.write(serving.key_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path)
        return context
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- pure checks on a stored certificate -------------------------------------------------


def service_hosts(service: str, namespace: str) -> list[str]:
    """The names the API server may dial for a webhook behind `service` (it uses the first)."""
    return [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def serving_secret_name(service: str) -> str:
    return f"{service}-tls"


def _pem_certs(pem: bytes) -> list[x509.Certificate]:
    try:
        return list(x509.load_pem_x509_certificates(pem))
    except ValueError:
        return []


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def issuing_ca(serving: ServingCertificate) -> x509.Certificate | None:
    """The CA in `serving.ca_pem` that signed the serving certificate, if any."""
    certs = _pem_certs(serving.cert_pem)
    if not certs:
        return None
    for ca in _pem_certs(serving.ca_pem):
        if signed_by(certs[0], ca):
            return ca
    return None


def problem(serving: ServingCertificate, hosts: list[str], now: datetime) -> str | None:
    """Why `serving` cannot be used as it is (None when it can): unreadable, wrong key, not
    signed by a CA in the bundle, missing a host name, or too close to expiry."""
    certs = _pem_certs(serving.cert_pem)
    if not certs:
        return "tls.crt holds no certificate"
    leaf = certs[0]
    try:
        key = serialization.load_pem_private_key(serving.key_pem, password=None)
    except (ValueError, TypeError):
        return "tls.key holds no private key"
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        return "tls.key does not match tls.crt"
    if issuing_ca(serving) is None:
        return "tls.crt is not signed by a CA in ca.crt"
    try:
        names = set(
            leaf.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value.get_values_for_type(x509.DNSName)
        )
    except x509.ExtensionNotFound:
        names = set()
    missing = [h for h in hosts if h not in names]
    if missing:
        return f"tls.crt does not name {', '.join(missing)}"
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    if leaf.not_valid_after_utc - now < lifetime * ROTATE_FRACTION:
        return f"tls.crt expires at {leaf.not_valid_after_utc.isoformat()}"
    return None


def rotated(
    previous: ServingCertificate | None, hosts: list[str], now: datetime
) -> ServingCertificate:
    """A new certificate whose bundle still trusts the previous, unexpired CA."""
    fresh = make_serving_certificate(hosts, now=now)
    keep = b""
    if previous is not None:
        old_ca = issuing_ca(previous)
        if old_ca is not None and old_ca.not_valid_after_utc > now:
            keep = _pem(old_ca)
    return ServingCertificate(
        ca_pem=fresh.ca_pem + keep, cert_pem=fresh.cert_pem, key_pem=fresh.key_pem
    )


def ca_bundle_b64(serving: ServingCertificate) -> str:
    return base64.b64encode(serving.ca_pem).decode()


def expires_soon(serving: ServingCertificate, now: datetime) -> bool:
    certs = _pem_certs(serving.cert_pem)
    return not certs or certs[0].not_valid_after_utc - now < RESTART_BEFORE_EXPIRY


# --- the shared Secret and the webhook configuration's caBundle ---------------------------


def _from_secret(body: Mapping[str, Any]) -> ServingCertificate:
    data = body.get("data") or {}

    def field_(key: str) -> bytes:
        return base64.b64decode(data.get(key) or "")

    return ServingCertificate(
        ca_pem=field_("ca.crt"), cert_pem=field_("tls.crt"), key_pem=field_("tls.key")
    )


class SharedServingCertificate:
    """One serving certificate for every replica, in a Secret in the operator namespace."""

    def __init__(
        self,
        api: ApiClient,
        *,
        namespace: str,
        service: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.service = service
        self.secret_name = serving_secret_name(service)
        self.hosts = service_hosts(service, namespace)
        self.clock = clock

    def _body(self, serving: ServingCertificate, resource_version: str | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": self.secret_name,
            "namespace": self.namespace,
            "labels": {MANAGED_BY: MANAGER, "app.kubernetes.io/component": "webhook"},
            "annotations": {
                DESCRIPTION_ANNOTATION: "serving certificate of the injection webhook, "
                "shared by every operator replica; delete it to force a new one"
            },
        }
        if resource_version:
            metadata["resourceVersion"] = resource_version
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": metadata,
            "data": {
                "ca.crt": base64.b64encode(serving.ca_pem).decode(),
                "tls.crt": base64.b64encode(serving.cert_pem).decode(),
                "tls.key": base64.b64encode(serving.key_pem).decode(),
            },
        }

    @property
    def _secrets(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/secrets"

    async def read(self) -> tuple[ServingCertificate, str] | None:
        try:
            body = await self.api.request("GET", f"{self._secrets}/{self.secret_name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return _from_secret(body), str(body["metadata"]["resourceVersion"])

    async def ensure(self, attempts: int = 5) -> ServingCertificate:
        """The certificate every replica serves: read, created if missing, rotated if unfit."""
        for _ in range(attempts):
            stored = await self.read()
            now = self.clock()
            if stored is None:
                fresh = rotated(None, self.hosts, now)
                try:
                    await self.api.request("POST", self._secrets, body=self._body(fresh, None))
                except ApiError as exc:
                    if exc.status == 409:
                        continue  # another replica won the race: use its certificate
                    raise
                log.info(
                    "created the webhook serving certificate %s/%s",
                    self.namespace,
                    self.secret_name,
                )
                return fresh
            serving, resource_version = stored
            why = problem(serving, self.hosts, now)
            if why is None:
                return serving
            fresh = rotated(serving, self.hosts, now)
            try:
                await self.api.request(
                    "PUT",
                    f"{self._secrets}/{self.secret_name}",
                    body=self._body(fresh, resource_version),
                )
            except ApiError as exc:
                if exc.status == 409:
                    continue  # changed under us: judge the new content
                raise
            log.info(
                "rotated the webhook serving certificate %s/%s: %s",
                self.namespace,
                self.secret_name,
                why,
            )
            return fresh
        raise RuntimeError(
            f"could not settle the webhook serving certificate Secret "
            f"{self.namespace}/{self.secret_name} after {attempts} attempts (it keeps changing)"
        )

    async def sync_ca_bundle(
        self, configuration: str, ca_bundle: str, *, create: Mapping[str, Any] | None = None
    ) -> bool:
        """Make every webhook of `configuration` trust `ca_bundle` (base64). Patches only the
        caBundle fields, so `get` and `patch` on that one object are all it takes. Creates the
        configuration from `create` when it is missing (needs `create`, which the Helm chart
        does not grant: the chart installs the configuration itself). True when it wrote."""
        path = (
            f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{configuration}"
        )
        try:
            current = await self.api.request("GET", path)
        except ApiError as exc:
            if exc.status != 404:
                raise
            if create is None:
                log.error(
                    "MutatingWebhookConfiguration %s not found: install it with the Helm chart, "
                    "or pass --webhook-configuration with the name it has",
                    configuration,
                )
                return False
            try:
                await self.api.request("POST", path.rsplit("/", 1)[0], body=dict(create))
            except ApiError as create_exc:
                if create_exc.status != 403:
                    raise
                log.error(
                    "MutatingWebhookConfiguration %s not found, and not allowed to create it: "
                    "install it with the Helm chart (which grants only get and patch on it)",
                    configuration,
                )
                return False
            return True
        operations: list[dict[str, Any]] = []
        for index, webhook in enumerate(current.get("webhooks") or ()):
            if ((webhook.get("clientConfig") or {}).get("caBundle") or "") == ca_bundle:
                continue
            operations.append(
                {"op": "test", "path": f"/webhooks/{index}/name", "value": webhook.get("name")}
            )
            operations.append(
                {
                    "op": "add",  # add replaces an existing member, and works when it is absent
                    "path": f"/webhooks/{index}/clientConfig/caBundle",
                    "value": ca_bundle,
                }
            )
        if not operations:
            return False
        await self.api.request("PATCH", path, body=operations, content_type=JSON_PATCH)
        log.info("caBundle of MutatingWebhookConfiguration %s updated", configuration)
        return True
