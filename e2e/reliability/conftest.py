"""Reliability and security suite (issue 8): its own control plane, its own operator.

Runs only when asked for by path (`pytest e2e/reliability`, `make test-reliability`) or with
TW_RELIABILITY=1, so `pytest e2e` does not start a second control plane. Everything lives under
e2e/reliability/.state/ (git-ignored): the cluster (CLUSTER_DIR), operator logs, results.json.

Knobs: TW_RELIABILITY_KEEP_CLUSTER=1 keeps the control plane for the next run;
TW_RELIABILITY_SCALE (default 1.0) scales the crash-loop and burst sizes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from e2e.bodies import trust_domain_body
from e2e.reliability.controlplane import OPERATOR_NAMESPACE, ControlPlane
from e2e.reliability.harness import INJECT, Operator, Results, SecretRecorder
from e2e.reliability.invariants import Invariants
from e2e.support import REPO, Cluster, apply_body, get_td, unique, wait_condition

HERE = Path(__file__).resolve().parent
STATE = HERE / ".state"
OPNS = OPERATOR_NAMESPACE
SUITE_DOMAIN = "rel"
SUITE_TRUST_DOMAIN = "rel.example.org"


def _enabled(config: pytest.Config) -> bool:
    if os.environ.get("TW_RELIABILITY") == "1":
        return True
    for arg in config.invocation_params.args:
        path = Path(str(arg).split("::", 1)[0])
        if not path.is_absolute():
            path = Path(config.invocation_params.dir) / path
        try:
            path.resolve().relative_to(HERE)
            return True
        except ValueError:
            continue
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name.startswith("test_") and not _enabled(config):
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The hygiene scan looks at everything the suite left behind: it runs last.
    items.sort(key=lambda item: "test_zz_hygiene" in item.nodeid)


@pytest.fixture(scope="session")
def state_dir() -> Path:
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / ".gitignore").write_text("*\n")
    logs = STATE / "logs"
    if logs.exists():
        shutil.rmtree(logs)
    logs.mkdir()
    return STATE


@pytest.fixture(scope="session")
def control_plane(state_dir: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane.up(state_dir / "cluster")
    yield plane
    if not os.environ.get("TW_RELIABILITY_KEEP_CLUSTER"):
        plane.down()


@pytest.fixture(scope="session")
def cluster(control_plane: ControlPlane) -> Cluster:
    """Overrides e2e/conftest.py's: the suite never touches the shared .cluster/."""
    return control_plane.cluster


@pytest.fixture(scope="session")
def results(state_dir: Path) -> Results:
    return Results(state_dir / "results.json")


@pytest.fixture(scope="session")
def recorder(cluster: Cluster) -> Iterator[SecretRecorder]:
    rec = SecretRecorder(cluster).start()
    yield rec
    rec.stop()


@pytest.fixture(scope="session")
def invariants(cluster: Cluster, recorder: SecretRecorder, state_dir: Path) -> Invariants:
    return Invariants(cluster, OPNS, recorder, state_dir / "tmp")


class OperatorSlot:
    """The suite's main operator; scenarios that kill or replace it put it back."""

    def __init__(self, plane: ControlPlane, log_dir: Path) -> None:
        self.plane = plane
        self.log_dir = log_dir
        self.kubeconfig = plane.operator_kubeconfig()
        self.current: Operator | None = None
        self.all: list[Operator] = []

    def new(self, name: str = "operator", **kw: object) -> Operator:
        op = Operator(self.kubeconfig, self.log_dir, namespace=OPNS, name=name, **kw)  # type: ignore[arg-type]
        self.all.append(op)
        return op

    def ensure(self) -> Operator:
        if self.current is None or not self.current.running:
            if self.current is None:
                self.current = self.new()
            self.current.start().wait_leading(timeout=90)
        return self.current

    def replace(self, op: Operator | None) -> None:
        if self.current is not None and self.current is not op:
            self.current.stop()
        self.current = op

    def stop_all(self) -> None:
        for op in self.all:
            op.stop()


@pytest.fixture(scope="session")
def slot(control_plane: ControlPlane, crds: None, state_dir: Path) -> Iterator[OperatorSlot]:
    s = OperatorSlot(control_plane, state_dir / "logs")
    yield s
    s.stop_all()


@pytest.fixture
def operator(slot: OperatorSlot) -> Operator:
    return slot.ensure()


@pytest.fixture(scope="session")
def suite_domain(cluster: Cluster, slot: OperatorSlot) -> str:
    slot.ensure()
    apply_body(
        cluster,
        trust_domain_body(
            SUITE_DOMAIN,
            trust_domain=SUITE_TRUST_DOMAIN,
            ca={"selfSigned": {"ttl": "2160h"}},
            policy={"maxTTL": "24h"},
        ),
    )
    wait_condition(lambda: get_td(cluster, SUITE_DOMAIN), "Ready", "True", timeout=60)
    return SUITE_DOMAIN


def make_namespace(cluster: Cluster, prefix: str, labels: dict[str, str] | None = None) -> str:
    name = unique(prefix)
    cluster.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels or {}))
    )
    return name


@pytest.fixture
def injected_ns(cluster: Cluster, invariants: Invariants) -> str:
    """An opted-in namespace that the invariant checker watches for the rest of the session:
    it is never deleted, so later faults must not damage earlier workloads either."""
    name = make_namespace(cluster, "tw-rel", INJECT)
    invariants.track(name)
    return name


__all__ = ["OPNS", "REPO", "SUITE_TRUST_DOMAIN"]
