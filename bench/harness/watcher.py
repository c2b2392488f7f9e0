"""A separate process that watches the API server and appends one JSON line per event, stamped
with the wall-clock time the line arrived, to a file. The harness reads that file.

Running it apart from the pod creators keeps their GIL from delaying event timestamps. Pods and
Secrets are watched as PartialObjectMetadata (no Secret data crosses the wire); custom resources
and bundle ConfigMaps in full, reduced here to the fields the harness needs.

    python -m bench.harness.watcher --kubeconfig K --out events.jsonl pods secrets wids ...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client, config

META = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
META_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
BUNDLE = "trustwarden-bundle"


def _ready(obj: dict[str, Any]) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return str(cond.get("status"))
    return None


def _anchor_shas(obj: dict[str, Any]) -> list[str]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    pem = ((obj.get("data") or {}).get("ca.crt") or "").encode()
    if not pem:
        return []
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []
    return sorted(hashlib.sha256(c.public_bytes(Encoding.DER)).hexdigest() for c in certs)


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    ann = obj["metadata"].get("annotations") or {}
    return {"secret": ann.get("trustwarden.io/secret")}


def _secret(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    ann = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    return {
        "serial": ann.get("trustwarden.io/serial"),
        "issuer": ann.get("trustwarden.io/issuer"),
        "renew_at": ann.get("trustwarden.io/renew-at"),
        "cm": ann.get("cert-manager.io/certificate-name"),
        "mgr": labels.get("app.kubernetes.io/managed-by"),
    }


def _cr(obj: dict[str, Any]) -> dict[str, Any]:
    return {"ready": _ready(obj)}


def _td(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "authorities": [
            [a.get("sha256"), a.get("state")]
            for a in (obj.get("status") or {}).get("authorities") or ()
        ]
    }


def _bundle(obj: dict[str, Any]) -> dict[str, Any]:
    return {"anchors": _anchor_shas(obj)}


# kind -> (path, query, metadata-only, reducer)
WATCHES: dict[str, tuple[str, dict[str, str], bool, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "pods": ("/api/v1/pods", {"labelSelector": "bench.trustwarden.io/run"}, True, _pod),
    "secrets": ("/api/v1/secrets", {}, True, _secret),
    "wids": ("/apis/trustwarden.io/v1alpha1/workloadidentities", {}, False, _cr),
    "certificates": ("/apis/cert-manager.io/v1/certificates", {}, False, _cr),
    "trustdomains": ("/apis/trustwarden.io/v1alpha1/trustdomains", {}, False, _td),
    "bundles": ("/api/v1/configmaps", {"fieldSelector": f"metadata.name={BUNDLE}"}, False, _bundle),
}


class Writer:
    def __init__(self, path: str) -> None:
        self._handle = open(path, "a", buffering=1)  # noqa: SIM115 - closed at exit
        self._lock = threading.Lock()

    def emit(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self._handle.write(line + "\n")


def _lines(response: Any) -> Iterator[bytes]:
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def _get(
    api: client.ApiClient,
    path: str,
    query: list[tuple[str, str]],
    accept: str,
    timeout: tuple[int, int],
) -> Any:
    """GET with the client's auth and TLS; returns the urllib3 response, unread."""
    method, url, headers, body, post = api.param_serialize(
        "GET",
        path,
        query_params=query,
        header_params={"Accept": accept},
        auth_settings=["BearerToken"],
    )
    response = api.call_api(
        method, url, header_params=headers, body=body, post_params=post, _request_timeout=timeout
    )
    if response.status >= 400:
        raise client.ApiException(status=response.status, reason=response.reason)
    return response.response


def watch_forever(api: client.ApiClient, kind: str, writer: Writer, ready: threading.Event) -> None:
    path, query, meta_only, reduce = WATCHES[kind]
    while True:
        try:
            listed = _get(
                api, path, list(query.items()), META if meta_only else "application/json", (10, 300)
            )
            body = json.loads(listed.data)
            now = time.time()
            for item in body.get("items") or ():
                meta = item.get("metadata") or {}
                writer.emit(
                    {
                        "t": now,
                        "k": kind,
                        "e": "LIST",
                        "ns": meta.get("namespace"),
                        "n": meta.get("name"),
                        "rv": meta.get("resourceVersion"),
                        **reduce(item),
                    }
                )
            rv = body["metadata"]["resourceVersion"]
            writer.emit({"t": now, "k": kind, "e": "SYNCED", "rv": rv})
            ready.set()
            while True:
                response = _get(
                    api,
                    path,
                    [
                        *query.items(),
                        ("watch", "true"),
                        ("resourceVersion", rv),
                        ("allowWatchBookmarks", "true"),
                        ("timeoutSeconds", "600"),
                    ],
                    META_WATCH if meta_only else "application/json",
                    (10, 700),
                )
                gone = False
                for line in _lines(response):
                    now = time.time()
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        gone = True
                        break
                    meta = obj.get("metadata") or {}
                    rv = meta.get("resourceVersion", rv)
                    if event.get("type") == "BOOKMARK":
                        continue
                    writer.emit(
                        {
                            "t": now,
                            "k": kind,
                            "e": event.get("type"),
                            "ns": meta.get("namespace"),
                            "n": meta.get("name"),
                            "rv": rv,
                            **reduce(obj),
                        }
                    )
                response.release_conn()
                if gone:
                    break  # 410: list again
        except client.ApiException as exc:
            if exc.status == 404:  # e.g. CRD not installed yet
                time.sleep(1)
                continue
            writer.emit({"t": time.time(), "k": kind, "e": "WATCH_ERROR", "error": str(exc)[:300]})
            time.sleep(1)
        except Exception as exc:
            writer.emit({"t": time.time(), "k": kind, "e": "WATCH_ERROR", "error": str(exc)[:300]})
            time.sleep(1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("kinds", nargs="+", choices=sorted(WATCHES))
    args = parser.parse_args()
    configuration = client.Configuration()
    config.load_kube_config(config_file=args.kubeconfig, client_configuration=configuration)
    configuration.connection_pool_maxsize = len(args.kinds) + 2
    api = client.ApiClient(configuration)
    writer = Writer(args.out)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    events = []
    for kind in args.kinds:
        ready = threading.Event()
        events.append(ready)
        threading.Thread(
            target=watch_forever, args=(api, kind, writer, ready), name=kind, daemon=True
        ).start()
    for ready in events:
        ready.wait(120)
    writer.emit({"t": time.time(), "k": "*", "e": "READY"})
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
