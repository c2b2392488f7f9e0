"""`trustwarden inventory`: rows, states, filters, exit codes, and golden table/JSON/CSV output
on a pinned clock with deterministic certificates (regenerate with UPDATE_GOLDEN=1)."""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_ops_fixtures import (
    NOW,
    OWNER_PAYMENTS,
    bundle_body,
    make_ca,
    make_leaf,
    secret_body,
    td_body,
    wid_body,
)
from trustwarden.ops import inventory as inv
from trustwarden.ops.inventory import State

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "ops"


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs; UPDATE_GOLDEN=1 regenerates it"


class Scenario:
    """Four namespaces, two authorities (one retired), one of every state."""

    def __init__(self) -> None:
        self.old = make_ca("ca-old", serial=0x0A11CE, now=NOW - timedelta(days=80))
        self.ca = make_ca("ca-new", serial=0x0B0B, now=NOW - timedelta(days=10))
        ca, old = self.ca, self.old
        self.api = make_leaf(ca, "/ns/payments/sa/api", serial=0x5EC1)
        self.worker_a = make_leaf(ca, "/ns/payments/sa/worker", serial=0x5EC2)
        self.worker_b = make_leaf(
            old, "/ns/payments/sa/worker", serial=0x5EC3, issued=NOW - timedelta(minutes=45)
        )
        self.ledger = make_leaf(
            ca, "/ns/ledger/sa/ledger", serial=0x5EC4, issued=NOW - timedelta(hours=2)
        )
        self.books = make_leaf(ca, "/ns/ledger/sa/books", serial=0x5EC5)
        self.search = make_leaf(ca, "/ns/search-and-recommendations/sa/index", serial=0x5EC6)
        self.internal = make_leaf(ca, "/ns/trustwarden-system/sa/x", serial=0x5EC7)
        self.secrets = [
            secret_body("payments", "api-svid", self.api, ca, identity="api"),
            secret_body(
                "payments",
                "worker-svid-1f2e3d4c5b",
                self.worker_a,
                ca,
                identity="worker",
                pod=("worker-7d9f8b6c5-x2x4z", "pod-uid-a"),
                renew_at=NOW + timedelta(minutes=22, seconds=30),
            ),
            secret_body(
                "payments",
                "worker-svid-9a8b7c6d5e",
                self.worker_b,
                old,
                identity="worker",
                pod=("worker-7d9f8b6c5-q8r7s", "pod-uid-b"),
                renew_at=NOW - timedelta(minutes=5),
            ),
            secret_body(
                "ledger", "ledger-svid", self.ledger, ca, identity="ledger", owner="team-ledger"
            ),
            secret_body(
                "ledger", "books-svid", self.books, ca, identity="books", owner="team-ledger"
            ),
            secret_body(
                "search-and-recommendations",
                "index-svid",
                self.search,
                ca,
                identity="index",
                owner="search-platform-oncall@example.org",
            ),
            # The operator namespace is left out.
            secret_body("trustwarden-system", "x", self.internal, ca, identity="x"),
        ]
        broken = secret_body("ledger", "tampered-svid", self.books, ca, identity="books")
        broken["data"]["tls.crt"] = "bm90IGEgY2VydGlmaWNhdGU="  # "not a certificate"
        self.secrets.append(broken)
        unlabelled = secret_body("payments", "other", self.api, ca, identity="api")
        del unlabelled["metadata"]["labels"]["trustwarden.io/identity"]
        self.secrets.append(unlabelled)
        self.identities = [
            wid_body("payments", "api"),
            wid_body("payments", "worker", mode="PerPod"),
            wid_body("ledger", "ledger", owner="team-ledger"),
            wid_body(
                "ledger",
                "books",
                owner="team-ledger",
                degraded=("IssuanceFailed", "1 of 1 certificate(s) failing; first: CA expired"),
            ),
            wid_body(
                "search-and-recommendations", "index", owner="search-platform-oncall@example.org"
            ),
        ]
        self.domains = [td_body([(ca, "Active"), (old, "Retired")], namespaces=3)]
        self.bundles = [
            bundle_body("payments", [ca, old]),
            bundle_body("ledger", [ca]),
            bundle_body("search-and-recommendations", [ca], revoked=[(ca, self.search)]),
        ]

    def rows(self, **kwargs: Any) -> list[inv.InventoryRow]:
        return inv.build_rows(
            self.secrets, self.identities, self.domains, self.bundles, NOW, **kwargs
        )


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return Scenario()


def by_secret(rows: list[inv.InventoryRow]) -> dict[str, inv.InventoryRow]:
    return {r.secret: r for r in rows}


def test_rows_cover_every_issued_certificate_except_the_operator_namespace(
    scenario: Scenario,
) -> None:
    rows = scenario.rows()
    assert [(r.namespace, r.secret) for r in rows] == [
        ("ledger", "books-svid"),
        ("ledger", "tampered-svid"),
        ("ledger", "ledger-svid"),
        ("payments", "api-svid"),
        ("payments", "worker-svid-9a8b7c6d5e"),
        ("payments", "worker-svid-1f2e3d4c5b"),
        ("search-and-recommendations", "index-svid"),
    ]
    assert not any(r.namespace == "trustwarden-system" for r in rows)
    assert len(scenario.rows(operator_namespace="elsewhere")) == 8


def test_row_columns(scenario: Scenario) -> None:
    rows = by_secret(scenario.rows())
    api = rows["api-svid"]
    assert api.pod == "(shared)"
    assert api.identity == "api"
    assert api.spiffe_id == "spiffe://prod.example.org/ns/payments/sa/api"
    assert api.owner == OWNER_PAYMENTS
    assert api.trust_domain == "prod.example.org"
    assert api.authority == inv.Authority(scenario.ca.serial_hex, "Active", scenario.ca.sha256)
    assert api.serial == "5ec1"
    assert api.not_after == scenario.api.not_after
    assert api.time_left == timedelta(minutes=50)
    worker = rows["worker-svid-1f2e3d4c5b"]
    assert worker.pod == "worker-7d9f8b6c5-x2x4z"
    assert worker.next_renewal == NOW + timedelta(minutes=22, seconds=30)
    old = rows["worker-svid-9a8b7c6d5e"]
    assert old.authority is not None and old.authority.state == "Retired"


def test_states(scenario: Scenario) -> None:
    rows = by_secret(scenario.rows())
    assert {name: r.state for name, r in rows.items()} == {
        "api-svid": State.ok,
        "worker-svid-1f2e3d4c5b": State.ok,
        "worker-svid-9a8b7c6d5e": State.renewing,
        "ledger-svid": State.expired,
        "books-svid": State.failed,
        "index-svid": State.revoked,
        "tampered-svid": State.invalid,
    }
    assert "CA expired" in rows["books-svid"].detail
    assert rows["ledger-svid"].detail == "expired 1h ago"


def test_state_precedence_expired_beats_failed_and_renewing(scenario: Scenario) -> None:
    later = NOW + timedelta(hours=3)
    rows = by_secret(
        inv.build_rows(
            scenario.secrets, scenario.identities, scenario.domains, scenario.bundles, later
        )
    )
    assert rows["books-svid"].state is State.expired
    assert rows["api-svid"].state is State.expired


def test_owner_falls_back_to_the_secret_annotation(scenario: Scenario) -> None:
    rows = by_secret(inv.build_rows(scenario.secrets, [], scenario.domains, scenario.bundles, NOW))
    assert rows["api-svid"].owner == OWNER_PAYMENTS
    assert rows["books-svid"].state is State.ok  # without the WorkloadIdentity: no Degraded


def test_authority_from_bundle_anchor_without_issuer_annotation(scenario: Scenario) -> None:
    secret = json.loads(json.dumps(scenario.secrets[0]))
    del secret["metadata"]["annotations"]["trustwarden.io/issuer"]
    (row,) = inv.build_rows([secret], [], scenario.domains, scenario.bundles, NOW)
    assert row.authority is not None and row.authority.serial == scenario.ca.serial_hex
    (row,) = inv.build_rows([secret], [], [], scenario.bundles, NOW)
    assert row.authority == inv.Authority("", "unknown", scenario.ca.sha256)


def test_exit_code(scenario: Scenario) -> None:
    rows = scenario.rows()
    assert inv.exit_code(rows) == 1
    healthy = [r for r in rows if r.state in (State.ok, State.renewing, State.revoked)]
    assert inv.exit_code(healthy) == 0
    assert inv.exit_code([r for r in rows if r.state is State.failed]) == 1
    assert inv.exit_code([r for r in rows if r.state is State.expired]) == 1
    assert inv.exit_code([]) == 0


def test_filters(scenario: Scenario) -> None:
    rows = scenario.rows()
    soon = inv.filter_rows(rows, NOW, expiring_within=timedelta(minutes=20))
    assert {r.secret for r in soon} == {"worker-svid-9a8b7c6d5e", "ledger-svid"}
    ledger = inv.filter_rows(rows, NOW, owner="TEAM-LEDGER")
    assert {r.secret for r in ledger} == {"books-svid", "ledger-svid", "tampered-svid"}
    pattern = inv.filter_rows(rows, NOW, owner="team-*")
    assert "index-svid" not in {r.secret for r in pattern}
    assert len(pattern) == 6


def test_summary(scenario: Scenario) -> None:
    summary = inv.summarize(scenario.rows(), NOW)
    assert summary.total == 7
    assert summary.counts == {
        "ok": 2, "renewing": 1, "failed": 1, "revoked": 1, "expired": 1, "invalid": 1
    }  # fmt: skip
    assert summary.soonest is not None and summary.soonest.secret == "worker-svid-9a8b7c6d5e"
    line = inv.summary_line(summary, NOW)
    assert line.startswith("7 certificates: 2 ok, 1 renewing, 1 failed, 1 revoked")
    assert "\nsoonest expiry: payments/worker-svid-9a8b7c6d5e in 15m" in line


def test_table_fits_80_columns(scenario: Scenario) -> None:
    text = inv.format_table(scenario.rows(), NOW)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "search-a…" in text or "search-and-recommendations" not in text


def test_golden_table(scenario: Scenario) -> None:
    golden("inventory.table.golden", inv.format_table(scenario.rows(), NOW))


def test_golden_wide(scenario: Scenario) -> None:
    golden("inventory.wide.golden", inv.format_table(scenario.rows(), NOW, wide=True))


def test_golden_json(scenario: Scenario) -> None:
    text = inv.format_json(scenario.rows(), NOW)
    golden("inventory.json.golden", text)
    doc = json.loads(text)
    assert doc["summary"]["total"] == 7
    assert {i["state"] for i in doc["items"]} == {s.value for s in State}


def test_golden_csv(scenario: Scenario) -> None:
    text = inv.format_csv(scenario.rows())
    golden("inventory.csv.golden", text)
    records = list(csv.DictReader(io.StringIO(text)))
    assert len(records) == 7
    assert records[0].keys() == set(inv.CSV_FIELDS)
