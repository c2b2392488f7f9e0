"""CPU seconds and resident memory of processes, sampled from /proc (Linux)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of every thread of `pid` (children excluded)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _status(pid: int, key: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        return None
    return None


def rss_mib(pid: int) -> float | None:
    return _status(pid, "VmRSS")


def hwm_mib(pid: int) -> float | None:
    """Peak RSS over the life of the process."""
    return _status(pid, "VmHWM")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as handle:
        parts = [int(x) for x in handle.readline().split()[1:]]
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return float(total - idle), float(total)


def loadavg() -> list[float]:
    with open("/proc/loadavg") as handle:
        return [float(x) for x in handle.read().split()[:3]]


_CALIBRATION_BLOCK = bytes(range(256)) * 4096  # 1 MiB


def calibration_ms() -> float:
    """CPU milliseconds of a fixed single-threaded workload (hashing plus an interpreter loop),
    best of three. The same code takes more CPU time when the host is contended (a busy
    hyperthread sibling, frequency changes), so this tells whether two runs were measured on
    an equally fast machine; it is about 20 ms on an idle box here."""
    best = float("inf")
    for _ in range(3):
        start = time.thread_time()
        digest = hashlib.sha256()
        for _ in range(16):
            digest.update(_CALIBRATION_BLOCK)
        total = 0
        for i in range(200_000):
            total += i % 7
        best = min(best, time.thread_time() - start)
    return round(best * 1000, 1)


@dataclass
class Sample:
    t: float
    rss_mib: float


@dataclass
class Monitor:
    """Samples RSS of the named processes every `interval` seconds in a thread."""

    interval: float = 0.25
    pids: dict[str, int] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[Sample]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self.pids[name] = pid
            self.peaks.pop(name, None)
            self.series[name] = []

    def unwatch(self, name: str) -> None:
        with self._lock:
            self.pids.pop(name, None)

    def reset_peak(self, name: str) -> None:
        with self._lock:
            self.peaks.pop(name, None)

    def peak(self, name: str) -> float | None:
        with self._lock:
            return self.peaks.get(name)

    def start(self) -> Monitor:
        self._thread = threading.Thread(target=self._run, name="procmon", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.time()
            with self._lock:
                items = list(self.pids.items())
            for name, pid in items:
                value = rss_mib(pid)
                if value is None:
                    continue
                with self._lock:
                    self.peaks[name] = max(self.peaks.get(name, 0.0), value)
                    self.series.setdefault(name, []).append(Sample(now, value))


@dataclass
class CpuWindow:
    """CPU seconds of processes (and of the whole machine) between start() and stop()."""

    pids: dict[str, int]
    start_cpu: dict[str, float] = field(default_factory=dict)
    start_machine: tuple[float, float] = (0.0, 0.0)
    start_time: float = 0.0
    start_load: list[float] = field(default_factory=list)
    start_calibration: float = 0.0

    def start(self) -> CpuWindow:
        self.start_calibration = calibration_ms()  # before the window: not counted in it
        self.start_time = time.time()
        self.start_machine = machine_cpu()
        self.start_load = loadavg()
        for name, pid in self.pids.items():
            value = cpu_seconds(pid)
            if value is not None:
                self.start_cpu[name] = value
        return self

    def stop(self) -> dict[str, object]:
        elapsed = max(time.time() - self.start_time, 1e-6)
        busy0, total0 = self.start_machine
        busy1, total1 = machine_cpu()
        used: dict[str, float] = {}
        for name, pid in self.pids.items():
            value = cpu_seconds(pid)
            if value is not None and name in self.start_cpu:
                used[name] = round(value - self.start_cpu[name], 2)
        cores = os.cpu_count() or 1
        machine_busy_s = (busy1 - busy0) / CLK_TCK
        return {
            "wall_s": round(elapsed, 2),
            "cpu_s": used,
            "machine_busy_s": round(machine_busy_s, 2),
            "machine_busy_fraction": round((busy1 - busy0) / max(total1 - total0, 1), 3),
            "other_busy_s": round(max(0.0, machine_busy_s - sum(used.values())), 2),
            "cores": cores,
            "loadavg_start": self.start_load,
            "loadavg_end": loadavg(),
            "calibration_ms": [self.start_calibration, calibration_ms()],
        }


def cpu_per_item(usage: dict[str, object], items: int) -> dict[str, object]:
    """A CpuWindow's usage per item (a create, a certificate): milliseconds of CPU per process,
    with the window's length and how busy the whole machine was."""
    cpu = usage.get("cpu_s")
    per_process = cpu if isinstance(cpu, dict) else {}
    return {
        "items": items,
        "wall_s": usage.get("wall_s"),
        "machine_busy_fraction": usage.get("machine_busy_fraction"),
        "ms_per_item": {
            name: round(1000 * float(seconds) / max(items, 1), 3)
            for name, seconds in per_process.items()
        },
    }
