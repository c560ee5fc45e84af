"""The retailer simulator: deterministic, resumable, and true to the event contract."""

from __future__ import annotations

import ast
import copy
import dataclasses
import pickle
import re
import sys
import tomllib
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simulator
from adapters.network_file import load_network
from ledger.contract import event_to_record, validate
from ledger.dead_letter import DeadLetter
from ledger.errors import ConfigError
from ledger.events import EventType, InventoryEvent
from ledger.network import Network, haversine_km
from ledger.network_schema import network_from_mapping
from simulator import EventMix, RetailerSimulator, SimConfig, SimState, Site, SiteKind
from simulator.network import network_toml, simulated_network
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.unit

T = EventType
MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
T0 = SimConfig().start_at

Call = tuple[int, list[InventoryEvent]]
"""One call to `next_events`: the clock it was given and what it returned."""

NEEDS_REF = {
    T.RESERVATION_REQUESTED,
    T.RESERVATION_RELEASED,
    T.RESERVATION_FULFILLED,
    T.TRANSFER_PICKED,
    T.SHUTTLE_LOADED,
    T.SHUTTLE_ARRIVED,
    T.DROPSHIP_SHIPPED,
    T.DROPSHIP_RECEIVED,
}
NEEDS_DESTINATION = {T.TRANSFER_PICKED, T.SHUTTLE_LOADED, T.DROPSHIP_SHIPPED}
NEEDS_ETA = {T.SHUTTLE_LOADED, T.DROPSHIP_SHIPPED}
SOURCES = {"POS", "WMS", "TMS", "ERP", "SUPPLIER", "MARKETPLACE", "OMS"}
_D, _S, _SUP, _SEL = SiteKind.DC, SiteKind.STORE, SiteKind.SUPPLIER, SiteKind.SELLER
SITE_KINDS = {
    T.RECEIVED: {_D, _S, _SUP},
    T.RETURNED: {_S},
    T.ADJUSTED: {_D, _S},
    T.SOLD: {_S},
    T.COUNTED: {_D, _S},
    T.RESERVATION_REQUESTED: {_S},
    T.RESERVATION_RELEASED: {_S},
    T.RESERVATION_FULFILLED: {_S},
    T.TRANSFER_PICKED: {_D, _S},
    T.SHUTTLE_LOADED: {_D, _S},
    T.SHUTTLE_ARRIVED: {_S},
    T.DROPSHIP_SHIPPED: {_SUP},
    T.DROPSHIP_RECEIVED: {_S},
    T.OFFER_UPDATED: {_SEL},
}


def drive(sim: RetailerSimulator, *, calls: int, per_call: int, step_ms: int, start: int = T0) -> list[Call]:
    """Call the simulator `calls` times for `per_call` events, moving the clock `step_ms` after each."""
    out = []
    for i in range(calls):
        now = start + i * step_ms
        out.append((now, sim.next_events(now, per_call)))
    return out


def flat(calls: Iterable[Call]) -> list[InventoryEvent]:
    return [event for _, events in calls for event in events]


def contract_problems(event: InventoryEvent, kinds: dict[str, SiteKind]) -> list[str]:
    """What is wrong with one event against the contract (an empty list when nothing is)."""
    problems = []
    t = event.type
    if t is T.ADJUSTED:
        if event.qty == 0:
            problems.append("ADJUSTED with qty 0")
    elif t in (T.COUNTED, T.OFFER_UPDATED):
        if event.qty < 0:
            problems.append(f"negative qty {event.qty}")
    elif event.qty <= 0:
        problems.append(f"qty {event.qty} not > 0")
    if event.ref is None and t in NEEDS_REF:
        problems.append("no ref")
    if (event.to_site_id is not None) != (t in NEEDS_DESTINATION):
        problems.append(f"to_site_id {event.to_site_id!r}")
    if event.to_site_id is not None:
        if event.to_site_id == event.site_id:
            problems.append("to_site_id == site_id")
        if kinds.get(event.to_site_id) is not SiteKind.STORE:
            problems.append(f"destination {event.to_site_id} is not a store")
    if (event.eta is not None) != (t in NEEDS_ETA) or (event.eta is not None and event.eta <= event.occurred_at):
        problems.append(f"eta {event.eta}")
    if t is T.RESERVATION_REQUESTED:
        if event.expires_at is None or event.expires_at <= event.occurred_at:
            problems.append(f"expires_at {event.expires_at}")
    elif event.expires_at is not None:
        problems.append("expires_at on a non-request")
    if t is T.OFFER_UPDATED:
        if (
            event.price is None
            or event.price < 0
            or event.lead_time_days is None
            or not 0 <= event.lead_time_days <= 365
        ):
            problems.append(f"offer terms {event.price} / {event.lead_time_days}")
    elif event.price is not None or event.lead_time_days is not None:
        problems.append("offer terms on a non-offer")
    if kinds.get(event.site_id) not in SITE_KINDS[t]:
        problems.append(f"{t.value} at {event.site_id}")
    if not re.fullmatch(r"SKU-\d{5}", event.sku):
        problems.append(f"sku {event.sku!r}")
    if event.source not in SOURCES:
        problems.append(f"source {event.source!r}")
    if event.origin != "sim":
        problems.append(f"origin {event.origin!r}")
    return [f"{event.event_id} {t.value}: {p}" for p in problems]


def site_kinds(sim: RetailerSimulator) -> dict[str, SiteKind]:
    return {site.site_id: site.kind for site in sim.sites()}


# -- a long shared stream --------------------------------------------------------------------------------------------

STREAM_CONFIG = SimConfig(seed=42)
SIXTEEN_HOURS = {"calls": 200, "per_call": 500, "step_ms": 5 * MINUTE}  # 100,000 events
FOUR_DAYS = {"calls": 96, "per_call": 200, "step_ms": HOUR}  # longer than any story (a dropship: < 3.25 days)


@pytest.fixture(scope="module")
def stream() -> tuple[list[Call], list[Call], RetailerSimulator]:
    """100,000 events over 16 h of clock, then four days of a slow trickle so open stories end."""
    sim = RetailerSimulator(STREAM_CONFIG)
    busy = drive(sim, **SIXTEEN_HOURS)
    calm = drive(sim, **FOUR_DAYS, start=busy[-1][0] + HOUR)
    return busy, calm, sim


@pytest.fixture(scope="module")
def events(stream: tuple[list[Call], list[Call], RetailerSimulator]) -> list[InventoryEvent]:
    busy, calm, _ = stream
    return flat(busy) + flat(calm)


def by_ref(events: Sequence[InventoryEvent]) -> dict[str, list[tuple[int, InventoryEvent]]]:
    """Each ref's events with their positions in the stream."""
    out: dict[str, list[tuple[int, InventoryEvent]]] = {}
    for i, event in enumerate(events):
        if event.ref is not None:
            out.setdefault(event.ref, []).append((i, event))
    return out


# -- determinism and resumption --------------------------------------------------------------------------------------

# Uneven batches, a call for nothing, a clock that stalls, then jumps by hours.
CALLS = [(T0 + i * 7 * MINUTE + (3 * HOUR if i > 40 else 0), 0 if i == 5 else 150 + 37 * (i % 5)) for i in range(80)]
CALLS[20] = (CALLS[19][0], 300)


def run_calls(sim: RetailerSimulator, calls: Sequence[tuple[int, int]]) -> list[InventoryEvent]:
    return [event for now, n in calls for event in sim.next_events(now, n)]


def test_the_same_seed_gives_the_same_stream() -> None:
    first = run_calls(RetailerSimulator(SimConfig(seed=7)), CALLS)
    second = run_calls(RetailerSimulator(SimConfig(seed=7)), CALLS)

    assert len(first) == sum(n for _, n in CALLS)
    assert first == second


def test_another_seed_gives_another_stream() -> None:
    first = run_calls(RetailerSimulator(SimConfig(seed=7)), CALLS)
    second = run_calls(RetailerSimulator(SimConfig(seed=8)), CALLS)

    assert [(e.type, e.site_id, e.sku, e.qty) for e in first] != [(e.type, e.site_id, e.sku, e.qty) for e in second]


@pytest.mark.parametrize("cut", [1, 12, 33, 41, 60, 79])
def test_a_resumed_simulator_continues_the_uninterrupted_stream(cut: int) -> None:
    config = SimConfig(seed=11, stores=6, skus=40)
    uninterrupted = run_calls(RetailerSimulator(config), CALLS)

    before = RetailerSimulator(config)
    head = run_calls(before, CALLS[:cut])
    state = pickle.loads(pickle.dumps(before.state()))  # as a Bytewax snapshot travels
    tail = run_calls(RetailerSimulator.resume(config, state), CALLS[cut:])

    assert head + tail == uninterrupted
    if cut >= 33:
        assert state.pending, "the cut should fall while stories are open"


def test_taking_a_state_does_not_change_the_stream() -> None:
    config = SimConfig(seed=5)
    plain = run_calls(RetailerSimulator(config), CALLS)
    observed = RetailerSimulator(config)
    with_states = []
    for now, n in CALLS:
        observed.state()
        with_states.extend(observed.next_events(now, n))

    assert with_states == plain


def test_a_state_is_an_immutable_value_that_survives_pickling() -> None:
    sim = RetailerSimulator(SimConfig(seed=3))
    run_calls(sim, CALLS[:50])
    state = sim.state()
    frozen_copy = pickle.loads(pickle.dumps(state))
    run_calls(sim, CALLS[50:])  # the simulator runs on; the state it gave must not move

    assert state == frozen_copy
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.counter = 0  # type: ignore[misc]

    def deeply_immutable(value: object) -> bool:
        if isinstance(value, tuple):
            return all(deeply_immutable(v) for v in value)
        return value is None or isinstance(value, int | float | str)

    assert all(deeply_immutable(getattr(state, f.name)) for f in dataclasses.fields(SimState))


def test_resuming_with_another_network_raises_config_error_naming_the_field() -> None:
    state = RetailerSimulator(SimConfig(seed=3, stores=20)).state()

    with pytest.raises(
        ConfigError, match=r"SimConfig\.stores: the state was taken with stores=20, the config has stores=21"
    ):
        RetailerSimulator.resume(SimConfig(seed=3, stores=21), state)
    with pytest.raises(ConfigError, match=r"SimConfig\.seed"):
        RetailerSimulator.resume(SimConfig(seed=4, stores=20), state)


# -- stories ---------------------------------------------------------------------------------------------------------


def test_every_shuttle_arrival_follows_its_load_which_follows_its_pick_with_the_same_ref_and_qty(
    events: list[InventoryEvent],
) -> None:
    stories = by_ref(events)
    arrivals = [e for e in events if e.type is T.SHUTTLE_ARRIVED]

    assert len(arrivals) > 500
    for arrival in arrivals:
        story = stories[arrival.ref or ""]
        assert [e.type for _, e in story] == [T.TRANSFER_PICKED, T.SHUTTLE_LOADED, T.SHUTTLE_ARRIVED], arrival
        (_, pick), (_, load), _ = story
        assert pick.qty == load.qty == arrival.qty
        assert pick.sku == load.sku == arrival.sku
        assert pick.site_id == load.site_id
        assert pick.to_site_id == load.to_site_id == arrival.site_id
        assert pick.occurred_at < load.occurred_at < arrival.occurred_at
        assert load.eta is not None
        assert load.eta > load.occurred_at


def test_every_picked_transfer_is_eventually_loaded_then_arrives(
    stream: tuple[list[Call], list[Call], RetailerSimulator], events: list[InventoryEvent]
) -> None:
    busy, _, _ = stream
    stories = by_ref(events)
    picks = [e for e in flat(busy) if e.type is T.TRANSFER_PICKED]

    assert len(picks) > 500
    for pick in picks:
        kinds = [e.type for _, e in stories[pick.ref or ""]]
        assert kinds == [T.TRANSFER_PICKED, T.SHUTTLE_LOADED, T.SHUTTLE_ARRIVED], pick


def test_every_reservation_ends_once_after_its_request_and_before_it_expires(
    stream: tuple[list[Call], list[Call], RetailerSimulator], events: list[InventoryEvent]
) -> None:
    busy, _, _ = stream
    stories = by_ref(events)
    requests = [e for e in flat(busy) if e.type is T.RESERVATION_REQUESTED]
    outcomes: Counter[str] = Counter()

    for request in requests:
        story = [e for _, e in stories[request.ref or ""]]
        assert story[0] == request
        assert len(story) <= 2, story
        if len(story) == 1:
            outcomes["left to expire"] += 1
            continue
        ending = story[1]
        assert ending.type in (T.RESERVATION_FULFILLED, T.RESERVATION_RELEASED)
        assert (ending.site_id, ending.sku, ending.qty) == (request.site_id, request.sku, request.qty)
        assert request.expires_at is not None
        assert request.occurred_at < ending.occurred_at < request.expires_at
        outcomes[ending.type.value] += 1

    # Most are collected, some released, some left to expire.
    assert outcomes["RESERVATION_FULFILLED"] > 0.6 * len(requests)
    assert 0 < outcomes["RESERVATION_RELEASED"] < outcomes["RESERVATION_FULFILLED"]
    assert outcomes["left to expire"] > 0


def test_every_dropship_is_received_at_its_store_after_it_ships(
    stream: tuple[list[Call], list[Call], RetailerSimulator], events: list[InventoryEvent]
) -> None:
    busy, _, _ = stream
    stories = by_ref(events)
    shipments = [e for e in flat(busy) if e.type is T.DROPSHIP_SHIPPED]

    assert len(shipments) > 100
    for shipment in shipments:
        story = [e for _, e in stories[shipment.ref or ""]]
        assert [e.type for e in story] == [T.DROPSHIP_SHIPPED, T.DROPSHIP_RECEIVED], story
        received = story[1]
        assert (received.site_id, received.sku, received.qty) == (shipment.to_site_id, shipment.sku, shipment.qty)
        assert received.occurred_at > shipment.occurred_at


def test_a_story_continues_only_in_a_later_call_once_the_clock_has_moved() -> None:
    sim = RetailerSimulator(SimConfig(seed=9))
    frozen = drive(sim, calls=100, per_call=1_000, step_ms=0)  # the clock never moves
    continuing = {
        T.SHUTTLE_LOADED,
        T.SHUTTLE_ARRIVED,
        T.RESERVATION_FULFILLED,
        T.RESERVATION_RELEASED,
        T.DROPSHIP_RECEIVED,
    }

    assert not [e for e in flat(frozen) if e.type in continuing]

    moving = drive(sim, calls=300, per_call=300, step_ms=10 * MINUTE, start=T0 + MINUTE)
    for _, batch in moving:
        started_here = {
            e.ref for e in batch if e.type in (T.TRANSFER_PICKED, T.RESERVATION_REQUESTED, T.DROPSHIP_SHIPPED)
        }
        assert not [e for e in batch if e.type in continuing and e.ref in started_here]
    assert {e.type for e in flat(moving)} >= continuing


# -- the contract ----------------------------------------------------------------------------------------------------


def test_every_event_follows_the_contract_rules(
    stream: tuple[list[Call], list[Call], RetailerSimulator], events: list[InventoryEvent]
) -> None:
    _, _, sim = stream
    kinds = site_kinds(sim)
    problems = [p for event in events for p in contract_problems(event, kinds)]

    assert problems == []
    assert {e.type for e in events} == set(EventType)


def test_every_event_passes_the_ledgers_own_validation(events: list[InventoryEvent]) -> None:
    refused = []
    for event in events[::7]:
        result = validate(event_to_record(event), origin="sim", raw=b"")
        if isinstance(result, DeadLetter):
            refused.append(result)

    assert refused == []


def test_events_occur_at_most_jitter_before_the_callers_clock(
    stream: tuple[list[Call], list[Call], RetailerSimulator],
) -> None:
    busy, calm, _ = stream

    for now, batch in busy + calm:
        assert all(now - STREAM_CONFIG.jitter_ms <= e.occurred_at <= now for e in batch)


def test_a_clock_going_back_is_read_as_the_last_one() -> None:
    sim = RetailerSimulator(SimConfig(seed=1, jitter_ms=0))
    sim.next_events(T0 + HOUR, 10)

    assert {e.occurred_at for e in sim.next_events(T0, 10)} == {T0 + HOUR}
    assert sim.state().clock == T0 + HOUR


def test_event_ids_are_unique_over_100000_events(events: list[InventoryEvent]) -> None:
    ids = [e.event_id for e in events[:100_000]]

    assert len(ids) == 100_000
    assert len(set(ids)) == 100_000
    assert ids[0] == "sim-42-1"
    assert ids[-1] == "sim-42-100000"


def test_a_next_events_call_for_nothing_returns_nothing_and_a_negative_count_is_refused() -> None:
    sim = RetailerSimulator(SimConfig())

    assert sim.next_events(T0, 0) == []
    with pytest.raises(ValueError, match="n >= 0"):
        sim.next_events(T0, -1)


# -- realism ---------------------------------------------------------------------------------------------------------


def fold_on_hand(events: Iterable[InventoryEvent]) -> Iterable[tuple[InventoryEvent, int, int]]:
    """Each stock-moving event with on hand at its position before and after, as the contract defines it."""
    on_hand: Counter[tuple[str, str]] = Counter()
    for e in events:
        t = e.type
        if t in (T.RECEIVED, T.RETURNED, T.ADJUSTED, T.SHUTTLE_ARRIVED, T.DROPSHIP_RECEIVED):
            delta = e.qty
        elif t in (T.SOLD, T.RESERVATION_FULFILLED, T.SHUTTLE_LOADED, T.DROPSHIP_SHIPPED):
            delta = -e.qty
        elif t is T.COUNTED:
            delta = e.qty - on_hand[e.site_id, e.sku]
        else:
            continue
        before = on_hand[e.site_id, e.sku]
        on_hand[e.site_id, e.sku] = before + delta
        yield e, before, before + delta


def test_stores_open_with_stock_and_sales_rarely_exceed_it(events: list[InventoryEvent]) -> None:
    sales = [(before, after) for e, before, after in fold_on_hand(events) if e.type is T.SOLD]
    oversold = [1 for before, after in sales if after < 0]

    assert events[0].type is T.RECEIVED
    assert events[0].source == "ERP"
    assert len(sales) > 40_000
    assert len(oversold) < 0.01 * len(sales)


def test_counts_are_close_to_the_stock_the_stream_shows(events: list[InventoryEvent]) -> None:
    counted = [(before, after) for e, before, after in fold_on_hand(events) if e.type is T.COUNTED]
    drifts = [after - before for before, after in counted]

    assert len(drifts) > 1_000
    # A shelf oversold below zero in the books is counted empty: no shelf holds fewer than 0 units.
    assert all(abs(after - before) <= 2 or (before < 0 and after == 0) for before, after in counted)
    assert Counter(drifts)[0] > 0.5 * len(drifts)


def test_a_mix_of_only_offers_gives_only_offers_once_the_opening_stock_is_out() -> None:
    only_offers = SimConfig(
        seed=2, mix=EventMix(**{f.name: 0.0 for f in dataclasses.fields(EventMix)} | {"offers": 1.0})
    )
    sim = RetailerSimulator(only_offers)
    drive(sim, calls=10, per_call=1_000, step_ms=MINUTE)  # the opening stock comes first
    offers = sim.next_events(T0 + HOUR, 1_000)

    assert {e.type for e in offers} == {T.OFFER_UPDATED}
    assert all(
        e.qty >= 0 and e.price is not None and e.price > 0 and 1 <= (e.lead_time_days or 0) <= 14 for e in offers
    )


def test_open_stories_stay_within_max_pending_at_a_high_rate() -> None:
    config = SimConfig(seed=4, max_pending=1_000)
    sim = RetailerSimulator(config)
    for i in range(100):
        sim.next_events(T0 + i * 1_000, 2_000)  # 2,000 events per second of clock
        state = sim.state()
        holds, dropships = state.open_stories
        assert holds <= 500
        assert dropships <= 250

    assert len(state.pending) < 2_000 + 3 * config.stores * config.skus


def test_sites_describe_the_network(events: list[InventoryEvent]) -> None:
    sim = RetailerSimulator(SimConfig(dcs=2, stores=20, suppliers=3, sellers=5))
    sites = sim.sites()

    assert Counter(s.kind for s in sites) == {
        SiteKind.DC: 2,
        SiteKind.STORE: 20,
        SiteKind.SUPPLIER: 3,
        SiteKind.SELLER: 5,
    }
    assert sites[0] == Site("DC-01", SiteKind.DC)
    assert {s.site_id for s in sites} >= {"DC-02", "ST-001", "ST-020", "SUP-01", "SUP-03", "SEL-01", "SEL-05"}
    assert {e.site_id for e in events} | {e.to_site_id for e in events if e.to_site_id} <= {s.site_id for s in sites}


# -- on a network file ----------------------------------------------------------------------------------------------

LYON = load_network(EXAMPLES / "network.toml")
"""The demo network: 6 stores, some on no lane; a DC; a supplier whose routes accept no generated sku; a seller."""


def routed_network() -> Network:
    """The demo network with routes for generated skus: a few to Part-Dieu, every sku to Grenoble."""
    data = tomllib.loads((EXAMPLES / "network.toml").read_text())
    data["dropship"][0]["skus"] = ["SKU-00000", "SKU-00003", "SKU-00011", "PHONE-C"]
    data["dropship"].append({"supplier": "SUP-ACME", "store": "STORE-GRENOBLE", "lead_days": 2, "skus": "*"})
    return network_from_mapping(data)


ROUTED = routed_network()
STORES_ONLY = network_from_mapping(
    {
        "sites": [
            {
                "id": "S1",
                "kind": "STORE",
                "lat": 45.0,
                "lon": 4.0,
                "tz": "Europe/Paris",
                "hours": {"mon-sun": "09:00-19:00"},
            }
        ]
    }
)
SIX_HOURS = {"calls": 72, "per_call": 500, "step_ms": 5 * MINUTE}
CALM_DAYS = {"calls": 96, "per_call": 200, "step_ms": HOUR}  # longer than a dropship on these routes (2 days + 6 h)


def network_stream(network: Network, seed: int) -> list[InventoryEvent]:
    sim = RetailerSimulator(SimConfig(seed=seed, network=network))
    busy = drive(sim, **SIX_HOURS)
    return flat(busy) + flat(drive(sim, **CALM_DAYS, start=busy[-1][0] + HOUR))


@pytest.fixture(scope="module")
def lyon_events() -> list[InventoryEvent]:
    return network_stream(LYON, seed=17)


@pytest.fixture(scope="module")
def routed_events() -> list[InventoryEvent]:
    return network_stream(ROUTED, seed=19)


def network_kinds(network: Network) -> dict[str, SiteKind]:
    return {site.id: SiteKind(site.kind.value) for site in network.sites}


def test_on_a_network_file_the_sites_are_the_networks_by_kind() -> None:
    sites = RetailerSimulator(SimConfig(network=LYON, dcs=5, stores=50)).sites()  # counts give way to the file

    assert [s.kind for s in sites] == [_D] + [_S] * 6 + [_SUP, _SEL]
    assert sites[:3] == (
        Site("DC-LYON-EST", _D),
        Site("STORE-LYON-PART-DIEU", _S),
        Site("STORE-VIENNE", _S),
    )
    assert {(s.site_id, s.kind) for s in sites} == set(network_kinds(LYON).items())


def test_on_a_network_file_every_event_names_sites_of_the_network_as_the_contract_wants(
    lyon_events: list[InventoryEvent],
) -> None:
    kinds = network_kinds(LYON)

    assert {e.site_id for e in lyon_events} == set(kinds)  # every site has stock, or offers for a seller
    assert {e.to_site_id for e in lyon_events if e.to_site_id} <= set(kinds)
    assert [p for e in lyon_events for p in contract_problems(e, kinds)] == []
    assert {e.site_id for e in lyon_events if e.type is T.OFFER_UPDATED} == {"SELLER-PHONEHUB"}


def test_on_a_network_file_transfers_run_only_on_its_lanes_and_arrive_after_its_transit(
    lyon_events: list[InventoryEvent],
) -> None:
    transit = {(lane.origin, lane.destination): lane.transit_minutes * MINUTE for lane in LYON.lanes}
    picks = [e for e in lyon_events if e.type is T.TRANSFER_PICKED]
    loads = [e for e in lyon_events if e.type is T.SHUTTLE_LOADED]
    stories = by_ref(lyon_events)

    assert len(picks) > 100
    assert {(e.site_id, e.to_site_id) for e in picks + loads} <= set(transit)
    end = lyon_events[-1].occurred_at
    for load in loads:
        assert load.eta == load.occurred_at + transit[load.site_id, load.to_site_id or ""]
        _, (_, arrival) = stories[load.ref or ""][-2:]
        if arrival is load:
            # Still on the road when the stream ends: due at most 90 min after its eta.
            assert (load.eta or 0) + 90 * MINUTE > end
            continue
        assert arrival.type is T.SHUTTLE_ARRIVED
        assert arrival.occurred_at >= load.occurred_at + transit[load.site_id, load.to_site_id or ""] // 2


def test_on_a_network_file_a_store_no_lane_reaches_is_restocked_by_deliveries(
    lyon_events: list[InventoryEvent],
) -> None:
    reached = {lane.destination for lane in LYON.lanes}
    unreached = {s.id for s in LYON.sites if s.kind.value == "STORE"} - reached
    delivered = {e.site_id for e in lyon_events if e.type is T.RECEIVED and e.ref and e.ref.startswith("PO-")}

    assert unreached == {"STORE-LYON-CONFLUENCE", "STORE-VILLEURBANNE", "STORE-SAINT-ETIENNE", "STORE-GRENOBLE"}
    assert delivered == unreached | {"DC-LYON-EST"}


def test_on_a_network_file_no_dropship_runs_where_no_route_accepts_a_generated_sku(
    lyon_events: list[InventoryEvent],
) -> None:
    assert not [e for e in lyon_events if e.type in (T.DROPSHIP_SHIPPED, T.DROPSHIP_RECEIVED)]


def test_on_a_network_file_dropships_run_only_on_routes_that_accept_the_sku_in_their_lead_days(
    routed_events: list[InventoryEvent],
) -> None:
    routes = {(r.supplier, r.store): r for r in ROUTED.dropship}
    shipments = [e for e in routed_events if e.type is T.DROPSHIP_SHIPPED]
    stories = by_ref(routed_events)

    assert len(shipments) > 100
    assert {e.to_site_id for e in shipments} == {"STORE-LYON-PART-DIEU", "STORE-GRENOBLE"}
    assert {e.sku for e in shipments if e.to_site_id == "STORE-LYON-PART-DIEU"} <= {
        "SKU-00000",
        "SKU-00003",
        "SKU-00011",
    }
    for shipment in shipments:
        route = routes[shipment.site_id, shipment.to_site_id or ""]
        assert route.accepts(shipment.sku)
        assert shipment.eta == ROUTED.add_days(route.store, shipment.occurred_at, route.lead_days)
        if shipment.occurred_at < routed_events[-1].occurred_at - 3 * DAY:  # time enough to arrive
            assert [e.type for _, e in stories[shipment.ref or ""]] == [T.DROPSHIP_SHIPPED, T.DROPSHIP_RECEIVED]
    assert [p for e in routed_events for p in contract_problems(e, network_kinds(ROUTED))] == []


def test_on_a_network_file_the_same_seed_gives_the_same_stream_and_another_seed_another() -> None:
    first = run_calls(RetailerSimulator(SimConfig(seed=7, network=ROUTED)), CALLS)
    second = run_calls(RetailerSimulator(SimConfig(seed=7, network=routed_network())), CALLS)  # an equal copy
    other = run_calls(RetailerSimulator(SimConfig(seed=8, network=ROUTED)), CALLS)

    assert first == second
    assert [(e.type, e.site_id, e.sku, e.qty) for e in first] != [(e.type, e.site_id, e.sku, e.qty) for e in other]


@pytest.mark.parametrize("cut", [1, 33, 41, 79])
def test_on_a_network_file_a_resumed_simulator_continues_the_uninterrupted_stream(cut: int) -> None:
    config = SimConfig(seed=11, skus=40, network=ROUTED)
    uninterrupted = run_calls(RetailerSimulator(config), CALLS)

    before = RetailerSimulator(config)
    head = run_calls(before, CALLS[:cut])
    state = pickle.loads(pickle.dumps(before.state()))
    tail = run_calls(
        RetailerSimulator.resume(dataclasses.replace(config, network=routed_network()), state), CALLS[cut:]
    )

    assert head + tail == uninterrupted
    if cut >= 33:
        assert state.pending, "the cut should fall while stories are open"


def test_resuming_on_another_network_raises_config_error_naming_the_network() -> None:
    on_file = RetailerSimulator(SimConfig(seed=3, network=ROUTED)).state()
    generated = RetailerSimulator(SimConfig(seed=3)).state()

    with pytest.raises(
        ConfigError,
        match=r"^SimConfig\.network: the state was taken on network [0-9a-f]{16}, the config has network [0-9a-f]{16}",
    ):
        RetailerSimulator.resume(SimConfig(seed=3, network=LYON), on_file)
    with pytest.raises(ConfigError, match=r"^SimConfig\.network: the state was taken on network generated, "):
        RetailerSimulator.resume(SimConfig(seed=3, network=ROUTED), generated)
    with pytest.raises(ConfigError, match=r"the config has network generated"):
        RetailerSimulator.resume(SimConfig(seed=3), on_file)


def test_a_state_pickled_before_network_files_resumes_on_the_generated_network() -> None:
    config = SimConfig(seed=5, stores=4, skus=20)
    uninterrupted = run_calls(RetailerSimulator(config), CALLS[:30])
    before = RetailerSimulator(config)
    head = run_calls(before, CALLS[:10])
    values = [getattr(before.state(), f.name) for f in dataclasses.fields(SimState) if f.name != "network_digest"]
    old = SimState.__new__(SimState)
    old.__setstate__(values)  # type: ignore[attr-defined]  # as unpickled from a state without the field

    assert head + run_calls(RetailerSimulator.resume(config, old), CALLS[10:30]) == uninterrupted


@st.composite
def network_files(draw: st.DrawFn) -> Network:
    """A small network file: any lanes (transit 0 included), any routes (lead 0, skus outside the catalogue)."""
    counts = {"DC": draw(st.integers(1, 2)), "STORE": draw(st.integers(1, 4))}
    counts |= {"SUPPLIER": draw(st.integers(0, 2)), "SELLER": draw(st.integers(0, 2))}
    sites = [
        {"id": f"{kind}-{i}", "kind": kind, "lat": 45.0 + i / 100, "lon": 4.8, "tz": "Europe/Paris"}
        | ({"hours": {"mon-sat": "09:00-19:00"}} if kind == "STORE" else {})
        for kind, count in counts.items()
        for i in range(count)
    ]
    stores = [f"STORE-{i}" for i in range(counts["STORE"])]
    origins = [f"DC-{i}" for i in range(counts["DC"])] + stores
    pairs = draw(st.sets(st.tuples(st.sampled_from(origins), st.sampled_from(stores))))
    lanes = [
        {"id": f"L{n}", "origin": o, "destination": d, "days": ["mon-sat"], "departures": ["07:00"]}
        | {"transit_minutes": draw(st.integers(0, 600))}
        for n, (o, d) in enumerate(sorted(pairs))
        if o != d
    ]
    sku_lists = st.lists(st.integers(0, 15).map(lambda j: f"SKU-{j:05d}"), min_size=1, max_size=4)
    dropship = [
        {"supplier": f"SUPPLIER-{i}", "store": store, "lead_days": draw(st.integers(0, 3))}
        | {"skus": draw(st.one_of(st.just("*"), sku_lists))}
        for i in range(counts["SUPPLIER"])
        for store in draw(st.lists(st.sampled_from(stores), unique=True))
    ]
    return network_from_mapping({"sites": sites, "lanes": lanes, "dropship": dropship})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), network=network_files(), skus=st.integers(1, 12))
def test_any_network_file_gives_a_stream_on_its_sites_lanes_and_routes(seed: int, network: Network, skus: int) -> None:
    sim = RetailerSimulator(SimConfig(seed, skus=skus, network=network))
    events = flat(drive(sim, calls=60, per_call=100, step_ms=30 * MINUTE))
    lanes = {(lane.origin, lane.destination) for lane in network.lanes}

    assert [p for e in events for p in contract_problems(e, network_kinds(network))] == []
    assert {(e.site_id, e.to_site_id) for e in events if e.type in (T.TRANSFER_PICKED, T.SHUTTLE_LOADED)} <= lanes
    for e in events:
        if e.type is T.DROPSHIP_SHIPPED:
            assert any(r.accepts(e.sku) for r in network.dropship if (r.supplier, r.store) == (e.site_id, e.to_site_id))
    for story in by_ref(events).values():
        assert len({(e.sku, e.qty) for _, e in story}) == 1, story


# -- the simulator's network as a network file -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        SimConfig(),
        SimConfig(dcs=1, stores=1, suppliers=0, sellers=0),
        SimConfig(dcs=3, stores=7, suppliers=9, sellers=11),
    ],
)
def test_the_generated_network_round_trips_through_load_network(config: SimConfig, tmp_path: Path) -> None:
    network = simulated_network(config)
    path = tmp_path / "network.toml"
    path.write_text(network_toml(network, title="a test"))

    assert load_network(path) == network
    assert path.read_text().startswith("# a test\n")


def test_the_generated_network_holds_the_simulators_sites_around_paris_with_hours_and_appointments() -> None:
    config = SimConfig(dcs=2, stores=20, suppliers=3, sellers=5)
    network = simulated_network(config)
    stores = [s for s in network.sites if s.kind.value == "STORE"]

    assert {(s.id, SiteKind(s.kind.value)) for s in network.sites} == {(s.site_id, s.kind) for s in config.sites()}
    assert all(haversine_km(48.8566, 2.3522, s.lat, s.lon) <= 30.5 for s in stores)
    assert all(s.hours is not None and s.tz == "Europe/Paris" for s in stores)
    assert sum(s.appointments is not None for s in stores) == 15
    assert len({(s.lat, s.lon) for s in network.sites}) == len(network.sites)
    assert len(network.lanes) == 2 * 20 + 20 * 19
    assert {(r.supplier, r.store, r.skus) for r in network.dropship} == {
        (f"SUP-{i:02d}", s.id, None) for i in (1, 2, 3) for s in stores
    }
    assert {c.dc for c in network.carriers} == {"DC-01", "DC-02"}


def test_the_generated_network_depends_on_the_site_counts_not_the_seed() -> None:
    assert simulated_network(SimConfig(seed=1)) == simulated_network(SimConfig(seed=2))
    assert simulated_network(SimConfig(stores=5)) != simulated_network(SimConfig(stores=6))


def test_the_generated_network_describes_where_the_simulator_moves_stock(events: list[InventoryEvent]) -> None:
    network = simulated_network(STREAM_CONFIG)
    lanes = {(lane.origin, lane.destination) for lane in network.lanes}
    transfers = [e for e in events if e.type in (T.TRANSFER_PICKED, T.SHUTTLE_LOADED)]
    shipments = [e for e in events if e.type is T.DROPSHIP_SHIPPED]

    assert {e.site_id for e in events} <= {s.id for s in network.sites}
    assert {(e.site_id, e.to_site_id) for e in transfers} <= lanes
    assert all(
        any(r.accepts(e.sku) for r in network.dropship if (r.supplier, r.store) == (e.site_id, e.to_site_id))
        for e in shipments
    )


def test_a_network_file_round_trips_through_network_toml() -> None:
    assert network_from_mapping(tomllib.loads(network_toml(LYON))) == LYON
    assert network_from_mapping(tomllib.loads(network_toml(ROUTED))) == ROUTED


def test_network_toml_escapes_what_a_toml_string_cannot_hold() -> None:
    data = tomllib.loads((EXAMPLES / "network.toml").read_text())
    odd = copy.deepcopy(data)
    odd["sites"][0]["name"] = 'Lyon "Part-Dieu" \\ caisse\t1\u007f\u0001 é'
    network = network_from_mapping(odd)

    assert network_from_mapping(tomllib.loads(network_toml(network))) == network


def test_the_simulated_network_of_a_config_with_a_file_is_that_file() -> None:
    assert simulated_network(SimConfig(network=LYON)) is LYON


# -- configuration ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": "7"}, "seed"),
        ({"dcs": 0}, "dcs"),
        ({"dcs": True}, "dcs"),
        ({"stores": 1_000}, "stores"),
        ({"suppliers": -1}, "suppliers"),
        ({"sellers": 100}, "sellers"),
        ({"skus": 0}, "skus"),
        ({"skus": 2.5}, "skus"),
        ({"stores": 999, "skus": 50_000}, "skus"),
        ({"start_at": -1}, "start_at"),
        ({"jitter_ms": 60_001}, "jitter_ms"),
        ({"max_pending": 10}, "max_pending"),
        ({"expected_rate": -5}, "expected_rate"),
        ({"mix": {"sales": 1.0}}, "mix"),
        ({"mix": EventMix(**dict.fromkeys((f.name for f in dataclasses.fields(EventMix)), 0.0))}, "mix"),
        (
            {"sellers": 0, "mix": EventMix(**{f.name: 0.0 for f in dataclasses.fields(EventMix)} | {"offers": 1.0})},
            "mix",
        ),
        ({"network": "examples/network.toml"}, "network"),
        ({"network": STORES_ONLY}, "network"),
        # The demo's routes accept only PHONE-C and CASE-C, never a generated sku.
        (
            {
                "network": LYON,
                "mix": EventMix(**{f.name: 0.0 for f in dataclasses.fields(EventMix)} | {"dropships": 1.0}),
            },
            "mix",
        ),
    ],
)
def test_an_invalid_config_raises_config_error_naming_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^SimConfig\.{field}: expected .+, got "):
        SimConfig(**changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("weight", [-0.1, float("nan"), float("inf"), True, "1"])
def test_an_invalid_mix_weight_raises_config_error_naming_the_field(weight: object) -> None:
    with pytest.raises(ConfigError, match=r"^SimConfig\.mix\.returns: expected a finite weight >= 0, got "):
        EventMix(returns=weight)  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    network=st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(0, 2), st.integers(0, 2), st.integers(1, 12)),
    weights=st.lists(st.floats(0, 5), min_size=10, max_size=10).filter(lambda w: w[0] > 0),
    expected_rate=st.sampled_from([0, 1, 5_000]),
)
def test_any_network_and_mix_gives_a_stream_that_follows_the_contract(
    seed: int, network: tuple[int, int, int, int, int], weights: list[float], expected_rate: int
) -> None:
    dcs, stores, suppliers, sellers, skus = network
    mix = EventMix(**dict(zip((f.name for f in dataclasses.fields(EventMix)), weights, strict=True)))
    config = SimConfig(seed, dcs, stores, suppliers, sellers, skus, mix=mix, expected_rate=expected_rate)
    sim = RetailerSimulator(config)
    events = flat(drive(sim, calls=60, per_call=100, step_ms=30 * MINUTE))
    kinds = site_kinds(sim)

    assert [p for e in events for p in contract_problems(e, kinds)] == []
    assert len({e.event_id for e in events}) == len(events) == 6_000
    for story in by_ref(events).values():
        assert len({(e.sku, e.qty) for _, e in story}) == 1, story  # one story, one sku, one quantity


# -- the module's surface --------------------------------------------------------------------------------------------


def test_the_module_exports_its_public_api() -> None:
    assert sorted(simulator.__all__) == ["EventMix", "RetailerSimulator", "SimConfig", "SimState", "Site", "SiteKind"]
    assert all(hasattr(simulator, name) for name in simulator.__all__)


def test_the_simulator_imports_only_the_stdlib_and_ledger() -> None:
    imported: set[str] = set()
    for path in Path(simulator.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    roots = {name.split(".")[0] for name in imported}

    assert roots - {"__future__", "ledger", "simulator"} <= set(sys.stdlib_module_names)
    assert "bytewax" not in roots


def test_a_state_pickled_when_the_simulator_lived_in_omni_ledger_still_resumes() -> None:
    import adapters.sim_source  # noqa: F401  # where a resumed flow unpickles it

    config = SimConfig(seed=5, stores=4, skus=20)
    sim = RetailerSimulator(config)
    sim.next_events(T0, 200)
    # Protocol 2 names a class as text, "module\nname\n": the old module's name is put back.
    old = pickle.dumps(sim.state(), protocol=2).replace(b"simulator.state\n", b"omni_ledger.simulator\n")

    restored = pickle.loads(old)
    assert restored == sim.state()
    assert RetailerSimulator.resume(config, restored).next_events(T0 + HOUR, 50) == sim.next_events(T0 + HOUR, 50)


# -- the replenishment band ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shelf_max", [12, 40])
def test_store_stock_stays_within_the_shelf_band_however_fast_the_stream(shelf_max: int) -> None:
    # 1,000 events a second of the caller's clock for five minutes, then a calm day; the books after each call.
    sim = RetailerSimulator(SimConfig(seed=5, stores=6, skus=60, expected_rate=1000, shelf_max=shelf_max))
    stores = range(2 * 60, 8 * 60)  # positions site * skus + sku of ST-001..ST-006, after the two DCs
    calls = [(T0 + i * 1000, 1000) for i in range(300)] + [(T0 + 301_000 + i * 30 * MINUTE, 500) for i in range(48)]
    highest_free = lowest = 0
    for now, n in calls:
        sim.next_events(now, n)
        state = sim.state()
        highest_free = max(highest_free, max(state.on_hand[p] - state.unavailable[p] for p in stores))
        lowest = min(lowest, min(state.on_hand[p] for p in stores))
    in_stores = [sim.state().on_hand[p] for p in stores]

    # Free stock: the order-up-to level with the opening's quarter on top, and a few returned units;
    # units held for customers sit on the shelf beside it, counted by the ledger as reserved.
    assert highest_free <= shelf_max * 5 // 4 + 6
    # An oversell now and then (at most 3 units below the free stock), and shrink beside held units: counted back to 0.
    assert lowest >= -10
    assert sum(1 for qty in in_stores if qty > 0) > len(in_stores) // 3  # replenished: shelves hold stock again


def test_a_shelf_max_of_0_sizes_shelves_for_a_day_of_demand() -> None:
    capped = RetailerSimulator(SimConfig(seed=5, stores=2, skus=10, expected_rate=2000))
    uncapped = RetailerSimulator(SimConfig(seed=5, stores=2, skus=10, expected_rate=2000, shelf_max=0))
    opening = 2 * 10 + 2 * 10 + 3 * 10  # DCs, stores, suppliers

    def store_stock(sim: RetailerSimulator) -> int:
        return sum(e.qty for e in sim.next_events(T0, opening) if e.site_id.startswith("ST-"))

    assert store_stock(capped) <= 2 * 10 * 50
    assert store_stock(uncapped) > 100 * store_stock(capped)
