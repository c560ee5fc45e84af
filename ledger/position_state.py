"""A position as plain values: the state the runtime saves every epoch.

The runtime pickles the state of every position touched in an epoch, and a busy ledger
touches most of them: 57 us for a typical position, measured, a third of a core at one
epoch a second over 6,000 positions. Most of it was the lateness window's memory, one
pickled object per remembered event id and per delta. Here the ids of a chunk travel
as one string (ids never hold a control character: the contract refuses them, so
US, 0x1f, separates them) and times and quantities as one array of int64, so
pickling is a copy of bytes. Rare parts (an offer's terms, a promise's plan) stay objects.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Collection
from itertools import chain
from typing import Any

from ledger.memory import DeltaChunk, DeltaLog, EventIds, IdChunk
from ledger.outputs import InboundLine
from ledger.position import Count, Hold, Position

__all__ = ["PositionState", "position_from_state", "position_state"]

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


def position_state(p: Position) -> PositionState:
    """`p` as plain containers (see `position_from_state`)."""
    count = p.count
    return (
        _VERSION,
        p.site_id,
        p.sku,
        p.safety_stock,
        p.on_hand,
        None if count is None else (count.at, count.qty, count.event_id),
        p.settled,
        tuple([(c.oldest, c.newest, c.total, c.packed(_pack_pairs)) for c in p.deltas.sealed]),
        _pack_pairs(p.deltas.open),
        tuple([(ref, h.qty, h.expires_at, h.requested_at) for ref, h in p.holds.items()]) if p.holds else (),
        p.staged,
        tuple([(line.ref, line.qty, line.eta, line.promised) for line in p.inbound.values()]) if p.inbound else (),
        p.ended,
        tuple([(c.newest, c.packed(_join)) for c in p.seen.sealed]),
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
            tuple(DeltaChunk(oldest, newest, total, _pairs(items)) for oldest, newest, total, items in delta_chunks),
            _pairs(open_deltas),
        ),
        {ref: Hold(qty, expires_at, requested_at) for ref, qty, expires_at, requested_at in holds},
        staged,
        {ref: InboundLine(ref, qty, eta, promised) for ref, qty, eta, promised in inbound},
        ended,
        EventIds(
            tuple(IdChunk(newest, frozenset(_ids(ids))) for newest, ids in id_chunks),
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
