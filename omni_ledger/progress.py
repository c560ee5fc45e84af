"""What a running flow has done so far, for the progress line and the final summary.

Sinks report into one `Progress` (plain counters: each is written by one sink's
thread, read by the printer). It never feeds back into the flow.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = ["Progress", "ProgressPrinter"]


@dataclass
class Progress:
    """Counters of one run."""

    started: float = field(default_factory=time.monotonic)
    events_applied: int = 0
    applied_at_start: int = 0
    snapshots: int = 0
    last_snapshot_id: int | None = None
    last_publish_s: float = 0.0
    last_publish_at: float | None = None
    rows_published: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)

    def on_publish(self, snapshot_id: int | None, events_applied: int, rows: int, seconds: float) -> None:
        """Called by the snapshot sink after each commit."""
        if self.snapshots == 0 and self.events_applied == 0:
            self.applied_at_start = max(0, events_applied - rows)
        self.events_applied = events_applied
        if snapshot_id is not None:
            self.snapshots += 1
            self.last_snapshot_id = snapshot_id
            self.rows_published += rows
            self.last_publish_s = seconds
            self.last_publish_at = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def rate(self) -> float:
        """Events applied per second since this run started."""
        return (self.events_applied - self.applied_at_start) / max(self.elapsed(), 1e-9)

    def line(self) -> str:
        """One human line: events applied, rate, last snapshot and its age, dead letters."""
        snap = "no snapshot yet"
        if self.last_snapshot_id is not None and self.last_publish_at is not None:
            age = time.monotonic() - self.last_publish_at
            snap = (
                f"snapshot {self.last_snapshot_id} ({age:.1f} s ago, published in {self.last_publish_s * 1000:.0f} ms)"
            )
        dead = sum(self.dead_letters.values())
        return (
            f"[{self.elapsed():6.1f} s] {self.events_applied:>11,} events applied  "
            f"{self.rate():>9,.0f}/s  {snap}  dead letters {dead:,}"
        )

    def summary(self) -> dict[str, Any]:
        """The run's figures, for `--json` and the final table."""
        return {
            "events_applied": self.events_applied,
            "elapsed_s": round(self.elapsed(), 3),
            "events_per_s": round(self.rate(), 1),
            "snapshots_published": self.snapshots,
            "last_snapshot_id": self.last_snapshot_id,
            "dead_letters": dict(sorted(self.dead_letters.items())),
            "decisions": dict(sorted(self.decisions.items())),
        }


class ProgressPrinter:
    """Prints `progress.line()` to stderr every `every` seconds, in a daemon thread.

    With `log`, each line is a log record instead, its figures as fields (JSON logs).
    """

    def __init__(
        self, progress: Progress, every: float = 2.0, stream: TextIO | None = None, log: logging.Logger | None = None
    ) -> None:
        self._progress = progress
        self._every = every
        self._stream = stream or sys.stderr
        self._log = log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="omni-ledger-progress", daemon=True)

    def __enter__(self) -> ProgressPrinter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._every + 1)
        # A last line, so even a run shorter than one period shows where it ended.
        self._print()

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            self._print()

    def _print(self) -> None:
        if self._log is not None:
            # The human line as the message, its figures as fields.
            self._log.info(self._progress.line().strip(), extra={"step": "progress", **self._progress.summary()})
        else:
            print(self._progress.line(), file=self._stream, flush=True)
