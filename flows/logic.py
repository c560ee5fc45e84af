"""The Bytewax glue around the pure fold: one `PositionLogic` per (site, sku) key.

It only delegates: `ledger.fold.fold` for a batch, `ledger.fold.expire` for a timer or
the end of a replay. The state it hands Bytewax to snapshot is the immutable
`Position` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bytewax.operators import StatefulBatchLogic

from adapters.clock import Clock
from ledger.effects import Effect
from ledger.events import Millis
from ledger.fold import Output, expire, fold, next_expiry
from ledger.policy import LedgerPolicy
from ledger.position import Position

__all__ = ["FoldObserver", "PositionLogic", "SnapshotBatchLogic", "Stamped"]

Stamped = tuple[Millis, Effect]
"""An effect with the ledger clock's reading when its event was admitted."""


class FoldObserver(Protocol):
    """Told what each fold call did (metrics); runs on the worker thread, so it must be cheap."""

    def resumed(self, position: Position) -> None: ...

    def folded(
        self, before: Position | None, values: Sequence[Stamped], after: Position, out: Sequence[Output]
    ) -> None: ...


class PositionLogic(StatefulBatchLogic[Stamped, Output, Position]):
    """Folds the batches of one key; a live clock arms a timer for the next hold expiry."""

    def __init__(
        self, resume: Position | None, policy: LedgerPolicy, clock: Clock, observer: FoldObserver | None = None
    ) -> None:
        self._position = resume
        self._policy = policy
        self._clock = clock
        self._observer = observer
        if observer is not None and resume is not None:
            observer.resumed(resume)

    def on_batch(self, values: list[Stamped]) -> tuple[list[Output], bool]:
        first = values[0][1]
        before = self._position
        self._position, out = fold(before, first.site_id, first.sku, values, self._policy)
        if self._observer is not None:
            self._observer.folded(before, values, self._position, out)
        return out, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[Output], bool]:
        return self._expire(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Output], bool]:
        # A finite replay ends with the clock at the input's newest event: expire what is due.
        if self._clock.live:
            return [], StatefulBatchLogic.RETAIN
        return self._expire(), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if not self._clock.live or self._position is None:
            return None
        due = next_expiry(self._position)
        return None if due is None else datetime.fromtimestamp(due / 1000, tz=UTC)

    def snapshot(self) -> Position:
        assert self._position is not None
        return self._position

    def _expire(self) -> list[Output]:
        if self._position is None:
            return []
        self._position, out = expire(self._position, self._clock.now(), self._policy)
        return list(out)


class SnapshotBatchLogic(StatefulBatchLogic[Any, tuple[Any, ...], tuple[Any, ...]]):
    """Gathers fold outputs for one snapshot interval, then emits them as one tuple.

    Bytewax's `collect` deep-copies its buffer at every epoch; the outputs here are
    immutable, so a shallow tuple is a safe snapshot at a fraction of the cost.
    """

    def __init__(self, resume: tuple[object, ...] | None, interval: timedelta, max_items: int) -> None:
        self._buffer: list[object] = list(resume or ())
        self._interval = interval
        self._max_items = max_items
        # Idle, it still ticks every heartbeat: the sink then tells readers the newest
        # snapshot is still current (a quiet night is not a stale ledger).
        self._heartbeat = min(max(interval, timedelta(seconds=1)), timedelta(seconds=5))
        self._due: datetime = datetime.now(UTC) + (interval if self._buffer else self._heartbeat)

    def on_batch(self, values: list[object]) -> tuple[list[tuple[object, ...]], bool]:
        if not self._buffer:
            self._due = datetime.now(UTC) + self._interval
        self._buffer.extend(values)
        if len(self._buffer) >= self._max_items:
            return self._flush(), StatefulBatchLogic.RETAIN
        return [], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[tuple[object, ...]], bool]:
        return self._flush(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[tuple[object, ...]], bool]:
        return self._flush(), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self._due

    def snapshot(self) -> tuple[object, ...]:
        return tuple(self._buffer)

    def _flush(self) -> list[tuple[object, ...]]:
        self._due = datetime.now(UTC) + self._heartbeat
        # An empty tuple is a heartbeat: nothing to publish, but the flow is alive.
        out = tuple(self._buffer)
        self._buffer = []
        return [out]
