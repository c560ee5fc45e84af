"""The kept openings (ledger.schedule `next_opening`) are the network's own at every edge.

`next_opening` keeps, per site and UTC day, the opening intervals a walk from that day
meets, and answers by one bisection over their closings when those are in walk order
(the walk otherwise). The edges are where a bisection and a walk could part: an opening,
a closing, a local or a UTC midnight, each to the millisecond either side, on the days
around a change of UTC offset too, and with a day's intervals out of order.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import schedule
from ledger.fulfilment import SourceKind
from ledger.network import DAY_MS, Network, Site, _days_from, _open, _wall

ZONES = ("Europe/Paris", "Europe/London", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC")
CHANGES = tuple(
    int(datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp() * 1000)
    for stamp in (
        "2026-03-29T01:00",  # Europe, spring
        "2026-10-25T01:00",  # Europe, autumn
        "2026-03-08T07:00",  # New York, spring
        "2026-11-01T06:00",  # New York, autumn
        "2026-04-04T15:00",  # Lord Howe: half an hour back
        "2026-10-03T15:30",  # Lord Howe: half an hour on
    )
)
"""Changes of UTC offset in the zones above (2026)."""


@st.composite
def weeks(draw: st.DrawFn) -> tuple[tuple[tuple[int, int], ...], ...] | None:
    """Opening hours: closed days, several intervals a day, some out of order, some to midnight."""
    if draw(st.integers(0, 9)) == 0:
        return None  # always open
    week = []
    for _ in range(7):
        day = []
        for _ in range(draw(st.integers(0, 3))):
            lo = draw(st.integers(0, 24 * 60 - 1))
            day.append((lo, draw(st.integers(lo + 1, 24 * 60))))
        if draw(st.booleans()):
            day.sort()
        week.append(tuple(day))
    return tuple(week)


@st.composite
def networks(draw: st.DrawFn) -> Network:
    sites = tuple(
        Site(f"S{n}", f"S{n}", SourceKind.STORE, 45.7, 4.8, draw(st.sampled_from(ZONES)), draw(weeks()), 0, "Z")
        for n in range(draw(st.integers(1, 3)))
    )
    return Network(sites, (), (), (), horizon_days=draw(st.integers(1, 10)))


def _edges(network: Network, site: Site, moment: int) -> list[int]:
    """Every opening, closing and local midnight of the days around `moment`, and UTC's midnights, +-1 ms."""
    found = []
    for day in _days_from(moment - DAY_MS, site.zone, 4):
        found.append(_wall(day, 0, site.zone))
        for lo, hi in _open(site, day):
            found += (_wall(day, lo, site.zone), _wall(day, hi, site.zone))
    utc = moment - moment % DAY_MS
    found += (utc - DAY_MS, utc, utc + DAY_MS)
    return [edge + step for edge in found for step in (-1, 0, 1)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    networks(),
    st.sampled_from(CHANGES).flatmap(lambda change: st.integers(change - 3 * DAY_MS, change + 3 * DAY_MS))
    | st.integers(CHANGES[0] - 90 * DAY_MS, CHANGES[-1] + 90 * DAY_MS),
    st.randoms(use_true_random=False),
)
def test_the_kept_next_opening_is_the_networks_at_every_opening_closing_and_midnight(network, moment, rng):
    schedule._OPENINGS.clear()
    for site in network.sites:
        edges = _edges(network, site, moment)
        rng.shuffle(edges)  # the day's memo filled from any of its instants first
        for at in edges:
            assert schedule.next_opening(network, site.id, at) == network.next_opening(site.id, at), (
                site.id,
                datetime.fromtimestamp(at / 1000, UTC),
            )
