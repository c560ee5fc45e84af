"""The Bytewax glue around the pure fold: one `ShardLogic` per shard of positions.

It only delegates: `ledger.shard.Shard` keeps a shard's positions (and `ledger.fold`
decides each one), `adapters.shard_checkpoints` makes a checkpoint of what changed
durable at every epoch close. The state it hands Bytewax to snapshot is a pointer to that
checkpoint, `(shard, S, c)`: Bytewax's recovery store holds one small row per shard, not
one per position (docs/scaling.md says why that matters past a million positions).

Items are micro-batches wherever the runtime allows, because each item crossing a step
costs a call from Rust into Python: a source read is admitted as one item and leaves
as one group of effects per shard (`admit_batch`); a fold call of a shard leaves as one
`Folded` (per snapshot writer), whatever the number of positions it changed.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple, Protocol, cast

from bytewax.operators import StatefulBatchLogic

from adapters.clock import Clock
from adapters.codec import Decoder, RawInput
from adapters.shard_checkpoints import ShardCheckpoints, ShardPointer, check_pointer, save_together
from flows.admission import admit_read
from ledger.dead_letter import DeadLetter
from ledger.effects import Effect, by_position
from ledger.errors import RecoveryError
from ledger.events import InventoryEvent, Millis
from ledger.execution import DropshipOrder, ShuttleLoad, StoreTask, Work
from ledger.fold import Output
from ledger.outputs import FoldTally, PositionChange, ReservationDecision, SnapshotBatch
from ledger.policy import LedgerPolicy
from ledger.position import Position
from ledger.shard import ChangedRows, PositionKey, Shard, shard_of

__all__ = [
    "Admitted",
    "Fold",
    "FoldObserver",
    "Folded",
    "ShardBatch",
    "ShardLogic",
    "SnapshotBatchLogic",
    "Stamped",
    "admit_batch",
]

Stamped = tuple[Millis, Effect]
"""An effect with the ledger clock's reading when its event was admitted."""


ShardBatch = tuple[int, tuple[tuple[PositionKey, tuple[Stamped, ...]], ...]]
"""One read's effects for one shard: (shard index, ((site|sku, effects in arrival order), ...))."""


class Admitted(NamedTuple):
    """One source read, admitted: effects grouped by shard, then position (arrival order kept); what was refused."""

    groups: list[tuple[str, ShardBatch]]
    rejected: list[DeadLetter]


def admit_batch(
    read: tuple[RawInput, ...] | RawInput,
    clock: Clock,
    max_skew_ms: int,
    decode: Decoder | None = None,
    shards: int = 1,
) -> Admitted:
    """Decode, validate, stamp and split a read; group its effects by position, the positions by shard key."""
    admitted = admit_read(read if isinstance(read, tuple) else (read,), clock, max_skew_ms, decode)
    # Split in two C loops rather than one Python loop with a branch an event: most reads refuse nothing.
    rejected = [item for item in admitted if isinstance(item, DeadLetter)]
    stamped = cast(
        "list[tuple[Millis, InventoryEvent]]",
        [item for item in admitted if not isinstance(item, DeadLetter)] if rejected else admitted,
    )
    by_key = by_position(stamped)
    by_shard: dict[int, list[tuple[PositionKey, tuple[Stamped, ...]]]] = {}
    get = by_shard.get
    for key, group in by_key.items():
        shard = shard_of(key, shards)
        into = get(shard)
        if into is None:
            by_shard[shard] = [(key, tuple(group))]
        else:
            into.append((key, tuple(group)))
    return Admitted([(f"shard-{i}", (i, tuple(groups))) for i, groups in by_shard.items()], rejected)


class Folded(NamedTuple):
    """What one fold call of a shard produced, sorted by where it goes: one item per call, not per position.

    Each item crossing a Bytewax step costs a call from Rust into Python; a position per
    item paid it six to eight times per event. `writer` is the snapshot writer of these
    positions (0 with a single writer; with several, a call's outputs are split by writer).
    """

    changes: tuple[PositionChange, ...]
    decisions: tuple[ReservationDecision, ...]
    work: tuple[Work, ...]
    dead_letters: tuple[DeadLetter, ...]
    tally: FoldTally
    writer: int = 0


class _Outputs:
    """The outputs of one fold call, gathered by kind (one `_Outputs` per snapshot writer)."""

    __slots__ = ("applied", "changes", "dead", "decisions", "duplicates", "too_late", "work")

    def __init__(self) -> None:
        self.changes: list[PositionChange] = []
        self.decisions: list[ReservationDecision] = []
        self.work: list[Work] = []
        self.dead: list[DeadLetter] = []
        self.applied = self.duplicates = self.too_late = 0

    def add(self, out: Sequence[Output]) -> None:
        # The common shape, [change, tally] (a sale, a receipt, a count), without a type test each.
        if len(out) == 2 and type(out[0]) is PositionChange and type(out[1]) is FoldTally:
            self.changes.append(out[0])
            tally: FoldTally = out[1]
            self.applied += tally.applied
            self.duplicates += tally.duplicates
            self.too_late += tally.too_late
            return
        for item in out:
            kind = type(item)
            if kind is PositionChange:
                self.changes.append(item)  # type: ignore[arg-type]
            elif kind is FoldTally:
                self.applied += item.applied  # type: ignore[union-attr]
                self.duplicates += item.duplicates  # type: ignore[union-attr]
                self.too_late += item.too_late  # type: ignore[union-attr]
            elif kind is ReservationDecision:
                self.decisions.append(item)  # type: ignore[arg-type]
            elif kind is DeadLetter:
                self.dead.append(item)  # type: ignore[arg-type]
            else:
                self.work.append(item)  # type: ignore[arg-type]

    def folded(self, writer: int) -> Folded | None:
        if not (self.changes or self.decisions or self.work or self.dead) and not (
            self.applied or self.duplicates or self.too_late
        ):
            return None
        return Folded(
            tuple(self.changes),
            tuple(self.decisions),
            tuple(self.work),
            tuple(self.dead),
            FoldTally(self.applied, self.duplicates, self.too_late),
            writer,
        )


Fold = tuple[Position | None, Sequence[Stamped], Position, Sequence[Output]]
"""One position's fold in a shard call: (before, its effects, after, what it emitted)."""


class FoldObserver(Protocol):
    """Told what each fold call of a shard did (metrics); runs on the worker thread, so it must be cheap."""

    def resumed(self, positions: int, negative: int) -> None: ...

    def folded_call(self, folds: Sequence[Fold]) -> None:
        """Every position a shard call folded, in the order folded: one call per shard call, not per position."""

    def checkpointed(self, rows: int, seconds: float) -> None:
        """A shard's checkpoint at an epoch close: `rows` changed rows made durable in `seconds`."""

    def epoch_closed(self, checkpoints: int, seconds: float) -> None:
        """A worker's epoch close: `checkpoints` shards made durable together in `seconds` (its folds waited)."""


class _WorkerShards:
    """The shards one worker thread built for one flow, and how many fold calls it has made."""

    def __init__(self) -> None:
        self.logics: list[ShardLogic] = []
        self.calls = 0


class EpochClose:
    """A worker's shards checkpointed together at an epoch close: one wait for their fsyncs, not one each.

    Bytewax (0.21.1, `src/operators.rs` 931-975) calls `snapshot()` on every shard a worker
    touched in an epoch one after another, in one loop, with nothing folded in between, and
    each pointer it is given must name a durable checkpoint. Written one by one, 16 shards'
    checkpoints (~12 ms of fsyncs each) held the worker ~150 ms at every close; at once, in
    `bench.epoch_close`, ~50 ms. Here the first `snapshot()` of a close saves every changed
    shard of its worker at once (`adapters.shard_checkpoints.save_together`) and the rest
    hand over what was written for them. In a tailing flow a close still takes ~100-300 ms:
    there it is the CPU of turning ~5,000 changed rows into delta images (39-124 ms, in
    `ledger.shard`) plus waiting for a core on a busy machine, not the fsyncs, which end
    2-11 ms after the last image (docs/scaling.md, "Tenth pass").

    One per flow; the shards are kept per worker thread, so a worker never touches
    another's shards. A shard saved with the others but not asked for its pointer (Bytewax
    asks every shard it woke, and only a woken shard changes) is saved again at its next
    close, and its unasked checkpoint frees no older file (`ShardCheckpoints.handed_over`).
    A shard whose checkpoint failed hands over no pointer again: the rows taken for it are
    in no checkpoint, so every later close of its worker raises.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def worker(self) -> _WorkerShards:
        """This thread's shards (created on first use)."""
        shards: _WorkerShards | None = getattr(self._local, "shards", None)
        if shards is None:
            shards = self._local.shards = _WorkerShards()
        return shards

    def save(self, asking: ShardLogic) -> None:
        """Checkpoint every shard of `asking`'s worker that changed since its last checkpoint, at once."""
        began = time.perf_counter()
        worker = self.worker()
        logics = worker.logics if asking in worker.logics else [*worker.logics, asking]
        saves: list[tuple[ShardLogic, ShardCheckpoints, ChangedRows]] = []
        for logic in logics:
            taken = logic.take_checkpoint(worker.calls)
            if taken is not None:
                saves.append((logic, *taken))
        lasts = [store.last for _, store, _ in saves]
        try:
            written = save_together([(store, changed, logic.shard) for logic, store, changed in saves])
        except BaseException as exc:
            for (logic, store, _), last in zip(saves, lasts, strict=True):
                if store.last == last:  # not written: its taken changes are in no checkpoint
                    logic.failed(exc)
            raise
        for (logic, _, changed), (pointer, seconds) in zip(saves, written, strict=True):
            logic.saved(pointer, worker.calls, len(changed), seconds)
        if saves:
            asking.epoch_closed(len(saves), time.perf_counter() - began)


class ShardLogic(StatefulBatchLogic[ShardBatch, Folded, ShardPointer]):
    """Folds the batches of one shard's positions; checkpoints what changed at each epoch close.

    Each call emits one `Folded` per snapshot writer it has outputs for (one with a single
    writer). A live clock arms one timer per shard, for the earliest hold expiry among its
    positions. With no checkpoint directory (recovery off) nothing is written and the
    pointer is `c = 0`.
    """

    def __init__(
        self,
        resume: ShardPointer | None,
        policy: LedgerPolicy,
        clock: Clock,
        checkpoints: Path | None,
        shards: int,
        observer: FoldObserver | None = None,
        writers: int = 1,
        close: EpochClose | None = None,
    ) -> None:
        self._writers = writers
        # Checkpoints taken at this epoch close by the worker's first `snapshot()`: (pointer,
        # the worker's fold calls then). Without an `EpochClose` each shard saves its own.
        self._close = close if close is not None else EpochClose()
        self._worker = self._close.worker()
        self._worker.logics.append(self)
        self._saved: tuple[ShardPointer, int] | None = None
        self._failure: BaseException | None = None
        self._policy = policy
        self._clock = clock
        self._observer = observer
        self._root = checkpoints
        self._shards = shards
        self._shard = Shard(track_changes=checkpoints is not None)
        self._index: int | None = None
        self._store: ShardCheckpoints | None = None
        if resume is not None:
            index, _, checkpoint = check_pointer(resume, shards)
            if checkpoints is None:
                # Without its files the pointer would resume an empty shard: positions lost, silently.
                msg = (
                    f"the recovery state points at checkpoint {checkpoint} of shard {index}, but this flow was "
                    "built without a shard checkpoint directory (Wiring.shard_checkpoints): give it the "
                    "recovery directory's shards/ directory"
                )
                raise RecoveryError(msg)
            self._open(index)
            if self._store is not None:
                self._shard.restore(self._store.resume(checkpoint))
            if observer is not None:
                # Counted over the columns: building a position per row to count it took
                # ~47 us each, 95 s of a resume at 2M positions.
                observer.resumed(*self._shard.census())

    def _open(self, index: int) -> None:
        self._index = index
        if self._root is not None:
            self._store = ShardCheckpoints(self._root, index, self._shards)

    def on_batch(self, values: list[ShardBatch]) -> tuple[list[Folded], bool]:
        self._worker.calls += 1
        if self._index is None:
            # A shard with no saved pointer: built on its first item, which names it.
            self._open(values[0][0])
            if self._store is not None:
                self._store.start_empty()
        groups: Sequence[tuple[PositionKey, Sequence[Stamped]]]
        if len(values) == 1:
            groups = values[0][1]
        else:
            # Several reads in one call: each position's effects stay in arrival order.
            merged: dict[PositionKey, list[Stamped]] = {}
            for _, read in values:
                for key, read_effects in read:
                    got = merged.get(key)
                    if got is None:
                        merged[key] = list(read_effects)
                    else:
                        got.extend(read_effects)
            groups = list(merged.items())
        shard, policy, observer = self._shard, self._policy, self._observer
        folds: list[Fold] = []
        if self._writers == 1:
            gathered = _Outputs()
            add = gathered.add
            for key, effects in groups:
                before, after, outputs = shard.fold(key, effects, policy)
                if observer is not None:
                    folds.append((before, effects, after, outputs))
                add(outputs)
            if observer is not None:
                observer.folded_call(folds)
            folded = gathered.folded(0)
            return ([] if folded is None else [folded]), StatefulBatchLogic.RETAIN
        results = []
        for key, effects in groups:
            before, after, outputs = shard.fold(key, effects, policy)
            if observer is not None:
                folds.append((before, effects, after, outputs))
            results.append((key, outputs))
        if observer is not None:
            observer.folded_call(folds)
        return self._folded(results), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[Folded], bool]:
        self._worker.calls += 1
        return self._folded(self._shard.expire_due(self._clock.now(), self._policy)), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Folded], bool]:
        self._worker.calls += 1
        # A finite replay ends with the clock at the input's newest event: expire what is due.
        if self._clock.live:
            return [], StatefulBatchLogic.RETAIN
        return self._folded(self._shard.expire_all(self._clock.final(), self._policy)), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if not self._clock.live:
            return None
        due = self._shard.next_due()
        return None if due is None else datetime.fromtimestamp(due / 1000, tz=UTC)

    def snapshot(self) -> ShardPointer:
        assert self._index is not None
        store = self._store
        if store is None:
            return self._index, self._shards, 0
        saved, self._saved = self._saved, None
        if saved is None or saved[1] != self._worker.calls:
            # The first shard asked at this close (or one saved at an earlier close and not
            # asked then): every changed shard of the worker is made durable now, this one too.
            self._close.save(self)
            saved, self._saved = self._saved, None
            assert saved is not None
        # Durable before Bytewax holds the pointer (adapters/shard_checkpoints.py, step 1).
        return store.handed_over(saved[0])

    @property
    def shard(self) -> Shard:
        return self._shard

    def take_checkpoint(self, calls: int) -> tuple[ShardCheckpoints, ChangedRows] | None:
        """For `EpochClose`: what this shard must write now (None: nothing, its pointer is noted as it stands)."""
        store = self._store
        if store is None or self._index is None:
            return None
        if self._failure is not None:
            # The rows taken for the failed checkpoint are in none: an "unchanged" pointer
            # now would name a checkpoint without them.
            msg = (
                f"the checkpoint of shard {self._index} failed at an earlier epoch close ({self._failure}); the "
                "changes it held are in no checkpoint, so this shard can hand Bytewax no pointer: restart the "
                "flow, which resumes from the last committed epoch"
            )
            raise RecoveryError(msg) from self._failure
        changed = self._shard.take_changed()
        if not changed and store.last != 0:
            self._saved = (store.pointer(), calls)
            return None
        return store, changed

    def failed(self, error: BaseException) -> None:
        """For `EpochClose`: this shard's checkpoint was not written; every later one must fail too."""
        self._failure = error

    def epoch_closed(self, checkpoints: int, seconds: float) -> None:
        """For `EpochClose`: tell the observer what the close of this shard's worker cost."""
        if self._observer is not None:
            self._observer.epoch_closed(checkpoints, seconds)

    def saved(self, pointer: ShardPointer, calls: int, rows: int, seconds: float) -> None:
        """For `EpochClose`: checkpoint `pointer` is durable; hand it over when Bytewax asks at this close."""
        self._saved = (pointer, calls)
        if self._observer is not None:
            self._observer.checkpointed(rows, seconds)

    def _folded(self, results: Sequence[tuple[PositionKey, Sequence[Output]]]) -> list[Folded]:
        """The outputs of several positions, gathered by snapshot writer."""
        writers = self._writers
        by_writer: dict[int, _Outputs] = {}
        for key, out in results:
            # A stable hash (not Python's salted one): every process sends a key to the same writer.
            writer = 0 if writers == 1 else zlib.crc32(key.encode()) % writers
            gathered = by_writer.get(writer)
            if gathered is None:
                gathered = by_writer[writer] = _Outputs()
            gathered.add(out)
        folded = (gathered.folded(writer) for writer, gathered in sorted(by_writer.items()))
        return [f for f in folded if f is not None]


class SnapshotBatchLogic(StatefulBatchLogic[Folded, SnapshotBatch, SnapshotBatch]):
    """Gathers fold outputs for one snapshot interval, then emits them as one `SnapshotBatch`.

    The batch holds the interval's position changes, decisions and work, and one
    `FoldTally` summing its events. Bytewax's `collect` deep-copies its buffer at every
    epoch; the outputs here are immutable, so a batch of tuples is a safe snapshot at a
    fraction of the cost.
    """

    def __init__(self, resume: SnapshotBatch | tuple[object, ...] | None, interval: timedelta, max_items: int) -> None:
        self._changes: list[PositionChange] = []
        self._decisions: list[ReservationDecision] = []
        self._work: list[Work] = []
        self._applied = self._duplicates = self._too_late = 0
        if isinstance(resume, tuple):
            # A state saved before the batch was typed: one flat tuple of outputs.
            resume = _batch_of(resume)
        if resume is not None:
            self._changes.extend(resume.changes)
            self._decisions.extend(resume.decisions)
            self._work.extend(resume.work)
            self._applied, self._duplicates, self._too_late = (
                resume.tally.applied,
                resume.tally.duplicates,
                resume.tally.too_late,
            )
        self._interval = interval
        self._max_items = max_items
        # Idle, it still ticks every heartbeat: the sink then tells readers the newest
        # snapshot is still current (a quiet night is not a stale ledger).
        self._heartbeat = min(max(interval, timedelta(seconds=1)), timedelta(seconds=5))
        pending = self._items() or self._applied or self._duplicates or self._too_late
        self._due: datetime = datetime.now(UTC) + (interval if pending else self._heartbeat)

    def _items(self) -> int:
        return len(self._changes) + len(self._decisions) + len(self._work)

    def on_batch(self, values: list[Folded]) -> tuple[list[SnapshotBatch], bool]:
        if not self._items() and not self._applied:
            self._due = datetime.now(UTC) + self._interval
        for folded in values:
            self._changes.extend(folded.changes)
            if folded.decisions:
                self._decisions.extend(folded.decisions)
            if folded.work:
                self._work.extend(folded.work)
            tally = folded.tally
            self._applied += tally.applied
            self._duplicates += tally.duplicates
            self._too_late += tally.too_late
        if self._items() >= self._max_items:
            return self._flush(), StatefulBatchLogic.RETAIN
        return [], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[SnapshotBatch], bool]:
        return self._flush(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[SnapshotBatch], bool]:
        return self._flush(), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self._due

    def snapshot(self) -> SnapshotBatch:
        return self._batch()

    def _batch(self) -> SnapshotBatch:
        return SnapshotBatch(
            tuple(self._changes),
            tuple(self._decisions),
            tuple(self._work),
            FoldTally(self._applied, self._duplicates, self._too_late),
        )

    def _flush(self) -> list[SnapshotBatch]:
        self._due = datetime.now(UTC) + self._heartbeat
        # An empty batch is a heartbeat: nothing to publish, but the flow is alive.
        out = self._batch()
        self._changes, self._decisions, self._work = [], [], []
        self._applied = self._duplicates = self._too_late = 0
        return [out]


def _batch_of(saved: tuple[object, ...]) -> SnapshotBatch:
    """The batch an older recovery state held as one flat tuple of outputs (with at most one tally)."""
    changes = tuple(item for item in saved if isinstance(item, PositionChange))
    decisions = tuple(item for item in saved if isinstance(item, ReservationDecision))
    tallies = [item for item in saved if isinstance(item, FoldTally)]
    work = tuple(item for item in saved if isinstance(item, StoreTask | ShuttleLoad | DropshipOrder))
    return SnapshotBatch(changes, decisions, work, tallies[0] if tallies else FoldTally(0, 0, 0))
