"""Bytes in, records out: JSON lines and Avro, the two spellings of the event contract.

Decoding never raises on bad bytes: it returns a `DeadLetter` (reason `malformed`) with
the raw input, so the flow can route it and go on. Files are this module's; Kafka
message values are `adapters.avro_wire`'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import fastavro
from fastavro.types import Schema

from adapters.clock import Clock
from ledger.contract import event_to_record, validate
from ledger.dead_letter import DeadLetter, Reason
from ledger.errors import ContractError, SourceError
from ledger.events import InventoryEvent, Millis

__all__ = [
    "SCHEMA_PATH",
    "Decoder",
    "RawInput",
    "admit",
    "admit_read",
    "decode_json",
    "event_schema",
    "iter_avro_file",
    "write_avro_file",
]

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "inventory_event.avsc"


@cache
def event_schema() -> Schema:
    """The parsed `omniledger.v1.InventoryEvent` schema."""
    try:
        return fastavro.parse_schema(json.loads(SCHEMA_PATH.read_text()))
    except (OSError, ValueError, fastavro.schema.SchemaParseException) as exc:
        msg = f"cannot load the event schema {SCHEMA_PATH}: {exc}; reinstall omni-ledger from its source tree"
        raise ContractError(msg) from exc


def decode_json(raw: bytes, origin: str) -> dict[str, Any] | DeadLetter:
    """One JSON object from a line of bytes, or a `malformed` dead letter."""
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, huge ints, deep nesting
        detail = f"not a JSON object: {exc}; each line must be one JSON object with the InventoryEvent fields"
        return DeadLetter(origin=origin, reason=Reason.MALFORMED, detail=detail, raw=raw)
    if not isinstance(record, dict):
        detail = f"expected a JSON object, got {type(record).__name__}"
        return DeadLetter(origin=origin, reason=Reason.MALFORMED, detail=detail, raw=raw)
    return record


def iter_avro_file(stream: BinaryIO, name: str, skip: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """(record index, record) from an Avro object container file, after the first `skip` records.

    The writer's schema may differ from ours (an added optional field, say): records are
    read with the writer's schema and checked by `ledger.contract` field by field.
    """
    try:
        reader = fastavro.reader(stream)
        for index, record in enumerate(reader):
            if index >= skip and isinstance(record, dict):
                yield index, record
            elif index >= skip:
                msg = f"{name}#{index}: the file's schema is not a record schema; expected InventoryEvent records"
                raise SourceError(msg)
    except (ValueError, EOFError, fastavro.read.SchemaResolutionError) as exc:
        msg = f"{name}: not a readable Avro object container file ({exc}); check the file or re-export it"
        raise SourceError(msg) from exc


def write_avro_file(path: Path, events: list[InventoryEvent]) -> None:
    """Write events as an Avro object container file with the contract schema (for tools and tests)."""
    records = [event_to_record(e) for e in events]
    with path.open("wb") as out:
        fastavro.writer(out, event_schema(), records, codec="deflate")


@dataclass(frozen=True, slots=True)
class RawInput:
    """One input as a source read it: bytes (JSON), a decoded Avro record, or a simulator event."""

    origin: str
    payload: bytes | dict[str, Any] | InventoryEvent


Decoder = Callable[[bytes, str], "dict[str, Any] | DeadLetter"]
"""Turns a message's bytes into a record, or a dead letter: `decode_json`, or a wire codec."""


def admit(
    item: RawInput, clock: Clock, max_skew_ms: int, decode: Decoder | None = None
) -> tuple[Millis, InventoryEvent] | DeadLetter:
    """Decode and validate one input; stamp the accepted event with the ledger clock's reading."""
    payload = item.payload
    if isinstance(payload, InventoryEvent):
        event: InventoryEvent | DeadLetter = payload
    else:
        if isinstance(payload, bytes):
            raw = payload
            record: dict[str, Any] | DeadLetter = (decode or decode_json)(payload, item.origin)
        else:
            record = payload
            raw = _avro_record_bytes(payload)
        if isinstance(record, DeadLetter):
            return record
        # Against the wall clock in a replay too: one event typed in 2099 would otherwise push
        # the replay clock (and every position's window) decades ahead.
        now = clock.now() if clock.live else time.time_ns() // 1_000_000
        event = validate(record, origin=item.origin, raw=raw, now=now, max_skew_ms=max_skew_ms)
    if isinstance(event, DeadLetter):
        return event
    return clock.observe(event.occurred_at), event


def admit_read(
    read: tuple[RawInput, ...], clock: Clock, max_skew_ms: int, decode: Decoder | None = None
) -> list[tuple[Millis, InventoryEvent] | DeadLetter]:
    """`admit` for every input of one source read, reading the clock once for the read.

    Stamps are what `admit` one by one would give on one worker: the live clock's
    reading, or the newest `occurred_at` so far (read's own events included).
    """
    decode = decode or decode_json
    wall = clock.now() if clock.live else time.time_ns() // 1_000_000
    stamp = clock.now()
    newest = stamp
    out: list[tuple[Millis, InventoryEvent] | DeadLetter] = []
    for item in read:
        payload = item.payload
        if isinstance(payload, InventoryEvent):
            event = payload
        else:
            if isinstance(payload, bytes):
                raw = payload
                record: dict[str, Any] | DeadLetter = decode(payload, item.origin)
            else:
                record = payload
                raw = _avro_record_bytes(payload)
            if isinstance(record, DeadLetter):
                out.append(record)
                continue
            checked = validate(record, origin=item.origin, raw=raw, now=wall, max_skew_ms=max_skew_ms)
            if isinstance(checked, DeadLetter):
                out.append(checked)
                continue
            event = checked
        if clock.live:
            out.append((stamp, event))
        else:
            if event.occurred_at > newest:
                newest = event.occurred_at
            out.append((newest, event))
    if not clock.live and newest > stamp:
        clock.observe(newest)
    return out


def _avro_record_bytes(record: dict[str, Any]) -> bytes:
    """A dead letter keeps what came; an Avro record is kept as its JSON rendering."""
    return json.dumps(record, default=str, separators=(",", ":")).encode()
