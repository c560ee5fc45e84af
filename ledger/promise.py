"""Promise: where and when a customer can have a basket, from one snapshot.

Pure: the network, a read-only view of one snapshot and the request (with its `now`)
go in; a `Promise` comes out with the ranked options, the stores where the whole
basket can be collected together, and every source that was considered and why it
was left out. Nothing is reserved here: `ledger.confirm` turns a chosen option into
the events that hold it.

An option never asks more of a source than the source's ATP in the view, and every
transfer rides a real departure of its lane (cut-off not passed) and arrives
`transit_minutes` later.
"""

from __future__ import annotations

import hashlib
import weakref
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import numpy as np
from numpy.typing import NDArray

from ledger.answer import (
    BASKET,
    EXAMPLES_PER_REASON,
    Exclusion,
    ExclusionSummary,
    Option,
    Promise,
    PromiseRequest,
    Reason,
    SnapshotView,
    Stock,
    Together,
    check_limit,
)
from ledger.events import Millis
from ledger.fulfilment import HOME, FulfilmentMode, SourceKind
from ledger.nearby import candidates, distances_km
from ledger.network import MINUTE_MS, Lane, Network, Run, Site, SupplierRoute
from ledger.schedule import add_days, days_window, next_opening, opening_window, slot_range, transfer_window

__all__ = ["promise"]

_MODE_ORDER = {
    FulfilmentMode.RESERVE_IN_STORE: 0,
    FulfilmentMode.TRANSFER_TO_STORE: 1,
    FulfilmentMode.DROPSHIP_TO_STORE: 2,
    FulfilmentMode.HOME_DELIVERY: 3,
}
_STORE = SourceKind.STORE
_TRANSFER_ORDER = _MODE_ORDER[FulfilmentMode.TRANSFER_TO_STORE]
_RESERVE_ORDER = _MODE_ORDER[FulfilmentMode.RESERVE_IN_STORE]
_DROPSHIP_ORDER = _MODE_ORDER[FulfilmentMode.DROPSHIP_TO_STORE]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def promise(
    network: Network,
    view: SnapshotView,
    request: PromiseRequest,
    *,
    limit: int | None = None,
    explain: bool = True,
) -> Promise:
    """The ranked options for every item, the together plans, and what was left out and why.

    Options rank by `available_at`, then mode (reserve, transfer, dropship, home), then
    distance, then price (unknown last). With a `limit`, only the best `limit` options and
    plans are kept (the totals still count them all). Without `explain`, exclusions are
    counted and a few kept as examples, never listed whole: building a thousand
    explanations nobody reads was most of a promise's time on a national network.
    """
    if limit is not None:
        check_limit(limit)
    radius = request.radius_km if request.radius_km is not None else network.radius_km
    into = _into(network)
    # Measured only for the stores around the customer (ledger.nearby), in network order as before.
    kinds = into.kinds
    around = [site_id for site_id in candidates(network, request.lat, request.lon, radius) if kinds[site_id] is _STORE]
    stores = {
        site_id: round(km, 3)
        for site_id, km in zip(around, distances_km(network, around, request.lat, request.lon), strict=True)
        if km <= radius
    }
    near = _near(network, into, stores)
    reach = near.reach
    ctx = _Context(network, view, request, radius, stores, explain, into, near)
    if limit is not None and not explain:
        try:
            return _in_bulk(ctx, reach, limit)
        finally:
            # The request's ways hold details bound to the context (made only if shown): a cycle
            # the garbage collector would have to find. Dropped, the context goes when the answer is made.
            ctx.drop_ways()
    # Explained or whole: every source's options built one by one (`from_source`), every option
    # kept. This is the reference the bulk path is held to (tests/unit/ledger/test_promise.py).
    counts = ctx.counts
    found: list[_Found] = []
    bound: dict[tuple[str, str], list[_Row]] = {}
    for sku, qty in request.items:
        # The sources are the sites with a position of the sku; a site that never held
        # it is no source, and listing every site of a national network would bury the
        # answer under a thousand exclusions. One pass over the sku's two columns: only a
        # site that has the units and a way to the customer becomes objects.
        sites, atps = view.sku_atp(sku)
        # Explained, every site is a step (each is listed). Otherwise only the sources and the
        # first few left out of each reason are; the rest are counted in bulk (`_walk`).
        walk, counted = (zip(sites, atps, strict=True), None) if explain else _walk(into, sites, atps, qty, reach)
        for site_id, atp in walk:
            if site_id not in reach or atp < qty:  # `reach` holds network sites only
                reason = ctx.reason_left_out(site_id, atp, qty)
                if explain or counts.get(reason, 0) < EXAMPLES_PER_REASON:
                    ctx.exclude(site_id, sku, reason, partial(ctx.left_out, reason, site_id, sku, qty))
                else:
                    # Only counted (the summary's examples are full): inline, as nine sites in ten
                    # of a national sku end here and a call per site was a quarter of a promise.
                    counts[reason] += 1
                    ctx.found += 1
            else:
                for row in ctx.from_source(site_id, sku, atp, qty):
                    option = _Found.of(row, sku, qty)
                    if option.deliver_to != HOME:
                        bound.setdefault((sku, option.deliver_to), []).append(row)
                    if request.appointment and option.deliver_to != HOME:
                        booked = ctx.with_slot(option)
                        if booked is not None:
                            found.append(booked)
                    else:
                        found.append(option)
        ctx.count_rest(counted or {})
    plans = [plan for store in sorted(stores) if (plan := ctx.together(store, bound)) is not None]
    plans.sort(key=_plan_order)
    if limit is None:
        # Whole (limit None, as confirm asks): every option built, then sorted by its full rank. This is
        # the reference the bounded answer is held to (tests/unit/ledger/test_promise.py).
        options = tuple(sorted((each.option() for each in found), key=_rank))
        together = tuple(plan.build(_best_leg_built) for plan in plans)
    else:
        options = _best(found, limit)
        together = tuple(plan.build(_best_leg) for plan in plans[:limit])
    return Promise(
        snapshot_id=view.snapshot_id,
        now=request.now,
        options=options,
        together=together,
        excluded=tuple(ctx.excluded),
        options_total=len(found),
        together_total=len(plans),
        exclusions=ctx.summary(),
    )


def _in_bulk(ctx: _Context, reach: Set[str], limit: int) -> Promise:
    """A bounded promise without its list of exclusions: the API's default, and most of its CPU.

    The same answer as building every option (the explained path above, cut), built
    differently. What a source offers for this request (its options' ranks, the stores
    they reach, what it left out and why) does not depend on the sku but for a supplier's
    accepted skus and a seller's offer, so it is worked out once per source and request
    (`_Context.ways`) as plain rows, shared by the basket's skus; per sku a source is a
    look-up and a few list extensions, not a walk building objects. Then only the rows
    that can make the cut become `_Found` (`_contenders`), and only the shown plans' legs.
    """
    request, counts = ctx.request, ctx.counts
    ranked: list[tuple[str, int, list[_Row]]] = []
    to_stores: list[list[_Row]] = []
    column = getattr(ctx.view, "sku_atp_column", None)
    for sku, qty in request.items:
        # A view may offer the ATP as a numpy column (the read model's): the walk masks it whole.
        sites, atps = ctx.view.sku_atp(sku) if column is None else column(sku)
        steps, counted = _walk(ctx.into, sites, atps, qty, reach)
        rows: list[_Row] = []
        to_store: list[_Row] = []
        for site_id, atp in steps:
            if site_id not in reach or atp < qty:
                reason = ctx.reason_left_out(site_id, atp, qty)
                ctx.exclude(site_id, sku, reason, partial(ctx.left_out, reason, site_id, sku, qty))
                continue
            ways = ctx.ways(site_id, sku, qty)
            if ways is None:
                continue
            found, stored, left, tally = ways
            rows += found
            to_store += stored
            if not left:
                continue
            for reason in tally:
                if counts.get(reason, 0) < EXAMPLES_PER_REASON:
                    for why, detail in left:
                        ctx.exclude(site_id, sku, why, detail)
                    break
            else:
                # The summary's examples of these reasons are full: counted only, as `exclude` would.
                for reason, more in tally.items():
                    counts[reason] += more
                ctx.found += len(left)
        ctx.count_rest(counted)
        ranked.append((sku, qty, rows))
        to_stores.append(to_store)
    # Per item, its options to each store (the together plans' legs) and the earliest, in one pass.
    bound: list[dict[str, list[_Row]]] = []
    earliest: list[dict[str, Millis]] = []
    for rows in to_stores:
        by_store: dict[str, list[_Row]] = {}
        first: dict[str, Millis] = {}
        for row in rows:
            store, at = row[3], row[0][0]
            if store in by_store:
                by_store[store].append(row)
                if at < first[store]:
                    first[store] = at
            else:
                by_store[store] = [row]
                first[store] = at
        bound.append(by_store)
        earliest.append(first)
    # (ready, distance, store, slot) per plan, as `together` then `plan` would make them; ordered by
    # the first three (unique per plan), and a `_Plan` made only for the shown ones.
    plans = []
    for store in sorted(set(earliest[0]).intersection(*earliest[1:])):
        ready = max([first[store] for first in earliest]) if len(earliest) > 1 else earliest[0][store]
        kept, slot = ctx.plan_slot(store, ready)
        if kept:
            plans.append((ready, ctx.stores[store], store, slot))
    plans.sort()
    shown = [
        _Plan(store, distance, ready, request.items, tuple(by_store[store] for by_store in bound), slot)
        for ready, distance, store, slot in plans[:limit]
    ]
    return Promise(
        snapshot_id=ctx.view.snapshot_id,
        now=request.now,
        options=_best(_contenders(ranked, limit), limit),
        together=tuple(plan.build(_best_leg) for plan in shown),
        excluded=(),
        options_total=sum(len(rows) for _, _, rows in ranked),
        together_total=len(plans),
        exclusions=ctx.summary(),
    )


def _contenders(ranked: list[tuple[str, int, list[_Row]]], limit: int) -> list[_Found]:
    """The rows that can make `_best`'s cut, built as `_Found`; `_best` of these is `_best` of all.

    `_best` keeps each (sku, mode)'s best option (the first in rank order: one with its
    least key) and then the best by rank: every option it keeps is one of a (sku, mode)'s
    options at its least key, or among the first `limit` by rank, so has a key no greater
    than the `limit`-th least. Per sku (`ranked`: sku, qty, its rows) those are the rows
    up to that key and each mode's run at its least key; the rest are never built.
    """
    if sum(len(rows) for _, _, rows in ranked) <= limit:
        return [_Found.of(row, sku, qty) for sku, qty, rows in ranked for row in rows]
    for _, _, rows in ranked:
        rows.sort(key=_row_key)
    cut = sorted(row[0] for _, _, rows in ranked for row in rows[:limit])[limit - 1]
    kept: list[_Found] = []
    for sku, qty, rows in ranked:
        end = bisect_right(rows, cut, key=_row_key)
        chosen = rows[:end]
        wanted = set(map(_row_mode, rows))
        wanted.difference_update(map(_row_mode, chosen))
        i = end
        while wanted:  # every wanted mode has a row past `end`
            row = rows[i]
            if row[1] in wanted:
                # A key names its mode: the run of rows equal to this one's is the mode's least.
                wanted.discard(row[1])
                run_end = bisect_right(rows, row[0], lo=i, key=_row_key)
                chosen += rows[i:run_end]
                i = run_end
            else:
                i += 1
        kept += (_Found.of(row, sku, qty) for row in chosen)
    return kept


@dataclass(frozen=True, slots=True)
class _Held:
    """The sites holding a sku (one tuple shared by every sku held by the same sites), indexed once, as arrays."""

    sites: Sequence[str]
    """Kept: the cache's key is its identity."""
    unknown: NDArray[np.intp]
    """The places of the sites the network does not know, ascending."""
    known: NDArray[np.bool_]
    by_path: Mapping[Reason, NDArray[np.intp]]
    """Known sites by the reason they are left out for when they have units but no way, ascending."""
    near: dict[int, tuple[Set[str], NDArray[np.intp], NDArray[np.bool_]]]
    """id(reach) -> (reach, the places of its sites, ascending, and whether each site is in it): a
    `_Near`'s reach is one object for every request that finds it kept, so its places are too."""

    def around(self, reach: Set[str]) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
        """The places of the sites in `reach` (ascending), and a mask of them over `sites`."""
        kept = self.near.get(id(reach))
        if kept is not None and kept[0] is reach:
            return kept[1], kept[2]
        inside = np.fromiter((site in reach for site in self.sites), dtype=np.bool_, count=len(self.sites))
        places = np.flatnonzero(inside)
        if _AROUND[0] >= _AROUND_KEPT:
            # Bounded over every site set: a read model with many site sets would otherwise keep a
            # mask per (site set, set of stores) for each.
            for _, held in list(_HELD.values()):
                held.near.clear()
            _AROUND[0] = 0
        _AROUND[0] += 1
        # The reach is kept with its places so its id cannot be reused by another while cached.
        self.near[id(reach)] = (reach, places, inside)
        return places, inside


_HELD: dict[int, tuple[_Into, _Held]] = {}
_HELD_SITES = [0]
"""Sites indexed in `_HELD` over all its entries: bounded, as a view answering without the read
model hands a new list per request (each indexed once, then dropped when the bound is reached)."""
_HELD_SITES_KEPT = 200_000
_AROUND = [0]
"""Entries in the `near` of every `_Held` kept."""
_AROUND_KEPT = 4_096
"""A few kilobytes each for a national sku's thousand sites: ~10 MB."""


def _held(into: _Into, sites: Sequence[str]) -> _Held:
    cached = _HELD.get(id(sites))
    if cached is not None and cached[0] is into and cached[1].sites is sites:
        return cached[1]
    kinds = into.kinds
    by_path: dict[Reason, list[int]] = {}
    for i, site in enumerate(sites):
        if site in kinds:
            by_path.setdefault(_NO_PATH[kinds[site]], []).append(i)
    held = _Held(
        sites,
        np.array([i for i, site in enumerate(sites) if site not in kinds], dtype=np.intp),
        np.array([site in kinds for site in sites], dtype=np.bool_),
        {reason: np.array(places, dtype=np.intp) for reason, places in by_path.items()},
        {},
    )
    if _HELD_SITES[0] + len(sites) > _HELD_SITES_KEPT:
        # A read model shares a few site tuples; many means many views went by, or new lists.
        _HELD.clear()
        _HELD_SITES[0] = 0
    _HELD[id(sites)] = (into, held)
    _HELD_SITES[0] += len(sites)
    return held


def _walk(
    into: _Into, sites: Sequence[str], atps: Sequence[int] | NDArray[np.integer], qty: int, reach: Set[str]
) -> tuple[list[tuple[str, int]], dict[Reason, int]]:
    """The walk over a sku's sites for a bounded promise: the steps that matter, and the rest counted.

    A step is a site with the units and a way (a source), or one of the first
    `EXAMPLES_PER_REASON` sites left out for each reason, in site order: the walk over
    every site would make exactly these exclusions examples, and only count the others
    (by then their reason has its examples). Those others are counted by reason here, as
    masks over the sku's ATP column (numpy): nine sites in ten of a national sku are left
    out, and a Python step per site, then per reason, was a tenth of a promise.
    """
    held = _held(into, sites)
    has = np.asarray(atps, dtype=np.int64) >= qty
    places, inside = held.around(reach)
    steps = set(places[has[places]].tolist())  # the sources: in reach (network sites) with the units
    counted: dict[Reason, int] = {}

    def left_out(reason: Reason, found: NDArray[np.intp]) -> None:
        first = found[:EXAMPLES_PER_REASON].tolist()
        steps.update(first)
        if len(found) > len(first):
            counted[reason] = len(found) - len(first)

    left_out(Reason.NOT_IN_NETWORK, held.unknown)
    left_out(Reason.INSUFFICIENT_ATP, np.flatnonzero(~has & held.known))
    for reason, known in held.by_path.items():
        # With the units, no way: not in reach.
        left_out(reason, known[has[known] & ~inside[known]])
    return [(sites[i], int(atps[i])) for i in sorted(steps)], counted


_NO_PATH = {
    SourceKind.STORE: Reason.OUT_OF_RADIUS,
    SourceKind.DC: Reason.NO_LANE,
    SourceKind.SUPPLIER: Reason.NO_ROUTE,
    SourceKind.SELLER: Reason.NO_ROUTE,
}
"""The reason a source with units but no way to the customer is left out, by its kind."""


@dataclass(frozen=True, slots=True)
class _Into:
    """Who can reach a store: the origins of the lanes and the suppliers of the routes into it."""

    lanes: Mapping[str, frozenset[str]]
    routes: Mapping[str, frozenset[str]]
    anywhere: frozenset[str]
    """Sources that may serve whatever the radius: DCs with a carrier, sellers."""
    kinds: Mapping[str, SourceKind]
    """Every site of the network and its kind."""
    lanes_into: Mapping[str, tuple[tuple[int, Lane], ...]]
    """Per store, the lanes into it, each with its place among its origin's `lanes_from`."""
    picky: frozenset[str]
    """Suppliers with a route that accepts some skus only: what they offer depends on the sku."""
    kept: dict[_Signature, list[_Kept | None]]
    """What a store, DC or supplier offers over a window of `now` (`_Context.ways`), by what that depends on of
    the set of stores (`_Signature`): shared by every set giving the source the same ways (customers a few
    kilometres apart ask different sets), whatever the sku."""


_INTO: dict[int, tuple[Network, _Into]] = {}


def _into(network: Network) -> _Into:
    """The reverse lane and route index of a network, built once per network object."""
    cached = _INTO.get(id(network))
    if cached is not None and cached[0] is network:
        return cached[1]
    lanes: dict[str, set[str]] = {}
    for lane in network.lanes:
        lanes.setdefault(lane.destination, set()).add(lane.origin)
    routes: dict[str, set[str]] = {}
    for route in network.dropship:
        routes.setdefault(route.store, set()).add(route.supplier)
    anywhere = frozenset(
        site.id
        for site in network.sites
        if site.kind is SourceKind.SELLER or (site.kind is SourceKind.DC and network.carrier(site.id) is not None)
    )
    lanes_into: dict[str, list[tuple[int, Lane]]] = {}
    for origin in {lane.origin for lane in network.lanes}:
        for place, lane in enumerate(network.lanes_from(origin)):
            lanes_into.setdefault(lane.destination, []).append((place, lane))
    into = _Into(
        {store: frozenset(found) for store, found in lanes.items()},
        {store: frozenset(found) for store, found in routes.items()},
        anywhere,
        {site.id: site.kind for site in network.sites},
        {store: tuple(found) for store, found in lanes_into.items()},
        frozenset(route.supplier for route in network.dropship if route.skus is not None),
        {},
    )
    if len(_INTO) >= 8:  # a process serves one network; tests build many
        _INTO.clear()
    # The network is kept with its index so its id cannot be reused by another while cached.
    _INTO[id(network)] = (network, into)
    return into


class _Near:
    """What a promise needs of the stores in its radius, whoever asks: kept per set of stores, across requests.

    The sites that may have a way to the customer (`reach`), each origin's lanes into a
    store of the set (`lanes_in`) and each supplier's routes to one (`routes_in`) depend on
    the network and the set of stores in the radius only, not on the point, the time or
    the snapshot; customers near one town ask for the same few sets. Built per request they
    were a tenth of a promise (the lanes of ~40 stores regrouped by origin, a dict per
    request). Each origin's transfers are kept here too, with the instants they hold for
    (`transfers_at`): a lane's answer changes only at its next cut-off.
    """

    __slots__ = ("kept", "lanes_in", "reach", "routes_in", "transfers")

    def __init__(self, network: Network, into: _Into, stores: tuple[str, ...]) -> None:
        found = set(into.anywhere)
        found.update(stores)
        lanes: dict[str, list[tuple[int, Lane]]] = {}
        for store in stores:
            found.update(into.lanes.get(store, ()))
            found.update(into.routes.get(store, ()))
            for place, lane in into.lanes_into.get(store, ()):
                lanes.setdefault(lane.origin, []).append((place, lane))
        self.reach: frozenset[str] = frozenset(found)
        """A store in the radius (reserve there), a site with a lane or a dropship route into one, a DC
        with a carrier, a seller: the sites that may have a way; every other site with units has none."""
        # In `lanes_from` order: the order a source's exclusions are found in.
        self.lanes_in: dict[str, tuple[Lane, ...]] = {
            origin: tuple(lane for _, lane in sorted(places, key=_place)) for origin, places in lanes.items()
        }
        """Per origin, its lanes into a store in the radius (a DC has ~90 lanes; a basket asked each)."""
        inside = set(stores)
        suppliers = {supplier for store in stores for supplier in into.routes.get(store, ())}
        self.routes_in: dict[str, tuple[SupplierRoute, ...]] = {
            supplier: tuple(route for route in network.routes_from(supplier) if route.store in inside)
            for supplier in suppliers
        }
        """Per supplier, its routes to a store in the radius, in `routes_from` order (the order found)."""
        self.transfers: dict[str, tuple[Millis, Millis, tuple[_Transfer, ...]]] = {}
        """Origin -> (lo, hi, its lanes' transfers): the same for every `now` in (lo, hi]."""
        self.kept: dict[str, list[_Kept | None]] = {}
        """Source -> its entry of `_Into.kept` for this set of stores (found on its first promise here): a list of
        one, so a lookup per request does not hash the signature."""

    def transfers_at(self, network: Network, origin: str, now: Millis) -> tuple[_Transfer, ...]:
        """Per lane of `origin` into the radius, in order: (lane, its next run from `now`, the opening after)."""
        return self.transfers_window(network, origin, now)[2]

    def transfers_window(
        self, network: Network, origin: str, now: Millis
    ) -> tuple[Millis, Millis, tuple[_Transfer, ...]]:
        """`transfers_at`, with the instants (lo, hi] it holds for (`now` among them)."""
        kept = self.transfers.get(origin)
        if kept is not None and kept[0] < now <= kept[1]:
            return kept
        lo, hi = now - 1, now + _FOREVER
        found: list[_Transfer] = []
        for lane in self.lanes_in.get(origin, ()):
            got = transfer_window(network, lane, now)
            if got is None:
                # No departure within the horizon: one may enter it as `now` moves, so keep nothing.
                found.append((lane, None, None))
                hi = lo
                continue
            run, at, since, until = got
            lo, hi = max(lo, since), min(hi, until)
            found.append((lane, run, at))
        outcome = tuple(found)
        if lo < now <= hi:
            # One tuple assigned: a thread reading the entry sees the old one or the new one, whole.
            kept = self.transfers[origin] = (lo, hi, outcome)
            return kept
        return now - 1, now, outcome


_Transfer = tuple[Lane, Run | None, Millis | None]
"""A lane's transfer from now: the lane, its next run (None: no departure within the horizon) and the
destination's first opening after the run arrives (None: closed through the horizon)."""
_FOREVER = 1 << 62
_NEAR: dict[tuple[int, tuple[str, ...]], tuple[Network, _Near]] = {}
_NEAR_KEPT = 1_024
"""Sets of stores kept (a few kilobytes each): a server's customers ask for a few hundred."""


def _near(network: Network, into: _Into, stores: Mapping[str, float]) -> _Near:
    """The `_Near` of the stores in the radius (their ids in network order: one set, one key)."""
    key = (id(network), tuple(stores))
    cached = _NEAR.get(key)
    if cached is not None and cached[0] is network:
        return cached[1]
    near = _Near(network, into, key[1])
    if len(_NEAR) >= _NEAR_KEPT:
        _NEAR.clear()
    # The network is kept with it so its id cannot be reused by another while cached.
    _NEAR[key] = (network, near)
    return near


def _rank(option: Option) -> tuple[Millis, int, float, bool, float, str]:
    price = option.price if option.price is not None else 0.0
    return (
        option.available_at,
        _MODE_ORDER[option.mode],
        option.distance_km,
        option.price is None,
        price,
        option.option_id,
    )


def _option_id(
    mode: str, sku: str, qty: int, source: str, deliver_to: str, run_id: str | None, slot: Millis | None
) -> str:
    """`opt-` and 16 hex digits of the SHA-256 of the parts joined by U+001F (None as nothing).

    A hash keeps the id short and free of separators whatever the ids contain. One
    f-string rather than a join over the parts: a promise builds ~150 of them.
    """
    run = "" if run_id is None else run_id
    at = "" if slot is None else slot
    text = f"{mode}\x1f{sku}\x1f{qty}\x1f{source}\x1f{deliver_to}\x1f{run}\x1f{at}"
    return "opt-" + hashlib.sha256(text.encode()).hexdigest()[:16]


_Left = tuple[Reason, str | Callable[[], str]]
"""What a source left out on the way and why (the detail made only if it is shown)."""
_Key = tuple[Millis, int, float, bool, float]
"""`_rank` but the id: (available_at, mode's order, distance rounded to metres, no price, price)."""
_Row = tuple[_Key, FulfilmentMode, Site, str, Run | None, Millis | None, float | None, Millis | None]
"""An option found, whatever the sku and qty: its key, mode, source, `deliver_to`, run, `arrives_at`,
price and appointment. A tuple, not an object: a promise finds ~150 and shows ten."""


def _row(
    mode: FulfilmentMode,
    source: Site,
    deliver_to: str,
    available_at: Millis,
    distance_km: float,
    *,
    price: float | None = None,
    run: Run | None = None,
    arrives_at: Millis | None = None,
) -> _Row:
    # The key on the values the option will carry (distance rounded to metres).
    key = (available_at, _MODE_ORDER[mode], round(distance_km, 3), price is None, price if price is not None else 0.0)
    return key, mode, source, deliver_to, run, arrives_at, price, None


def _row_key(row: _Row) -> _Key:
    return row[0]


def _row_mode(row: _Row) -> FulfilmentMode:
    return row[1]


def _booked(row: _Row, slot: Millis) -> _Row:
    """The row with an appointment slot: a variant under its own id, the same key."""
    return row[0], row[1], row[2], row[3], row[4], row[5], row[6], slot


class _Found:
    """An option found for one sku, not yet built: its rank without the id, and what building it needs.

    A one-sku promise on a national network finds ~150 options and shows ten; building
    each as an `Option` with its SHA-256 id was a quarter of a basket's CPU. The id only
    breaks ties of (available_at, mode, distance, price), so it is computed for an
    option that is shown or tied with one that might be, and remembered.
    """

    __slots__ = (
        "_id",
        "appointment_at",
        "arrives_at",
        "deliver_to",
        "key",
        "mode",
        "price",
        "qty",
        "run",
        "sku",
        "source",
    )

    key: _Key
    mode: FulfilmentMode
    source: Site
    deliver_to: str
    run: Run | None
    arrives_at: Millis | None
    price: float | None
    appointment_at: Millis | None
    sku: str
    qty: int
    _id: str | None

    @classmethod
    def of(cls, row: _Row, sku: str, qty: int) -> _Found:
        """The row's option for `qty` of `sku`."""
        found = cls.__new__(cls)
        found.key, found.mode, found.source, found.deliver_to, found.run, found.arrives_at = row[:6]
        found.price, found.appointment_at = row[6], row[7]
        found.sku, found.qty, found._id = sku, qty, None
        return found

    def option_id(self) -> str:
        """The id the built option carries (computed once)."""
        if self._id is None:
            run_id = self.run.run_id if self.run is not None else None
            self._id = _option_id(
                self.mode.value, self.sku, self.qty, self.source.id, self.deliver_to, run_id, self.appointment_at
            )
        return self._id

    def rank(self) -> tuple[Millis, int, float, bool, float, str]:
        """`_rank` of the built option."""
        return (*self.key, self.option_id())

    def booked(self, slot: Millis) -> _Found:
        """The same option with an appointment slot (a variant under its own id; the same rank key)."""
        return _Found.of(_booked(self.row(), slot), self.sku, self.qty)

    def row(self) -> _Row:
        """The row this option was found as (with its appointment, if booked)."""
        return (
            self.key,
            self.mode,
            self.source,
            self.deliver_to,
            self.run,
            self.arrives_at,
            self.price,
            self.appointment_at,
        )

    def option(self) -> Option:
        """The option as the answer shows it."""
        run = self.run
        return Option(
            option_id=self.option_id(),
            mode=self.mode,
            sku=self.sku,
            qty=self.qty,
            source_id=self.source.id,
            source_kind=self.source.kind,
            deliver_to=self.deliver_to,
            available_at=self.key[0],
            distance_km=self.key[2],
            price=self.price,
            run_id=run.run_id if run is not None else None,
            pick_by=run.cutoff_at if run is not None else None,
            departs_at=run.departs_at if run is not None else None,
            arrives_at=run.arrives_at if run is not None else self.arrives_at,
            appointment_at=self.appointment_at,
        )


def _place(lane: tuple[int, Lane]) -> int:
    return lane[0]


def _key(found: _Found) -> tuple[Millis, int, float, bool, float]:
    return found.key


def _groups(ordered: list[_Found]) -> list[tuple[int, int]]:
    """The runs of equal keys in `ordered` (sorted by key), as (start, end) slices."""
    bounds = []
    start = 0
    for i in range(1, len(ordered)):
        if ordered[i].key != ordered[i - 1].key:
            bounds.append((start, i))
            start = i
    if ordered:
        bounds.append((start, len(ordered)))
    return bounds


def _in_id_order(ordered: list[_Found], start: int, end: int) -> list[_Found]:
    """One run of equal keys put in full rank order (in place: by id) and returned."""
    if end - start > 1:
        ordered[start:end] = sorted(ordered[start:end], key=_Found.option_id)
    return ordered[start:end]


def _best(found: list[_Found], limit: int) -> tuple[Option, ...]:
    """`best_options` of every option built and sorted by `_rank`, building only those kept.

    Sorted by the rank without the id; a run of equal keys is put in id order only when
    the walk reaches it. The same two steps as `best_options`: each (sku, mode)'s best in
    rank order until `limit`, then the next best by rank.
    """
    found.sort(key=_key)
    groups = _groups(found)
    if len(found) <= limit:
        return tuple(f.option() for start, end in groups for f in _in_id_order(found, start, end))
    chosen: list[_Found] = []
    pairs: set[tuple[str, FulfilmentMode]] = set()
    for start, end in groups:
        if all((f.sku, f.mode) in pairs for f in found[start:end]):
            continue
        for f in _in_id_order(found, start, end):
            if (f.sku, f.mode) not in pairs:
                pairs.add((f.sku, f.mode))
                chosen.append(f)
                if len(chosen) == limit:
                    break
        if len(chosen) == limit:
            break
    taken = {id(f) for f in chosen}
    for start, end in groups:
        if len(chosen) >= limit:
            break
        for f in _in_id_order(found, start, end):
            if id(f) not in taken:
                chosen.append(f)
                if len(chosen) == limit:
                    break
    chosen.sort(key=_Found.rank)
    return tuple(f.option() for f in chosen)


def _best_leg(rows: Sequence[_Row], sku: str, qty: int) -> _Found:
    """The row `_rank` puts first, as `_Found`; only the rows tied on the rest of the rank are built (for their ids).

    A plan's rows to its store are a few to a dozen per item; building each as `_Found` to
    keep one was a tenth of a bounded promise.
    """
    best = min(map(_row_key, rows))
    tied = [row for row in rows if row[0] == best]
    if len(tied) == 1:
        return _Found.of(tied[0], sku, qty)
    return min((_Found.of(row, sku, qty) for row in tied), key=_Found.option_id)


def _best_leg_built(rows: Sequence[_Row], sku: str, qty: int) -> _Found:
    """`_best_leg` the plain way: every row built, and the least full rank (the reference)."""
    return min((_Found.of(row, sku, qty) for row in rows), key=_Found.rank)


@dataclass(frozen=True, slots=True)
class _Plan:
    """A together plan before its legs are chosen by id: enough to order the plans."""

    store_id: str
    distance_km: float
    ready_at: Millis
    items: tuple[tuple[str, int], ...]
    """The request's (sku, qty), in its order."""
    candidates: tuple[Sequence[_Row], ...]
    """Per item, the rows of its options bound to the store."""
    slot: Millis | None

    def build(self, best: Callable[[Sequence[_Row], str, int], _Found]) -> Together:
        legs = [best(rows, sku, qty) for (sku, qty), rows in zip(self.items, self.candidates, strict=True)]
        if self.slot is not None:
            legs = [leg.booked(self.slot) for leg in legs]
        return Together(self.store_id, self.distance_km, self.ready_at, tuple(leg.option() for leg in legs), self.slot)


def _plan_order(plan: _Plan) -> tuple[Millis, float, str]:
    # Unique per plan: the plans are ordered with no leg built.
    return plan.ready_at, plan.distance_km, plan.store_id


_Ways = tuple[list[_Row], list[_Row], list[_Left], dict[Reason, int]]
"""What one source offers one request, worked out once (`_Context.ways`) and shared by its skus:
its options in the order found (booked with their slot when an appointment is asked), its
options to stores (unbooked: a together plan books its own slot), what it left out on the way
and why in the order found, and that counted by reason. A tuple: ~70 sources a promise."""


class _Context:
    """One promise's inputs and the exclusions found so far."""

    def __init__(
        self,
        network: Network,
        view: SnapshotView,
        request: PromiseRequest,
        radius: float,
        stores: dict[str, float],
        explain: bool,
        into: _Into,
        near: _Near,
    ) -> None:
        self.network, self.view, self.request, self.into, self.near = network, view, request, into, near
        self.now, self.radius, self.stores = request.now, radius, stores
        self.explain = explain
        self.excluded: list[Exclusion] = []
        """Every exclusion, in the order found; empty unless `explain`."""
        self.counts: dict[Reason, int] = {}
        """Exclusions by reason so far (a reason counted is in `_examples` too)."""
        self._examples: dict[Reason, list[Exclusion]] = {}
        self.found = 0
        """Exclusions so far."""
        self._slots = _kept_slots(network, view)
        """(store, instant) -> the first free slot there at or after it, or why none: kept per view."""
        self._ways: dict[tuple[str, str], _Ways] = {}
        """(source, sku or "" when the sku does not matter) -> `ways`."""
        self.lanes_in = near.lanes_in

    def exclude(self, site_id: str, sku: str, reason: Reason, detail: str | Callable[[], str]) -> None:
        """Count an exclusion; its detail (text, or a function making it) is built only if it is shown."""
        self.found += 1
        seen = self.counts.get(reason, 0)
        self.counts[reason] = seen + 1
        if self.explain or seen < EXAMPLES_PER_REASON:
            item = Exclusion(site_id, sku, reason, detail if isinstance(detail, str) else detail())
            if seen < EXAMPLES_PER_REASON:
                self._examples.setdefault(reason, []).append(item)
            if self.explain:
                self.excluded.append(item)

    def summary(self) -> tuple[ExclusionSummary, ...]:
        """The exclusions by reason, as `summarise` gives them from the full list."""
        order = sorted(self.counts, key=lambda reason: (-self.counts[reason], reason.value))
        return tuple(ExclusionSummary(r, self.counts[r], tuple(self._examples[r])) for r in order)

    def left_out(self, reason: Reason, site_id: str, sku: str, qty: int) -> str:
        """The detail of a source left out before its options were looked at: unknown, short, or no way."""
        if reason is Reason.NOT_IN_NETWORK:
            return f"{site_id} is not in the network file"
        if reason is Reason.INSUFFICIENT_ATP:
            return self.short(site_id, sku, qty)
        return self.no_path(self.network.site(site_id))

    def short(self, site_id: str, sku: str, qty: int) -> str:
        """Why the site's ATP does not cover `qty` (its unpromised inbound lines named)."""
        return self._short(site_id, sku, self.view.stock_at(site_id, sku), qty)

    def no_path(self, site: Site) -> str:
        """Why a source with the units has no way to the customer."""
        return self._no_path(site)[1]

    def reason_left_out(self, site_id: str, atp: int, qty: int) -> Reason:
        """Why a site is no source before its ways are looked at: unknown, short, or no way (by its kind)."""
        kinds = self.into.kinds
        if site_id not in kinds:
            return Reason.NOT_IN_NETWORK
        if atp < qty:
            return Reason.INSUFFICIENT_ATP
        return _NO_PATH[kinds[site_id]]

    def count_rest(self, counted: Mapping[Reason, int]) -> None:
        """Count the sites `_walk` left out without a step."""
        for reason, more in counted.items():
            # Each reason's first few in this sku's walk were steps: the count is at the summary's
            # examples already, so the rest would have been counted only, as they are here.
            self.counts[reason] += more
            self.found += more

    def from_source(self, site_id: str, sku: str, atp: int, qty: int) -> list[_Row]:
        """The options one source with `atp` units (its ATP column's) offers; exclusions recorded on the way.

        Only a seller's position is read whole (its offer): the others need nothing but
        the ATP the walk over the column already read (a `stock_at` per source was a
        twentieth of a promise).
        """
        site = self.network.site(site_id)
        stock = self.view.stock_at(site_id, sku) if site.kind is SourceKind.SELLER else None
        if atp < qty or (site.kind is SourceKind.SELLER and (stock is None or stock.atp < qty)):
            # Short, or the view's column and its row disagree: offer nothing.
            self.exclude(site.id, sku, Reason.INSUFFICIENT_ATP, self.short(site_id, sku, qty))
            return []
        found, left = self._offers(site, sku, stock)
        for reason, detail in left:
            self.exclude(site.id, sku, reason, detail)
        return found

    def drop_ways(self) -> None:
        """Forget this request's ways (`ways`): once the answer is made, nothing asks for them again."""
        self._ways.clear()

    def ways(self, site_id: str, sku: str, qty: int) -> _Ways | None:
        """`from_source` of a source with the units, as rows shared by the request's skus; None if short.

        Kept per source, or per (source, sku) for a supplier with routes for some skus
        only and a seller (its offer); with an appointment, the slots are booked here too
        (the first free slot depends on the store and the instant, not the sku). But for
        a seller's, what a source offers is kept across requests too (`_kept`, `_Into.kept`).
        """
        site = self.network.site(site_id)
        kind = site.kind
        stock = None
        if kind is SourceKind.SELLER:
            stock = self.view.stock_at(site_id, sku)
            if stock is None or stock.atp < qty:
                # The view's column and its row disagree: offer nothing, as `from_source`.
                self.exclude(site_id, sku, Reason.INSUFFICIENT_ATP, partial(self.short, site_id, sku, qty))
                return None
            key = (site_id, sku)
        else:
            key = (site_id, sku if kind is SourceKind.SUPPLIER and site_id in self.into.picky else "")
        # Kept across requests whatever the sku: a supplier's routes that take some skus only are checked per request.
        ways = self._ways.get(key)
        if ways is None:
            if stock is not None:
                ways = self._ways[key] = self._ways_of(*self._offers(site, sku, stock))
                return ways
            box = self.near.kept.get(site_id)
            if box is None:
                box = self.near.kept[site_id] = self._box(site_id)
            kept = box[0]
            if kept is None or not kept[0] <= self.now < kept[1]:
                # One tuple assigned: a thread reading the entry sees the old one or the new one, whole.
                kept = box[0] = self._kept(site)
            ways = self._ways[key] = self._ways_of(*self._rows(site, sku, kept))
        return ways

    def _box(self, site_id: str) -> list[_Kept | None]:
        """The source's entry of `_Into.kept`, by what its ways (`_kept`) depend on of the set of stores."""
        near, kept = self.near, self.into.kept
        lanes = tuple(lane.id for lane in near.lanes_in.get(site_id, ()))
        # Routes by identity: an `_Into` (which holds the memo) serves one network, alive while it answers.
        routes = tuple(map(id, near.routes_in.get(site_id, ())))
        signature = (site_id, lanes, site_id in self.stores, routes)
        box = kept.get(signature)
        if box is None:
            if len(kept) >= _KEPT_WAYS:
                # Bounded: an entry is a source's few rows; the sets of stores kept hold theirs (`_NEAR_KEPT`).
                kept.clear()
            box = kept[signature] = [None]
        return box

    def _rows(self, site: Site, sku: str, kept: _Kept) -> tuple[list[_Row], list[_Left]]:
        """`_offers` of a store, DC or supplier from what it offers in the window: the rows at this `now` and point."""
        _, _, parts, pending, carrier, routes = kept
        now, stores = self.now, self.stores
        found: list[_Row] = [
            (
                (now + offset if at is None else at, order, stores[to], True, 0.0),
                mode,
                source,
                to,
                run,
                None if arrives is None else now + arrives,
                None,
                None,
            )
            for at, offset, order, mode, source, to, run, arrives in parts
        ]
        left: list[_Left] = [(r, d if isinstance(d, str) else partial(d, self)) for r, d in pending] if pending else []
        for route, part, why in routes:
            # As `_from_supplier`, route by route: whether the route takes the sku is the request's.
            if not route.accepts(sku):
                left.append((Reason.NOT_ACCEPTED, f"{route.store} does not accept {sku} by dropship from {site.id}"))
            elif part is not None:
                at, offset, order, mode, source, to, run, arrives = part
                key = (now + offset if at is None else at, order, stores[to], True, 0.0)
                found.append((key, mode, source, to, run, None if arrives is None else now + arrives, None, None))
            elif why is not None:
                left.append((why[0], why[1] if isinstance(why[1], str) else partial(why[1], self)))
        if carrier is not None:
            # As `_from_dc`: the carrier's range is the customer's, the rest of the row is the window's.
            max_km, lead = carrier
            km = self.network.distance_km(site.id, self.request.lat, self.request.lon)
            if max_km is not None and km > max_km:
                left.append((Reason.OUT_OF_CARRIER_RANGE, partial(_beyond_carrier, site.id, km, max_km)))
            else:
                at = now + lead
                found.append(_row(FulfilmentMode.HOME_DELIVERY, site, HOME, at, km, arrives_at=at))
        if not found and not left:
            left.append((_NO_PATH[site.kind], partial(self.no_path, site)))
        return found, left

    def _kept(self, site: Site) -> _Kept:
        """What a store, DC or supplier offers (`_offers`'s rules) for every `now` of a window around this one.

        Each instant is kept as fixed or as `now` plus an offset, in the window where that
        form holds (`opening_window`, `days_window`, the lanes' `transfers_window`): a store
        open at `now + prep` is ready at `now + prep` until it closes; a transfer arrives at
        the same opening until its lane's cut-off. The details of what is left out are made
        with the request's `now` (`partial(detail, ctx)`), as `_offers` makes them.
        """
        network, now = self.network, self.now
        lo, hi = -_FOREVER, _FOREVER
        parts: list[_Part] = []
        pending: list[_Pending] = []
        carrier: tuple[float | None, Millis] | None = None
        routes: list[_Route] = []
        if site.kind is SourceKind.STORE:
            if site.id in self.stores:
                prep = site.prep_minutes * MINUTE_MS
                value, follows, since, until = opening_window(network, site.id, now + prep)
                lo, hi = max(lo, since - prep), min(hi, until - prep)
                mode = FulfilmentMode.RESERVE_IN_STORE
                if follows:
                    parts.append((None, prep, _RESERVE_ORDER, mode, site, site.id, None, None))
                elif value is None:
                    pending.append((Reason.CLOSED, partial(_closed_later, site.id, prep)))
                else:
                    parts.append((value, 0, _RESERVE_ORDER, mode, site, site.id, None, None))
            lo, hi = self._kept_transfers(site, parts, pending, lo, hi)
        elif site.kind is SourceKind.DC:
            lo, hi = self._kept_transfers(site, parts, pending, lo, hi)
            route = network.carrier(site.id)
            if route is not None:
                lead, since, until = days_window(network, site.id, now, route.lead_days)
                lo, hi = max(lo, since), min(hi, until)
                carrier = (route.max_km, lead)
        else:
            mode = FulfilmentMode.DROPSHIP_TO_STORE
            for supplied in self.near.routes_in.get(site.id, ()):
                # Every route worked out, whether or not it takes the sku: the sku is the request's (`_rows`).
                store = supplied.store
                lead, since, until = days_window(network, store, now, supplied.lead_days)
                lo, hi = max(lo, since), min(hi, until)
                value, follows, since, until = opening_window(network, store, now + lead)
                lo, hi = max(lo, since - lead), min(hi, until - lead)
                if follows:
                    routes.append((supplied, (None, lead, _DROPSHIP_ORDER, mode, site, store, None, lead), None))
                elif value is None:
                    routes.append((supplied, None, (Reason.CLOSED, partial(_closed_later, store, lead))))
                else:
                    routes.append((supplied, (value, 0, _DROPSHIP_ORDER, mode, site, store, None, lead), None))
        return lo, hi, tuple(parts), tuple(pending), carrier, tuple(routes)

    def _kept_transfers(
        self, site: Site, parts: list[_Part], pending: list[_Pending], lo: Millis, hi: Millis
    ) -> tuple[Millis, Millis]:
        """`_transfers` for `_kept`: its parts and what it left out appended, the window narrowed to the lanes'."""
        if site.id not in self.lanes_in:
            return lo, hi
        since, until, outcome = self.near.transfers_window(self.network, site.id, self.now)
        mode = FulfilmentMode.TRANSFER_TO_STORE
        for lane, run, at in outcome:
            if run is None:
                pending.append((Reason.NO_DEPARTURE, partial(_no_departure_later, lane)))
            elif at is None:
                pending.append((Reason.CLOSED, partial(_closed_at_later, lane.destination, run.arrives_at)))
            else:
                parts.append((at, 0, _TRANSFER_ORDER, mode, site, lane.destination, run, None))
        # (since, until] of `now`, as [since + 1, until + 1).
        return max(lo, since + 1), min(hi, until + 1)

    def _ways_of(self, rows: list[_Row], left: list[_Left]) -> _Ways:
        to_store = [row for row in rows if row[3] != HOME]
        if self.request.appointment and to_store:
            found = []
            for row in rows:
                if row[3] == HOME:
                    found.append(row)
                    continue
                # As `with_slot` after `from_source`: booked, or left out after the source's other exclusions.
                slot = self._first_slot(row[3], row[0][0])
                if isinstance(slot, str):
                    left.append((Reason.NO_APPOINTMENT, slot))
                else:
                    found.append(_booked(row, slot))
            rows = found
        tally: dict[Reason, int] = {}
        for reason, _ in left:
            tally[reason] = tally.get(reason, 0) + 1
        return rows, to_store, left, tally

    def _offers(self, site: Site, sku: str, stock: Stock | None) -> tuple[list[_Row], list[_Left]]:
        """A source's options and what it left out on the way, in the order found (the rules, by kind)."""
        found: list[_Row] = []
        left: list[_Left] = []
        if site.kind is SourceKind.STORE:
            self._from_store(site, found, left)
        elif site.kind is SourceKind.DC:
            self._from_dc(site, found, left)
        elif site.kind is SourceKind.SUPPLIER:
            self._from_supplier(site, sku, found, left)
        else:
            assert stock is not None  # a seller's, read by the caller
            self._from_seller(site, stock, found, left)
        if not found and not left:
            left.append((_NO_PATH[site.kind], partial(self.no_path, site)))
        return found, left

    def _short(self, site_id: str, sku: str, stock: Stock | None, qty: int) -> str:
        snapshot = self.view.snapshot_id
        if stock is None:
            return f"no {sku} position at {site_id} in snapshot {snapshot} (ATP 0 < {qty} asked)"
        detail = f"ATP {stock.atp} < {qty} asked in snapshot {snapshot}"
        if stock.free_inbound:
            due = ", ".join(f"{line.qty} due {_iso(line.eta)}" for line in stock.free_inbound)
            detail += f" (inbound not yet promised: {due}; promised only once received)"
        return detail

    def _no_path(self, site: Site) -> tuple[Reason, str]:
        km = self.network.distance_km(site.id, self.request.lat, self.request.lon)
        if site.kind is SourceKind.STORE:
            return Reason.OUT_OF_RADIUS, (
                f"{site.id} is {km:.1f} km away (radius {self.radius:g} km) and no lane from it "
                "reaches a store within the radius"
            )
        if site.kind is SourceKind.DC:
            return Reason.NO_LANE, (
                f"{site.id} has no lane to a store within {self.radius:g} km and no carrier route for home delivery"
            )
        routes = self.network.routes_from(site.id)
        if not routes:
            return Reason.NO_ROUTE, f"{site.id} has no dropship route to any store"
        targets = ", ".join(route.store for route in routes)
        return Reason.NO_ROUTE, f"{site.id} ships only to {targets}, none within {self.radius:g} km"

    # The rules, by kind of source: each appends the source's options to `found` and what it left
    # out to `left`, in the order found; a detail is a function, made only if it is shown.

    def _from_store(self, site: Site, found: list[_Row], left: list[_Left]) -> None:
        if site.id in self.stores:
            ready = self.now + site.prep_minutes * MINUTE_MS
            at = self._opening(site.id, ready, left)
            if at is not None:
                found.append(_row(FulfilmentMode.RESERVE_IN_STORE, site, site.id, at, self.stores[site.id]))
        self._transfers(site, found, left)

    def _from_dc(self, site: Site, found: list[_Row], left: list[_Left]) -> None:
        self._transfers(site, found, left)
        carrier = self.network.carrier(site.id)
        if carrier is not None:
            km = self.network.distance_km(site.id, self.request.lat, self.request.lon)
            if carrier.max_km is not None and km > carrier.max_km:
                left.append((Reason.OUT_OF_CARRIER_RANGE, partial(_beyond_carrier, site.id, km, carrier.max_km)))
            else:
                at = add_days(self.network, site.id, self.now, carrier.lead_days)
                found.append(_row(FulfilmentMode.HOME_DELIVERY, site, HOME, at, km, arrives_at=at))

    def _transfers(self, site: Site, found: list[_Row], left: list[_Left]) -> None:
        if site.id not in self.lanes_in:
            return
        mode = FulfilmentMode.TRANSFER_TO_STORE
        stores = self.stores
        # The clerk can start picking now: per lane, the first departure whose cut-off is not passed.
        for lane, run, at in self.near.transfers_at(self.network, site.id, self.now):
            if run is None:
                left.append((Reason.NO_DEPARTURE, partial(self._no_departure, lane)))
            elif at is None:
                left.append((Reason.CLOSED, partial(self._closed, lane.destination, run.arrives_at)))
            else:
                # `_row`'s tuple written out (a promise makes ~100 of them); the distance is rounded already.
                key = (at, _TRANSFER_ORDER, stores[lane.destination], True, 0.0)
                found.append((key, mode, site, lane.destination, run, None, None, None))

    def _from_supplier(self, site: Site, sku: str, found: list[_Row], left: list[_Left]) -> None:
        for route in self.near.routes_in.get(site.id, ()):
            if not route.accepts(sku):
                left.append((Reason.NOT_ACCEPTED, f"{route.store} does not accept {sku} by dropship from {site.id}"))
                continue
            arrives = add_days(self.network, route.store, self.now, route.lead_days)
            at = self._opening(route.store, arrives, left)
            if at is not None:
                mode = FulfilmentMode.DROPSHIP_TO_STORE
                found.append(_row(mode, site, route.store, at, self.stores[route.store], arrives_at=arrives))

    def _from_seller(self, site: Site, stock: Stock, found: list[_Row], left: list[_Left]) -> None:
        offer = stock.offer
        if offer is None:
            left.append((Reason.NO_OFFER, f"{site.id} has no current offer for {stock.sku}"))
            return
        days = offer.lead_time_days if offer.lead_time_days is not None else self.network.seller_lead_days
        at = add_days(self.network, site.id, self.now, days)
        km = self.network.distance_km(site.id, self.request.lat, self.request.lon)
        found.append(_row(FulfilmentMode.HOME_DELIVERY, site, HOME, at, km, price=offer.price, arrives_at=at))

    def _opening(self, store_id: str, at: Millis, left: list[_Left]) -> Millis | None:
        opening = next_opening(self.network, store_id, at)
        if opening is None:
            left.append((Reason.CLOSED, partial(self._closed, store_id, at)))
        return opening

    def _closed(self, store_id: str, at: Millis) -> str:
        return f"{store_id} does not open within {self.network.horizon_days} days after {_iso(at)}"

    def _no_departure(self, lane: Lane) -> str:
        days = self.network.horizon_days
        return f"lane {lane.id} has no departure with its pick cut-off after {_iso(self.now)} within {days} days"

    def with_slot(self, option: _Found) -> _Found | None:
        """The option with the first free appointment slot at its store, or None (excluded)."""
        slot = self._first_slot(option.deliver_to, option.key[0])
        if isinstance(slot, str):
            self.exclude(option.source.id, option.sku, Reason.NO_APPOINTMENT, slot)
            return None
        return option.booked(slot)

    def _first_slot(self, store_id: str, at: Millis) -> Millis | str:
        """The first slot with free capacity at or after `at`, or why there is none."""
        key = (store_id, at)
        if key not in self._slots:
            self._slots[key] = self._search_slot(store_id, at)
        return self._slots[key]

    def _search_slot(self, store_id: str, at: Millis) -> Millis | str:
        days = self.network.horizon_days
        if self.network.site(store_id).appointments is None:
            return f"{store_id} takes no appointments"
        full = unopened = 0
        found, lo, hi = slot_range(self.network, store_id, at, days)
        capacity = self.view.free_slot_capacity
        for i in range(lo, hi):
            slot = found[i]
            free = capacity(store_id, slot)
            if free is None:
                unopened += 1
            elif free > 0:
                return slot
            else:
                full += 1
        # A slot with no position has no capacity: capacity exists only once a COUNTED
        # event opened it (ledger.confirm.open_slots_events), so absent counts as 0.
        return (
            f"no free appointment slot at {store_id} within {days} days after {_iso(at)}: "
            f"{full} full, {unopened} not opened (no capacity position in snapshot {self.view.snapshot_id})"
        )

    def together(self, store_id: str, bound: Mapping[tuple[str, str], list[_Row]]) -> _Plan | None:
        """The basket at one store, each item by its best option to it; None if an item cannot get there."""
        candidates = []
        for sku, _ in self.request.items:
            options = bound.get((sku, store_id))
            if not options:
                return None
            # One leg per sku (skus are merged), so no source is counted twice.
            candidates.append(options)
        # The best leg's available_at is the least of its candidates' (the rank's first term).
        ready = max(min(row[0][0] for row in rows) for rows in candidates)
        kept, slot = self.plan_slot(store_id, ready)
        return (
            _Plan(store_id, self.stores[store_id], ready, self.request.items, tuple(candidates), slot) if kept else None
        )

    def plan_slot(self, store_id: str, ready: Millis) -> tuple[bool, Millis | None]:
        """Whether a plan at the store with every item there at `ready` stands, and its slot.

        Without an appointment it stands, without a slot; with one, it takes the first free
        slot from `ready`, and without one it is left out (and the basket's exclusion counted).
        """
        if not self.request.appointment:
            return True, None
        found = self._first_slot(store_id, ready)
        if isinstance(found, str):
            self.exclude(store_id, BASKET, Reason.NO_APPOINTMENT, f"basket ready {_iso(ready)}; {found}")
            return False, None
        return True, found


_Slots = dict[tuple[str, Millis], Millis | str]
_KEPT_SLOTS: list[tuple[weakref.ReferenceType[SnapshotView], Network, _Slots]] = []
"""The last view's first free slots (one entry): the server answers from its newest view, and the
transfers' arrivals (the instants asked) are the same for every request until a lane's cut-off."""
_KEPT_SLOTS_MAX = 100_000
"""Searches kept for one view before starting again: a view lives for one refresh (~a second)."""


def _kept_slots(network: Network, view: SnapshotView) -> _Slots:
    """The first free slots found so far in `view` on `network`, shared by the requests it answers.

    A slot search depends on the network, the store, the instant and the view's slot
    capacities only, so its answer holds for as long as the view does. The view is held
    weakly (a `ReadView` kept alive would keep its overlay, and a base catches up only once
    no older overlay is alive) and by reference, not by `id(view)`: ids of dead views are
    reused, and a view answering without the read model is a new object per request. A view
    that cannot be referred to weakly gets a memo of its own, for this request.
    """
    if _KEPT_SLOTS:
        ref, kept_network, slots = _KEPT_SLOTS[0]
        if ref() is view and kept_network is network and len(slots) < _KEPT_SLOTS_MAX:
            return slots
    try:
        ref = weakref.ref(view)
    except TypeError:
        return {}
    slots = {}
    # One tuple assigned: a thread reading the entry sees the old one or the new one, whole.
    entry = (ref, network, slots)
    if _KEPT_SLOTS:
        _KEPT_SLOTS[0] = entry
    else:
        _KEPT_SLOTS.append(entry)
    return slots


_Part = tuple[Millis | None, Millis, int, FulfilmentMode, Site, str, Run | None, Millis | None]
"""A row of what a source offers over a window of `now`: available_at (None: `now` plus the offset), the
offset, the mode's order, mode, source, deliver_to, run, and arrives_at as an offset from `now` (None: none)."""
_Pending = tuple[Reason, str | Callable[["_Context"], str]]
"""What a source left out over a window, and why (the detail made with the request, if shown)."""
_Route = tuple[SupplierRoute, _Part | None, _Pending | None]
"""A supplier's route into the set of stores, and its row or what it left out if it takes the sku."""
_Kept = tuple[
    Millis, Millis, tuple[_Part, ...], tuple[_Pending, ...], tuple[float | None, Millis] | None, tuple[_Route, ...]
]
"""What a store, DC or supplier offers the customers of one set of stores for every `now` in [lo, hi):
(lo, hi, its rows, what it left out, a DC's carrier (its range, its lead as an offset from `now`), a
supplier's routes in order)."""
_Signature = tuple[str, tuple[str, ...], bool, tuple[int, ...]]
"""A source, its lanes into a set of stores (ids), whether it is one of them, its routes into them (identities)."""
_KEPT_WAYS = 50_000
"""Entries of `_Into.kept` kept."""


def _closed_later(store_id: str, offset: Millis, ctx: _Context) -> str:
    return ctx._closed(store_id, ctx.now + offset)


def _closed_at_later(store_id: str, at: Millis, ctx: _Context) -> str:
    return ctx._closed(store_id, at)


def _no_departure_later(lane: Lane, ctx: _Context) -> str:
    return ctx._no_departure(lane)


def _beyond_carrier(site_id: str, km: float, max_km: float) -> str:
    return f"the customer is {km:.1f} km from {site_id}; its carrier delivers within {max_km:g} km"


def _iso(at: Millis) -> str:
    return (_EPOCH + timedelta(milliseconds=at)).strftime("%Y-%m-%dT%H:%MZ")
