"""The Bytewax glue around the pure fold: one `PositionLogic` per (site, sku) key.

It only delegates: `ledger.fold.fold` for a batch, `ledger.fold.expire` for a timer or
the end of a replay. The state it hands Bytewax to snapshot is the immutable
`Position` itself.

Items are micro-batches wherever the runtime allows, because each item crossing a step
costs a call from Rust into Python: a source read is admitted as one item and leaves
as one group of effects per key (`admit_batch`); a fold call leaves as one `Folded`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

from bytewax.operators import StatefulBatchLogic

from adapters.clock import Clock
from adapters.codec import Decoder, RawInput, admit_read
from ledger.dead_letter import DeadLetter
from ledger.effects import Effect, split
from ledger.events import Millis
from ledger.execution import Work
from ledger.fold import Output, expire, fold, next_expiry
from ledger.outputs import FoldTally, PositionChange, ReservationDecision
from ledger.policy import LedgerPolicy
from ledger.position import Position
from ledger.position_state import PositionState, position_from_state, position_state

__all__ = [
    "Admitted",
    "FoldObserver",
    "Folded",
    "PositionLogic",
    "SnapshotBatchLogic",
    "Stamped",
    "admit_batch",
]

Stamped = tuple[Millis, Effect]
"""An effect with the ledger clock's reading when its event was admitted."""


class Admitted(NamedTuple):
    """One source read, admitted: its effects grouped by key (arrival order kept), and what was refused."""

    groups: list[tuple[str, tuple[Stamped, ...]]]
    rejected: list[DeadLetter]


def admit_batch(
    read: tuple[RawInput, ...] | RawInput, clock: Clock, max_skew_ms: int, decode: Decoder | None = None
) -> Admitted:
    """Decode, validate, stamp and split a read; group its effects by (site, sku) key."""
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
    return Admitted([(key, tuple(group)) for key, group in by_key.items()], rejected)


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

    def resumed(self, position: Position) -> None: ...

    def folded(
        self, before: Position | None, values: Sequence[Stamped], after: Position, out: Sequence[Output]
    ) -> None: ...


class PositionLogic(StatefulBatchLogic[tuple[Stamped, ...], Folded, PositionState]):
    """Folds the batches of one key; a live clock arms a timer for the next hold expiry."""

    def __init__(
        self,
        resume: PositionState | Position | None,
        policy: LedgerPolicy,
        clock: Clock,
        observer: FoldObserver | None = None,
    ) -> None:
        self._position = None if resume is None else position_from_state(resume)
        self._policy = policy
        self._clock = clock
        self._observer = observer
        if observer is not None and self._position is not None:
            observer.resumed(self._position)

    def on_batch(self, values: list[tuple[Stamped, ...]]) -> tuple[list[Folded], bool]:
        effects = values[0] if len(values) == 1 else [stamped for group in values for stamped in group]
        first = effects[0][1]
        before = self._position
        self._position, out = fold(before, first.site_id, first.sku, effects, self._policy)
        if self._observer is not None:
            self._observer.folded(before, effects, self._position, out)
        return [_sorted(out)], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[Folded], bool]:
        return self._expire(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Folded], bool]:
        # A finite replay ends with the clock at the input's newest event: expire what is due.
        if self._clock.live:
            return [], StatefulBatchLogic.RETAIN
        return self._expire(self._clock.final()), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if not self._clock.live or self._position is None:
            return None
        due = next_expiry(self._position)
        return None if due is None else datetime.fromtimestamp(due / 1000, tz=UTC)

    def snapshot(self) -> PositionState:
        assert self._position is not None
        return position_state(self._position)

    def _expire(self, now: Millis | None = None) -> list[Folded]:
        if self._position is None:
            return []
        at = self._clock.now() if now is None else now
        self._position, out = expire(self._position, at, self._policy)
        return [_sorted(out)] if out else []


class SnapshotBatchLogic(StatefulBatchLogic[Folded, tuple[Any, ...], tuple[Any, ...]]):
    """Gathers fold outputs for one snapshot interval, then emits them as one tuple.

    The tuple holds position changes, decisions, work and one `FoldTally` summing the
    interval's. Bytewax's `collect` deep-copies its buffer at every epoch; the outputs
    here are immutable, so a shallow tuple is a safe snapshot at a fraction of the cost.
    """

    def __init__(self, resume: tuple[object, ...] | None, interval: timedelta, max_items: int) -> None:
        self._buffer: list[object] = list(resume or ())
        self._applied = self._duplicates = self._too_late = 0
        self._interval = interval
        self._max_items = max_items
        # Idle, it still ticks every heartbeat: the sink then tells readers the newest
        # snapshot is still current (a quiet night is not a stale ledger).
        self._heartbeat = min(max(interval, timedelta(seconds=1)), timedelta(seconds=5))
        self._due: datetime = datetime.now(UTC) + (interval if self._buffer else self._heartbeat)

    def on_batch(self, values: list[Folded]) -> tuple[list[tuple[object, ...]], bool]:
        buffer = self._buffer
        if not buffer and not self._applied:
            self._due = datetime.now(UTC) + self._interval
        for folded in values:
            if folded.change is not None:
                buffer.append(folded.change)
            if folded.decisions:
                buffer.extend(folded.decisions)
            if folded.work:
                buffer.extend(folded.work)
            tally = folded.tally
            if tally is not None:
                self._applied += tally.applied
                self._duplicates += tally.duplicates
                self._too_late += tally.too_late
        if len(buffer) >= self._max_items:
            return self._flush(), StatefulBatchLogic.RETAIN
        return [], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[tuple[object, ...]], bool]:
        return self._flush(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[tuple[object, ...]], bool]:
        return self._flush(), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self._due

    def snapshot(self) -> tuple[object, ...]:
        return tuple(self._buffer) + self._tally()

    def _tally(self) -> tuple[FoldTally, ...]:
        if not (self._applied or self._duplicates or self._too_late):
            return ()
        return (FoldTally(self._applied, self._duplicates, self._too_late),)

    def _flush(self) -> list[tuple[object, ...]]:
        self._due = datetime.now(UTC) + self._heartbeat
        # An empty tuple is a heartbeat: nothing to publish, but the flow is alive.
        out = tuple(self._buffer) + self._tally()
        self._buffer = []
        self._applied = self._duplicates = self._too_late = 0
        return [out]
