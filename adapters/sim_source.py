"""The built-in retailer simulator as a resumable Bytewax source, paced to a rate.

The `sim` partition's resume state is the simulator's own immutable state, so a
restarted flow continues the same stream where the last completed epoch left it.

Given an `inbox` (the JSON-lines file the API appends a confirm's events and the
console's clicks to, `DIR/inbox.jsonl`), a second partition follows it: the simulated
retailer and the people using the API are folded by one flow, so a reservation made in
the console is decided while the simulator runs. Its resume state is the file position.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

import simulator.state as sim_state
from adapters.codec import RawInput
from adapters.file_source import FileSource, FilesResume
from adapters.shutdown import StopFlag
from simulator import RetailerSimulator, SimConfig, SimState

__all__ = ["SimResume", "SimSource"]

_MAX_BATCH = 5_000

# Recovery stores written while the simulator lived in the application pickled its state as
# `omni_ledger.simulator.SimState`: that name still finds the class, so such a store resumes.
sys.modules.setdefault("omni_ledger.simulator", sim_state)


@dataclass(frozen=True, slots=True)
class SimResume:
    """The simulator's state and how many events it has emitted in all."""

    state: SimState
    emitted: int


class _SimPartition(StatefulSourcePartition[RawInput, SimResume]):
    def __init__(
        self,
        config: SimConfig,
        rate: int,
        limit: int | None,
        resume: SimResume | None,
        stop: StopFlag | None,
        done: StopFlag | None = None,
    ) -> None:
        if resume is None:
            self._sim = RetailerSimulator(config)
            self._emitted = 0
        else:
            self._sim = RetailerSimulator.resume(config, resume.state)
            self._emitted = resume.emitted
        self._rate = rate
        self._limit = limit
        self._started = time.monotonic()
        self._emitted_here = 0
        self._awake: datetime | None = None
        self._stop = stop
        self._done = done

    def next_batch(self) -> list[RawInput]:
        if (self._limit is not None and self._emitted >= self._limit) or (
            self._stop is not None and self._stop.is_set()
        ):
            if self._done is not None:
                self._done.set()
            raise StopIteration
        due = int((time.monotonic() - self._started) * self._rate) - self._emitted_here
        n = min(due, _MAX_BATCH)
        if self._limit is not None:
            n = min(n, self._limit - self._emitted)
        if n <= 0:
            self._awake = datetime.now(UTC) + timedelta(seconds=max(0.001, 1 / self._rate))
            return []
        self._awake = None
        now = time.time_ns() // 1_000_000
        events = self._sim.next_events(now, n)
        self._emitted += n
        self._emitted_here += n
        return [RawInput("sim", event) for event in events]

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> SimResume:
        return SimResume(self._sim.state(), self._emitted)


class SimSource(FixedPartitionedSource[RawInput, Any]):
    """`rate` simulated events per second of wall time; ends after `limit` events or when `stop` is set.

    With `inbox`, also the events appended to that JSON-lines file (created if missing),
    until `stop` is set or the simulator has emitted its `limit`.
    """

    def __init__(
        self,
        config: SimConfig,
        *,
        rate: int,
        limit: int | None = None,
        stop: StopFlag | None = None,
        inbox: Path | None = None,
    ) -> None:
        self._config = config
        self._rate = rate
        self._limit = limit
        # The inbox ends with the simulator: a limited run must reach its end of input.
        self._stop = stop
        self._sim_done = StopFlag()
        self._inbox = inbox
        if inbox is not None:
            inbox.parent.mkdir(parents=True, exist_ok=True)
            inbox.touch()

    def list_parts(self) -> list[str]:
        return ["sim"] if self._inbox is None else ["sim", "inbox"]

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> Any:
        if for_part == "inbox" and self._inbox is not None:
            resume = resume_state if isinstance(resume_state, FilesResume) else None
            inbox = FileSource([self._inbox], follow=True, stop=_EitherFlag(self._stop, self._sim_done))
            return inbox.build_part(step_id, "files", resume)
        resume_sim = resume_state if isinstance(resume_state, SimResume) else None
        return _SimPartition(self._config, self._rate, self._limit, resume_sim, self._stop, self._sim_done)


class _EitherFlag(StopFlag):
    """Set when any of its flags is (a read-only view)."""

    def __init__(self, *flags: StopFlag | None) -> None:
        super().__init__()
        self._flags = tuple(flag for flag in flags if flag is not None)

    def is_set(self) -> bool:
        return any(flag.is_set() for flag in self._flags)
