"""Where a machine's cores went over a window: named processes (with their descendants), everything else, idle.

A latency figure on a shared two-core machine says little without the CPU beside it: the
flow's events wait for a core, and the broker, the load generator, the bench's own
watcher and whatever else runs (another engineer's job) take cores too. `CoreWatch`
reads `/proc` at the start and the end of a window (Linux only) and splits the
machine's busy time among the processes named (each with every descendant, so a
process started through a wrapper, e.g. py-spy, is counted whole), `other` (the rest of
the machine) and `idle`. Per-process figures are CPU seconds over the window's wall
seconds, in cores; `busy` + `idle` is the machine's core count.

Processes that start or end inside the window are counted from when they are first or
last seen, so short-lived ones are under-counted: `other` is then what the machine's own
totals (`/proc/stat`) leave over, which counts them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CoreWatch", "cpu_seconds", "describe", "listening_pid"]

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process so far (every thread), or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def _processes() -> dict[int, tuple[int, float]]:
    """Every process on the machine: pid -> (parent pid, CPU seconds so far)."""
    out: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while read
        out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK)
    return out


def _machine_seconds() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine so far, from /proc/stat's first line."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    steal_guest = sum(values[7:]) if len(values) > 7 else 0  # steal, guest, guest_nice: not this machine's work
    return (sum(values) - idle - steal_guest) / _TICK, idle / _TICK


def listening_pid(port: int) -> int | None:
    """The process listening on TCP `port` on this machine (e.g. a Kafka broker by its bootstrap port), or None."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"{entry.path}/fd"):
                if os.readlink(fd.path) in inodes:
                    return int(entry.name)
        except OSError:
            continue  # ended, or not ours to read
    return None


def _owner(pid: int, tree: Mapping[int, tuple[int, float]], roots: Mapping[int, str]) -> str | None:
    seen = 0
    while pid > 1 and seen < 64:  # bounded: a cycle cannot happen in /proc, a deep tree is cut
        name = roots.get(pid)
        if name is not None:
            return name
        pid = tree[pid][0] if pid in tree else 0
        seen += 1
    return None


@dataclass(frozen=True)
class _Reading:
    at: float
    processes: dict[int, tuple[int, float]]
    busy: float
    idle: float


def _read() -> _Reading:
    busy, idle = _machine_seconds()
    return _Reading(time.monotonic(), _processes(), busy, idle)


class CoreWatch:
    """Cores used over a window by named processes, the rest of the machine, and left idle.

    `CoreWatch({"flow": flow.pid, "broker": broker_pid})`, `start()`, later `stop()` ->
    `{"seconds": ..., "cores": {"flow": 0.93, "broker": 0.35, "other": 0.4, "idle": 0.3},
    "machine_cores": 2}`. A name may be given to several pids. `include_self` names this
    process (the caller: in a bench, the load generator).
    """

    def __init__(self, named: Mapping[str, int | None], *, include_self: str | None = None) -> None:
        self._roots = {pid: name for name, pid in named.items() if pid is not None}
        if include_self is not None:
            self._roots[os.getpid()] = include_self
        self._names = [*dict.fromkeys([*named, *([include_self] if include_self else [])])]
        self._start: _Reading | None = None

    def name(self, name: str, pid: int) -> None:
        """Name one more process (one started after `start()`: counted from its first reading, at `stop()`)."""
        self._roots[pid] = name
        if name not in self._names:
            self._names.append(name)

    def start(self) -> None:
        self._start = _read()

    def stop(self) -> dict[str, Any]:
        if self._start is None:
            msg = "CoreWatch.stop() before start()"
            raise RuntimeError(msg)
        begin, end = self._start, _read()
        wall = end.at - begin.at
        if wall <= 0:
            return {"seconds": 0.0, "cores": {}, "machine_cores": os.cpu_count()}
        used = dict.fromkeys(self._names, 0.0)
        for pid, (_, seconds) in end.processes.items():
            owner = _owner(pid, end.processes, self._roots)
            if owner is None:
                continue
            before = begin.processes.get(pid)
            used[owner] += seconds - (before[1] if before is not None else 0.0)
        # A named process that ended inside the window: what it used until its last reading is unknown here.
        busy = end.busy - begin.busy
        named_total = sum(used.values())
        cores = {name: round(seconds / wall, 2) for name, seconds in used.items()}
        cores["other"] = round(max(0.0, busy - named_total) / wall, 2)
        cores["idle"] = round((end.idle - begin.idle) / wall, 2)
        return {
            "seconds": round(wall, 3),
            "cores": cores,
            "cpu_seconds": {name: round(seconds, 3) for name, seconds in used.items()},
            "machine_cores": os.cpu_count(),
        }


def describe(found: Mapping[str, object]) -> str:
    """One line: `flow 0.93, broker 0.35, ..., other 0.40, idle 0.05 of 2 cores over 30.0 s`."""
    cores = found.get("cores")
    if not isinstance(cores, Mapping) or not cores:
        return "cores not measured"
    parts = ", ".join(f"{name} {value:.2f}" for name, value in cores.items())
    seconds = found.get("seconds")
    over = f"{seconds:.1f}" if isinstance(seconds, float) else "?"
    return f"{parts} of {found.get('machine_cores')} cores over {over} s"
