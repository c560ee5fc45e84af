"""The network file: loading with errors that name the key path, and the schedule helpers."""

from __future__ import annotations

import copy
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.network_file import load_network
from ledger.errors import ConfigError
from ledger.fulfilment import SourceKind
from ledger.network import DAY_MS, MINUTE_MS, Network, appointment_sku, appointment_slot, haversine_km
from ledger.network_schema import network_from_mapping, parse_network

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "network.toml"
PARIS, LONDON = "Europe/Paris", "Europe/London"


def at(local: str, tz: str = PARIS) -> int:
    """Epoch millis of a local wall-clock time, e.g. at("2026-11-24T18:00")."""
    moment = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(tz))
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def store(site_id: str, **extra: object) -> dict[str, object]:
    return {
        "id": site_id,
        "kind": "STORE",
        "lat": 45.76,
        "lon": 4.86,
        "tz": PARIS,
        "hours": {"mon-sat": "09:30-20:00", "sun": "closed"},
        **extra,
    }


BASE: dict[str, object] = {
    "sites": [
        store("S1", appointments={"slot_minutes": 30, "capacity": 2, "from": "10:00", "until": "19:00"}),
        store("S2", lat=45.52, hours={"mon-fri": ["09:30-12:30", "14:00-19:00"], "sat": "10:00-18:00"}),
        {"id": "DC", "kind": "DC", "lat": 45.64, "lon": 5.11, "tz": PARIS},
        {"id": "DC-UK", "kind": "DC", "lat": 51.5, "lon": -0.12, "tz": LONDON},
        {"id": "SUP", "kind": "SUPPLIER", "lat": 48.9, "lon": 2.35, "tz": PARIS},
    ],
    "lanes": [
        {
            "id": "S2-S1",
            "origin": "S2",
            "destination": "S1",
            "days": ["mon-sat"],
            "departures": ["07:00"],
            "transit_minutes": 90,
            "cutoff_minutes": 60,
        },
        {
            "id": "DC-S1",
            "origin": "DC",
            "destination": "S1",
            "days": ["mon", "tue-sun"],
            "departures": ["07:00", {"at": "15:00", "days": ["sat"]}],
            "transit_minutes": 60,
            "cutoff_minutes": 0,
        },
        {
            "id": "UK-S1",
            "origin": "DC-UK",
            "destination": "S1",
            "days": ["mon-fri"],
            "departures": ["07:00"],
            "transit_minutes": 120,
            "cutoff_minutes": 30,
        },
    ],
    "dropship": [{"supplier": "SUP", "store": "S1", "lead_days": 1, "skus": "*"}],
    "carriers": [{"dc": "DC", "lead_days": 2}],
}


def net(**changes: object) -> Network:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return network_from_mapping(data, origin="test.toml")


def with_change(path: tuple[object, ...], value: object) -> dict[str, object]:
    data = copy.deepcopy(BASE)
    target: object = data
    for key in path[:-1]:
        target = target[key]  # type: ignore[index]
    target[path[-1]] = value  # type: ignore[index]
    return data


# --- loading -----------------------------------------------------------------------


def test_the_demo_network_loads_with_the_story_sites():
    network = load_network(EXAMPLE)
    kinds = {site.id: site.kind for site in network.sites}
    assert kinds["STORE-LYON-PART-DIEU"] is SourceKind.STORE
    assert kinds["STORE-VIENNE"] is SourceKind.STORE
    assert kinds["DC-LYON-EST"] is SourceKind.DC
    assert kinds["SUP-ACME"] is SourceKind.SUPPLIER
    assert kinds["SELLER-PHONEHUB"] is SourceKind.SELLER
    assert network.carrier("DC-LYON-EST").lead_days == 2
    (route,) = [r for r in network.routes_from("SUP-ACME") if r.store == "STORE-LYON-PART-DIEU"]
    assert route.accepts("PHONE-C")
    assert route.lead_days == 1
    book = network.site("STORE-LYON-PART-DIEU").appointments
    assert (book.slot_minutes, book.capacity, book.opens, book.closes) == (30, 2, 10 * 60, 19 * 60)


def test_the_complete_example_in_the_docs_loads():
    docs = (EXAMPLE.parents[1] / "docs" / "network.md").read_text()
    blocks = docs.split("```toml\n")[1:]
    complete = [block.split("```")[0] for block in blocks if block.startswith("# complete")]
    assert len(complete) == 1
    network = network_from_mapping(tomllib.loads(complete[0]), origin="docs/network.md")
    assert network.lane("SHUTTLE-VIENNE-LYON").cutoff_minutes == 60


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("lanes", 2, "departures", 0), "7h00", 'lanes[2].departures[0] (test.toml): expected "HH:MM"'),
        (("lanes", 0, "departures", 0), "24:00", "lanes[0].departures[0]"),
        (("lanes", 0, "days", 0), "monday", "lanes[0].days[0] (test.toml): expected a weekday"),
        (("lanes", 0, "days", 0), "sat-mon", "lanes[0].days[0]"),
        (("lanes", 1, "departures", 1, "days"), [], "lanes[1].departures[1].days"),
        (("lanes", 0, "origin"), "NOWHERE", "lanes[0].origin (test.toml): expected the id of a site"),
        (("lanes", 0, "origin"), "SUP", "lanes[0].origin (test.toml): expected a STORE or DC site"),
        (("lanes", 0, "destination"), "S2", "lanes[0].destination"),
        (("lanes", 0, "transit_minutes"), -5, "lanes[0].transit_minutes"),
        (("lanes", 0, "speed"), 3, "lanes[0].speed (test.toml): expected no such key"),
        (("sites", 0, "tz"), "Europe/Lyon", "sites[0].tz (test.toml): expected an IANA time zone"),
        (("sites", 0, "kind"), "SHOP", "sites[0].kind"),
        (("sites", 0, "lat"), 91, "sites[0].lat"),
        (("sites", 0, "lat"), True, "sites[0].lat"),
        (("sites", 1, "id"), "S1", "sites[1].id (test.toml): expected a unique site id"),
        (("sites", 0, "id"), "A|B", "sites[0].id"),
        (("sites", 0, "hours", "sun"), "10:00-09:00", "sites[0].hours.sun"),
        (("sites", 0, "hours", "mon"), "10:00-19:00", "sites[0].hours.mon (test.toml): expected each weekday once"),
        (("sites", 1, "hours", "mon-fri"), ["09:00-13:00", "12:00-19:00"], "sites[1].hours.mon-fri"),
        (("sites", 0, "appointments", "capacity"), 0, "sites[0].appointments.capacity"),
        (("sites", 0, "appointments", "until"), "09:00", "sites[0].appointments.until"),
        (("sites", 2, "appointments"), {"slot_minutes": 30, "capacity": 1}, "sites[2].appointments"),
        (("dropship", 0, "skus"), "PHONE-C", 'dropship[0].skus (test.toml): expected a list of skus, or "*"'),
        (("dropship", 0, "store"), "DC", "dropship[0].store (test.toml): expected a STORE site"),
        (("carriers", 0, "dc"), "S1", "carriers[0].dc"),
        (("carriers", 0, "max_km"), 0, "carriers[0].max_km"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key_path(path, value, message):
    with pytest.raises(ConfigError) as caught:
        network_from_mapping(with_change(path, value), origin="test.toml")
    assert message in str(caught.value)


def test_a_store_without_opening_hours_is_refused():
    data = copy.deepcopy(BASE)
    del data["sites"][0]["hours"]  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"sites\[0\]\.hours .*opening hours for a STORE"):
        network_from_mapping(data, origin="test.toml")


def test_a_plain_departure_needs_the_lane_days():
    data = copy.deepcopy(BASE)
    del data["lanes"][0]["days"]  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"lanes\[0\]\.days .*weekdays of the departure at 07:00"):
        network_from_mapping(data, origin="test.toml")


def test_an_unknown_section_is_refused():
    with pytest.raises(ConfigError, match=r"shuttles .*no such key"):
        network_from_mapping({**BASE, "shuttles": []})


def test_a_missing_or_invalid_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the network file"):
        load_network(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[sites]\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_network(bad)


def test_the_text_of_a_network_parses_without_a_file_to_the_same_network():
    text = EXAMPLE.read_text()
    assert parse_network(text, origin="example") == load_network(EXAMPLE) == parse_network(tomllib.loads(text))
    with pytest.raises(ConfigError, match=r"^pasted is not valid TOML"):
        parse_network("[[sites]\n", origin="pasted")


def test_promise_defaults_come_from_the_promise_table():
    network = net(promise={"radius_km": 30, "horizon_days": 7, "seller_lead_days": 5})
    assert (network.radius_km, network.horizon_days, network.seller_lead_days) == (30.0, 7, 5)
    with pytest.raises(ConfigError, match=r"promise\.radius_km"):
        net(promise={"radius_km": 0})


def test_departure_days_merge_the_lane_days_and_the_table_entries():
    lane = net().lane("DC-S1")
    assert (5, 15 * 60) in lane.departures  # the Saturday extra
    assert {weekday for weekday, minute in lane.departures if minute == 7 * 60} == set(range(7))


# --- shuttle runs ------------------------------------------------------------------


def test_a_unit_ready_before_the_cutoff_rides_that_morning_departure():
    network = net()
    run = network.next_run(network.lane("S2-S1"), at("2026-11-25T05:59:59.999"))
    assert run.run_id == "S2-S1@2026-11-25T07:00"
    assert run.departs_at == at("2026-11-25T07:00")
    assert run.cutoff_at == at("2026-11-25T06:00")
    assert run.arrives_at == at("2026-11-25T08:30")


def test_a_unit_ready_exactly_at_the_cutoff_still_rides():
    network = net()
    run = network.next_run(network.lane("S2-S1"), at("2026-11-25T06:00"))
    assert run.departs_at == at("2026-11-25T07:00")


def test_a_unit_ready_just_after_the_cutoff_rides_the_next_day():
    network = net()
    run = network.next_run(network.lane("S2-S1"), at("2026-11-25T06:00:00.001"))
    assert run.run_id == "S2-S1@2026-11-26T07:00"


def test_no_sunday_departure_so_saturday_after_the_cutoff_waits_for_monday():
    network = net()
    run = network.next_run(network.lane("S2-S1"), at("2026-11-28T06:30"))  # a Saturday
    assert run.run_id == "S2-S1@2026-11-30T07:00"


def test_departures_keep_their_local_time_across_the_autumn_dst_change():
    network = net()
    lane = network.lane("DC-S1")
    runs = network.runs(lane, at("2026-10-24T00:00"), at("2026-10-27T00:00"))
    departures = [run.departs_at for run in runs]
    assert at("2026-10-24T07:00") in departures
    assert at("2026-10-25T07:00") in departures
    # Saturday (CEST, UTC+2) leaves at 05:00Z; Sunday (CET, UTC+1) at 06:00Z.
    assert at("2026-10-24T05:00", "UTC") in departures
    assert at("2026-10-25T06:00", "UTC") in departures
    assert departures == sorted(departures)


def test_a_departure_in_the_spring_dst_gap_leaves_an_hour_later_under_its_scheduled_name():
    lanes = copy.deepcopy(BASE["lanes"])
    lanes[1]["departures"] = ["02:30"]  # type: ignore[index]
    network = net(lanes=lanes)
    run = network.next_run(network.lane("DC-S1"), at("2026-03-29T00:00"))
    assert run.run_id == "DC-S1@2026-03-29T02:30"
    assert run.departs_at == at("2026-03-29T01:30", "UTC") == at("2026-03-29T03:30")


def test_a_lane_from_another_time_zone_departs_on_the_origin_clock():
    network = net()
    run = network.next_run(network.lane("UK-S1"), at("2026-11-25T00:00", LONDON))
    assert run.departs_at == at("2026-11-25T07:00", LONDON)  # 08:00 in Paris
    assert run.run_id == "UK-S1@2026-11-25T07:00"
    assert run.arrives_at == at("2026-11-25T10:00")  # 09:00 in London


def test_no_departure_within_the_horizon_gives_none():
    network = net(promise={"horizon_days": 1})
    lane = network.lane("UK-S1")  # weekdays only
    assert network.next_run(lane, at("2026-11-28T10:00", LONDON)) is None  # Saturday: Monday is beyond a day


# --- opening hours and slots --------------------------------------------------------


@pytest.mark.parametrize(
    ("ready", "expected"),
    [
        ("2026-11-24T08:00", "2026-11-24T09:30"),  # before opening
        ("2026-11-24T12:00", "2026-11-24T12:00"),  # open
        ("2026-11-24T13:00", "2026-11-24T14:00"),  # lunch break
        ("2026-11-24T19:30", "2026-11-25T09:30"),  # after closing
        ("2026-11-28T18:30", "2026-11-30T09:30"),  # Saturday evening: closed on Sunday
    ],
)
def test_the_next_opening_follows_the_store_hours(ready, expected):
    assert net().next_opening("S2", at(ready)) == at(expected)


def test_a_site_without_hours_is_always_open():
    assert net().next_opening("DC", at("2026-11-29T03:00")) == at("2026-11-29T03:00")


def test_a_store_that_never_opens_within_the_horizon_has_no_next_opening():
    sites = copy.deepcopy(BASE["sites"])
    sites[1]["hours"] = {"mon-sun": "closed"}  # type: ignore[index]
    assert net(sites=sites).next_opening("S2", at("2026-11-24T08:00")) is None


def test_slots_lie_within_the_appointment_window_on_open_days():
    network = net()
    slots = network.slots("S1", at("2026-11-28T00:00"), at("2026-11-30T00:00"))  # Saturday and Sunday
    assert len(slots) == 18
    assert slots[0] == at("2026-11-28T10:00")
    assert slots[-1] == at("2026-11-28T18:30")
    assert network.slot_end("S1", slots[-1]) == at("2026-11-28T19:00")


def test_slots_on_the_dst_day_are_at_the_local_times():
    network = net()
    slots = network.slots("S1", at("2026-03-28T00:00"), at("2026-03-31T00:00"))
    assert at("2026-03-28T10:00") in slots
    assert at("2026-03-30T10:00") in slots
    assert at("2026-03-28T09:00", "UTC") in slots  # CET
    assert at("2026-03-30T08:00", "UTC") in slots  # CEST


def test_a_store_without_appointments_has_no_slots():
    assert net().slots("S2", at("2026-11-24T00:00"), at("2026-11-25T00:00")) == ()


def test_adding_days_keeps_the_wall_clock_across_dst():
    network = net()
    assert network.add_days("S1", at("2026-10-24T18:00"), 2) == at("2026-10-26T18:00")
    assert at("2026-10-26T18:00") - at("2026-10-24T18:00") == 2 * DAY_MS + 60 * MINUTE_MS


# --- appointment skus and distances -------------------------------------------------


def test_an_appointment_sku_names_the_slot_in_utc():
    assert appointment_sku(at("2026-11-25T18:00")) == "appt:2026-11-25T17:00Z"
    assert appointment_slot("appt:2026-11-25T17:00Z") == at("2026-11-25T18:00")


@given(st.integers(min_value=0, max_value=4_000_000_000).map(lambda minutes: minutes * MINUTE_MS))
def test_appointment_sku_round_trips_and_never_contains_the_key_separator(slot):
    sku = appointment_sku(slot)
    assert "|" not in sku
    assert appointment_slot(sku) == slot


@pytest.mark.parametrize("sku", ["PHONE-A", "appt:", "appt:2026-13-01T00:00Z", "appt:2026-11-25T17:00"])
def test_a_product_sku_is_not_an_appointment(sku):
    assert appointment_slot(sku) is None


def test_a_slot_off_the_minute_has_no_sku():
    with pytest.raises(ValueError, match="whole minute"):
        appointment_sku(at("2026-11-25T18:00") + 1)


def test_haversine_distance_between_lyon_and_vienne():
    assert haversine_km(45.7606, 4.8598, 45.5255, 4.8744) == pytest.approx(26.2, abs=0.3)
    assert haversine_km(45.0, 4.0, 45.0, 4.0) == 0.0


@given(
    st.floats(-90, 90),
    st.floats(-180, 180),
    st.floats(-90, 90),
    st.floats(-180, 180),
)
def test_haversine_is_symmetric_and_bounded(lat1, lon1, lat2, lon2):
    there = haversine_km(lat1, lon1, lat2, lon2)
    assert there == pytest.approx(haversine_km(lat2, lon2, lat1, lon1), abs=1e-6)
    assert 0 <= there <= 20_016


def test_the_example_file_is_valid_toml_with_only_known_sections():
    data = tomllib.loads(EXAMPLE.read_text())
    assert set(data) <= {"promise", "sites", "lanes", "dropship", "carriers"}
