"""Secrets hygiene, after everything else in the suite has run (conftest orders this last):
no private key, in PEM or as key bytes, in the operator's logs, in any Event, in any
trustwarden status or annotation, in /metrics or in any ConfigMap; CA keys only in the
operator namespace; every workload Secret carries its own key and nothing else.

PYTEST_DONT_REWRITE: a failing assert must never print Secret data (private keys) into CI
logs, so asserts carry their own messages instead of pytest's introspection.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes import client

from e2e.reliability.conftest import OPNS, OperatorSlot
from e2e.reliability.harness import MANAGED, Results, SecretRecorder
from e2e.support import GROUP, VERSION, Cluster

MARKER = "PRIVATE KEY"


def needles(key_pem: bytes) -> list[str]:
    """Ways a key's bytes could show up in text: its PEM body, its DER as hex, the base64 of
    its PEM (as in Secret data). Slices from the middle, so headers do not match."""
    key = serialization.load_pem_private_key(key_pem, None)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    body = base64.b64encode(der).decode()
    pem_b64 = base64.b64encode(key_pem).decode()
    return [body[16:64], der.hex()[40:104], pem_b64[60:120]]


def ca_keys(cluster: Cluster) -> list[bytes]:
    core = client.CoreV1Api(cluster.api)
    keys = []
    for secret in core.list_namespaced_secret(OPNS).items:
        if not secret.metadata.name.startswith("trustwarden-ca-"):
            continue
        for name, value in (secret.data or {}).items():
            if name.endswith(".key"):
                keys.append(base64.b64decode(value))
    return keys


def haystacks(cluster: Cluster, slot: OperatorSlot, log_dir: Path) -> dict[str, str]:
    core = client.CoreV1Api(cluster.api)
    custom = client.CustomObjectsApi(cluster.api)
    out: dict[str, str] = {}
    for path in sorted(log_dir.glob("*.log")):
        out[f"log {path.name}"] = path.read_text(errors="replace")
    out["events (core/v1)"] = "\n".join(
        f"{e.reason} {e.message}" for e in core.list_event_for_all_namespaces().items
    )
    out["events (events.k8s.io)"] = "\n".join(
        f"{e.reason} {e.note}"
        for e in client.EventsV1Api(cluster.api).list_event_for_all_namespaces().items
    )
    for plural in ("trustdomains", "workloadidentities"):
        items = custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"]
        out[plural] = json.dumps(
            [
                {"annotations": i["metadata"].get("annotations"), "status": i.get("status")}
                for i in items
            ]
        )
    for secret in core.list_secret_for_all_namespaces(label_selector=MANAGED).items:
        out.setdefault("managed Secret annotations", "")
        out["managed Secret annotations"] += json.dumps(secret.metadata.annotations or {})
    out["configmaps"] = json.dumps(
        [
            {
                "ns": c.metadata.namespace,
                "name": c.metadata.name,
                "data": c.data,
                "bin": c.binary_data,
            }
            for c in core.list_config_map_for_all_namespaces().items
        ]
    )
    op = slot.ensure()
    out["/metrics"] = op.metrics() or ""
    return out


def test_no_key_material_outside_secrets(
    cluster: Cluster,
    slot: OperatorSlot,
    recorder: SecretRecorder,
    results: Results,
    state_dir: Path,
) -> None:
    workload_keys = recorder.all_keys()
    authority_keys = ca_keys(cluster)
    assert workload_keys and authority_keys
    search = [(n, "workload") for k in workload_keys for n in needles(k)] + [
        (n, "CA") for k in authority_keys for n in needles(k)
    ]
    found = []
    stacks = haystacks(cluster, slot, state_dir / "logs")
    for where, text in stacks.items():
        if MARKER in text:
            found.append(f"{where}: contains {MARKER!r}")
        for needle, kind in search:
            if needle in text:
                found.append(f"{where}: contains bytes of a {kind} key")
                break
    results.scenario(
        "hygiene",
        workload_keys_searched=len(workload_keys),
        ca_keys_searched=len(authority_keys),
        places_scanned=len(stacks),
        bytes_scanned=sum(len(t) for t in stacks.values()),
        findings=len(found),
    )
    assert not found, "\n".join(found[:20])


def test_ca_keys_only_in_the_operator_namespace_and_workloads_hold_their_own_key(
    cluster: Cluster, results: Results
) -> None:
    core = client.CoreV1Api(cluster.api)
    ca_needles = [n for k in ca_keys(cluster) for n in needles(k)]
    problems = []
    checked = 0
    for secret in core.list_secret_for_all_namespaces().items:
        ns, name = secret.metadata.namespace, secret.metadata.name
        if ns == OPNS:
            continue
        data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        blob = b"\n".join(data.values())
        text = base64.b64encode(blob).decode() + blob.decode(errors="replace")
        if any(n in text for n in ca_needles):
            problems.append(f"{ns}/{name}: holds a CA key")
        if MARKER.encode() not in blob:
            continue
        managed = (secret.metadata.labels or {}).get(
            "app.kubernetes.io/managed-by"
        ) == "trustwarden"
        if not managed:
            problems.append(f"{ns}/{name}: a private key in a Secret trustwarden does not manage")
            continue
        checked += 1
        if any(MARKER.encode() in v for k, v in data.items() if k != "tls.key"):
            problems.append(f"{ns}/{name}: key material outside tls.key")
        if data.get("tls.key", b"").count(b"-----BEGIN") != 1:
            problems.append(f"{ns}/{name}: tls.key holds more than one PEM block")
            continue
        try:
            leaf = x509.load_pem_x509_certificates(data["tls.crt"])[0]
            key = serialization.load_pem_private_key(data["tls.key"], None)
        except (ValueError, KeyError) as exc:
            problems.append(f"{ns}/{name}: unreadable ({exc})")
            continue
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        if leaf.public_key().public_bytes(
            serialization.Encoding.DER, spki
        ) != key.public_key().public_bytes(serialization.Encoding.DER, spki):
            problems.append(f"{ns}/{name}: tls.key is not the key of its own certificate")
    results.scenario("hygiene", workload_secrets_checked=checked, ca_key_copies_outside=0)
    assert checked > 0
    assert not problems, "\n".join(problems[:20])
