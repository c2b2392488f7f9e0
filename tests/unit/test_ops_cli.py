"""The operations subcommands through `trustwarden.cli.main`: flags, exit codes, actionable
errors (no stack traces unless --debug), and the API error translation of the ops client."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from tests.unit.test_ops_fixtures import (
    NOW,
    FakePort,
    bundle_body,
    make_ca,
    make_leaf,
    secret_body,
    td_body,
    wid_body,
)
from trustwarden import cli
from trustwarden.k8s.ops_client import OpsClient
from trustwarden.ops.errors import (
    ConflictError,
    CRDMissingError,
    ForbiddenError,
    NotFoundError,
    UnreachableError,
)

CA = make_ca()


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> FakePort:
    fake = FakePort(namespace="payments")
    good = make_leaf(CA, "/ns/payments/sa/api", serial=0x51)
    fake.add_secret(secret_body("payments", "api-svid", good, CA, identity="api"))
    fake.identities.append(wid_body("payments", "api"))
    fake.bundles["payments"] = bundle_body("payments", [CA])
    fake.domains["prod"] = td_body([(CA, "Active")], namespaces=1)
    seen: list[argparse.Namespace] = []

    def make_port(args: argparse.Namespace) -> FakePort:
        seen.append(args)
        return fake

    monkeypatch.setattr(cli, "make_port", make_port)
    monkeypatch.setattr(cli, "now", lambda: NOW)
    fake.seen = seen  # type: ignore[attr-defined]
    return fake


def test_inventory_defaults_to_the_context_namespace(
    port: FakePort, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["inventory"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "NAMESPACE", "IDENTITY", "POD", "OWNER", "STATE", "EXPIRES", "RENEWAL"
    ]  # fmt: skip
    assert out.splitlines()[1].split()[:3] == ["payments", "api", "(shared)"]


def test_inventory_flags_after_the_subcommand(
    port: FakePort, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        ["inventory", "-A", "-o", "json", "--context", "ctx", "--kubeconfig", "/k", "--debug"]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "CertificateInventory"
    args = port.seen[-1]  # type: ignore[attr-defined]
    assert (args.context, args.kubeconfig, args.debug) == ("ctx", "/k", True)


def test_inventory_exit_1_when_something_failed(
    port: FakePort, capsys: pytest.CaptureFixture[str]
) -> None:
    port.identities[0] = wid_body("payments", "api", degraded=("IssuanceFailed", "boom"))
    assert cli.main(["inventory", "-n", "payments", "-o", "csv"]) == 1
    assert ",failed,IssuanceFailed: boom" in capsys.readouterr().out


def test_inventory_empty_and_filters(port: FakePort, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["inventory", "-n", "elsewhere"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "No certificates found in namespace elsewhere." in captured.err
    assert cli.main(["inventory", "--owner", "nobody", "--expiring-within", "1h"]) == 0
    assert "matching the filters" in capsys.readouterr().err


def test_inventory_bad_flags(port: FakePort, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["inventory", "-A", "-n", "x"]) == 2
    assert "either -n/--namespace or -A" in capsys.readouterr().err
    assert cli.main(["inventory", "--expiring-within", "soon"]) == 2
    assert "--expiring-within" in capsys.readouterr().err


def test_inventory_without_rbac_for_trust_domains_degrades(
    port: FakePort, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden() -> list[dict[str, Any]]:
        raise ForbiddenError("forbidden: RBAC does not allow verb 'list' on 'trustdomains'")

    monkeypatch.setattr(port, "list_trust_domains", forbidden)
    assert cli.main(["inventory", "-o", "wide"]) == 0
    captured = capsys.readouterr()
    assert "warning: forbidden" in captured.err
    assert "sha256:" in captured.out


def test_crd_missing_is_actionable(port: FakePort, capsys: pytest.CaptureFixture[str]) -> None:
    port.crd_missing = True
    assert cli.main(["inventory"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("trustwarden inventory: error: ")
    assert "install the CRDs: kubectl apply -f deploy/crds/" in err
    assert "Traceback" not in err
    with pytest.raises(CRDMissingError):
        cli.main(["--debug", "inventory"])
    with pytest.raises(CRDMissingError):
        cli.main(["inventory", "--debug"])


def test_verify(port: FakePort, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["verify", "api-svid", "-n", "payments"]) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines()] == [
        "PASS chain", "PASS spiffe", "PASS key-pair", "PASS revocation", "PASS validity"
    ]  # fmt: skip
    secret = port.secrets[("payments", "api-svid")]
    secret["data"]["tls.key"] = secret_body(
        "payments", "x", make_leaf(CA, "/ns/payments/sa/api", serial=0x52), CA, identity="api"
    )["data"]["tls.key"]
    assert cli.main(["verify", "api-svid"]) == 1
    captured = capsys.readouterr()
    assert "FAIL key-pair: tls.key does not belong" in captured.out
    assert "1 check(s) failed: key-pair" in captured.err


def test_verify_missing_secret_is_named(port: FakePort, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["verify", "nope", "-n", "payments"]) == 1
    assert "Secret payments/nope not found" in capsys.readouterr().err


def test_verify_from_file(
    port: FakePort, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    saved = tmp_path / "old.json"
    saved.write_text(json.dumps(port.secrets[("payments", "api-svid")]))
    assert cli.main(["verify", "--from-file", str(saved), "-n", "payments"]) == 0
    port.bundles["payments"] = bundle_body(
        "payments", [CA], revoked=[(CA, make_leaf(CA, "/ns/payments/sa/api", serial=0x51))]
    )
    assert cli.main(["verify", "--from-file", str(saved), "-n", "payments"]) == 1
    assert "FAIL revocation: serial 51 is revoked" in capsys.readouterr().out
    assert cli.main(["verify", "-n", "payments"]) == 2
    assert "give a SECRET name or --from-file" in capsys.readouterr().err
    assert cli.main(["verify", "--from-file", str(tmp_path / "missing")]) == 2


def test_revoke_needs_exactly_one_target_and_a_reason(
    port: FakePort, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["revoke", "--identity", "api", "--pod", "p", "--reason", "r"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["revoke", "--identity", "api"])
    capsys.readouterr()


def test_revoke_confirmation_on_stdin(
    port: FakePort, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert cli.main(["revoke", "--identity", "api", "--reason", "leak"]) == 1
    captured = capsys.readouterr()
    assert "Revoke now? [y/N]" in captured.err and "aborted" in captured.err
    assert port.patches == []
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))
    assert cli.main(["revoke", "--identity", "api", "--reason", "leak", "--no-wait"]) == 0
    assert port.patches[0][2]["metadata"]["annotations"] == {"trustwarden.io/revoke": "leak"}


def test_ca_commands(port: FakePort, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ca", "status", "prod"]) == 0
    assert "Authorities:" in capsys.readouterr().out
    assert cli.main(["ca", "status", "nope"]) == 1
    assert "trustwarden ca status: error: TrustDomain nope not found" in capsys.readouterr().err
    assert cli.main(["ca", "rotate", "prod", "--yes", "--no-wait", "--activate-after", "5m"]) == 0
    annotations = port.domains["prod"]["metadata"]["annotations"]
    assert annotations["trustwarden.io/activate-after"] == "5m"
    assert annotations["trustwarden.io/rotation-mode"] is None  # a merge patch removes it
    capsys.readouterr()
    # Shorter than the default (3m): refused without --force when nothing can be asked...
    argv = ["ca", "rotate", "prod", "--yes", "--no-wait", "--activate-after", "30s"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "shorter than the default 3m" in err and "pass --force" in err
    assert "reject the certificates the new authority signs" in err
    assert annotations["trustwarden.io/activate-after"] == "5m"  # nothing was written
    # ...accepted with it, and no risk at all with --cross-sign.
    assert cli.main([*argv, "--force"]) == 0
    assert annotations["trustwarden.io/activate-after"] == "30s"
    assert cli.main([*argv, "--cross-sign"]) == 0
    assert annotations["trustwarden.io/rotation-mode"] == "cross-sign"
    # No --activate-after: the operator derives it; the CLI says what it will be.
    assert cli.main(["ca", "rotate", "prod", "--yes", "--no-wait", "--compromised"]) == 0
    out = capsys.readouterr().out
    assert annotations["trustwarden.io/rotation-mode"] == "compromised"
    assert annotations["trustwarden.io/activate-after"] is None
    assert "Clients with stale trust stores WILL FAIL until their volumes update" in out
    with pytest.raises(SystemExit):
        cli.main(["ca", "rotate", "prod", "--compromised", "--cross-sign", "--yes"])
    assert "not allowed with" in capsys.readouterr().err


def test_run_subcommand_is_unchanged() -> None:
    args = cli.build_parser().parse_args(["run", "--local", "--namespace", "x", "--context", "c"])
    assert (args.command, args.local, args.namespace, args.context) == ("run", True, "x", "c")
    assert args.metrics_port == 8080 and args.webhook_port == 9443


def test_kubectl_plugin_program_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["/usr/local/bin/kubectl-trustwarden"])
    assert cli.build_parser().prog == "kubectl trustwarden"


# --------------------------------------------------------------------------- ops client


def api_error(status: int, body: dict[str, Any] | str | None = None) -> ApiException:
    exc = ApiException(status=status, reason={403: "Forbidden", 404: "Not Found"}.get(status))
    exc.body = json.dumps(body) if isinstance(body, dict) else body
    return exc


@pytest.fixture
def client() -> OpsClient:
    ops = OpsClient.__new__(OpsClient)
    ops.host = "https://127.0.0.1:6443"
    return ops


def test_translate_missing_crd(client: OpsClient) -> None:
    error = client._translate(
        api_error(404, "404 page not found"), "list", "trustdomains", None, None, "trustwarden.io"
    )
    assert isinstance(error, CRDMissingError)
    assert "install the CRDs: kubectl apply -f deploy/crds/" in str(error)


def test_translate_missing_object(client: OpsClient) -> None:
    body = {"message": 'trustdomains.trustwarden.io "x" not found', "details": {"name": "x"}}
    error = client._translate(
        api_error(404, body), "get", "trustdomains", None, "x", "trustwarden.io"
    )
    assert isinstance(error, NotFoundError) and "trustdomains x not found" in str(error)
    error = client._translate(api_error(404, body), "get", "secrets", "ns", "s", "")
    assert isinstance(error, NotFoundError) and "secrets ns/s not found" in str(error)


def test_translate_forbidden_names_verb_and_resource(client: OpsClient) -> None:
    message = 'secrets is forbidden: User "bob" cannot list resource "secrets" in "payments"'
    error = client._translate(
        api_error(403, {"message": message}), "list", "secrets", "payments", None, ""
    )
    assert isinstance(error, ForbiddenError)
    text = str(error)
    assert "verb 'list' on resource 'secrets' in namespace payments" in text
    assert "kubectl auth can-i list secrets -n payments" in text
    assert 'User "bob"' in text
    error = client._translate(
        api_error(403, {"message": "no"}), "patch", "trustdomains", None, "p", "trustwarden.io"
    )
    assert "verbs: ['patch']" in str(error) and "trustdomains.trustwarden.io" in str(error)
    assert "--all-namespaces" in str(error)


def test_translate_other_statuses(client: OpsClient) -> None:
    assert isinstance(
        client._translate(api_error(401), "get", "secrets", "n", "s", ""), UnreachableError
    )
    assert isinstance(
        client._translate(api_error(409), "patch", "secrets", "n", "s", ""), ConflictError
    )
    assert "500" in str(client._translate(api_error(500), "get", "secrets", "n", "s", ""))


def test_unusable_kubeconfig_is_actionable(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(UnreachableError, match="pass --kubeconfig FILE"):
        OpsClient(str(missing), None)


def test_every_engine_setting_is_a_run_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """`trustwarden run` flags fill OperatorConfig, and the runner builds the EngineConfig
    from it alone: no setting needs a monkeypatch to change."""
    from datetime import timedelta

    from trustwarden.handlers import runner
    from trustwarden.reconcile.admission import AdmissionKey

    seen = []

    async def fake_run(config: Any) -> None:
        seen.append(config)

    monkeypatch.setattr(runner, "run", fake_run)
    argv = ["run", "--local", "--namespace", "tw", "--watch-namespace", "a"]
    argv += ["--flush-interval", "250ms", "--status-interval", "3s"]
    argv += ["--status-timing-interval", "45s", "--ledger-interval", "1m"]
    argv += ["--max-jitter", "0.2", "--ca-recovery-grace", "5s", "--propagation-delay", "10s"]
    argv += ["--min-activate-after", "20s", "--reissue-rate", "7", "--cluster-domain", "c.test"]
    assert cli.main(argv) == 0
    engine = runner.engine_config(seen[0], AdmissionKey(b"k" * 32))
    assert engine.operator_namespace == "tw" and engine.watch_namespaces == frozenset({"a"})
    assert (engine.flush_interval, engine.status_interval) == (0.25, 3.0)
    assert engine.status_timing_interval == timedelta(seconds=45)
    assert engine.ledger_interval == timedelta(minutes=1)
    assert engine.max_jitter_fraction == 0.2
    assert engine.ca_recovery_grace == timedelta(seconds=5)
    assert engine.propagation_delay == timedelta(seconds=10)
    assert engine.min_activate_after == timedelta(seconds=20)
    assert (engine.reissue_rate, engine.cluster_domain) == (7.0, "c.test")
    with pytest.raises(SystemExit, match="--ledger-interval must be positive"):
        cli.main(["run", "--local", "--ledger-interval", "0s"])


def test_bind_address_sets_every_listener_and_pod_name_the_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hostNetwork pod binds its pod IP (the chart passes --bind-address=$(POD_IP)), and
    the Lease names the pod, not the node whose host name a hostNetwork pod has."""
    from trustwarden.handlers import runner

    seen = []

    async def fake_run(config: Any) -> None:
        seen.append(config)

    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setenv("POD_NAME", "tw-7c9f-abcde")
    assert cli.main(["run", "--bind-address", "127.0.0.2"]) == 0
    config = seen.pop()
    addresses = (config.webhook_address, config.health_address, config.metrics_address)
    assert addresses == ("127.0.0.2",) * 3
    assert config.identity.startswith("tw-7c9f-abcde-")
    assert cli.main(["run", "--bind-address", "::1", "--metrics-address", "0.0.0.0"]) == 0
    config = seen.pop()
    assert (config.webhook_address, config.metrics_address) == ("::1", "0.0.0.0")
    monkeypatch.delenv("POD_NAME")
    assert cli.main(["run"]) == 0
    assert seen.pop().webhook_address == "0.0.0.0"
    assert cli.main(["run", "--local"]) == 0
    assert seen.pop().health_address == "127.0.0.1"
    with pytest.raises(SystemExit, match="--bind-address must be an IP address"):
        cli.main(["run", "--bind-address", "node-a"])
