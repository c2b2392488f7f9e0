"""When a leaf moves to a new authority: spread a scheduled hand-over, pace an emergency one.

A *scheduled* activation (the old authority reached 5/6 of its life) needs no re-issue at all:
the workload TTL is capped at CA lifetime / 6, so every leaf of the old authority expires before
that authority does, and the old root stays in the bundles until then. Each leaf moves at its
own jittered renew point, and the renewal rate through the rollover stays what it was.

An *emergency* rotation (`trustwarden ca rotate`, the old authority retired before its time)
re-issues every leaf now, but at most `rate` per second, so the API server is not pushed into
429s for every other client.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime, timedelta

from trustwarden.pki.issue import LeafFacts
from trustwarden.pki.rotation import AuthorityRecord, AuthoritySet, AuthorityState


def issuing_record(aset: AuthoritySet, facts: LeafFacts) -> AuthorityRecord | None:
    for record in aset.records:
        if facts.issued_by(record.authority):
            return record
    return None


def retired_on_schedule(record: AuthorityRecord) -> bool:
    """The authority was superseded at (or after) its planned 5/6 point, not forced out."""
    return (
        record.state is AuthorityState.Retired
        and record.retired_at is not None
        and record.retired_at >= record.successor_activate_at
        and record.authority.not_after > record.retired_at
    )


class HandoverPacer:
    """Decides when a leaf whose issuer is no longer active is re-issued.

    `defer` returns None to re-issue now, or the time to come back. An emergency re-issue gets
    a slot at most `rate` per second (its key keeps its slot until it is used or forgotten).
    """

    def __init__(self, rate: float | None) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"--reissue-rate must be > 0 per second, got {rate}")
        self.rate = rate
        self._next: datetime | None = None
        self._slots: dict[Hashable, datetime] = {}

    def defer(
        self,
        key: Hashable,
        aset: AuthoritySet | None,
        facts: LeafFacts,
        renew_point: datetime,
        now: datetime,
    ) -> datetime | None:
        record = issuing_record(aset, facts) if aset is not None else None
        if (
            record is not None
            and retired_on_schedule(record)
            and facts.not_after <= record.authority.not_after
        ):
            # scheduled: the leaf stays valid under a trusted root until its own renewal
            self._slots.pop(key, None)
            return renew_point if renew_point > now else None
        return self._paced(key, now)

    def _paced(self, key: Hashable, now: datetime) -> datetime | None:
        if self.rate is None:
            return None
        slot = self._slots.get(key)
        if slot is None:
            slot = max(now, self._next or now)
            self._next = slot + timedelta(seconds=1 / self.rate)
            if slot <= now:
                return None
            self._slots[key] = slot
            return slot
        if now >= slot:
            del self._slots[key]
            return None
        return slot

    def forget(self, key: Hashable) -> None:
        self._slots.pop(key, None)

    def __len__(self) -> int:
        return len(self._slots)
