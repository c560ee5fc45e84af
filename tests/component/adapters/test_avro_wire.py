"""Kafka message values: Avro single-object encoding, Confluent framing and JSON, and their dead letters."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from io import BytesIO
from types import SimpleNamespace

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import adapters.avro_wire
from adapters.avro_wire import (
    SINGLE_OBJECT_MARKER,
    WireCodec,
    parsing_canonical_form,
    schema_fingerprint,
)
from adapters.codec import SCHEMA_PATH
from ledger.contract import MAX_QTY, event_to_record, validate
from ledger.dead_letter import DeadLetter, Reason
from ledger.errors import ConfigError, SourceError
from ledger.events import EventType, InventoryEvent

pytestmark = pytest.mark.component

T = EventType
SCHEMA = json.loads(SCHEMA_PATH.read_text())
T0 = 1_790_000_000_000
SAMPLE = InventoryEvent(
    event_id="e-42",
    type=T.SHUTTLE_LOADED,
    occurred_at=T0 + 123,
    site_id="DC-1",
    sku="SKU-00042",
    qty=12,
    ref="T-7",
    to_site_id="ST-001",
    eta=T0 + 86_400_000,
    source="WMS",
)


def evolved_schema() -> dict:
    """A newer version of the contract: one more optional field, default null."""
    schema = copy.deepcopy(SCHEMA)
    schema["fields"].append({"name": "channel", "type": ["null", "string"], "default": None})
    return schema


def single_object(schema: dict, record: dict) -> bytes:
    """Single-object bytes written independently of WireCodec: header, then fastavro's body."""
    out = BytesIO()
    out.write(SINGLE_OBJECT_MARKER + schema_fingerprint(schema))
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def malformed(result: object, raw: bytes) -> DeadLetter:
    assert isinstance(result, DeadLetter), result
    assert result.reason == Reason.MALFORMED
    assert result.raw == raw
    assert result.origin == "inventory[0]@7"
    return result


# -- fingerprints: the Avro project's own vectors ----------------------------------------

# From apache/avro share/test/data/schema-tests.txt (the cross-language conformance file
# checked by Java's TestSchemaNormalization): input, canonical form, and the fingerprint as
# the signed 64-bit number SchemaNormalization.parsingFingerprint64 returns.
AVRO_VECTORS = [
    ('"null"', '"null"', 7195948357588979594),
    ('{"type":"boolean"}', '"boolean"', -6970731678124411036),
    ('"int"', '"int"', 8247732601305521295),
    ('"long"', '"long"', -3434872931120570953),
    ('"float"', '"float"', 5583340709985441680),
    ('"double"', '"double"', -8181574048448539266),
    ('"bytes"', '"bytes"', 5746618253357095269),
    ('"string"', '"string"', -8142146995180207161),
    (
        '{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}',
        '{"name":"x.y.foo","type":"record","fields":[]}',
        5916914534497305771,
    ),
    (  # upstream's input has "default":"true", which fastavro rightly refuses for a boolean; defaults are
        # not part of the canonical form, so the vector's output and fingerprint are unchanged
        '{ "fields":[{"type":"boolean", "aliases":[], "name":"f1", "default":true},'
        ' {"order":"descending","name":"f2","doc":"Hello","type":"int"}], "type":"record", "name":"foo"}',
        '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"},{"name":"f2","type":"int"}]}',
        -4860222112080293046,
    ),
    (
        '{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar", "symbols":["A1", "A2"]}',
        '{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}',
        -4448647247586288245,
    ),
    (
        '{"name":"PigValue","type":"record", "fields":[{"name":"value", "type":["null", "int", "long", "PigValue"]}]}',
        '{"name":"PigValue","type":"record","fields":[{"name":"value","type":["null","int","long","PigValue"]}]}',
        -1759257747318642341,
    ),
]


def spec_rabin(data: bytes) -> int:
    """CRC-64-AVRO exactly as the Avro specification writes it (an oracle independent of fastavro)."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


@pytest.mark.parametrize(("schema", "canonical", "number"), AVRO_VECTORS)
def test_the_fingerprint_is_the_avro_projects_published_rabin_value_in_little_endian_order(schema, canonical, number):
    assert parsing_canonical_form(schema) == canonical
    header_bytes = schema_fingerprint(schema)
    assert header_bytes == number.to_bytes(8, "little", signed=True)
    assert int.from_bytes(header_bytes, "little") == spec_rabin(canonical.encode())


def test_the_int_schema_fingerprints_to_javas_0x7275d51a3f395c8f():
    assert schema_fingerprint('"int"') == bytes.fromhex("8f5c393f1ad57572")
    assert int.from_bytes(schema_fingerprint('"int"'), "little") == 0x7275D51A3F395C8F


def test_the_frame_matches_goavros_published_single_object_bytes_for_the_int_3():
    # linkedin/goavro documents Codec.SingleFromNative(nil, 3) for schema "int" as these bytes.
    body = BytesIO()
    fastavro.schemaless_writer(body, "int", 3)
    value = SINGLE_OBJECT_MARKER + schema_fingerprint('"int"') + body.getvalue()
    assert list(value) == [195, 1, 143, 92, 57, 63, 26, 213, 117, 114, 6]


def test_the_contract_fingerprint_matches_the_spec_algorithm_and_the_module_documentation():
    codec = WireCodec()
    canonical = parsing_canonical_form(SCHEMA)
    assert "logicalType" not in canonical
    assert "doc" not in canonical
    assert canonical.startswith('{"name":"omniledger.v1.InventoryEvent","type":"record","fields":[')
    assert codec.fingerprint == spec_rabin(canonical.encode()).to_bytes(8, "little")
    # The docstring tells producers the bytes; a schema change must update it.
    doc = adapters.avro_wire.__doc__ or ""
    assert codec.fingerprint.hex(" ") in doc
    assert f"{int.from_bytes(codec.fingerprint, 'little'):#018x}" in doc


# -- the frame ----------------------------------------------------------------------------


def test_the_single_object_frame_is_marker_then_fingerprint_then_the_avro_body_byte_by_byte():
    event = InventoryEvent(event_id="e1", type=T.SOLD, occurred_at=1, site_id="S", sku="K", qty=1)
    value = WireCodec().encode(event)
    expected = (
        b"\xc3\x01"  # single-object marker
        + schema_fingerprint(SCHEMA)  # CRC-64-AVRO of the canonical form, little-endian
        + b"\x04e1"  # event_id: zigzag length 2, then UTF-8
        + b"\x06"  # type: enum index 3 (SOLD), zigzag
        + b"\x02"  # occurred_at: long 1, zigzag
        + b"\x02S"  # site_id
        + b"\x02K"  # sku
        + b"\x02"  # qty: int 1
        + b"\x00" * 8  # ref .. fulfilment: union branch 0, null
    )
    assert value == expected
    assert value[:2] == bytes([0xC3, 0x01])
    assert value[2:10] == schema_fingerprint(SCHEMA)


def test_an_event_written_with_the_previous_contract_version_is_still_read():
    earlier = (SCHEMA_PATH.parent / "history" / "inventory_event.1.avsc").read_text()
    record = {k: v for k, v in event_to_record(SAMPLE).items() if k != "fulfilment"}
    decoded = WireCodec().decode(single_object(json.loads(earlier), record), "t[0]@0")
    assert isinstance(decoded, dict)
    assert decoded["event_id"] == SAMPLE.event_id
    assert decoded["fulfilment"] is None


def test_the_body_is_what_any_avro_library_writes_for_the_schema_file():
    value = WireCodec().encode(SAMPLE)
    assert value == single_object(SCHEMA, event_to_record(SAMPLE))


# -- round trips --------------------------------------------------------------------------

_NEEDS_REF = {
    T.RESERVATION_REQUESTED,
    T.RESERVATION_RELEASED,
    T.RESERVATION_FULFILLED,
    T.TRANSFER_PICKED,
    T.SHUTTLE_LOADED,
    T.SHUTTLE_ARRIVED,
    T.DROPSHIP_SHIPPED,
    T.DROPSHIP_RECEIVED,
}
_NEEDS_DESTINATION = {T.TRANSFER_PICKED, T.SHUTTLE_LOADED, T.DROPSHIP_SHIPPED}
_NEEDS_ETA = {T.SHUTTLE_LOADED, T.DROPSHIP_SHIPPED}

# Any text but control characters, which the contract refuses in ids (see test_contract).
names = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=30).filter(str.strip)
# The contract accepts 1970..9999; leave room for expires_at = occurred_at + up to 2**40.
millis = st.integers(0, 253_402_300_799_999 - 2**40)


@st.composite
def valid_events(draw, kind: EventType) -> InventoryEvent:
    """Any event of `kind` the contract accepts, with every optional field sometimes set."""
    occurred_at = draw(millis)
    site_id = draw(names)
    if kind is T.ADJUSTED:
        qty = draw(st.integers(-MAX_QTY, MAX_QTY).filter(bool))
    elif kind in (T.COUNTED, T.OFFER_UPDATED):
        qty = draw(st.integers(0, MAX_QTY))
    else:
        qty = draw(st.integers(1, MAX_QTY))
    to_site = names.filter(lambda s: s != site_id)
    expires = st.integers(occurred_at + 1, occurred_at + 2**40)
    return InventoryEvent(
        event_id=draw(names),
        type=kind,
        occurred_at=occurred_at,
        site_id=site_id,
        sku=draw(names),
        qty=qty,
        ref=draw(names if kind in _NEEDS_REF else st.none() | names),
        to_site_id=draw(to_site if kind in _NEEDS_DESTINATION else st.none() | to_site),
        eta=draw(millis if kind in _NEEDS_ETA else st.none() | millis),
        expires_at=draw(expires if kind is T.RESERVATION_REQUESTED else st.none() | expires),
        price=draw(st.none() | st.floats(min_value=0, allow_nan=False)),
        lead_time_days=draw(st.none() | st.integers(0, 365)),
        source=draw(st.none() | names),
    )


@pytest.mark.parametrize("kind", list(EventType))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_event_type_survives_single_object_encoding_and_validation(kind, data):
    event = data.draw(valid_events(kind))
    codec = WireCodec()
    value = codec.encode(event)
    record = codec.decode(value, "inventory[3]@99")
    assert isinstance(record, dict), record
    assert validate(record, origin="inventory[3]@99", raw=value) == replace(event, origin="inventory[3]@99")


def test_decoded_timestamps_are_exact_epoch_milliseconds():
    record = WireCodec().decode(WireCodec().encode(SAMPLE), "t")
    assert isinstance(record, dict)
    assert (record["occurred_at"], record["eta"], record["expires_at"]) == (T0 + 123, T0 + 86_400_000, None)


def test_json_bytes_decode_into_a_record_that_validates():
    value = (
        b'  {"event_id":"j1","type":"RECEIVED","occurred_at":"2026-11-25T08:00:00Z","site_id":"S","sku":"A","qty":3}'
    )
    record = WireCodec().decode(value, "t")
    assert isinstance(record, dict)
    event = validate(record, origin="t", raw=value)
    assert isinstance(event, InventoryEvent)
    assert (event.event_id, event.occurred_at, event.qty) == ("j1", 1_795_593_600_000, 3)


def test_the_json_framing_writes_json_that_decodes_back():
    codec = WireCodec(framing="json")
    value = codec.encode(SAMPLE)
    assert value.startswith(b"{")
    record = codec.decode(value, "t")
    assert validate(record, origin="", raw=value) == SAMPLE


# -- schema evolution ---------------------------------------------------------------------


def test_a_writer_schema_with_an_added_optional_field_decodes_once_registered():
    newer = evolved_schema()
    value = single_object(newer, {**event_to_record(SAMPLE), "channel": "web"})
    codec = WireCodec()

    before = malformed(codec.decode(value, "inventory[0]@7"), value)
    assert schema_fingerprint(newer).hex() in before.detail
    assert "register_writer_schema" in before.detail

    assert codec.register_writer_schema(newer) == schema_fingerprint(newer)
    record = codec.decode(value, "inventory[0]@7")
    assert isinstance(record, dict)
    assert "channel" not in record  # resolved to our schema: the unknown field is dropped
    assert validate(record, origin="", raw=value) == SAMPLE
    assert (
        codec.known_writer_schemas()
        == {
            codec.fingerprint.hex(): "ours",
            "d70e89cbf5822233": "registered",  # schemas/history/inventory_event.1.avsc
            value[2:10].hex(): "registered",
        }
    )


def test_a_writer_schema_without_an_optional_field_reads_it_as_its_default():
    older = copy.deepcopy(SCHEMA)
    older["fields"] = [f for f in older["fields"] if f["name"] != "source"]
    record = {k: v for k, v in event_to_record(SAMPLE).items() if k != "source"}
    value = single_object(older, record)
    codec = WireCodec(writer_schemas=[json.dumps(older)])
    decoded = codec.decode(value, "t")
    assert validate(decoded, origin="", raw=value) == replace(SAMPLE, source=None)


def test_a_registered_writer_whose_field_type_cannot_be_resolved_yields_a_dead_letter_naming_the_mismatch():
    clash = copy.deepcopy(SCHEMA)
    clash["fields"] = [f if f["name"] != "qty" else {"name": "qty", "type": "string"} for f in clash["fields"]]
    value = single_object(clash, {**event_to_record(SAMPLE), "qty": "twelve"})
    codec = WireCodec(writer_schemas=[clash])
    letter = malformed(codec.decode(value, "inventory[0]@7"), value)
    assert "cannot be resolved" in letter.detail
    assert "string is not int" in letter.detail


# -- configuration mistakes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ('"string"', "not a record schema"),
        ({"type": "enum", "name": "E", "symbols": ["A"]}, "not a record schema"),
        ({"type": "record", "name": "Other", "namespace": "x", "fields": []}, "'x.Other', not omniledger"),
        ({"type": "record", "name": "omniledger.v1.InventoryEvent", "fields": [{"name": "a"}]}, "not a valid Avro"),
        ("{not json", "not JSON"),
    ],
)
def test_registering_a_schema_that_is_not_a_version_of_our_record_is_a_config_error(schema, words):
    with pytest.raises(ConfigError, match="cannot register a writer schema") as caught:
        WireCodec().register_writer_schema(schema)
    assert words in str(caught.value)


def test_an_unknown_framing_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown wire framing 'protobuf'; expected one of single-object"):
        WireCodec(framing="protobuf")


def test_the_confluent_framing_without_a_registry_is_a_config_error():
    with pytest.raises(ConfigError, match="needs a schema registry"):
        WireCodec(framing="confluent")


# -- bad bytes are dead letters -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (b"", "empty message value"),
        (b"garbage!", "unrecognised message framing: first bytes 67 61 72 62; expected c3 01"),
        (b"\xc3\x01\xd7\x0e", "truncated single-object header: 4 bytes, need 10"),
        (b"\x00\x00\x01", "truncated Confluent header"),
        (b"\x00\x00\x00\x00\x05\x02", "(magic 00, schema id 5) but no schema registry is configured"),
        (b"{not json", "not a JSON object"),
    ],
)
def test_bytes_that_are_no_known_framing_yield_a_malformed_dead_letter_with_the_bytes(value, words):
    letter = malformed(WireCodec().decode(value, "inventory[0]@7"), value)
    assert words in letter.detail


def test_a_tombstone_yields_a_dead_letter_not_an_exception():
    letter = WireCodec().decode(None, "inventory[0]@7")
    assert isinstance(letter, DeadLetter)
    assert letter.raw == b""


def test_every_truncation_of_a_valid_message_yields_a_malformed_dead_letter():
    value = WireCodec().encode(SAMPLE)
    for end in range(len(value)):
        cut = value[:end]
        letter = malformed(WireCodec().decode(cut, "inventory[0]@7"), cut)
        if end > 10:
            assert "-byte Avro body" in letter.detail


def test_every_truncation_gives_the_same_dead_letter_each_time_it_is_read():
    # fastavro names its buffer with its address; a replay after a crash must write the same letter.
    value = WireCodec().encode(InventoryEvent("e-1", EventType.SOLD, 1_790_000_000_000, "S", "K", 2, price=1.5))
    for end in range(11, len(value)):
        cut = value[:end]
        first, again = WireCodec().decode(cut, "inventory[0]@7"), WireCodec().decode(bytes(cut), "inventory[0]@7")
        assert first == again
        assert isinstance(first, DeadLetter)
        assert " at 0x" not in first.detail


def test_a_truncated_body_says_it_ended_early():
    value = WireCodec().encode(SAMPLE)[:-3]
    letter = malformed(WireCodec().decode(value, "inventory[0]@7"), value)
    assert "the body ends before the record does (truncated?)" in letter.detail


def test_an_unknown_fingerprint_is_named_in_hex_with_the_known_ones():
    codec = WireCodec()
    value = SINGLE_OBJECT_MARKER + bytes.fromhex("0102030405060708") + WireCodec().encode(SAMPLE)[10:]
    letter = malformed(codec.decode(value, "inventory[0]@7"), value)
    assert "unknown writer schema fingerprint 0102030405060708" in letter.detail
    assert "0x0807060504030201" in letter.detail
    assert f"known: {codec.fingerprint.hex()} (ours)" in letter.detail


def test_a_record_of_another_schema_is_refused_by_its_fingerprint():
    other = {"type": "record", "name": "Shipment", "namespace": "acme", "fields": [{"name": "id", "type": "string"}]}
    value = single_object(other, {"id": "S-1"})
    letter = malformed(WireCodec().decode(value, "inventory[0]@7"), value)
    assert f"unknown writer schema fingerprint {schema_fingerprint(other).hex()}" in letter.detail


def test_a_body_of_another_schema_under_our_fingerprint_is_refused_not_misread():
    other = {
        "type": "record",
        "name": "Shipment",
        "fields": [{"name": "id", "type": "string"}, {"name": "weights", "type": {"type": "array", "items": "long"}}],
    }
    body = BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(other), {"id": "S-1", "weights": [5, 7, 9, 11]})
    value = SINGLE_OBJECT_MARKER + schema_fingerprint(SCHEMA) + body.getvalue()
    letter = malformed(WireCodec().decode(value, "inventory[0]@7"), value)
    assert "cannot read omniledger.v1.InventoryEvent" in letter.detail or "bytes left after" in letter.detail


def test_trailing_bytes_after_the_record_are_refused():
    value = WireCodec().encode(SAMPLE) + b"\x00\x00"
    letter = malformed(WireCodec().decode(value, "inventory[0]@7"), value)
    assert letter.detail.startswith("2 bytes left after the omniledger.v1.InventoryEvent record")


@settings(max_examples=500, deadline=None)
@given(body=st.binary(max_size=80))
def test_any_body_after_our_header_decodes_or_is_a_dead_letter_never_an_exception(body):
    codec = WireCodec()
    value = SINGLE_OBJECT_MARKER + codec.fingerprint + body
    result = codec.decode(value, "inventory[0]@7")
    if isinstance(result, DeadLetter):
        malformed(result, value)
    else:
        assert set(result) == {f["name"] for f in SCHEMA["fields"]}


@settings(max_examples=300, deadline=None)
@given(value=st.binary(max_size=60))
def test_any_bytes_at_all_decode_or_are_a_dead_letter(value):
    result = WireCodec().decode(value, "inventory[0]@7")
    assert isinstance(result, dict | DeadLetter)


# -- Confluent Schema Registry framing, against confluent-kafka's own serializers ---------


TOPIC = "inventory-events"


@pytest.fixture
def sr():
    """confluent-kafka's registry classes and an in-memory MockSchemaRegistryClient (`mock://`): no network."""
    # The registry client needs confluent-kafka's `schemaregistry` extras; without them these
    # tests cannot run, and the skip reason says what to install and pin.
    try:
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
        from confluent_kafka.schema_registry.error import SchemaRegistryError
        from confluent_kafka.serialization import MessageField, SerializationContext
    except ImportError as exc:
        pytest.skip(f"confluent-kafka[schemaregistry] extras not installed ({exc}); pin them in constraints.txt")
    return SimpleNamespace(
        registry=SchemaRegistryClient.new_client({"url": "mock://omni-ledger-tests"}),
        serializer=AvroSerializer,
        deserializer=AvroDeserializer,
        error=SchemaRegistryError,
        context=SerializationContext(TOPIC, MessageField.VALUE),
    )


def _as_millis(value):
    if isinstance(value, datetime):  # AvroDeserializer gives aware datetimes for timestamp-millis
        return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    return value


@pytest.mark.parametrize("event", [SAMPLE, replace(SAMPLE, type=T.SHUTTLE_ARRIVED, eta=None, price=9.5, qty=1)])
def test_bytes_from_confluents_avro_serializer_decode_with_the_wire_codec(sr, event):
    value = sr.serializer(sr.registry, SCHEMA_PATH.read_text())(event_to_record(event), sr.context)
    assert value[:1] == b"\x00"
    record = WireCodec(schema_registry=sr.registry).decode(value, "inventory[0]@7")
    assert isinstance(record, dict), record
    assert validate(record, origin="", raw=value) == event


def test_bytes_from_the_wire_codec_decode_with_confluents_avro_deserializer(sr):
    codec = WireCodec(schema_registry=sr.registry, topic=TOPIC)
    value = codec.encode(SAMPLE)
    schema_id = int.from_bytes(value[1:5], "big")
    assert value[:1] == b"\x00"
    assert sr.registry.get_schema(schema_id).schema_str == SCHEMA_PATH.read_text()
    assert f"{TOPIC}-value" in sr.registry.get_subjects()
    decoded = sr.deserializer(sr.registry)(value, sr.context)
    assert {k: _as_millis(v) for k, v in decoded.items()} == event_to_record(SAMPLE)
    assert validate(codec.decode(value, "t"), origin="", raw=value) == SAMPLE


def test_an_evolved_schema_registered_by_a_confluent_producer_decodes(sr):
    serializer = sr.serializer(sr.registry, json.dumps(evolved_schema()))
    value = serializer({**event_to_record(SAMPLE), "channel": "web"}, sr.context)
    record = WireCodec(schema_registry=sr.registry).decode(value, "t")
    assert isinstance(record, dict)
    assert "channel" not in record
    assert validate(record, origin="", raw=value) == SAMPLE


def test_a_registry_schema_of_another_record_type_yields_a_dead_letter(sr):
    other = {"type": "record", "name": "Shipment", "namespace": "acme", "fields": [{"name": "id", "type": "string"}]}
    value = sr.serializer(sr.registry, json.dumps(other))({"id": "S-1"}, sr.context)
    letter = malformed(WireCodec(schema_registry=sr.registry).decode(value, "inventory[0]@7"), value)
    assert "is the record 'acme.Shipment', not omniledger.v1.InventoryEvent" in letter.detail


def test_an_id_the_registry_does_not_know_yields_a_dead_letter(sr):
    value = b"\x00\x00\x00\x30\x39" + WireCodec().encode(SAMPLE)[10:]
    letter = malformed(WireCodec(schema_registry=sr.registry).decode(value, "inventory[0]@7"), value)
    assert letter.detail == "schema id 12345 is not in the schema registry"


def test_registry_lookups_are_cached_per_schema_id(sr):
    value = sr.serializer(sr.registry, SCHEMA_PATH.read_text())(event_to_record(SAMPLE), sr.context)
    calls = []

    class Counting:
        def register_schema(self, subject, schema):
            return sr.registry.register_schema(subject, schema)

        def get_schema(self, schema_id):
            calls.append(schema_id)
            return sr.registry.get_schema(schema_id)

    codec = WireCodec(schema_registry=Counting())
    for _ in range(3):
        assert isinstance(codec.decode(value, "t"), dict)
    assert calls == [int.from_bytes(value[1:5], "big")]


def test_an_unreachable_registry_is_raised_not_dead_lettered(sr):
    class Down:
        def register_schema(self, subject, schema):
            raise sr.error(503, 50300, "unavailable")

        def get_schema(self, schema_id):
            raise sr.error(503, 50300, "unavailable")

    with pytest.raises(SourceError, match="schema registry lookup of id 1 failed"):
        WireCodec(schema_registry=Down()).decode(b"\x00\x00\x00\x00\x01\x02", "t")


def test_encoding_with_a_registry_but_no_topic_is_a_config_error(sr):
    with pytest.raises(ConfigError, match="needs topic="):
        WireCodec(schema_registry=sr.registry).encode(SAMPLE)


def test_a_codec_with_a_registry_still_reads_single_object_and_json(sr):
    codec = WireCodec(schema_registry=sr.registry)
    assert validate(codec.decode(WireCodec().encode(SAMPLE), "t"), origin="", raw=b"") == SAMPLE
    assert isinstance(codec.decode(b'{"event_id":"x"}', "t"), dict)
