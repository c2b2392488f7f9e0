"""Where the API server is and how to authenticate, without the `kubernetes` package.

The operator talks to the API server through aiohttp (trustwarden.k8s.http); loading the
official client only for its configuration would cost every replica about 25 MiB of imported
models. Supported, as client-go does:

- in-cluster: the service-account token file (re-read every minute: projected tokens rotate)
  and CA, from KUBERNETES_SERVICE_HOST / _PORT;
- a kubeconfig (--kubeconfig, else the first file of $KUBECONFIG, else ~/.kube/config) and a
  context (--context, else current-context): server, certificate-authority(-data),
  insecure-skip-tls-verify, tls-server-name; users with token / tokenFile,
  client-certificate(-data) + client-key(-data), username + password, or an `exec` credential
  plugin (client.authentication.k8s.io ExecCredential, re-run when its token expires or the
  API server answers 401). The legacy `auth-provider` is refused with a clear message.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_FILE_RELOAD_SECONDS = 60.0


class ConfigError(Exception):
    """The kubeconfig or the in-cluster environment cannot be used; the message says why."""


@dataclass
class Credentials:
    """What goes on a request: a bearer token, basic auth, or nothing (client certificates
    are part of the TLS context)."""

    token: str | None = None
    basic: tuple[str, str] | None = None
    expires: datetime | None = None  # exec plugin tokens
    client_cert_pem: bytes | None = None  # exec plugins may hand out a client certificate
    client_key_pem: bytes | None = None

    def headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.basic:
            raw = f"{self.basic[0]}:{self.basic[1]}".encode()
            return {"Authorization": f"Basic {base64.b64encode(raw).decode()}"}
        return {}


@dataclass
class ClusterConfig:
    server: str
    ca_pem: bytes | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    token: str | None = None
    token_file: Path | None = None
    basic: tuple[str, str] | None = None
    exec_spec: Mapping[str, Any] | None = None
    exec_dir: Path | None = None  # relative exec commands resolve against the kubeconfig's dir
    source: str = ""
    _cached: Credentials | None = field(default=None, repr=False)
    _cached_at: float = field(default=0.0, repr=False)

    # --- credentials -----------------------------------------------------------------

    def credentials(self, *, refresh: bool = False) -> Credentials:
        """Current credentials; `refresh` after a 401 re-reads the token file or re-runs the
        exec plugin."""
        now = time.monotonic()
        cached = self._cached
        if cached is not None and not refresh:
            stale_file = (
                self.token_file is not None and now - self._cached_at > TOKEN_FILE_RELOAD_SECONDS
            )
            expired = cached.expires is not None and cached.expires <= datetime.now(UTC)
            if not stale_file and not expired:
                return cached
        if self.exec_spec is not None:
            fresh = run_exec_plugin(self.exec_spec, self.exec_dir, self.server)
        elif self.token_file is not None:
            try:
                fresh = Credentials(token=self.token_file.read_text().strip())
            except OSError as exc:
                if cached is not None:
                    return cached  # keep the last token; the file is being rotated
                raise ConfigError(f"cannot read the token file {self.token_file}: {exc}") from exc
        else:
            fresh = Credentials(token=self.token, basic=self.basic)
        self._cached, self._cached_at = fresh, now
        return fresh

    # --- TLS -------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https://"):
            return False
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.ca_pem:
            context.load_verify_locations(cadata=self.ca_pem.decode())
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        cert, key = self.client_cert_pem, self.client_key_pem
        if cert is None and self.exec_spec is not None:
            creds = self.credentials()
            cert, key = creds.client_cert_pem, creds.client_key_pem
        if cert and key:
            load_client_certificate(context, cert, key)
        return context


def load_client_certificate(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """ssl only loads certificate chains from files: write both to a private directory, load
    them, and remove the files at once."""
    with tempfile.TemporaryDirectory(prefix="trustwarden-client-") as tmp:
        cert_path, key_path = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert_path.write_bytes(cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key_pem)
        context.load_cert_chain(str(cert_path), str(key_path))


def run_exec_plugin(spec: Mapping[str, Any], base: Path | None, server: str) -> Credentials:
    command = str(spec.get("command") or "")
    if not command:
        raise ConfigError("the kubeconfig's exec credential plugin has no command")
    if base is not None and ("/" in command) and not os.path.isabs(command):
        command = str(base / command)
    env = dict(os.environ)
    for item in spec.get("env") or ():
        env[str(item.get("name"))] = str(item.get("value"))
    api_version = str(spec.get("apiVersion") or "client.authentication.k8s.io/v1")
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {
            "apiVersion": api_version,
            "kind": "ExecCredential",
            "spec": {"interactive": False, "cluster": {"server": server}},
        }
    )
    try:
        done = subprocess.run(
            [command, *[str(a) for a in spec.get("args") or ()]],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"the exec credential plugin {command!r} could not run: {exc}") from exc
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace").strip()[-500:]
        raise ConfigError(
            f"the exec credential plugin {command!r} exited with {done.returncode}: {stderr}"
        )
    try:
        status = json.loads(done.stdout)["status"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"the exec credential plugin {command!r} did not print an ExecCredential with a status"
        ) from exc
    expires = None
    if status.get("expirationTimestamp"):
        expires = datetime.fromisoformat(str(status["expirationTimestamp"]).replace("Z", "+00:00"))
    cert = status.get("clientCertificateData")
    key = status.get("clientKeyData")
    return Credentials(
        token=status.get("token"),
        expires=expires,
        client_cert_pem=str(cert).encode() if cert else None,
        client_key_pem=str(key).encode() if key else None,
    )


# --- loading ---------------------------------------------------------------------------


def in_cluster(directory: Path = SERVICE_ACCOUNT_DIR) -> ClusterConfig:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    token = directory / "token"
    if not host or not port or not token.exists():
        raise ConfigError("not running in a pod (no KUBERNETES_SERVICE_HOST or token file)")
    if ":" in host:
        host = f"[{host}]"
    ca = directory / "ca.crt"
    return ClusterConfig(
        server=f"https://{host}:{port}",
        ca_pem=ca.read_bytes() if ca.exists() else None,
        token_file=token,
        source="in-cluster service account",
    )


def load(kubeconfig: str | None = None, context: str | None = None) -> ClusterConfig:
    """In-cluster configuration when running in a pod and nothing else was asked for, the
    kubeconfig otherwise."""
    if kubeconfig is None and context is None:
        try:
            return in_cluster()
        except ConfigError:
            pass
    return from_kubeconfig(_kubeconfig_path(kubeconfig), context)


def _kubeconfig_path(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    for candidate in (os.environ.get("KUBECONFIG") or "").split(os.pathsep):
        if candidate and Path(candidate).expanduser().exists():
            return Path(candidate).expanduser()
    return Path("~/.kube/config").expanduser()


def _named(items: Any, name: str, what: str, path: Path) -> Mapping[str, Any]:
    for item in items or ():
        if isinstance(item, Mapping) and item.get("name") == name:
            return item.get(what) or {}
    raise ConfigError(f"{path}: no {what} named {name!r}")


def from_kubeconfig(path: Path, context: str | None = None) -> ClusterConfig:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the kubeconfig {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"the kubeconfig {path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise ConfigError(f"the kubeconfig {path} is empty or not a mapping")
    name = context or doc.get("current-context")
    if not name:
        raise ConfigError(f"{path} has no current-context; pass --context NAME")
    ctx = _named(doc.get("contexts"), str(name), "context", path)
    cluster = _named(doc.get("clusters"), str(ctx.get("cluster")), "cluster", path)
    user: Mapping[str, Any] = (
        _named(doc.get("users"), str(ctx["user"]), "user", path) if ctx.get("user") else {}
    )
    base = path.parent

    def blob(section: Mapping[str, Any], key: str) -> bytes | None:
        data = section.get(f"{key}-data")
        if data:
            return base64.b64decode(str(data))
        file = section.get(key)
        if file:
            file_path = Path(str(file)).expanduser()
            return (file_path if file_path.is_absolute() else base / file_path).read_bytes()
        return None

    server = str(cluster.get("server") or "").rstrip("/")
    if not server:
        raise ConfigError(f"{path}: cluster {ctx.get('cluster')!r} has no server")
    if user.get("auth-provider"):
        raise ConfigError(
            f"{path}: user {ctx.get('user')!r} uses the removed auth-provider mechanism; "
            "use an exec credential plugin (e.g. kubelogin, gke-gcloud-auth-plugin) instead"
        )
    token_file = user.get("tokenFile")
    try:
        config = ClusterConfig(
            server=server,
            ca_pem=blob(cluster, "certificate-authority"),
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
            tls_server_name=cluster.get("tls-server-name"),
            client_cert_pem=blob(user, "client-certificate"),
            client_key_pem=blob(user, "client-key"),
            token=user.get("token"),
            token_file=(base / str(token_file)) if token_file else None,
            basic=(str(user["username"]), str(user.get("password") or ""))
            if user.get("username")
            else None,
            exec_spec=user.get("exec"),
            exec_dir=base,
            source=f"{path} (context {name})",
        )
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.filename}: {exc.strerror}") from exc
    return config
