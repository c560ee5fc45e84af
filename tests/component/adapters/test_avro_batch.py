"""`WireCodec.read_events`: a source read decoded together gives what `read_event` gives value by value."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.avro_batch import MIN_BATCH, plain_events
from adapters.avro_wire import SINGLE_OBJECT_MARKER, WireCodec
from adapters.clock import ReplayClock
from adapters.codec import RawInput
from flows.admission import admit_read
from ledger.contract import (
    _NEEDS_DESTINATION,
    _NEEDS_ETA,
    _NEEDS_REF,
    MAX_MILLIS,
    MAX_QTY,
    event_to_json_bytes,
    event_to_record,
)
from ledger.dead_letter import DeadLetter
from ledger.events import EventType, InventoryEvent
from tests.component.adapters.test_avro_one_pass import NOW, SKEW, any_records, long_names, our_bytes
from tests.component.adapters.test_avro_wire import valid_events

pytestmark = pytest.mark.component

CODEC = WireCodec()
SALE = CODEC.encode(InventoryEvent("e-1", EventType.SOLD, NOW, "ST-1", "SKU-1", 2, source="POS"))


_NAMES = ["", " ", " a", "a b", "a\x7f", "~", "x" * 63, "x" * 64, "caf\u00e9"]
_EDGES = {
    "qty": [0, 1, -1, MAX_QTY, MAX_QTY + 1, -MAX_QTY, -MAX_QTY - 1, 2**40],
    "occurred_at": [-1, 0, MAX_MILLIS, MAX_MILLIS + 1, NOW + SKEW, NOW + SKEW + 1, 2**62],
    "eta": [None, -1, 0, MAX_MILLIS, MAX_MILLIS + 1],
    "expires_at": [None, -1, MAX_MILLIS + 1, "occurred_at", "occurred_at+1"],
    "lead_time_days": [None, -1, 0, 365, 366],
    "price": [None, 0.0, -0.0, -1e-300, float("nan"), float("inf"), 1.5],
    "ref": [None, *_NAMES],
    "to_site_id": [None, "site_id", *_NAMES],
    "source": [None, *_NAMES],
    "event_id": _NAMES,
    "site_id": _NAMES,
    "sku": _NAMES,
}


@st.composite
def near_valid(draw, kind: EventType) -> bytes:
    """A valid event of `kind` with one or two fields moved to the edge of what the contract accepts."""
    record = event_to_record(draw(valid_events(kind)))
    for field in draw(st.lists(st.sampled_from(sorted(_EDGES)), min_size=1, max_size=2)):
        record = _at_edge(record, field, draw(st.sampled_from(_EDGES[field])))
    return our_bytes(CODEC, record)


def _at_edge(record: dict, field: str, edge: object) -> dict:
    """`record` with `field` moved to `edge` (named edges: the record's own time + 0 or 1, its own site)."""
    named = {"occurred_at": record["occurred_at"], "occurred_at+1": record["occurred_at"] + 1}
    named["site_id"] = record["site_id"]
    return {**record, field: named.get(edge, edge) if isinstance(edge, str) else edge}


def _bases(kind: EventType) -> list[dict]:
    """A valid event of `kind` with only the fields it needs, and one with every optional field set."""
    qty = -3 if kind is EventType.ADJUSTED else 3
    bare = InventoryEvent(
        "e-1", kind, NOW - 5_000, "ST-1", "SKU-1", qty,
        ref="R-1" if kind in _NEEDS_REF else None,
        to_site_id="ST-2" if kind in _NEEDS_DESTINATION else None,
        eta=NOW + 1 if kind in _NEEDS_ETA else None,
        expires_at=NOW if kind is EventType.RESERVATION_REQUESTED else None,
    )  # fmt: skip
    full = replace(
        bare, ref="R-1", to_site_id="ST-2", eta=NOW + 1, expires_at=NOW, price=9.5, lead_time_days=3, source="POS"
    )
    return [event_to_record(bare), event_to_record(full)]


def test_every_edge_of_the_contract_reads_over_columns_as_one_by_one():
    read = []
    for kind in EventType:
        for base in _bases(kind):
            read.append(our_bytes(CODEC, base))
            for field, edges in _EDGES.items():
                read.extend(our_bytes(CODEC, _at_edge(base, field, edge)) for edge in edges)
    origins = [f"inventory[0]@{i}" for i in range(len(read))]
    together = CODEC.read_events(read, origins, NOW, SKEW)
    one_by_one = [CODEC.read_event(v, o, NOW, SKEW) for v, o in zip(read, origins, strict=True)]
    assert together == one_by_one
    # Both sides of each edge are there: events and dead letters.
    assert 0.2 < sum(isinstance(e, DeadLetter) for e in together) / len(together) < 0.8


def test_every_byte_changed_cut_or_extended_reads_over_columns_as_one_by_one():
    read = []
    for kind in EventType:
        for base in _bases(kind):
            value = our_bytes(CODEC, base)
            read.append(value)
            for at in range(10, len(value)):
                read.append(value[:at])
                read.append(value[: at + 1] + value[at:])
                changed = {0, 1, 2, 3, 4, 0x7F, 0x80, 0xFF, value[at] ^ 1, value[at] ^ 0x80, value[at] ^ 2}
                read.extend(value[:at] + bytes([byte]) + value[at + 1 :] for byte in sorted(changed))
            read.append(value + b"\x00")
    origins = [f"inventory[0]@{i}" for i in range(len(read))]
    together = CODEC.read_events(read, origins, NOW, SKEW)
    assert together == [CODEC.read_event(v, o, NOW, SKEW) for v, o in zip(read, origins, strict=True)]


@st.composite
def values(draw) -> bytes:
    """Any message value a topic may carry: valid events, any record of our schema, damaged bytes, other framings."""
    kind = draw(st.sampled_from(list(EventType)))
    choice = draw(st.integers(0, 9))
    if choice >= 7:
        return draw(near_valid(kind))
    if choice == 0:
        return CODEC.encode(draw(valid_events(kind)))
    if choice == 1:
        return our_bytes(CODEC, draw(any_records()))
    if choice == 2:
        record = draw(any_records())
        return our_bytes(CODEC, {**record, "event_id": draw(long_names), "site_id": draw(long_names)})
    if choice == 3:
        # A valid value with bytes changed, cut or extended.
        body = bytearray(CODEC.encode(draw(valid_events(kind)))[10:])
        for _ in range(draw(st.integers(1, 3))):
            body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
        body = body[: draw(st.integers(0, len(body) + 2))] + draw(st.binary(max_size=3))
        return SINGLE_OBJECT_MARKER + CODEC.fingerprint + bytes(body)
    if choice == 4:
        return event_to_json_bytes(draw(valid_events(kind)))
    if choice == 5:
        return draw(st.binary(max_size=30))
    return SINGLE_OBJECT_MARKER + CODEC.fingerprint + draw(st.binary(max_size=40))


@settings(max_examples=500, deadline=None)
@given(drawn=st.lists(values(), min_size=0, max_size=12), at=st.integers(0, MIN_BATCH), now=st.none() | st.just(NOW))
def test_a_read_decoded_together_gives_what_each_value_read_alone_gives(drawn, at, now):
    # Among enough plain sales that the read goes over columns (a short read goes one by one).
    read = [SALE] * at + drawn + [SALE] * (MIN_BATCH - at)
    origins = [f"inventory[3]@{i}" for i in range(len(read))]
    together = CODEC.read_events(read, origins, now, SKEW)
    assert together == [CODEC.read_event(v, o, now, SKEW) for v, o in zip(read, origins, strict=True)]
    # Same origins too: a dead letter or an event names the message it came from.
    assert [e.origin for e in together] == origins


@settings(max_examples=200, deadline=None)
@given(data=st.data(), kind=st.sampled_from(list(EventType)))
def test_plain_events_of_every_kind_are_read_over_columns(data, kind):
    events = data.draw(st.lists(valid_events(kind), min_size=1, max_size=5))
    events = [e for e in events if not e.site_id.startswith(" ")]  # left to the one-by-one reader
    read = [CODEC.encode(e) for e in events]
    origins = [f"t[0]@{i}" for i in range(len(read))]
    got = plain_events(read, origins, SINGLE_OBJECT_MARKER + CODEC.fingerprint, tuple(EventType), NOW, SKEW)
    for value, origin, event in zip(read, origins, got, strict=True):
        one = CODEC.read_event(value, origin, NOW, SKEW)
        if event is None:
            # Only a name of 64 bytes or more, or one starting with a blank, leaves the columns.
            assert isinstance(one, DeadLetter) or any(
                len(text.encode()) >= 64 or text.startswith(" ") or not text.isascii()
                for text in (one.event_id, one.site_id, one.sku, one.ref or "", one.to_site_id or "", one.source or "")
            )
        else:
            assert event == one


def test_a_refused_value_in_a_read_keeps_its_dead_letter_and_its_neighbours_their_events():
    bad = json.loads(event_to_json_bytes(InventoryEvent("e-9", EventType.SOLD, NOW, "ST-1", "SKU-1", 2)))
    bad["qty"] = 0
    refused = our_bytes(CODEC, {**bad, "type": "SOLD", "fulfilment": None})
    read = [SALE] * MIN_BATCH + [refused] + [SALE] * MIN_BATCH
    origins = [f"inventory[0]@{i}" for i in range(len(read))]
    got = CODEC.read_events(read, origins, NOW, SKEW)
    letter = got[MIN_BATCH]
    assert isinstance(letter, DeadLetter)
    assert (letter.reason, letter.raw, letter.origin) == ("qty_out_of_range", refused, f"inventory[0]@{MIN_BATCH}")
    assert all(
        isinstance(e, InventoryEvent) and e.origin == o for e, o in zip(got, origins, strict=True) if e is not letter
    )


def test_admission_of_a_kafka_read_stamps_the_events_decoded_together_in_order():
    codec = WireCodec()
    events = [
        InventoryEvent(f"e-{i}", EventType.RECEIVED, NOW - 1000 + i, "ST-1", f"SKU-{i % 7}", 1 + i % 5, source="WMS")
        for i in range(3 * MIN_BATCH)
    ]
    read = tuple(RawInput(f"inventory[1]@{i}", codec.encode(e)) for i, e in enumerate(events))
    together = admit_read(read, ReplayClock(), SKEW, codec.decode)
    one_by_one = [admit_read((item,), ReplayClock(), SKEW, codec.decode)[0] for item in read]
    assert [event for _, event in together] == [event for _, event in one_by_one]  # type: ignore[misc]
    # A replay's stamp is the newest occurred_at so far: rising with the read.
    assert [stamp for stamp, _ in together] == [e.occurred_at for e in events]  # type: ignore[misc]
