"""Typed work keys: what the DeadlineScheduler holds and the engine routes to a controller.

Every key is a tuple whose first item is its kind, so keys compare, hash and print as plain
tuples (the scheduler, the failure map and the logs need nothing more), while the code names
what it schedules: `IdentityKey(ns, name)` rather than `("wid", ns, name)`. They declare
empty `__slots__`: no instance dict pointer in the key the scheduler holds for every pod.

A TrustDomain has two keys: `DomainKey` is its work, `DomainStatusKey` its status, which
shares the (kind, namespace, name) shape of every status key (TrustDomains have no namespace).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Self

StatusKey = tuple[str, str, str]


class DomainKey(tuple[str, str]):
    """A TrustDomain's CA, rotation schedule, CRL refresh and secretRef polling."""

    __slots__ = ()

    def __new__(cls, name: str) -> Self:
        return super().__new__(cls, ("td", name))


class _Namespaced(tuple[str, str, str]):
    __slots__ = ()
    KIND = ""

    def __new__(cls, namespace: str, name: str) -> Self:
        return super().__new__(cls, (cls.KIND, namespace, name))


class IdentityKey(_Namespaced):
    """A WorkloadIdentity (Shared: its Secret; PerPod: fan out to its pods); also its status."""

    __slots__ = ()

    KIND = "wid"


class PodKey(_Namespaced):
    """One pod's SVID."""

    __slots__ = ()

    KIND = "pod"


class ReleaseKey(_Namespaced):
    """A deleted Secret our finalizer holds: let it go once its revocations are stored."""

    __slots__ = ()

    KIND = "release"


class RefuseKey(_Namespaced):
    """A Secret that asks for revocation: answer it if no identity or pod owns it."""

    __slots__ = ()

    KIND = "refuse"


class DomainStatusKey(tuple[str, str, str]):
    """The status of a TrustDomain ("td", "", name), beside IdentityKey for identities."""

    __slots__ = ()

    def __new__(cls, name: str) -> Self:
        return super().__new__(cls, ("td", "", name))


class GoneKey(tuple[str, str, str, str]):
    """A deleted pod: revoke what it was issued and delete its Secret."""

    __slots__ = ()

    def __new__(cls, namespace: str, secret_name: str, owner_uid: str) -> Self:
        return super().__new__(cls, ("gone", namespace, secret_name, owner_uid))


class CatchUpKey(tuple[str]):
    """After a start: revoke what was issued to owners that vanished while we were down."""

    __slots__ = ()

    def __new__(cls) -> Self:
        return super().__new__(cls, ("catchup",))


CATCH_UP = CatchUpKey()


@dataclass
class Changes:
    """What an observation changed, for the engine to act on: the store never schedules.

    - schedule: work keys to run (at a time, or now);
    - cancel: work keys whose object is gone;
    - bundles: namespaces whose trust bundle must be recomputed;
    - statuses: status keys to rebuild;
    - forgotten: work keys whose per-target bookkeeping the controllers drop.
    """

    schedule: list[tuple[Hashable, datetime | None]] = field(default_factory=list)
    cancel: list[Hashable] = field(default_factory=list)
    bundles: set[str] = field(default_factory=set)
    statuses: set[StatusKey] = field(default_factory=set)
    forgotten: list[Hashable] = field(default_factory=list)

    def run(self, key: Hashable, at: datetime | None = None) -> None:
        self.schedule.append((key, at))

    def merge(self, other: Changes) -> Changes:
        self.schedule.extend(other.schedule)
        self.cancel.extend(other.cancel)
        self.bundles |= other.bundles
        self.statuses |= other.statuses
        self.forgotten.extend(other.forgotten)
        return self

    def __bool__(self) -> bool:
        return bool(self.schedule or self.cancel or self.bundles or self.statuses or self.forgotten)
