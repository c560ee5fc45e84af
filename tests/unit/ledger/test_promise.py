"""Promise: option dates under schedules and opening hours, baskets together, and why sources are left out."""

from __future__ import annotations

import tomllib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.network_file import load_network
from ledger.answer import (
    BASKET,
    MAX_BASKET,
    MAX_LIMIT,
    Option,
    Promise,
    PromiseRequest,
    Reason,
    StaticView,
    Stock,
    best_options,
    bounded,
)
from ledger.fulfilment import HOME, FulfilmentMode, SourceKind
from ledger.network import (
    DAY_MS,
    MINUTE_MS,
    Appointments,
    CarrierRoute,
    Lane,
    Network,
    Site,
    SupplierRoute,
    appointment_sku,
)
from ledger.network_schema import network_from_mapping
from ledger.outputs import InboundLine, OfferTerms
from ledger.promise import promise
from ledger.schedule import add_days, next_opening, next_run, slots, transfer

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "network.toml"
PARIS, LONDON = "Europe/Paris", "Europe/London"
R, T, D, H = (
    FulfilmentMode.RESERVE_IN_STORE,
    FulfilmentMode.TRANSFER_TO_STORE,
    FulfilmentMode.DROPSHIP_TO_STORE,
    FulfilmentMode.HOME_DELIVERY,
)

# NEAR is where the customer is; FAR is 27 km south with a morning shuttle to NEAR;
# OUT is 120 km away with no lane; DC-UK runs on London time.
NETWORK = network_from_mapping(
    tomllib.loads(
        """
[[sites]]
id = "NEAR"
kind = "STORE"
lat = 45.7606
lon = 4.8598
tz = "Europe/Paris"
hours = { mon-sat = "09:30-20:00", sun = "closed" }
prep_minutes = 30
pick_zone = "E-COM"
appointments = { slot_minutes = 30, capacity = 2, from = "10:00", until = "19:00" }

[[sites]]
id = "FAR"
kind = "STORE"
lat = 45.5255
lon = 4.8744
tz = "Europe/Paris"
hours = { mon-sat = "09:00-19:00", sun = "closed" }
prep_minutes = 20

[[sites]]
id = "OUT"
kind = "STORE"
lat = 45.1590
lon = 5.7310
tz = "Europe/Paris"
hours = { mon-sat = "10:00-19:00" }

[[sites]]
id = "DC"
kind = "DC"
lat = 45.6430
lon = 5.1120
tz = "Europe/Paris"

[[sites]]
id = "DC-UK"
kind = "DC"
lat = 45.70
lon = 4.95
tz = "Europe/London"

[[sites]]
id = "SUP"
kind = "SUPPLIER"
lat = 48.9360
lon = 2.3580
tz = "Europe/Paris"

[[sites]]
id = "SELLER"
kind = "SELLER"
lat = 43.2965
lon = 5.3698
tz = "Europe/Paris"

[[sites]]
id = "SELLER-2"
kind = "SELLER"
lat = 43.2965
lon = 5.3698
tz = "Europe/Paris"

[[lanes]]
id = "FAR-NEAR"
origin = "FAR"
destination = "NEAR"
days = ["mon-sat"]
departures = ["07:00"]
transit_minutes = 90
cutoff_minutes = 60

[[lanes]]
id = "DC-NEAR"
origin = "DC"
destination = "NEAR"
days = ["mon-sun"]
departures = ["05:30"]
transit_minutes = 60
cutoff_minutes = 120

[[lanes]]
id = "UK-NEAR"
origin = "DC-UK"
destination = "NEAR"
days = ["mon-fri"]
departures = ["07:00"]
transit_minutes = 120
cutoff_minutes = 30

[[dropship]]
supplier = "SUP"
store = "NEAR"
lead_days = 1
skus = ["C"]

[[dropship]]
supplier = "SUP"
store = "FAR"
lead_days = 2
skus = ["X"]

[[carriers]]
dc = "DC"
lead_days = 2
max_km = 100
"""
    ),
    origin="test",
)
HERE = (45.7606, 4.8598)


def at(local: str, tz: str = PARIS) -> int:
    moment = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(tz))
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def ask(
    stocks: list[Stock],
    now: int,
    items: dict[str, int] | None = None,
    *,
    network: Network = NETWORK,
    slots: dict[tuple[str, int], int] | None = None,
    where: tuple[float, float] = HERE,
    **request: object,
) -> Promise:
    view = StaticView(7, tuple(stocks), slots or {})
    wanted = PromiseRequest.of(items or {"A": 1}, lat=where[0], lon=where[1], now=now, **request)  # type: ignore[arg-type]
    return promise(network, view, wanted)


def only(result: Promise, mode: FulfilmentMode, source: str) -> Option:
    (found,) = [o for o in result.options if o.mode is mode and o.source_id == source]
    return found


def reasons(result: Promise) -> dict[tuple[str, str], set[Reason]]:
    found: dict[tuple[str, str], set[Reason]] = {}
    for item in result.excluded:
        found.setdefault((item.site_id, item.sku), set()).add(item.reason)
    return found


def open_slots(store: str, start: int, end: int, free: int = 2) -> dict[tuple[str, int], int]:
    return {(store, slot): free for slot in NETWORK.slots(store, start, end)}


# --- reserve in store -------------------------------------------------------------


def test_reserve_in_store_is_ready_after_the_prep_time_when_open():
    result = ask([Stock("NEAR", "A", 3)], at("2026-11-24T15:00"))
    option = only(result, R, "NEAR")
    assert option.available_at == at("2026-11-24T15:30")
    assert (option.deliver_to, option.qty, option.source_kind) == ("NEAR", 1, SourceKind.STORE)
    assert option.distance_km == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("now", "ready"),
    [
        ("2026-11-24T21:00", "2026-11-25T09:30"),  # after closing
        ("2026-11-24T19:45", "2026-11-25T09:30"),  # prep ends after closing
        ("2026-11-28T19:00", "2026-11-28T19:30"),  # Saturday, still open
        ("2026-11-28T21:00", "2026-11-30T09:30"),  # Saturday night: closed on Sunday
    ],
)
def test_reserve_in_store_moves_to_the_next_opening(now, ready):
    assert only(ask([Stock("NEAR", "A", 1)], at(now)), R, "NEAR").available_at == at(ready)


# --- transfers ----------------------------------------------------------------------


def test_a_transfer_picked_just_before_the_cutoff_rides_this_mornings_shuttle():
    option = only(ask([Stock("FAR", "A", 1)], at("2026-11-25T05:59")), T, "FAR")
    assert option.run_id == "FAR-NEAR@2026-11-25T07:00"
    assert (option.pick_by, option.departs_at) == (at("2026-11-25T06:00"), at("2026-11-25T07:00"))
    assert option.arrives_at == at("2026-11-25T08:30")
    assert option.available_at == at("2026-11-25T09:30")  # NEAR opens at 09:30
    assert option.deliver_to == "NEAR"


def test_a_transfer_just_after_the_cutoff_rides_tomorrows_shuttle():
    option = only(ask([Stock("FAR", "A", 1)], at("2026-11-25T06:01")), T, "FAR")
    assert option.run_id == "FAR-NEAR@2026-11-26T07:00"
    assert option.available_at == at("2026-11-26T09:30")


def test_a_transfer_missed_on_saturday_rides_mondays_shuttle():
    option = only(ask([Stock("FAR", "A", 1)], at("2026-11-28T06:30")), T, "FAR")
    assert option.run_id == "FAR-NEAR@2026-11-30T07:00"
    assert option.available_at == at("2026-11-30T09:30")


def test_a_sunday_arrival_waits_for_mondays_opening_across_the_dst_change():
    option = only(ask([Stock("DC", "A", 1)], at("2026-10-24T04:00")), T, "DC")
    # Saturday's cut-off (03:30) has passed: Sunday 25 October, the day clocks go back.
    assert option.run_id == "DC-NEAR@2026-10-25T05:30"
    assert option.departs_at == at("2026-10-25T04:30", "UTC")  # CET, UTC+1
    assert option.arrives_at == at("2026-10-25T06:30")
    assert option.available_at == at("2026-10-26T09:30")
    assert option.available_at == at("2026-10-26T08:30", "UTC")


def test_a_lane_from_london_departs_on_london_time_and_opens_on_paris_time():
    option = only(ask([Stock("DC-UK", "A", 1)], at("2026-11-25T06:00", LONDON)), T, "DC-UK")
    assert option.run_id == "UK-NEAR@2026-11-25T07:00"
    assert option.departs_at == at("2026-11-25T08:00")  # 07:00 London is 08:00 Paris
    assert option.arrives_at == at("2026-11-25T10:00")
    assert option.available_at == at("2026-11-25T10:00")


def test_a_store_source_offers_reserve_there_and_transfer_to_the_near_store():
    result = ask([Stock("FAR", "A", 1)], at("2026-11-25T05:00"))
    assert {(o.mode, o.deliver_to) for o in result.options} == {(R, "FAR"), (T, "NEAR")}


def test_a_smaller_radius_leaves_the_far_store_as_a_transfer_source_only():
    result = ask([Stock("FAR", "A", 1)], at("2026-11-25T05:00"), radius_km=10)
    assert {(o.mode, o.deliver_to) for o in result.options} == {(T, "NEAR")}


# --- dropship and home delivery -------------------------------------------------------


def test_a_dropship_is_available_after_the_lead_time_at_the_store_opening():
    result = ask([Stock("SUP", "C", 50)], at("2026-11-24T18:00"), {"C": 1})
    option = only(result, D, "SUP")
    assert (option.deliver_to, option.available_at) == ("NEAR", at("2026-11-25T18:00"))
    late = ask([Stock("SUP", "C", 50)], at("2026-11-28T18:00"), {"C": 1})
    assert only(late, D, "SUP").available_at == at("2026-11-30T09:30")


def test_a_store_that_does_not_accept_the_sku_by_dropship_is_explained():
    result = ask([Stock("SUP", "C", 50)], at("2026-11-24T18:00"), {"C": 1})
    (why,) = [e for e in result.excluded if e.site_id == "SUP"]
    assert why.reason is Reason.NOT_ACCEPTED
    assert "FAR does not accept C" in why.detail


def test_a_supplier_without_a_route_for_the_sku_is_excluded():
    result = ask([Stock("SUP", "Z", 50)], at("2026-11-24T18:00"), {"Z": 1})
    assert not result.options
    assert reasons(result)[("SUP", "Z")] == {Reason.NOT_ACCEPTED}


def test_home_delivery_from_a_dc_takes_the_carrier_lead_days():
    option = only(ask([Stock("DC", "A", 4)], at("2026-11-24T18:00")), H, "DC")
    assert (option.deliver_to, option.available_at) == (HOME, at("2026-11-26T18:00"))
    assert option.distance_km == pytest.approx(NETWORK.distance_km("DC", *HERE), abs=0.001)


def test_a_customer_beyond_the_carrier_range_gets_no_home_delivery_from_that_dc():
    result = ask([Stock("DC", "A", 4)], at("2026-11-24T18:00"), where=(48.85, 2.35))
    assert not result.options
    assert reasons(result)[("DC", "A")] == {Reason.OUT_OF_CARRIER_RANGE}


def test_a_seller_delivers_home_at_its_offer_price_and_lead_time():
    offer = OfferTerms(qty=12, price=649.0, lead_time_days=3, updated_at=0)
    option = only(ask([Stock("SELLER", "A", 12, offer=offer)], at("2026-11-24T18:00")), H, "SELLER")
    assert (option.price, option.available_at) == (649.0, at("2026-11-27T18:00"))
    assert option.source_kind is SourceKind.SELLER


def test_a_seller_offer_without_lead_time_uses_the_network_default():
    offer = OfferTerms(qty=12, price=None, lead_time_days=None, updated_at=0)
    option = only(ask([Stock("SELLER", "A", 12, offer=offer)], at("2026-11-24T18:00")), H, "SELLER")
    assert option.available_at == at("2026-11-27T18:00")  # seller_lead_days = 3


def test_a_seller_without_an_offer_is_excluded():
    result = ask([Stock("SELLER", "A", 12)], at("2026-11-24T18:00"))
    assert reasons(result)[("SELLER", "A")] == {Reason.NO_OFFER}


# --- ranking and explanations ---------------------------------------------------------


def test_options_rank_by_date_then_mode_then_distance_then_price():
    cheap = OfferTerms(qty=5, price=600.0, lead_time_days=3, updated_at=0)
    dear = OfferTerms(qty=5, price=700.0, lead_time_days=3, updated_at=0)
    stocks = [
        Stock("SELLER", "A", 5, offer=dear),
        Stock("SELLER-2", "A", 5, offer=cheap),
        Stock("FAR", "A", 1),
        Stock("NEAR", "A", 1),
        Stock("DC", "A", 1),
    ]
    result = ask(stocks, at("2026-11-24T15:00"))
    got = [(o.mode, o.source_id, o.deliver_to) for o in result.options]
    assert got[:2] == [(R, "FAR", "FAR"), (R, "NEAR", "NEAR")]  # 15:20 then 15:30
    assert got[-2:] == [(H, "SELLER-2", HOME), (H, "SELLER", HOME)]  # same date: cheaper first
    keys = [(o.available_at, list(FulfilmentMode).index(o.mode)) for o in result.options]
    assert keys == sorted(keys)


def test_every_excluded_source_is_explained_with_a_reason():
    inbound = (InboundLine("TR-1", 2, at("2026-11-25T08:30")),)
    stocks = [
        Stock("NEAR", "A", 0, free_inbound=inbound),
        Stock("OUT", "A", 5),
        Stock("GHOST", "A", 5),
        Stock("SELLER", "A", 5),
    ]
    result = ask(stocks, at("2026-11-24T15:00"))
    assert not result.options
    found = reasons(result)
    assert {key: found[key] for key in [("NEAR", "A"), ("OUT", "A"), ("GHOST", "A"), ("SELLER", "A")]} == {
        ("NEAR", "A"): {Reason.INSUFFICIENT_ATP},
        ("OUT", "A"): {Reason.OUT_OF_RADIUS},
        ("GHOST", "A"): {Reason.NOT_IN_NETWORK},
        ("SELLER", "A"): {Reason.NO_OFFER},
    }
    short = next(e for e in result.excluded if e.site_id == "NEAR")
    assert "ATP 0 < 1" in short.detail
    assert "2 due 2026-11-25T07:30Z" in short.detail
    far = next(e for e in result.excluded if e.site_id == "OUT")
    assert "km away (radius 50 km)" in far.detail


def test_only_sites_holding_a_position_are_sources_the_others_are_not_listed():
    result = ask([Stock("NEAR", "A", 1), Stock("FAR", "A", 0)], at("2026-11-24T15:00"))
    assert {e.site_id for e in result.excluded} == {"FAR"}
    far = next(e for e in result.excluded if e.site_id == "FAR")
    assert far.reason is Reason.INSUFFICIENT_ATP


def test_a_dc_with_no_lane_into_the_radius_and_no_carrier_is_explained():
    network = Network(
        sites=(*NETWORK.sites, Site("DC-2", "DC-2", SourceKind.DC, 45.7, 4.8, PARIS)),
        lanes=NETWORK.lanes,
    )
    result = ask([Stock("DC-2", "A", 5)], at("2026-11-24T15:00"), network=network)
    assert reasons(result)[("DC-2", "A")] == {Reason.NO_LANE}


def test_a_lane_without_a_departure_in_the_horizon_is_explained():
    lanes = tuple(lane for lane in NETWORK.lanes if lane.id != "FAR-NEAR")
    idle = Lane("FAR-IDLE", "FAR", "NEAR", departures=(), transit_minutes=60, cutoff_minutes=0)
    network = Network(sites=NETWORK.sites, lanes=(*lanes, idle))
    result = ask([Stock("FAR", "A", 1)], at("2026-11-24T15:00"), network=network, radius_km=10)
    assert reasons(result)[("FAR", "A")] == {Reason.NO_DEPARTURE}


def test_a_promise_never_asks_more_than_the_sources_atp():
    result = ask([Stock("NEAR", "A", 2), Stock("FAR", "A", 3)], at("2026-11-24T15:00"), {"A": 3})
    assert {o.source_id for o in result.options} == {"FAR"}
    assert reasons(result)[("NEAR", "A")] == {Reason.INSUFFICIENT_ATP}


def test_the_promise_names_its_snapshot():
    assert ask([Stock("NEAR", "A", 1)], at("2026-11-24T15:00")).snapshot_id == 7


def test_option_ids_are_deterministic_and_distinct():
    stocks = [Stock("NEAR", "A", 1), Stock("FAR", "A", 1), Stock("DC", "A", 1)]
    first = ask(stocks, at("2026-11-24T15:00"))
    again = ask(stocks, at("2026-11-24T15:01"))
    ids = [o.option_id for o in first.options]
    assert len(set(ids)) == len(ids)
    assert ids == [o.option_id for o in again.options]


# --- bounded answers ------------------------------------------------------------------


def _wide() -> Promise:
    """Options from four sources and exclusions of three reasons."""
    offer = OfferTerms(qty=5, price=600.0, lead_time_days=3, updated_at=0)
    stocks = [
        Stock("NEAR", "A", 1),
        Stock("FAR", "A", 1),
        Stock("DC", "A", 1),
        Stock("SELLER-2", "A", 5, offer=offer),
        Stock("SELLER", "A", 5),
        Stock("OUT", "A", 5),
        Stock("GHOST", "A", 5),
        Stock("GHOST-2", "A", 5),
    ]
    return ask(stocks, at("2026-11-24T15:00"))


def test_a_bounded_answer_keeps_the_best_options_and_counts_all_of_them():
    whole = _wide()
    assert len(whole.options) > 2
    cut = bounded(whole, 2)
    assert cut.options == best_options(whole.options, 2)
    assert cut.options[0] == whole.options[0]
    assert cut.options_total == len(whole.options)
    assert cut.together == whole.together[:2]
    assert cut.together_total == len(whole.together)
    assert cut.snapshot_id == whole.snapshot_id


def test_exclusions_are_summarised_by_reason_and_listed_only_when_explained():
    whole = _wide()
    cut = bounded(whole, 10)
    assert cut.excluded == ()
    assert cut.exclusions is not None
    summary = {s.reason: s for s in cut.exclusions}
    assert summary[Reason.NOT_IN_NETWORK].count == 2
    assert {e.site_id for e in summary[Reason.NOT_IN_NETWORK].examples} == {"GHOST", "GHOST-2"}
    assert sum(s.count for s in cut.exclusions) == len(whole.excluded)
    counts = [s.count for s in cut.exclusions]
    assert counts == sorted(counts, reverse=True)
    assert bounded(whole, 10, explain=True).excluded == whole.excluded


def test_a_summary_shows_at_most_three_examples_per_reason():
    ghosts = [Stock(f"GHOST-{i}", "A", 5) for i in range(7)]
    answer = bounded(ask(ghosts, at("2026-11-24T15:00")), 10)
    assert answer.exclusions is not None
    [summary] = answer.exclusions
    assert (summary.reason, summary.count, len(summary.examples)) == (Reason.NOT_IN_NETWORK, 7, 3)


@pytest.mark.parametrize("limit", [0, MAX_LIMIT + 1, -1, True])
def test_a_limit_outside_one_to_a_hundred_is_refused(limit):
    with pytest.raises(ValueError, match="limit must be"):
        bounded(_wide(), limit)


# --- appointments ---------------------------------------------------------------------


def test_an_appointment_is_the_first_free_slot_at_or_after_availability():
    now = at("2026-11-24T15:00")
    slots = open_slots("NEAR", now, now + DAY_MS)
    slots[("NEAR", at("2026-11-24T15:30"))] = 0  # full
    option = only(ask([Stock("NEAR", "A", 1)], now, slots=slots, appointment=True), R, "NEAR")
    assert option.available_at == at("2026-11-24T15:30")
    assert option.appointment_at == at("2026-11-24T16:00")


def test_a_slot_never_opened_has_no_capacity_and_is_explained():
    result = ask([Stock("NEAR", "A", 1)], at("2026-11-24T15:00"), appointment=True)
    assert not result.options
    assert not result.together
    booking = [e for e in result.excluded if e.reason is Reason.NO_APPOINTMENT]
    assert {(e.site_id, e.sku) for e in booking} == {
        ("NEAR", "A"),
        ("NEAR", BASKET),  # the basket could be there, but not booked
    }
    assert all("not opened" in e.detail for e in booking)


def test_a_store_without_appointments_cannot_be_booked_but_home_delivery_needs_none():
    result = ask([Stock("FAR", "A", 1), Stock("DC", "A", 1)], at("2026-11-24T15:00"), appointment=True, radius_km=30)
    modes = {(o.mode, o.source_id) for o in result.options}
    assert (H, "DC") in modes
    assert (R, "FAR") not in modes
    assert any("FAR takes no appointments" in e.detail for e in result.excluded)


# --- baskets --------------------------------------------------------------------------


def test_a_basket_is_together_at_the_later_of_store_shuttle_and_dropship():
    now = at("2026-11-24T18:00")
    stocks = [Stock("NEAR", "A", 1), Stock("FAR", "B", 1), Stock("SUP", "C", 10)]
    slots = open_slots("NEAR", now, now + 3 * DAY_MS)
    result = ask(stocks, now, {"A": 1, "B": 1, "C": 1}, slots=slots, appointment=True)
    (plan,) = [p for p in result.together if p.store_id == "NEAR"]
    legs = {leg.sku: leg for leg in plan.legs}
    assert (legs["A"].mode, legs["A"].available_at) == (R, at("2026-11-24T18:30"))
    assert (legs["B"].mode, legs["B"].available_at) == (T, at("2026-11-25T09:30"))
    assert (legs["C"].mode, legs["C"].available_at) == (D, at("2026-11-25T18:00"))
    assert plan.ready_at == at("2026-11-25T18:00")
    assert plan.appointment_at == at("2026-11-25T18:00")
    assert {leg.appointment_at for leg in plan.legs} == {plan.appointment_at}
    # FAR cannot have C: no together plan there.
    assert [p.store_id for p in result.together] == ["NEAR"]


def test_a_basket_takes_each_item_by_its_best_option_to_the_store():
    stocks = [Stock("NEAR", "A", 1), Stock("FAR", "A", 1), Stock("DC", "A", 1), Stock("NEAR", "B", 2)]
    result = ask(stocks, at("2026-11-24T15:00"), [("A", 1), ("B", 1), ("B", 1)])  # type: ignore[arg-type]
    (plan,) = [p for p in result.together if p.store_id == "NEAR"]
    assert [(leg.sku, leg.qty, leg.mode, leg.source_id) for leg in plan.legs] == [
        ("A", 1, R, "NEAR"),
        ("B", 2, R, "NEAR"),
    ]


def test_the_demo_story_mme_martin_collects_a_b_and_c_together_on_wednesday_evening():
    network = load_network(EXAMPLE)
    now = at("2026-11-24T18:00")
    slots = {("STORE-LYON-PART-DIEU", s): 2 for s in network.slots("STORE-LYON-PART-DIEU", now, now + 3 * DAY_MS)}
    view = StaticView(
        1,
        (
            Stock("STORE-LYON-PART-DIEU", "PHONE-A", 1),
            Stock("STORE-VIENNE", "PHONE-B", 2),
            Stock("SUP-ACME", "PHONE-C", 50),
            Stock("SELLER-PHONEHUB", "PHONE-A", 12, offer=OfferTerms(12, 649.0, 3, 0)),
        ),
        slots,
    )
    request = PromiseRequest.of(
        {"PHONE-A": 1, "PHONE-B": 1, "PHONE-C": 1}, lat=45.7640, lon=4.8357, now=now, appointment=True
    )
    result = promise(network, view, request)
    best = result.together[0]
    assert best.store_id == "STORE-LYON-PART-DIEU"
    assert best.ready_at == at("2026-11-25T18:00")
    assert appointment_sku(best.appointment_at) == "appt:2026-11-25T17:00Z"
    shuttle = next(leg for leg in best.legs if leg.sku == "PHONE-B")
    assert shuttle.run_id == "SHUTTLE-VIENNE-LYON@2026-11-25T07:00"


# --- requests -------------------------------------------------------------------------


def test_a_request_merges_repeated_skus():
    request = PromiseRequest.of([("A", 1), ("B", 2), ("A", 2)], lat=0, lon=0, now=0)
    assert request.items == (("A", 3), ("B", 2))


@pytest.mark.parametrize(
    "items",
    [
        {},
        {f"SKU-{n}": 1 for n in range(MAX_BASKET + 1)},
        {"A": 0},
        {"A": 1.5},
        {"A": True},
        {"": 1},
        {"A|B": 1},
        {"appt:2026-11-25T17:00Z": 1},
    ],
)
def test_a_bad_basket_is_refused(items):
    with pytest.raises(ValueError, match=r"sku|qty"):
        PromiseRequest.of(items, lat=0, lon=0, now=0)


def test_a_basket_of_the_maximum_size_is_accepted():
    assert len(PromiseRequest.of({f"S{n}": 1 for n in range(MAX_BASKET)}, lat=0, lon=0, now=0).items) == MAX_BASKET


# --- properties -----------------------------------------------------------------------

ZONES = ("Europe/Paris", "Europe/London", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe")
SKUS = ("A", "B", "C")


@dataclass(frozen=True)
class HashedSlots:
    """A view whose slot capacity is a fixed function of the slot: none, full or free."""

    snapshot_id: int
    rows: tuple[Stock, ...]
    salt: int

    @cached_property
    def positions(self) -> StaticView:
        return StaticView(self.snapshot_id, self.rows)

    def stock(self, sku: str) -> tuple[Stock, ...]:
        return tuple(row for row in self.rows if row.sku == sku)

    def sku_atp(self, sku: str) -> tuple[Sequence[str], Sequence[int]]:
        return self.positions.sku_atp(sku)

    def stock_at(self, site_id: str, sku: str) -> Stock | None:
        return self.positions.stock_at(site_id, sku)

    def free_slot_capacity(self, store_id: str, slot_start: int) -> int | None:
        # crc32, not hash(): string hashes change between runs, and a failure must replay.
        pick = zlib.crc32(f"{store_id}/{slot_start}/{self.salt}".encode()) % 3
        return None if pick == 0 else pick - 1


@st.composite
def hours(draw: st.DrawFn) -> tuple[tuple[tuple[int, int], ...], ...]:
    week = []
    for _ in range(7):
        if draw(st.booleans()) and draw(st.booleans()):
            week.append(())
        else:
            lo = draw(st.integers(0, 20 * 60))
            week.append(((lo, draw(st.integers(lo + 30, 24 * 60))),))
    return tuple(week)


@st.composite
def networks(draw: st.DrawFn) -> Network:
    def place() -> tuple[float, float]:
        return draw(st.floats(45.4, 46.0)), draw(st.floats(4.5, 5.2))

    sites: list[Site] = []
    for n in range(draw(st.integers(1, 4))):
        lat, lon = place()
        book = Appointments(draw(st.sampled_from([15, 30, 60])), 2) if draw(st.booleans()) else None
        zone = draw(st.sampled_from(ZONES))
        prep = draw(st.integers(0, 120))
        sites.append(Site(f"S{n}", f"S{n}", SourceKind.STORE, lat, lon, zone, draw(hours()), prep, "Z", book))
    for kind, prefix, count in (
        (SourceKind.DC, "D", st.integers(0, 2)),
        (SourceKind.SUPPLIER, "P", st.integers(0, 2)),
        (SourceKind.SELLER, "M", st.integers(0, 1)),
    ):
        for n in range(draw(count)):
            lat, lon = place()
            sites.append(Site(f"{prefix}{n}", f"{prefix}{n}", kind, lat, lon, draw(st.sampled_from(ZONES))))
    stores = [s.id for s in sites if s.kind is SourceKind.STORE]
    origins = [s.id for s in sites if s.kind in (SourceKind.STORE, SourceKind.DC)]
    lanes = []
    for n in range(draw(st.integers(0, 5))):
        origin, destination = draw(st.sampled_from(origins)), draw(st.sampled_from(stores))
        if origin == destination:
            continue
        departures = draw(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 24 * 60 - 1)), max_size=6))
        lanes.append(
            Lane(
                f"L{n}",
                origin,
                destination,
                tuple(sorted(set(departures))),
                draw(st.integers(0, 600)),
                draw(st.integers(0, 240)),
            )
        )
    routes = []
    for supplier in (s.id for s in sites if s.kind is SourceKind.SUPPLIER):
        for store_id in draw(st.lists(st.sampled_from(stores), max_size=2, unique=True)):
            skus = draw(st.none() | st.frozensets(st.sampled_from(SKUS)))
            routes.append(SupplierRoute(supplier, store_id, draw(st.integers(0, 5)), skus))
    carriers = [
        CarrierRoute(s.id, draw(st.integers(0, 4)), draw(st.none() | st.floats(10, 300)))
        for s in sites
        if s.kind is SourceKind.DC and draw(st.booleans())
    ]
    return Network(tuple(sites), tuple(lanes), tuple(routes), tuple(carriers), horizon_days=draw(st.integers(1, 10)))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Network, HashedSlots, PromiseRequest]:
    network = draw(networks())
    rows = []
    for site in network.sites:
        for sku in SKUS:
            if draw(st.booleans()):
                offer = None
                if site.kind is SourceKind.SELLER and draw(st.booleans()):
                    lead = draw(st.none() | st.integers(0, 5))
                    offer = OfferTerms(5, draw(st.none() | st.floats(1, 999)), lead, 0)
                rows.append(Stock(site.id, sku, draw(st.integers(0, 9)), (), offer))
    view = HashedSlots(draw(st.integers(0, 10**9)), tuple(rows), draw(st.integers()))
    items = draw(st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 3)), min_size=1, max_size=4))
    now = draw(st.integers(at("2026-01-01T00:00"), at("2027-01-01T00:00")))
    request = PromiseRequest.of(
        items,
        lat=draw(st.floats(45.4, 46.0)),
        lon=draw(st.floats(4.5, 5.2)),
        now=now,
        radius_km=draw(st.none() | st.floats(5, 100)),
        appointment=draw(st.booleans()),
    )
    return network, view, request


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_promise_keeps_to_the_view_and_the_schedule(scenario):
    network, view, request = scenario
    result = promise(network, view, request)
    atp = {(row.site_id, row.sku): row.atp for row in view.rows}
    wanted = dict(request.items)
    assert result.snapshot_id == view.snapshot_id
    legs = [leg for plan in result.together for leg in plan.legs]
    for option in [*result.options, *legs]:
        assert option.qty == wanted[option.sku] <= atp[(option.source_id, option.sku)]
        assert option.available_at >= request.now
        if option.mode is FulfilmentMode.TRANSFER_TO_STORE:
            lane = network.lane(option.run_id.split("@")[0])
            (run,) = network.runs(lane, option.departs_at, option.departs_at + 1)
            assert run.run_id == option.run_id
            assert run.cutoff_at == option.pick_by >= request.now
            assert option.arrives_at == option.departs_at + lane.transit_minutes * MINUTE_MS
            assert option.available_at >= option.arrives_at
        if request.appointment and option.deliver_to != HOME:
            assert option.appointment_at is not None
            assert view.free_slot_capacity(option.deliver_to, option.appointment_at) > 0
    for option in result.options:
        if request.appointment and option.deliver_to != HOME:
            assert option.appointment_at >= option.available_at
    for plan in result.together:
        assert sorted(leg.sku for leg in plan.legs) == sorted(wanted)
        assert {leg.deliver_to for leg in plan.legs} == {plan.store_id}
        assert plan.ready_at == max(leg.available_at for leg in plan.legs)
        if request.appointment:
            assert plan.appointment_at >= plan.ready_at
    # Every source (a site with a position of the sku) that offers nothing says why.
    offered = {(o.source_id, o.sku) for o in result.options}
    explained = {(e.site_id, e.sku) for e in result.excluded}
    for sku in wanted:
        for stock in view.stock(sku):
            assert (stock.site_id, sku) in offered | explained, (stock.site_id, sku)
    assert all(e.detail for e in result.excluded)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(1, MAX_LIMIT))
def test_a_promise_asked_bounded_is_the_whole_promise_cut(scenario, limit):
    # Asked with a limit and without explain, the promise counts exclusions rather than
    # listing them: the answer must be the whole one cut, summary and examples included.
    network, view, request = scenario
    whole = promise(network, view, request)
    assert promise(network, view, request, limit=limit, explain=False) == bounded(whole, limit)
    assert promise(network, view, request, limit=limit) == bounded(whole, limit, explain=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks(), st.integers(at("2026-01-01T00:00"), at("2027-01-01T00:00")), st.data())
def test_the_memoised_schedules_are_the_networks_own(network, moment, data):
    for lane in network.lanes:
        later = moment + data.draw(st.integers(0, 3 * DAY_MS))
        assert next_run(network, lane, moment) == network.next_run(lane, moment)
        assert next_run(network, lane, later) == network.next_run(lane, later)
    for site in network.sites:
        days = data.draw(st.integers(1, network.horizon_days + 1))
        assert slots(network, site.id, moment, days) == network.slots(site.id, moment, moment + days * DAY_MS)
        for at in (moment, moment + data.draw(st.integers(0, 3 * DAY_MS)), moment - moment % DAY_MS + DAY_MS - 1):
            assert next_opening(network, site.id, at) == network.next_opening(site.id, at)
            lead = data.draw(st.integers(0, 12))
            assert add_days(network, site.id, at, lead) == network.add_days(site.id, at, lead)


_WEEKS = (
    (((9 * 60, 19 * 60),),) * 7,
    (((8 * 60, 12 * 60), (14 * 60, 20 * 60)),) * 6 + ((),),
    (((10 * 60, 18 * 60),),) * 5 + (((10 * 60, 13 * 60),), ()),
    None,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from([PARIS, LONDON, "America/New_York"]),
            st.sampled_from(_WEEKS),
            st.one_of(st.none(), st.tuples(st.sampled_from([15, 30, 60]), st.integers(1, 3))),
            st.sampled_from([None, 9 * 60 + 30]),
            st.sampled_from([None, 17 * 60, 20 * 60]),
        ),
        min_size=1,
        max_size=10,
    ),
    st.integers(at("2026-01-01T00:00"), at("2027-01-01T00:00")),
    st.data(),
)
def test_stores_sharing_a_calendar_share_their_kept_slots_and_each_gets_its_own(calendars, moment, data):
    # The slot windows are kept per calendar (zone, hours, slot length, appointment day), not
    # per store: stores that share one must get the same slots, the others their own, however
    # the memo was filled before (stores asked in a random order, at random days).
    sites = tuple(
        Site(
            f"S{n}", f"S{n}", SourceKind.STORE, 45.7, 4.8, tz, hours, 30, "Z",
            None if book is None else Appointments(book[0], book[1], opens, closes),
        )
        for n, (tz, hours, book, opens, closes) in enumerate(calendars)
    )  # fmt: skip
    network = Network(sites, (), (), (), horizon_days=data.draw(st.integers(1, 14)))
    for site in data.draw(st.permutations(sites)):
        at_ = moment + data.draw(st.integers(0, 6 * DAY_MS))
        days = data.draw(st.integers(1, network.horizon_days + 1))
        assert slots(network, site.id, at_, days) == network.slots(site.id, at_, at_ + days * DAY_MS)


@given(
    st.lists(st.tuples(st.sampled_from(["A", "B"]), st.sampled_from(list(FulfilmentMode))), max_size=40),
    st.integers(1, 12),
)
def test_the_best_options_keep_rank_order_and_the_best_of_each_skus_modes(keys, limit):
    ranked = [
        Option(f"O{i}", mode, sku, 1, f"S{i}", SourceKind.STORE, "S", 0, float(i)) for i, (sku, mode) in enumerate(keys)
    ]
    best = best_options(ranked, limit)
    assert len(best) == min(limit, len(ranked))
    assert [ranked.index(o) for o in best] == sorted(ranked.index(o) for o in best)  # still best first
    firsts = [o for i, o in enumerate(ranked) if (o.sku, o.mode) not in {(p.sku, p.mode) for p in ranked[:i]}]
    assert set(firsts[:limit]) <= set(best)  # each (sku, mode)'s best, as far as the limit allows
    if len(firsts) < limit:
        rest = [o for o in ranked if o not in firsts]
        assert set(rest[: limit - len(firsts)]) <= set(best)  # then the next best by rank


@st.composite
def tied_scenarios(draw: st.DrawFn) -> tuple[Network, HashedSlots, PromiseRequest]:
    """Many options tied on (available_at, mode, distance, price): the id alone orders them.

    Every store keeps the same hours, every lane departs at night and arrives before the
    stores open, and every supplier's route has the same lead: the transfers (and the
    dropships) into one store all become available at its opening, so only their ids
    decide which make the cut.
    """
    week = (((9 * 60, 19 * 60),),) * 7
    spots = [(45.70, 4.80), (45.72, 4.85), (45.75, 4.90)]
    sites = [
        Site(f"S{n}", f"S{n}", SourceKind.STORE, lat, lon, PARIS, week, 30, "Z", Appointments(60, 2))
        for n, (lat, lon) in enumerate(spots[: draw(st.integers(1, 3))])
    ]
    stores = [site.id for site in sites]
    sites += [Site(f"D{n}", f"D{n}", SourceKind.DC, 45.6, 4.7, PARIS) for n in range(draw(st.integers(1, 6)))]
    sites += [Site(f"P{n}", f"P{n}", SourceKind.SUPPLIER, 45.5, 4.6, PARIS) for n in range(draw(st.integers(0, 4)))]
    sites += [Site(f"M{n}", f"M{n}", SourceKind.SELLER, 45.5, 4.6, PARIS) for n in range(draw(st.integers(0, 3)))]
    nightly = tuple((day, 22 * 60) for day in range(7))
    lanes = tuple(
        Lane(f"L{origin.id}{store}", origin.id, store, nightly, 120, 60)
        for origin in sites
        if origin.kind in (SourceKind.DC, SourceKind.STORE)
        for store in stores
        if origin.id != store
    )
    routes = tuple(
        SupplierRoute(site.id, store, 2, None) for site in sites if site.kind is SourceKind.SUPPLIER for store in stores
    )
    carriers = tuple(CarrierRoute(site.id, 1, None) for site in sites if site.kind is SourceKind.DC)
    network = Network(tuple(sites), lanes, routes, carriers, horizon_days=7)
    rows = [
        Stock(site.id, sku, draw(st.integers(0, 3)), (), OfferTerms(5, 10.0, 2, 0))
        for site in network.sites
        for sku in SKUS
        if draw(st.integers(0, 4))  # most sites hold most skus
    ]
    view = HashedSlots(draw(st.integers(0, 10**9)), tuple(rows), draw(st.integers()))
    return network, view, march_basket(draw, 3, (45.72, 4.85), "2026-03-06T00:00", 50.0)


def march_basket(
    draw: st.DrawFn, most: int, where: tuple[float, float], until: str, radius_km: float
) -> PromiseRequest:
    """Up to `most` items of SKUS (1 or 2 units each) asked at `where` from 2 March 2026 (no change of
    UTC offset that week) until `until`, with or without an appointment."""
    items = draw(st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 2)), min_size=1, max_size=most))
    return PromiseRequest.of(
        items,
        lat=where[0],
        lon=where[1],
        now=draw(st.integers(at("2026-03-02T00:00"), at(until))),
        radius_km=radius_km,
        appointment=draw(st.booleans()),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(tied_scenarios(), scenarios()), st.integers(1, 12))
def test_ranking_first_and_building_only_the_kept_options_equals_building_all_then_sorting(scenario, limit):
    # Asked bounded, the promise ranks without ids and builds only the options it keeps
    # (ids only where keys tie at the cut); asked whole, it builds every option and sorts
    # by the full rank. On networks where most options tie, the two must agree.
    network, view, request = scenario
    whole = promise(network, view, request)
    ranked = sorted(whole.options, key=lambda o: (o.available_at, list(FulfilmentMode).index(o.mode), o.distance_km))
    assert [o.available_at for o in ranked] == [o.available_at for o in whole.options]
    assert promise(network, view, request, limit=limit, explain=False) == bounded(whole, limit)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    networks(),
    st.integers(at("2026-01-01T00:00"), at("2027-01-01T00:00")),
    st.lists(st.integers(-DAY_MS, 3 * DAY_MS), min_size=1, max_size=12),
)
def test_a_lanes_transfer_kept_between_cutoffs_is_the_next_run_and_the_opening_after_it(network, moment, steps):
    # Asked at instants before, on and after cut-offs, forwards and back: the kept answer
    # must be what the lane's next run and the destination's next opening give each time.
    def expected(lane: Lane, now: int) -> tuple[object, int | None] | None:
        run = network.next_run(lane, now)
        return None if run is None else (run, network.next_opening(lane.destination, run.arrives_at))

    for lane in network.lanes:
        for now in [moment + step for step in steps] + [moment]:
            assert transfer(network, lane, now) == expected(lane, now)
            run = network.next_run(lane, now)
            if run is not None:
                for edge in (run.cutoff_at - 1, run.cutoff_at, run.cutoff_at + 1):
                    assert transfer(network, lane, edge) == expected(lane, edge)


@st.composite
def crowded_scenarios(draw: st.DrawFn) -> tuple[Network, HashedSlots, PromiseRequest]:
    """Many sites left out for each reason (far stores, DCs without a lane, suppliers without a route,
    sites the network does not know, short ones), so that a bounded promise counts most of them."""
    base = draw(networks())
    extra = []
    for n in range(draw(st.integers(0, 24))):
        kind = draw(st.sampled_from([SourceKind.STORE, SourceKind.STORE, SourceKind.DC, SourceKind.SUPPLIER]))
        lat, lon = draw(st.floats(44.5, 47.0)), draw(st.floats(3.5, 6.5))
        extra.append(Site(f"X{n:02d}", f"X{n}", kind, lat, lon, draw(st.sampled_from(ZONES))))
    network = Network(sites=(*base.sites, *extra), lanes=base.lanes, dropship=base.dropship, carriers=base.carriers)
    rows = []
    for site_id in [*(site.id for site in network.sites), "U1", "U2", "U3", "U4", "U5"]:
        for sku in SKUS:
            if draw(st.integers(0, 3)):
                atp = draw(st.integers(0, 4))
                offer = OfferTerms(5, None, 2, 0) if site_id.startswith("M") and draw(st.booleans()) else None
                rows.append(Stock(site_id, sku, atp, (), offer))
    view = HashedSlots(draw(st.integers(0, 10**9)), tuple(rows), draw(st.integers()))
    items = draw(st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 3)), min_size=1, max_size=4))
    request = PromiseRequest.of(
        items,
        lat=draw(st.floats(45.4, 46.0)),
        lon=draw(st.floats(4.5, 5.2)),
        now=draw(st.integers(at("2026-01-01T00:00"), at("2027-01-01T00:00"))),
        radius_km=draw(st.none() | st.floats(5, 100)),
        appointment=draw(st.booleans()),
    )
    return network, view, request


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(crowded_scenarios(), scenarios()), st.integers(1, MAX_LIMIT))
def test_counting_the_left_out_sites_in_bulk_equals_walking_every_site(scenario, limit):
    # A bounded promise steps only through the sources and each reason's first examples and counts
    # the rest (ledger.promise._walk); explained, it steps through every site. Both must give the
    # same answer, the full list apart, and the bounded one is the whole one cut.
    network, view, request = scenario
    counted = promise(network, view, request, limit=limit, explain=False)
    walked = promise(network, view, request, limit=limit, explain=True)
    assert counted == replace(walked, excluded=())
    assert counted == bounded(promise(network, view, request), limit)


@dataclass(frozen=True)
class ColumnsAhead(HashedSlots):
    """A view whose ATP column runs ahead of some rows: a seller's column says more than its row (or
    has no row at all), as a view read between two refreshes would. The promise offers nothing then."""

    ahead: tuple[Stock, ...] = ()

    @cached_property
    def columns(self) -> StaticView:
        return StaticView(self.snapshot_id, self.ahead)

    def sku_atp(self, sku: str) -> tuple[Sequence[str], Sequence[int]]:
        return self.columns.sku_atp(sku)


@st.composite
def shared_sources(draw: st.DrawFn) -> tuple[Network, HashedSlots, PromiseRequest]:
    """Baskets whose skus share their sources: stores, DCs with lanes into several stores, suppliers
    whose routes accept every sku or a few, sellers offering some skus, each site holding each sku
    with a different ATP, so that a source has the units for one item of the basket and not another."""
    week = (((9 * 60, 19 * 60),),) * 6 + ((),)
    sites = [
        Site(
            f"S{n}", f"S{n}", SourceKind.STORE, 45.6 + 0.05 * n, 4.8, draw(st.sampled_from([PARIS, LONDON])),
            draw(st.sampled_from([week, None])), draw(st.integers(0, 90)), "Z",
            draw(st.sampled_from([None, Appointments(30, 2), Appointments(60, 1)])),
        )
        for n in range(draw(st.integers(1, 6)))
    ]  # fmt: skip
    stores = [site.id for site in sites]
    sites += [Site(f"D{n}", f"D{n}", SourceKind.DC, 45.5, 4.9, PARIS) for n in range(draw(st.integers(0, 5)))]
    sites += [Site(f"P{n}", f"P{n}", SourceKind.SUPPLIER, 45.4, 4.6, PARIS) for n in range(draw(st.integers(0, 3)))]
    sites += [Site(f"M{n}", f"M{n}", SourceKind.SELLER, 45.3, 4.5, PARIS) for n in range(draw(st.integers(0, 3)))]
    lanes = []
    for origin in (site for site in sites if site.kind in (SourceKind.STORE, SourceKind.DC)):
        for store in draw(st.lists(st.sampled_from(stores), max_size=4, unique=True)):
            if store != origin.id:
                departures = draw(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 24 * 60 - 1)), max_size=4))
                departures += [(day, 21 * 60) for day in range(7)] if draw(st.integers(0, 3)) else []
                cutoff, transit = draw(st.integers(0, 120)), draw(st.sampled_from([60, 600, 1500]))
                runs = tuple(sorted(set(departures)))
                lanes.append(Lane(f"L{origin.id}-{store}", origin.id, store, runs, transit, cutoff))
    routes = [
        SupplierRoute(site.id, store, draw(st.integers(0, 3)), draw(st.none() | st.frozensets(st.sampled_from(SKUS))))
        for site in sites
        if site.kind is SourceKind.SUPPLIER
        for store in draw(st.lists(st.sampled_from(stores), max_size=3, unique=True))
    ]
    carriers = [
        CarrierRoute(site.id, draw(st.integers(0, 3)), draw(st.none() | st.floats(5, 60)))
        for site in sites
        if site.kind is SourceKind.DC and draw(st.booleans())
    ]
    network = Network(tuple(sites), tuple(lanes), tuple(routes), tuple(carriers), horizon_days=draw(st.integers(2, 8)))
    rows, ahead = [], []
    for site in [*network.sites, Site("U0", "U0", SourceKind.STORE, 0, 0, PARIS)]:
        for sku in SKUS:
            if not draw(st.integers(0, 5)):
                continue  # no position
            offer = None
            if site.kind is SourceKind.SELLER and draw(st.booleans()):
                price, lead = draw(st.none() | st.sampled_from([4.5, 9.99])), draw(st.none() | st.integers(0, 4))
                offer = OfferTerms(5, price, lead, 0)
            row = Stock(site.id, sku, draw(st.integers(0, 4)), (), offer)
            ahead.append(row)
            lag = site.kind is SourceKind.SELLER and draw(st.integers(0, 3)) == 0
            if lag and draw(st.booleans()):
                continue  # the column has the position, the rows not yet
            rows.append(replace(row, atp=0) if lag else row)
    view = ColumnsAhead(draw(st.integers(0, 10**9)), tuple(rows), draw(st.integers()), tuple(ahead))
    radius = draw(st.sampled_from([10.0, 30.0, 80.0]))
    return network, view, march_basket(draw, 5, (45.7, 4.8), "2026-03-09T00:00", radius)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(shared_sources(), tied_scenarios(), crowded_scenarios()), st.integers(1, 15) | st.just(MAX_LIMIT))
def test_a_source_worked_out_once_for_the_basket_answers_as_each_item_building_its_own(scenario, limit):
    # Bounded and unexplained, a promise works out what each source offers once per request, as rows
    # shared by the basket's skus (a supplier's per sku when its routes choose skus, a seller's per
    # sku), books the slots there, and builds only the rows that can make the cut. Explained, or
    # whole, each item's sources are walked and every option built. Same options in the same order,
    # same plans, same totals, same summary of exclusions (counts and examples).
    network, view, request = scenario
    bulk = promise(network, view, request, limit=limit, explain=False)
    assert bulk == bounded(promise(network, view, request), limit)
    assert bulk == replace(promise(network, view, request, limit=limit, explain=True), excluded=())
