"""A source read's plain events decoded and checked together, over numpy columns.

`WireCodec.read_event` reads one message value field by field in Python: ~10-13 us of
CPU a message here, a third of the flow's per-event CPU. Most of it is the interpreter
stepping through bytes and rules one value at a time. A source read holds thousands of
values of one schema, and an Avro record of ours is a fixed sequence of fields, so each
field can be located in every value at once: `pos` is one array of offsets, advanced
field by field with numpy, and every rule of the contract's plain path
(`ledger.contract.plain_event`) is one comparison over a column. What remains per event
is making its strings and the `InventoryEvent`.

The batch path only ever accepts: a value it cannot read this way (another framing or
writer schema, a name of 64 bytes or more, a number of ten bytes, a fulfilment plan) or
that breaks any rule gives None, and the caller reads that value with `read_event`, which
is where every dead letter and its reason comes from. So what `plain_events` returns for
a value is either None or exactly the event `read_event` returns for it
(`tests/component/adapters/test_avro_batch.py` holds it to that on any bytes).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from ledger._frozen import built
from ledger.contract import MAX_MILLIS, MAX_QTY, MIN_MILLIS, plain_rule
from ledger.events import EventType, InventoryEvent, Millis

__all__ = ["MIN_BATCH", "plain_events"]

MIN_BATCH = 200
"""Fewer values than this are read one by one: the column steps cost ~0.3-0.4 ms a read whatever its
size, and below ~150 values that is more than they save (measured here: 100 values 9.9-10.2 us a
value against 8.2-8.6 one by one; 200, 7.9-8.2 against 10.2-10.3; 1,000, 4.2-6.2 against 6.9-9.9)."""

_Ints = npt.NDArray[np.int64]
_Mask = npt.NDArray[np.bool_]
_Bytes = npt.NDArray[np.uint8]

_LONG_BYTES = 9  # 63 bits of zig-zag payload: longer longs go the one-by-one way
_STEPS = np.arange(_LONG_BYTES, dtype=np.int64)
_SHIFTS = (7 * _STEPS).astype(np.uint64)
_DOUBLE_BYTES = np.arange(8, dtype=np.int64)
_PAD = bytes(16)  # gathers past the last value read zeros, never outside the buffer

_new_event = built(InventoryEvent)
"""`InventoryEvent(...)` with all 15 fields, built from a mutable twin (`ledger._frozen.built`): one an event
read, 0.7-0.9 us against 2.2-2.7 through the frozen class's descriptors."""


class _Kinds:
    """The contract's per-kind rules as lookup columns indexed by the schema's enum index."""

    __slots__ = ("count", "kinds", "needs_destination", "needs_eta", "needs_expiry", "needs_ref", "nonzero", "positive")

    def __init__(self, kinds: tuple[EventType, ...]) -> None:
        rules = [plain_rule(kind) for kind in kinds]
        self.kinds = kinds
        self.count = len(kinds)
        self.nonzero = np.array([r.qty == "nonzero" for r in rules])
        self.positive = np.array([r.qty == "positive" for r in rules])
        self.needs_ref = np.array([r.needs_ref for r in rules])
        self.needs_destination = np.array([r.needs_destination for r in rules])
        self.needs_eta = np.array([r.needs_eta for r in rules])
        self.needs_expiry = np.array([r.needs_expiry for r in rules])


@cache
def _kinds(kinds: tuple[EventType, ...]) -> _Kinds:
    return _Kinds(kinds)


class _Cursor:
    """Every value's read offset, moved field by field; `ok` says which values still read as plain."""

    __slots__ = ("buf", "limit", "ok", "pos", "unprintable")

    def __init__(self, buf: _Bytes, pos: _Ints, ok: _Mask, limit: int) -> None:
        self.buf = buf
        self.pos = pos
        self.ok = ok
        self.limit = limit
        # A running count of the bytes that are not printable ASCII over the whole buffer: a
        # name holds none when the counts at its two ends are equal.
        self.unprintable = np.zeros(len(buf) + 1, dtype=np.int32)
        np.cumsum((buf < 0x20) | (buf > 0x7E), dtype=np.int32, out=self.unprintable[1:])

    def _advance(self, to: _Ints) -> None:
        # A value read past its end is refused at the end (its offset passes its length); the
        # clip only keeps the next gathers inside the buffer.
        np.minimum(to, self.limit, out=to)
        self.pos = to

    def text(self, present: _Mask | None = None) -> tuple[_Ints, _Ints]:
        """A name under 64 bytes at every offset: (start, end); a value whose name is not plain stops being ok."""
        size = self.buf[self.pos]
        start = self.pos + 1
        end = start + (size >> 1).astype(np.int64)
        np.minimum(end, self.limit, out=end)
        # Printable ASCII and not empty; a name that starts with a blank is left to the one-by-one
        # reader (`_plain_text` refuses the all-blank ones, and such names are rare).
        good = (size < 0x80) & ((size & 1) == 0) & (end > start) & (self.buf[start] != 0x20)
        good &= self.unprintable[end] == self.unprintable[start]
        if present is None:
            self.ok &= good
            self._advance(end)
        else:
            self.ok &= good | ~present
            self._advance(np.where(present, end, self.pos))
        return start, end

    def long(self, present: _Mask | None = None) -> _Ints:
        """A zig-zag varint of up to nine bytes at every offset."""
        window = self.buf[self.pos[:, None] + _STEPS]
        last = window < 0x80
        good = last.any(axis=1)
        length = last.argmax(axis=1) + 1
        payload = np.where(length[:, None] > _STEPS, (window & 0x7F).astype(np.uint64) << _SHIFTS, 0)
        raw = np.bitwise_or.reduce(payload, axis=1)
        value: _Ints = (raw >> 1).astype(np.int64) ^ -(raw & 1).astype(np.int64)
        if present is None:
            self.ok &= good
            self._advance(self.pos + length)
        else:
            self.ok &= good | ~present
            self._advance(np.where(present, self.pos + length, self.pos))
        return value

    def double(self, present: _Mask) -> npt.NDArray[np.float64]:
        """A little-endian double at every offset where `present`."""
        raw = np.ascontiguousarray(self.buf[self.pos[:, None] + _DOUBLE_BYTES])
        self._advance(np.where(present, self.pos + 8, self.pos))
        return raw.view("<f8").ravel()

    def branch(self) -> _Mask:
        """An optional field's union branch: which values carry it (branch 1); anything but 0 or 1 is not ok."""
        branch = self.buf[self.pos]
        self.ok &= (branch == 0) | (branch == 2)
        self._advance(self.pos + 1)
        present: _Mask = branch == 2
        return present


def plain_events(
    values: Sequence[bytes],
    origins: Sequence[str],
    header: bytes,
    kinds: tuple[EventType, ...],
    now: Millis | None,
    max_skew_ms: int,
) -> list[InventoryEvent | None]:
    """The plain valid event each value written after `header` holds, or None where it must be read one by one.

    `kinds` are the event types by the schema's enum index. The event is the one
    `WireCodec.read_event(value, origin, now, max_skew_ms)` gives, `origin` its origin.
    """
    count = len(values)
    joined = b"".join(values)
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=count)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    buf = np.frombuffer(joined + _PAD, dtype=np.uint8)
    ok = lengths > len(header)
    for offset, byte in enumerate(header):
        ok &= buf[starts + offset] == byte
    cur = _Cursor(buf, starts + len(header), ok, len(joined))
    rules = _kinds(kinds)

    id_start, id_end = cur.text()
    kind_byte = cur.buf[cur.pos]
    cur.ok &= (kind_byte < 0x80) & ((kind_byte & 1) == 0) & ((kind_byte >> 1) < rules.count)
    kind = np.where(cur.ok, kind_byte >> 1, 0).astype(np.int64)
    cur._advance(cur.pos + 1)
    occurred_at = cur.long()
    site_start, site_end = cur.text()
    sku_start, sku_end = cur.text()
    qty = cur.long()
    has_ref = cur.branch()
    ref_start, ref_end = cur.text(has_ref)
    has_to = cur.branch()
    to_start, to_end = cur.text(has_to)
    has_eta = cur.branch()
    eta = cur.long(has_eta)
    has_expiry = cur.branch()
    expires_at = cur.long(has_expiry)
    has_price = cur.branch()
    price = cur.double(has_price)
    has_lead = cur.branch()
    lead = cur.long(has_lead)
    has_source = cur.branch()
    source_start, source_end = cur.text(has_source)
    # No fulfilment plan (branch 0), and nothing left over.
    ok = cur.ok & (cur.buf[cur.pos] == 0) & (cur.pos + 1 == ends)

    # `plain_event`'s rules, a column at a time.
    latest = MAX_MILLIS if now is None else min(MAX_MILLIS, now + max_skew_ms)
    ok &= (occurred_at >= MIN_MILLIS) & (occurred_at <= latest)
    ok &= np.abs(qty) <= MAX_QTY
    ok &= np.where(rules.nonzero[kind], qty != 0, np.where(rules.positive[kind], qty > 0, qty >= 0))
    ok &= has_ref | ~rules.needs_ref[kind]
    ok &= has_to | ~rules.needs_destination[kind]
    ok &= ~has_eta & ~rules.needs_eta[kind] | has_eta & (eta >= MIN_MILLIS) & (eta <= MAX_MILLIS)
    ok &= ~has_expiry & ~rules.needs_expiry[kind] | (
        has_expiry & (expires_at >= MIN_MILLIS) & (expires_at <= MAX_MILLIS) & (expires_at > occurred_at)
    )
    ok &= ~has_price | (price >= 0)  # NaN fails it too
    ok &= ~has_lead | (lead >= 0) & (lead <= 365)

    out: list[InventoryEvent | None] = [None] * count
    rare = has_ref | has_to | has_eta | has_expiry | has_price | has_lead
    kinds_of = rules.kinds
    intern, new_event = sys.intern, _new_event
    # The whole read as text, one character a byte: a name is then a slice of it (what
    # decoding its bytes as ASCII gives: every byte of a plain name is printable ASCII),
    # a third of the cost of slicing and decoding bytes per name.
    text = joined.decode("latin-1")
    # Python values for the rows that read as plain only, a column at a time: first the sales,
    # receipts and counts (a source at most), then the rows with other optional fields.
    every: tuple[npt.NDArray[Any], ...] = (id_start, id_end, kind, occurred_at, site_start, site_end, sku_start)
    every += (sku_end, qty, has_source, source_start, source_end)
    rows = np.flatnonzero(ok & ~rare)
    for row, i0, i1, k, at, s0, s1, u0, u1, units, sourced, o0, o1 in zip(
        rows.tolist(), *(column[rows].tolist() for column in every), strict=True
    ):
        out[row] = new_event(
            text[i0:i1],
            kinds_of[k],
            at,
            intern(text[s0:s1]),
            intern(text[u0:u1]),
            units,
            None, None, None, None, None, None,
            text[o0:o1] if sourced else None,
            None,
            origins[row],
        )  # fmt: skip
    rows = np.flatnonzero(ok & rare)
    for (
        row,
        i0,
        i1,
        k,
        at,
        s0,
        s1,
        u0,
        u1,
        units,
        sourced,
        o0,
        o1,
        refd,
        r0,
        r1,
        moved,
        t0,
        t1,
        dated,
        eta_at,
        expiring,
        expiry,
        priced,
        amount,
        led,
        days,
    ) in zip(
        rows.tolist(),
        *(column[rows].tolist() for column in every),
        *(column[rows].tolist() for column in (has_ref, ref_start, ref_end, has_to, to_start, to_end)),
        *(column[rows].tolist() for column in (has_eta, eta, has_expiry, expires_at)),
        *(column[rows].tolist() for column in (has_price, price, has_lead, lead)),
        strict=True,
    ):
        site = text[s0:s1]
        to_site = text[t0:t1] if moved else None
        if to_site == site:
            continue  # `validate` refuses a move to where it is; read it one by one for its dead letter
        out[row] = new_event(
            text[i0:i1],
            kinds_of[k],
            at,
            intern(site),
            intern(text[u0:u1]),
            units,
            text[r0:r1] if refd else None,
            to_site,
            eta_at if dated else None,
            expiry if expiring else None,
            amount if priced else None,
            days if led else None,
            text[o0:o1] if sourced else None,
            None,
            origins[row],
        )
    return out
