"""The Bytewax sink that publishes collected fold outputs as DuckLake snapshots, off the fold's thread.

One partition per snapshot writer (`writers`, default 1): the flow keys each batch
`snapshot-{i}` and the partition i publishes it with its own `SnapshotWriter` (its own
tables when there are several, see `adapters.snapshot_store.writer`). Each `write_batch`
receives the `SnapshotBatch`es the batching step gathered during one snapshot interval.

The publish (a MERGE into DuckLake, up to a second for 100,000 positions) runs on a
background writer thread, so the Bytewax worker thread only joins the batches and hands
them over. The handover queue is bounded (`max_pending` batches): a writer that falls
behind blocks `write_batch` (backpressure), memory never grows without bound.

Exactly once still holds. Bytewax calls `snapshot()` when an epoch closes and commits the
fold's state of that epoch with what it returns; a change handed over but not yet
published when the process dies would be lost (the recovered fold would not emit it
again). Waiting there for the publish would stall the whole worker (the fold, the
`atp.changes` producer) for up to a publish at every epoch. So instead:

1. `write_batch` joins the batches' outputs, adds the events applied to the running total, keeps
   the job as pending and puts it on the queue (blocking while it is full).
2. The writer thread publishes jobs in order, then writes the heartbeat, then drops the
   job from the pending ones; maintenance runs there too, between publishes, so it never
   races a commit: every `maintenance_every`, and whenever the publishes have slowed by
   as much as a maintenance run costs (files pile up; see `adapters.snapshot_store.compaction`).
3. `snapshot()` returns the running total and the jobs still pending (usually none, or
   the one being published): the epoch's state carries whatever of its outputs has not
   landed yet. A partition resumed with pending jobs publishes them first; publishing a
   job twice changes nothing (versions and ranks only move forward).
4. A failure on the writer thread is kept and raised on the worker thread at the next
   `write_batch`, `snapshot` or `close`; jobs after it are not published (the flow stops
   and recovery replays them).

The `on_publish` callback and the observer are called on the worker thread (the next
`write_batch`, `snapshot` or `close` after the publish), so metrics keyed by worker thread
stay per worker; `seconds` is the publish's own duration on the writer thread.

The resume state is the partition's cumulative count of events applied (so
`snapshot_info` stays right after a restart) and its pending jobs; replayed position
changes carry versions the store already has, replayed work ranks it already has, and
change nothing.
"""

from __future__ import annotations

import json
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from adapters.snapshot_store.compaction import CompactionPolicy
from adapters.snapshot_store.maintenance import MaintenanceReport
from adapters.snapshot_store.writer import SnapshotWriter
from ledger.errors import SnapshotError
from ledger.events import Millis
from ledger.execution import Work
from ledger.outputs import PositionChange, ReservationDecision, SnapshotBatch

__all__ = ["PublishCallback", "PublishObserver", "SnapshotSink", "writer_of_key"]

PublishCallback = Callable[[int | None, int, int, float], None]
"""(snapshot id or None, cumulative events applied, rows written, seconds taken)."""

_KEY_SUFFIX = re.compile(r"-(\d+)$")


def writer_of_key(key: str, writers: int) -> int:
    """The writer a batch key goes to: `snapshot-3` -> 3; no numeric suffix -> 0."""
    found = _KEY_SUFFIX.search(key)
    index = int(found.group(1)) if found else 0
    if not 0 <= index < writers:
        msg = (
            f"snapshot batch key {key!r} names writer {index}, but the sink has {writers} writer(s) (0..{writers - 1})"
        )
        raise SnapshotError(msg)
    return index


class PublishObserver(Protocol):
    """Told of each publish (metrics): `snapshot_id` None means nothing new, the newest still current at `at`."""

    def published(
        self, snapshot_id: int | None, changes: Sequence[PositionChange], rows: int, seconds: float, at: Millis
    ) -> None: ...

    def maintained(self, report: MaintenanceReport, reason: str) -> None:
        """A maintenance run: on the timer ("interval") or because publishes slowed ("publishes")."""


@dataclass(slots=True, eq=False)
class _Job:
    """One interval's outputs, handed from the worker thread to the writer thread."""

    changes: list[PositionChange]
    decisions: list[ReservationDecision]
    work: list[Work]
    applied: int
    handed_at: Millis
    seq: int = 0
    """Rises with each job a writer is handed, across restarts (see `_Partition`)."""

    def saved(self) -> tuple[Any, ...]:
        return (tuple(self.changes), tuple(self.decisions), tuple(self.work), self.applied, self.handed_at, self.seq)

    @classmethod
    def restored(cls, saved: tuple[Any, ...]) -> _Job:
        changes, decisions, work, applied, handed_at, seq = saved
        return cls(list(changes), list(decisions), list(work), applied, handed_at, seq)


SinkState = tuple[int, tuple[tuple[Any, ...], ...], int]
"""(events applied so far, jobs handed over and not published yet, the next job's seq);
a bare int: an older state."""


@dataclass(slots=True)
class _Done:
    """A finished job, for the callbacks on the worker thread."""

    snapshot_id: int | None
    applied: int
    rows: int
    seconds: float
    at: Millis
    changes: list[PositionChange] = field(default_factory=list)


@dataclass(slots=True)
class _Maintained:
    """A finished maintenance run, for the observer on the worker thread."""

    report: MaintenanceReport
    reason: str


_STOP = None


class _Partition(StatefulSinkPartition[SnapshotBatch, SinkState]):
    def __init__(
        self,
        directory: Path,
        resume: SinkState | int | None,
        retention: timedelta,
        maintenance_every: timedelta,
        on_publish: PublishCallback | None,
        observer: PublishObserver | None = None,
        *,
        catalog: str = "",
        writers: int = 1,
        index: int = 0,
        max_pending: int = 2,
        compaction: CompactionPolicy | None = None,
    ) -> None:
        self._writer = SnapshotWriter.open(directory, catalog=catalog, writers=writers, writer=index)
        # No resume state means the flow starts from nothing: a store with rows here can
        # only come from a crash before the first epoch, whose events are read again.
        pending: tuple[tuple[Any, ...], ...] = ()
        next_seq = 0
        if isinstance(resume, tuple):
            resume, pending, next_seq = resume
        self._applied = resume or 0
        # Jobs are published in the order handed over, and the writer records the last
        # one's seq beside the store: a pending job at or below it has landed already (the
        # epoch closed while it was being published) and publishing it again would only
        # add an empty snapshot. Seqs never repeat: a restart continues past both.
        self._published_file = Path(directory) / f".published-{index}.json"
        published = self._read_published()
        self._next_seq = max(next_seq, published + 1)
        self._pending: list[_Job] = []
        self._lock = threading.Lock()
        self._retention = retention
        self._maintenance_every = maintenance_every.total_seconds()
        self._last_maintenance = time.monotonic()
        # Publishes slow down as files pile up between maintenance runs: also run it when
        # that has cost as much as a run (adapters.snapshot_store.compaction).
        self._compaction = compaction or CompactionPolicy()
        self._on_publish = on_publish
        self._observer = observer
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=max(1, max_pending))
        self._done: queue.SimpleQueue[_Done | _Maintained] = queue.SimpleQueue()
        self._failure: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"snapshot-writer-{index}", daemon=True)
        self._thread.start()
        for saved in pending:
            # Handed over before the last epoch closed but not published then: publish first.
            job = _Job.restored(saved)
            if job.seq > published:
                self._hand_over(job, keep_seq=True)

    # -- the worker thread

    def write_batch(self, values: list[SnapshotBatch]) -> None:
        self._settle()
        changes: list[PositionChange] = []
        decisions: list[ReservationDecision] = []
        work: list[Work] = []
        for batch in values:
            changes.extend(batch.changes)
            decisions.extend(batch.decisions)
            work.extend(batch.work)
            self._applied += batch.tally.applied
        self._hand_over(_Job(changes, decisions, work, self._applied, time.time_ns() // 1_000_000))

    def _hand_over(self, job: _Job, *, keep_seq: bool = False) -> None:
        # 1. Pending until published; blocks while `max_pending` jobs wait (backpressure).
        if not keep_seq:
            job.seq = self._next_seq
            self._next_seq += 1
        with self._lock:
            self._pending.append(job)
        self._jobs.put(job)

    def _read_published(self) -> int:
        try:
            return int(json.loads(self._published_file.read_text())["seq"])
        except (OSError, ValueError, KeyError, TypeError):
            return -1  # unknown: every pending job is published again, which is safe

    def _write_published(self, seq: int) -> None:
        scratch = self._published_file.with_name(self._published_file.name + ".tmp")
        try:
            scratch.write_text(json.dumps({"seq": seq}))
            os.replace(scratch, self._published_file)
        except OSError:
            pass  # only an optimisation: pending jobs are then published again

    def snapshot(self) -> SinkState:
        # 3. The epoch keeps what of its outputs has not landed yet, instead of waiting for it.
        self._settle()
        with self._lock:
            pending = tuple(job.saved() for job in self._pending if job.changes or job.decisions or job.work)
        return self._applied, pending, self._next_seq

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._jobs.put(_STOP)
            self._thread.join()
            self._settle()
        finally:
            self._writer.close()

    def _settle(self) -> None:
        """Deliver the callbacks of finished jobs; raise the writer thread's failure, if any."""
        while True:
            try:
                done = self._done.get_nowait()
            except queue.Empty:
                break
            if isinstance(done, _Maintained):
                if self._observer is not None:
                    self._observer.maintained(done.report, done.reason)
                continue
            if done.snapshot_id is not None and self._on_publish is not None:
                self._on_publish(done.snapshot_id, done.applied, done.rows, done.seconds)
            if self._observer is not None:
                self._observer.published(done.snapshot_id, done.changes, done.rows, done.seconds, done.at)
        if self._failure is not None:
            # 4. Raised again on every later call: the flow must stop, not skip the lost jobs.
            msg = (
                "the snapshot writer thread failed; outputs handed over after the failure were not "
                f"published: {self._failure}"
            )
            raise SnapshotError(msg) from self._failure

    # -- the writer thread

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is _STOP:
                    return
                if self._failure is None:
                    self._publish(job)
                    if job.changes or job.decisions or job.work:
                        self._write_published(job.seq)
                    with self._lock:
                        # Published in the order handed over: the oldest pending is this one.
                        if self._pending and self._pending[0] is job:
                            self._pending.pop(0)
            except BaseException as exc:
                self._failure = exc
            finally:
                self._jobs.task_done()

    def _publish(self, job: _Job) -> None:
        # 2. Publish, heartbeat, maybe maintenance, in this order on this thread.
        writer = self._writer
        if not (job.changes or job.decisions or job.work):
            # A heartbeat (or only duplicates): nothing new, and the newest snapshot is still current.
            now = time.time_ns() // 1_000_000
            writer.heartbeat(now)
            self._done.put(_Done(None, job.applied, 0, 0.0, now))
            return
        started = time.perf_counter()
        snapshot_id = writer.publish(
            job.changes, job.decisions, job.work, events_applied=job.applied, now=job.handed_at
        )
        seconds = time.perf_counter() - started
        now = time.time_ns() // 1_000_000
        writer.heartbeat(now)
        rows = len(job.changes) + len(job.decisions) + len(job.work)
        self._done.put(_Done(snapshot_id, job.applied, rows, seconds, now, job.changes))
        self._compaction.published(seconds)
        on_timer = time.monotonic() - self._last_maintenance >= self._maintenance_every
        if on_timer or self._compaction.due():
            # Between publishes, on the writer's own thread: maintenance never races a commit.
            report = writer.maintain(keep_snapshots_for=self._retention)
            self._compaction.compacted(report.seconds)
            self._last_maintenance = time.monotonic()
            self._done.put(_Maintained(report, "interval" if on_timer else "publishes"))


class SnapshotSink(FixedPartitionedSink[SnapshotBatch, SinkState]):
    """Publish `("snapshot-{i}", SnapshotBatch)` items into the DuckLake store at `directory`.

    `catalog`: "" keeps the DuckLake catalog in SQLite at DIR/catalog.sqlite;
    "postgres:<libpq conninfo>" keeps it in PostgreSQL (data files stay under DIR/data).
    `writers`: how many partitions (writers) share the store, each owning the keys the
    flow routes to it; `max_pending`: batches a writer may have waiting before
    `write_batch` blocks; `compaction`: makes each writer's policy for maintenance
    between timer runs.
    """

    def __init__(
        self,
        directory: Path,
        *,
        retention: timedelta = timedelta(days=7),
        maintenance_every: timedelta = timedelta(minutes=10),
        on_publish: PublishCallback | None = None,
        observer: PublishObserver | None = None,
        catalog: str = "",
        writers: int = 1,
        max_pending: int = 2,
        compaction: Callable[[], CompactionPolicy] = CompactionPolicy,
    ) -> None:
        if writers < 1:
            msg = f"a snapshot sink needs at least one writer, got writers={writers}"
            raise SnapshotError(msg)
        self._directory = directory
        self._retention = retention
        self._maintenance_every = maintenance_every
        self._on_publish = on_publish
        self._observer = observer
        self._catalog = catalog
        self._writers = writers
        self._max_pending = max_pending
        self._compaction = compaction

    def list_parts(self) -> list[str]:
        # One writer keeps the historical part name, so its recovery state still matches.
        if self._writers == 1:
            return ["snapshots"]
        # Bytewax indexes part_fn's value into the parts sorted by name: zero-padded
        # numbers sort as numbers (measured: unpadded, 2 went to "snapshots-10").
        width = len(str(self._writers - 1))
        return [f"snapshots-{i:0{width}d}" for i in range(self._writers)]

    def part_fn(self, item_key: str) -> int:
        return writer_of_key(item_key, self._writers)

    def build_part(self, step_id: str, for_part: str, resume_state: SinkState | int | None) -> _Partition:
        index = 0 if self._writers == 1 else writer_of_key(for_part, self._writers)
        return _Partition(
            self._directory,
            resume_state,
            self._retention,
            self._maintenance_every,
            self._on_publish,
            self._observer,
            catalog=self._catalog,
            writers=self._writers,
            index=index,
            max_pending=self._max_pending,
            compaction=self._compaction(),
        )
