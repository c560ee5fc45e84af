"""The fold observer hears of every position a shard call folded, in one call per shard call."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.clock import ReplayClock
from flows.logic import Fold, ShardLogic
from ledger.effects import split
from ledger.policy import LedgerPolicy
from ledger.shard import Shard, shard_of
from tests.stories import deliveries, stories

pytestmark = pytest.mark.component

POLICY = LedgerPolicy()


class Recorder:
    """A `FoldObserver` that keeps what it is told."""

    def __init__(self) -> None:
        self.calls: list[list[Fold]] = []
        self.checkpoints: list[tuple[int, float]] = []
        self.closes: list[tuple[int, float]] = []

    def resumed(self, positions: int, negative: int) -> None:
        raise AssertionError("no shard resumes here")

    def folded_call(self, folds: Sequence[Fold]) -> None:
        self.calls.append(list(folds))

    def epoch_closed(self, checkpoints: int, seconds: float) -> None:
        self.closes.append((checkpoints, seconds))

    def checkpointed(self, rows: int, seconds: float) -> None:
        self.checkpoints.append((rows, seconds))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), writers=st.sampled_from([1, 3]), read_size=st.integers(1, 12))
def test_each_shard_call_tells_the_observer_once_of_each_position_it_folded(data, writers, read_size):
    events = data.draw(stories())
    arrivals = data.draw(deliveries(events))
    observer = Recorder()
    logic = ShardLogic(None, POLICY, ReplayClock(), None, 1, observer=observer, writers=writers)
    reference = Shard(track_changes=False)
    for start in range(0, len(arrivals), read_size):
        groups: dict[str, list[tuple[int, object]]] = {}
        for event in arrivals[start : start + read_size]:
            for effect in split(event):
                groups.setdefault(effect.key, []).append((event.occurred_at, effect))
        batch = (0, tuple((key, tuple(effects)) for key, effects in groups.items()))
        assert all(shard_of(key, 1) == 0 for key in groups)
        logic.on_batch([batch])  # type: ignore[list-item]
        told = observer.calls.pop()
        assert not observer.calls  # one call for the shard call
        assert [(f[1]) for f in told] == [effects for _, effects in batch[1]]
        for (key, effects), (before, values, after, out) in zip(batch[1], told, strict=True):
            expected = reference.fold(key, effects, POLICY)  # type: ignore[arg-type]
            assert (before, after, out) == expected
            assert values is effects


def test_each_checkpoint_at_an_epoch_close_tells_the_observer_its_changed_rows(tmp_path):
    from adapters.shard_checkpoints import write_layout
    from ledger.events import EventType, InventoryEvent

    write_layout(tmp_path, 1)
    observer = Recorder()
    logic = ShardLogic(None, POLICY, ReplayClock(), tmp_path, 1, observer=observer)
    received = [InventoryEvent(f"e{n}", EventType.RECEIVED, 1_000 + n, f"ST-{n % 3}", "A", 2) for n in range(5)]
    groups: dict[str, list[tuple[int, object]]] = {}
    for event in received:
        for effect in split(event):
            groups.setdefault(effect.key, []).append((event.occurred_at, effect))
    logic.on_batch([(0, tuple((key, tuple(effects)) for key, effects in groups.items()))])  # type: ignore[list-item]
    first = logic.snapshot()
    second = logic.snapshot()  # nothing changed since: the same pointer, no checkpoint written
    assert second == first
    assert [rows for rows, _ in observer.checkpoints] == [3]  # three positions, one checkpoint
    assert [checkpoints for checkpoints, _ in observer.closes] == [1]  # one close, of one shard
    assert all(seconds >= 0 for _, seconds in observer.checkpoints)
