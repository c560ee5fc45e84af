"""The Bytewax sink that publishes collected fold outputs as DuckLake snapshots, off the fold's thread.

One partition per snapshot writer (`writers`, default 1): the flow keys each batch
`snapshot-{i}` and the partition i publishes it with its own `SnapshotWriter` (its own
tables when there are several, see `adapters.snapshot_store.writer`). Each `write_batch`
receives the `SnapshotBatch`es the batching step gathered during one snapshot interval.

The publish (an append to the writer's recent positions: 100,000 positions cost ~0.5 s of
CPU at 2,000,000 and at 20,000,000, and a fold of the recent rows into the base every
million of them, read beside the publishes and committed between two; docs/snapshots.md)
runs on a background writer thread, so the Bytewax worker thread only joins the batches
and hands them over. The writer thread opens the store too, before its first publish. Its first
publish with positions also reads the stored versions it then keeps (5.7-7.4 s of CPU at
20,000,000 positions), there too, never on the worker thread. The handover coalesces:
while the writer publishes one job, the intervals that come meanwhile merge into a single
waiting job (the newest version per position, the winning decision per reservation, the highest rank per piece of work:
`adapters.snapshot_store.coalesce.Coalesced`, the rules the publish applies anyway). A slow
publish therefore does not stall the fold: the next publish is simply bigger, and the
store catches up in one commit. `write_batch` blocks only when the waiting job holds more
than `max_waiting_rows` rows; since it holds at most one row per distinct position,
reservation and piece of work, its memory is bounded by what the ledger holds, whatever
the event rate (with 500,000 rows, about 200 MB of changes at most).

Exactly once still holds. Bytewax calls `snapshot()` when an epoch closes and commits the
fold's state of that epoch with what it returns; a change handed over but not yet
published when the process dies would be lost (the recovered fold would not emit it
again). Waiting there for the publish would stall the whole worker (the fold, the
`atp.changes` producer) for up to a publish at every epoch. So instead:

1. `write_batch` joins the batches' outputs, adds the events applied to the running
   total, and merges them into the waiting job (or makes them the waiting job), blocking
   only while that job is over its bound and the writer has not taken it.
2. The writer thread takes the waiting job, publishes it, then writes the heartbeat, then
   drops it; maintenance runs there too, between publishes, so it never races a commit:
   every `maintenance_every`, and whenever the publishes have slowed by as much as a
   maintenance run costs (files pile up; see `adapters.snapshot_store.compaction`).
3. `snapshot()` returns the running total and the jobs still pending (the one being
   published and the waiting one): the epoch's state carries whatever of its outputs has
   not landed yet. With a `pending_dir` the jobs are written to files there first and
   the state holds only their numbers (`adapters.snapshot_store.pending`: Bytewax's own
   files stay small however big a merged job grows). A partition resumed with pending
   jobs publishes them first, merged; publishing a job twice changes nothing (versions
   and ranks only move forward).
4. A failure on the writer thread (opening the store, which it does before its first
   publish, included) is kept and raised on the worker thread at the next `write_batch`,
   `snapshot` or `close`; jobs after it are not published (the flow stops and recovery
   replays them).

The `on_publish` callback and the observer are called on the worker thread (the next
`write_batch`, `snapshot` or `close` after the publish), so metrics keyed by worker thread
stay per worker; `seconds` is the publish's own duration on the writer thread.

The resume state is the partition's cumulative count of events applied (so
`snapshot_info` stays right after a restart) and its pending jobs; replayed position
changes carry versions the store already has, replayed work ranks it already has, and
change nothing.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from adapters.snapshot_store.coalesce import Coalesced
from adapters.snapshot_store.compaction import CompactionPolicy
from adapters.snapshot_store.maintenance import MaintenanceReport
from adapters.snapshot_store.pending import PendingJobs
from adapters.snapshot_store.recent import FoldReport
from adapters.snapshot_store.writer import RECENT_LIMIT, SnapshotWriter
from ledger.errors import SnapshotError
from ledger.events import Millis
from ledger.execution import Work
from ledger.outputs import PositionChange, ReservationDecision, SnapshotBatch

__all__ = [
    "DEFAULT_MAX_WAITING_ROWS",
    "FoldObserver",
    "PublishCallback",
    "PublishObserver",
    "SnapshotSink",
    "writer_of_key",
]

_LOG = logging.getLogger("omni_ledger.snapshots")

DEFAULT_MAX_WAITING_ROWS = 500_000
"""Rows the waiting job may hold before `write_batch` blocks: about 200 MB of position
changes, at most one per distinct position changed while one publish ran."""

_TOKENS = itertools.count(1)
"""Names one content of one job in this process (see `PendingJobs.save`)."""

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


@runtime_checkable
class FoldObserver(Protocol):
    """An observer that also wants each fold of a writer's recent positions into its base (optional)."""

    def compacted(self, report: FoldReport) -> None:
        """One fold: its rows and keys, its read (beside the publishes) and its commit (publishes waited)."""


@dataclass(slots=True, eq=False)
class _Job:
    """Outputs handed from the worker thread to the writer thread: one interval's, or several merged."""

    outputs: Coalesced
    applied: int
    handed_at: Millis
    seq: int = -1
    """Rises with each job a writer is handed, across restarts (see `_Partition`); -1: not handed yet."""
    token: int = field(default_factory=lambda: next(_TOKENS))
    """Changes with every merge: a saved copy of the job is current while its token is."""

    def __bool__(self) -> bool:
        return len(self.outputs) > 0

    def merge(self, later: _Job) -> None:
        """Add a later job's outputs; the running total and time are the later job's."""
        o = later.outputs
        self.outputs.add(o.changes(), o.decisions(), o.work())
        self.applied, self.handed_at = later.applied, later.handed_at
        # A restored job merged in: once this one lands, so has that one (see `_Partition`).
        self.seq = max(self.seq, later.seq)
        self.token = next(_TOKENS)

    def saved(self) -> tuple[Any, ...]:
        o = self.outputs
        return (tuple(o.changes()), tuple(o.decisions()), tuple(o.work()), self.applied, self.handed_at, self.seq)

    @classmethod
    def restored(cls, saved: tuple[Any, ...]) -> _Job:
        changes, decisions, work, applied, handed_at, seq = saved
        outputs = Coalesced()
        outputs.add(changes, decisions, work)
        return cls(outputs, applied, handed_at, seq)


SinkState = tuple[int, tuple[Any, ...], int]
"""(events applied so far, the jobs handed over and not published yet, the next job's seq).

The jobs are saved `_Job`s when the sink keeps them in Bytewax's state (no `pending_dir`),
or the numbers of job files in `pending_dir` (`adapters.snapshot_store.pending`).
A bare int: an older state."""


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


@dataclass(slots=True)
class _Folded:
    """A finished fold of the recent positions, for the log and the observer on the worker thread."""

    report: FoldReport
    writer: int


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
        max_waiting_rows: int = DEFAULT_MAX_WAITING_ROWS,
        compaction: CompactionPolicy | None = None,
        pending_dir: Path | None = None,
        recent_limit: int | None = RECENT_LIMIT,
    ) -> None:
        self._index = index
        # Opened by the writer thread before its first publish, not here: Bytewax builds this
        # partition when the first batch reaches it, i.e. on the worker thread once the flow is
        # folding, and opening the store (DuckDB, the DuckLake catalog, the tables) stopped the
        # fold for ~0.5-1 s there (docs/scaling.md, "Seventeenth pass"). A failure to open is
        # the writer thread's failure: raised at the next `write_batch`, `snapshot` or `close`.
        self._open_store = partial(
            SnapshotWriter.open, directory, catalog=catalog, writers=writers, writer=index, recent_limit=recent_limit
        )
        self._writer: SnapshotWriter | None = None
        self._opened = threading.Event()
        # No resume state means the flow starts from nothing: a store with rows here can
        # only come from a crash before the first epoch, whose events are read again.
        saved: tuple[Any, ...] = ()
        next_seq = 0
        if isinstance(resume, tuple):
            resume, saved, next_seq = resume
        self._applied = resume or 0
        self._pending_files = None if pending_dir is None else PendingJobs(pending_dir)
        restored = self._restore(saved)
        # Jobs are published in the order handed over, and the writer records the last
        # one's seq beside the store: a pending job at or below it has landed already (the
        # epoch closed while it was being published) and publishing it again would only
        # add an empty snapshot. Seqs never repeat: a restart continues past both.
        self._published_file = Path(directory) / f".published-{index}.json"
        published = self._read_published()
        self._next_seq = max(next_seq, published + 1)
        self._retention = retention
        self._maintenance_every = maintenance_every.total_seconds()
        self._last_maintenance = time.monotonic()
        # Publishes slow down as files pile up between maintenance runs: also run it when
        # that has cost as much as a run (adapters.snapshot_store.compaction).
        self._compaction = compaction or CompactionPolicy()
        self._on_publish = on_publish
        self._observer = observer
        self._max_waiting_rows = max(1, max_waiting_rows)
        # The handover: one job being published, at most one waiting, which later
        # intervals merge into; the condition guards both and the stop flag.
        self._handover = threading.Condition()
        self._in_flight: _Job | None = None
        self._waiting: _Job | None = None
        self._stopping = False
        self._done: queue.SimpleQueue[_Done | _Maintained | _Folded] = queue.SimpleQueue()
        self._failure: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"snapshot-writer-{index}", daemon=True)
        self._thread.start()
        # Handed over before the last epoch closed but not published then: publish first
        # (merged: publishing them in one job writes what publishing them in turn would).
        for job in restored:
            if job.seq > published:
                self._merge_waiting(job)

    def _restore(self, saved: tuple[Any, ...]) -> list[_Job]:
        if self._pending_files is not None:
            return [_Job.restored(job) for job in self._pending_files.resume(saved)]
        if any(not isinstance(job, tuple) for job in saved):
            # Names of job files: this state was written by a sink with a pending_dir.
            msg = (
                "the snapshot sink's recovery state names pending-job files, but this sink keeps its pending "
                "jobs in Bytewax's state (no pending_dir): run it with the pending_dir it was run with"
            )
            raise SnapshotError(msg)
        return [_Job.restored(job) for job in saved]

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
        job = _Job(Coalesced(), self._applied, time.time_ns() // 1_000_000)
        job.outputs.add(changes, decisions, work)
        self._merge_waiting(job)

    def _merge_waiting(self, job: _Job) -> None:
        # 1. Merge into the waiting job (or wait in its place); block only while the waiting
        # job holds more than `max_waiting_rows` rows and the writer has not taken it yet.
        with self._handover:
            waiting = self._waiting
            if waiting is None:
                if job.seq < 0:
                    job.seq = self._next_seq
                    self._next_seq += 1
                self._waiting = waiting = job
            else:
                waiting.merge(job)
                self._next_seq = max(self._next_seq, job.seq + 1)
            self._handover.notify_all()
            while self._waiting is waiting and len(waiting.outputs) > self._max_waiting_rows:
                if self._failure is not None or not self._thread.is_alive():
                    break
                self._handover.wait(timeout=1.0)
        self._settle()

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
        with self._handover:
            pending = [job for job in (self._in_flight, self._waiting) if job is not None and job]
        # Outside the lock: only this thread changes a job (merging into the waiting one),
        # the writer thread only takes it, so the writer is not held up by the pickling.
        saved: tuple[Any, ...]
        if self._pending_files is None:
            saved = tuple(job.saved() for job in pending)
        else:
            saved = self._pending_files.save([(job.token, job.saved) for job in pending])
        return self._applied, saved, self._next_seq

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with self._handover:
                self._stopping = True
                self._handover.notify_all()
            self._thread.join()
            if self._writer is not None:
                # A fold still running beside the last publish: its end is reported too.
                self._writer.wait_for_fold()
                for fold in self._writer.take_folds():
                    self._done.put(_Folded(fold, self._index))
            self._settle()
        finally:
            if self._writer is not None:
                self._writer.close()

    def opened(self, timeout: float | None = None) -> SnapshotWriter:
        """The partition's writer, once the writer thread has opened the store (raises its failure to)."""
        if not self._opened.wait(timeout):
            msg = f"the snapshot writer did not open the store within {timeout} s"
            raise TimeoutError(msg)
        if self._writer is None:
            msg = f"the snapshot writer failed to open the store: {self._failure}"
            raise SnapshotError(msg) from self._failure
        return self._writer

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
            if isinstance(done, _Folded):
                fold = done.report
                # Named for an SRE: the read ran beside the publishes, the commit held them.
                _LOG.info(
                    "snapshot store recent positions folded into the base",
                    extra={
                        "step": "snapshots",
                        "writer": done.writer,
                        "snapshot_id": fold.snapshot_id,
                        "rows": fold.rows,
                        "keys": fold.keys,
                        "read_seconds": round(fold.read_seconds, 3),
                        "commit_seconds": round(fold.commit_seconds, 3),
                        "background": fold.background,
                    },
                )
                if isinstance(self._observer, FoldObserver):
                    self._observer.compacted(fold)
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
        _yield_to_the_fold()
        try:
            self._writer = self._open_store()
            # Its queries run on this thread alone, which yields the CPU to the fold (`_yield_to_the_fold`).
            self._writer.use_one_thread()
        except BaseException as exc:
            self._failure = exc  # as a failed publish: every job stays pending, the worker raises
        finally:
            self._opened.set()
        while True:
            with self._handover:
                while self._waiting is None and not self._stopping:
                    self._handover.wait()
                job = self._waiting
                if job is None:
                    return  # stopping, and everything handed over is published
                self._in_flight, self._waiting = job, None
                self._handover.notify_all()  # a worker blocked on the bound may go on
            try:
                if self._failure is None:
                    self._publish(job)
                    if job:
                        self._write_published(job.seq)
            except BaseException as exc:
                self._failure = exc
            finally:
                with self._handover:
                    if self._failure is None:
                        self._in_flight = None
                    self._handover.notify_all()

    def _publish(self, job: _Job) -> None:
        # 2. Publish, heartbeat, maybe maintenance, in this order on this thread.
        writer = self._writer
        assert writer is not None  # opened first by `_run`, which publishes nothing if that failed
        if not job:
            # A heartbeat (or only duplicates): nothing new, and the newest snapshot is still current.
            now = time.time_ns() // 1_000_000
            writer.heartbeat(now)
            self._done.put(_Done(None, job.applied, 0, 0.0, now))
            return
        started = time.perf_counter()
        changes = job.outputs.changes()
        snapshot_id = writer.publish(
            changes, job.outputs.decisions(), job.outputs.work(), events_applied=job.applied, now=job.handed_at
        )
        seconds = time.perf_counter() - started
        now = time.time_ns() // 1_000_000
        writer.heartbeat(now)
        rows = len(job.outputs)
        self._done.put(_Done(snapshot_id, job.applied, rows, seconds, now, changes))
        for fold in writer.take_folds():
            self._done.put(_Folded(fold, self._index))
        # The file maintenance policy judges the publishes alone: waiting for a fold of the
        # recent table (step 10 of the publish) is not a publish slowed down by files piling up.
        self._compaction.published(seconds - writer.compaction_seconds)
        on_timer = time.monotonic() - self._last_maintenance >= self._maintenance_every
        if on_timer or self._compaction.due():
            # Between publishes, on the writer's own thread: maintenance never races a commit.
            report = writer.maintain(keep_snapshots_for=self._retention)
            self._compaction.compacted(report.seconds)
            self._last_maintenance = time.monotonic()
            self._done.put(_Maintained(report, "interval" if on_timer else "publishes"))


WRITER_NICENESS = 10
"""How much lower the writer thread's CPU priority is than the fold's (Linux nice units)."""


def _yield_to_the_fold() -> None:
    """Lower the writer thread's CPU priority (Linux: a thread has its own nice value).

    The publish is off the fold's path but not off its cores: a DuckDB MERGE is native
    code that holds no GIL, and a py-spy profile of the flow under load gave the writer
    thread 30% of the process's samples but 0.6% of the samples holding the GIL. On a
    machine with spare cores this changes nothing; on a busy one, the fold (which
    `atp.changes` and the decisions wait on) gets the CPU first and the publishes
    coalesce into bigger ones (step 1). DuckDB runs the writer's queries on this thread
    only (`SnapshotWriter.use_one_thread`), so none of its own threads escapes the lower
    priority.
    """
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + WRITER_NICENESS)
    except (OSError, AttributeError):  # not Linux, or not allowed: the publish runs as it did
        pass


class SnapshotSink(FixedPartitionedSink[SnapshotBatch, SinkState]):
    """Publish `("snapshot-{i}", SnapshotBatch)` items into the DuckLake store at `directory`.

    `catalog`: "" keeps the DuckLake catalog in SQLite at DIR/catalog.sqlite;
    "postgres:<libpq conninfo>" keeps it in PostgreSQL (data files stay under DIR/data).
    `writers`: how many partitions (writers) share the store, each owning the keys the
    flow routes to it; `max_waiting_rows`: rows the job waiting for a busy writer may
    hold (later intervals merge into it) before `write_batch` blocks; `compaction`: makes
    each writer's policy for maintenance between timer runs; `pending_dir`: where the
    jobs not yet published at an epoch's close are saved, Bytewax keeping only their
    numbers (None: in Bytewax's state; see `adapters.snapshot_store.pending`);
    `recent_limit`: the writers' `SnapshotWriter.open(recent_limit=...)`.
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
        max_waiting_rows: int = DEFAULT_MAX_WAITING_ROWS,
        compaction: Callable[[], CompactionPolicy] = CompactionPolicy,
        pending_dir: Path | None = None,
        recent_limit: int | None = RECENT_LIMIT,
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
        self._max_waiting_rows = max_waiting_rows
        self._compaction = compaction
        self._pending_dir = pending_dir
        self._recent_limit = recent_limit

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
            max_waiting_rows=self._max_waiting_rows,
            compaction=self._compaction(),
            pending_dir=None if self._pending_dir is None else self._pending_dir / for_part,
            recent_limit=self._recent_limit,
        )
