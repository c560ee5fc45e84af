"""The snapshot sink's handover: a slow publish does not stall the fold, and nothing is lost or doubled.

Real DuckLake stores on disk; the only stand-in is a gate in front of the writer's own
publish, to make a publish as slow as a test needs (a busy catalog under load).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from adapters.snapshot_store import SnapshotReader, SnapshotWriter
from adapters.snapshot_store.pending import PendingJobs
from adapters.snapshot_store.recent import FoldReport
from adapters.snapshot_store.sink import SnapshotSink
from ledger.errors import RecoveryError, SnapshotError
from ledger.execution import TaskStatus, Work
from ledger.outputs import (
    DecisionStatus,
    FoldTally,
    InboundLine,
    OfferTerms,
    PositionChange,
    ReservationDecision,
    SnapshotBatch,
)
from tests.integration.test_snapshot_store import (
    T0,
    _GatedPublish,
    _until_published,
    change,
    decision,
    on_hand_by_key,
    task,
)

_TASK_STATUSES = list(TaskStatus)
_DECISIONS = [DecisionStatus.ACCEPTED, DecisionStatus.RELEASED, DecisionStatus.FULFILLED, DecisionStatus.EXPIRED]


def _intervals(count: int, seed: int) -> list[SnapshotBatch]:
    """`count` intervals of outputs on a few hot keys: versions rising per key, offers, inbound, decisions, work."""
    rng = random.Random(seed)
    versions: dict[tuple[str, str], int] = {}
    out: list[SnapshotBatch] = []
    clock = T0
    for _ in range(count):
        changes: list[PositionChange] = []
        decisions: list[ReservationDecision] = []
        work: list[Work] = []
        for _ in range(rng.randint(0, 30)):
            key = (f"S{rng.randint(1, 4)}", f"K{rng.randint(1, 40):02d}")
            version = versions[key] = versions.get(key, 0) + 1
            clock += 1
            offer = OfferTerms(rng.randint(0, 9), 1.5, 2, clock) if rng.random() < 0.2 else None
            inbound = (
                (InboundLine(f"po-{version}", rng.randint(1, 5), clock + 3_600_000),) if rng.random() < 0.3 else ()
            )
            changes.append(
                change(*key, version, on_hand=rng.randint(-3, 50), inbound=inbound, offer=offer, occurred=clock)
            )
        for _ in range(rng.randint(0, 3)):
            clock += 1
            decisions.append(decision(f"R{rng.randint(1, 15)}", rng.choice(_DECISIONS), clock))
        for _ in range(rng.randint(0, 2)):
            clock += 1
            work.append(task(rng.choice(_TASK_STATUSES), ref=f"T{rng.randint(1, 6)}", updated=clock - T0))
        applied = len(changes) + len(decisions)
        out.append(SnapshotBatch(tuple(changes), tuple(decisions), tuple(work), FoldTally(applied, 0, 0)))
    return out


def _contents(store: Path) -> dict[str, Any]:
    """Everything a reader sees in the latest snapshot, but the snapshot ids (a merged run makes fewer)."""
    with SnapshotReader.open(store) as reader:
        tables = {}
        for name, order in (
            ("positions", "site_id, sku"),
            ("inbound", "site_id, sku, ref"),
            ("offers", "seller_id, sku"),
            ("reservations", "reservation_id"),
            ("store_tasks", "task_id"),
        ):
            tables[name] = reader.sql(f"SELECT * FROM {name} ORDER BY {order}")
        latest = reader.latest()
        assert latest is not None
        tables["events_applied"] = latest["events_applied"]
    return tables


def _published_one_by_one(store: Path, intervals: list[SnapshotBatch]) -> None:
    """The uninterrupted reference: each interval published on its own, in order."""
    applied = 0
    with SnapshotWriter.open(store) as writer:
        for n, batch in enumerate(intervals):
            applied += batch.tally.applied
            writer.publish(batch.changes, batch.decisions, batch.work, events_applied=applied, now=T0 + n)


def _in_time(call: Callable[[], object], seconds: float = 20.0) -> None:
    with ThreadPoolExecutor(1) as pool:
        pool.submit(call).result(timeout=seconds)


@pytest.mark.integration
def test_intervals_handed_over_during_a_slow_publish_merge_and_the_store_ends_as_if_published_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    intervals = _intervals(60, seed=3)
    _published_one_by_one(tmp_path / "reference", intervals)

    gated = _GatedPublish(monkeypatch)
    part = SnapshotSink(tmp_path / "merged").build_part("snapshots", "snapshots", None)
    try:
        part.write_batch([intervals[0]])
        assert gated.started.acquire(timeout=30)  # the writer holds the first interval, its publish held back
        # The fold is not blocked: 59 intervals are handed over while that publish waits.
        _in_time(lambda: [part.write_batch([batch]) for batch in intervals[1:]])
        waiting = part._waiting
        assert waiting is not None
        # One job waits, holding at most one row per distinct position, reservation and task.
        positions = {(c.site_id, c.sku) for b in intervals[1:] for c in b.changes}
        reservations = {d.reservation_id for b in intervals[1:] for d in b.decisions}
        tasks = {w.task_id for b in intervals[1:] for w in b.work}  # type: ignore[union-attr]
        rows = len(waiting.outputs)
        assert rows <= 2 * len(positions) + len(reservations) + len(tasks)
        assert len(waiting.outputs.changes()) < sum(len(b.changes) for b in intervals[1:])
        gated.gate.set()
        part.close()
    finally:
        gated.gate.set()
        part.close()
    assert _contents(tmp_path / "merged") == _contents(tmp_path / "reference")


@pytest.mark.integration
def test_the_handover_blocks_only_when_the_waiting_job_outgrows_its_bound_in_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gated = _GatedPublish(monkeypatch)
    store = tmp_path / "store"
    part = SnapshotSink(store, max_waiting_rows=2).build_part("snapshots", "snapshots", None)
    tally = FoldTally(1, 0, 0)
    try:
        part.write_batch([SnapshotBatch((change("S1", "A", 1),), tally=tally)])  # taken by the writer, held
        assert gated.started.acquire(timeout=30)
        # The same two positions again and again: they merge, the waiting job stays at 2 rows.
        for version in range(2, 40):
            batch = SnapshotBatch((change("S1", "A", version), change("S1", "B", version)), tally=tally)
            _in_time(lambda batch=batch: part.write_batch([batch]))
        # A third position takes it over its bound: the handover waits for the writer.
        third = ThreadPoolExecutor(1).submit(
            part.write_batch, [SnapshotBatch((change("S1", "C", 1, on_hand=7),), tally=tally)]
        )
        with pytest.raises(TimeoutError):
            third.result(timeout=0.5)
        gated.gate.set()
        third.result(timeout=60)
        part.close()
    finally:
        gated.gate.set()
        part.close()
    with SnapshotReader.open(store) as reader:
        assert on_hand_by_key(reader) == {("S1", "A"): 10, ("S1", "B"): 10, ("S1", "C"): 7}
        assert reader.latest()["events_applied"] == 40  # type: ignore[index]


@pytest.mark.integration
def test_pending_jobs_are_saved_in_files_bytewax_keeps_their_numbers_and_a_resume_publishes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    intervals = _intervals(20, seed=5)
    _published_one_by_one(tmp_path / "reference", intervals)
    store, pending = tmp_path / "store", tmp_path / "recovery" / "sink"
    gated = _GatedPublish(monkeypatch)
    part = SnapshotSink(store, pending_dir=pending).build_part("snapshots", "snapshots", None)
    part.write_batch([intervals[0]])
    assert gated.started.acquire(timeout=30)
    for batch in intervals[1:]:
        part.write_batch([batch])
    saved = part.snapshot()  # the epoch's state, while the first publish is held back
    applied, jobs, _ = saved
    assert applied == sum(b.tally.applied for b in intervals)
    assert all(isinstance(number, int) for number in jobs)
    assert len(jobs) == 2  # the job being published and the merged waiting one
    assert sorted(p.name for p in (pending / "snapshots").iterdir()) == [f"job-{n:012d}" for n in sorted(jobs)]
    # The process dies here: the held-back publish never lands, the waiting job never starts.
    monkeypatch.undo()
    part.opened().close()  # release the store as a dead process would
    resumed = SnapshotSink(store, pending_dir=pending).build_part("snapshots", "snapshots", saved)
    try:
        resumed.close()  # publishes the pending jobs first, then ends cleanly
    finally:
        gated.gate.set()  # the dead process's held-back call fails on its closed writer
    assert _contents(store) == _contents(tmp_path / "reference")


def test_job_files_never_pile_up_a_resume_drops_what_it_does_not_name_and_refuses_a_missing_one(
    tmp_path: Path,
) -> None:
    jobs = PendingJobs(tmp_path)
    first = jobs.save([(1, lambda: ("one",)), (2, lambda: ("two",))])
    second = jobs.save([(2, lambda: ("two, rewritten",)), (3, lambda: ("three",))])
    assert second[0] == first[1]  # job 2 unchanged (same token): not written again
    third = jobs.save([(4, lambda: ("four",))])
    # Only the files of the last two snapshots are left (the previous one is final).
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"job-{n:012d}" for n in sorted({*second, *third})]
    (tmp_path / ".tmp-job-000000000099").write_bytes(b"half")

    resumed = PendingJobs(tmp_path)
    assert resumed.resume(second) == [("two",), ("three",)]
    # Files of an epoch never committed (third) and temp files are gone; new numbers move past them.
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"job-{n:012d}" for n in sorted(second)]
    assert resumed.save([(9, lambda: ("nine",))])[0] > max(third)

    (tmp_path / f"job-{second[0]:012d}").unlink()
    with pytest.raises(RecoveryError, match="missing"):
        PendingJobs(tmp_path).resume(second)


@pytest.mark.integration
def test_the_writer_thread_opens_the_store_and_a_failure_to_open_stops_the_worker_with_the_jobs_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened_on: list[str] = []
    real_open = SnapshotWriter.open.__func__  # type: ignore[attr-defined]

    def recording_open(cls: type[SnapshotWriter], *args: Any, **kwargs: Any) -> SnapshotWriter:
        opened_on.append(threading.current_thread().name)
        return real_open(cls, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(SnapshotWriter, "open", classmethod(recording_open))
    intervals = _intervals(3, seed=11)
    store = tmp_path / "store"
    part = SnapshotSink(store).build_part("snapshots", "snapshots", None)
    part.write_batch([intervals[0]])
    part.close()
    # Opened once, by the writer thread: the worker thread that builds the partition goes on folding.
    assert opened_on == ["snapshot-writer-0"]
    with SnapshotReader.open(store) as reader:
        assert reader.latest()["events_applied"] == intervals[0].tally.applied  # type: ignore[index]

    # Another writer holds the store: the partition's writer cannot open it.
    with SnapshotWriter.open(store):
        refused = SnapshotSink(store).build_part("snapshots", "snapshots", None)
        with pytest.raises(SnapshotError, match="locked"):
            refused.opened(30)
        # The worker thread learns it at its next call, before an epoch could commit without the outputs.
        with pytest.raises(SnapshotError, match="writer thread failed"):
            refused.write_batch([intervals[1]])
        with pytest.raises(SnapshotError, match="writer thread failed"):
            refused.snapshot()
        with pytest.raises(SnapshotError, match="writer thread failed"):
            refused.close()


def _niceness(tid: int) -> int:
    # /proc/<pid>/task/<tid>/stat: field 19 is the nice value (after the parenthesised name).
    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread nice values are read from Linux's /proc")
def test_the_writer_thread_yields_the_cpu_to_the_fold_and_duckdb_runs_on_it_alone(tmp_path: Path) -> None:
    part = SnapshotSink(tmp_path / "store").build_part("snapshots", "snapshots", None)
    try:
        writer = next(t for t in threading.enumerate() if t.name == "snapshot-writer-0")
        assert writer.native_id is not None
        fold = _niceness(threading.get_native_id())
        assert _niceness(writer.native_id) == min(19, fold + 10)
        assert part.opened(30)._con.execute("SELECT current_setting('threads')").fetchone() == (1,)
    finally:
        part.close()


class _FoldsSeen:
    """An observer that also wants the folds (`sink.FoldObserver`)."""

    def __init__(self) -> None:
        self.folds: list[FoldReport] = []

    def published(self, *args: object) -> None:
        pass

    def maintained(self, *args: object) -> None:
        pass

    def compacted(self, report: FoldReport) -> None:
        self.folds.append(report)


@pytest.mark.integration
def test_the_sink_logs_and_reports_each_fold_of_the_recent_positions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "snapshots"
    seen = _FoldsSeen()
    part = SnapshotSink(store, observer=seen, recent_limit=300).build_part("snapshots", "snapshots", None)
    caplog.set_level(logging.INFO, logger="omni_ledger.snapshots")
    try:
        for version in (1, 2):
            rows = [change("S1", f"K{i:03d}", version, on_hand=version) for i in range(300)]
            part.write_batch([SnapshotBatch(tuple(rows), tally=FoldTally(applied=300, duplicates=0, too_late=0))])
            _until_published(part)
    finally:
        part.close()  # waits for a fold still running, and reports it
    # One fold per publish past the limit, unless the first was still running at the second.
    assert [(fold.rows, fold.keys, fold.background) for fold in seen.folds] in (
        [(300, 300, True)] * 2,
        [(300, 300, True)],
    )
    logged = [r for r in caplog.records if r.getMessage() == "snapshot store recent positions folded into the base"]
    assert [(r.rows, r.keys) for r in logged] == [(fold.rows, fold.keys) for fold in seen.folds]  # type: ignore[attr-defined]
    assert all(r.commit_seconds >= 0 and r.read_seconds > 0 for r in logged)  # type: ignore[attr-defined]
    with SnapshotReader.open(store) as reader:
        assert set(on_hand_by_key(reader).values()) == {2}
