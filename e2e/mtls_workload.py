"""An mTLS workload for the propagation-delay test, run as its own process.

    python -m e2e.mtls_workload server DIR PORT LOG
    python -m e2e.mtls_workload client DIR PORT LOG SERVER_NAME

DIR is laid out like a pod's volumes: DIR/svid/{tls.crt,tls.key} (the Secret) and
DIR/bundle/ca.crt (the trustwarden-bundle ConfigMap), each written the kubelet's atomic way
(a ``..data`` symlink swapped to a new directory). Like a well-behaved application, the
workload reloads its certificate and trust store when those files change (checked before
every handshake). Python's ``ssl`` is OpenSSL: the handshakes and verifications are real.

The client connects every 0.25 s, sends ``ping``, expects ``pong``, and writes one JSON line
per attempt to LOG: time, outcome, error, the anchors it trusted then (sha256), the authority
key identifier of its own certificate and of the one the server presented.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

INTERVAL = 0.25


class Files:
    """The workload's view of its volumes, reloaded when a file behind them changes."""

    def __init__(self, directory: Path, server: bool) -> None:
        self.directory = directory
        self.server = server
        self.stamp: tuple[int, ...] = ()
        self.context: ssl.SSLContext | None = None
        self.anchors: list[str] = []
        self.own_aki = ""

    def _paths(self) -> tuple[Path, Path, Path]:
        d = self.directory
        return d / "svid" / "tls.crt", d / "svid" / "tls.key", d / "bundle" / "ca.crt"

    def current(self) -> ssl.SSLContext:
        paths = self._paths()
        stamp = tuple(int(os.stat(p).st_ino) for p in paths)
        if self.context is None or stamp != self.stamp:
            cert, key, ca = paths
            context = ssl.SSLContext(
                ssl.PROTOCOL_TLS_SERVER if self.server else ssl.PROTOCOL_TLS_CLIENT
            )
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(str(cert), str(key))
            context.load_verify_locations(cafile=str(ca))
            context.verify_mode = ssl.CERT_REQUIRED
            self.anchors = sorted(
                hashlib.sha256(c.public_bytes(Encoding.DER)).hexdigest()
                for c in x509.load_pem_x509_certificates(ca.read_bytes())
            )
            leaf = x509.load_pem_x509_certificates(cert.read_bytes())[0]
            self.own_aki = _aki(leaf.public_bytes(Encoding.DER))
            self.context, self.stamp = context, stamp
        return self.context


def _aki(der: bytes | None) -> str:
    if not der:
        return ""
    cert = x509.load_der_x509_certificate(der)
    try:
        ext = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        return (ext.value.key_identifier or b"").hex()
    except x509.ExtensionNotFound:
        return ""


def serve(directory: Path, port: int, log_path: Path) -> None:
    files = Files(directory, server=True)
    listener = socket.create_server(("127.0.0.1", port))
    log = log_path.open("a", buffering=1)

    def handle(conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            with files.current().wrap_socket(conn, server_side=True) as tls:
                if tls.recv(16) == b"ping":
                    tls.sendall(b"pong")
        except (OSError, ssl.SSLError) as exc:
            log.write(json.dumps({"t": time.time(), "ok": False, "error": str(exc)[:200]}) + "\n")
        finally:
            conn.close()

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def connect(directory: Path, port: int, log_path: Path, server_name: str) -> None:
    files = Files(directory, server=False)
    log = log_path.open("a", buffering=1)
    while True:
        started = time.monotonic()
        record: dict[str, object] = {"t": time.time()}
        try:
            context = files.current()
            record["anchors"] = [a[:16] for a in files.anchors]
            record["own_aki"] = files.own_aki
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname=server_name) as tls,
            ):
                record["peer_aki"] = _aki(tls.getpeercert(binary_form=True))
                tls.sendall(b"ping")
                if tls.recv(16) != b"pong":
                    raise ssl.SSLError("no pong: the server closed the connection")
            record["ok"] = True
        except (OSError, ssl.SSLError, ValueError) as exc:
            record["ok"] = False
            record["error"] = str(exc)[:200]
        log.write(json.dumps(record) + "\n")
        time.sleep(max(0.0, INTERVAL - (time.monotonic() - started)))


def main(argv: list[str]) -> None:
    role, directory, port, log = argv[0], Path(argv[1]), int(argv[2]), Path(argv[3])
    if role == "server":
        serve(directory, port, log)
    else:
        connect(directory, port, log, argv[4])


if __name__ == "__main__":
    main(sys.argv[1:])
