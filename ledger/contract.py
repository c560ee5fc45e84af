"""Validate a decoded record against the `InventoryEvent` contract.

`validate` never raises on bad input: it returns either an `InventoryEvent` or a
`DeadLetter` that names the field, what was expected and what came. Decoding bytes
(JSON, Avro) happens at the edge; this module sees plain mappings, so JSON lines and
Avro records share one set of rules.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from ledger.dead_letter import DeadLetter, Reason
from ledger.errors import ContractError
from ledger.events import EventType, InventoryEvent, Millis
from ledger.fulfilment import Fulfilment, FulfilmentMode, SourceKind

__all__ = [
    "MAX_MILLIS",
    "MAX_QTY",
    "MIN_MILLIS",
    "PlainRule",
    "event_to_json_bytes",
    "event_to_record",
    "fulfilment_to_record",
    "plain_event",
    "plain_rule",
    "plan_from_record",
    "require_event",
    "validate",
]

MAX_QTY = 1_000_000
"""Largest |qty| one event may carry; a bigger figure is a data-entry error, not a pallet."""

_T = EventType
_NEEDS_REF = frozenset(
    {
        _T.RESERVATION_REQUESTED,
        _T.RESERVATION_RELEASED,
        _T.RESERVATION_FULFILLED,
        _T.TRANSFER_PICKED,
        _T.SHUTTLE_LOADED,
        _T.SHUTTLE_ARRIVED,
        _T.DROPSHIP_SHIPPED,
        _T.DROPSHIP_RECEIVED,
    }
)
_NEEDS_DESTINATION = frozenset({_T.TRANSFER_PICKED, _T.SHUTTLE_LOADED, _T.DROPSHIP_SHIPPED})
_NEEDS_ETA = frozenset({_T.SHUTTLE_LOADED, _T.DROPSHIP_SHIPPED})
_ZERO_ALLOWED = frozenset({_T.COUNTED, _T.OFFER_UPDATED})
# A plan rides on the request that starts a promise and on the move that carries its parcel.
_MAY_CARRY_PLAN = frozenset({_T.RESERVATION_REQUESTED, _T.SHUTTLE_LOADED, _T.DROPSHIP_SHIPPED})
_E = TypeVar("_E")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MODES = {m.value: m for m in FulfilmentMode}
_SOURCE_KINDS = {k.value: k for k in SourceKind}
_TYPES = {t.value: t for t in EventType}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_MILLIS = 0
MAX_MILLIS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class _Invalid(Exception):
    """Internal: carries a reason and detail out of the field checks."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _string(record: Mapping[str, object], name: str, *, required: bool) -> str | None:
    value = record.get(name)
    # The common case, decided by C-level checks: printable ASCII (hence valid UTF-8, no
    # control character) and not blank. Anything else takes the full checks below.
    if type(value) is str and value.isascii() and value.isprintable() and value and not value.isspace():
        return value
    if value is None:
        if required:
            raise _Invalid(Reason.MISSING_FIELD, f"field '{name}' is required (a non-empty string)")
        return None
    if not isinstance(value, str):
        raise _Invalid(Reason.WRONG_TYPE, f"field '{name}' must be a string, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise _Invalid(Reason.INVALID_FIELD, f"field '{name}' must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid(Reason.INVALID_FIELD, f"field '{name}' is not valid UTF-8 text (a lone surrogate?)") from None
    if _CONTROL.search(value):
        # A NUL in a key breaks DuckLake's catalog queries on it; no id needs a control character.
        raise _Invalid(Reason.INVALID_FIELD, f"field '{name}' contains a control character: {value!r}")
    return value


def _interned(value: str | None) -> str | None:
    return None if value is None else sys.intern(value)


def _integer(record: Mapping[str, object], name: str, *, required: bool) -> int | None:
    value = record.get(name)
    if value is None:
        if required:
            raise _Invalid(Reason.MISSING_FIELD, f"field '{name}' is required (an integer)")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(Reason.WRONG_TYPE, f"field '{name}' must be an integer, got {type(value).__name__} {value!r}")
    return value


def _millis(record: Mapping[str, object], name: str, *, required: bool) -> Millis | None:
    """Epoch milliseconds from an int, an ISO-8601 string with a UTC offset, or an aware datetime."""
    value = record.get(name)
    if value is None:
        if required:
            raise _Invalid(Reason.MISSING_FIELD, f"field '{name}' is required (epoch milliseconds or ISO-8601 UTC)")
        return None
    if isinstance(value, bool):
        raise _Invalid(Reason.WRONG_TYPE, f"field '{name}' must be a timestamp, got bool {value!r}")
    if isinstance(value, int):
        return _in_range(name, value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        except ValueError:
            detail = f"field '{name}' is not an ISO-8601 timestamp: {value!r} (expected e.g. 2026-11-25T08:00:00Z)"
            raise _Invalid(Reason.WRONG_TYPE, detail) from None
        value = parsed
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            detail = f"field '{name}' has no time zone: {value.isoformat()!r}; add 'Z' for UTC"
            raise _Invalid(Reason.INVALID_FIELD, detail)
        # Integer arithmetic: `timestamp() * 1000` is a float and lands 1 ms low for ~0.6% of values.
        return _in_range(name, (value - _EPOCH) // timedelta(milliseconds=1))
    raise _Invalid(Reason.WRONG_TYPE, f"field '{name}' must be a timestamp, got {type(value).__name__} {value!r}")


def _in_range(name: str, millis: int) -> Millis:
    # Beyond these, dates cannot be shown, stored or timed; a typo, not an event.
    if not MIN_MILLIS <= millis <= MAX_MILLIS:
        detail = f"field '{name}' = {millis} ms is outside 1970..9999; timestamps are epoch milliseconds"
        raise _Invalid(Reason.INVALID_FIELD, detail)
    return millis


def _check_qty(kind: EventType, qty: int) -> None:
    if abs(qty) > MAX_QTY:
        raise _Invalid(Reason.QTY_OUT_OF_RANGE, f"qty {qty} is beyond ±{MAX_QTY} for {kind.value}")
    if kind is EventType.ADJUSTED:
        if qty == 0:
            raise _Invalid(Reason.QTY_OUT_OF_RANGE, "qty must be non-zero for ADJUSTED (use + to add, - to remove)")
    elif kind in _ZERO_ALLOWED:
        if qty < 0:
            raise _Invalid(Reason.QTY_OUT_OF_RANGE, f"qty must be >= 0 for {kind.value} (an absolute level), got {qty}")
    elif qty <= 0:
        raise _Invalid(Reason.QTY_OUT_OF_RANGE, f"qty must be > 0 for {kind.value}, got {qty}")


def _choice(record: Mapping[str, object], name: str, choices: Mapping[str, _E]) -> _E:
    value = _string(record, name, required=True)
    assert value is not None
    if value not in choices:
        raise _Invalid(Reason.INVALID_FIELD, f"field '{name}' is {value!r}; expected one of {', '.join(choices)}")
    return choices[value]


def _fulfilment(record: Mapping[str, object], kind: EventType) -> Fulfilment | None:
    value = record.get("fulfilment")
    if value is None:
        return None
    if kind not in _MAY_CARRY_PLAN:
        allowed = ", ".join(sorted(t.value for t in _MAY_CARRY_PLAN))
        raise _Invalid(Reason.INVALID_FIELD, f"{kind.value} cannot carry a 'fulfilment' plan (only {allowed})")
    if not isinstance(value, Mapping):
        raise _Invalid(Reason.WRONG_TYPE, f"field 'fulfilment' must be an object, got {type(value).__name__}")
    try:
        mode = _choice(value, "mode", _MODES)
        source_kind = _choice(value, "source_kind", _SOURCE_KINDS)
        order_id = _string(value, "order_id", required=True)
        deliver_to = _string(value, "deliver_to", required=True)
        ready_at = _millis(value, "ready_at", required=True)
        hold_until = _millis(value, "hold_until", required=True)
        assert order_id is not None
        assert deliver_to is not None
        assert ready_at is not None
        assert hold_until is not None
        transfer = mode is FulfilmentMode.TRANSFER_TO_STORE
        plan = Fulfilment(
            mode=mode,
            source_kind=source_kind,
            order_id=order_id,
            deliver_to=deliver_to,
            ready_at=ready_at,
            hold_until=hold_until,
            zone=_string(value, "zone", required=False),
            parcel_id=_string(value, "parcel_id", required=transfer),
            run_id=_string(value, "run_id", required=transfer),
            departs_at=_millis(value, "departs_at", required=transfer),
            arrives_at=_millis(value, "arrives_at", required=transfer),
            appointment_at=_millis(value, "appointment_at", required=False),
            customer=_string(value, "customer", required=False),
            # The load and order records name their origin from it, at both ends of the move.
            source_site=_string(value, "source_site", required=True),
        )
    except _Invalid as bad:
        raise _Invalid(bad.reason, f"fulfilment: {bad.detail}") from None
    if plan.hold_until <= plan.ready_at:
        raise _Invalid(Reason.INVALID_FIELD, "fulfilment: hold_until must be after ready_at")
    if plan.departs_at is not None and plan.arrives_at is not None and plan.arrives_at < plan.departs_at:
        raise _Invalid(Reason.INVALID_FIELD, "fulfilment: arrives_at must not be before departs_at")
    return plan


def _build(record: Mapping[str, object], origin: str, now: Millis | None, max_skew_ms: int) -> InventoryEvent:
    event_id = _string(record, "event_id", required=True)
    raw_type = record.get("type")
    if raw_type is None:
        raise _Invalid(Reason.MISSING_FIELD, f"field 'type' is required, one of {', '.join(_TYPES)}")
    kind = _TYPES.get(raw_type) if isinstance(raw_type, str) else None
    if kind is None:
        raise _Invalid(Reason.UNKNOWN_TYPE, f"unknown type {raw_type!r}; expected one of {', '.join(_TYPES)}")
    occurred_at = _millis(record, "occurred_at", required=True)
    # Interned: millions of positions then share one string per site and per sku.
    site_id = _interned(_string(record, "site_id", required=True))
    sku = _interned(_string(record, "sku", required=True))
    qty = _integer(record, "qty", required=True)
    assert event_id is not None
    assert occurred_at is not None
    assert site_id is not None
    assert sku is not None
    assert qty is not None
    _check_qty(kind, qty)
    ref = _string(record, "ref", required=kind in _NEEDS_REF)
    if ref is None and kind in _NEEDS_REF:
        raise _Invalid(Reason.MISSING_REF, f"{kind.value} needs 'ref'")
    to_site_id = _string(record, "to_site_id", required=kind in _NEEDS_DESTINATION)
    if to_site_id is not None and to_site_id == site_id:
        raise _Invalid(Reason.INVALID_FIELD, f"to_site_id equals site_id ({site_id!r}); a move needs two sites")
    eta = _millis(record, "eta", required=kind in _NEEDS_ETA)
    expires_at = _millis(record, "expires_at", required=kind is EventType.RESERVATION_REQUESTED)
    if expires_at is not None and expires_at <= occurred_at:
        raise _Invalid(Reason.INVALID_FIELD, "expires_at must be after occurred_at: a hold cannot end before it starts")
    price = record.get("price")
    if price is not None:
        if isinstance(price, bool) or not isinstance(price, int | float):
            raise _Invalid(Reason.WRONG_TYPE, f"field 'price' must be a number, got {type(price).__name__} {price!r}")
        if price < 0 or price != price:
            raise _Invalid(Reason.INVALID_FIELD, f"field 'price' must be >= 0, got {price!r}")
        price = float(price)
    lead_time_days = _integer(record, "lead_time_days", required=False)
    if lead_time_days is not None and not 0 <= lead_time_days <= 365:
        raise _Invalid(Reason.INVALID_FIELD, f"lead_time_days must be within 0..365, got {lead_time_days}")
    source = _string(record, "source", required=False)
    fulfilment = _fulfilment(record, kind)
    if now is not None and occurred_at > now + max_skew_ms:
        detail = (
            f"occurred_at is {(occurred_at - now) / 1000:.0f} s ahead of the ledger clock "
            f"(allowed skew {max_skew_ms / 1000:.0f} s); fix the emitting system's clock"
        )
        raise _Invalid(Reason.FUTURE_EVENT, detail)
    # Positional: keyword arguments cost a microsecond per event here.
    return InventoryEvent(
        event_id,
        kind,
        occurred_at,
        site_id,
        sku,
        qty,
        ref,
        to_site_id,
        eta,
        expires_at,
        price,
        lead_time_days,
        source,
        fulfilment,
        origin,
    )


def validate(
    record: object,
    *,
    origin: str,
    raw: bytes,
    now: Millis | None = None,
    max_skew_ms: int = 0,
) -> InventoryEvent | DeadLetter:
    """Return the event `record` describes, or a dead letter saying why it is refused.

    Unknown fields are ignored, so a producer may add optional fields without breaking
    the flow. `now` (the ledger's clock) enables the future-event check.
    """
    if not isinstance(record, Mapping):
        detail = f"expected an object with the InventoryEvent fields, got {type(record).__name__}"
        return DeadLetter(origin=origin, reason=Reason.MALFORMED, detail=detail, raw=raw)
    try:
        return _build(record, origin, now, max_skew_ms)
    except _Invalid as bad:
        event_id = record.get("event_id")
        return DeadLetter(
            origin=origin,
            reason=bad.reason,
            detail=bad.detail,
            raw=raw,
            event_id=event_id if isinstance(event_id, str) else None,
        )


def _plain_text(value: str | None) -> bool:
    # `_string`'s fast path: printable ASCII, not blank (hence valid UTF-8, no control character).
    return value is not None and value.isascii() and value.isprintable() and not value.isspace() and value != ""


@dataclass(frozen=True, slots=True)
class PlainRule:
    """What `plain_event` asks of one kind's fields, for a reader that checks many events at once."""

    qty: Literal["nonzero", "non_negative", "positive"]
    needs_ref: bool
    needs_destination: bool
    needs_eta: bool
    needs_expiry: bool


def plain_rule(kind: EventType) -> PlainRule:
    """The rules `plain_event` applies to an event of `kind` besides the ones every kind shares.

    Read from the same sets `plain_event` and `validate` use, so a batch reader built on
    it cannot drift from them (`adapters.avro_batch`; its tests hold it to `plain_event`).
    """
    qty: Literal["nonzero", "non_negative", "positive"] = (
        "nonzero" if kind is EventType.ADJUSTED else "non_negative" if kind in _ZERO_ALLOWED else "positive"
    )
    return PlainRule(
        qty=qty,
        needs_ref=kind in _NEEDS_REF,
        needs_destination=kind in _NEEDS_DESTINATION,
        needs_eta=kind in _NEEDS_ETA,
        needs_expiry=kind is EventType.RESERVATION_REQUESTED,
    )


def plain_event(
    event_id: str,
    kind: EventType,
    occurred_at: int,
    site_id: str,
    sku: str,
    qty: int,
    ref: str | None,
    to_site_id: str | None,
    eta: int | None,
    expires_at: int | None,
    price: float | None,
    lead_time_days: int | None,
    source: str | None,
    origin: str,
    now: Millis | None,
    max_skew_ms: int,
) -> InventoryEvent | None:
    """The event a record's fields describe when it is a plain valid one, else None (then `validate` decides).

    For a decoder that reads the fields itself, typed as the Avro schema types them
    (strings, ints, a float), with no fulfilment plan: one pass instead of a dict and
    `validate`'s checks of it. It accepts only what `validate` accepts, and returns the
    same event (`tests/component/adapters/test_avro_one_pass.py` holds it to that); it returns
    None for anything else, including every record `validate` would refuse and a few it
    would accept (text outside printable ASCII, say), so the caller then validates the
    record in full, and a refusal keeps its reason and detail.
    """
    if not (
        _plain_text(event_id)
        and _plain_text(site_id)
        and _plain_text(sku)
        and MIN_MILLIS <= occurred_at <= MAX_MILLIS
        and (now is None or occurred_at <= now + max_skew_ms)
    ):
        return None
    # `_check_qty`'s rules, as tests rather than raises.
    if abs(qty) > MAX_QTY:
        return None
    if kind is EventType.ADJUSTED:
        if qty == 0:
            return None
    elif kind in _ZERO_ALLOWED:
        if qty < 0:
            return None
    elif qty <= 0:
        return None
    if ref is None:
        if kind in _NEEDS_REF:
            return None
    elif not _plain_text(ref):
        return None
    if to_site_id is None:
        if kind in _NEEDS_DESTINATION:
            return None
    elif not _plain_text(to_site_id) or to_site_id == site_id:
        return None
    if eta is None:
        if kind in _NEEDS_ETA:
            return None
    elif not MIN_MILLIS <= eta <= MAX_MILLIS:
        return None
    if expires_at is None:
        if kind is EventType.RESERVATION_REQUESTED:
            return None
    elif not MIN_MILLIS <= expires_at <= MAX_MILLIS or expires_at <= occurred_at:
        return None
    if price is not None and not price >= 0:  # NaN fails it too
        return None
    if lead_time_days is not None and not 0 <= lead_time_days <= 365:
        return None
    if source is not None and not _plain_text(source):
        return None
    return InventoryEvent(
        event_id,
        kind,
        occurred_at,
        sys.intern(site_id),
        sys.intern(sku),
        qty,
        ref,
        to_site_id,
        eta,
        expires_at,
        price,
        lead_time_days,
        source,
        None,
        origin,
    )


def require_event(record: Mapping[str, object], *, origin: str = "test") -> InventoryEvent:
    """Like `validate` but raise `ContractError` on a bad record (for tools and tests)."""
    result = validate(record, origin=origin, raw=b"")
    if isinstance(result, DeadLetter):
        msg = f"{origin}: {result.reason}: {result.detail}"
        raise ContractError(msg)
    return result


def event_to_record(event: InventoryEvent) -> dict[str, object]:
    """The contract's field mapping of an event (times as epoch milliseconds)."""
    return {
        "event_id": event.event_id,
        "type": event.type.value,
        "occurred_at": event.occurred_at,
        "site_id": event.site_id,
        "sku": event.sku,
        "qty": event.qty,
        "ref": event.ref,
        "to_site_id": event.to_site_id,
        "eta": event.eta,
        "expires_at": event.expires_at,
        "price": event.price,
        "lead_time_days": event.lead_time_days,
        "source": event.source,
        "fulfilment": None if event.fulfilment is None else fulfilment_to_record(event.fulfilment),
    }


def plan_from_record(record: Mapping[str, object]) -> Fulfilment | None:
    """The plan a `fulfilment_to_record` mapping describes, or None if it does not validate."""
    try:
        return _fulfilment({"fulfilment": record}, EventType.RESERVATION_REQUESTED)
    except _Invalid:
        return None


def fulfilment_to_record(plan: Fulfilment) -> dict[str, object]:
    """The contract's field mapping of a fulfilment plan (times as epoch milliseconds)."""
    return {
        "mode": plan.mode.value,
        "source_kind": plan.source_kind.value,
        "order_id": plan.order_id,
        "deliver_to": plan.deliver_to,
        "ready_at": plan.ready_at,
        "hold_until": plan.hold_until,
        "zone": plan.zone,
        "parcel_id": plan.parcel_id,
        "run_id": plan.run_id,
        "departs_at": plan.departs_at,
        "arrives_at": plan.arrives_at,
        "appointment_at": plan.appointment_at,
        "customer": plan.customer,
        "source_site": plan.source_site,
    }


def event_to_json_bytes(event: InventoryEvent) -> bytes:
    """One JSON line for an event (used to put a refused event on the dead-letter output)."""
    return json.dumps(event_to_record(event), separators=(",", ":")).encode()
