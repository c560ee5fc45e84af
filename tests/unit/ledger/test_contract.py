"""Validation of the InventoryEvent contract: a bad record is a value with a reason, never an exception."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.codec import decode_json
from ledger.contract import MAX_QTY, require_event, validate
from ledger.dead_letter import DeadLetter, Reason
from ledger.errors import ContractError
from ledger.events import EventType, InventoryEvent

pytestmark = pytest.mark.unit

BASE = {"event_id": "e1", "type": "SOLD", "occurred_at": 1_790_000_000_000, "site_id": "ST-1", "sku": "A", "qty": 1}


def check(record: object) -> InventoryEvent | DeadLetter:
    return validate(record, origin="test:1", raw=b"raw")


def reason(record: object) -> str:
    result = check(record)
    assert isinstance(result, DeadLetter), result
    return result.reason


def test_a_valid_record_becomes_an_event_with_its_origin():
    event = check(BASE)
    assert isinstance(event, InventoryEvent)
    assert (event.type, event.qty, event.origin) == (EventType.SOLD, 1, "test:1")


@pytest.mark.parametrize(
    ("value", "millis"),
    [
        (1_790_000_000_000, 1_790_000_000_000),
        ("2026-11-25T08:00:00Z", 1_795_593_600_000),
        ("2026-11-25T09:00:00+01:00", 1_795_593_600_000),
        (datetime(2026, 11, 25, 8, tzinfo=UTC), 1_795_593_600_000),
    ],
)
def test_timestamps_are_accepted_as_epoch_millis_iso_utc_or_aware_datetimes(value, millis):
    event = check({**BASE, "occurred_at": value})
    assert isinstance(event, InventoryEvent)
    assert event.occurred_at == millis


def test_aware_datetimes_convert_to_exact_milliseconds():
    # A float product (timestamp() * 1000) lands 1 ms low on this one.
    millis = 2_198_698_592_950
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
    event = check({**BASE, "occurred_at": moment})
    assert isinstance(event, InventoryEvent)
    assert event.occurred_at == millis


def test_a_timestamp_without_time_zone_is_refused_with_advice():
    result = check({**BASE, "occurred_at": "2026-11-25T08:00:00"})
    assert isinstance(result, DeadLetter)
    assert result.reason == Reason.INVALID_FIELD
    assert "add 'Z'" in result.detail


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"type": "TELEPORTED"}, Reason.UNKNOWN_TYPE),
        ({"type": None}, Reason.MISSING_FIELD),
        ({"sku": None}, Reason.MISSING_FIELD),
        ({"qty": "3"}, Reason.WRONG_TYPE),
        ({"qty": True}, Reason.WRONG_TYPE),
        ({"qty": -2}, Reason.QTY_OUT_OF_RANGE),
        ({"qty": 0}, Reason.QTY_OUT_OF_RANGE),
        ({"qty": MAX_QTY + 1}, Reason.QTY_OUT_OF_RANGE),
        ({"type": "ADJUSTED", "qty": 0}, Reason.QTY_OUT_OF_RANGE),
        ({"type": "COUNTED", "qty": -1}, Reason.QTY_OUT_OF_RANGE),
        ({"type": "RESERVATION_RELEASED"}, Reason.MISSING_FIELD),
        ({"type": "SHUTTLE_LOADED", "ref": "T1", "to_site_id": "ST-1", "eta": 1}, Reason.INVALID_FIELD),
        ({"type": "SHUTTLE_LOADED", "ref": "T1", "to_site_id": "ST-2"}, Reason.MISSING_FIELD),
        ({"type": "RESERVATION_REQUESTED", "ref": "R", "expires_at": 1_780_000_000_000}, Reason.INVALID_FIELD),
        ({"site_id": "  "}, Reason.INVALID_FIELD),
        ({"occurred_at": "yesterday"}, Reason.WRONG_TYPE),
        ({"price": -1.0}, Reason.INVALID_FIELD),
        ({"lead_time_days": 400}, Reason.INVALID_FIELD),
    ],
)
def test_an_invalid_field_yields_a_dead_letter_with_its_reason(change, expected):
    assert reason({**BASE, **change}) == expected


def test_adjusted_may_remove_units_and_counted_may_be_zero():
    assert isinstance(check({**BASE, "type": "ADJUSTED", "qty": -3}), InventoryEvent)
    assert isinstance(check({**BASE, "type": "COUNTED", "qty": 0}), InventoryEvent)


def test_an_unknown_extra_field_is_ignored_so_producers_can_evolve():
    assert isinstance(check({**BASE, "carrier": "DHL"}), InventoryEvent)


def test_an_event_far_ahead_of_the_ledger_clock_is_refused_as_future():
    result = validate(BASE, origin="t", raw=b"", now=BASE["occurred_at"] - 3_600_000, max_skew_ms=300_000)
    assert isinstance(result, DeadLetter)
    assert result.reason == Reason.FUTURE_EVENT
    assert "fix the emitting system's clock" in result.detail


def test_a_dead_letter_keeps_the_raw_input_and_the_event_id():
    result = check({**BASE, "qty": -1})
    assert isinstance(result, DeadLetter)
    assert (result.raw, result.origin, result.event_id) == (b"raw", "test:1", "e1")


def test_a_line_that_is_not_json_is_malformed_and_keeps_its_bytes():
    result = decode_json(b"{not json", "f.jsonl:3")
    assert isinstance(result, DeadLetter)
    assert (result.reason, result.raw, result.origin) == (Reason.MALFORMED, b"{not json", "f.jsonl:3")
    assert isinstance(decode_json(b"[1, 2]", "f"), DeadLetter)


def test_require_event_raises_a_contract_error_naming_the_problem():
    with pytest.raises(ContractError, match="qty must be > 0"):
        require_event({**BASE, "qty": 0})


@pytest.mark.parametrize("line", [b'{"qty": ' + b"9" * 5000 + b"}", b"[" * 100_000])
def test_json_a_parser_refuses_is_malformed_not_a_crash(line):
    result = decode_json(line, "f.jsonl:9")
    assert isinstance(result, DeadLetter)
    assert result.reason == Reason.MALFORMED


@pytest.mark.parametrize("value", [-1, 10**17, "0001-01-01T00:00:00Z"])
def test_a_timestamp_outside_1970_to_9999_is_refused(value):
    assert reason({**BASE, "occurred_at": value}) == Reason.INVALID_FIELD


def test_text_that_is_not_valid_utf8_is_refused():
    assert reason({**BASE, "sku": "A\ud800"}) == Reason.INVALID_FIELD


@pytest.mark.parametrize("field", ["event_id", "site_id", "sku"])
def test_an_id_with_a_control_character_is_refused(field):
    # A NUL inside a key makes DuckLake's catalog query fail on every read of that key.
    letter = check({**BASE, field: "A\x00B"})
    assert isinstance(letter, DeadLetter)
    assert letter.reason == Reason.INVALID_FIELD
    assert "control character" in letter.detail
