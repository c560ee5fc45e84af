"""The network's schedules, memoised: lane departures, appointment slots, store openings.

A lane's departures and a store's slots are pure functions of the network and the
time, and computing them (local wall-clock dates through zoneinfo) was most of a
promise's time once the snapshot was in memory: 2,700 lanes and a thousand stores,
asked again for every request. They are computed once per UTC day window and looked
up by bisection after; the answers are those of `Network.next_run`, `Network.slots`
and `Network.next_opening` (a property test compares them).
"""

from __future__ import annotations

from bisect import bisect_left

from ledger.events import Millis
from ledger.network import DAY_MS, MINUTE_MS, Lane, Network, Run

__all__ = ["next_opening", "next_run", "slots"]

_RUNS: dict[tuple[int, str, Millis], tuple[Network, tuple[Run, ...], tuple[Millis, ...]]] = {}
_SLOTS: dict[tuple[int, str, Millis], tuple[Network, tuple[Millis, ...]]] = {}
_MEMO_ENTRIES = 50_000
"""Entries kept per memo before it is cleared: a day of a national network is ~3,000 windows."""


def next_run(network: Network, lane: Lane, ready_at: Millis) -> Run | None:
    """`network.next_run(lane, ready_at)`, from the lane's departures of the window around `ready_at`."""
    day = ready_at - ready_at % DAY_MS
    key = (id(network), lane.id, day)
    cached = _RUNS.get(key)
    if cached is None or cached[0] is not network:
        end = day + (network.horizon_days + 2) * DAY_MS + lane.cutoff_minutes * MINUTE_MS
        found = network.runs(lane, day, end)
        if len(_RUNS) >= _MEMO_ENTRIES:
            _RUNS.clear()
        cached = _RUNS[key] = (network, found, tuple(run.cutoff_at for run in found))
    _, runs, cutoffs = cached
    i = bisect_left(cutoffs, ready_at)
    if i == len(runs):
        return None
    run = runs[i]
    horizon_end = ready_at + network.horizon_days * DAY_MS + lane.cutoff_minutes * MINUTE_MS
    return run if ready_at <= run.departs_at < horizon_end else None


def slots(network: Network, store_id: str, at: Millis, days: int) -> tuple[Millis, ...]:
    """`network.slots(store_id, at, at + days * DAY_MS)`, from the store's slots of the window around `at`."""
    if days > network.horizon_days:  # past the window kept
        return network.slots(store_id, at, at + days * DAY_MS)
    day = at - at % DAY_MS
    key = (id(network), store_id, day)
    cached = _SLOTS.get(key)
    if cached is None or cached[0] is not network:
        found = network.slots(store_id, day, day + (network.horizon_days + 1) * DAY_MS)
        if len(_SLOTS) >= _MEMO_ENTRIES:
            _SLOTS.clear()
        cached = _SLOTS[key] = (network, found)
    found = cached[1]
    return found[bisect_left(found, at) : bisect_left(found, at + days * DAY_MS)]


_OPENINGS: dict[tuple[int, str, Millis], tuple[Network, Millis | None]] = {}


def next_opening(network: Network, site_id: str, at: Millis) -> Millis | None:
    """`network.next_opening`, remembered by exact arguments: a transfer arrives with its run, at
    the same instant for every request of the day, and each answer went through zoneinfo."""
    key = (id(network), site_id, at)
    cached = _OPENINGS.get(key)
    if cached is None or cached[0] is not network:
        if len(_OPENINGS) >= _MEMO_ENTRIES:
            _OPENINGS.clear()
        cached = _OPENINGS[key] = (network, network.next_opening(site_id, at))
    return cached[1]
