"""A shard of positions: the one place the fold's state is mutated in place.

The runtime keys its stateful step by shard, not by (site, sku): a key per position
makes Bytewax 0.21.1 keep one recovery row per position and scan all of them at every
epoch commit (docs/scaling.md). A shard holds many positions; `ledger.fold` still
decides everything about each one, over immutable `Position` values. This module only
keeps them, remembers which changed since the last checkpoint (`take_changed`), and keeps
a heap of next hold expiries, so a shard's timer is the earliest over its positions and
a timer expires only the positions that are due.

Which shard a position belongs to is a stable hash (`shard_of`): the same in every
process and every run, so a position's state is always found in the same shard. The
shard count is fixed for the life of a store (changing it is an offline reshard).

Interface: `fold` (apply a position's batch), `expire_due` / `expire_all` (timers, end of a replay),
`next_due` (when to wake), `take_changed` (what changed), `restore` (load a checkpoint).
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Iterable, Mapping, Sequence

from ledger.effects import Effect
from ledger.events import Millis
from ledger.fold import Output, expire, fold, next_expiry
from ledger.memory import NEVER
from ledger.policy import LedgerPolicy
from ledger.position import Position

__all__ = ["DEFAULT_SHARDS", "PositionKey", "Shard", "position_key", "shard_of"]

DEFAULT_SHARDS = 16
"""Shards of a new store: several times the most workers a cluster is expected to run, so
Bytewax's hash routing of shard keys spreads them evenly (16 shards on 2-4 workers). Not
more: each shard touched in an epoch makes one durable checkpoint write at its close,
about 10 ms of fsyncs on this machine's disk, so the epoch close costs up to S x 10 ms."""

PositionKey = str
"""`site|sku`: how a position is named on the outputs (the `atp.changes` key)."""

Stamped = tuple[Millis, Effect]


def position_key(site_id: str, sku: str) -> PositionKey:
    """The output key of a position."""
    return f"{site_id}|{sku}"


def shard_of(key: PositionKey, shards: int) -> int:
    """The shard holding position `key`: crc32 (stable across processes, unlike `hash`) modulo `shards`."""
    return zlib.crc32(key.encode()) % shards


class Shard:
    """The positions of one shard, what changed since the last checkpoint, and their next expiries."""

    __slots__ = ("_armed", "_changed", "_heap", "_positions", "_track")

    def __init__(self, *, track_changes: bool = True) -> None:
        """`track_changes=False` when nothing checkpoints the shard (recovery off): no changed set grows."""
        self._positions: dict[PositionKey, Position] = {}
        self._track = track_changes
        self._changed: set[PositionKey] = set()
        # Lazy heap of (due, key): an entry is live only while `_armed[key]` equals its due,
        # so re-arming a position costs a push, never a search.
        self._heap: list[tuple[Millis, PositionKey]] = []
        self._armed: dict[PositionKey, Millis] = {}

    def __len__(self) -> int:
        return len(self._positions)

    def get(self, key: PositionKey) -> Position | None:
        """The position `key`, if this shard has seen it."""
        return self._positions.get(key)

    def positions(self) -> Mapping[PositionKey, Position]:
        """Every position of the shard (read only: change them through `fold` and `expire_*`)."""
        return self._positions

    def fold(
        self, key: PositionKey, effects: Sequence[Stamped], policy: LedgerPolicy
    ) -> tuple[Position | None, Position, list[Output]]:
        """Fold one position's effects (arrival order kept); returns (before, after, outputs)."""
        first = effects[0][1]
        before = self._positions.get(key)
        after, out = fold(before, first.site_id, first.sku, effects, policy)
        self._put(key, after)
        return before, after, out

    def next_due(self) -> Millis | None:
        """The earliest hold expiry over the shard, if any hold is left."""
        heap, armed = self._heap, self._armed
        while heap and armed.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # a stale entry: its position was re-armed or has no hold left
        return heap[0][0] if heap else None

    def expire_due(self, now: Millis, policy: LedgerPolicy) -> list[tuple[PositionKey, list[Output]]]:
        """End the holds due at `now` (a timer fired), visiting only the positions that are due."""
        heap, armed = self._heap, self._armed
        due: list[PositionKey] = []
        while heap and heap[0][0] <= now:
            at, key = heapq.heappop(heap)
            if armed.get(key) == at:
                del armed[key]
                due.append(key)
        return self._expire(due, now, policy)

    def expire_all(self, now: Millis, policy: LedgerPolicy) -> list[tuple[PositionKey, list[Output]]]:
        """End what is due at `now` anywhere in the shard (the end of a finite replay).

        Visits what `expire` would change, as the per-position flow did at its end: a
        position with a hold or an expiry floor left by one, and a position whose safety
        stock the policy changed since it was folded (`expire` republishes it).
        """
        visit = [
            key
            for key, p in self._positions.items()
            if p.holds or p.expiry_floor < NEVER or policy.safety_stock.for_position(p.site_id, p.sku) != p.safety_stock
        ]
        for key in visit:
            self._armed.pop(key, None)
        return self._expire(visit, now, policy)

    def take_changed(self) -> dict[PositionKey, Position]:
        """The positions changed since the previous call (a checkpoint's rows); starts a new set."""
        positions = self._positions
        changed = {key: positions[key] for key in self._changed}
        self._changed = set()
        return changed

    def restore(self, positions: Iterable[tuple[PositionKey, Position]]) -> None:
        """Load positions from a checkpoint (replacing any with the same key); they count as saved."""
        for key, position in positions:
            self._positions[key] = position
            self._arm(key, position)

    def _expire(
        self, keys: list[PositionKey], now: Millis, policy: LedgerPolicy
    ) -> list[tuple[PositionKey, list[Output]]]:
        results = []
        for key in keys:
            before = self._positions[key]
            after, out = expire(before, now, policy)
            if after is not before:
                self._put(key, after)
            else:
                self._arm(key, after)
            if out:
                results.append((key, out))
        return results

    def _put(self, key: PositionKey, position: Position) -> None:
        self._positions[key] = position
        if self._track:
            self._changed.add(key)
        self._arm(key, position)

    def _arm(self, key: PositionKey, position: Position) -> None:
        due = next_expiry(position)
        armed = self._armed
        if due is None:
            armed.pop(key, None)
        elif armed.get(key) != due:
            armed[key] = due
            heap = self._heap
            heapq.heappush(heap, (due, key))
            if len(heap) > 2 * len(armed) + 1024:
                # Stale entries pile up when no timer pops them (a replay): rebuild from the live ones.
                self._heap = [(at, k) for k, at in armed.items()]
                heapq.heapify(self._heap)
