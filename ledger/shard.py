"""A shard of positions: the one place the fold's state is mutated in place.

The runtime keys its stateful step by shard, not by (site, sku): a key per position
makes Bytewax 0.21.1 keep one recovery row per position and scan all of them at every
epoch commit (docs/scaling.md). A shard holds many positions; `ledger.fold` still
decides everything about each one, over immutable `Position` values. This module only
keeps them, remembers which changed since the last checkpoint (`take_changed`), and keeps
a heap of next hold expiries, so a shard's timer is the earliest over its positions and
a timer expires only the positions that are due.

How it keeps them (docs/scaling.md, "Positions at scale"): a position is a row. A plain
position at rest (no holds, staged parcels, inbound lines, plans or offer: most of them)
is nine int64 numbers (row-major: one slice a row) plus a packed tail in one shared byte
heap (`ledger.position_columns`), about 140 bytes; the site and sku are interned to small
ints, and the key `site << 32 | sku` is found through an open-addressing index in an
`array`, so no Python object exists per plain position. Positions with rare parts, and
the ones folded since the last checkpoint, are `Position` objects in a side map. A fold
rebuilds the `Position` of a compact row, folds it as the per-position ledger did, and
keeps the result as an object until a `take_changed` finds it unfolded for a whole
checkpoint interval and packs it back (hot positions are not unpacked at every fold). A shard's
`image` is its arrays as bytes, so a checkpoint's base is written, and restored, without
one Python object per position.

Which shard a position belongs to is a stable hash (`shard_of`): the same in every
process and every run, so a position's state is always found in the same shard. The
shard count is fixed for the life of a store (changing it is an offline reshard).

Interface: `fold` (apply a position's batch), `expire_due` / `expire_all` (timers, end of a replay),
`next_due` (when to wake), `take_changed` (what changed), `image` and `restore` (checkpoints),
`census` (counts for metrics, without building positions).
"""

from __future__ import annotations

import contextlib
import heapq
import struct
import zlib
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate

from ledger.effects import Effect
from ledger.events import Millis
from ledger.fold import Output, expire, fold, next_expiry
from ledger.memory import NEVER
from ledger.policy import LedgerPolicy
from ledger.position import Position
from ledger.position_columns import NUMBERS, numbers_of, position_of, tail_of
from ledger.position_state import ChunkRefs, PositionState, position_from_state, position_state

__all__ = ["DEFAULT_SHARDS", "ChangedRows", "PositionKey", "Shard", "ShardImage", "position_key", "shard_of"]

DEFAULT_SHARDS = 16
"""Shards of a new store: several times the most workers a cluster is expected to run, so
Bytewax's hash routing of shard keys spreads them evenly (16 shards on 2-4 workers). Not
more: each shard touched in an epoch makes one durable checkpoint write at its close
(about 10 ms of fsyncs on this machine's disk; a worker's are written at once, but each
still costs its pickling and its files)."""

PositionKey = str
"""`site|sku`: how a position is named on the outputs (the `atp.changes` key)."""

Stamped = tuple[Millis, Effect]

_HOT = 4096
"""Positions folded in one checkpoint interval that a shard keeps as objects into the next:
a position folded in two intervals in a row is not unpacked and packed again each time.
Past this many (a bulk load, a flow without recovery that never calls `take_changed`) all
are packed at once, so objects stay bounded."""
_LOW = 0xFFFFFFFF
_W = len(NUMBERS)
"""Numbers a row holds."""
_ROW = struct.Struct(f"={_W}q")
"""A row's numbers as bytes: the same as `array("q", numbers).tobytes()`, in one call."""
_ZERO_BYTES = bytes(_ROW.size)
_ZERO_ROW = array("q", _ZERO_BYTES)
_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = 0xFFFFFFFFFFFFFFFF


def position_key(site_id: str, sku: str) -> PositionKey:
    """The output key of a position."""
    return f"{site_id}|{sku}"


def shard_of(key: PositionKey, shards: int) -> int:
    """The shard holding position `key`: crc32 (stable across processes, unlike `hash`) modulo `shards`."""
    return zlib.crc32(key.encode()) % shards


@dataclass(frozen=True, slots=True)
class ShardImage:
    """Rows of a shard as bytes: all of them (`whole`, a checkpoint's base) or the changed ones (a delta).

    Row r is named by `keys[r]` = `site << 32 | sku`, indexes into `sites` and `skus`. Its
    numbers are the int64 `numbers[9r : 9r + 9]` (row-major, in the order of
    `ledger.position_columns.NUMBERS`), its tail `tails[tail_at[r] : tail_at[r] + tail_len[r]]`,
    unless it is one of `objects`: (row, `position_state`) of the positions that are not
    plain, whose numbers mean nothing (taken with a `ChunkRefs`, their sealed chunks are
    references into its tables; a checkpoint resolves them before `restore`). `index` is
    the shard's open-addressing table (a base only), so a restore copies it. A base's
    numbers and tails are the `bytearray`s it was patched in (one copy, not two); nothing
    changes them after.
    """

    whole: bool
    sites: tuple[str, ...]
    skus: tuple[str, ...]
    keys: bytes
    numbers: bytes | bytearray
    tail_at: bytes | bytearray
    tail_len: bytes | bytearray
    tails: bytes | bytearray
    index: bytes
    objects: tuple[tuple[int, PositionState], ...]

    def __len__(self) -> int:
        return len(self.keys) // 8

    @staticmethod
    def of_positions(positions: Iterable[Position]) -> ShardImage:
        """Positions as a (non-whole) image of objects: how checkpoints of the first format are read."""
        sites: dict[str, int] = {}
        skus: dict[str, int] = {}
        keys = array("q")
        objects = []
        for p in positions:
            site = sites.setdefault(p.site_id, len(sites))
            sku = skus.setdefault(p.sku, len(skus))
            objects.append((len(keys), position_state(p)))
            keys.append(site << 32 | sku)
        zeros = bytes(8 * len(keys))  # int64 zeros: the numbers of object rows mean nothing
        return ShardImage(
            False, tuple(sites), tuple(skus), keys.tobytes(), zeros * _W, zeros, bytes(4 * len(keys)), b"", b"",
            tuple(objects),
        )  # fmt: skip

    @staticmethod
    def of_column_fields(
        whole: bool,
        sites: tuple[str, ...],
        skus: tuple[str, ...],
        keys: bytes,
        columns: Sequence[bytes],
        tail_at: bytes,
        tail_len: bytes,
        tails: bytes,
        index: bytes,
        objects: tuple[tuple[int, PositionState], ...],
    ) -> ShardImage:
        """An image from the fields of the column-by-column layout (checkpoint format 2), its numbers made row-major."""
        numbers = _interleaved(columns, len(keys) // 8).tobytes()
        return ShardImage(whole, sites, skus, keys, numbers, tail_at, tail_len, tails, index, objects)

    @staticmethod
    def of_rows(
        sites: tuple[str, ...],
        skus: tuple[str, ...],
        keys: array[int],
        numbers: bytes | bytearray,
        tails: tuple[bytes | bytearray, bytes | bytearray, bytes | bytearray],
    ) -> ShardImage:
        """A base of plain rows given as bytes (`tails`: tail_at, tail_len, the tail heap), indexed as a shard would be.

        For tools that write a store without folding it position by position (the
        benchmarks plant 20,000,000 positions this way); a restore adopts it as it is.
        """
        index = _Index.sized_for(len(keys))
        for row, key in enumerate(keys):
            index._place(key, row)
        tail_at, tail_len, heap = tails
        return ShardImage(
            True, sites, skus, keys.tobytes(), numbers, tail_at, tail_len, heap, index.slots.tobytes(), ()
        )


class _Index:
    """Open addressing from a row's key to its row: one int32 slot (row + 1, 0 when free)
    per two rows at most, instead of a dict's ~100 bytes per entry."""

    __slots__ = ("shift", "slots")

    def __init__(self, slots: array[int] | None = None) -> None:
        self.slots = slots if slots is not None else array("i", bytes(4 * 1024))
        self.shift = 64 - (len(self.slots).bit_length() - 1)

    @staticmethod
    def sized_for(rows: int) -> _Index:
        """An empty index sized as `add` leaves it after `rows` rows: a power of two >= 1,024 and >= 2 x `rows`."""
        size = 1024
        while size < 2 * rows:
            size *= 2
        return _Index(array("i", bytes(4 * size)))

    def find(self, key: int, keys: array[int]) -> int:
        slots, mask = self.slots, len(self.slots) - 1
        i = ((key * _GOLDEN) & _MASK64) >> self.shift
        while True:
            slot = slots[i]
            if slot == 0:
                return -1
            if keys[slot - 1] == key:
                return slot - 1
            i = (i + 1) & mask

    def add(self, key: int, row: int, keys: array[int]) -> None:
        """Index `row` (whose key is not indexed yet); `keys` already holds it."""
        if 2 * (row + 1) > len(self.slots):
            self.slots = array("i", bytes(8 * len(self.slots)))
            self.shift -= 1
            for r in range(row):
                self._place(keys[r], r)
        self._place(key, row)

    def _place(self, key: int, row: int) -> None:
        slots, mask = self.slots, len(self.slots) - 1
        i = ((key * _GOLDEN) & _MASK64) >> self.shift
        while slots[i]:
            i = (i + 1) & mask
        slots[i] = row + 1


class Shard:
    """The positions of one shard, what changed since the last checkpoint, and their next expiries."""

    __slots__ = (
        "_armed",
        "_changed",
        "_dirty",
        "_garbage",
        "_generation",
        "_heap",
        "_index",
        "_keys",
        "_numbers",
        "_objects",
        "_older",
        "_recent",
        "_site_ids",
        "_sites",
        "_sku_ids",
        "_skus",
        "_tail_at",
        "_tail_len",
        "_tails",
        "_track",
    )

    def __init__(self, *, track_changes: bool = True) -> None:
        """`track_changes=False` when nothing checkpoints the shard (recovery off): no changed set grows."""
        self._track = track_changes
        self._sites: list[str] = []
        self._site_ids: dict[str, int] = {}
        self._skus: list[str] = []
        self._sku_ids: dict[str, int] = {}
        self._keys = array("q")
        # Row-major: row r's numbers are `_numbers[_W * r : _W * r + _W]`, so a row is read,
        # written and copied into a delta as one slice (nine boxed reads per row were most of
        # an epoch close's ~10 us a row); a checkpoint's image stays column by column.
        self._numbers = array("q")
        self._tail_at = array("q")
        self._tail_len = array("i")
        self._tails = bytearray()
        self._garbage = 0
        self._index = _Index()
        # Rows kept as `Position` objects: not plain, or folded in this checkpoint interval
        # (`_recent`) or the one before (`_older`).
        self._objects: dict[int, Position] = {}
        self._recent: set[int] = set()
        self._older: set[int] = set()
        self._dirty = bytearray()
        self._changed = array("q")
        self._generation = 0
        # Lazy heap of (due, row): an entry is live only while `_armed[row]` equals its due,
        # so re-arming a position costs a push, never a search.
        self._heap: list[tuple[Millis, int]] = []
        self._armed: dict[int, Millis] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, key: PositionKey) -> Position | None:
        """The position `key`, if this shard has seen it."""
        row = self._row_of_key(key)
        return None if row < 0 else self._position(row)

    def census(self) -> tuple[int, int]:
        """(positions, positions with negative on hand), counted over the columns without building a position."""
        on_hand, objects = self._numbers[1::_W], self._objects
        negative = sum(1 for value in on_hand if value < 0)
        negative -= sum(1 for row in objects if on_hand[row] < 0)  # an object row's column is stale
        negative += sum(1 for p in objects.values() if p.on_hand < 0)
        return len(self._keys), negative

    def positions(self) -> Mapping[PositionKey, Position]:
        """Every position of the shard, built on access (read only: change them through `fold` and `expire_*`)."""
        return _Positions(self)

    def fold(
        self, key: PositionKey, effects: Sequence[Stamped], policy: LedgerPolicy
    ) -> tuple[Position | None, Position, list[Output]]:
        """Fold one position's effects (arrival order kept); returns (before, after, outputs)."""
        first = effects[0][1]
        site_id, sku = first.site_id, first.sku
        site, item = self._site_ids.get(site_id), self._sku_ids.get(sku)
        row = -1 if site is None or item is None else self._index.find(site << 32 | item, self._keys)
        before = None if row < 0 else (self._objects.get(row) or self._position(row))
        after, out = fold(before, site_id, sku, effects, policy)
        if row < 0:
            row = self._append(site_id, sku)
        self._put(row, after)
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
        due: list[int] = []
        while heap and heap[0][0] <= now:
            at, row = heapq.heappop(heap)
            if armed.get(row) == at:
                del armed[row]
                due.append(row)
        return self._expire(due, now, policy)

    def expire_all(self, now: Millis, policy: LedgerPolicy) -> list[tuple[PositionKey, list[Output]]]:
        """End what is due at `now` anywhere in the shard (the end of a finite replay).

        Visits what `expire` would change, as the per-position flow did at its end: a
        position with a hold or an expiry floor left by one, and a position whose safety
        stock the policy changed since it was folded (`expire` republishes it). A compact
        row has neither hold nor floor: only its safety stock column is compared, in bulk
        when the policy gives every position of the shard the same safety stock (a Python
        step per row cost ~1 us: over 20 s at the end of a replay into 20,000,000 positions).
        """
        objects, safety, rule = self._objects, self._numbers[0::_W], policy.safety_stock.for_position
        visit = [
            row
            for row, p in objects.items()
            if p.holds or p.expiry_floor < NEVER or rule(p.site_id, p.sku) != p.safety_stock
        ]
        uniform = self._uniform_safety_stock(policy)
        if uniform is None:
            keys, sites, skus = self._keys, self._sites, self._skus
            visit += [
                row
                for row, key in enumerate(keys)
                if row not in objects and rule(sites[key >> 32], skus[key & _LOW]) != safety[row]
            ]
        else:
            # An object row's column is stale: count it out before asking whether any compact row differs.
            stale = sum(1 for row in objects if safety[row] != uniform)
            if len(safety) - safety.count(uniform) > stale:
                visit += [row for row, units in enumerate(safety) if units != uniform and row not in objects]
        visit.sort()  # row order, as a walk over the rows visits them
        for row in visit:
            self._armed.pop(row, None)
        return self._expire(visit, now, policy)

    def _uniform_safety_stock(self, policy: LedgerPolicy) -> int | None:
        """The safety stock `policy` gives every position of this shard, if it is one number."""
        rules = policy.safety_stock
        if not self._skus or any(sku in rules.by_sku for sku in self._skus):
            return None
        # No sku of the shard has a rule of its own: a position's safety stock is its site's.
        values = {rules.for_position(site, self._skus[0]) for site in self._sites}
        return values.pop() if len(values) == 1 else None

    def take_changed(self) -> ChangedRows:
        """The positions changed since the previous call (a checkpoint's rows); starts a new set.

        Packs back into columns the plain positions folded in the interval before this one
        but not since (the ones folded in both stay objects, see `_HOT`). The rows it
        returns read the shard as it is: write them before the shard changes again.
        """
        recent, older = self._recent, self._older
        self._settle(older - recent)
        if len(recent) > _HOT:
            self._settle(recent)
            recent = set()
        self._older, self._recent = recent, set()
        rows, dirty = self._changed, self._dirty
        for row in rows:
            dirty[row] = 0
        self._changed = array("q")
        return ChangedRows(self, rows, self._generation)

    def image(self, refs: ChunkRefs | None = None) -> ShardImage:
        """Every row of the shard as bytes (a checkpoint's base); read it before the shard changes.

        With `refs`, the sealed chunks of the rows kept as objects are written as references
        into its tables (`ledger.position_state.ChunkRefs`).

        Positions kept as objects are written packed when they are plain, so a restore
        brings back as objects only those with rare parts. Each buffer is copied once, as
        it is, and the objects' rows patched in the copy: copying into arrays and then into
        bytes took twice the time (0.41-0.43 s CPU at 1,250,000 rows, mostly page faults of
        the fresh memory), on the fold's thread, for every shard a compaction takes.
        """
        numbers = bytearray(self._numbers)
        tail_at, tail_len, tails = bytearray(self._tail_at), bytearray(self._tail_len), bytearray(self._tails)
        objects = []
        with contextlib.ExitStack() as views:
            values = views.enter_context(memoryview(numbers).cast("q"))
            starts = views.enter_context(memoryview(tail_at).cast("q"))
            sizes = views.enter_context(memoryview(tail_len).cast("i"))
            for row, position in self._objects.items():
                tail = tail_of(position)
                if tail is None:
                    objects.append((row, position_state(position, refs)))
                    continue
                values[_W * row : _W * row + _W] = array("q", numbers_of(position))
                starts[row] = len(tails)
                sizes[row] = len(tail)
                tails += tail
        return ShardImage(
            True,
            tuple(self._sites),
            tuple(self._skus),
            self._keys.tobytes(),
            numbers,
            tail_at,
            tail_len,
            tails,
            self._index.slots.tobytes(),
            tuple(objects),
        )

    def restore(self, images: Iterable[ShardImage]) -> None:
        """Load a checkpoint's images, oldest first (replacing rows with the same key); they count as saved.

        A whole image loaded into an empty shard is adopted as it is: its columns, heap and
        index are copied from bytes, with no work per plain position.
        """
        for image in images:
            if image.whole and not self._keys:
                self._adopt(image)
            else:
                self._merge(image)
        self._settle(self._recent | self._older)
        self._recent, self._older = set(), set()
        self._generation += 1

    def _adopt(self, image: ShardImage) -> None:
        self._sites = list(image.sites)
        self._site_ids = {name: i for i, name in enumerate(self._sites)}
        self._skus = list(image.skus)
        self._sku_ids = {name: i for i, name in enumerate(self._skus)}
        self._keys = _array("q", image.keys)
        self._numbers = _array("q", image.numbers)
        self._tail_at = _array("q", image.tail_at)
        self._tail_len = _array("i", image.tail_len)
        self._tails = bytearray(image.tails)
        self._garbage = len(self._tails) - sum(self._tail_len)
        self._index = _Index(_array("i", image.index))
        self._dirty = bytearray(len(self._keys))
        for row, state in image.objects:
            position = position_from_state(state)
            self._objects[row] = position
            self._arm(row, position)

    def _merge(self, image: ShardImage) -> None:
        keys = _array("q", image.keys)
        numbers = _array("q", image.numbers)
        tail_at, tail_len, tails = _array("q", image.tail_at), _array("i", image.tail_len), image.tails
        objects = dict(image.objects)
        for r, key in enumerate(keys):
            site, sku = image.sites[key >> 32], image.skus[key & _LOW]
            row = self._find(site, sku)
            if row < 0:
                row = self._append(site, sku)
            state = objects.get(r)
            if state is not None:
                self._drop_tail(row)
                position = position_from_state(state)
                self._objects[row] = position
                self._recent.add(row)
                self._arm(row, position)
                continue
            self._objects.pop(row, None)
            self._armed.pop(row, None)
            self._numbers[_W * row : _W * row + _W] = numbers[_W * r : _W * r + _W]
            at = tail_at[r]
            self._set_tail(row, tails[at : at + tail_len[r]])

    def _expire(self, rows: list[int], now: Millis, policy: LedgerPolicy) -> list[tuple[PositionKey, list[Output]]]:
        results = []
        for row in rows:
            before = self._position(row)
            after, out = expire(before, now, policy)
            if after is not before:
                self._put(row, after)
            else:
                self._arm(row, after)
            if out:
                results.append((position_key(before.site_id, before.sku), out))
        return results

    def _find(self, site_id: str, sku: str) -> int:
        site = self._site_ids.get(site_id)
        if site is None:
            return -1
        item = self._sku_ids.get(sku)
        if item is None:
            return -1
        return self._index.find(site << 32 | item, self._keys)

    def _row_of_key(self, key: PositionKey) -> int:
        # A site id may itself hold "|": try each cut until one names a known position.
        cut = key.find("|")
        while cut >= 0:
            row = self._find(key[:cut], key[cut + 1 :])
            if row >= 0:
                return row
            cut = key.find("|", cut + 1)
        return -1

    def _name(self, row: int) -> PositionKey:
        key = self._keys[row]
        return position_key(self._sites[key >> 32], self._skus[key & _LOW])

    def _append(self, site_id: str, sku: str) -> int:
        site = self._site_ids.get(site_id)
        if site is None:
            site = self._site_ids[site_id] = len(self._sites)
            self._sites.append(site_id)
        item = self._sku_ids.get(sku)
        if item is None:
            item = self._sku_ids[sku] = len(self._skus)
            self._skus.append(sku)
        row = len(self._keys)
        key = site << 32 | item
        self._keys.append(key)
        self._numbers.extend(_ZERO_ROW)
        self._tail_at.append(0)
        self._tail_len.append(0)
        self._dirty.append(0)
        self._index.add(key, row, self._keys)
        return row

    def _position(self, row: int) -> Position:
        position = self._objects.get(row)
        if position is not None:
            return position
        key = self._keys[row]
        at = self._tail_at[row]
        return position_of(
            self._sites[key >> 32],
            self._skus[key & _LOW],
            tuple(self._numbers[_W * row : _W * row + _W]),
            bytes(self._tails[at : at + self._tail_len[row]]),
        )

    def _put(self, row: int, position: Position) -> None:
        if row not in self._objects:
            self._drop_tail(row)
        self._objects[row] = position
        self._recent.add(row)
        self._generation += 1
        if self._track and not self._dirty[row]:
            self._dirty[row] = 1
            self._changed.append(row)
        if position.holds or row in self._armed:
            self._arm(row, position)
        if len(self._recent) > _HOT:
            self._settle(self._recent | self._older)
            self._recent, self._older = set(), set()

    def _settle(self, rows: set[int]) -> None:
        """Pack the plain positions among `rows` back into columns."""
        objects, numbers = self._objects, self._numbers
        for row in rows:
            position = objects.get(row)
            if position is None:
                continue
            tail = tail_of(position)
            if tail is None:
                continue
            numbers[_W * row : _W * row + _W] = array("q", numbers_of(position))
            self._set_tail(row, tail)
            del objects[row]

    def _drop_tail(self, row: int) -> None:
        self._garbage += self._tail_len[row]
        self._tail_len[row] = 0

    def _set_tail(self, row: int, tail: bytes | bytearray) -> None:
        self._drop_tail(row)
        if tail:
            tails = self._tails
            self._tail_at[row] = len(tails)
            self._tail_len[row] = len(tail)
            tails += tail
            if self._garbage > max(1 << 20, len(tails) // 2):
                self._repack()

    def _repack(self) -> None:
        """Copy the live tails into a new heap: replaced tails are garbage until then."""
        old, fresh = memoryview(self._tails), bytearray()
        tail_at, tail_len = self._tail_at, self._tail_len
        for row in range(len(tail_at)):
            size = tail_len[row]
            if size:
                at = tail_at[row]
                tail_at[row] = len(fresh)
                fresh += old[at : at + size]
        old.release()
        self._tails, self._garbage = fresh, 0

    def _arm(self, row: int, position: Position) -> None:
        due = next_expiry(position)
        armed = self._armed
        if due is None:
            armed.pop(row, None)
        elif armed.get(row) != due:
            armed[row] = due
            heap = self._heap
            heapq.heappush(heap, (due, row))
            if len(heap) > 2 * len(armed) + 1024:
                # Stale entries pile up when no timer pops them (a replay): rebuild from the live ones.
                self._heap = [(at, r) for r, at in armed.items()]
                heapq.heapify(self._heap)

    def _rows_image(self, rows: Sequence[int], refs: ChunkRefs | None = None) -> ShardImage:
        """The rows `rows` as a delta image, with names of their own (numbered in order of first use).

        One pass over the rows, each taken as what it is. In a flow nearly every changed row
        is an object (a row folded since the last checkpoint stays one until an interval
        passes without a fold), mostly with holds, inbound lines or an offer: its
        `position_state` is its cost. The columns' slices copied for every row, then overwritten
        for the objects' in a second pass, were work for nothing in that case (docs/scaling.md,
        "Eleventh pass": 10-15% of the image in a loop over the same rows).
        """
        sites: dict[str, int] = {}
        skus: dict[str, int] = {}
        own_sites, own_skus = self._sites, self._skus
        keys = array(
            "q",
            [
                sites.setdefault(own_sites[key >> 32], len(sites)) << 32
                | skus.setdefault(own_skus[key & _LOW], len(skus))
                for key in map(self._keys.__getitem__, rows)
            ],
        )
        numbers: list[bytes | memoryview] = []
        tails: list[bytes | memoryview] = []
        sizes = array("i")
        objects = []
        object_of, heap, at_of, size_of = self._objects.get, self._tails, self._tail_at, self._tail_len
        with memoryview(self._numbers) as own, memoryview(heap) as packed:
            for r, row in enumerate(rows):
                position = object_of(row)
                if position is None:
                    numbers.append(own[_W * row : _W * row + _W])
                    at, size = at_of[row], size_of[row]
                    tails.append(packed[at : at + size])
                    sizes.append(size)
                    continue
                tail = tail_of(position)
                if tail is None:
                    objects.append((r, position_state(position, refs)))
                    numbers.append(_ZERO_BYTES)  # an object row's columns mean nothing
                    sizes.append(0)
                else:
                    numbers.append(_ROW.pack(*numbers_of(position)))
                    tails.append(tail)
                    sizes.append(len(tail))
            numbers_blob, tails_blob = b"".join(numbers), b"".join(tails)
        starts = array("q", accumulate(sizes, initial=0))
        starts.pop()
        return ShardImage(
            False, tuple(sites), tuple(skus), keys.tobytes(), numbers_blob, starts.tobytes(), sizes.tobytes(),
            tails_blob, b"", tuple(objects),
        )  # fmt: skip


class ChangedRows(Mapping[PositionKey, Position]):
    """The positions a shard changed between two `take_changed` calls, read from the shard on access."""

    __slots__ = ("_generation", "_rows", "_shard")

    def __init__(self, shard: Shard, rows: array[int], generation: int) -> None:
        self._shard = shard
        self._rows = rows
        self._generation = generation

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[PositionKey]:
        name = self._shard._name
        return (name(row) for row in self._rows)

    def __getitem__(self, key: PositionKey) -> Position:
        self._check()
        row = self._shard._row_of_key(key)
        if row < 0 or row not in set(self._rows):
            raise KeyError(key)
        return self._shard._position(row)

    def image(self, refs: ChunkRefs | None = None) -> ShardImage:
        """These rows as bytes (a checkpoint's delta); with `refs`, sealed chunks as references (`Shard.image`)."""
        self._check()
        return self._shard._rows_image(self._rows, refs)

    def _check(self) -> None:
        if self._shard._generation != self._generation:
            msg = "a shard's changed rows were read after the shard changed again: write them first"
            raise RuntimeError(msg)


class _Positions(Mapping[PositionKey, Position]):
    """Every position of a shard, keyed `site|sku`, each built on access."""

    __slots__ = ("_shard",)

    def __init__(self, shard: Shard) -> None:
        self._shard = shard

    def __len__(self) -> int:
        return len(self._shard)

    def __iter__(self) -> Iterator[PositionKey]:
        name = self._shard._name
        return (name(row) for row in range(len(self._shard)))

    def __getitem__(self, key: PositionKey) -> Position:
        row = self._shard._row_of_key(key)
        if row < 0:
            raise KeyError(key)
        return self._shard._position(row)


def _interleaved(columns: Sequence[bytes], rows: int) -> array[int]:
    """Numbers given column by column, row-major."""
    numbers = array("q", bytes(8 * _W * rows))
    for i, column in enumerate(columns):
        numbers[i::_W] = _array("q", column)
    return numbers


def _array(typecode: str, blob: bytes | bytearray) -> array[int]:
    values = array(typecode)
    values.frombytes(blob)
    return values
