"""The network's schedules, memoised: lane departures, appointment slots, store openings, lead days.

A lane's departures and a store's slots are pure functions of the network and the
time, and computing them (local wall-clock dates through zoneinfo) was most of a
promise's time once the snapshot was in memory: 2,700 lanes and a thousand stores,
asked again for every request. They are computed once per UTC day window and looked
up by bisection after; the answers are those of `Network.next_run`, `Network.slots`
and `Network.next_opening` (a property test compares them).
"""

from __future__ import annotations

from bisect import bisect_left
from datetime import timedelta

from ledger.events import Millis

# The network's own wall-clock helpers: the memo must compute exactly what Network.next_opening does.
from ledger.network import DAY_MS, MINUTE_MS, Interval, Lane, Network, Run, _local, _open, _wall

__all__ = [
    "add_days",
    "days_window",
    "next_opening",
    "next_run",
    "opening_window",
    "slot_range",
    "slots",
    "transfer",
    "transfer_window",
]

_RUNS: dict[tuple[int, str, Millis], tuple[Network, tuple[Run, ...], tuple[Millis, ...], bool]] = {}
"""(network, lane, UTC day) -> the lane's runs from that day, their cut-offs, and whether they cover the horizon."""
_FIRST_DAYS = 2
Calendar = tuple[str, tuple[tuple[Interval, ...], ...] | None, int, int | None, int | None] | None
"""What a store's slot starts depend on (`Network.slots`): its zone, its opening hours, its
slot length and the bounds of its appointment day; None for a store that takes none."""
_CALENDARS: dict[tuple[int, str], tuple[Network, Calendar]] = {}
_SLOTS: dict[tuple[int, Calendar, Millis], tuple[Network, tuple[Millis, ...]]] = {}
_SLOT_BLOCK_MS = 4 * DAY_MS
"""The days of `at` one calendar's kept slots serve (`slot_range`)."""
_MEMO_ENTRIES = 50_000
"""Entries kept per memo before it is cleared: a day of a national network is ~3,000 windows."""


def next_run(network: Network, lane: Lane, ready_at: Millis) -> Run | None:
    """`network.next_run(lane, ready_at)`, from the lane's departures of the window around `ready_at`."""
    return _next_run(network, lane, ready_at)[0]


def _next_run(network: Network, lane: Lane, ready_at: Millis) -> tuple[Run | None, Millis, Millis]:
    """`next_run`, and the instants (lo, hi] of the same UTC day for which it is the same run.

    The same departure is the answer from the cut-off before it (or from when it enters
    the horizon, if later) to its own cut-off; None has no range ((0, 0]).
    """
    day = ready_at - ready_at % DAY_MS
    key = (id(network), lane.id, day)
    cached = _RUNS.get(key)
    if cached is None or cached[0] is not network:
        # The next two days first: a shuttle runs most days, and the whole horizon's departures
        # (through zoneinfo, ~15 days of them) were most of a cold promise's time. Their runs
        # are the first of the horizon's (sorted by departure), so a run found there is the same.
        cached = _kept_runs(key, network, lane, day, day + _FIRST_DAYS * DAY_MS, whole=False)
    _, runs, cutoffs, whole = cached
    i = bisect_left(cutoffs, ready_at)
    if i == len(runs) and not whole:
        end = day + (network.horizon_days + 2) * DAY_MS + lane.cutoff_minutes * MINUTE_MS
        _, runs, cutoffs, whole = _kept_runs(key, network, lane, day, end, whole=True)
        i = bisect_left(cutoffs, ready_at)
    if i == len(runs):
        return None, 0, 0
    run = runs[i]
    reach = network.horizon_days * DAY_MS + lane.cutoff_minutes * MINUTE_MS
    if not ready_at <= run.departs_at < ready_at + reach:
        return None, 0, 0
    lo = max(cutoffs[i - 1] if i else day - 1, run.departs_at - reach, day - 1)
    return run, lo, min(run.cutoff_at, run.departs_at, day + DAY_MS - 1)


def _kept_runs(
    key: tuple[int, str, Millis], network: Network, lane: Lane, start: Millis, end: Millis, *, whole: bool
) -> tuple[Network, tuple[Run, ...], tuple[Millis, ...], bool]:
    found = network.runs(lane, start, end)
    if len(_RUNS) >= _MEMO_ENTRIES:
        _RUNS.clear()
    kept = _RUNS[key] = (network, found, tuple(run.cutoff_at for run in found), whole)
    return kept


_TRANSFERS: dict[tuple[int, str], tuple[Network, Millis, Millis, Run, Millis | None]] = {}


def transfer(network: Network, lane: Lane, now: Millis) -> tuple[Run, Millis | None] | None:
    """The lane's next run from `now` and the destination's first opening after it arrives.

    `(next_run(...), next_opening(network, lane.destination, run.arrives_at))`, None without
    a run. Every promise asks it for every lane into every store near the customer (a
    basket: ~250 lanes), and the answer only changes at the lane's next cut-off, so it is
    kept per lane with the instants it holds for.
    """
    found = transfer_window(network, lane, now)
    return None if found is None else (found[0], found[1])


def transfer_window(network: Network, lane: Lane, now: Millis) -> tuple[Run, Millis | None, Millis, Millis] | None:
    """`transfer`, with the instants (lo, hi] it holds for (`now` among them): the answer for any of them.

    A promise keeps a source's transfers for as long as every one of its lanes' answers
    holds (`ledger.promise`), rather than asking each lane again per request.
    """
    key = (id(network), lane.id)
    cached = _TRANSFERS.get(key)
    if cached is not None and cached[1] < now <= cached[2] and cached[0] is network:
        return cached[3], cached[4], cached[1], cached[2]
    run, lo, hi = _next_run(network, lane, now)
    if run is None:
        return None
    opening = next_opening(network, lane.destination, run.arrives_at)
    if len(_TRANSFERS) >= _MEMO_ENTRIES:
        _TRANSFERS.clear()
    _TRANSFERS[key] = (network, lo, hi, run, opening)
    return run, opening, lo, hi


def slots(network: Network, store_id: str, at: Millis, days: int) -> tuple[Millis, ...]:
    """`network.slots(store_id, at, at + days * DAY_MS)`, from the store's slots of the window around `at`."""
    found, lo, hi = slot_range(network, store_id, at, days)
    return found[lo:hi]


def slot_range(network: Network, store_id: str, at: Millis, days: int) -> tuple[tuple[Millis, ...], int, int]:
    """`slots(...)` as `found[lo:hi]` of the window kept, uncut.

    A search for the first free slot usually stops at the first slot; cutting out the
    fourteen days of slots it might walk (a tuple of ~500) cost more than the walk.
    """
    if days > network.horizon_days:  # past the window kept
        found = network.slots(store_id, at, at + days * DAY_MS)
        return found, 0, len(found)
    # One window per store and block of days, wide enough for any `at` in the block: the
    # options of one promise arrive over several days (reserve today, a shuttle tomorrow, a
    # dropship in five), and a window per day of `at` computed ~15 days of slots for each.
    # And one window per calendar, not per store: a chain's stores share a few calendars (the
    # bench's 733 appointment stores, 10), and a cold window walks ~18 local days through
    # zoneinfo (a fresh server's first appointment promises spent a quarter of their time there).
    block = at - at % _SLOT_BLOCK_MS
    key = (id(network), _calendar(network, store_id), block)
    cached = _SLOTS.get(key)
    if cached is None or cached[0] is not network:
        found = network.slots(store_id, block, block + _SLOT_BLOCK_MS + (network.horizon_days + 1) * DAY_MS)
        if len(_SLOTS) >= _MEMO_ENTRIES:
            _SLOTS.clear()
        cached = _SLOTS[key] = (network, found)
    found = cached[1]
    return found, bisect_left(found, at), bisect_left(found, at + days * DAY_MS)


def _calendar(network: Network, store_id: str) -> Calendar:
    """The store's `Calendar` (KeyError for a site the network does not know, as `Network.slots`)."""
    key = (id(network), store_id)
    cached = _CALENDARS.get(key)
    if cached is None or cached[0] is not network:
        site = network.site(store_id)
        book = site.appointments
        calendar = None if book is None else (site.tz, site.hours, book.slot_minutes, book.opens, book.closes)
        if len(_CALENDARS) >= _MEMO_ENTRIES:
            _CALENDARS.clear()
        cached = _CALENDARS[key] = (network, calendar)
    return cached[1]


_QUARTER_DAY_MS = DAY_MS // 4
_OPENINGS: dict[tuple[int, str, Millis], tuple[Network, Millis, tuple[tuple[tuple[Millis, Millis], ...], ...]]] = {}


def next_opening(network: Network, site_id: str, at: Millis) -> Millis | None:
    """`network.next_opening(site_id, at)`, from the site's opening intervals of the UTC day around `at`.

    A store's next opening is asked for every store with the units in every promise (the
    unit ready `prep_minutes` from now, a new instant every millisecond), and each answer
    went through zoneinfo. The intervals of the local days `Network.next_opening` would
    walk from any instant of that UTC day are computed once: the days from the local date
    of the day's first instant, and where `at` is past the next local midnight, from the
    day after; then the same walk over plain integers.
    """
    cached = _opening_days(network, site_id, at)
    if cached is None:
        return network.next_opening(site_id, at)
    _, midnight, days = cached
    start = 0 if at < midnight else 1
    for intervals in days[start : start + network.horizon_days + 1]:
        for opens, closes in intervals:
            if at < closes:
                return max(at, opens)
    return None


def opening_window(network: Network, site_id: str, at: Millis) -> tuple[Millis | None, bool, Millis, Millis]:
    """`next_opening(network, site_id, at)` as a form that holds for every instant of [lo, hi) (`at` among them).

    (value, follows, lo, hi): for every `t` in [lo, hi), `next_opening(network, site_id, t)`
    is `t` when `follows` (the site is open at `t`), else `value` (the same opening, or None:
    closed through the horizon). A promise keeps a source's options across requests while
    `now` stays in such windows (`ledger.promise`). Near a change of offset the network
    answers for `at` alone ([at, at + 1)).
    """
    cached = _opening_days(network, site_id, at)
    if cached is None:
        return network.next_opening(site_id, at), False, at, at + 1
    _, midnight, days = cached
    # The walk is the same for every instant of the same UTC day on the same side of the local midnight.
    day = at - at % DAY_MS
    start, lo, hi = (0, day, min(midnight, day + DAY_MS)) if at < midnight else (1, max(midnight, day), day + DAY_MS)
    for intervals in days[start : start + network.horizon_days + 1]:
        for opens, closes in intervals:
            if at < closes:
                # Every `t` >= lo passed the intervals before this one (lo is past their closings) and stops here.
                if at < opens:
                    return opens, False, lo, min(opens + 1, closes, hi)
                return None, True, max(lo, opens), min(closes, hi)
            lo = max(lo, closes)
    return None, False, lo, hi


def _opening_days(
    network: Network, site_id: str, at: Millis
) -> tuple[Network, Millis, tuple[tuple[tuple[Millis, Millis], ...], ...]] | None:
    """The kept opening intervals of the site's local days walked from `at`'s UTC day; None near a change of offset."""
    day = at - at % DAY_MS
    key = (id(network), site_id, day)
    cached = _OPENINGS.get(key)
    if cached is None or cached[0] is not network:
        site = network.site(site_id)
        # Only where the zone keeps one UTC offset from a day before to a day after: there the
        # local date of any instant of the day is plain arithmetic. A day near a change of
        # offset (DST, twice a year) is answered by the network itself, as before.
        offsets = {_local(day + k * _QUARTER_DAY_MS, site.zone).utcoffset() for k in range(-4, 9)}
        if len(offsets) != 1:
            return None
        first = _local(day, site.zone).date()
        days = tuple(
            tuple((_wall(date, lo, site.zone), _wall(date, hi, site.zone)) for lo, hi in _open(site, date))
            for date in (first + timedelta(days=k) for k in range(network.horizon_days + 2))
        )
        if len(_OPENINGS) >= _MEMO_ENTRIES:
            _OPENINGS.clear()
        cached = _OPENINGS[key] = (network, _wall(first + timedelta(days=1), 0, site.zone), days)
    return cached


_STEADY: dict[tuple[int, str, Millis, int], tuple[Network, bool]] = {}


def add_days(network: Network, site_id: str, at: Millis, days: int) -> Millis:
    """`network.add_days(site_id, at, days)`: plain arithmetic where the site's zone keeps one UTC offset.

    Every promise adds a carrier's, a route's or a seller's lead days to `now` on the
    source's or store's wall clock, through zoneinfo each time (a twentieth of a
    promise's CPU, cProfile). Wall-clock days are whole 24-hour days wherever the
    offset stays the same from the day before `at` to two days after `at + days`, which
    is looked up once per (site, UTC day, days); elsewhere (a change of offset in
    between) the network answers, as before.
    """
    return at + days * DAY_MS if _steady(network, site_id, at, days) else network.add_days(site_id, at, days)


def days_window(network: Network, site_id: str, at: Millis, days: int) -> tuple[Millis, Millis, Millis]:
    """`add_days(network, site_id, at, days) - at`, an offset that holds for every instant of [lo, hi) (`at` in it).

    Whole 24-hour days for the UTC day of `at` where the zone keeps its offset; near a
    change, the network's answer for `at` alone ([at, at + 1)).
    """
    if _steady(network, site_id, at, days):
        day = at - at % DAY_MS
        return days * DAY_MS, day, day + DAY_MS
    return network.add_days(site_id, at, days) - at, at, at + 1


def _steady(network: Network, site_id: str, at: Millis, days: int) -> bool:
    day = at - at % DAY_MS
    key = (id(network), site_id, day, days)
    cached = _STEADY.get(key)
    if cached is None or cached[0] is not network:
        zone = network.site(site_id).zone
        first, last = min(0, days) - 1, max(0, days) + 2
        offsets = {_local(day + k * _QUARTER_DAY_MS, zone).utcoffset() for k in range(4 * first, 4 * last + 1)}
        if len(_STEADY) >= _MEMO_ENTRIES:
            _STEADY.clear()
        cached = _STEADY[key] = (network, len(offsets) == 1)
    return cached[1]
