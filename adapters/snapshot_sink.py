"""The Bytewax sink that publishes collected fold outputs as DuckLake snapshots.

One partition, hence one writer on the catalog. Each `write_batch` receives the tuples
that the batching step gathered during one snapshot interval and commits them as one snapshot.
Its resume state is the cumulative count of events applied, so `snapshot_info` stays
right after a restart; replayed position changes carry versions the store already has,
replayed work ranks it already has, and change nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from adapters.snapshots import SnapshotWriter
from ledger.events import Millis
from ledger.execution import DropshipOrder, ShuttleLoad, StoreTask, Work
from ledger.outputs import FoldTally, PositionChange, ReservationDecision

__all__ = ["PublishCallback", "PublishObserver", "SnapshotSink"]

PublishCallback = Callable[[int | None, int, int, float], None]
"""(snapshot id or None, cumulative events applied, rows written, seconds taken)."""


class PublishObserver(Protocol):
    """Told of each publish (metrics): `snapshot_id` None means nothing new, the newest still current at `at`."""

    def published(
        self, snapshot_id: int | None, changes: Sequence[PositionChange], rows: int, seconds: float, at: Millis
    ) -> None: ...


class _Partition(StatefulSinkPartition[tuple[Any, ...], int]):
    def __init__(
        self,
        directory: Path,
        resume: int | None,
        retention: timedelta,
        maintenance_every: timedelta,
        on_publish: PublishCallback | None,
        observer: PublishObserver | None = None,
    ) -> None:
        self._writer = SnapshotWriter.open(directory)
        # No resume state means the flow starts from nothing: a store with rows here can
        # only come from a crash before the first epoch, whose events are read again.
        self._applied = resume or 0
        self._retention = retention
        self._maintenance_every = maintenance_every.total_seconds()
        self._last_maintenance = time.monotonic()
        self._on_publish = on_publish
        self._observer = observer

    def write_batch(self, values: list[tuple[Any, ...]]) -> None:
        changes: list[PositionChange] = []
        decisions: list[ReservationDecision] = []
        work: list[Work] = []
        for batch in values:
            for item in batch:
                if isinstance(item, PositionChange):
                    changes.append(item)
                elif isinstance(item, ReservationDecision):
                    decisions.append(item)
                elif isinstance(item, StoreTask | ShuttleLoad | DropshipOrder):
                    work.append(item)
                elif isinstance(item, FoldTally):
                    self._applied += item.applied
        now = time.time_ns() // 1_000_000
        if not (changes or decisions or work):
            # A heartbeat (or only duplicates): nothing new, and the newest snapshot is still current.
            self._writer.heartbeat(now)
            if self._observer is not None:
                self._observer.published(None, changes, 0, 0.0, now)
            return
        started = time.perf_counter()
        snapshot_id = self._writer.publish(changes, decisions, work, events_applied=self._applied, now=now)
        seconds = time.perf_counter() - started
        self._writer.heartbeat(now)
        rows = len(changes) + len(decisions) + len(work)
        if self._on_publish is not None:
            self._on_publish(snapshot_id, self._applied, rows, seconds)
        if self._observer is not None:
            self._observer.published(snapshot_id, changes, rows, seconds, now)
        if time.monotonic() - self._last_maintenance >= self._maintenance_every:
            # Between publishes, on the writer's own thread: maintenance never races a commit.
            self._writer.maintain(keep_snapshots_for=self._retention)
            self._last_maintenance = time.monotonic()

    def snapshot(self) -> int:
        return self._applied

    def close(self) -> None:
        self._writer.close()


class SnapshotSink(FixedPartitionedSink[tuple[Any, ...], int]):
    """Publish `("snapshot", (outputs...))` items into the DuckLake store at `directory`."""

    def __init__(
        self,
        directory: Path,
        *,
        retention: timedelta = timedelta(days=7),
        maintenance_every: timedelta = timedelta(minutes=10),
        on_publish: PublishCallback | None = None,
        observer: PublishObserver | None = None,
    ) -> None:
        self._directory = directory
        self._retention = retention
        self._maintenance_every = maintenance_every
        self._on_publish = on_publish
        self._observer = observer

    def list_parts(self) -> list[str]:
        return ["snapshots"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Partition:
        return _Partition(
            self._directory, resume_state, self._retention, self._maintenance_every, self._on_publish, self._observer
        )
