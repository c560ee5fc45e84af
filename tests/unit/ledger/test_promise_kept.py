"""What a source offers, kept across requests (`ledger.promise` `_Context.ways`, `_Kept`).

A store's, DC's or supplier's options are kept for a window of `now` (fixed instants, or
`now` plus an offset) and shared by every set of stores that gives the source the same
ways; the distances and a carrier's range are the request's. Whatever was asked before,
at whatever `now` and from wherever, a bounded promise must be the whole promise (built
source by source, nothing kept) cut.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ledger.answer import MAX_LIMIT, bounded
from ledger.network import DAY_MS, MINUTE_MS, Network, _days_from, _open, _wall
from ledger.promise import promise
from tests.unit.ledger.test_promise import scenarios


def _edges(network: Network, now: int) -> list[int]:
    """The instants around `now` where a kept window ends: lanes' cut-offs, openings and closings less prep."""
    found = []
    for lane in network.lanes:
        found += [run.cutoff_at for run in network.runs(lane, now - DAY_MS, now + 2 * DAY_MS)]
    for site in network.sites:
        for day in _days_from(now - DAY_MS, site.zone, 4):
            for lo, hi in _open(site, day):
                for edge in (_wall(day, lo, site.zone), _wall(day, hi, site.zone)):
                    found.append(edge - site.prep_minutes * MINUTE_MS)
                    # A dropship's arrival: its lead days later.
                    found += [edge - route.lead_days * DAY_MS for route in network.dropship if route.store == site.id]
    return sorted(found)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scenarios(),
    st.lists(
        st.tuples(
            # `now` from the previous request's: the same, a few minutes, days, or an edge of a window.
            st.just(0) | st.integers(-30 * MINUTE_MS, 90 * MINUTE_MS) | st.integers(-DAY_MS, 3 * DAY_MS) | st.none(),
            st.floats(-0.3, 0.3),  # the customer moved (another set of stores, other distances)
            st.floats(-0.3, 0.3),
            st.none() | st.floats(5, 100),  # radius
            st.sampled_from([1, 2, 3, 10, MAX_LIMIT]),
            st.booleans(),  # appointment
        ),
        min_size=2,
        max_size=8,
    ),
    st.randoms(use_true_random=False),
)
def test_promises_kept_across_requests_are_the_whole_promise_cut(scenario, steps, rng):
    network, view, request = scenario
    asked = request
    edges = 0
    for later, north, east, radius, limit, appointment in steps:
        if later is None:
            # The next edge (the window kept by the last request ends there), or any, to the millisecond either side.
            found = _edges(network, asked.now)
            ahead = [edge for edge in found if edge > asked.now]
            edge = ahead[0] if ahead and rng.random() < 0.7 else rng.choice(found) if found else asked.now
            now = edge + rng.choice((-1, 0, 1))
            edges += bool(found)
        else:
            now = asked.now + later
        asked = replace(
            asked, now=now, lat=asked.lat + north, lon=asked.lon + east, radius_km=radius, appointment=appointment
        )
        whole = promise(network, view, asked)
        assert promise(network, view, asked, limit=limit, explain=False) == bounded(whole, limit)
    event(f"requests at an edge: {min(edges, 3)}+")
