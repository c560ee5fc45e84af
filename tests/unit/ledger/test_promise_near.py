"""What a promise keeps across requests (ledger.promise `_Near`, `_held`) answers as if nothing were kept.

The kept structures depend on the set of stores in the radius, the sku's sites or a lane's
cut-off window; a request that finds them filled by other customers (other points, radii,
times before and after, other skus) must get the answer of a process that never served
anyone, whole, explained or bounded.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import promise as promise_module
from ledger import schedule
from ledger.answer import MAX_LIMIT, PromiseRequest
from ledger.network import DAY_MS
from ledger.promise import promise
from tests.unit.ledger.test_promise import crowded_scenarios, scenarios, shared_sources, tied_scenarios


def _forget() -> None:
    """Every memo a promise fills, emptied: the state of a process that has answered nobody."""
    promise_module._NEAR.clear()
    promise_module._HELD.clear()
    promise_module._HELD_SITES[0] = 0
    promise_module._AROUND[0] = 0
    promise_module._INTO.clear()
    for memo in (schedule._RUNS, schedule._TRANSFERS, schedule._OPENINGS, schedule._STEADY, schedule._SLOTS):
        memo.clear()


@st.composite
def others(draw: st.DrawFn, request: PromiseRequest) -> list[PromiseRequest]:
    """Requests another customer made before: other points, radii and times around `request`'s."""
    found = []
    for _ in range(draw(st.integers(1, 4))):
        found.append(
            replace(
                request,
                lat=draw(st.sampled_from([request.lat, 45.5, 45.8]) | st.floats(45.4, 46.0)),
                lon=draw(st.sampled_from([request.lon, 4.8, 5.0]) | st.floats(4.5, 5.2)),
                radius_km=draw(st.sampled_from([request.radius_km, None]) | st.floats(5, 100)),
                now=request.now + draw(st.integers(-2 * DAY_MS, 2 * DAY_MS) | st.integers(-60_000, 60_000)),
            )
        )
    return found


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(scenarios(), crowded_scenarios(), tied_scenarios(), shared_sources()),
    st.integers(1, MAX_LIMIT),
    st.data(),
)
def test_a_promise_after_other_customers_answers_as_the_first_one_would(scenario, limit, data):
    network, view, request = scenario
    _forget()
    fresh = (
        promise(network, view, request),
        promise(network, view, request, limit=limit, explain=False),
        promise(network, view, request, limit=limit),
    )
    _forget()
    for other in data.draw(others(request)):
        promise(network, view, other, limit=limit, explain=False)
        promise(network, view, other)
    # The same request again, its own memos warm too, and once more after the others.
    assert promise(network, view, request, limit=limit, explain=False) == fresh[1]
    assert promise(network, view, request) == fresh[0]
    assert promise(network, view, request, limit=limit) == fresh[2]
    assert promise(network, view, request, limit=limit, explain=False) == fresh[1]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.lists(st.integers(-DAY_MS, 3 * DAY_MS), min_size=1, max_size=10))
def test_a_sources_transfers_kept_for_a_set_of_stores_are_each_lanes_own_at_every_instant(scenario, steps):
    # Asked forwards and back in time, on and around the lanes' cut-offs: what a set of stores keeps
    # per origin must be, lane by lane, what `schedule.transfer` answers at that instant.
    network, _, request = scenario
    stores = {site.id: 0.0 for site in network.sites if site.kind.value == "STORE"}
    into = promise_module._into(network)
    near = promise_module._near(network, into, stores)
    instants = [request.now + step for step in steps]
    for lanes in near.lanes_in.values():
        for lane in lanes:
            run = network.next_run(lane, request.now)
            if run is not None:
                instants += [run.cutoff_at - 1, run.cutoff_at, run.cutoff_at + 1]
    for now in instants:
        for origin, lanes in near.lanes_in.items():
            expected = []
            for lane in lanes:
                got = schedule.transfer(network, lane, now)
                expected.append((lane, None, None) if got is None else (lane, *got))
            assert list(near.transfers_at(network, origin, now)) == expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.data())
def test_what_a_set_of_stores_keeps_is_what_its_lanes_and_routes_say(scenario, data):
    network, _, _ = scenario
    stores_all = [site.id for site in network.sites if site.kind.value == "STORE"]
    chosen = data.draw(st.lists(st.sampled_from(stores_all), unique=True)) if stores_all else []
    inside = [site for site in stores_all if site in chosen]  # network order, as the radius gives them
    near = promise_module._near(network, promise_module._into(network), dict.fromkeys(inside, 1.0))
    carriers = {site.id for site in network.sites if site.kind.value == "DC" and network.carrier(site.id)}
    sellers = {site.id for site in network.sites if site.kind.value == "SELLER"}
    lanes = [lane for lane in network.lanes if lane.destination in inside]
    routes = [route for route in network.dropship if route.store in inside]
    assert near.reach == {*inside, *carriers, *sellers, *(lane.origin for lane in lanes), *(r.supplier for r in routes)}
    assert near.lanes_in == {
        origin: tuple(lane for lane in network.lanes_from(origin) if lane.destination in inside)
        for origin in {lane.origin for lane in lanes}
    }
    assert near.routes_in == {
        supplier: tuple(route for route in network.routes_from(supplier) if route.store in inside)
        for supplier in {route.supplier for route in routes}
    }
