"""Forced CA rotation against the kubelet's propagation delay (issue 20).

Two mTLS workloads, a server and a client in two namespaces, run as local processes and do a
real OpenSSL handshake (Python ``ssl``) every 0.25 s. Each reads its files from a directory
that follows its Secret and its namespace's trustwarden-bundle the way the kubelet's atomic
writer does, after a per-workload lag: the server's "kubelet" is fast, the client's slow.

Time is scaled down by SCALE, the same factor for every delay, so the ratios are those of
the issue: propagationDelay 2m -> 20 s, server lag 5 s -> 0.83 s, client lag 90 s -> 15 s,
the 3m floor of the default activation -> 30 s (--min-activate-after), the 5 s cross-signed
activation -> 0.83 s. The mirrors poll the API every 0.25 s, so each lag is up to 0.25 s
longer than stated.

- defaults: the new authority activates after max(floor, 1.5 x propagationDelay), after the
  slow client's kubelet wrote the new anchor: no handshake fails;
- ``--cross-sign`` with a 0.83 s activation: the server presents its new certificate while
  the client still trusts only the old anchor, and verifies it through the
  cross-certificate: no handshake fails;
- ``--compromised``: fails closed while the client's volumes are stale, recovers once they
  update.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from kubernetes.client.rest import ApiException

from e2e.operator import TRUSTWARDEN, free_port
from e2e.support import (
    REPO,
    Cluster,
    apply_identity,
    bundle_data,
    get_td,
    trust_domain,
    wait_condition,
    wait_for,
)

SCALE = 6.0
PROPAGATION_DELAY = 120 / SCALE  # 20 s
MIN_ACTIVATE_AFTER = 180 / SCALE  # 30 s
SERVER_LAG = 5 / SCALE  # 0.83 s
CLIENT_LAG = 90 / SCALE  # 15 s
CROSS_SIGN_ACTIVATION = f"{round(5000 / SCALE)}ms"  # 833ms
POLL = 0.25
SETTLED = 12  # successful handshakes after the client's volumes are current


def _seconds(value: float) -> str:
    return f"{round(value * 1000)}ms"


@pytest.fixture(scope="module")
def scaled_operator(operator_slot: Any) -> Iterator[None]:
    operator_slot.start(
        "--propagation-delay",
        _seconds(PROPAGATION_DELAY),
        "--min-activate-after",
        _seconds(MIN_ACTIVATE_AFTER),
    )
    yield
    operator_slot.stop()  # the next test module gets an operator with the default flags


def _sha(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def _ski(cert: x509.Certificate) -> str:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()


class Kubelet(threading.Thread):
    """Follows one Secret and one trustwarden-bundle into DIR/svid and DIR/bundle after
    `lag` seconds, writing each like the kubelet's atomic writer (new timestamped directory,
    then an atomic rename of the ``..data`` symlink)."""

    def __init__(self, cluster: Cluster, namespace: str, secret: str, root: Path, lag: float):
        super().__init__(daemon=True)
        self.cluster, self.namespace, self.secret = cluster, namespace, secret
        self.root, self.lag = root, lag
        self.stop_event = threading.Event()
        self.pending: dict[str, list[tuple[float, dict[str, bytes]]]] = {"svid": [], "bundle": []}
        self.seen: dict[str, dict[str, bytes] | None] = {"svid": None, "bundle": None}
        self.applied: dict[str, dict[str, bytes]] = {}
        self.history: list[tuple[float, str, dict[str, bytes]]] = []  # (time, volume, data)
        self.errors: list[str] = []

    def _read(self) -> dict[str, dict[str, bytes] | None]:
        import base64

        out: dict[str, dict[str, bytes] | None] = {"svid": None, "bundle": None}
        try:
            secret = self.cluster.core.read_namespaced_secret(self.secret, self.namespace)
            data = secret.data or {}
            out["svid"] = {
                k: base64.b64decode(data[k]) for k in ("tls.crt", "tls.key") if k in data
            }
        except ApiException as exc:
            if exc.status != 404:
                raise
        try:
            cm = self.cluster.core.read_namespaced_config_map("trustwarden-bundle", self.namespace)
            if (cm.data or {}).get("ca.crt"):
                out["bundle"] = {"ca.crt": cm.data["ca.crt"].encode()}
        except ApiException as exc:
            if exc.status != 404:
                raise
        return out

    def _write(self, volume: str, data: dict[str, bytes]) -> None:
        target = self.root / volume
        target.mkdir(parents=True, exist_ok=True)
        stamp = f"..{time.time_ns()}"
        (target / stamp).mkdir()
        for key, value in data.items():
            (target / stamp / key).write_bytes(value)
        tmp = target / "..data_tmp"
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(stamp)
        tmp.replace(target / "..data")  # rename(2): atomic
        for key in data:
            link = target / key
            if not link.is_symlink():
                link.symlink_to(Path("..data") / key)
        self.applied[volume] = data
        self.history.append((time.time(), volume, data))

    def prime(self) -> None:
        """A pod's volumes are complete when it starts: the first version is written at once."""
        current = wait_for(
            lambda: (lambda r: r if r["svid"] and r["bundle"] else None)(self._read()),
            timeout=60,
            what=f"Secret and bundle of {self.namespace}",
        )
        for volume, data in current.items():
            assert data is not None
            self.seen[volume] = data
            self._write(volume, data)

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                now = time.monotonic()
                for volume, data in self._read().items():
                    if data and data != self.seen[volume]:
                        self.seen[volume] = data
                        self.pending[volume].append((now + self.lag, data))
                for volume, queue in self.pending.items():
                    due = [item for item in queue if item[0] <= now]
                    if due:
                        self._write(volume, due[-1][1])
                        del queue[: len(due)]
            except Exception as exc:  # report, keep following like a kubelet
                self.errors.append(repr(exc))
            self.stop_event.wait(POLL)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)

    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.applied["svid"]["tls.crt"])[0]

    def anchors(self) -> set[str]:
        return {_sha(c) for c in x509.load_pem_x509_certificates(self.applied["bundle"]["ca.crt"])}


@dataclass
class Pair:
    cluster: Cluster
    domain: str
    server_ns: str
    client_ns: str
    server: Kubelet
    client: Kubelet
    client_log: Path
    server_log: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def attempts(self) -> list[dict[str, Any]]:
        lines = self.client_log.read_text().splitlines() if self.client_log.exists() else []
        return [json.loads(line) for line in lines if line.strip()]

    def authorities(self) -> list[dict[str, Any]]:
        return list(
            (get_td(self.cluster, self.domain).get("status") or {}).get("authorities") or []
        )

    def active_sha(self) -> str | None:
        return next((a["sha256"] for a in self.authorities() if a["state"] == "Active"), None)


@contextmanager
def mtls_pair(cluster: Cluster, tmp_path: Path) -> Iterator[Pair]:
    with ExitStack() as stack:
        domain, _ = stack.enter_context(trust_domain(cluster))
        wait_condition(lambda: get_td(cluster, domain), "Ready", "True")
        server_ns = stack.enter_context(cluster.namespace("tw-prop-srv"))
        client_ns = stack.enter_context(cluster.namespace("tw-prop-cli"))
        for namespace, name, usages in (
            (server_ns, "server", ["server", "client"]),
            (client_ns, "client", ["client"]),
        ):
            apply_identity(
                cluster,
                namespace,
                name,
                domain,
                delivery={"mode": "Shared", "secretName": f"{name}-svid"},
                serviceAccountName=name,
                dnsNames=[f"{name}.{{namespace}}.svc"],
                usages=usages,
                owner="team@example.org",
            )
        server = Kubelet(cluster, server_ns, "server-svid", tmp_path / "server", SERVER_LAG)
        client = Kubelet(cluster, client_ns, "client-svid", tmp_path / "client", CLIENT_LAG)
        for kubelet in (server, client):
            kubelet.prime()
            kubelet.start()
            stack.callback(kubelet.stop)
        port = free_port()
        pair = Pair(
            cluster,
            domain,
            server_ns,
            client_ns,
            server,
            client,
            tmp_path / "client.log",
            tmp_path / "server.log",
        )
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for argv in (
            ["server", str(server.root), str(port), str(pair.server_log)],
            [
                "client",
                str(client.root),
                str(port),
                str(pair.client_log),
                f"server.{server_ns}.svc",
            ],
        ):
            proc = subprocess.Popen(
                [sys.executable, "-m", "e2e.mtls_workload", *argv],
                env=env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=(tmp_path / f"{argv[0]}.stderr").open("wb"),
            )
            pair.procs.append(proc)
            stack.callback(proc.kill)
            if argv[0] == "server":
                wait_for(lambda: _listening(port), timeout=30, what="the mTLS server")
        wait_for(
            lambda: sum(a["ok"] for a in pair.attempts()) >= SETTLED,
            timeout=60,
            what="the first successful handshakes",
        )
        yield pair
        for kubelet in (server, client):
            assert not kubelet.errors, kubelet.errors[:3]


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def rotate(pair: Pair, *flags: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [TRUSTWARDEN, "ca", "rotate", pair.domain, "--yes", "--no-wait", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(pair.cluster.kubeconfig)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def wait_client_current(pair: Pair, old_sha: str, *, timeout: float) -> tuple[str, float]:
    """Until the new authority is Active and the client's volumes hold a leaf it signed and
    its anchor; then SETTLED more handshakes. Returns (new authority sha256, when the
    client's volumes became current)."""
    new_sha = wait_for(
        lambda: (lambda s: s if s and s != old_sha else None)(pair.active_sha()),
        timeout=timeout,
        what="the new authority to be Active",
    )
    new_anchor = new_anchor_of(pair, new_sha)

    def current() -> float | None:
        for kubelet in (pair.server, pair.client):
            aki = kubelet.leaf().extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
            if (
                aki.value.key_identifier.hex() != _ski(new_anchor)
                or new_sha not in kubelet.anchors()
            ):
                return None
        return time.time()

    became = wait_for(current, timeout=timeout, what="the client's volumes to hold the new leaf")
    done = len(pair.attempts())
    wait_for(
        lambda: sum(a["ok"] for a in pair.attempts()[done:]) >= SETTLED,
        timeout=60,
        what="handshakes after the rotation",
    )
    return new_sha, became


def new_anchor_of(pair: Pair, new_sha: str) -> x509.Certificate:
    def probe() -> x509.Certificate | None:
        pem = (bundle_data(pair.cluster, pair.client_ns) or {}).get("ca.crt", "")
        return next(
            (c for c in x509.load_pem_x509_certificates(pem.encode()) if _sha(c) == new_sha), None
        )

    return wait_for(probe, timeout=30, what="the new anchor in the client's bundle")


def stale(attempt: dict[str, Any], new_anchor: x509.Certificate) -> bool:
    """The client's volumes did not yet hold the new anchor, or its own new certificate."""
    return _sha(new_anchor)[:16] not in attempt.get("anchors", []) or attempt.get(
        "own_aki"
    ) != _ski(new_anchor)


def outcome(pair: Pair) -> tuple[int, int, list[dict[str, Any]]]:
    attempts = pair.attempts()
    failed = [a for a in attempts if not a["ok"]]
    print(
        f"\n{pair.domain}: {len(attempts)} handshakes, {len(failed)} failed"
        + (f"; first error: {failed[0].get('error')}" if failed else "")
    )
    return len(attempts), len(failed), failed


def test_default_rotation_waits_for_the_slowest_kubelet(
    cluster: Cluster, scaled_operator: None, tmp_path: Path
) -> None:
    with mtls_pair(cluster, tmp_path) as pair:
        old_sha = pair.active_sha()
        result = rotate(pair)
        assert "covers the kubelet propagation delay" in result.stdout
        status = wait_for(
            lambda: (
                (get_td(cluster, pair.domain).get("status") or {})
                .get("rotation", {})
                .get("activatesAt")
                and get_td(cluster, pair.domain)["status"]["rotation"]
            ),
            timeout=30,
            what="status.rotation.activatesAt",
        )
        assert status["defaultActivateAfter"] == "30s"
        assert status["reason"].startswith("default: 30s after the request")
        assert old_sha is not None
        wait_client_current(pair, old_sha, timeout=MIN_ACTIVATE_AFTER + CLIENT_LAG + 60)
        total, failed, _ = outcome(pair)
    assert total > 0 and failed == 0


def test_cross_signed_rotation_is_fast_and_cuts_nobody_off(
    cluster: Cluster, scaled_operator: None, tmp_path: Path
) -> None:
    with mtls_pair(cluster, tmp_path) as pair:
        old_sha = pair.active_sha()
        assert old_sha is not None
        rotate(pair, "--cross-sign", "--activate-after", CROSS_SIGN_ACTIVATION)
        new_sha, _ = wait_client_current(pair, old_sha, timeout=CLIENT_LAG + 60)
        total, failed, _ = outcome(pair)
        new_anchor = new_anchor_of(pair, new_sha)
        # The point of the test: handshakes where the server already presented a leaf of the
        # new authority while the client trusted only the old anchor (via the cross-cert).
        through_cross = [
            a
            for a in pair.attempts()
            if a["ok"]
            and a.get("peer_aki") == _ski(new_anchor)
            and new_sha[:16] not in a["anchors"]
        ]
        chain = x509.load_pem_x509_certificates(pair.server.applied["svid"]["tls.crt"])
    print(f"{len(through_cross)} handshakes verified through the cross-certificate")
    assert total > 0 and failed == 0
    assert through_cross, "the server's new leaf never met the client's stale trust store"
    assert len(chain) == 2 and chain[1].subject == new_anchor.subject
    assert chain[1].issuer != new_anchor.subject  # the cross-certificate, signed by the old one


def test_compromised_rotation_fails_closed_until_the_client_updates(
    cluster: Cluster, scaled_operator: None, tmp_path: Path
) -> None:
    with mtls_pair(cluster, tmp_path) as pair:
        old_sha = pair.active_sha()
        assert old_sha is not None
        result = rotate(pair, "--compromised")
        assert "Clients with stale trust stores WILL FAIL until their volumes update" in (
            result.stdout
        )
        new_sha, _ = wait_client_current(pair, old_sha, timeout=CLIENT_LAG + 60)
        new_anchor = new_anchor_of(pair, new_sha)
        _total, failed, failures = outcome(pair)
        td = get_td(cluster, pair.domain)
        old = next(a for a in td["status"]["authorities"] if a["sha256"] == old_sha)
        anchors = pair.server.anchors()
        attempts = pair.attempts()
    assert failed > 0, "a compromised rotation must not keep stale clients working"
    # Every failure happened while the client's volumes were stale...
    assert all(stale(a, new_anchor) for a in failures)
    # ...and once they were current, nothing failed.
    fresh = [a for a in attempts if "anchors" in a and not stale(a, new_anchor)]
    assert len(fresh) >= SETTLED and all(a["ok"] for a in fresh)
    # The old anchor left the bundles, and what the old authority signed is revoked.
    assert old_sha not in anchors and "compromisedAt" in old
    assert td["status"]["revoked"] >= 2
