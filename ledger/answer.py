"""What a customer asks for and what a promise answers.

The request (`PromiseRequest`), the read-only snapshot a promise reads (`SnapshotView`, and
`StaticView` over values in memory), and the answer: ranked `Option`s, `Together` plans,
`Exclusion`s and their summary. `bounded` cuts a whole answer to the best few without
losing its totals. `ledger.promise` computes answers; this module only says what they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from ledger.contract import MAX_QTY
from ledger.events import Millis
from ledger.fulfilment import FulfilmentMode, SourceKind
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
    "check_limit",
    "summarise",
]

MAX_BASKET = 20
"""Most distinct skus one request may ask for; a bigger basket is a bulk order, not a promise."""

DEFAULT_LIMIT = 10
"""Options (and together plans) an answer carries unless the caller asks for more."""
MAX_LIMIT = 100
"""Most options one answer may carry: past that a page is a catalogue, not a choice."""
EXAMPLES_PER_REASON = 3
"""Exclusions shown per reason in the summary; the full list only on request (explain)."""
BASKET = "*"
"""The `sku` of an exclusion about the basket as a whole (a together plan)."""


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


@dataclass(frozen=True, slots=True, weakref_slot=True)
class StaticView:
    """A `SnapshotView` over values in memory (weakly referable, as `ReadView`: `ledger.promise` keeps its slots)."""

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
    check_limit(limit)
    return replace(
        answer,
        options=best_options(answer.options, limit),
        together=answer.together[:limit],
        excluded=answer.excluded if explain else (),
        options_total=answer.options_total,
        together_total=answer.together_total,
        exclusions=answer.exclusions,
    )


def check_limit(limit: int) -> None:
    """Refuse a `limit` outside 1..MAX_LIMIT with a message that says the range."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        msg = f"limit must be a whole number within 1..{MAX_LIMIT}, got {limit!r}"
        raise ValueError(msg)
