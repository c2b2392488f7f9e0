"""`trustwarden inventory`: one row per issued certificate, built by a pure function from the
plain API bodies and ``now``; formatted as a table (narrow or wide), JSON or CSV."""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cryptography import x509

from trustwarden.names import (
    API_VERSION,
    BUNDLE_CONFIGMAP,
    IDENTITY_LABEL,
    ISSUER_ANNOTATION,
    OPERATOR_NAMESPACE,
    OWNER_ANNOTATION,
    PREFIX,
    RENEW_AT_ANNOTATION,
    SPIFFE_ID_ANNOTATION,
    TRUST_DOMAIN_ANNOTATION,
)
from trustwarden.pki._x509util import serial_hex, sha256_hex, signed_by
from trustwarden.pki.errors import PKIError
from trustwarden.pki.spiffe import SpiffeID

from .format import Column, human_duration, render_table, rfc3339, truncate
from .model import (
    Body,
    annotations_of,
    condition,
    is_managed,
    labels_of,
    load_pem_certs,
    load_pem_crls,
    name_of,
    namespace_of,
    owner_refs,
    parse_time,
    secret_bytes,
)

SHARED = "(shared)"
# Pod certificates have no Secret: the column names the PodCertificateRequest instead.
PCR_PREFIX = "pcr/"
SIGNER_PREFIX = PREFIX  # a TrustDomain <name> signs as trustwarden.io/<name>
ISSUED_FOR = re.compile(r"for WorkloadIdentity ([a-z0-9.-]+)/([a-z0-9.-]+)$")


class State(StrEnum):
    """A certificate's state, in the order the summary lists them."""

    ok = "ok"
    renewing = "renewing"  # now >= renew-at and not replaced yet
    failed = "failed"  # its WorkloadIdentity reports Degraded=True
    revoked = "revoked"  # its serial is in the namespace bundle's CRL
    expired = "expired"  # notAfter <= now
    invalid = "invalid"  # tls.crt missing or unreadable (the operator repairs it)


# States that make `trustwarden inventory` exit 1 (for cron jobs and alerts).
ALERT_STATES = frozenset({State.expired, State.failed, State.invalid})


@dataclass(frozen=True)
class Authority:
    serial: str
    state: str
    sha256: str


@dataclass(frozen=True)
class InventoryRow:
    namespace: str
    secret: str
    identity: str
    pod: str  # owning Pod's name, "(shared)" for a Shared identity's Secret, "-" otherwise
    spiffe_id: str
    owner: str
    trust_domain: str
    authority: Authority | None
    serial: str
    not_before: datetime | None
    not_after: datetime | None
    time_left: timedelta | None
    next_renewal: datetime | None
    state: State
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "secret": self.secret,
            "workloadIdentity": self.identity,
            "pod": self.pod,
            "spiffeID": self.spiffe_id,
            "owner": self.owner,
            "trustDomain": self.trust_domain,
            "authority": None
            if self.authority is None
            else {
                "serial": self.authority.serial,
                "state": self.authority.state,
                "sha256": self.authority.sha256,
            },
            "serial": self.serial,
            "notBefore": rfc3339(self.not_before) or None,
            "notAfter": rfc3339(self.not_after) or None,
            "secondsLeft": None if self.time_left is None else int(self.time_left.total_seconds()),
            "nextRenewal": rfc3339(self.next_renewal) or None,
            "state": self.state.value,
            "detail": self.detail,
        }


@dataclass
class _Domain:
    name: str
    trust_domain: str
    authorities: dict[str, Authority] = field(default_factory=dict)  # by sha256


def _domains(bodies: Iterable[Body]) -> dict[str, _Domain]:
    """TrustDomains by SPIFFE trust domain name (the Secret annotation holds that)."""
    out: dict[str, _Domain] = {}
    for body in bodies:
        spec = body.get("spec") or {}
        domain = _Domain(name_of(body), str(spec.get("trustDomain") or ""))
        for raw in (body.get("status") or {}).get("authorities") or ():
            sha = str(raw.get("sha256") or "").lower()
            if sha:
                domain.authorities[sha] = Authority(
                    str(raw.get("serial") or ""), str(raw.get("state") or ""), sha
                )
        out[domain.trust_domain] = domain
    return out


def _bundles(bodies: Iterable[Body]) -> dict[str, Body]:
    return {namespace_of(b): b for b in bodies if name_of(b) == BUNDLE_CONFIGMAP and is_managed(b)}


class _BundleCache:
    def __init__(self, bodies: Iterable[Body]) -> None:
        self.bodies = _bundles(bodies)
        self.parsed: dict[tuple[str, str], tuple[list[x509.Certificate], set[tuple[Any, int]]]] = {}

    def get(self, namespace: str, trust_domain: str) -> tuple[list[x509.Certificate], set[Any]]:
        key = (namespace, trust_domain)
        if key not in self.parsed:
            data = (self.bodies.get(namespace) or {}).get("data") or {}
            anchors = load_pem_certs(data.get(f"{trust_domain}.pem"))
            revoked: set[tuple[Any, int]] = set()
            for crl in load_pem_crls(data.get(f"{trust_domain}.crl.pem")):
                revoked.update((crl.issuer, entry.serial_number) for entry in crl)
            self.parsed[key] = (anchors, revoked)
        return self.parsed[key]


def _identity_index(bodies: Iterable[Body]) -> dict[tuple[str, str], Body]:
    return {(namespace_of(b), name_of(b)): b for b in bodies}


def _pod_column(secret: Body) -> str:
    refs = owner_refs(secret)
    for ref in refs:
        if ref.kind == "Pod":
            return ref.name
    for ref in refs:
        if ref.kind == "WorkloadIdentity":
            return SHARED
    return "-"


def _leaf_facts(secret: Body) -> tuple[x509.Certificate | None, str]:
    chain = secret_bytes(secret, "tls.crt")
    if not chain:
        return None, "tls.crt is missing"
    certs = load_pem_certs(chain)
    if not certs:
        return None, "tls.crt does not hold a readable PEM certificate"
    return certs[0], ""


def _spiffe_of(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return ""
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if len(uris) == 1 else ""


def build_rows(
    secrets: Sequence[Body],
    identities: Sequence[Body],
    domains: Sequence[Body],
    bundles: Sequence[Body],
    now: datetime,
    *,
    operator_namespace: str = OPERATOR_NAMESPACE,
) -> list[InventoryRow]:
    """Every issued certificate: Secrets labelled managed-by=trustwarden that carry the
    ``trustwarden.io/identity`` label, outside the operator namespace; sorted by namespace,
    identity, pod and Secret name."""
    by_td = _domains(domains)
    wids = _identity_index(identities)
    bundle_cache = _BundleCache(bundles)
    rows: list[InventoryRow] = []
    for secret in secrets:
        labels = labels_of(secret)
        namespace = namespace_of(secret)
        identity = labels.get(IDENTITY_LABEL)
        if not is_managed(secret) or identity is None or namespace == operator_namespace:
            continue
        rows.append(_row(secret, namespace, identity, wids, by_td, bundle_cache, now))
    rows.sort(key=lambda r: (r.namespace, r.identity, r.pod, r.secret))
    return rows


def build_pod_certificate_rows(
    requests: Sequence[Body],
    identities: Sequence[Body],
    domains: Sequence[Body],
    bundles: Sequence[Body],
    now: datetime,
) -> list[InventoryRow]:
    """Every certificate trustwarden issued through a PodCertificateRequest (Kubernetes 1.37+):
    the request's status holds the chain, its spec the pod. A request refreshed by a newer one
    shows as renewing until the API server cleans it up."""
    by_td = _domains(domains)
    wids = _identity_index(identities)
    bundle_cache = _BundleCache(bundles)
    rows: list[InventoryRow] = []
    for request in requests:
        spec = request.get("spec") or {}
        status = request.get("status") or {}
        if not str(spec.get("signerName") or "").startswith(SIGNER_PREFIX):
            continue
        issued = condition(request, "Issued")
        if issued is None or not status.get("certificateChain"):
            continue
        match = ISSUED_FOR.search(str(issued.get("message") or ""))
        namespace = namespace_of(request)
        identity = match.group(2) if match and match.group(1) == namespace else ""
        wid = wids.get((namespace, identity))
        certs = load_pem_certs(str(status["certificateChain"]))
        leaf = certs[0] if certs else None
        spiffe_id = _spiffe_of(leaf) if leaf is not None else ""
        trust_domain = ""
        if spiffe_id:
            try:
                trust_domain = SpiffeID.parse(spiffe_id).trust_domain
            except PKIError:
                trust_domain = ""
        anchors, revoked = (
            bundle_cache.get(namespace, trust_domain) if trust_domain else ([], set())
        )
        refresh = parse_time(status.get("beginRefreshAt"))
        row = InventoryRow(
            namespace=namespace,
            secret=PCR_PREFIX + name_of(request),
            identity=identity or "-",
            pod=str(spec.get("podName") or "-"),
            spiffe_id=spiffe_id,
            owner=str(((wid or {}).get("spec") or {}).get("owner") or ""),
            trust_domain=trust_domain,
            authority=_authority(leaf, {}, by_td.get(trust_domain), anchors) if leaf else None,
            serial=serial_hex(leaf.serial_number) if leaf is not None else "",
            not_before=leaf.not_valid_before_utc if leaf is not None else None,
            not_after=leaf.not_valid_after_utc if leaf is not None else None,
            time_left=leaf.not_valid_after_utc - now if leaf is not None else None,
            next_renewal=refresh,
            state=State.invalid,
            detail="status.certificateChain is unreadable",
        )
        if leaf is not None:
            state, detail = _state(leaf, wid, refresh, revoked, now)
            row = replace(row, state=state, detail=detail)
        rows.append(row)
    rows.sort(key=lambda r: (r.namespace, r.identity, r.pod, r.secret))
    return rows


def _row(
    secret: Body,
    namespace: str,
    identity: str,
    wids: Mapping[tuple[str, str], Body],
    by_td: Mapping[str, _Domain],
    bundle_cache: _BundleCache,
    now: datetime,
) -> InventoryRow:
    annotations = annotations_of(secret)
    wid = wids.get((namespace, identity))
    owner = str(
        ((wid or {}).get("spec") or {}).get("owner") or annotations.get(OWNER_ANNOTATION) or ""
    )
    leaf, problem = _leaf_facts(secret)
    spiffe_id = _spiffe_of(leaf) if leaf is not None else ""
    spiffe_id = spiffe_id or str(annotations.get(SPIFFE_ID_ANNOTATION) or "")
    trust_domain = str(annotations.get(TRUST_DOMAIN_ANNOTATION) or "")
    if not trust_domain and spiffe_id:
        try:
            trust_domain = SpiffeID.parse(spiffe_id).trust_domain
        except PKIError:
            trust_domain = ""
    renew_at = parse_time(annotations.get(RENEW_AT_ANNOTATION))
    anchors, revoked = bundle_cache.get(namespace, trust_domain) if trust_domain else ([], set())
    authority = _authority(leaf, annotations, by_td.get(trust_domain), anchors)
    serial = ""
    not_before = not_after = None
    time_left = None
    if leaf is None:
        state, detail = State.invalid, problem
    else:
        serial = serial_hex(leaf.serial_number)
        not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        time_left = not_after - now
        state, detail = _state(leaf, wid, renew_at, revoked, now)
    return InventoryRow(
        namespace=namespace,
        secret=name_of(secret),
        identity=identity,
        pod=_pod_column(secret),
        spiffe_id=spiffe_id,
        owner=owner,
        trust_domain=trust_domain,
        authority=authority,
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        time_left=time_left,
        next_renewal=renew_at,
        state=state,
        detail=detail,
    )


def _state(
    leaf: x509.Certificate,
    wid: Body | None,
    renew_at: datetime | None,
    revoked: set[tuple[Any, int]],
    now: datetime,
) -> tuple[State, str]:
    """expired > revoked > failed > renewing > ok: the first that applies."""
    not_after = leaf.not_valid_after_utc
    degraded = condition(wid, "Degraded") if wid is not None else None
    if not_after <= now:
        return State.expired, f"expired {human_duration(now - not_after)} ago"
    if (leaf.issuer, leaf.serial_number) in revoked:
        return State.revoked, "serial listed in the namespace bundle's CRL; not replaced yet"
    if degraded is not None and degraded.get("status") == "True":
        reason, message = degraded.get("reason", ""), degraded.get("message", "")
        return State.failed, f"{reason}: {message}" if message else str(reason)
    if renew_at is not None and now >= renew_at:
        return State.renewing, f"renewal due since {rfc3339(renew_at)}"
    return State.ok, ""


def _authority(
    leaf: x509.Certificate | None,
    annotations: Mapping[str, str],
    domain: _Domain | None,
    anchors: Sequence[x509.Certificate],
) -> Authority | None:
    """The issuing authority: the ``trustwarden.io/issuer`` annotation (SHA-256 of the issuer
    certificate) mapped to the TrustDomain's status; without the annotation, the bundle
    anchor that issued the leaf."""
    sha = str(annotations.get(ISSUER_ANNOTATION) or "").lower()
    if not sha and leaf is not None:
        for anchor in anchors:
            if anchor.subject == leaf.issuer and signed_by(leaf, anchor):
                sha = sha256_hex(anchor)
                break
    if not sha:
        return None
    if domain is not None and sha in domain.authorities:
        return domain.authorities[sha]
    return Authority(serial="", state="unknown", sha256=sha)


# --------------------------------------------------------------------------- filters


def filter_rows(
    rows: Iterable[InventoryRow],
    now: datetime,
    *,
    expiring_within: timedelta | None = None,
    owner: str | None = None,
) -> list[InventoryRow]:
    """``expiring_within``: notAfter within that long from now (expired ones included,
    unreadable ones not).
    ``owner``: exact match, or a shell pattern (``team-*``), case-insensitive."""
    out = []
    for row in rows:
        if expiring_within is not None and (
            row.not_after is None or row.not_after - now > expiring_within
        ):
            continue
        if owner is not None and not fnmatch.fnmatchcase(row.owner.lower(), owner.lower()):
            continue
        out.append(row)
    return out


def exit_code(rows: Iterable[InventoryRow]) -> int:
    return 1 if any(r.state in ALERT_STATES for r in rows) else 0


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class Summary:
    total: int
    counts: dict[str, int]
    soonest: InventoryRow | None

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "states": self.counts,
            "soonestExpiry": None
            if self.soonest is None
            else {
                "namespace": self.soonest.namespace,
                "secret": self.soonest.secret,
                "notAfter": rfc3339(self.soonest.not_after),
            },
        }


def summarize(rows: Sequence[InventoryRow], now: datetime) -> Summary:
    counts = {s.value: 0 for s in State}
    for row in rows:
        counts[row.state.value] += 1
    live = [r for r in rows if r.not_after is not None and r.not_after > now]
    soonest = min(live, key=lambda r: (r.not_after, r.namespace, r.secret)) if live else None
    return Summary(len(rows), counts, soonest)


def summary_line(summary: Summary, now: datetime) -> str:
    """Counts by state, then (on a second line) the soonest expiry among live certificates."""
    noun = "certificate" if summary.total == 1 else "certificates"
    states = ", ".join(f"{n} {s}" for s, n in summary.counts.items() if n)
    line = f"{summary.total} {noun}" + (f": {states}" if states else "")
    soonest = summary.soonest
    if soonest is not None and soonest.not_after is not None:
        line += (
            f"\nsoonest expiry: {soonest.namespace}/{soonest.secret} in "
            f"{human_duration(soonest.not_after - now)} ({rfc3339(soonest.not_after)})"
        )
    return line


# --------------------------------------------------------------------------- output


NARROW_COLUMNS = (
    Column("NAMESPACE", min_width=9),
    Column("IDENTITY", min_width=8),
    Column("POD", min_width=8, middle=True),
    Column("OWNER", min_width=8),
    Column("STATE"),
    Column("EXPIRES"),
    Column("RENEWAL"),
)
WIDE_COLUMNS = (
    Column("NAMESPACE"),
    Column("IDENTITY"),
    Column("POD"),
    Column("SECRET"),
    Column("SPIFFE-ID"),
    Column("OWNER"),
    Column("TRUST-DOMAIN"),
    Column("AUTHORITY"),
    Column("SERIAL"),
    Column("NOT-BEFORE"),
    Column("NOT-AFTER"),
    Column("EXPIRES-IN"),
    Column("NEXT-RENEWAL"),
    Column("STATE"),
)


def _expires_in(row: InventoryRow) -> str:
    if row.time_left is None:
        return "-"
    if row.time_left <= timedelta(0):
        return f"{human_duration(-row.time_left)} ago"
    return human_duration(row.time_left)


def _renews_in(row: InventoryRow, now: datetime) -> str:
    if row.next_renewal is None or row.state in (State.expired, State.invalid):
        return "-"
    if row.next_renewal <= now:
        return "due"
    return human_duration(row.next_renewal - now)


def _authority_cell(row: InventoryRow, width: int | None) -> str:
    if row.authority is None:
        return "-"
    serial = row.authority.serial or f"sha256:{row.authority.sha256[:12]}"
    if width is not None:
        serial = truncate(serial, width)
    return f"{serial} ({row.authority.state})"


def format_table(
    rows: Sequence[InventoryRow],
    now: datetime,
    *,
    wide: bool = False,
    width: int | None = 80,
) -> str:
    """The table and the summary line. Narrow (default): fits ``width`` columns by shortening
    namespace, identity, pod (in the middle) and owner. Wide: every column, nothing cut."""
    if wide:
        body = [
            [
                r.namespace,
                r.identity,
                r.pod,
                r.secret,
                r.spiffe_id or "-",
                r.owner or "-",
                r.trust_domain or "-",
                _authority_cell(r, None),
                r.serial or "-",
                rfc3339(r.not_before) or "-",
                rfc3339(r.not_after) or "-",
                _expires_in(r),
                rfc3339(r.next_renewal) or "-",
                r.state.value,
            ]
            for r in rows
        ]
        table = render_table(WIDE_COLUMNS, body, None)
    else:
        body = [
            [
                r.namespace,
                r.identity,
                r.pod,
                r.owner or "-",
                r.state.value,
                _expires_in(r),
                _renews_in(r, now),
            ]
            for r in rows
        ]
        table = render_table(NARROW_COLUMNS, body, width)
    return table + summary_line(summarize(rows, now), now) + "\n"


def format_json(rows: Sequence[InventoryRow], now: datetime) -> str:
    document = {
        "apiVersion": API_VERSION,
        "kind": "CertificateInventory",
        "generatedAt": rfc3339(now),
        "summary": summarize(rows, now).to_json(),
        "items": [r.to_json() for r in rows],
    }
    return json.dumps(document, indent=2) + "\n"


CSV_FIELDS = (
    "namespace",
    "secret",
    "workloadIdentity",
    "pod",
    "spiffeID",
    "owner",
    "trustDomain",
    "authoritySerial",
    "authorityState",
    "authoritySha256",
    "serial",
    "notBefore",
    "notAfter",
    "secondsLeft",
    "nextRenewal",
    "state",
    "detail",
)


def format_csv(rows: Sequence[InventoryRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in rows:
        data = r.to_json()
        authority = data.pop("authority") or {}
        data["authoritySerial"] = authority.get("serial", "")
        data["authorityState"] = authority.get("state", "")
        data["authoritySha256"] = authority.get("sha256", "")
        writer.writerow(["" if data[f] is None else data[f] for f in CSV_FIELDS])
    return buffer.getvalue()
