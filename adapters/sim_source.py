"""The built-in retailer simulator as a resumable Bytewax source, paced to a rate.

One partition. Its resume state is the simulator's own immutable state, so a restarted
flow continues the same stream where the last completed epoch left it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from adapters.codec import RawInput
from adapters.shutdown import StopFlag
from omni_ledger.simulator import RetailerSimulator, SimConfig, SimState

__all__ = ["SimResume", "SimSource"]

_MAX_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class SimResume:
    """The simulator's state and how many events it has emitted in all."""

    state: SimState
    emitted: int


class _SimPartition(StatefulSourcePartition[RawInput, SimResume]):
    def __init__(
        self, config: SimConfig, rate: int, limit: int | None, resume: SimResume | None, stop: StopFlag | None
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

    def next_batch(self) -> list[RawInput]:
        if self._limit is not None and self._emitted >= self._limit:
            raise StopIteration
        if self._stop is not None and self._stop.is_set():
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


class SimSource(FixedPartitionedSource[RawInput, SimResume]):
    """`rate` simulated events per second of wall time; ends after `limit` events or when `stop` is set."""

    def __init__(self, config: SimConfig, *, rate: int, limit: int | None = None, stop: StopFlag | None = None) -> None:
        self._config = config
        self._rate = rate
        self._limit = limit
        self._stop = stop

    def list_parts(self) -> list[str]:
        return ["sim"]

    def build_part(self, step_id: str, for_part: str, resume_state: SimResume | None) -> _SimPartition:
        return _SimPartition(self._config, self._rate, self._limit, resume_state, self._stop)
