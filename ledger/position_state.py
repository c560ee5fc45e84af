"""A position as plain values: the state the runtime saves every epoch.

The runtime pickles the state of every position touched in an epoch, and a busy ledger
touches most of them: 57 us for a typical position, measured, a third of a core at one
epoch a second over 6,000 positions. Most of it was the lateness window's memory, one
pickled object per remembered event id and per delta. Here the ids of a chunk travel
as one string (ids never hold a control character: the contract refuses them, so
US, 0x1f, separates them) and times and quantities as one array of int64, so
pickling is a copy of bytes. Rare parts (an offer's terms, a promise's plan) stay objects.

A sealed chunk never changes once sealed, so a shard's checkpoints write each one once
per chain (`adapters.shard_checkpoints`): given a `ChunkRefs`, `position_state` writes a
sealed chunk as a reference (an int) and puts the chunks the chain does not hold yet in
the `ChunkRefs`' tables, which the checkpoint file carries beside its rows. `resolved`
puts the chunks back in a state read from such a file; `position_from_state` takes a
state whose sealed chunks are inline tuples (no `ChunkRefs`: every format before) or chunk
objects (resolved).
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Collection, Mapping
from itertools import chain
from typing import Any

from ledger.memory import DeltaChunk, DeltaLog, EventIds, IdChunk, chunk_serial
from ledger.outputs import InboundLine
from ledger.position import Count, Hold, Position

__all__ = [
    "BASE_REFS",
    "ChunkRefs",
    "DeltaRow",
    "IdRow",
    "PositionState",
    "delta_chunk_of",
    "id_chunk_of",
    "position_from_state",
    "position_state",
    "resolved",
]

PositionState = tuple[Any, ...]

_VERSION = 2
_SEP = "\x1f"


_INT64S: dict[int, struct.Struct] = {}
"""`struct.Struct("=nq")` by n: the same bytes as `array("q", values).tobytes()` (native order,
8 bytes each), in one C call over the values where the array took an iterator step per value:
a position's open ids' times and open deltas are most of the state's numbers, and building
the state of every changed row is most of an epoch close (docs/scaling.md, "Eleventh pass")."""


def _int64s(count: int) -> struct.Struct:
    packer = _INT64S.get(count)
    if packer is None:
        packer = _INT64S[count] = struct.Struct(f"={count}q")
    return packer


def _ints(values: Collection[int]) -> bytes:
    return _int64s(len(values)).pack(*values) if values else b""


def _pack_pairs(items: tuple[tuple[int, int], ...]) -> bytes:
    return _int64s(2 * len(items)).pack(*chain.from_iterable(items)) if items else b""


def _pairs(blob: bytes) -> tuple[tuple[int, int], ...]:
    flat = array("q")
    flat.frombytes(blob)
    return tuple(zip(flat[0::2], flat[1::2], strict=True))


def _join(ids: Collection[str]) -> str | tuple[str, ...]:
    joined = _SEP.join(ids)
    # An id built past the contract (a test, a tool) could hold the separator: keep it whole.
    return joined if joined.count(_SEP) == max(0, len(ids) - 1) else tuple(ids)


def _ids(joined: str | tuple[str, ...]) -> Any:
    if isinstance(joined, tuple):
        return joined
    return joined.split(_SEP) if joined else []


IdRow = tuple[int, int, "str | tuple[str, ...]"]
"""A sealed id chunk in a checkpoint's table: (reference, newest, the ids joined by US)."""
DeltaRow = tuple[int, int, int, int, bytes]
"""A sealed delta chunk in a checkpoint's table: (reference, oldest, newest, total, the items as int64 pairs)."""

BASE_REFS = 1 << 31
"""The first reference number a base gives the chunks it writes that its chain did not hold:
the delta of the same checkpoint numbers its own from 0, and both may name chunks of it."""


class ChunkRefs:
    """Names the sealed chunks of the rows of one checkpoint file: a reference for each, a table of the new ones.

    `known` maps a chunk's serial (`ledger.memory.chunk_serial`) to its reference, for the
    chunks the files of the chain this file joins already define: a delta (`whole` False)
    refers to those and writes the others in its tables, numbered `checkpoint << 32 | k`
    from k = `first`; a base (`whole`) writes every chunk it refers to, with the
    reference the chain knows it by, if any, so the deltas after it still resolve.
    `written` then maps the serials of the chunks in the tables to their references.
    """

    __slots__ = ("deltas", "ids", "known", "next", "whole", "written")

    def __init__(self, known: Mapping[int, int], checkpoint: int, *, whole: bool = False, first: int = 0) -> None:
        self.known = known
        self.whole = whole
        self.next = checkpoint << 32 | first
        self.written: dict[int, int] = {}
        self.ids: list[IdRow] = []
        self.deltas: list[DeltaRow] = []

    def _ref(self, serial: int) -> tuple[int, bool]:
        """(the reference of the chunk `serial`, whether it must go in a table now)."""
        ref = self.written.get(serial)
        if ref is not None:
            return ref, False
        ref = self.known.get(serial)
        if ref is not None and not self.whole:
            return ref, False
        if ref is None:
            ref = self.next
            self.next += 1
        self.written[serial] = ref
        return ref, True

    def id_ref(self, chunk: IdChunk) -> int:
        ref, new = self._ref(chunk._serial or chunk_serial(chunk))
        if new:
            self.ids.append((ref, chunk.newest, chunk.packed(_join)))  # type: ignore[arg-type]
        return ref

    def delta_ref(self, chunk: DeltaChunk) -> int:
        ref, new = self._ref(chunk._serial or chunk_serial(chunk))
        if new:
            self.deltas.append((ref, chunk.oldest, chunk.newest, chunk.total, chunk.packed(_pack_pairs)))  # type: ignore[arg-type]
        return ref


def id_chunk_of(row: IdRow) -> IdChunk:
    """The chunk of a table row (`ChunkRefs.ids`), its packed ids kept: a base writes it again as it is."""
    _, newest, joined = row
    chunk = IdChunk(newest, frozenset(_ids(joined)))
    object.__setattr__(chunk, "_packed", joined)
    return chunk


def delta_chunk_of(row: DeltaRow) -> DeltaChunk:
    """The chunk of a table row (`ChunkRefs.deltas`), its packed items kept."""
    _, oldest, newest, total, items = row
    chunk = DeltaChunk(oldest, newest, total, _pairs(items))
    object.__setattr__(chunk, "_packed", items)
    return chunk


def resolved(state: PositionState, ids: Mapping[int, IdChunk], deltas: Mapping[int, DeltaChunk]) -> PositionState:
    """`state` with its chunk references replaced by the chunks they name; KeyError names one that is missing."""
    delta_chunks, id_chunks = state[7], state[13]
    if not delta_chunks and not id_chunks:
        return state
    return (
        *state[:7],
        tuple([deltas[c] if type(c) is int else c for c in delta_chunks]),
        *state[8:13],
        tuple([ids[c] if type(c) is int else c for c in id_chunks]),
        *state[14:],
    )


def position_state(p: Position, refs: ChunkRefs | None = None) -> PositionState:
    """`p` as plain containers (see `position_from_state`); with `refs`, its sealed chunks as references."""
    count = p.count
    if refs is None:
        delta_chunks: tuple[Any, ...] = tuple(
            [(c.oldest, c.newest, c.total, c.packed(_pack_pairs)) for c in p.deltas.sealed]
        )
        id_chunks: tuple[Any, ...] = tuple([(c.newest, c.packed(_join)) for c in p.seen.sealed])
    else:
        delta_chunks = tuple([refs.delta_ref(c) for c in p.deltas.sealed]) if p.deltas.sealed else ()
        id_chunks = tuple([refs.id_ref(c) for c in p.seen.sealed]) if p.seen.sealed else ()
    return (
        _VERSION,
        p.site_id,
        p.sku,
        p.safety_stock,
        p.on_hand,
        None if count is None else (count.at, count.qty, count.event_id),
        p.settled,
        delta_chunks,
        _pack_pairs(p.deltas.open),
        tuple([(ref, h.qty, h.expires_at, h.requested_at) for ref, h in p.holds.items()]) if p.holds else (),
        p.staged,
        tuple([(line.ref, line.qty, line.eta, line.promised) for line in p.inbound.values()]) if p.inbound else (),
        p.ended,
        id_chunks,
        (_join(p.seen.open), _ints(p.seen.open.values())),
        p.max_at,
        p.forget_at,
        p.offer,
        p.offer_id,
        p.version,
        p.updated_at,
        p.plans,
        p.held_total,
        p.staged_total,
        p.expiry_floor_at,
    )


def position_from_state(state: PositionState | Position) -> Position:
    """The position a `position_state` describes; a `Position` (state saved before) as is."""
    if isinstance(state, Position):
        return state
    (
        version,
        site_id,
        sku,
        safety_stock,
        on_hand,
        count,
        settled,
        delta_chunks,
        open_deltas,
        holds,
        staged,
        inbound,
        ended,
        id_chunks,
        open_ids,
        max_at,
        forget_at,
        offer,
        offer_id,
        position_version,
        updated_at,
        plans,
        held_total,
        staged_total,
        expiry_floor_at,
    ) = state
    if version != _VERSION:
        msg = f"recovery state of {site_id}|{sku} has version {version}; this ledger reads version {_VERSION}"
        raise ValueError(msg)
    return Position(
        site_id,
        sku,
        safety_stock,
        on_hand,
        None if count is None else Count(*count),
        settled,
        DeltaLog(
            tuple([c if type(c) is DeltaChunk else _delta_chunk(*c) for c in delta_chunks]),
            _pairs(open_deltas),
        ),
        {ref: Hold(qty, expires_at, requested_at) for ref, qty, expires_at, requested_at in holds},
        staged,
        {ref: InboundLine(ref, qty, eta, promised) for ref, qty, eta, promised in inbound},
        ended,
        EventIds(
            tuple([c if type(c) is IdChunk else _id_chunk(*c) for c in id_chunks]),
            dict(zip(_ids(open_ids[0]), array("q", open_ids[1]), strict=True)),
        ),
        max_at,
        forget_at,
        offer,
        offer_id,
        position_version,
        updated_at,
        plans,
        held_total,
        staged_total,
        expiry_floor_at,
    )


def _delta_chunk(oldest: int, newest: int, total: int, items: bytes) -> DeltaChunk:
    return DeltaChunk(oldest, newest, total, _pairs(items))


def _id_chunk(newest: int, ids: str | tuple[str, ...]) -> IdChunk:
    return IdChunk(newest, frozenset(_ids(ids)))
