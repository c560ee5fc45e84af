"""The ledger's outputs as Kafka messages: Avro single-object values, keys by entity.

- `atp.changes`: key `site_id|sku`, value `omniledger.v1.PositionChange`
  (schemas/position_change.avsc). Compacted; keep the highest `version` per key.
- `reservation.decisions`: key `reservation_id`, value `omniledger.v1.ReservationDecision`.
- `store.tasks`: key `task_id`, value `omniledger.v1.StoreTask` (schemas/store_task.avsc).
- `transport.loads`: key `parcel_id`, value `omniledger.v1.ShuttleLoad` (schemas/shuttle_load.avsc).
- `dropship.orders`: key `order_ref`, value `omniledger.v1.DropshipOrder`
  (schemas/dropship_order.avsc). These three are compacted; each record is the whole
  state of its work and statuses only move forward: keep the highest `rank` per key.
- `inventory.events.dlq`: key the origin (`topic[partition]@offset`), value the original
  bytes untouched, and headers `omni.reason`, `omni.detail`, `omni.origin`,
  `omni.event_id`, `omni.source.topic`, `omni.source.partition`, `omni.source.offset`.

Values use Avro single-object encoding (marker C3 01, the writer schema's CRC-64-AVRO
fingerprint, then the binary body), so a consumer needs no registry: it knows the
schema from the fingerprint.
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.types import Schema

from adapters.avro_wire import schema_fingerprint
from adapters.kafka_io import OutMessage
from ledger.dead_letter import DeadLetter
from ledger.errors import ContractError
from ledger.execution import DropshipOrder, ShuttleLoad, StoreTask, work_fields
from ledger.outputs import DecisionStatus, InboundLine, OfferTerms, PositionChange, ReservationDecision

__all__ = [
    "SingleObjectWriter",
    "change_record",
    "render_change",
    "render_dead_letter",
    "render_decision",
    "render_load",
    "render_order",
    "render_task",
]

_SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
_MARKER = b"\xc3\x01"
_MAX_DLQ_VALUE = 512 * 1024
"""Well under Kafka's default 1 MiB message size, headers included."""
_ORIGIN = re.compile(r"^(?P<topic>.+)\[(?P<partition>\d+)\]@(?P<offset>\d+)$")


class SingleObjectWriter:
    """Avro single-object encoding of records of one schema file."""

    def __init__(self, schema_file: str) -> None:
        path = _SCHEMAS / schema_file
        try:
            raw = json.loads(path.read_text())
            self.schema: Schema = fastavro.parse_schema(raw)
        except (OSError, ValueError, fastavro.schema.SchemaParseException) as exc:
            msg = f"cannot load the schema {path}: {exc}; reinstall omni-ledger from its source tree"
            raise ContractError(msg) from exc
        self.name = str(raw["name"])
        self.header = _MARKER + schema_fingerprint(raw)
        self.fingerprint = self.header[2:]

    def encode(self, record: dict[str, Any]) -> bytes:
        """Header, then the Avro binary body."""
        out = io.BytesIO()
        out.write(self.header)
        fastavro.schemaless_writer(out, self.schema, record)
        return out.getvalue()

    def decode(self, value: bytes) -> dict[str, Any]:
        """The record of a value this writer encoded (for tests and tools)."""
        if value[:10] != self.header:
            msg = f"not a single-object {self.name} value (header {value[:10].hex()})"
            raise ContractError(msg)
        record = fastavro.schemaless_reader(io.BytesIO(value[10:]), self.schema, None)
        assert isinstance(record, dict)
        return record


@cache
def _writer(schema_file: str) -> SingleObjectWriter:
    return SingleObjectWriter(schema_file)


def change_record(change: PositionChange) -> dict[str, Any]:
    """The `omniledger.v1.PositionChange` record of a change (what `render_change` encodes)."""
    offer = change.offer
    return {
        "site_id": change.site_id,
        "sku": change.sku,
        "on_hand": change.on_hand,
        "reserved": change.reserved,
        "staged": change.staged,
        "inbound_qty": change.inbound_qty,
        "safety_stock": change.safety_stock,
        "atp": change.atp,
        "negative": change.negative,
        "version": change.version,
        "updated_at": change.updated_at,
        "max_occurred_at": change.max_occurred_at,
        "inbound": [{"ref": line.ref, "qty": line.qty, "eta": line.eta} for line in change.inbound],
        "offer": None
        if offer is None
        else {
            "qty": offer.qty,
            "price": offer.price,
            "lead_time_days": offer.lead_time_days,
            "updated_at": offer.updated_at,
        },
    }


def _long(value: int, out: bytearray) -> None:
    # Avro long: zig-zag, then 7 bits a byte, low first.
    n = (value << 1) ^ (value >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _text(value: str, out: bytearray) -> None:
    data = value.encode()
    _long(len(data), out)
    out += data


_MEMO_SIZE = 1 << 16
_LONGS: dict[int, bytes] = {}
_TEXTS: dict[str, bytes] = {}


def _long_bytes(value: int) -> bytes:
    """An Avro long's bytes, remembered: a batch's changes share their times and most of their small numbers."""
    out = bytearray()
    _long(value, out)
    got = bytes(out)
    if len(_LONGS) >= _MEMO_SIZE:
        _LONGS.clear()  # bounded: a long run sees ever new times
    _LONGS[value] = got
    return got


def _text_bytes(value: str) -> bytes:
    """An Avro string's bytes (length, UTF-8), remembered: sites and skus recur."""
    out = bytearray()
    _text(value, out)
    got = bytes(out)
    if len(_TEXTS) >= _MEMO_SIZE:
        _TEXTS.clear()
    _TEXTS[value] = got
    return got


class _ChangeRender:
    """`render_change`: one change's message when called, a batch's (key, value) pairs by `many`."""

    def __call__(self, change: PositionChange) -> OutMessage:
        """`atp.changes` message for one position change (`many` of one change)."""
        key, value = self.many((change,))[0]
        return OutMessage(key, value)

    @staticmethod
    def many(changes: Iterable[PositionChange]) -> list[tuple[bytes, bytes]]:
        """The `atp.changes` (key, value) of each change, in order.

        Encoded by hand, field by field in the schema's order: a change leaves for almost
        every event, and fastavro's general writer took 2.5 times as long per record
        (measured). A whole batch in one call, with every lookup a local: the sink's
        `write_batch` hands over its changes at once (`KafkaOutSink`), so no `OutMessage`
        is made per change. What recurs is remembered: a position's key and its
        site and sku as Avro (`_POSITIONS`), the bytes of each number (`_LONGS`: a batch's
        changes share their times, most quantities are small), and each inbound line by
        identity (`_PIECES`: a position's lines are the same objects from one change to the
        next, 88% of the lines in `bench.sink_render`'s changes; its offers never recur, so
        they are encoded each time). `tests/component/adapters/test_kafka_records.py`
        checks the bytes against fastavro's.
        """
        header = _change_header()
        longs, positions = _LONGS.get, _POSITIONS.get
        out: list[tuple[bytes, bytes]] = []
        append, join = out.append, b"".join
        for change in changes:
            site, sku = change.site_id, change.sku
            position = positions((site, sku)) or _position_bytes(site, sku)
            on_hand, reserved, staged = change.on_hand, change.reserved, change.staged
            inbound_qty, safety_stock, atp = change.inbound_qty, change.safety_stock, change.atp
            version, updated_at, max_at = change.version, change.updated_at, change.max_occurred_at
            inbound, offer = change.inbound, change.offer
            append(
                (
                    position[0],
                    join(
                        (
                            header,
                            position[1],
                            longs(on_hand) or _long_bytes(on_hand),
                            longs(reserved) or _long_bytes(reserved),
                            longs(staged) or _long_bytes(staged),
                            longs(inbound_qty) or _long_bytes(inbound_qty),
                            longs(safety_stock) or _long_bytes(safety_stock),
                            longs(atp) or _long_bytes(atp),
                            b"\x01" if change.negative else b"\x00",
                            longs(version) or _long_bytes(version),
                            longs(updated_at) or _long_bytes(updated_at),
                            longs(max_at) or _long_bytes(max_at),
                            # An empty inbound array, then the null branch of offer; else both.
                            _tail(inbound, offer) if inbound or offer is not None else b"\x00\x00",
                        )
                    ),
                )
            )
        return out


render_change = _ChangeRender()
"""`atp.changes` message for one position change; `render_change.many(changes)` for a batch."""


@cache
def _change_header() -> bytes:
    return _writer("position_change.avsc").header


_POSITIONS: dict[tuple[str, str], tuple[bytes, bytes]] = {}


def _position_bytes(site: str, sku: str) -> tuple[bytes, bytes]:
    """A position's key `site|sku` (UTF-8), and its site then sku as Avro strings, remembered."""
    got = (f"{site}|{sku}".encode(), (_TEXTS.get(site) or _text_bytes(site)) + (_TEXTS.get(sku) or _text_bytes(sku)))
    if len(_POSITIONS) >= _MEMO_SIZE:
        _POSITIONS.clear()
    _POSITIONS[site, sku] = got
    return got


_PIECES: dict[int, tuple[object, bytes]] = {}
"""An inbound line's Avro bytes by `id`, the line kept beside them so its id stays its own."""


def _tail(inbound: tuple[InboundLine, ...], offer: OfferTerms | None) -> bytes:
    """The inbound lines and the offer of a change that has either."""
    pieces = _PIECES.get
    parts = [_long_bytes_of(len(inbound))] if inbound else []
    for line in inbound:
        got = pieces(id(line))
        parts.append(got[1] if got is not None and got[0] is line else _piece(line, _line_bytes(line)))
    parts.append(b"\x00")  # end of the array
    if offer is None:
        parts.append(b"\x00")  # union branch 0: null
    else:
        # Not remembered: an offer leaves once, in the change its arrival made.
        parts.append(_offer_bytes(offer))
    return b"".join(parts)


def _piece(obj: object, data: bytes) -> bytes:
    if len(_PIECES) >= _MEMO_SIZE:
        _PIECES.clear()
    _PIECES[id(obj)] = (obj, data)
    return data


def _long_bytes_of(value: int) -> bytes:
    return _LONGS.get(value) or _long_bytes(value)


def _line_bytes(line: InboundLine) -> bytes:
    out = bytearray()
    _text(line.ref, out)
    _long(line.qty, out)
    _long(line.eta, out)
    return bytes(out)


def _offer_bytes(offer: OfferTerms) -> bytes:
    out = bytearray(b"\x02")  # union branch 1 (zig-zag): OfferTerms
    _long(offer.qty, out)
    if offer.price is None:
        out.append(0)
    else:
        out.append(2)
        out += _DOUBLE.pack(offer.price)
    if offer.lead_time_days is None:
        out.append(0)
    else:
        out.append(2)
        _long(offer.lead_time_days, out)
    _long(offer.updated_at, out)
    return bytes(out)


_DOUBLE = struct.Struct("<d")


def render_decision(decision: ReservationDecision) -> OutMessage:
    """`reservation.decisions` message for one decision.

    Encoded by hand like `render_change`: a decision leaves for every reservation request
    and every end of a hold, and building `decision_fields`' dict for fastavro's general
    writer was most of its cost. `tests/component/adapters/test_kafka_records.py` checks
    the bytes against fastavro's on any decision.
    """
    header, statuses = _decision_layout()
    longs, texts = _LONGS.get, _TEXTS.get
    ref, site, sku, reason = decision.reservation_id, decision.site_id, decision.sku, decision.reason
    expires_at = decision.expires_at
    value = b"".join(
        (
            header,
            _text_utf8(ref),
            texts(site) or _text_bytes(site),
            texts(sku) or _text_bytes(sku),
            longs(decision.qty) or _long_bytes(decision.qty),
            statuses[decision.status],
            texts(reason) or _text_bytes(reason),
            b"\x00" if expires_at is None else b"\x02" + (longs(expires_at) or _long_bytes(expires_at)),
            longs(decision.decided_at) or _long_bytes(decision.decided_at),
            longs(decision.atp_before) or _long_bytes(decision.atp_before),
        )
    )
    return OutMessage(ref.encode(), value)


def _text_utf8(value: str) -> bytes:
    """An Avro string's bytes, not remembered: a reservation id is seen once or twice."""
    out = bytearray()
    _text(value, out)
    return bytes(out)


@cache
def _decision_layout() -> tuple[bytes, dict[DecisionStatus, bytes]]:
    """The decision schema's header, and each status as its one-byte Avro enum index, read from the schema file."""
    writer = _writer("reservation_decision.avsc")
    fields: list[dict[str, Any]] = writer.schema["fields"]  # type: ignore[index,call-overload,assignment]
    symbols: list[str] = next(f["type"]["symbols"] for f in fields if f["name"] == "status")
    return writer.header, {DecisionStatus(symbol): bytes([2 * i]) for i, symbol in enumerate(symbols)}


def render_task(task: StoreTask) -> OutMessage:
    """`store.tasks` message for one store task."""
    return OutMessage(task.task_id.encode(), _writer("store_task.avsc").encode(work_fields(task)))


def render_load(load: ShuttleLoad) -> OutMessage:
    """`transport.loads` message for one parcel on a shuttle run."""
    return OutMessage(load.parcel_id.encode(), _writer("shuttle_load.avsc").encode(work_fields(load)))


def render_order(order: DropshipOrder) -> OutMessage:
    """`dropship.orders` message for one order to a supplier or seller."""
    return OutMessage(order.order_ref.encode(), _writer("dropship_order.avsc").encode(work_fields(order)))


def render_dead_letter(letter: DeadLetter) -> OutMessage:
    """`inventory.events.dlq` message: the original bytes, the why in headers."""
    headers = [
        ("omni.reason", letter.reason.encode()),
        ("omni.detail", letter.detail.encode()[:16_384]),
        ("omni.origin", letter.origin.encode()),
    ]
    if letter.event_id is not None:
        headers.append(("omni.event_id", letter.event_id.encode()))
    where = _ORIGIN.match(letter.origin)
    if where is not None:
        headers += [
            ("omni.source.topic", where["topic"].encode()),
            ("omni.source.partition", struct.pack(">i", int(where["partition"]))),
            ("omni.source.offset", struct.pack(">q", int(where["offset"]))),
        ]
    raw = letter.raw
    if len(raw) > _MAX_DLQ_VALUE:
        # Past the broker's message size the produce would fail and stop the flow: keep the
        # head of the input, and say how long it was.
        headers.append(("omni.raw_truncated_from", str(len(raw)).encode()))
        raw = raw[:_MAX_DLQ_VALUE]
    return OutMessage(letter.origin.encode(), raw, tuple(headers))
