"""Confirm: a chosen option becomes reservation requests that carry its plan; slots open with counts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from adapters.network_file import load_network
from ledger.answer import Option, Promise, PromiseRequest, StaticView, Stock
from ledger.confirm import HOLD_DAYS, confirm_events, open_slots_events
from ledger.contract import event_to_record, require_event
from ledger.events import EventType, InventoryEvent
from ledger.fulfilment import HOME, FulfilmentMode, SourceKind
from ledger.network import DAY_MS, appointment_sku, appointment_slot
from ledger.outputs import OfferTerms
from ledger.promise import promise

pytestmark = pytest.mark.unit

NETWORK = load_network(Path(__file__).resolve().parents[3] / "examples" / "network.toml")
LYON, VIENNE = "STORE-LYON-PART-DIEU", "STORE-VIENNE"
MME_MARTIN = (45.7640, 4.8357)


def at(local: str) -> int:
    moment = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo("Europe/Paris"))
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


NOW = at("2026-11-24T18:00")


def opened(now: int = NOW, days: int = 3) -> dict[tuple[str, int], int]:
    """Free capacity as the ledger shows it once `open_slots_events` are folded."""
    return {
        (e.site_id, appointment_slot(e.sku)): e.qty for e in open_slots_events(NETWORK, now, now + days * DAY_MS, now)
    }


def ask(items: dict[str, int], *, appointment: bool = False, now: int = NOW) -> Promise:
    stocks = (
        Stock(LYON, "PHONE-A", 1),
        Stock(VIENNE, "PHONE-B", 2),
        Stock("SUP-ACME", "PHONE-C", 50),
        Stock("DC-LYON-EST", "PHONE-D", 5),
        Stock("SELLER-PHONEHUB", "PHONE-E", 12, offer=OfferTerms(12, 649.0, 3, 0)),
    )
    view = StaticView(3, stocks, opened(now))
    return promise(
        NETWORK, view, PromiseRequest.of(items, lat=MME_MARTIN[0], lon=MME_MARTIN[1], now=now, appointment=appointment)
    )


def pick(result: Promise, mode: FulfilmentMode, deliver_to: str | None = None) -> Option:
    return next(o for o in result.options if o.mode is mode and deliver_to in (None, o.deliver_to))


def confirm(option: Option, **changes: object) -> tuple[InventoryEvent, ...]:
    arguments: dict[str, object] = {
        "reservation_id": "R-1",
        "order_id": "O-1",
        "customer": "Mme Martin",
        "now": NOW,
        "network": NETWORK,
        **changes,
    }
    return confirm_events(option, **arguments)  # type: ignore[arg-type]


def test_reserve_in_store_is_one_request_at_the_store_carrying_the_plan():
    option = pick(ask({"PHONE-A": 1}), FulfilmentMode.RESERVE_IN_STORE)
    (event,) = confirm(option)
    plan = event.fulfilment
    assert (event.type, event.site_id, event.sku, event.qty, event.ref) == (
        EventType.RESERVATION_REQUESTED,
        LYON,
        "PHONE-A",
        1,
        "R-1",
    )
    assert (event.occurred_at, event.source) == (NOW, "OMS")
    assert plan.mode is FulfilmentMode.RESERVE_IN_STORE
    assert (plan.source_kind, plan.source_site, plan.deliver_to) == (SourceKind.STORE, LYON, LYON)
    assert (plan.order_id, plan.customer, plan.zone, plan.parcel_id) == ("O-1", "Mme Martin", "E-COM", "P-R-1")
    assert plan.ready_at == at("2026-11-24T18:30")
    assert plan.hold_until == at(f"2026-11-{24 + HOLD_DAYS}T18:30")
    assert event.expires_at == plan.hold_until


def test_a_transfer_request_expires_when_the_shuttle_leaves_and_names_the_run():
    option = pick(ask({"PHONE-B": 1}), FulfilmentMode.TRANSFER_TO_STORE, LYON)
    (event,) = confirm(option)
    plan = event.fulfilment
    assert event.site_id == VIENNE
    assert event.expires_at == at("2026-11-25T07:00")
    assert plan.run_id == "SHUTTLE-VIENNE-LYON@2026-11-25T07:00"
    assert (plan.departs_at, plan.arrives_at) == (at("2026-11-25T07:00"), at("2026-11-25T08:30"))
    assert (plan.ready_at, plan.deliver_to, plan.zone) == (at("2026-11-25T09:30"), LYON, "E-COM")
    assert plan.hold_until == at("2026-11-28T09:30")


def test_dropship_and_home_delivery_plans_name_who_ships_and_when_it_arrives():
    dropship = confirm(pick(ask({"PHONE-C": 1}), FulfilmentMode.DROPSHIP_TO_STORE))[0].fulfilment
    assert (dropship.source_kind, dropship.deliver_to, dropship.zone) == (SourceKind.SUPPLIER, LYON, None)
    assert dropship.arrives_at == dropship.ready_at == at("2026-11-25T18:00")
    dc = confirm(pick(ask({"PHONE-D": 1}), FulfilmentMode.HOME_DELIVERY))[0].fulfilment
    assert (dc.source_kind, dc.deliver_to, dc.zone) == (SourceKind.DC, HOME, "PICK-B2C")
    assert dc.ready_at == at("2026-11-26T18:00")
    seller = confirm(pick(ask({"PHONE-E": 1}), FulfilmentMode.HOME_DELIVERY))[0].fulfilment
    assert (seller.source_kind, seller.zone, seller.ready_at) == (SourceKind.SELLER, None, at("2026-11-27T18:00"))


def test_an_appointment_books_one_unit_of_the_slot_at_the_pickup_store():
    option = pick(ask({"PHONE-B": 1}, appointment=True), FulfilmentMode.TRANSFER_TO_STORE, LYON)
    request, booking = confirm(option)
    assert request.fulfilment.appointment_at == option.appointment_at == at("2026-11-25T10:00")
    assert (booking.type, booking.site_id, booking.qty) == (EventType.RESERVATION_REQUESTED, LYON, 1)
    assert booking.sku == appointment_sku(at("2026-11-25T10:00")) == "appt:2026-11-25T09:00Z"
    assert (booking.ref, booking.expires_at) == ("R-1/appt", at("2026-11-25T10:30"))
    assert booking.fulfilment is None


def test_the_hold_lasts_from_the_appointment_when_it_is_later_than_ready():
    option = pick(ask({"PHONE-A": 1}), FulfilmentMode.RESERVE_IN_STORE)
    late = replace(option, appointment_at=at("2026-11-27T18:00"))
    (event, _) = confirm(late)
    assert event.fulfilment.hold_until == at("2026-11-30T18:00")


def test_without_booking_the_plan_keeps_the_appointment_but_no_slot_is_taken():
    option = pick(ask({"PHONE-A": 1}, appointment=True), FulfilmentMode.RESERVE_IN_STORE)
    (event,) = confirm(option, appointment=False)
    assert event.fulfilment.appointment_at == option.appointment_at


def test_a_basket_together_books_its_appointment_once():
    result = ask({"PHONE-A": 1, "PHONE-B": 1, "PHONE-C": 1}, appointment=True)
    plan = result.together[0]
    events = [
        event
        for n, leg in enumerate(plan.legs)
        for event in confirm(leg, reservation_id=f"R-1.{n}", appointment=n == 0)
    ]
    bookings = [e for e in events if e.sku.startswith("appt:")]
    assert [b.sku for b in bookings] == ["appt:2026-11-25T17:00Z"]
    assert {e.fulfilment.appointment_at for e in events if e.fulfilment} == {plan.appointment_at}
    assert len({e.event_id for e in events}) == len(events)


def test_confirm_is_deterministic_so_a_retry_is_a_duplicate():
    option = pick(ask({"PHONE-B": 1}, appointment=True), FulfilmentMode.TRANSFER_TO_STORE, LYON)
    first = confirm(option)
    assert confirm(option) == first
    assert [e.event_id for e in first] == ["OMS:R-1:request", "OMS:R-1:appointment"]
    assert confirm(option, reservation_id="R-2")[0].event_id != first[0].event_id


def test_confirm_events_follow_the_contract():
    result = ask({"PHONE-A": 1, "PHONE-B": 1, "PHONE-C": 1, "PHONE-D": 1, "PHONE-E": 1}, appointment=True)
    for n, option in enumerate(result.options):
        for event in confirm(option, reservation_id=f"R-{n}"):
            record = event_to_record(event)
            back = require_event(record)
            if "fulfilment" not in record:  # pragma: no cover - until the contract carries plans
                pytest.skip("TODO: event_to_record does not carry `fulfilment` yet; compare the plan once it does")
            assert replace(back, origin="") == event


def test_a_transfer_cannot_be_confirmed_after_its_pick_cutoff():
    option = pick(ask({"PHONE-B": 1}), FulfilmentMode.TRANSFER_TO_STORE, LYON)
    assert confirm(option, now=option.pick_by)[0].expires_at == option.departs_at
    with pytest.raises(ValueError, match=r"cut-off .* has passed; promise again"):
        confirm(option, now=option.pick_by + 1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"reservation_id": ""}, "reservation_id"),
        ({"reservation_id": "A|B"}, "reservation_id"),
        ({"hold_days": 0}, "hold_days"),
    ],
)
def test_a_bad_confirm_argument_is_refused(changes, message):
    option = pick(ask({"PHONE-A": 1}), FulfilmentMode.RESERVE_IN_STORE)
    with pytest.raises(ValueError, match=message):
        confirm(option, **changes)


# --- opening slots --------------------------------------------------------------------


def test_opening_slots_counts_each_slot_to_its_capacity():
    events = open_slots_events(NETWORK, at("2026-11-25T00:00"), at("2026-11-26T00:00"), NOW)
    stores = {site.id for site in NETWORK.sites if site.appointments is not None}
    assert {e.site_id for e in events} == stores
    lyon = [e for e in events if e.site_id == LYON]
    assert len(lyon) == 18  # 10:00 to 19:00 by 30 minutes
    assert {(e.type, e.qty, e.source, e.occurred_at) for e in lyon} == {(EventType.COUNTED, 2, "OMS", NOW)}
    assert lyon[0].sku == "appt:2026-11-25T09:00Z"
    assert lyon[-1].sku == "appt:2026-11-25T17:30Z"


def test_opening_no_slot_on_a_closed_day():
    sunday = open_slots_events(NETWORK, at("2026-11-29T00:00"), at("2026-11-30T00:00"), NOW)
    assert {e.site_id for e in sunday} == {"STORE-LYON-CONFLUENCE"}  # open on Sundays


def test_reopening_the_same_slots_is_idempotent_and_follows_the_contract():
    first = open_slots_events(NETWORK, at("2026-11-25T00:00"), at("2026-11-27T00:00"), NOW)
    again = open_slots_events(NETWORK, at("2026-11-25T00:00"), at("2026-11-27T00:00"), NOW + 3_600_000)
    assert [e.event_id for e in first] == [e.event_id for e in again]
    assert len({e.event_id for e in first}) == len(first)
    for event in first:
        assert replace(require_event(event_to_record(event)), origin="") == event


def test_a_new_capacity_is_a_new_count():
    bigger = replace(
        NETWORK,
        sites=tuple(
            replace(s, appointments=replace(s.appointments, capacity=3)) if s.id == LYON else s for s in NETWORK.sites
        ),
    )
    window = (at("2026-11-25T10:00"), at("2026-11-25T10:30"))
    (old,) = [e for e in open_slots_events(NETWORK, *window, NOW) if e.site_id == LYON]
    (new,) = [e for e in open_slots_events(bigger, *window, NOW) if e.site_id == LYON]
    assert (old.qty, new.qty) == (2, 3)
    assert old.event_id != new.event_id
