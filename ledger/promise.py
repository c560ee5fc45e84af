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
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Protocol

from ledger.contract import MAX_QTY
from ledger.events import Millis
from ledger.fulfilment import HOME, FulfilmentMode, SourceKind
from ledger.network import DAY_MS, MINUTE_MS, Lane, Network, Run, Site
from ledger.outputs import InboundLine, OfferTerms

__all__ = [
    "BASKET",
    "DEFAULT_LIMIT",
    "EXAMPLES_PER_REASON",
    "MAX_BASKET",
    "MAX_LIMIT",
    "Exclusion",
    "ExclusionSummary",
    "Option",
    "Promise",
    "PromiseRequest",
    "Reason",
    "SnapshotView",
    "StaticView",
    "Stock",
    "Together",
    "best_options",
    "bounded",
    "next_run",
    "promise",
    "slots",
    "summarise",
]

MAX_BASKET = 20
"""Most distinct skus one request may ask for; a bigger basket is a bulk order, not a promise."""

_MODE_ORDER = {
    FulfilmentMode.RESERVE_IN_STORE: 0,
    FulfilmentMode.TRANSFER_TO_STORE: 1,
    FulfilmentMode.DROPSHIP_TO_STORE: 2,
    FulfilmentMode.HOME_DELIVERY: 3,
}
DEFAULT_LIMIT = 10
"""Options (and together plans) an answer carries unless the caller asks for more."""
MAX_LIMIT = 100
"""Most options one answer may carry: past that a page is a catalogue, not a choice."""
EXAMPLES_PER_REASON = 3
"""Exclusions shown per reason in the summary; the full list only on request (explain)."""
BASKET = "*"
"""The `sku` of an exclusion about the basket as a whole (a together plan)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Stock:
    """One (site, sku) position as the snapshot shows it."""

    site_id: str
    sku: str
    atp: int
    free_inbound: tuple[InboundLine, ...] = ()
    """Inbound lines not promised to a customer yet (shown in explanations, never promised)."""
    offer: OfferTerms | None = None


class SnapshotView(Protocol):
    """What a promise reads from one snapshot: values in memory in tests, the read model in the service."""

    @property
    def snapshot_id(self) -> int:
        """The snapshot every figure comes from."""
        ...

    def sku_atp(self, sku: str) -> tuple[Sequence[str], Sequence[int]]:
        """The sites holding a position of this sku, ascending, and their ATP, index for index.

        Two columns rather than a row object per site: a national sku is held at a thousand
        sites, and a promise looks at each site's ATP before anything else.
        """
        ...

    def stock_at(self, site_id: str, sku: str) -> Stock | None:
        """The position of the sku at one site (inbound lines, offer), None when it has none."""
        ...

    def free_slot_capacity(self, store_id: str, slot_start: Millis) -> int | None:
        """ATP of the store's `appointment_sku(slot_start)` position; None when it has none."""
        ...


@dataclass(frozen=True, slots=True)
class StaticView:
    """A `SnapshotView` over values in memory."""

    snapshot_id: int
    stocks: tuple[Stock, ...] = ()
    slots: Mapping[tuple[str, Millis], int] = field(default_factory=dict)
    """(store id, slot start) -> free capacity."""
    _by_sku: dict[str, dict[str, Stock]] = field(init=False, repr=False, compare=False)
    _columns: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_sku: dict[str, dict[str, Stock]] = {}
        for row in self.stocks:
            by_sku.setdefault(row.sku, {})[row.site_id] = row
        columns = {
            sku: (tuple(sorted(rows)), tuple(rows[site].atp for site in sorted(rows))) for sku, rows in by_sku.items()
        }
        object.__setattr__(self, "_by_sku", by_sku)
        object.__setattr__(self, "_columns", columns)

    def stock(self, sku: str) -> Iterable[Stock]:
        """Every position of this sku (the last row wins for a repeated site)."""
        return tuple(self._by_sku.get(sku, {}).values())

    def sku_atp(self, sku: str) -> tuple[Sequence[str], Sequence[int]]:
        """The sites holding the sku, ascending, and their ATP."""
        return self._columns.get(sku, ((), ()))

    def stock_at(self, site_id: str, sku: str) -> Stock | None:
        """The position of the sku at the site, None when it has none."""
        return self._by_sku.get(sku, {}).get(site_id)

    def free_slot_capacity(self, store_id: str, slot_start: Millis) -> int | None:
        """The free capacity of a slot, None when it was never opened."""
        return self.slots.get((store_id, slot_start))


@dataclass(frozen=True, slots=True)
class PromiseRequest:
    """What the customer asks: a basket, where they are, and whether they want an appointment.

    Build it with `PromiseRequest.of`, which merges repeated skus.
    """

    items: tuple[tuple[str, int], ...]
    lat: float
    lon: float
    now: Millis
    radius_km: float | None = None
    """None uses the network's default."""
    appointment: bool = False

    def __post_init__(self) -> None:
        skus = [sku for sku, _ in self.items]
        if not self.items or len(self.items) > MAX_BASKET:
            msg = f"a promise is for 1 to {MAX_BASKET} distinct skus, got {len(self.items)}; split the basket"
            raise ValueError(msg)
        if len(set(skus)) != len(skus):
            msg = "each sku appears once in items; build the request with PromiseRequest.of to merge repeats"
            raise ValueError(msg)
        for sku, qty in self.items:
            if not isinstance(sku, str) or not sku.strip() or "|" in sku or sku.startswith("appt:"):
                msg = f"sku {sku!r} is not a product sku (a non-empty string without '|', not an appointment)"
                raise ValueError(msg)
            if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= MAX_QTY:
                msg = f"qty of {sku!r} must be a whole number within 1..{MAX_QTY}, got {qty!r}"
                raise ValueError(msg)
        if not (-90 <= self.lat <= 90 and -180 <= self.lon <= 180):
            msg = f"customer position ({self.lat}, {self.lon}) is not a latitude/longitude in degrees"
            raise ValueError(msg)
        if self.radius_km is not None and not self.radius_km > 0:
            msg = f"radius_km must be > 0, got {self.radius_km}"
            raise ValueError(msg)

    @classmethod
    def of(
        cls,
        items: Mapping[str, int] | Iterable[tuple[str, int]],
        *,
        lat: float,
        lon: float,
        now: Millis,
        radius_km: float | None = None,
        appointment: bool = False,
    ) -> PromiseRequest:
        """A request for `items` (sku -> qty, or (sku, qty) pairs; a repeated sku adds up)."""
        merged: dict[str, int] = {}
        for sku, qty in items.items() if isinstance(items, Mapping) else items:
            merged[sku] = merged[sku] + qty if sku in merged else qty  # a lone bad qty stays visible
        return cls(tuple(merged.items()), lat, lon, now, radius_km, appointment)


class Reason(StrEnum):
    """Why a source was left out of the options."""

    NOT_IN_NETWORK = "not_in_network"
    INSUFFICIENT_ATP = "insufficient_atp"
    OUT_OF_RADIUS = "out_of_radius"
    NO_LANE = "no_lane"
    NO_DEPARTURE = "no_departure"
    CLOSED = "closed"
    NO_ROUTE = "no_route"
    NOT_ACCEPTED = "dropship_not_accepted"
    NO_OFFER = "no_offer"
    OUT_OF_CARRIER_RANGE = "out_of_carrier_range"
    NO_APPOINTMENT = "no_appointment"


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A source (or a path from it) that was considered and left out, and why."""

    site_id: str
    sku: str
    """The sku, or `*` for the basket as a whole."""
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Option:
    """One way to get `qty` of `sku` to the customer, from one source.

    `option_id` is a hash of what the option is (mode, sku, qty, source, destination,
    run, appointment), not of when it was computed, so the same route found in a later
    snapshot keeps its id.
    """

    option_id: str
    mode: FulfilmentMode
    sku: str
    qty: int
    source_id: str
    source_kind: SourceKind
    deliver_to: str
    """The pickup store, or `HOME`."""
    available_at: Millis
    distance_km: float
    """Customer to the pickup store; for home delivery, customer to the source."""
    price: float | None = None
    run_id: str | None = None
    pick_by: Millis | None = None
    """The run's pick cut-off: the clerk must have the unit in its parcel by then."""
    departs_at: Millis | None = None
    arrives_at: Millis | None = None
    """When the unit reaches `deliver_to` (transfers, dropship, home delivery)."""
    appointment_at: Millis | None = None
    """Start of the appointment slot at `deliver_to`, when one was asked for."""


@dataclass(frozen=True, slots=True)
class Together:
    """A store where the whole basket can be collected at once.

    One leg per sku, each the best store-bound option to this store. To confirm it,
    confirm every leg with its own reservation id and book the appointment once (on
    one leg only); every leg carries the plan's `appointment_at`.
    """

    store_id: str
    distance_km: float
    ready_at: Millis
    """When the last leg is there: the latest `available_at` of the legs."""
    legs: tuple[Option, ...]
    appointment_at: Millis | None = None


@dataclass(frozen=True, slots=True)
class ExclusionSummary:
    """How many sources (or paths) were left out for one reason, with a few of them."""

    reason: Reason
    count: int
    examples: tuple[Exclusion, ...]
    """The first `EXAMPLES_PER_REASON` in the order they were found (sku by sku, site by site)."""


@dataclass(frozen=True, slots=True)
class Promise:
    """The answer to one request, from one snapshot.

    `promise` returns it whole; `bounded` cuts it to the best `limit` options and plans and
    keeps the totals and the summary of exclusions, so the caller still learns how much
    was left out.
    """

    snapshot_id: int
    now: Millis
    options: tuple[Option, ...]
    together: tuple[Together, ...]
    excluded: tuple[Exclusion, ...]
    """Per sku, every site that offers nothing (a site without a position has ATP 0), and
    every path from an offering site that failed (a closed store, a full appointment book).
    Empty in a bounded answer unless it was asked with `explain`."""
    options_total: int = -1
    """Options found before any cut; -1 (the default) is replaced by `len(options)`."""
    together_total: int = -1
    """Together plans found before any cut; -1 (the default) is replaced by `len(together)`."""
    exclusions: tuple[ExclusionSummary, ...] | None = None
    """`excluded` summarised by reason; None (the default) is replaced by `summarise(excluded)`."""

    def __post_init__(self) -> None:
        # Defaults derived from the lists, so a whole answer is consistent without the caller counting.
        if self.options_total < 0:
            object.__setattr__(self, "options_total", len(self.options))
        if self.together_total < 0:
            object.__setattr__(self, "together_total", len(self.together))
        if self.exclusions is None:
            object.__setattr__(self, "exclusions", summarise(self.excluded))


def summarise(excluded: Sequence[Exclusion], examples: int = EXAMPLES_PER_REASON) -> tuple[ExclusionSummary, ...]:
    """Exclusions counted by reason, most frequent first (then by reason), with the first few of each."""
    counts: dict[Reason, int] = {}
    firsts: dict[Reason, list[Exclusion]] = {}
    for item in excluded:
        counts[item.reason] = counts.get(item.reason, 0) + 1
        shown = firsts.setdefault(item.reason, [])
        if len(shown) < examples:
            shown.append(item)
    order = sorted(counts, key=lambda reason: (-counts[reason], reason.value))
    return tuple(ExclusionSummary(reason, counts[reason], tuple(firsts[reason])) for reason in order)


def best_options(ranked: Sequence[Option], limit: int) -> tuple[Option, ...]:
    """The best `limit` of `ranked` (best first), the best of each sku's modes among them.

    Cut by rank alone, a store's answer on a national network was a hundred transfers
    from a hundred stores, and the supplier's dropship and the home delivery a customer
    may prefer never showed. So each (sku, mode)'s best option comes first, then the next
    best by rank fill the rest; the result stays in rank order.
    """
    if len(ranked) <= limit:
        return tuple(ranked)
    chosen: set[int] = set()
    seen: set[tuple[str, FulfilmentMode]] = set()
    for i, option in enumerate(ranked):
        if (option.sku, option.mode) not in seen:
            seen.add((option.sku, option.mode))
            chosen.add(i)
            if len(chosen) == limit:
                break
    for i in range(len(ranked)):
        if len(chosen) >= limit:
            break
        chosen.add(i)
    return tuple(ranked[i] for i in sorted(chosen))


def bounded(answer: Promise, limit: int = DEFAULT_LIMIT, *, explain: bool = False) -> Promise:
    """The best `limit` options and together plans of `answer`, with its totals and exclusion summary.

    The full exclusion list stays only when `explain` is set: on a national network it is
    one entry per site holding the sku, a thousand lines nobody reads on a product page.
    """
    _check_limit(limit)
    return replace(
        answer,
        options=best_options(answer.options, limit),
        together=answer.together[:limit],
        excluded=answer.excluded if explain else (),
        options_total=answer.options_total,
        together_total=answer.together_total,
        exclusions=answer.exclusions,
    )


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
        _check_limit(limit)
    radius = request.radius_km if request.radius_km is not None else network.radius_km
    stores = {
        site.id: round(km, 3)
        for site in network.sites
        if site.kind is SourceKind.STORE and (km := network.distance_km(site.id, request.lat, request.lon)) <= radius
    }
    reach = _reachable(network, stores)
    ctx = _Context(network, view, request, radius, stores, explain)
    options: list[Option] = []
    bound: dict[tuple[str, str], list[Option]] = {}
    for sku, qty in request.items:
        # The sources are the sites with a position of the sku; a site that never held
        # it is no source, and listing every site of a national network would bury the
        # answer under a thousand exclusions. One pass over the sku's two columns: only a
        # site that has the units and a way to the customer becomes objects.
        sites, atps = view.sku_atp(sku)
        for site_id, atp in zip(sites, atps, strict=True):
            if not network.has_site(site_id):
                ctx.exclude(site_id, sku, Reason.NOT_IN_NETWORK, f"{site_id} is not in the network file")
            elif atp < qty:
                ctx.exclude(site_id, sku, Reason.INSUFFICIENT_ATP, partial(ctx.short, site_id, sku, qty))
            elif site_id not in reach:
                site = network.site(site_id)
                ctx.exclude(site_id, sku, _NO_PATH[site.kind], partial(ctx.no_path, site))
            else:
                for option in ctx.from_source(site_id, sku, view.stock_at(site_id, sku), qty):
                    if option.deliver_to != HOME:
                        bound.setdefault((sku, option.deliver_to), []).append(option)
                    if request.appointment and option.deliver_to != HOME:
                        booked = ctx.with_slot(option)
                        if booked is not None:
                            options.append(booked)
                    else:
                        options.append(option)
    together = [plan for store in sorted(stores) if (plan := ctx.together(store, bound)) is not None]
    ranked = sorted(options, key=_rank)
    plans = sorted(together, key=lambda plan: (plan.ready_at, plan.distance_km, plan.store_id))
    return Promise(
        snapshot_id=view.snapshot_id,
        now=request.now,
        options=tuple(ranked) if limit is None else best_options(ranked, limit),
        together=tuple(plans[:limit]),
        excluded=tuple(ctx.excluded),
        options_total=len(ranked),
        together_total=len(plans),
        exclusions=ctx.summary(),
    )


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
    into = _Into(
        {store: frozenset(found) for store, found in lanes.items()},
        {store: frozenset(found) for store, found in routes.items()},
        anywhere,
    )
    if len(_INTO) >= 8:  # a process serves one network; tests build many
        _INTO.clear()
    # The network is kept with its index so its id cannot be reused by another while cached.
    _INTO[id(network)] = (network, into)
    return into


def _reachable(network: Network, stores: Mapping[str, float]) -> set[str]:
    """The sites that may have a way to the customer: every other site with units has none.

    A store in the radius (reserve there), a site with a lane or a dropship route into one,
    a DC with a carrier, a seller. The rest is excluded by kind without a look at lanes.
    """
    into = _into(network)
    found = set(into.anywhere)
    found.update(stores)
    for store in stores:
        found.update(into.lanes.get(store, ()))
        found.update(into.routes.get(store, ()))
    return found


# -- the schedules, memoised ---------------------------------------------------------------
#
# A lane's departures and a store's slots are pure functions of the network and the
# time, and computing them (local wall-clock dates through zoneinfo) was most of a
# promise's time once the snapshot was in memory: 2,700 lanes and a thousand stores,
# asked again for every request. They are computed once per UTC day window and looked
# up by bisection after; the answers are those of `Network.next_run` and
# `Network.slots` (a property test compares them).

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


def _next_opening(network: Network, site_id: str, at: Millis) -> Millis | None:
    """`network.next_opening`, remembered by exact arguments: a transfer arrives with its run, at
    the same instant for every request of the day, and each answer went through zoneinfo."""
    key = (id(network), site_id, at)
    cached = _OPENINGS.get(key)
    if cached is None or cached[0] is not network:
        if len(_OPENINGS) >= _MEMO_ENTRIES:
            _OPENINGS.clear()
        cached = _OPENINGS[key] = (network, network.next_opening(site_id, at))
    return cached[1]


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        msg = f"limit must be a whole number within 1..{MAX_LIMIT}, got {limit!r}"
        raise ValueError(msg)


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


def _option_id(*parts: object) -> str:
    # A hash keeps the id short and free of separators whatever the ids contain.
    text = "\x1f".join("" if part is None else str(part) for part in parts)
    return "opt-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _make(
    mode: FulfilmentMode,
    sku: str,
    qty: int,
    source: Site,
    deliver_to: str,
    available_at: Millis,
    distance_km: float,
    *,
    price: float | None = None,
    run: Run | None = None,
    arrives_at: Millis | None = None,
) -> Option:
    run_id = run.run_id if run is not None else None
    return Option(
        option_id=_option_id(mode.value, sku, qty, source.id, deliver_to, run_id, None),
        mode=mode,
        sku=sku,
        qty=qty,
        source_id=source.id,
        source_kind=source.kind,
        deliver_to=deliver_to,
        available_at=available_at,
        distance_km=round(distance_km, 3),
        price=price,
        run_id=run_id,
        pick_by=run.cutoff_at if run is not None else None,
        departs_at=run.departs_at if run is not None else None,
        arrives_at=run.arrives_at if run is not None else arrives_at,
    )


class _Context:
    """One promise's inputs and the exclusions found so far."""

    def __init__(
        self,
        network: Network,
        view: SnapshotView,
        request: PromiseRequest,
        radius: float,
        stores: dict[str, float],
        explain: bool = True,
    ) -> None:
        self.network, self.view, self.request = network, view, request
        self.now, self.radius, self.stores = request.now, radius, stores
        self.explain = explain
        self.excluded: list[Exclusion] = []
        """Every exclusion, in the order found; empty unless `explain`."""
        self._counts: dict[Reason, int] = {}
        self._examples: dict[Reason, list[Exclusion]] = {}
        self._found = 0
        self._slots: dict[tuple[str, Millis], Millis | str] = {}

    def exclude(self, site_id: str, sku: str, reason: Reason, detail: str | Callable[[], str]) -> None:
        """Count an exclusion; its detail (text, or a function making it) is built only if it is shown."""
        self._found += 1
        seen = self._counts.get(reason, 0)
        self._counts[reason] = seen + 1
        if self.explain or seen < EXAMPLES_PER_REASON:
            item = Exclusion(site_id, sku, reason, detail if isinstance(detail, str) else detail())
            if seen < EXAMPLES_PER_REASON:
                self._examples.setdefault(reason, []).append(item)
            if self.explain:
                self.excluded.append(item)

    def summary(self) -> tuple[ExclusionSummary, ...]:
        """The exclusions by reason, as `summarise` gives them from the full list."""
        order = sorted(self._counts, key=lambda reason: (-self._counts[reason], reason.value))
        return tuple(ExclusionSummary(r, self._counts[r], tuple(self._examples[r])) for r in order)

    def short(self, site_id: str, sku: str, qty: int) -> str:
        """Why the site's ATP does not cover `qty` (its unpromised inbound lines named)."""
        return self._short(site_id, sku, self.view.stock_at(site_id, sku), qty)

    def no_path(self, site: Site) -> str:
        """Why a source with the units has no way to the customer."""
        return self._no_path(site)[1]

    def from_source(self, site_id: str, sku: str, stock: Stock | None, qty: int) -> list[Option]:
        """The options one source with `qty` units offers; exclusions recorded on the way."""
        site = self.network.site(site_id)
        if stock is None or stock.atp < qty:  # the view's columns and rows disagree: offer nothing
            self.exclude(site.id, sku, Reason.INSUFFICIENT_ATP, self._short(site_id, sku, stock, qty))
            return []
        before = self._found
        if site.kind is SourceKind.STORE:
            found = self._from_store(site, sku, qty)
        elif site.kind is SourceKind.DC:
            found = self._from_dc(site, sku, qty)
        elif site.kind is SourceKind.SUPPLIER:
            found = self._from_supplier(site, sku, qty)
        else:
            found = self._from_seller(site, stock, qty)
        if not found and self._found == before:
            reason, detail = self._no_path(site)
            self.exclude(site.id, sku, reason, detail)
        return found

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

    def _from_store(self, site: Site, sku: str, qty: int) -> list[Option]:
        found: list[Option] = []
        if site.id in self.stores:
            ready = self.now + site.prep_minutes * MINUTE_MS
            at = self._opening(site.id, ready, site.id, sku)
            if at is not None:
                mode = FulfilmentMode.RESERVE_IN_STORE
                found.append(_make(mode, sku, qty, site, site.id, at, self.stores[site.id]))
        found.extend(self._transfers(site, sku, qty))
        return found

    def _from_dc(self, site: Site, sku: str, qty: int) -> list[Option]:
        found = self._transfers(site, sku, qty)
        carrier = self.network.carrier(site.id)
        if carrier is not None:
            km = self.network.distance_km(site.id, self.request.lat, self.request.lon)
            if carrier.max_km is not None and km > carrier.max_km:
                detail = (
                    f"the customer is {km:.1f} km from {site.id}; its carrier delivers within {carrier.max_km:g} km"
                )
                self.exclude(site.id, sku, Reason.OUT_OF_CARRIER_RANGE, detail)
            else:
                at = self.network.add_days(site.id, self.now, carrier.lead_days)
                mode = FulfilmentMode.HOME_DELIVERY
                found.append(_make(mode, sku, qty, site, HOME, at, km, arrives_at=at))
        return found

    def _transfers(self, site: Site, sku: str, qty: int) -> list[Option]:
        found: list[Option] = []
        for lane in self.network.lanes_from(site.id):
            if lane.destination in self.stores:
                option = self._transfer(site, lane, sku, qty)
                if option is not None:
                    found.append(option)
        return found

    def _transfer(self, site: Site, lane: Lane, sku: str, qty: int) -> Option | None:
        # The clerk can start picking now: the first departure whose cut-off is not passed.
        run = next_run(self.network, lane, self.now)
        if run is None:
            days = self.network.horizon_days
            detail = f"lane {lane.id} has no departure with its pick cut-off after {_iso(self.now)} within {days} days"
            self.exclude(site.id, sku, Reason.NO_DEPARTURE, detail)
            return None
        at = self._opening(lane.destination, run.arrives_at, site.id, sku)
        if at is None:
            return None
        mode = FulfilmentMode.TRANSFER_TO_STORE
        return _make(mode, sku, qty, site, lane.destination, at, self.stores[lane.destination], run=run)

    def _from_supplier(self, site: Site, sku: str, qty: int) -> list[Option]:
        found: list[Option] = []
        for route in self.network.routes_from(site.id):
            if route.store not in self.stores:
                continue
            if not route.accepts(sku):
                detail = f"{route.store} does not accept {sku} by dropship from {site.id}"
                self.exclude(site.id, sku, Reason.NOT_ACCEPTED, detail)
                continue
            arrives = self.network.add_days(route.store, self.now, route.lead_days)
            at = self._opening(route.store, arrives, site.id, sku)
            if at is not None:
                mode = FulfilmentMode.DROPSHIP_TO_STORE
                found.append(_make(mode, sku, qty, site, route.store, at, self.stores[route.store], arrives_at=arrives))
        return found

    def _from_seller(self, site: Site, stock: Stock, qty: int) -> list[Option]:
        offer = stock.offer
        if offer is None:
            self.exclude(site.id, stock.sku, Reason.NO_OFFER, f"{site.id} has no current offer for {stock.sku}")
            return []
        days = offer.lead_time_days if offer.lead_time_days is not None else self.network.seller_lead_days
        at = self.network.add_days(site.id, self.now, days)
        km = self.network.distance_km(site.id, self.request.lat, self.request.lon)
        mode = FulfilmentMode.HOME_DELIVERY
        return [_make(mode, stock.sku, qty, site, HOME, at, km, price=offer.price, arrives_at=at)]

    def _opening(self, store_id: str, at: Millis, source_id: str, sku: str) -> Millis | None:
        opening = _next_opening(self.network, store_id, at)
        if opening is None:
            detail = f"{store_id} does not open within {self.network.horizon_days} days after {_iso(at)}"
            self.exclude(source_id, sku, Reason.CLOSED, detail)
        return opening

    def with_slot(self, option: Option) -> Option | None:
        """The option with the first free appointment slot at its store, or None (excluded)."""
        slot = self._first_slot(option.deliver_to, option.available_at)
        if isinstance(slot, str):
            self.exclude(option.source_id, option.sku, Reason.NO_APPOINTMENT, slot)
            return None
        return _booked(option, slot)

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
        for slot in slots(self.network, store_id, at, days):
            free = self.view.free_slot_capacity(store_id, slot)
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

    def together(self, store_id: str, bound: Mapping[tuple[str, str], list[Option]]) -> Together | None:
        """The basket at one store, each item by its best option to it; None if an item cannot get there."""
        legs: list[Option] = []
        for sku, _ in self.request.items:
            candidates = bound.get((sku, store_id))
            if not candidates:
                return None
            # One leg per sku (skus are merged), so no source is counted twice.
            legs.append(min(candidates, key=_rank))
        ready = max(leg.available_at for leg in legs)
        slot: Millis | None = None
        if self.request.appointment:
            found = self._first_slot(store_id, ready)
            if isinstance(found, str):
                self.exclude(store_id, BASKET, Reason.NO_APPOINTMENT, f"basket ready {_iso(ready)}; {found}")
                return None
            slot = found
            legs = [_booked(leg, slot) for leg in legs]
        return Together(store_id, self.stores[store_id], ready, tuple(legs), slot)


def _iso(at: Millis) -> str:
    return (_EPOCH + timedelta(milliseconds=at)).strftime("%Y-%m-%dT%H:%MZ")


def _booked(option: Option, slot: Millis) -> Option:
    """The option with an appointment slot, under the id of that booked variant."""
    parts = (option.mode.value, option.sku, option.qty, option.source_id, option.deliver_to, option.run_id, slot)
    return replace(option, appointment_at=slot, option_id=_option_id(*parts))
