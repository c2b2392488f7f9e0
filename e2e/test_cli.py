"""The operations CLI against the real control plane and the running operator: inventory,
verify, revoke (--identity, --pod), ca status and ca rotate, run as a user would (the
`trustwarden` executable, as a subprocess)."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from kubernetes import client

from e2e.bodies import identity_body, shared_identity_body, trust_domain_body
from e2e.operator import TRUSTWARDEN, OperatorProcess
from e2e.support import (
    GROUP,
    VERSION,
    Cluster,
    apply_body,
    bundle_data,
    crl_serials,
    custom,
    get_td,
    get_wid,
    leaf_of,
    secret_data,
    serial_of,
    unique,
    wait_condition,
    wait_for,
)

INJECT = {"trustwarden.io/inject": "enabled"}


# --------------------------------------------------------------------------- helpers


def tw(
    cluster: Cluster, *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRUSTWARDEN, *args, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


@pytest.fixture
def domain(cluster: Cluster, operator: OperatorProcess) -> Iterator[tuple[str, str]]:
    name = unique("td")
    apply_body(
        cluster,
        trust_domain_body(name, ca={"selfSigned": {"ttl": "2160h"}}, policy={"maxTTL": "24h"}),
    )
    wait_condition(lambda: get_td(cluster, name), "Ready", "True")
    yield name, f"{name}.example.org"
    custom(cluster).delete_cluster_custom_object(GROUP, VERSION, "trustdomains", name)


def shared_identity(
    cluster: Cluster, namespace: str, domain: str, name: str = "api"
) -> dict[str, bytes]:
    apply_body(
        cluster,
        shared_identity_body(
            namespace,
            name,
            domain,
            serviceAccountName=name,
            ttl="1h",
            usages=["server", "client"],
            owner="team-payments@example.org",
        ),
    )
    wait_condition(lambda: get_wid(cluster, namespace, name), "Ready", "True")
    wait_for(lambda: bundle_data(cluster, namespace), timeout=30, what="the namespace bundle")
    return wait_for(
        lambda: secret_data(cluster, namespace, f"{name}-svid"),
        timeout=60,
        what=f"Secret {namespace}/{name}-svid",
    )


def secret_json(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    result = cluster.kubectl("get", "secret", name, "-n", namespace, "-o", "json")
    return dict(json.loads(result.stdout))


def sha(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def anchor_shas(bundle: dict[str, str] | None, trust_domain: str) -> set[str]:
    pem = (bundle or {}).get(f"{trust_domain}.pem", "")
    return {sha(c) for c in x509.load_pem_x509_certificates(pem.encode())} if pem else set()


def issued_by(chain: bytes, anchor_pem_bundle: str, wanted_sha: str) -> bool:
    leaf = leaf_of(chain)
    for anchor in x509.load_pem_x509_certificates(anchor_pem_bundle.encode()):
        if sha(anchor) != wanted_sha or anchor.subject != leaf.issuer:
            continue
        try:
            leaf.verify_directly_issued_by(anchor)
        except Exception:  # not signed by it
            return False
        return True
    return False


# --------------------------------------------------------------------------- inventory


def test_inventory_lists_a_shared_identity_ok(
    cluster: Cluster, domain: tuple[str, str], namespace: str
) -> None:
    name, trust_domain = domain
    data = shared_identity(cluster, namespace, name)
    serial = format(serial_of(data["tls.crt"]), "x")
    issuer = cluster.core.read_namespaced_secret("api-svid", namespace).metadata.annotations[
        "trustwarden.io/issuer"
    ]
    active = wait_for(
        lambda: next(
            (a for a in get_td(cluster, name)["status"]["authorities"] if a["sha256"] == issuer),
            None,
        ),
        timeout=30,
        what="the issuing authority in the TrustDomain status",
    )

    table = ok(tw(cluster, "inventory", "-n", namespace))
    header, row, summary, soonest = table.splitlines()
    assert header.split() == [
        "NAMESPACE",
        "IDENTITY",
        "POD",
        "OWNER",
        "STATE",
        "EXPIRES",
        "RENEWAL",
    ]
    assert row.split()[1:3] == ["api", "(shared)"]
    assert namespace.startswith(row.split()[0].rstrip("…"))
    assert " ok " in f" {row} "
    assert summary == "1 certificate: 1 ok"
    assert soonest.startswith(f"soonest expiry: {namespace}/api-svid in ")
    assert all(len(line) <= 80 for line in table.splitlines())

    doc = json.loads(ok(tw(cluster, "inventory", "-n", namespace, "-o", "json")))
    (item,) = doc["items"]
    assert item["state"] == "ok" and item["pod"] == "(shared)"
    assert item["serial"] == serial
    assert item["spiffeID"] == f"spiffe://{trust_domain}/ns/{namespace}/sa/api"
    assert item["owner"] == "team-payments@example.org"
    assert item["authority"] == {"serial": active["serial"], "state": "Active", "sha256": issuer}
    assert 3000 < item["secondsLeft"] <= 3600

    everywhere = ok(tw(cluster, "inventory", "-A", "-o", "csv", "--owner", "team-payments@*"))
    assert f"{namespace},api-svid,api,(shared)," in everywhere
    assert "trustwarden-system," not in everywhere


# --------------------------------------------------------------------------- verify


def test_verify_passes_and_names_the_failing_check(
    cluster: Cluster, domain: tuple[str, str], namespace: str, tmp_path: Path
) -> None:
    name, _ = domain
    shared_identity(cluster, namespace, name)
    out = ok(tw(cluster, "verify", "api-svid", "-n", namespace))
    assert [line.split(":")[0] for line in out.splitlines()] == [
        "PASS chain",
        "PASS spiffe",
        "PASS key-pair",
        "PASS revocation",
        "PASS validity",
    ]

    # Tampered: tls.key swapped for another Secret's key (on a saved copy: the live Secret
    # would be repaired by the operator within moments).
    other = shared_identity(cluster, namespace, name, name="other")
    saved = secret_json(cluster, namespace, "api-svid")
    saved["data"]["tls.key"] = base64.b64encode(other["tls.key"]).decode()
    tampered = tmp_path / "tampered.yaml"
    tampered.write_text(yaml.safe_dump(saved))
    result = tw(cluster, "verify", "--from-file", str(tampered), "-n", namespace)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert "FAIL key-pair" in lines and "PASS chain" in lines and "PASS revocation" in lines
    assert "check(s) failed: key-pair" in result.stderr

    missing = tw(cluster, "verify", "nope", "-n", namespace)
    assert missing.returncode == 1
    assert f"Secret {namespace}/nope not found" in missing.stderr
    assert "Traceback" not in missing.stderr


# --------------------------------------------------------------------------- revoke


def test_revoke_identity_lists_the_old_serial_and_issues_a_new_one(
    cluster: Cluster, domain: tuple[str, str], namespace: str, tmp_path: Path
) -> None:
    name, trust_domain = domain
    data = shared_identity(cluster, namespace, name)
    old_serial = serial_of(data["tls.crt"])
    saved = tmp_path / "old.json"
    saved.write_text(json.dumps(secret_json(cluster, namespace, "api-svid")))

    declined = tw(
        cluster, "revoke", "--identity", "api", "-n", namespace, "--reason", "e2e", stdin="n\n"
    )
    assert declined.returncode == 1 and "aborted" in declined.stderr
    current = secret_data(cluster, namespace, "api-svid")
    assert current is not None and serial_of(current["tls.crt"]) == old_serial

    out = ok(
        tw(
            cluster,
            "revoke",
            "--identity",
            "api",
            "-n",
            namespace,
            "--reason",
            "e2e: key exposed in a log",
            "--yes",
            "--timeout",
            "60s",
        )
    )
    new = secret_data(cluster, namespace, "api-svid")
    assert new is not None
    new_serial = serial_of(new["tls.crt"])
    assert new_serial != old_serial
    assert f"{format(old_serial, 'x')} → {format(new_serial, 'x')}" in out
    assert old_serial in crl_serials(cluster, namespace, trust_domain)
    secret = cluster.core.read_namespaced_secret("api-svid", namespace)
    assert "trustwarden.io/revoke" not in (secret.metadata.annotations or {})

    # The live Secret verifies; the saved old certificate now fails the revocation check.
    ok(tw(cluster, "verify", "api-svid", "-n", namespace))
    old = tw(cluster, "verify", "--from-file", str(saved), "-n", namespace)
    assert old.returncode == 1
    assert f"FAIL revocation: serial {format(old_serial, 'x')} is revoked" in old.stdout

    def revoked_event() -> bool:
        events = client.EventsV1Api(cluster.api).list_namespaced_event(namespace).items
        return any(e.reason == "Revoked" and e.regarding.name == "api" for e in events)

    wait_for(revoked_event, timeout=30, what="a Revoked Event on the WorkloadIdentity")


def test_revoke_pod_and_serial(
    cluster: Cluster, domain: tuple[str, str], operator: OperatorProcess
) -> None:
    name, trust_domain = domain
    with cluster.namespace(prefix="tw-cli-pod", labels=INJECT) as namespace:
        apply_body(
            cluster,
            identity_body(
                namespace,
                "worker",
                name,
                podSelector={"matchLabels": {"app": "worker"}},
                ttl="1h",
                owner="team-worker@example.org",
            ),
        )
        wait_condition(lambda: get_wid(cluster, namespace, "worker"), "Ready", "True")
        pods = []
        for i in range(2):
            pods.append(
                cluster.core.create_namespaced_pod(
                    namespace,
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {"name": f"worker-{i}", "labels": {"app": "worker"}},
                        "spec": {
                            "automountServiceAccountToken": False,
                            "containers": [{"name": "app", "image": "busybox:1.36"}],
                        },
                    },
                )
            )
        annotations = pods[0].metadata.annotations or {}
        if "trustwarden.io/secret" not in annotations:
            pytest.skip("the injection webhook did not inject the pod")
        secrets = [str(p.metadata.annotations["trustwarden.io/secret"]) for p in pods]
        first, second = (
            wait_for(lambda s=s: secret_data(cluster, namespace, s), timeout=60, what=s)
            for s in secrets
        )
        inventory = json.loads(ok(tw(cluster, "inventory", "-n", namespace, "-o", "json")))
        assert sorted(i["pod"] for i in inventory["items"]) == ["worker-0", "worker-1"]

        old0, old1 = serial_of(first["tls.crt"]), serial_of(second["tls.crt"])
        out = ok(
            tw(cluster, "revoke", "--pod", "worker-0", "-n", namespace, "--reason", "e2e", "-y")
        )
        assert f"{namespace}/{secrets[0]}: {format(old0, 'x')} → " in out
        after = secret_data(cluster, namespace, secrets[1])
        assert after is not None and serial_of(after["tls.crt"]) == old1  # untouched

        colons = ":".join(f"{old1:x}".zfill(2 * ((old1.bit_length() + 7) // 8))[i : i + 2]
                          for i in range(0, 2 * ((old1.bit_length() + 7) // 8), 2))  # fmt: skip
        ok(
            tw(
                cluster,
                "revoke",
                "--serial",
                colons.upper(),
                "-n",
                namespace,
                "--reason",
                "e2e",
                "-y",
            )
        )
        revoked = crl_serials(cluster, namespace, trust_domain)
        assert {old0, old1} <= revoked
        for secret_name, old in zip(secrets, (old0, old1), strict=True):
            current = secret_data(cluster, namespace, secret_name)
            assert current is not None and serial_of(current["tls.crt"]) != old


# --------------------------------------------------------------------------- ca


def test_ca_status_and_rotate_publish_before_signing(
    cluster: Cluster, domain: tuple[str, str]
) -> None:
    name, trust_domain = domain
    with cluster.namespace() as ns_a, cluster.namespace() as ns_b:
        namespaces = (ns_a, ns_b)
        for ns in namespaces:
            shared_identity(cluster, ns, name)
        status = ok(tw(cluster, "ca", "status", name))
        assert "Active" in status
        for ns in namespaces:
            assert any(line.split()[:2] == [ns, "yes"] for line in status.splitlines()), status
        before = {a["sha256"] for a in get_td(cluster, name)["status"]["authorities"]}

        rotate = subprocess.Popen(
            [TRUSTWARDEN, "ca", "rotate", name, "--activate-after", "5s", "--yes", "--force",
             "--timeout", "120s", "--kubeconfig", str(cluster.kubeconfig)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        new_sha: str | None = None
        bundles_complete_at: float | None = None
        moved: set[str] = set()
        deadline = time.monotonic() + 180
        try:
            # Watch bundles and Secrets through the rotation: no leaf may be signed by the
            # new authority while an entitled bundle lacks its anchor.
            while time.monotonic() < deadline:
                authorities = get_td(cluster, name)["status"].get("authorities") or []
                for item in authorities:
                    if item["sha256"] not in before:
                        new_sha = item["sha256"]
                if new_sha is not None:
                    holding = {
                        ns for ns in namespaces
                        if new_sha in anchor_shas(bundle_data(cluster, ns), trust_domain)
                    }  # fmt: skip
                    if holding == set(namespaces) and bundles_complete_at is None:
                        bundles_complete_at = time.monotonic()
                    for ns in namespaces:
                        data = secret_data(cluster, ns, "api-svid")
                        bundle = bundle_data(cluster, ns) or {}
                        if data and issued_by(
                            data["tls.crt"], bundle.get(f"{trust_domain}.pem", ""), new_sha
                        ):
                            assert holding == set(namespaces), (
                                f"{ns}'s leaf is signed by the new authority while bundles "
                                f"{set(namespaces) - holding} lack its anchor"
                            )
                            moved.add(ns)
                if rotate.poll() is not None and moved == set(namespaces):
                    break
                time.sleep(0.3)
        finally:
            if rotate.poll() is None:
                rotate.kill()
            stdout, stderr = rotate.communicate(timeout=30)
        assert rotate.returncode == 0, stdout + stderr
        assert new_sha is not None and bundles_complete_at is not None
        assert moved == set(namespaces), "leaves were not re-issued by the new authority"
        assert "prepared authority" in stdout
        assert "new anchor in 2/2 bundles" in stdout
        assert " is Active" in stdout and "Rotation of TrustDomain" in stdout
        states = {a["sha256"]: a["state"] for a in get_td(cluster, name)["status"]["authorities"]}
        assert states[new_sha] == "Active"
        assert {states[s] for s in before} == {"Retired"}
        status = ok(tw(cluster, "ca", "status", name, "-o", "json"))
        doc = json.loads(status)
        by_sha = {a["sha256"]: a for a in doc["authorities"]}
        assert sorted(by_sha[new_sha]["bundles"]) == sorted(namespaces)


# --------------------------------------------------------------------------- errors


def test_errors_are_actionable(
    cluster: Cluster, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    missing = tw(cluster, "ca", "status", "no-such-td")
    assert missing.returncode == 1
    assert "TrustDomain no-such-td not found" in missing.stderr
    assert "Traceback" not in missing.stderr

    # A ServiceAccount without any RBAC: the 403 names the verb and the resource.
    cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    token = cluster.core.create_namespaced_service_account_token(
        "nobody", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    restricted = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "nobody", "user": {"token": token}}],
        "contexts": [
            {
                "name": "nobody",
                "context": {
                    "cluster": admin["clusters"][0]["name"],
                    "user": "nobody",
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "nobody",
    }
    kubeconfig = tmp_path / "nobody.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(restricted))
    denied = subprocess.run(
        [TRUSTWARDEN, "inventory", "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert denied.returncode == 1
    assert (
        f"RBAC does not allow verb 'list' on resource 'secrets' in namespace {namespace}"
        in denied.stderr
    ), denied.stderr
    assert f"kubectl auth can-i list secrets -n {namespace}" in denied.stderr
    assert "Traceback" not in denied.stderr
