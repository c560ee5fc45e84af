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
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from ledger.events import Millis

__all__ = ["Clock", "ReplayClock", "WallClock"]


class Clock(Protocol):
    """Reads the ledger's time; `observe` lets an event-time clock advance."""

    live: bool

    def now(self) -> Millis: ...

    def observe(self, occurred_at: Millis) -> Millis: ...


class WallClock:
    """UTC wall-clock time in epoch milliseconds."""

    live = True

    def now(self) -> Millis:
        return time.time_ns() // 1_000_000

    def observe(self, occurred_at: Millis) -> Millis:
        return self.now()


class ReplayClock:
    """Event time: the newest `occurred_at` observed so far (never goes back).

    Shared by the worker threads of one process; the lock keeps the maximum exact.
    """

    live = False

    def __init__(self, start: Millis = -(2**62)) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> Millis:
        return self._now

    def observe(self, occurred_at: Millis) -> Millis:
        with self._lock:
            if occurred_at > self._now:
                self._now = occurred_at
            return self._now
