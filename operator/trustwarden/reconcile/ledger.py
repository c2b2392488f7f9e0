"""The issuance ledger: every unexpired serial, by namespace and owner.

Why: a pod's Secret is owned by the pod, so the garbage collector deletes it within seconds of
the pod, even while the operator is down. Without a record kept elsewhere, a serial issued to a
pod deleted during an outage would never reach the CRL. The ledger is that record; on resume
every serial whose owner is gone is revoked. It also lets pod deletion revoke the superseded
serials of earlier renewals, which are still inside their validity.

Stored per workload namespace in the operator namespace (ConfigMap
`trustwarden-ledger-<namespace>`, zlib-compressed lines in binaryData) and written in batches,
so it costs a fraction of a write per certificate.
"""

from __future__ import annotations

import base64
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from trustwarden.names import (
    LEDGER_PREFIX,
)

LEDGER_KEY = "issued.z"


def ledger_name(namespace: str) -> str:
    return f"{LEDGER_PREFIX}{namespace}"


@dataclass(frozen=True)
class LedgerEntry:
    serial: int
    owner_uid: str
    not_after: datetime
    domain: str  # TrustDomain object name
    issuer_sha256: str

    def line(self) -> str:
        return f"{self.serial:x} {self.owner_uid} {int(self.not_after.timestamp())} {self.domain} {self.issuer_sha256}"

    @classmethod
    def parse(cls, line: str) -> LedgerEntry:
        serial, owner, not_after, domain, issuer = line.split(" ")
        return cls(
            int(serial, 16), owner, datetime.fromtimestamp(int(not_after), UTC), domain, issuer
        )


class Ledger:
    def __init__(self) -> None:
        self.entries: dict[str, dict[int, LedgerEntry]] = defaultdict(dict)
        self.dirty: set[str] = set()
        self.stored: set[str] = set()  # namespaces whose ConfigMap exists

    def record(self, namespace: str, entry: LedgerEntry) -> None:
        self.entries[namespace][entry.serial] = entry
        self.dirty.add(namespace)

    def entry(self, namespace: str, serial: int) -> LedgerEntry | None:
        """What trustwarden recorded when it issued `serial` into `namespace`, if it did."""
        bucket = self.entries.get(namespace)
        return bucket.get(serial) if bucket else None

    def issued_to(
        self, namespace: str, serial: int, owner_uids: Iterable[str]
    ) -> LedgerEntry | None:
        """The entry of `serial` if trustwarden issued it in `namespace` to one of `owner_uids`:
        the only evidence that a certificate found in a Secret is that owner's."""
        entry = self.entry(namespace, serial)
        if entry is None or entry.owner_uid not in owner_uids:
            return None
        return entry

    def owned_by(self, namespace: str, owner_uid: str) -> list[LedgerEntry]:
        return [e for e in self.entries.get(namespace, {}).values() if e.owner_uid == owner_uid]

    def forget(self, namespace: str, serials: Iterable[int]) -> None:
        bucket = self.entries.get(namespace)
        if not bucket:
            return
        for serial in serials:
            if bucket.pop(serial, None) is not None:
                self.dirty.add(namespace)

    def prune(self, now: datetime) -> None:
        for namespace, bucket in self.entries.items():
            expired = [s for s, e in bucket.items() if e.not_after <= now]
            for serial in expired:
                del bucket[serial]
            if expired:
                self.dirty.add(namespace)

    def all(self) -> Iterable[tuple[str, LedgerEntry]]:
        for namespace, bucket in self.entries.items():
            for entry in bucket.values():
                yield namespace, entry

    def holds(self, namespace: str) -> bool:
        """Whether any serial of `namespace` is recorded."""
        return bool(self.entries.get(namespace))

    def dirty_namespaces(self) -> list[str]:
        """The namespaces changed since their last write (mark each clean as it is written)."""
        return sorted(self.dirty)

    def mark_clean(self, namespace: str) -> None:
        self.dirty.discard(namespace)

    def mark_dirty(self, namespace: str) -> None:
        self.dirty.add(namespace)

    def is_stored(self, namespace: str) -> bool:
        return namespace in self.stored

    def mark_stored(self, namespace: str, stored: bool = True) -> None:
        if stored:
            self.stored.add(namespace)
        else:
            self.stored.discard(namespace)

    def encode(self, namespace: str) -> str:
        lines = "\n".join(sorted(e.line() for e in self.entries.get(namespace, {}).values()))
        return base64.b64encode(zlib.compress(lines.encode(), 6)).decode()

    def load(self, namespace: str, encoded: str) -> None:
        text = zlib.decompress(base64.b64decode(encoded)).decode() if encoded else ""
        bucket = self.entries[namespace]
        for line in text.splitlines():
            if line.strip():
                entry = LedgerEntry.parse(line)
                bucket.setdefault(entry.serial, entry)
        self.stored.add(namespace)
