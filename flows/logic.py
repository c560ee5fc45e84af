"""The Bytewax glue around the pure fold: one `ShardLogic` per shard of positions.

It only delegates: `ledger.shard.Shard` keeps a shard's positions (and `ledger.fold`
decides each one), `adapters.shard_checkpoints` makes a checkpoint of what changed
durable at every epoch close. The state it hands Bytewax to snapshot is a pointer to that
checkpoint, `(shard, S, c)`: Bytewax's recovery store holds one small row per shard, not
one per position (docs/scaling.md says why that matters past a million positions).

Items are micro-batches wherever the runtime allows, because each item crossing a step
costs a call from Rust into Python: a source read is admitted as one item and leaves
as one group of effects per key (`admit_batch`); a fold call of one position leaves as one `(site|sku, Folded)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple, Protocol

from bytewax.operators import StatefulBatchLogic

from adapters.clock import Clock
from adapters.codec import Decoder, RawInput
from adapters.shard_checkpoints import ShardCheckpoints, ShardPointer, check_pointer
from flows.admission import admit_read
from ledger.dead_letter import DeadLetter
from ledger.effects import Effect, split
from ledger.errors import RecoveryError
from ledger.events import Millis
from ledger.execution import DropshipOrder, ShuttleLoad, StoreTask, Work
from ledger.fold import Output
from ledger.outputs import FoldTally, PositionChange, ReservationDecision, SnapshotBatch
from ledger.policy import LedgerPolicy
from ledger.position import Position
from ledger.shard import PositionKey, Shard, shard_of

__all__ = [
    "Admitted",
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
    by_key: dict[str, list[Stamped]] = {}
    rejected: list[DeadLetter] = []
    for admitted in admit_read(read if isinstance(read, tuple) else (read,), clock, max_skew_ms, decode):
        if isinstance(admitted, DeadLetter):
            rejected.append(admitted)
            continue
        now, event = admitted
        for effect in split(event):
            key = f"{effect.site_id}|{effect.sku}"
            group = by_key.get(key)
            if group is None:
                by_key[key] = [(now, effect)]
            else:
                group.append((now, effect))
    by_shard: dict[int, list[tuple[PositionKey, tuple[Stamped, ...]]]] = {}
    for key, group in by_key.items():
        by_shard.setdefault(shard_of(key, shards), []).append((key, tuple(group)))
    return Admitted([(f"shard-{i}", (i, tuple(groups))) for i, groups in by_shard.items()], rejected)


class Folded(NamedTuple):
    """What one fold call produced, sorted by where it goes (one item per call, not per output)."""

    change: PositionChange | None
    decisions: tuple[ReservationDecision, ...]
    work: tuple[Work, ...]
    dead_letters: tuple[DeadLetter, ...]
    tally: FoldTally | None


def _sorted(out: Sequence[Output]) -> Folded:
    change: PositionChange | None = None
    tally: FoldTally | None = None
    decisions: list[ReservationDecision] = []
    work: list[Work] = []
    dead: list[DeadLetter] = []
    for item in out:
        kind = type(item)
        if kind is PositionChange:
            change = item  # type: ignore[assignment]
        elif kind is FoldTally:
            tally = item  # type: ignore[assignment]
        elif kind is ReservationDecision:
            decisions.append(item)  # type: ignore[arg-type]
        elif kind is DeadLetter:
            dead.append(item)  # type: ignore[arg-type]
        else:
            work.append(item)  # type: ignore[arg-type]
    return Folded(change, tuple(decisions), tuple(work), tuple(dead), tally)


class FoldObserver(Protocol):
    """Told what each fold call did (metrics); runs on the worker thread, so it must be cheap."""

    def resumed(self, positions: int, negative: int) -> None: ...

    def folded(
        self, before: Position | None, values: Sequence[Stamped], after: Position, out: Sequence[Output]
    ) -> None: ...


class ShardLogic(StatefulBatchLogic[ShardBatch, tuple[PositionKey, Folded], ShardPointer]):
    """Folds the batches of one shard's positions; checkpoints what changed at each epoch close.

    A live clock arms one timer per shard, for the earliest hold expiry among its positions.
    With no checkpoint directory (recovery off) nothing is written and the pointer is `c = 0`.
    """

    def __init__(
        self,
        resume: ShardPointer | None,
        policy: LedgerPolicy,
        clock: Clock,
        checkpoints: Path | None,
        shards: int,
        observer: FoldObserver | None = None,
    ) -> None:
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

    def on_batch(self, values: list[ShardBatch]) -> tuple[list[tuple[PositionKey, Folded]], bool]:
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
        out: list[tuple[PositionKey, Folded]] = []
        for key, effects in groups:
            before, after, outputs = shard.fold(key, effects, policy)
            if observer is not None:
                observer.folded(before, effects, after, outputs)
            out.append((key, _sorted(outputs)))
        return out, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[tuple[PositionKey, Folded]], bool]:
        return self._folded(self._shard.expire_due(self._clock.now(), self._policy)), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[tuple[PositionKey, Folded]], bool]:
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
        changed = self._shard.take_changed()
        if changed or store.last == 0:
            # Durable before Bytewax holds the pointer (adapters/shard_checkpoints.py, step 1).
            return store.save(changed, self._shard)
        return store.pointer()

    @staticmethod
    def _folded(results: list[tuple[PositionKey, list[Output]]]) -> list[tuple[PositionKey, Folded]]:
        return [(key, _sorted(out)) for key, out in results]


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
            if folded.change is not None:
                self._changes.append(folded.change)
            if folded.decisions:
                self._decisions.extend(folded.decisions)
            if folded.work:
                self._work.extend(folded.work)
            tally = folded.tally
            if tally is not None:
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
