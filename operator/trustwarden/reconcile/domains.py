"""Per-TrustDomain runtime: its authorities, anchors, revocations and CRLs.

Persistence format (written by the engine through the KubePort):
- CA Secret `trustwarden-ca-<name>` in the operator namespace: `state.json` (authority records,
  no keys) plus `<id>.crt` / `<id>.key` per authority. Never labelled with anything a user
  selector would likely pick, never owned by the TrustDomain (deleting it must not lose keys).
- Revocations ConfigMap `trustwarden-revocations-<name>` in the operator namespace:
  `revoked.json`, the serials still inside their validity, so CRLs survive restarts.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustwarden.names import (
    CA_SECRET_PREFIX,
    REVOCATIONS_PREFIX,
)
from trustwarden.pki import crl as crl_mod
from trustwarden.pki import rotation
from trustwarden.pki._clock import from_rfc3339, to_rfc3339
from trustwarden.pki.ca import Authority, authority_from_parts
from trustwarden.pki.errors import PKIError
from trustwarden.pki.keys import load_private_key, private_key_to_pem
from trustwarden.reconcile.model import CAKind, TrustDomainSpec

CRL_VALIDITY = timedelta(hours=24)
CRL_REFRESH = timedelta(hours=12)
# A ConfigMap holds at most 1 MiB (etcd's object limit). The revocations ConfigMap and every
# namespace bundle carry the CRL; the revocation list must never reach that limit unnoticed.
CONFIGMAP_LIMIT = 1024 * 1024
# Degrade visibly (condition, Event, metric) from half of it on; from 80 % the CRL copy kept in
# the revocations ConfigMap (a restart optimisation) is dropped to leave room for the list.
REVOCATIONS_WARN_FRACTION = 0.5
REVOCATIONS_TRIM_FRACTION = 0.8


@dataclass(frozen=True)
class RevocationLoad:
    """How full the revocation store of one domain is, in bytes of its largest ConfigMap."""

    entries: int
    stored_bytes: int  # the revocations ConfigMap's data
    bundle_bytes: int  # the CRL part of every namespace bundle
    by_namespace: Mapping[str, int]

    @property
    def fraction(self) -> float:
        return max(self.stored_bytes, self.bundle_bytes) / CONFIGMAP_LIMIT

    @property
    def degraded(self) -> bool:
        return self.fraction >= REVOCATIONS_WARN_FRACTION

    def message(self, domain: str) -> str:
        top = sorted(self.by_namespace.items(), key=lambda item: (-item[1], item[0]))[:3]
        holders = ", ".join(f"{ns or '<unknown>'} ({count})" for ns, count in top)
        return (
            f"TrustDomain {domain} holds {self.entries} revoked serial(s) still inside their "
            f"validity, {self.fraction:.0%} of the 1 MiB a ConfigMap can hold (most from: "
            f"{holders}). Revocation and bundle publishing stop working at 100 %: find why "
            "these namespaces delete so many pods, lower spec.policy.maxTTL so entries expire "
            "sooner, or limit pod churn with a ResourceQuota"
        )


def ca_secret_name(domain: str) -> str:
    return f"{CA_SECRET_PREFIX}{domain}"


def revocations_name(domain: str) -> str:
    return f"{REVOCATIONS_PREFIX}{domain}"


@dataclass
class Revocation:
    serial: int
    issuer_sha256: str
    not_after: datetime
    revoked_at: datetime
    reason: str
    namespace: str = ""  # whose certificate it was: shown when the list grows large

    def to_json(self) -> dict[str, str]:
        raw = {
            "serial": format(self.serial, "x"),
            "issuer": self.issuer_sha256,
            "notAfter": to_rfc3339(self.not_after),
            "revokedAt": to_rfc3339(self.revoked_at),
            "reason": self.reason,
        }
        if self.namespace:
            raw["namespace"] = self.namespace
        return raw

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Revocation:
        return cls(
            serial=int(str(raw["serial"]), 16),
            issuer_sha256=str(raw["issuer"]),
            not_after=from_rfc3339(str(raw["notAfter"]), "notAfter"),
            revoked_at=from_rfc3339(str(raw["revokedAt"]), "revokedAt"),
            reason=str(raw.get("reason", "")),
            namespace=str(raw.get("namespace", "")),
        )


@dataclass(frozen=True, slots=True)
class _AnchorsMemo:
    sources: tuple[object, ...]
    since: datetime
    until: datetime | None  # None: no expiry changes the answer
    certs: tuple[x509.Certificate, ...]

    def holds(self, sources: tuple[object, ...], now: datetime) -> bool:
        return (
            self.since <= now
            and (self.until is None or now < self.until)
            and all(a is b for a, b in zip(self.sources, sources, strict=True))
        )


@dataclass
class DomainRuntime:
    spec: TrustDomainSpec
    authorities: rotation.AuthoritySet | None = None
    external_anchors: tuple[x509.Certificate, ...] = ()
    revocations: dict[int, Revocation] = field(default_factory=dict)
    crl_number: int = 0
    crl_pem: bytes = b""
    crl_built_at: datetime | None = None
    crl_stale: bool = True
    crl_changed: bool = False  # rebuilt since last persisted: the engine stores it with revocations
    ca_ready: bool = False
    ca_reason: str = "Pending"
    ca_message: str = "the CA has not been loaded yet"
    # Public anchors of authorities whose keys were lost: trusted until they expire.
    orphan_anchors: tuple[x509.Certificate, ...] = ()
    revocations_exist: bool = False
    stored_revocations: dict[str, str] | None = None  # read at start, until authorities load
    rotation_handled: str | None = None  # the last `trustwarden.io/rotate` request acted on
    loaded: bool = False  # state was read from (or written to) the cluster at least once
    # The TrustDomain that owns this one's SPIFFE trust domain name, when that is another one:
    # this claim is then refused (it issues nothing and publishes nothing).
    conflict: str | None = None
    last_load: RevocationLoad | None = None  # as of the last stored revocation list
    # anchors() for the current sources, compared by identity (they are replaced, never
    # mutated), valid from when it was computed until the earliest notAfter among them:
    # every issuance asks for the anchors.
    _anchors_memo: _AnchorsMemo | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def trust_domain(self) -> str:
        return self.spec.trust_domain

    @property
    def issues(self) -> bool:
        return self.spec.ca_kind is not CAKind.EXTERNAL

    def active(self) -> Authority | None:
        if self.authorities is None:
            return None
        return self.authorities.active_authority

    def anchors(self, now: datetime) -> list[x509.Certificate]:
        sources = (self.spec, self.authorities, self.orphan_anchors, self.external_anchors)
        memo = self._anchors_memo
        if memo is None or not memo.holds(sources, now):
            certs = tuple(self._compute_anchors(now))
            until = (
                None  # external anchors are published as given, expired or not
                if self.spec.ca_kind is CAKind.EXTERNAL
                else min((c.not_valid_after_utc for c in certs), default=None)
            )
            memo = self._anchors_memo = _AnchorsMemo(sources, now, until, certs)
        return list(memo.certs)

    def _compute_anchors(self, now: datetime) -> list[x509.Certificate]:
        if self.spec.ca_kind is CAKind.EXTERNAL:
            return list(self.external_anchors)
        orphans = [c for c in self.orphan_anchors if c.not_valid_after_utc > now]
        if self.authorities is None:
            return orphans
        return list(self.authorities.anchors(now)) + orphans

    def cross_chain_pem(self) -> bytes:
        """The active authority's cross-certificate (PEM) for new leaves' chains, if any."""
        return self.authorities.cross_chain_pem if self.authorities is not None else b""

    def issuer_by_sha(self, sha: str) -> Authority | None:
        if self.authorities is None:
            return None
        for record in self.authorities.records:
            if record.authority.sha256 == sha:
                return record.authority
        return None

    # --- revocations and CRLs ---

    def revoke(
        self,
        serial: int,
        issuer_sha256: str,
        not_after: datetime,
        now: datetime,
        reason: str,
        *,
        namespace: str = "",
    ) -> bool:
        """Put `serial`, signed by the authority `issuer_sha256`, into this domain's CRL.

        An entry lives no longer than its issuer's own validity: nothing signed by it can be
        valid afterwards, whatever notAfter the caller was told. A serial of an authority this
        domain no longer holds is refused: no bundle trusts that authority any more, and no
        CRL could be signed for it."""
        issuer = self.issuer_by_sha(issuer_sha256)
        if issuer is None or serial in self.revocations:
            return False
        not_after = min(not_after, issuer.path_not_after)
        if not_after <= now:
            return False
        self.revocations[serial] = Revocation(
            serial, issuer_sha256, not_after, now, reason, namespace
        )
        self.crl_stale = True
        return True

    def bound_revocations(self) -> bool:
        """Bound every entry by its issuer's validity and drop those of authorities no longer
        held (entries stored by an earlier version were taken at their word)."""
        changed = False
        for serial, entry in list(self.revocations.items()):
            issuer = self.issuer_by_sha(entry.issuer_sha256)
            if issuer is None:
                del self.revocations[serial]
                changed = True
            elif entry.not_after > issuer.path_not_after:
                entry.not_after = issuer.path_not_after
                changed = True
        if changed:
            self.crl_stale = True
        return changed

    def revocations_by_namespace(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.revocations.values():
            counts[entry.namespace] = counts.get(entry.namespace, 0) + 1
        return counts

    def prune_revocations(self, now: datetime) -> bool:
        expired = [s for s, r in self.revocations.items() if r.not_after <= now]
        for serial in expired:
            del self.revocations[serial]
        if expired:
            self.crl_stale = True
        return bool(expired)

    def crl(self, now: datetime) -> bytes:
        """The CRLs of every issuing authority, concatenated; rebuilt only when needed."""
        if self.authorities is None:
            return b""
        due = self.crl_built_at is None or now - self.crl_built_at >= CRL_REFRESH
        if not (self.crl_stale or due):
            return self.crl_pem
        self.prune_revocations(now)
        self.crl_number += 1
        parts: list[bytes] = []
        for record in self.authorities.records:
            authority = record.authority
            if authority.not_after <= now:
                continue
            entries = [
                crl_mod.RevokedSerial(r.serial, r.not_after, r.revoked_at, r.reason)
                for r in self.revocations.values()
                if r.issuer_sha256 == authority.sha256
            ]
            parts.append(
                crl_mod.build_crl(
                    authority, entries, now, next_update=CRL_VALIDITY, crl_number=self.crl_number
                )
            )
        self.crl_pem = b"".join(parts)
        self.crl_built_at = now
        self.crl_stale = False
        self.crl_changed = True
        return self.crl_pem

    def _crl_authorities(self, now: datetime) -> str:
        if self.authorities is None:
            return ""
        return ",".join(
            sorted(r.sha256 for r in self.authorities.records if r.authority.not_after > now)
        )

    def revocation_load(self) -> RevocationLoad:
        listed = len(self.revocations_json())
        return RevocationLoad(
            entries=len(self.revocations),
            stored_bytes=listed + len(self.crl_pem),
            bundle_bytes=len(self.crl_pem),
            by_namespace=self.revocations_by_namespace(),
        )

    def revocations_data(self, now: datetime) -> dict[str, str]:
        """What the revocations ConfigMap holds: the revoked serials and the CRL built from them,
        so a restarted operator republishes the same CRL instead of rewriting every bundle.
        When the list grows large, the CRL copy is left out to keep room for the list."""
        listed = self.revocations_json()
        data = {"revoked.json": listed}
        room = len(listed) + len(self.crl_pem) < CONFIGMAP_LIMIT * REVOCATIONS_TRIM_FRACTION
        if room and self.crl_pem and self.crl_built_at is not None and not self.crl_stale:
            data["crl.pem"] = self.crl_pem.decode()
            data["crl-number"] = str(self.crl_number)
            data["crl-built-at"] = to_rfc3339(self.crl_built_at)
            data["crl-authorities"] = self._crl_authorities(now)
        self.crl_changed = False
        return data

    def reuse_stored_crl(self, data: Mapping[str, str], now: datetime) -> bool:
        """Adopt a persisted CRL if it still covers exactly the revoked serials and authorities."""
        pem, built = data.get("crl.pem"), data.get("crl-built-at")
        if not pem or not built or self.authorities is None:
            return False
        try:
            built_at = from_rfc3339(built, "crl-built-at")
            number = int(data.get("crl-number", "0"))
            blocks = [b for b in pem.split("-----END X509 CRL-----") if "BEGIN X509 CRL" in b]
            crls = [
                x509.load_pem_x509_crl((b + "-----END X509 CRL-----").strip().encode())
                for b in blocks
            ]
        except (ValueError, PKIError):
            return False
        listed = {r.serial_number for crl in crls for r in crl}
        wanted = {s for s, r in self.revocations.items() if r.not_after > now}
        fresh = now - built_at < CRL_REFRESH
        if (
            not fresh
            or listed != wanted
            or data.get("crl-authorities") != self._crl_authorities(now)
        ):
            return False
        self.crl_pem, self.crl_built_at, self.crl_number = pem.encode(), built_at, number
        self.crl_stale = False
        return True

    def revocations_json(self) -> str:
        items = sorted(self.revocations.values(), key=lambda r: (r.not_after, r.serial))
        return json.dumps([r.to_json() for r in items], separators=(",", ":"))

    def load_revocations(self, text: str) -> None:
        for raw in json.loads(text or "[]"):
            revocation = Revocation.from_json(raw)
            self.revocations[revocation.serial] = revocation
        self.crl_stale = True


# --- CA Secret encoding ---


def _key_id(authority: Authority) -> str:
    return authority.sha256[:16]


def encode_authorities(aset: rotation.AuthoritySet) -> dict[str, str]:
    """Secret `data` (base64) for an authority set: records as JSON, certificates and keys."""
    data: dict[str, bytes] = {}
    records = []
    for record in aset.records:
        kid = _key_id(record.authority)
        records.append({"id": kid, **rotation.record_to_dict(record)})
        data[f"{kid}.crt"] = record.authority.certificate_pem + record.authority.intermediates_pem
        data[f"{kid}.key"] = private_key_to_pem(record.authority.private_key)
        if not record.authority.is_root:
            data[f"{kid}.root.crt"] = record.authority.root.public_bytes(Encoding.PEM)
        if record.cross_certificate is not None:
            data[f"{kid}.cross.crt"] = record.cross_certificate.public_bytes(Encoding.PEM)
    data["state.json"] = json.dumps(records, separators=(",", ":"), sort_keys=True).encode()
    return {k: base64.b64encode(v).decode() for k, v in sorted(data.items())}


def decode_authorities(secret_data: Mapping[str, str], now: datetime) -> rotation.AuthoritySet:
    """The inverse of encode_authorities; raises on anything malformed (the caller recovers)."""
    raw = {k: base64.b64decode(v, validate=True) for k, v in secret_data.items()}
    records = []
    for entry in json.loads(raw["state.json"]):
        kid = str(entry["id"])
        authority = authority_from_parts(
            raw[f"{kid}.crt"],
            load_private_key(raw[f"{kid}.key"], source=f"CA Secret key {kid}"),
            raw.get(f"{kid}.root.crt"),
            source=f"CA Secret authority {kid}",
        )
        cross_pem = raw.get(f"{kid}.cross.crt")
        records.append(
            rotation.record_from_dict(
                {k: v for k, v in entry.items() if k != "id"},
                authority,
                cross_certificate=x509.load_pem_x509_certificate(cross_pem) if cross_pem else None,
            )
        )
    return rotation.AuthoritySet(tuple(records))
