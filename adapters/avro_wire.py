"""Kafka message values for `omniledger.v1.InventoryEvent`: the wire formats, and the one place fastavro meets them.

A value is recognised by its first bytes:

- ``C3 01`` + 8-byte fingerprint + Avro binary: Avro *single-object encoding*, the default.
  It needs no registry: the fingerprint names the writer's schema, which must be ours or
  one registered with `WireCodec.register_writer_schema` (a newer version that adds
  optional fields, say); the body is resolved from that schema to ours.
- ``00`` + 4-byte big-endian schema id + Avro binary: Confluent Schema Registry framing,
  when the codec was given a registry (`WireCodec(schema_registry=..., topic=...)`).
- ``{`` (after blanks): one JSON object, for events written by hand.

Decoding never raises on bad bytes: it returns a `DeadLetter` (reason `malformed`) that
keeps the bytes and says what was wrong. Mistakes in configuration raise `ConfigError`.

How a producer in another language writes a valid event
-------------------------------------------------------
Write each Kafka message value as Avro single-object encoding of
``schemas/inventory_event.avsc``:

1. the two marker bytes ``0xC3 0x01``;
2. the 8-byte CRC-64-AVRO (Rabin) fingerprint of the schema's Parsing Canonical Form,
   little-endian. For the current schema these bytes are ``da 59 06 02 24 fb 6c aa``
   (Java's ``SchemaNormalization.parsingFingerprint64`` returns it as the long
   ``0xaa6cfb24020659da``); `WireCodec.fingerprint` gives them for the schema in use (the
   previous version, `schemas/history/inventory_event.1.avsc`, fingerprint
   ``d7 0e 89 cb f5 82 22 33``, is still read);
3. the record in Avro binary encoding (no container file, no sync marker). Timestamps are
   ``long`` epoch milliseconds (``timestamp-millis``); optional fields are unions with
   ``null`` first (branch 0 = absent).

Java's ``BinaryMessageEncoder`` (what a generated ``SpecificRecord``'s ``toByteBuffer()`` uses)
emits exactly this; so do ``Codec.SingleFromNative`` of ``linkedin/goavro`` in Go and
``GenericSingleObjectWriter`` / ``SpecificSingleObjectWriter`` of ``apache-avro`` in Rust.
A producer whose schema adds optional fields uses its own schema's fingerprint and is
decoded once that schema is registered here. Producers on Confluent's serializers use the
registry framing instead, under subject ``<topic>-value``.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException
from fastavro.types import Schema

from adapters.avro_batch import MIN_BATCH, plain_events
from adapters.codec import SCHEMA_PATH, decode_json
from ledger.contract import event_to_json_bytes, event_to_record, plain_event, validate
from ledger.dead_letter import DeadLetter, Reason
from ledger.errors import ConfigError, ContractError, SourceError
from ledger.events import EventType, InventoryEvent, Millis

__all__ = [
    "CONFLUENT_MAGIC",
    "FRAMINGS",
    "RECORD_NAME",
    "SINGLE_OBJECT_MARKER",
    "SchemaRegistry",
    "WireCodec",
    "WireSettings",
    "parsing_canonical_form",
    "schema_fingerprint",
    "wire_codec",
]

SINGLE_OBJECT_MARKER = b"\xc3\x01"
"""The two bytes that open an Avro single-object encoded value (Avro spec)."""
CONFLUENT_MAGIC = b"\x00"
"""The byte that opens a Confluent Schema Registry framed value; a 4-byte big-endian schema id follows."""
FRAMINGS = ("single-object", "confluent", "json")
"""What `WireCodec.encode` can write; `decode` recognises all three by their first bytes."""
RECORD_NAME = "omniledger.v1.InventoryEvent"

_HEADER = len(SINGLE_OBJECT_MARKER) + 8
_CONFLUENT_HEADER = len(CONFLUENT_MAGIC) + 4
# What fastavro raises on bytes that are not a record of the writer schema: a short read
# (EOFError), an enum/union index out of range or a string cut short (IndexError), text
# that is not UTF-8 (UnicodeDecodeError, a ValueError), a number out of range, or a field
# the writer's type cannot be resolved to ours.
_BODY_ERRORS = (EOFError, IndexError, ValueError, OverflowError, SchemaResolutionError)
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")
_BODY_TROUBLE = {
    EOFError: "the body ends before the record does (truncated?)",
    IndexError: "an enum or union index is out of range, or a string is cut short",
    UnicodeDecodeError: "a string is not UTF-8",
    OverflowError: "a number is out of range",
    SchemaResolutionError: "the writer's schema cannot be resolved to ours",
}


class _SchemaText(Protocol):
    """What a registry returns for an id: confluent_kafka's (frozen) `Schema` has these."""

    @property
    def schema_str(self) -> str | None: ...

    @property
    def schema_type(self) -> str | None: ...


class SchemaRegistry(Protocol):
    """The two calls of confluent_kafka's `SchemaRegistryClient` that the codec makes."""

    def register_schema(self, subject_name: str, schema: Any, /) -> int: ...

    def get_schema(self, schema_id: int, /) -> _SchemaText: ...


@dataclass(frozen=True, slots=True)
class _Writer:
    """One known writer schema, parsed once; `reader` is None when it is ours (no resolution needed)."""

    schema: Schema
    reader: Schema | None
    label: str
    refusal: str | None = None
    """Why values written with it are refused (a registry id of another record type), cached like a schema."""


def parsing_canonical_form(schema: Mapping[str, Any] | str) -> str:
    """The Avro Parsing Canonical Form of a schema (a JSON object or its text)."""
    loaded = json.loads(schema) if isinstance(schema, str) else dict(schema)
    return str(fastavro.schema.to_parsing_canonical_form(loaded))


def schema_fingerprint(schema: Mapping[str, Any] | str) -> bytes:
    """The CRC-64-AVRO fingerprint of a schema's canonical form: the 8 bytes of a single-object header.

    fastavro's hex string is the fingerprint's bytes in little-endian order, which is the
    order the single-object encoding writes (the Avro spec's vectors pin this down in the tests).
    """
    return bytes.fromhex(fastavro.schema.fingerprint(parsing_canonical_form(schema), "CRC-64-AVRO"))


def _without_logical_types(node: Any) -> Any:
    """A copy of a schema whose timestamps are plain longs.

    The bytes are the same; reading ints instead of datetimes is faster and exact (the
    contract wants epoch milliseconds, and a float round trip through datetime can lose one).
    """
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if not (k == "logicalType" and "type" in node)}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


@cache
def _contract() -> tuple[str, bytes, Schema]:
    """Our schema's text (what a registry gets), its fingerprint and its parsed timestamp-as-long form."""
    try:
        text = SCHEMA_PATH.read_text()
        loaded = json.loads(text)
        parsed = fastavro.parse_schema(_without_logical_types(loaded))
    except (OSError, ValueError, SchemaParseException) as exc:
        msg = f"cannot load the event schema {SCHEMA_PATH}: {exc}; reinstall omni-ledger from its source tree"
        raise ContractError(msg) from exc
    return text, schema_fingerprint(loaded), parsed


def _parse_writer(schema: Mapping[str, Any] | str, where: str) -> tuple[bytes, Schema]:
    """Fingerprint and parse a writer schema; `ValueError` with a sentence if it cannot be ours."""
    try:
        loaded = json.loads(schema) if isinstance(schema, str) else dict(schema)
    except ValueError as exc:
        msg = f"{where} is not JSON: {exc}"
        raise ValueError(msg) from exc
    if not isinstance(loaded, dict) or loaded.get("type") != "record":
        kind = loaded.get("type") if isinstance(loaded, dict) else type(loaded).__name__
        msg = f"{where} is not a record schema (type {kind!r}); expected a version of {RECORD_NAME}"
        raise ValueError(msg)
    name = str(loaded.get("name", ""))
    full_name = name if "." in name or not loaded.get("namespace") else f"{loaded['namespace']}.{name}"
    if full_name != RECORD_NAME:
        msg = f"{where} is the record {full_name!r}, not {RECORD_NAME}; it cannot be read as an inventory event"
        raise ValueError(msg)
    try:
        parsed = fastavro.parse_schema(_without_logical_types(loaded))
        fingerprint = schema_fingerprint(loaded)
    except (SchemaParseException, ValueError, TypeError, KeyError) as exc:
        msg = f"{where} is not a valid Avro schema: {exc}"
        raise ValueError(msg) from exc
    return fingerprint, parsed


class WireCodec:
    """Encode events for Kafka and decode message values into contract records.

    `decode` returns a plain dict with the contract's field names (timestamps as epoch
    milliseconds) for `ledger.contract.validate`, or a `malformed` `DeadLetter`.
    """

    def __init__(
        self,
        *,
        framing: str | None = None,
        schema_registry: SchemaRegistry | None = None,
        topic: str | None = None,
        writer_schemas: Iterable[Mapping[str, Any] | str] = (),
    ) -> None:
        """`framing` is what `encode` writes: single-object by default, confluent when a registry is given."""
        framing = framing or ("confluent" if schema_registry is not None else "single-object")
        if framing not in FRAMINGS:
            msg = f"unknown wire framing {framing!r}; expected one of {', '.join(FRAMINGS)}"
            raise ConfigError(msg)
        if framing == "confluent" and schema_registry is None:
            msg = "the 'confluent' framing needs a schema registry (WireCodec(schema_registry=..., topic=...))"
            raise ConfigError(msg)
        text, fingerprint, parsed = _contract()
        self._framing = framing
        self._registry = schema_registry
        self._topic = topic
        self._schema_text = text
        self._fingerprint = fingerprint
        self._schema = parsed
        self._header = SINGLE_OBJECT_MARKER + fingerprint
        (kinds,) = [field["type"]["symbols"] for field in json.loads(text)["fields"] if field["name"] == "type"]
        self._kinds = tuple(EventType(kind) for kind in kinds)
        self._by_fingerprint: dict[bytes, _Writer] = {fingerprint: _Writer(parsed, None, f"{fingerprint.hex()} (ours)")}
        self._by_id: dict[int, _Writer] = {}
        self._schema_id: int | None = None
        self._registry_errors: tuple[type[Exception], ...] = (LookupError,)
        self._schema_class: Any = None
        if schema_registry is not None:
            self._load_registry_types()
        # Earlier versions of our own contract stay readable: producers upgrade one by one.
        for earlier in sorted(SCHEMA_PATH.parent.glob("history/inventory_event.*.avsc")):
            self.register_writer_schema(earlier.read_text())
        for schema in writer_schemas:
            self.register_writer_schema(schema)

    def _load_registry_types(self) -> None:
        # Imported only with a registry: the registry client needs confluent-kafka's
        # `schemaregistry` extras (httpx, authlib, ...), which single-object users can do without.
        try:
            from confluent_kafka.schema_registry import Schema as RegistrySchema
            from confluent_kafka.schema_registry.error import SchemaRegistryError
        except ImportError as exc:
            msg = f"a schema registry needs confluent-kafka[schemaregistry] ({exc}); install that extra"
            raise ConfigError(msg) from exc
        self._schema_class = RegistrySchema
        self._registry_errors = (LookupError, SchemaRegistryError)

    @property
    def framing(self) -> str:
        """What `encode` writes: one of `FRAMINGS`."""
        return self._framing

    @property
    def fingerprint(self) -> bytes:
        """The 8 fingerprint bytes of our schema, as a single-object header carries them."""
        return self._fingerprint

    def known_writer_schemas(self) -> dict[str, str]:
        """Fingerprint (hex, header byte order) → "ours" or "registered": the schemas single-object values may use."""
        return {fp.hex(): "ours" if w.reader is None else "registered" for fp, w in self._by_fingerprint.items()}

    def register_writer_schema(self, schema: Mapping[str, Any] | str) -> bytes:
        """Accept single-object values written with another version of our record; return its fingerprint.

        Its values are resolved to our schema: fields we do not know are dropped, fields it
        lacks take our defaults. A schema that is not a version of our record is a `ConfigError`.
        """
        try:
            fingerprint, parsed = _parse_writer(schema, "the writer schema")
        except ValueError as exc:
            msg = f"cannot register a writer schema: {exc}"
            raise ConfigError(msg) from exc
        if fingerprint not in self._by_fingerprint:
            self._by_fingerprint[fingerprint] = _Writer(parsed, self._schema, f"{fingerprint.hex()} (registered)")
        return fingerprint

    # -- encoding ---------------------------------------------------------------------

    def encode(self, event: InventoryEvent) -> bytes:
        """One message value for `event` in the codec's framing; `ContractError` if Avro cannot hold it."""
        if self._framing == "json":
            return event_to_json_bytes(event)
        header = self._header if self._framing == "single-object" else self._confluent_header()
        out = BytesIO()
        out.write(header)
        try:
            fastavro.schemaless_writer(out, self._schema, event_to_record(event))
        except (ValueError, TypeError, OverflowError) as exc:
            msg = f"cannot encode event {event.event_id!r} as {RECORD_NAME}: {exc}"
            raise ContractError(msg) from exc
        return out.getvalue()

    def _confluent_header(self) -> bytes:
        if self._schema_id is None:
            if not self._topic:
                msg = "a WireCodec with a schema registry needs topic= to encode: it registers under '<topic>-value'"
                raise ConfigError(msg)
            assert self._registry is not None
            subject = f"{self._topic}-value"  # Confluent's default TopicNameStrategy
            schema_id = self._registry.register_schema(subject, self._schema_class(self._schema_text, "AVRO"))
            self._by_id[schema_id] = self._by_fingerprint[self._fingerprint]
            self._schema_id = schema_id
        return CONFLUENT_MAGIC + self._schema_id.to_bytes(4, "big")

    # -- decoding ---------------------------------------------------------------------

    def read_event(
        self, value: bytes, origin: str, now: Millis | None, max_skew_ms: int
    ) -> InventoryEvent | DeadLetter:
        """Decode and validate a message value in one pass: the event it holds, or a dead letter saying why not.

        A value written with our own schema and holding a plain valid event (no
        fulfilment plan: sales, receipts, counts, offers, requests, moves) is read field
        by field straight into the event (`_plain_body`, checked by
        `ledger.contract.plain_event`): no dict, no second pass over it. Anything else,
        a refusal included, takes `decode` then `ledger.contract.validate`, so what this
        returns is what those two would return (`tests/component/adapters/test_avro_one_pass.py`).
        """
        if value[:_HEADER] == self._header:
            event = _plain_body(value, self._kinds, origin, now, max_skew_ms)
            if event is not None:
                return event
        record = self.decode(value, origin)
        if isinstance(record, DeadLetter):
            return record
        return validate(record, origin=origin, raw=value, now=now, max_skew_ms=max_skew_ms)

    def read_events(
        self, values: Sequence[bytes], origins: Sequence[str], now: Millis | None, max_skew_ms: int
    ) -> list[InventoryEvent | DeadLetter]:
        """`read_event` of each value (`origins[i]` the origin of `values[i]`), a source read at a time.

        The plain events of our own schema are read together over columns
        (`adapters.avro_batch`); the rest, every refusal included, one by one.
        """
        if len(values) < MIN_BATCH:
            return [self.read_event(v, o, now, max_skew_ms) for v, o in zip(values, origins, strict=True)]
        read = self.read_event
        return [
            read(values[i], origins[i], now, max_skew_ms) if event is None else event
            for i, event in enumerate(plain_events(values, origins, self._header, self._kinds, now, max_skew_ms))
        ]

    def decode(self, value: bytes | None, origin: str) -> dict[str, Any] | DeadLetter:
        """The record a message value holds, or a `malformed` dead letter that keeps the bytes."""
        if not value:
            return self._refuse(b"", origin, "empty message value (a tombstone?); expected an InventoryEvent")
        if value.startswith(SINGLE_OBJECT_MARKER):
            writer = self._by_fingerprint.get(value[2:_HEADER])
            if writer is None:
                return self._unknown_fingerprint(value, origin)
            return self._read(value, _HEADER, writer, origin)
        if value.startswith(CONFLUENT_MAGIC):
            return self._decode_confluent(value, origin)
        if value.lstrip()[:1] == b"{":
            return decode_json(value, origin)
        detail = (
            f"unrecognised message framing: first bytes {value[:4].hex(' ')}; expected c3 01 (Avro single-object), "
            f"00 + schema id (Confluent Schema Registry) or a JSON object"
        )
        return self._refuse(value, origin, detail)

    def _read(self, value: bytes, offset: int, writer: _Writer, origin: str) -> dict[str, Any] | DeadLetter:
        buf = BytesIO(value)
        buf.seek(offset)
        try:
            record = fastavro.schemaless_reader(buf, writer.schema, writer.reader)
        except _BODY_ERRORS as exc:
            trouble = _BODY_TROUBLE.get(type(exc), type(exc).__name__)
            # fastavro names the buffer it read ("cannot read double from <_io.BytesIO object at
            # 0x7f...>"): an address would make the same bad input give a different dead letter
            # each time it is read (a replay after a crash, the one-pass and two-pass readers).
            said = _OBJECT_REPR.sub("the body", str(exc))
            if len(said) > 160:  # fastavro's resolution errors print whole schemas
                said = said[:160] + "..."
            detail = (
                f"cannot read {RECORD_NAME} from the {len(value) - offset}-byte Avro body written with "
                f"schema {writer.label}: {trouble} ({type(exc).__name__}{': ' + said if said else ''})"
            )
            return self._refuse(value, origin, detail)
        end = buf.tell()
        if end != len(value):
            # Trailing bytes mean the body was not written with the schema the header names.
            detail = (
                f"{len(value) - end} bytes left after the {RECORD_NAME} record written with schema {writer.label}; "
                "the header names a schema the body was not written with"
            )
            return self._refuse(value, origin, detail)
        if not isinstance(record, dict):  # unreachable: every known writer schema is a record
            return self._refuse(value, origin, f"decoded a {type(record).__name__}, not a record")
        return record

    def _unknown_fingerprint(self, value: bytes, origin: str) -> DeadLetter:
        if len(value) < _HEADER:
            detail = (
                f"truncated single-object header: {len(value)} bytes, need {_HEADER} "
                "(2 marker bytes + 8 fingerprint bytes) before the Avro body"
            )
            return self._refuse(value, origin, detail)
        fingerprint = value[2:_HEADER]
        known = ", ".join(writer.label for writer in self._by_fingerprint.values())
        detail = (
            f"unknown writer schema fingerprint {fingerprint.hex()} (CRC-64-AVRO, header byte order; as a number "
            f"{int.from_bytes(fingerprint, 'little'):#018x}); known: {known}. Produce with "
            "schemas/inventory_event.avsc or register the producer's schema with WireCodec.register_writer_schema"
        )
        return self._refuse(value, origin, detail)

    def _decode_confluent(self, value: bytes, origin: str) -> dict[str, Any] | DeadLetter:
        if len(value) < _CONFLUENT_HEADER:
            detail = f"truncated Confluent header: {len(value)} bytes, need {_CONFLUENT_HEADER} (magic 00 + schema id)"
            return self._refuse(value, origin, detail)
        schema_id = int.from_bytes(value[1:_CONFLUENT_HEADER], "big")
        writer = self._by_id.get(schema_id)
        if writer is None:
            if self._registry is None:
                detail = (
                    f"Confluent Schema Registry framing (magic 00, schema id {schema_id}) but no schema registry "
                    "is configured; configure one, or produce Avro single-object encoding"
                )
                return self._refuse(value, origin, detail)
            writer = self._registry_writer(schema_id)
        if writer.refusal is not None:
            return self._refuse(value, origin, writer.refusal)
        return self._read(value, _CONFLUENT_HEADER, writer, origin)

    def _registry_writer(self, schema_id: int) -> _Writer:
        """The writer schema behind a registry id, fetched once: ids never change meaning."""
        assert self._registry is not None
        try:
            registered = self._registry.get_schema(schema_id)
        except self._registry_errors as exc:
            if getattr(exc, "http_status_code", 404) != 404:
                # An unreachable registry is not a bad message: dead-lettering would drop good data.
                msg = f"schema registry lookup of id {schema_id} failed: {exc}"
                raise SourceError(msg) from exc
            # Not cached: the id may be registered a moment later on another registry node.
            return self._refused(schema_id, f"schema id {schema_id} is not in the schema registry")
        kind = getattr(registered, "schema_type", None) or "AVRO"
        if kind != "AVRO" or registered.schema_str is None:
            writer = self._refused(schema_id, f"schema id {schema_id} is a {kind} schema, not Avro")
        else:
            try:
                fingerprint, parsed = _parse_writer(registered.schema_str, f"schema id {schema_id}")
            except ValueError as exc:
                writer = self._refused(schema_id, str(exc))
            else:
                same = fingerprint == self._fingerprint
                writer = _Writer(parsed, None if same else self._schema, f"id {schema_id} ({fingerprint.hex()})")
        self._by_id[schema_id] = writer
        return writer

    def _refused(self, schema_id: int, detail: str) -> _Writer:
        return _Writer(self._schema, None, f"id {schema_id}", detail)

    @staticmethod
    def _refuse(value: bytes, origin: str, detail: str) -> DeadLetter:
        return DeadLetter(origin=origin, reason=Reason.MALFORMED, detail=detail, raw=value)


_DOUBLE = struct.Struct("<d")


def _varint(value: bytes, at: int) -> tuple[int, int]:
    """An Avro int or long (zig-zag varint) at `at`: (number, next position); IndexError past the end."""
    byte = value[at]
    if byte < 0x80:  # most numbers: one byte
        return (byte >> 1) ^ -(byte & 1), at + 1
    at += 1
    n = byte & 0x7F
    shift = 7
    while byte & 0x80:
        if shift > 63:
            raise IndexError  # longer than a long: not ours to read
        byte = value[at]
        at += 1
        n |= (byte & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), at


def _text(value: bytes, at: int) -> tuple[str, int]:
    """An Avro string at `at`, ASCII only (anything else goes the general way): (text, next position)."""
    size = value[at]
    if size < 0x80 and not size & 1:  # a name under 64 bytes: its length in one byte
        at += 1
        size >>= 1
    else:
        size, at = _varint(value, at)
    end = at + size
    if size < 0 or end > len(value):
        raise IndexError
    return value[at:end].decode("ascii"), end


def _plain_body(
    value: bytes, kinds: tuple[EventType, ...], origin: str, now: Millis | None, max_skew_ms: int
) -> InventoryEvent | None:
    """The plain valid event a value of our own schema holds, read field by field; None for anything else.

    The fields in `schemas/inventory_event.avsc` order (`kinds`: the event types by their
    enum index, in the schema's order of symbols); optional ones are unions with
    null first (branch 0). A fulfilment plan, a string outside ASCII, bytes that do not
    parse or are left over: None, and `WireCodec.decode` reads the value as usual.

    `_text` and `_varint` are inlined for their one-byte cases (names under 64 bytes, the
    event type, small quantities), and a value whose optional fields are all null (a
    sale, a receipt, a count: most events) ends in eight zero bytes, checked at once: the
    calls and the loop over the optional fields were half of the reading's cost.
    """
    try:
        size = value[_HEADER]
        if size < 0x80 and not size & 1:
            at = _HEADER + 1 + (size >> 1)
            event_id = value[_HEADER + 1 : at].decode("ascii")
        else:
            event_id, at = _text(value, _HEADER)
        type_index = value[at]
        if type_index >= 0x80 or type_index & 1:
            return None  # a negative index, or one past 63: not a symbol of ours
        type_index >>= 1
        if type_index >= len(kinds):
            return None
        kind = kinds[type_index]
        occurred_at, at = _varint(value, at + 1)
        size = value[at]
        if size < 0x80 and not size & 1:
            start, at = at + 1, at + 1 + (size >> 1)
            site_id = value[start:at].decode("ascii")
        else:
            site_id, at = _text(value, at)
        size = value[at]
        if size < 0x80 and not size & 1:
            start, at = at + 1, at + 1 + (size >> 1)
            sku = value[start:at].decode("ascii")
        else:
            sku, at = _text(value, at)
        qty = value[at]
        if qty < 0x80:
            qty = (qty >> 1) ^ -(qty & 1)
            at += 1
        else:
            qty, at = _varint(value, at)
        if at + 8 == len(value) and value.endswith(_ALL_NULL):
            # Every optional field null, then no fulfilment plan.
            return plain_event(
                event_id, kind, occurred_at, site_id, sku, qty,
                None, None, None, None, None, None, None,
                origin, now, max_skew_ms,
            )  # fmt: skip
        optional: list[object] = []
        for reads in _OPTIONAL:
            branch = value[at]
            at += 1
            if branch == 0:
                optional.append(None)
            elif branch != 2:  # zig-zag 1: the second branch
                return None
            elif reads is _DOUBLE:
                optional.append(_DOUBLE.unpack_from(value, at)[0])
                at += 8
            else:
                got, at = reads(value, at)  # type: ignore[operator]
                optional.append(got)
        if value[at] != 0 or at + 1 != len(value):
            return None  # a fulfilment plan (branch 1), or bytes left over
    except (IndexError, ValueError, struct.error):
        return None
    ref, to_site_id, eta, expires_at, price, lead_time_days, source = optional
    return plain_event(
        event_id, kind, occurred_at, site_id, sku, qty,
        ref, to_site_id, eta, expires_at, price, lead_time_days, source,  # type: ignore[arg-type]
        origin, now, max_skew_ms,
    )  # fmt: skip


_ALL_NULL = bytes(8)
"""The end of a value whose seven optional fields are null (branch 0 each) and that has no fulfilment plan."""


_OPTIONAL = (_text, _text, _varint, _varint, _DOUBLE, _varint, _text)
"""How to read each optional field's value: ref, to_site_id, eta, expires_at, price, lead_time_days, source."""


class WireSettings(Protocol):
    """What `wire_codec` reads of the Kafka settings (`omni_ledger.config.KafkaSettings` has it)."""

    @property
    def framing(self) -> str: ...

    @property
    def schema_registry_url(self) -> str: ...

    @property
    def writer_schemas(self) -> tuple[Path, ...]: ...

    def topic(self, name: str) -> str: ...


def wire_codec(kafka: WireSettings) -> WireCodec:
    """The Avro wire codec the settings ask for (single-object, or Confluent with a registry)."""
    if kafka.framing == "confluent":
        from confluent_kafka.schema_registry import SchemaRegistryClient

        registry = SchemaRegistryClient({"url": kafka.schema_registry_url})
        return WireCodec(schema_registry=registry, topic=kafka.topic("inventory.events"))
    schemas = []
    for path in kafka.writer_schemas:
        try:
            schemas.append(path.read_text())
        except OSError as exc:
            msg = f"kafka.writer_schemas: cannot read {path}: {exc.strerror}"
            raise ConfigError(msg) from exc
    return WireCodec(writer_schemas=schemas)
