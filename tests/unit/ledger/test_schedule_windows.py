"""The windows a promise keeps a source's options over (ledger.schedule `opening_window`, `days_window`).

A window says: for every instant of [lo, hi), the next opening is that instant (the site
is open) or one fixed value; the lead days are one fixed offset. Kept across requests,
a window too wide would answer a later `now` wrongly, so each is checked against the
network's own answer at its ends, inside, and at every opening, closing and midnight in it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import schedule
from ledger.network import DAY_MS
from tests.unit.ledger.test_schedule_openings import CHANGES, _edges, networks


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    networks(),
    st.sampled_from(CHANGES).flatmap(lambda change: st.integers(change - 3 * DAY_MS, change + 3 * DAY_MS))
    | st.integers(CHANGES[0] - 90 * DAY_MS, CHANGES[-1] + 90 * DAY_MS),
    st.randoms(use_true_random=False),
)
def test_an_opening_window_holds_the_networks_next_opening_at_every_instant_in_it(network, moment, rng):
    schedule._OPENINGS.clear()
    for site in network.sites:
        edges = _edges(network, site, moment)
        rng.shuffle(edges)  # the day's memo filled from any of its instants first
        for at in edges:
            value, follows, lo, hi = schedule.opening_window(network, site.id, at)
            assert lo <= at < hi
            assert (at if follows else value) == network.next_opening(site.id, at)
            inside = {lo, hi - 1, rng.randrange(lo, hi), *(edge for edge in edges if lo <= edge < hi)}
            for t in inside:
                assert (t if follows else value) == network.next_opening(site.id, t), (
                    site.id,
                    datetime.fromtimestamp(at / 1000, UTC),
                    datetime.fromtimestamp(t / 1000, UTC),
                )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    networks(),
    st.sampled_from(CHANGES).flatmap(lambda change: st.integers(change - 15 * DAY_MS, change + 3 * DAY_MS))
    | st.integers(CHANGES[0] - 90 * DAY_MS, CHANGES[-1] + 90 * DAY_MS),
    st.integers(0, 12),
    st.randoms(use_true_random=False),
)
def test_a_days_window_holds_the_networks_lead_days_at_every_instant_in_it(network, moment, days, rng):
    for site in network.sites:
        offset, lo, hi = schedule.days_window(network, site.id, moment, days)
        assert lo <= moment < hi
        for t in {moment, lo, hi - 1, rng.randrange(lo, hi)}:
            assert t + offset == network.add_days(site.id, t, days) == schedule.add_days(network, site.id, t, days)
