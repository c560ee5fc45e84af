"""Bytes in, records out: JSON lines and Avro, the two spellings of the event contract.

Decoding never raises on bad bytes: it returns a `DeadLetter` (reason `malformed`) with
the raw input, so the flow can route it and go on. Files are this module's; Kafka
message values are `adapters.avro_wire`'s. What the flow does with a record (validate
it, stamp it with the ledger clock) is `flows.admission`'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

import fastavro
from fastavro.types import Schema

from ledger._frozen import fast_init
from ledger.contract import event_to_record
from ledger.dead_letter import DeadLetter, Reason
from ledger.errors import ContractError, SourceError
from ledger.events import InventoryEvent, Millis

__all__ = [
    "SCHEMA_PATH",
    "Decoder",
    "EventReader",
    "RawInput",
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


@fast_init  # one per message
@dataclass(frozen=True, slots=True)
class RawInput:
    """One input as a source read it: bytes (JSON), a decoded Avro record, or a simulator event."""

    origin: str
    payload: bytes | dict[str, Any] | InventoryEvent


Decoder = Callable[[bytes, str], "dict[str, Any] | DeadLetter"]
"""Turns a message's bytes into a record, or a dead letter: `decode_json`, or a wire codec."""


@runtime_checkable
class EventReader(Protocol):
    """A decoder that also validates, in one pass: `adapters.avro_wire.WireCodec`.

    Admission asks the object a `Decoder` is bound to (`codec.decode.__self__`) for this
    when it has it, and gets what decoding then `ledger.contract.validate` would give.
    """

    def read_event(
        self, value: bytes, origin: str, now: Millis | None, max_skew_ms: int
    ) -> InventoryEvent | DeadLetter:
        """The event `value` holds, validated against the contract, or the dead letter saying why not."""
        ...

    def read_events(
        self, values: Sequence[bytes], origins: Sequence[str], now: Millis | None, max_skew_ms: int
    ) -> list[InventoryEvent | DeadLetter]:
        """`read_event` of each value, `origins[i]` the origin of `values[i]`: a whole source read at once."""
        ...
