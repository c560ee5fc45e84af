"""A plain position as nine fixed-width numbers and one packed tail: how a shard keeps it at rest.

Most positions at rest are plain: no holds, staged parcels, inbound lines, tombstones,
plans or offer, only a count and what the lateness window remembers (a few event ids
and on-hand deltas). Kept as a `Position` object graph such a position weighs about a
kilobyte; here it is the numbers of `NUMBERS` (one int64 column each in the shard) and
a `bytes` tail holding the count's event id and the window's memory:

    header  7 bytes: has count, sealed id chunks, open ids, sealed delta chunks, open
            deltas (one byte each), then the number of int64 that follow (2 bytes)
    int64   open ids' times; per sealed id chunk (newest, ids); per sealed delta chunk
            (oldest, newest, total, items, then the items' (at, qty)); open deltas' (at, qty)
    text    UTF-8: the count's event id, then the sealed chunks' ids, then the open ids,
            separated by US (0x1f, which the contract refuses inside an id)

A position with no count and nothing remembered has an empty tail. `tail_of` says None
for a position that is not plain, or remembers too much for a tail to be cheap to
rebuild at every fold (`MAX_CHUNKS`); the shard keeps those as `Position` objects.
`position_of(..., tail_of(p))` equals `p`, field by field.
"""

from __future__ import annotations

import struct
from array import array
from itertools import chain

from ledger.memory import NEVER, DeltaChunk, DeltaLog, EventIds, IdChunk
from ledger.position import Count, Position

__all__ = ["MAX_CHUNKS", "NUMBERS", "numbers_of", "position_of", "tail_of"]

NUMBERS = (
    "safety_stock",
    "on_hand",
    "count_at",
    "count_qty",
    "settled",
    "max_at",
    "forget_at",
    "version",
    "updated_at",
)
"""The per-position numbers a shard keeps in columns, in this order."""

MAX_CHUNKS = 2
"""Sealed chunks (ids plus deltas) a plain position may remember: up to about 250
entries. A busier window stays an object, so a fold never unpacks thousands of ids."""

_HEAD = struct.Struct("<BBBBBH")
_SEP = "\x1f"


def numbers_of(p: Position) -> tuple[int, ...]:
    """The values of `NUMBERS` for `p` (a missing count as 0, 0: its tail says there is none)."""
    count = p.count
    return (
        p.safety_stock,
        p.on_hand,
        0 if count is None else count.at,
        0 if count is None else count.qty,
        p.settled,
        p.max_at,
        p.forget_at,
        p.version,
        p.updated_at,
    )


def tail_of(p: Position) -> bytes | None:
    """The packed tail of a plain position, or None when `p` must stay an object."""
    if (
        p.holds
        or p.staged
        or p.inbound
        or p.ended
        or p.plans
        or p.offer is not None
        or p.offer_id
        or p.held_total != 0
        or p.staged_total != 0
        or p.expiry_floor_at != NEVER
    ):
        return None
    seen, deltas, count = p.seen, p.deltas, p.count
    if len(seen.sealed) + len(deltas.sealed) > MAX_CHUNKS:
        return None
    if count is None and not seen.open and not seen.sealed and not deltas.open and not deltas.sealed:
        return b""
    texts: list[str] = [] if count is None else [count.event_id]
    ints = array("q", seen.open.values())
    for idc in seen.sealed:
        ints.append(idc.newest)
        ints.append(len(idc.ids))
        texts.extend(idc.ids)
    texts.extend(seen.open)
    for dc in deltas.sealed:
        ints.extend((dc.oldest, dc.newest, dc.total, len(dc.items)))
        ints.extend(chain.from_iterable(dc.items))
    ints.extend(chain.from_iterable(deltas.open))
    text = _SEP.join(texts)
    if (
        len(seen.open) > 255
        or len(deltas.open) > 255
        or len(ints) > 0xFFFF
        or (texts and text.count(_SEP) != len(texts) - 1)
    ):
        return None  # an id holding the separator (built past the contract), or counts past a byte
    head = _HEAD.pack(
        count is not None, len(seen.sealed), len(seen.open), len(deltas.sealed), len(deltas.open), len(ints)
    )
    return head + ints.tobytes() + text.encode()


def position_of(site_id: str, sku: str, numbers: tuple[int, ...], tail: bytes) -> Position:
    """The position that `numbers_of` and `tail_of` describe."""
    safety_stock, on_hand, count_at, count_qty, settled, max_at, forget_at, version, updated_at = numbers
    if not tail:
        return Position(
            site_id,
            sku,
            safety_stock,
            on_hand,
            None,
            settled,
            max_at=max_at,
            forget_at=forget_at,
            version=version,
            updated_at=updated_at,
            held_total=0,
            staged_total=0,
            expiry_floor_at=NEVER,
        )
    has_count, n_sealed_ids, n_open_ids, n_sealed_deltas, n_open_deltas, n_ints = _HEAD.unpack_from(tail)
    end = _HEAD.size + 8 * n_ints
    ints = array("q")
    ints.frombytes(tail[_HEAD.size : end])
    text = tail[end:].decode()
    n_texts = has_count + n_open_ids
    at = n_open_ids
    sizes = []
    for _ in range(n_sealed_ids):
        sizes.append((ints[at], ints[at + 1]))
        n_texts += ints[at + 1]
        at += 2
    texts = text.split(_SEP) if n_texts else []
    t = 0
    count = None
    if has_count:
        count = Count(count_at, count_qty, texts[0])
        t = 1
    id_chunks = []
    for newest, n in sizes:
        id_chunks.append(IdChunk(newest, frozenset(texts[t : t + n])))
        t += n
    open_ids = dict(zip(texts[t:], ints[:n_open_ids], strict=True))
    delta_chunks = []
    for _ in range(n_sealed_deltas):
        oldest, newest, total, n = ints[at : at + 4]
        flat = ints[at + 4 : at + 4 + 2 * n]
        delta_chunks.append(DeltaChunk(oldest, newest, total, tuple(zip(flat[0::2], flat[1::2], strict=True))))
        at += 4 + 2 * n
    flat = ints[at : at + 2 * n_open_deltas]
    return Position(
        site_id,
        sku,
        safety_stock,
        on_hand,
        count,
        settled,
        DeltaLog(tuple(delta_chunks), tuple(zip(flat[0::2], flat[1::2], strict=True))),
        seen=EventIds(tuple(id_chunks), open_ids),
        max_at=max_at,
        forget_at=forget_at,
        version=version,
        updated_at=updated_at,
        held_total=0,
        staged_total=0,
        expiry_floor_at=NEVER,
    )
