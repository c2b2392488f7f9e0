"""The issuance ledger: every unexpired serial, by namespace and owner.

Why: a pod's Secret is owned by the pod, so the garbage collector deletes it within seconds of
the pod, even while the operator is down. Without a record kept elsewhere, a serial issued to a
pod deleted during an outage would never reach the CRL. The ledger is that record; on resume
every serial whose owner is gone is revoked. It also lets pod deletion revoke the superseded
serials of earlier renewals, which are still inside their validity.

Stored in the operator namespace in a few shards, ConfigMaps `<base>.<i>-of-<n>` (for the
Secret path `trustwarden-ledger.3-of-16`; a namespace name has no dot, so no shard name can
be a namespace's), each holding the namespaces whose crc32 falls in it, as zlib-compressed
lines in binaryData. They are written in batches, only the shards that changed, so a burst
across many namespaces costs a few writes per flush instead of one per namespace. The shard
count doubles when the entries outgrow SHARD_ENTRIES per shard (a ConfigMap holds 1 MiB), and
never shrinks by itself. Ledgers of the earlier format, one ConfigMap
`trustwarden-ledger-<namespace>` per namespace, and shards of another count are read, written
again as the current shards, and deleted once those are stored.
"""

from __future__ import annotations

import base64
import re
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from trustwarden.names import LEDGER_PREFIX

LEDGER_KEY = "issued.z"
DEFAULT_SHARDS = 16
# About 110 bytes per entry once compressed: 4,000 per shard keep a shard near 450 KiB.
SHARD_ENTRIES = 4000


def ledger_name(namespace: str) -> str:
    """The per-namespace ConfigMap of the earlier format (read, migrated, deleted)."""
    return f"{LEDGER_PREFIX}{namespace}"


def shard_of(namespace: str, shards: int) -> int:
    return zlib.crc32(namespace.encode()) % shards


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
    """Entries by namespace in memory; persisted as shards named from `prefix`
    (`trustwarden-ledger-` gives `trustwarden-ledger.<i>-of-<n>`)."""

    def __init__(self, prefix: str = LEDGER_PREFIX, shards: int = DEFAULT_SHARDS) -> None:
        if shards < 1:
            raise ValueError(f"a ledger needs at least one shard, got {shards}")
        self.prefix = prefix
        self.base = prefix.rstrip("-")
        self._shard_name = re.compile(re.escape(self.base) + r"\.(\d+)-of-(\d+)")
        self.shards = shards
        self.entries: dict[str, dict[int, LedgerEntry]] = defaultdict(dict)
        self.members: dict[str, set[str]] = defaultdict(set)  # shard name -> its namespaces
        self.dirty: set[str] = set()  # shard names to write
        self.stored: set[str] = set()  # shard names whose ConfigMap exists
        self.legacy: set[str] = set()  # ConfigMaps of another layout, deleted once migrated

    # ------------------------------------------------------------------ naming

    def shard_name(self, index: int) -> str:
        return f"{self.base}.{index}-of-{self.shards}"

    def name_for(self, namespace: str) -> str:
        """The shard ConfigMap that holds `namespace`'s entries."""
        return self.shard_name(shard_of(namespace, self.shards))

    def owns(self, name: str) -> bool:
        """Whether a ConfigMap name is one of this ledger's (either layout)."""
        return self._shard_name.fullmatch(name) is not None or name.startswith(self.prefix)

    def _touch(self, namespace: str) -> None:
        name = self.name_for(namespace)
        self.members[name].add(namespace)
        self.dirty.add(name)

    # ------------------------------------------------------------------ entries

    def record(self, namespace: str, entry: LedgerEntry) -> None:
        self.entries[namespace][entry.serial] = entry
        self._touch(namespace)

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

    def owns_any(self, namespace: str, owner_uid: str) -> bool:
        bucket = self.entries.get(namespace)
        return bucket is not None and any(e.owner_uid == owner_uid for e in bucket.values())

    def owned_by(self, namespace: str, owner_uid: str) -> list[LedgerEntry]:
        return [e for e in self.entries.get(namespace, {}).values() if e.owner_uid == owner_uid]

    def forget(self, namespace: str, serials: Iterable[int]) -> None:
        bucket = self.entries.get(namespace)
        if not bucket:
            return
        for serial in serials:
            if bucket.pop(serial, None) is not None:
                self._touch(namespace)

    def prune(self, now: datetime) -> None:
        """Drop expired entries, and grow the shard count if the entries outgrew it."""
        for namespace, bucket in self.entries.items():
            expired = [s for s, e in bucket.items() if e.not_after <= now]
            for serial in expired:
                del bucket[serial]
            if expired:
                self._touch(namespace)
        self._grow()

    def all(self) -> Iterable[tuple[str, LedgerEntry]]:
        for namespace, bucket in self.entries.items():
            for entry in bucket.values():
                yield namespace, entry

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self.entries.values())

    def _grow(self) -> None:
        shards = self.shards
        while len(self) > SHARD_ENTRIES * shards:
            shards *= 2
        if shards != self.shards:
            self._relayout(shards)

    def _relayout(self, shards: int) -> None:
        """Every stored shard of the old count becomes legacy; every namespace is written
        again into the shards of the new count."""
        self.legacy |= self.stored
        self.stored = set()
        self.dirty = set()
        self.members = defaultdict(set)
        self.shards = shards
        for namespace, bucket in self.entries.items():
            if bucket:
                self._touch(namespace)

    # ------------------------------------------------------------------ persistence

    def holds(self, name: str) -> bool:
        """Whether shard `name` has any entry to store."""
        return any(self.entries.get(ns) for ns in self.members.get(name, ()))

    def dirty_shards(self) -> list[str]:
        """The shards changed since their last write (mark each clean as it is written)."""
        return sorted(self.dirty)

    def mark_clean(self, name: str) -> None:
        self.dirty.discard(name)

    def mark_dirty(self, name: str) -> None:
        self.dirty.add(name)

    def is_stored(self, name: str) -> bool:
        return name in self.stored

    def mark_stored(self, name: str, stored: bool = True) -> None:
        if stored:
            self.stored.add(name)
        else:
            self.stored.discard(name)

    def encode(self, name: str) -> str:
        lines = sorted(
            f"{ns} {e.line()}"
            for ns in self.members.get(name, ())
            for e in self.entries.get(ns, {}).values()
        )
        return base64.b64encode(zlib.compress("\n".join(lines).encode(), 6)).decode()

    def load(self, name: str, encoded: str) -> None:
        """Read one stored ConfigMap of either layout (raises ValueError or zlib.error on
        garbage). Anything not in the current layout is written again and then deleted."""
        text = zlib.decompress(base64.b64decode(encoded)).decode() if encoded else ""
        match = self._shard_name.fullmatch(name)
        if match is not None and int(match.group(2)) > self.shards:
            self._relayout(int(match.group(2)))  # adopt the larger count found stored
        if match is None:  # the earlier format: one namespace, lines without it
            namespace = name.removeprefix(self.prefix)
            parsed = [
                (namespace, LedgerEntry.parse(line)) for line in text.splitlines() if line.strip()
            ]
        else:
            parsed = []
            for line in text.splitlines():
                if line.strip():
                    namespace, rest = line.split(" ", 1)
                    parsed.append((namespace, LedgerEntry.parse(rest)))
        for namespace, entry in parsed:
            self.entries[namespace].setdefault(entry.serial, entry)
        if match is not None and int(match.group(2)) == self.shards:
            self.stored.add(name)
            for namespace, _ in parsed:
                self.members[name].add(namespace)
        else:
            self.legacy.add(name)
            for namespace, _ in parsed:
                self._touch(namespace)

    def take_legacy(self) -> list[str]:
        """ConfigMaps of another layout that may go now: every shard is stored."""
        if self.dirty:
            return []
        legacy, self.legacy = sorted(self.legacy), set()
        return legacy
