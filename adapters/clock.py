"""The ledger's clock, injected into the flow: wall time live, event time in a replay.

Which clock decides a reservation's expiry:
- Live (`WallClock`): the wall clock. A hold is a promise made to a customer in real
  time; it must end at its `expires_at` even if no other event reaches that position,
  so a Bytewax timer fires at that instant.
- Replay (`ReplayClock`): the newest `occurred_at` read so far from the input. Replaying
  last month's events against the wall clock would expire every hold on arrival; against
  event time, a replay decides exactly as the live run would have with the same arrival
  order, and the same file always gives the same result. At the end of a finite input
  the clock stands at the input's newest event, and holds due by then expire.

In a cluster only the processes that read input see events, so only their replay clocks
move. Each source partition that reaches the end of its input writes its clock's reading
to a board every process shares (`board`, a directory beside the recovery state), and
the end-of-input expiry reads the latest of them (`final`): Bytewax ends a step's input
only after every source partition of the cluster has ended, so every reading is there.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Protocol

from ledger.events import Millis

__all__ = ["Clock", "ReplayClock", "WallClock"]


class Clock(Protocol):
    """Reads the ledger's time; `observe` lets an event-time clock advance."""

    live: bool

    def now(self) -> Millis: ...

    def observe(self, occurred_at: Millis) -> Millis: ...

    def reached_end(self, part: str) -> None:
        """A source partition read the end of its input (replay: share the reading)."""
        ...

    def final(self) -> Millis:
        """The clock at the end of the whole input, every process's partitions included."""
        ...


class WallClock:
    """UTC wall-clock time in epoch milliseconds."""

    live = True

    def now(self) -> Millis:
        return time.time_ns() // 1_000_000

    def observe(self, occurred_at: Millis) -> Millis:
        return self.now()

    def reached_end(self, part: str) -> None:
        return None

    def final(self) -> Millis:
        return self.now()


class ReplayClock:
    """Event time: the newest `occurred_at` observed so far (never goes back).

    Shared by the worker threads of one process; the lock keeps the maximum exact.
    """

    live = False

    def __init__(self, start: Millis = -(2**62), board: Path | None = None) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._board = board

    def now(self) -> Millis:
        return self._now

    def observe(self, occurred_at: Millis) -> Millis:
        with self._lock:
            if occurred_at > self._now:
                self._now = occurred_at
            return self._now

    def reached_end(self, part: str) -> None:
        if self._board is None:
            return
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in part) + ".json"
        target = self._board / name
        try:
            self._board.mkdir(parents=True, exist_ok=True)
            scratch = target.with_name(f".{name}.{os.getpid()}")
            scratch.write_text(json.dumps({"now": self._now}))
            os.replace(scratch, target)
        except OSError as exc:
            msg = f"cannot share the replay clock's reading in {self._board}: {exc.strerror}"
            raise OSError(msg) from exc

    def final(self) -> Millis:
        readings = [self._now]
        if self._board is not None and self._board.is_dir():
            for entry in self._board.glob("*.json"):
                try:
                    readings.append(int(json.loads(entry.read_text())["now"]))
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # being replaced right now: the new one is no earlier
        return max(readings)
