"""Admission: a source's read becomes events stamped with the ledger clock, or dead letters.

Each input is decoded (bytes to a record, by the source's `Decoder`), validated against
the contract (`ledger.contract.validate`), and stamped with the ledger clock's reading,
which is what a hold's expiry and the lateness window count from. A refused input is a
`DeadLetter` that keeps its raw bytes; nothing raises on bad input.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from adapters.clock import Clock
from adapters.codec import Decoder, EventReader, RawInput, decode_json
from ledger.contract import validate
from ledger.dead_letter import DeadLetter
from ledger.events import InventoryEvent, Millis

__all__ = ["admit", "admit_read"]


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
    # A wire codec decodes and validates in one pass (the same events and dead letters).
    reader = getattr(decode, "__self__", None)
    read_event = reader.read_event if isinstance(reader, EventReader) else None
    wall = clock.now() if clock.live else time.time_ns() // 1_000_000
    stamp = clock.now()
    newest = stamp
    read_together: Iterator[InventoryEvent | DeadLetter] | None = None
    if isinstance(reader, EventReader) and all(type(item.payload) is bytes for item in read):
        # A Kafka read: every value at once (the plain ones over columns), then stamped in order.
        read_together = iter(
            reader.read_events([item.payload for item in read], [item.origin for item in read], wall, max_skew_ms)  # type: ignore[misc]
        )
    out: list[tuple[Millis, InventoryEvent] | DeadLetter] = []
    live = clock.live
    for item in read:
        payload = item.payload
        if isinstance(payload, InventoryEvent):
            event = payload
        else:
            if read_together is not None:
                checked = next(read_together)
            elif read_event is not None and isinstance(payload, bytes):
                checked = read_event(payload, item.origin, wall, max_skew_ms)
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
        if live:
            out.append((stamp, event))
        else:
            if event.occurred_at > newest:
                newest = event.occurred_at
            out.append((newest, event))
    if not live and newest > stamp:
        clock.observe(newest)
    return out


def _avro_record_bytes(record: dict[str, Any]) -> bytes:
    """A dead letter keeps what came; an Avro record is kept as its JSON rendering."""
    return json.dumps(record, default=str, separators=(",", ":")).encode()
