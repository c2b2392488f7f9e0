"""Pure analysis for the CA rollover scenario: renewal rates around an activation, leaves that
moved off their own schedule, and verification gaps (a live leaf whose issuer's anchor is not in
its namespace's bundle). No I/O; the scenario feeds it what the watcher saw."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

Key = tuple[str, str]
# (time, serial, issuer sha256, renew-at annotation of that version)
Version = tuple[float, str | None, str | None, str | None]


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: float
    mean_per_s: float
    peak_per_s: int
    peak_to_mean: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "count": self.count,
            "seconds": round(self.seconds, 1),
            "mean_per_s": round(self.mean_per_s, 2),
            "peak_per_s": self.peak_per_s,
            "peak_to_mean": None if self.peak_to_mean is None else round(self.peak_to_mean, 2),
        }


def rate(times: Iterable[float], start: float, end: float) -> Rate:
    """Events per whole second in [start, end): the mean over the window and the busiest
    second. An empty window has no peak-to-mean."""
    if end <= start:
        raise ValueError(f"empty window [{start}, {end})")
    buckets: Counter[int] = Counter(int(t - start) for t in times if start <= t < end)
    seconds = end - start
    count = sum(buckets.values())
    mean = count / seconds
    peak = max(buckets.values(), default=0)
    return Rate(count, seconds, mean, peak, (peak / mean) if count else None)


def renewals(histories: Mapping[Key, Sequence[Version]]) -> list[float]:
    """The time of every re-issue (each version after a Secret's first)."""
    return sorted(v[0] for versions in histories.values() for v in versions[1:])


def due_and_arrived(histories: Mapping[Key, Sequence[Version]]) -> list[tuple[float, float]]:
    """For every re-issue whose previous version announced a renew-at: (when it was due, when
    it was seen). Bucketing the first tells the schedule's own waves from what the issuing
    and the watch added: a busy second in the arrivals that is not in the due times was made
    after the schedule."""
    out: list[tuple[float, float]] = []
    for versions in histories.values():
        for before, after in itertools.pairwise(versions):
            due = _renew_at(before)
            if due is not None:
                out.append((due, after[0]))
    out.sort()
    return out


def lag_summary(pairs: Iterable[tuple[float, float]]) -> dict[str, float | None]:
    """Seconds from due to seen: median, 99th percentile and worst (None when empty)."""
    lags = sorted(arrived - due for due, arrived in pairs)
    if not lags:
        return {"p50": None, "p99": None, "max": None}

    def at(q: float) -> float:
        return round(lags[min(len(lags) - 1, int(q * len(lags)))], 3)

    return {"p50": at(0.5), "p99": at(0.99), "max": round(lags[-1], 3)}


def moves(histories: Mapping[Key, Sequence[Version]], new_issuer: str) -> dict[Key, Version]:
    """For each Secret, its first version issued by `new_issuer` after one by another
    issuer (the leaf's move to the new authority)."""
    out: dict[Key, Version] = {}
    for key, versions in histories.items():
        for before, after in itertools.pairwise(versions):
            if after[2] == new_issuer and before[2] != new_issuer:
                out[key] = after
                break
    return out


def _renew_at(version: Version) -> float | None:
    """The renew-at a version announced, as a timestamp (None if it announced none)."""
    text = version[3]
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def off_schedule(
    histories: Mapping[Key, Sequence[Version]], new_issuer: str, slack_s: float
) -> list[tuple[Key, float]]:
    """Moves that happened more than `slack_s` before the renew-at the previous version
    announced: the rollover, not the leaf's own schedule, re-issued them. Returns each with
    how many seconds early it was."""
    early: list[tuple[Key, float]] = []
    for key, versions in histories.items():
        for before, after in itertools.pairwise(versions):
            if after[2] != new_issuer or before[2] == new_issuer:
                continue
            due = _renew_at(before)
            if due is not None and after[0] < due - slack_s:
                early.append((key, round(due - after[0], 1)))
            break
    return early


def ahead_of_renew_at(
    histories: Mapping[Key, Sequence[Version]], since: float, slack_s: float
) -> tuple[int, int]:
    """Re-issues after `since`: (ahead, due). A re-issue is *due* when it came at or after
    the renew-at its previous version announced (less `slack_s`), *ahead* otherwise. After a
    restart only the ahead ones are the restart's doing; the due ones are ordinary renewals."""
    ahead = due = 0
    for versions in histories.values():
        for before, after in itertools.pairwise(versions):
            if after[0] < since:
                continue
            at = _renew_at(before)
            if at is not None and after[0] >= at - slack_s:
                due += 1
            else:
                ahead += 1
    return ahead, due


def verification_gaps(
    histories: Mapping[Key, Sequence[Version]],
    bundles: Mapping[str, Sequence[tuple[float, Sequence[str]]]],
) -> list[str]:
    """Every moment a Secret's current leaf was not verifiable against its namespace's bundle
    as it stood then: a leaf written before its issuer's anchor was published, or an anchor
    withdrawn while a current leaf still chains to it. Before a namespace's first bundle is
    seen nothing is judged (the bundle may predate the watch)."""
    gaps: list[str] = []
    # one time-ordered stream of (time, order, namespace, what); a bundle version at the same
    # instant as a Secret version is applied first (the watch order of one write)
    stream: list[tuple[float, int, str, object]] = []
    for (ns, name), versions in histories.items():
        for version in versions:
            stream.append((version[0], 1, ns, (name, version[2])))
    for ns, published in bundles.items():
        for t, anchors in published:
            stream.append((t, 0, ns, frozenset(anchors)))
    stream.sort(key=lambda item: (item[0], item[1]))
    current: dict[str, frozenset[str]] = {}
    issuer_of: dict[Key, str | None] = {}
    live: dict[str, Counter[str]] = {}
    for t, order, ns, what in stream:
        if order == 0:
            assert isinstance(what, frozenset)
            current[ns] = what
            missing = [sha for sha, n in (live.get(ns) or {}).items() if n and sha not in what]
            for sha in missing:
                gaps.append(
                    f"t={t:.3f} {ns}: the bundle dropped anchor {sha[:12]} while "
                    f"{live[ns][sha]} current leaf/leaves chain to it"
                )
            continue
        assert isinstance(what, tuple)
        name, issuer = what
        previous = issuer_of.get((ns, name))
        counts = live.setdefault(ns, Counter())
        if previous:
            counts[previous] -= 1
        issuer_of[(ns, name)] = issuer
        if issuer:
            counts[issuer] += 1
            if ns in current and issuer not in current[ns]:
                gaps.append(
                    f"t={t:.3f} {ns}/{name}: leaf by {issuer[:12]} written before its anchor "
                    "was in the namespace bundle"
                )
    return gaps
