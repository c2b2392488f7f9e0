"""Loading the API server's address and credentials without the kubernetes package."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.unit.conftest import make_cert
from trustwarden.k8s import config as cluster_config
from trustwarden.k8s.config import ConfigError


def _kubeconfig(tmp: Path, user: dict, cluster: dict | None = None) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://127.0.0.1:6443/"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [
            {"name": "main", "context": {"cluster": "c", "user": "u"}},
            {"name": "other", "context": {"cluster": "c", "user": "missing"}},
        ],
        "current-context": "main",
    }
    path = tmp / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_client_certificate_files_resolve_next_to_the_kubeconfig(tmp_path: Path) -> None:
    ca, client = make_cert("CA"), make_cert("admin")
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_bytes(ca.pem)
    (tmp_path / "pki" / "admin.crt").write_bytes(client.pem)
    (tmp_path / "pki" / "admin.key").write_bytes(client.key_pem)
    path = _kubeconfig(
        tmp_path,
        {"client-certificate": "pki/admin.crt", "client-key": "pki/admin.key"},
        {"server": "https://127.0.0.1:6443/", "certificate-authority": "pki/ca.crt"},
    )
    loaded = cluster_config.load(str(path))
    assert loaded.server == "https://127.0.0.1:6443"
    assert loaded.ca_pem == ca.pem
    assert loaded.client_cert_pem == client.pem
    assert loaded.credentials().headers() == {}
    context = loaded.ssl_context()
    assert not isinstance(context, bool)
    assert context.check_hostname  # verified against the kubeconfig's CA


def test_inline_data_token_and_basic_auth(tmp_path: Path) -> None:
    ca = make_cert("CA")
    path = _kubeconfig(
        tmp_path,
        {"token": "abc.def"},
        {
            "server": "https://api.example:6443",
            "certificate-authority-data": base64.b64encode(ca.pem).decode(),
            "tls-server-name": "kubernetes.default",
        },
    )
    loaded = cluster_config.load(str(path))
    assert loaded.ca_pem == ca.pem
    assert loaded.tls_server_name == "kubernetes.default"
    assert loaded.credentials().headers() == {"Authorization": "Bearer abc.def"}
    basic = cluster_config.load(str(_kubeconfig(tmp_path, {"username": "u", "password": "p"})))
    assert basic.credentials().headers() == {
        "Authorization": "Basic " + base64.b64encode(b"u:p").decode()
    }


def test_token_file_is_read_again_on_refresh(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("first\n")
    loaded = cluster_config.load(str(_kubeconfig(tmp_path, {"tokenFile": "token"})))
    assert loaded.credentials().token == "first"
    (tmp_path / "token").write_text("second\n")
    assert loaded.credentials().token == "first", "cached until the reload period or a 401"
    assert loaded.credentials(refresh=True).token == "second"


def test_in_cluster_uses_the_service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_bytes(make_cert("cluster CA").pem)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    loaded = cluster_config.in_cluster(tmp_path)
    assert loaded.server == "https://10.96.0.1:443"
    assert loaded.credentials().token == "sa-token"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    assert cluster_config.in_cluster(tmp_path).server == "https://[fd00::1]:443"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(ConfigError, match="not running in a pod"):
        cluster_config.in_cluster(tmp_path)


def _plugin(tmp_path: Path, expires: datetime) -> Path:
    """An exec credential plugin that counts its runs and hands out token-<run>."""
    script = tmp_path / "plugin.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, os, pathlib
            counter = pathlib.Path({str(tmp_path / "runs")!r})
            runs = int(counter.read_text()) + 1 if counter.exists() else 1
            counter.write_text(str(runs))
            info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
            assert info["spec"]["cluster"]["server"].startswith("https://")
            print(json.dumps({{
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "status": {{
                    "token": f"token-{{runs}}-{{os.environ['PLUGIN_FLAVOUR']}}",
                    "expirationTimestamp": {expires.strftime("%Y-%m-%dT%H:%M:%SZ")!r},
                }},
            }}))
            """
        )
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_exec_plugin_runs_again_when_its_token_expires(tmp_path: Path) -> None:
    script = _plugin(tmp_path, datetime.now(UTC) + timedelta(hours=1))
    exec_spec = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": sys.executable,
        "args": [str(script)],
        "env": [{"name": "PLUGIN_FLAVOUR", "value": "eks"}],
    }
    loaded = cluster_config.load(str(_kubeconfig(tmp_path, {"exec": exec_spec})))
    assert loaded.credentials().token == "token-1-eks"
    assert loaded.credentials().token == "token-1-eks", "valid for an hour: not run again"
    assert loaded.credentials(refresh=True).token == "token-2-eks"  # after a 401

    expired = _plugin(tmp_path, datetime.now(UTC) - timedelta(seconds=1))
    exec_spec["args"] = [str(expired)]
    short = cluster_config.load(str(_kubeconfig(tmp_path, {"exec": exec_spec})))
    first = short.credentials().token
    assert short.credentials().token != first, "an expired token is never reused"


def test_exec_plugin_failure_is_reported_with_its_stderr(tmp_path: Path) -> None:
    exec_spec = {
        "command": sys.executable,
        "args": ["-c", "import sys; sys.stderr.write('please run aws sso login'); sys.exit(3)"],
    }
    loaded = cluster_config.load(str(_kubeconfig(tmp_path, {"exec": exec_spec})))
    with pytest.raises(ConfigError, match="exited with 3: please run aws sso login"):
        loaded.credentials()


@pytest.mark.parametrize(
    ("user", "context", "message"),
    [
        ({"auth-provider": {"name": "gcp"}}, None, "auth-provider.*exec credential plugin"),
        ({"token": "x"}, "nowhere", "no context named 'nowhere'"),
        ({"token": "x"}, "other", "no user named 'missing'"),
        ({"client-certificate": "absent.crt"}, None, "absent.crt"),
    ],
)
def test_unusable_kubeconfigs_say_what_is_wrong(
    tmp_path: Path, user: dict, context: str | None, message: str
) -> None:
    path = _kubeconfig(tmp_path, user)
    with pytest.raises(ConfigError, match=message):
        cluster_config.load(str(path), context)


def test_missing_kubeconfig_and_kubeconfig_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="cannot read the kubeconfig"):
        cluster_config.load(str(tmp_path / "absent"))
    path = _kubeconfig(tmp_path, {"token": "from-env"})
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(tmp_path / "absent"), str(path)]))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert cluster_config.load().credentials().token == "from-env"
    assert json.loads(json.dumps(cluster_config.load().source)).startswith(str(path))
