"""`WireCodec.read_event`: decoding and validating in one pass gives what `decode` then `validate` give."""

from __future__ import annotations

import json
from io import BytesIO

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.avro_wire import SINGLE_OBJECT_MARKER, WireCodec, _plain_body, schema_fingerprint
from adapters.codec import SCHEMA_PATH
from ledger.contract import MAX_QTY, event_to_record, validate
from ledger.dead_letter import DeadLetter
from ledger.events import EventType, InventoryEvent
from tests.component.adapters.test_avro_wire import valid_events

pytestmark = pytest.mark.component

SCHEMA = fastavro.parse_schema(json.loads(SCHEMA_PATH.read_text()))
ORIGIN = "inventory[2]@41"
NOW = 1_790_000_000_000
SKEW = 300_000


def two_passes(codec: WireCodec, value: bytes, now: int | None) -> InventoryEvent | DeadLetter:
    """What admission did before: decode, then validate the record."""
    record = codec.decode(value, ORIGIN)
    if isinstance(record, DeadLetter):
        return record
    return validate(record, origin=ORIGIN, raw=value, now=now, max_skew_ms=SKEW)


def our_bytes(codec: WireCodec, record: dict) -> bytes:
    out = BytesIO()
    out.write(SINGLE_OBJECT_MARKER + codec.fingerprint)
    fastavro.schemaless_writer(out, SCHEMA, record)
    return out.getvalue()


# Text the contract accepts and text it refuses: blank, control characters, non-ASCII.
texts = st.sampled_from(["ST-1", "SKU-9", "e-1", "", " ", "a\x00b", "tab\tin", "café", "ST-2", " lead"]) | st.text(
    max_size=6
)
numbers = st.integers(-(2**40), 2**40) | st.sampled_from([0, 1, -1, MAX_QTY, MAX_QTY + 1, 253_402_300_799_999])


@st.composite
def any_records(draw) -> dict:
    """Records our schema can hold, valid or not: every field drawn from good and bad values."""
    occurred_at = draw(st.integers(-10, 253_402_300_800_000) | st.sampled_from([NOW, NOW + SKEW, NOW + SKEW + 1]))
    return {
        "event_id": draw(texts),
        "type": draw(st.sampled_from([t.value for t in EventType])),
        "occurred_at": occurred_at,
        "site_id": draw(texts),
        "sku": draw(texts),
        "qty": draw(st.integers(-(2**31), 2**31 - 1) | st.sampled_from([0, 1, -1, MAX_QTY, MAX_QTY + 1])),
        "ref": draw(st.none() | texts),
        "to_site_id": draw(st.none() | texts),
        "eta": draw(st.none() | numbers),
        "expires_at": draw(st.none() | numbers | st.sampled_from([occurred_at, occurred_at + 1])),
        "price": draw(st.none() | st.floats(allow_nan=True, allow_infinity=True)),
        "lead_time_days": draw(st.none() | st.integers(-5, 400)),
        "source": draw(st.none() | texts),
        "fulfilment": None,
    }


@pytest.mark.parametrize("kind", list(EventType))
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_every_valid_event_reads_in_one_pass_as_in_two(kind, data):
    codec = WireCodec()
    value = codec.encode(data.draw(valid_events(kind)))
    assert codec.read_event(value, ORIGIN, None, SKEW) == two_passes(codec, value, None)


@settings(max_examples=1500, deadline=None)
@given(record=any_records(), now=st.none() | st.just(NOW))
def test_any_record_of_our_schema_reads_in_one_pass_as_in_two_events_and_dead_letters_alike(record, now):
    codec = WireCodec()
    value = our_bytes(codec, record)
    assert codec.read_event(value, ORIGIN, now, SKEW) == two_passes(codec, value, now)


# Names of every length around the one-byte length prefix (under 64 bytes) the reader inlines.
long_names = st.text(alphabet="abcXYZ-09 \x7f\u00e9", min_size=60, max_size=70) | st.sampled_from(
    ["x" * 63, "x" * 64, "y" * 65, "z" * 200]
)


@settings(max_examples=400, deadline=None)
@given(record=any_records(), id_=long_names, site=long_names, sku=long_names, qty=st.integers(-(2**20), 2**20))
def test_long_names_and_large_quantities_read_in_one_pass_as_in_two(record, id_, site, sku, qty):
    codec = WireCodec()
    value = our_bytes(codec, {**record, "event_id": id_, "site_id": site, "sku": sku, "qty": qty})
    assert codec.read_event(value, ORIGIN, NOW, SKEW) == two_passes(codec, value, NOW)


def test_an_event_with_every_optional_field_null_reads_in_one_pass():
    codec = WireCodec()
    for qty in (1, 63, 64, 10_000):
        receipt = InventoryEvent("e-1", EventType.RECEIVED, NOW, "ST-1", "SKU-1", qty, origin=ORIGIN)
        value = codec.encode(receipt)
        assert value.endswith(bytes(8))
        assert _plain_body(value, tuple(EventType), ORIGIN, NOW, SKEW) == receipt


def test_the_common_events_take_the_one_pass_path():
    codec = WireCodec()
    sale = InventoryEvent("e-1", EventType.SOLD, NOW, "ST-1", "SKU-1", 2, source="POS")
    assert _plain_body(codec.encode(sale), tuple(EventType), ORIGIN, NOW, SKEW) is not None


def test_a_refused_record_keeps_its_reason_through_the_one_pass_reader():
    codec = WireCodec()
    record = {**event_to_record(InventoryEvent("e-1", EventType.SOLD, NOW, "ST-1", "SKU-1", 2)), "qty": 0}
    value = our_bytes(codec, record)
    letter = codec.read_event(value, ORIGIN, NOW, SKEW)
    assert isinstance(letter, DeadLetter)
    assert letter == two_passes(codec, value, NOW)
    assert (letter.reason, letter.raw, letter.event_id) == ("qty_out_of_range", value, "e-1")


@settings(max_examples=800, deadline=None)
@given(data=st.data())
def test_any_bytes_after_our_header_read_in_one_pass_as_in_two(data):
    codec = WireCodec()
    sale = codec.encode(InventoryEvent("e-1", EventType.SOLD, NOW, "ST-1", "SKU-1", 2, ref="r", price=1.5))
    # A valid value cut, extended or with bytes changed, or any bytes at all.
    body = bytearray(sale[10:])
    for _ in range(data.draw(st.integers(0, 3))):
        if body:
            body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    body = body[: data.draw(st.integers(0, len(body) + 2))] + data.draw(st.binary(max_size=3))
    value = data.draw(st.sampled_from([bytes(body), data.draw(st.binary(max_size=40))]))
    value = SINGLE_OBJECT_MARKER + codec.fingerprint + value
    assert codec.read_event(value, ORIGIN, NOW, SKEW) == two_passes(codec, value, NOW)


def test_a_value_of_an_earlier_schema_version_reads_as_in_two_passes():
    codec = WireCodec()
    earlier = json.loads((SCHEMA_PATH.parent / "history" / "inventory_event.1.avsc").read_text())
    record = event_to_record(InventoryEvent("e-1", EventType.SOLD, NOW, "S", "K", 1))
    del record["fulfilment"]
    out = BytesIO()
    out.write(SINGLE_OBJECT_MARKER + schema_fingerprint(earlier))
    fastavro.schemaless_writer(out, fastavro.parse_schema(earlier), record)
    value = out.getvalue()
    event = codec.read_event(value, ORIGIN, NOW, SKEW)
    assert isinstance(event, InventoryEvent)
    assert event == two_passes(codec, value, NOW)
