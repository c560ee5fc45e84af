"""A seeded simulator of an omnichannel retailer that emits a live `InventoryEvent` stream.

The network is a few DCs, stores, suppliers and marketplace sellers carrying a catalogue
of skus: generated (`DC-01`, `ST-001`, `SUP-01`, `SEL-01`...), or the sites of a network
file (`ledger.network`, docs/network.md) given as `SimConfig.network`, whose shuttle lanes
carry the transfers and whose supplier routes carry the dropships. The stream opens with
every position's opening stock (`RECEIVED`), then mixes new stories (sales, reservations,
transfers, counts, dropships, offers...) by the weights of an `EventMix`. A story that
takes time - a transfer is picked, later loaded, later arrives - is kept as a pending
step and emitted in a later call, once the caller's clock has passed its due time, so
each story is told in order.

The simulator has no clock: `next_events(now, n)` is told the time, so a test can move
it and a Bytewax source can pass the wall clock. Its whole state is a `SimState` value:
`RetailerSimulator.resume(config, state)` continues the stream exactly where the
snapshot was taken. It imports only the stdlib and `ledger`; the Bytewax source that
wraps it lives elsewhere.

Example:

    sim = RetailerSimulator(SimConfig(seed=7))
    batch = sim.next_events(now=1_735_689_600_000, n=500)
    snapshot = sim.state()

    lyon = RetailerSimulator(SimConfig(seed=7, network=load_network("examples/network.toml")))
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import StrEnum
from heapq import heapify, heappop, heappush
from typing import Any

from ledger.errors import ConfigError
from ledger.events import EventType, InventoryEvent, Millis
from ledger.network import Network

__all__ = ["EventMix", "RetailerSimulator", "SimConfig", "SimState", "Site", "SiteKind"]

_MINUTE = 60_000
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR

_DEFAULT_START_AT: Millis = 1_735_689_600_000
"""2025-01-01T00:00:00Z: a fixed default, so a config without one is still reproducible."""

_MAX_POSITIONS = 2_000_000
"""(DCs + stores + suppliers) x skus; the beliefs are three flat lists of this length."""

_MAX_JITTER_MS = _MINUTE
"""Below every story's shortest delay (5 min), so a continuation never precedes its start."""

# Customer demand: the first fifth of the catalogue takes 60 % of it.
_HOT_SHARE = 0.2
_HOT_DRAW = 0.6
_SALE_QTY_MEAN = 1.25  # 1, 2 or 3 units with 80/15/5 %
_PICKUP_QTY_MEAN = 0.86  # reserved units that end up collected: 75 % of 1.15
_DROPSHIP_QTY_MEAN = 2.5
_OVERSELL_RATE = 0.02  # share of empty-shelf sales the POS books anyway (phantom stock)
_MAX_PHANTOM = 3  # units a shelf's books may fall below zero by oversells before someone counts it
_SALE_RETRIES = 3  # a customer facing an empty shelf tries other skus first

# Replenishment: shelves are stocked to cover the demand seen until a shuttle can refill them.
_COVER_MS = 24 * _HOUR  # reorder at 2/3 of it (16 h) outlasts pick, load and drive (8 h on average)
_RATE_WINDOW_MS = 15 * _MINUTE  # how often the event rate, hence the demand, is re-estimated
_REVIEW_SPAN = 8  # positions one drawn replenishment looks at
_STORES, _DCS, _SUPPLIERS = range(3)  # the review rounds: index into walks and targets
_LATERAL_RATE = 0.1  # share of transfers sourced from another store's surplus
_MIN_TRANSFER = 4
_DC_CASE = 12  # DC receipts come in whole cases
_SUPPLIER_LOT = 50  # and supplier receipts in production lots
_SUPPLIER_BASE_TARGET = 200
_MAX_TARGET = 99_000  # keeps every qty (at most twice a target) far below the contract's 1,000,000
_SAME_DAY_MS = 4 * _HOUR  # a dropship route with lead_days = 0
_SKU = re.compile(r"^SKU-(\d{5})$")

# The sources the contract allows, by the system that would really report each event.
_POS, _WMS, _TMS, _ERP, _SUPPLIER, _MARKETPLACE, _OMS = "POS", "WMS", "TMS", "ERP", "SUPPLIER", "MARKETPLACE", "OMS"

# Pending step kinds (ints: they sit in heap tuples).
_LOAD, _ARRIVE, _FULFIL, _RELEASE, _EXPIRE, _DS_RECEIVE = range(6)


class SiteKind(StrEnum):
    """What a site is in the network."""

    DC = "DC"
    STORE = "STORE"
    SUPPLIER = "SUPPLIER"
    SELLER = "SELLER"


@dataclass(frozen=True, slots=True)
class Site:
    """One site of the simulated network, e.g. `Site("ST-001", SiteKind.STORE)`."""

    site_id: str
    kind: SiteKind


@dataclass(frozen=True, slots=True)
class EventMix:
    """Relative weights of the new stories the simulator starts (they need not sum to 1).

    Continuations (load and arrival after a pick, fulfil or release after a request,
    receipt after a dropship) follow from their story and are not weighted here. Kinds
    that need suppliers or sellers count as zero when the network has none. The emitted
    mix follows the stock: a replenishment nobody needs becomes a sale, and a sale facing
    an empty shelf becomes a reorder, or a cycle count when stock is already on its way.
    """

    sales: float = 0.57
    reservations: float = 0.10
    transfers: float = 0.04
    returns: float = 0.03
    adjustments: float = 0.02
    counts: float = 0.03
    dc_receipts: float = 0.02
    supplier_receipts: float = 0.01
    dropships: float = 0.03
    offers: float = 0.15

    def __post_init__(self) -> None:
        for spec in fields(self):
            value: object = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                msg = f"SimConfig.mix.{spec.name}: expected a finite weight >= 0, got {value!r}; use 0 to switch it off"
                raise ConfigError(msg)


_INT_LIMITS: dict[str, tuple[int, int]] = {
    "seed": (0, 2**63 - 1),
    "dcs": (1, 99),
    "stores": (1, 999),
    "suppliers": (0, 99),
    "sellers": (0, 99),
    "skus": (1, 99_999),
    "start_at": (0, 253_402_300_799_999),  # up to 9999-12-31T23:59:59.999Z
    "jitter_ms": (0, _MAX_JITTER_MS),
    "max_pending": (1_000, 10_000_000),
    "expected_rate": (0, 10_000_000),
    "shelf_max": (0, _MAX_TARGET),
}


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What to simulate: the seed, the network's size, the start time and the event mix.

    `start_at` is where the clock starts: a `now` before it is read as `start_at`.
    `jitter_ms` spreads each event's `occurred_at` up to that much before `now`, as a live
    feed arrives a little late and slightly out of order.

    `max_pending` bounds the stories kept open, hence the state's size: half of it for
    reservation holds, a quarter for dropships (a story that finds no room becomes a
    walk-in sale); transfers are bounded by the shelves they fill.

    `expected_rate` (events per second of the caller's clock) sizes the opening stock for
    that demand; with 0 the rate is learnt from the calls, and the first day runs short.

    `shelf_max` bounds the replenishment policy's order-up-to level of a store shelf (the
    reorder point is two thirds of it): a store's on-hand stock of a sku stays within
    [0, 1.25 x shelf_max] but for a returned unit or a counted one now and then, however
    fast the stream. DCs hold up to half a round of the shelves they serve, suppliers
    `shelf_max` x stores / 2; both are replenished by purchase orders (`RECEIVED`).
    0 sizes shelves for a day of the demand alone, as large as that is.

    `network` (a `ledger.network.Network`, e.g. from `load_network`) replaces the generated
    sites: its DCs, stores, suppliers and sellers are the simulator's (then `dcs`, `stores`,
    `suppliers` and `sellers` are not used), a transfer runs only on one of its lanes (its
    eta is the lane's transit after the load), a dropship only on a supplier route that
    accepts the sku (its eta is the route's lead days). A store no lane reaches is
    restocked by direct deliveries. The skus stay generated (`SKU-00000`...), so a route
    that lists only other skus carries nothing.
    """

    seed: int = 0
    dcs: int = 2
    stores: int = 20
    suppliers: int = 3
    sellers: int = 5
    skus: int = 200
    start_at: Millis = _DEFAULT_START_AT
    jitter_ms: int = 1_000
    max_pending: int = 50_000
    expected_rate: int = 0
    shelf_max: int = 40
    mix: EventMix = EventMix()
    network: Network | None = None

    def __post_init__(self) -> None:
        for name, (low, high) in _INT_LIMITS.items():
            value: object = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                msg = f"SimConfig.{name}: expected an int in [{low}, {high}], got {value!r}"
                raise ConfigError(msg)
        if self.network is not None and not isinstance(self.network, Network):
            msg = f"SimConfig.network: expected a ledger.network.Network (load_network(path)), got {self.network!r}"
            raise ConfigError(msg)
        dcs, stores, suppliers, sellers = _counts(self)
        if self.network is not None and not (dcs and stores):
            msg = (
                f"SimConfig.network: expected at least one DC and one STORE site to simulate, got {dcs} DC(s) "
                f"and {stores} STORE(s); add them to the network file"
            )
            raise ConfigError(msg)
        positions = (dcs + stores + suppliers) * self.skus
        if positions > _MAX_POSITIONS:
            msg = (
                f"SimConfig.skus: expected (dcs + stores + suppliers) x skus <= {_MAX_POSITIONS}, "
                f"got {positions} with skus={self.skus}; simulate fewer skus or sites"
            )
            raise ConfigError(msg)
        if not isinstance(self.mix, EventMix):
            msg = f"SimConfig.mix: expected an EventMix, got {type(self.mix).__name__}"
            raise ConfigError(msg)
        if sum(_effective_weights(self)) <= 0:
            routes = "" if self.network is None else f", {len(_useful_routes(self))} route(s) for its skus"
            msg = (
                f"SimConfig.mix: expected a positive weight on a kind this network can host, got {self.mix!r} "
                f"with suppliers={suppliers}{routes}, sellers={sellers}"
            )
            raise ConfigError(msg)

    def sites(self) -> tuple[Site, ...]:
        """The simulated sites in the simulator's order: DCs, stores, suppliers, then sellers.

        Generated ones unless `network` is given; then the network's, in file order within a kind.
        """
        if self.network is None:
            return (
                tuple(Site(f"DC-{i:02d}", SiteKind.DC) for i in range(1, self.dcs + 1))
                + tuple(Site(f"ST-{i:03d}", SiteKind.STORE) for i in range(1, self.stores + 1))
                + tuple(Site(f"SUP-{i:02d}", SiteKind.SUPPLIER) for i in range(1, self.suppliers + 1))
                + tuple(Site(f"SEL-{i:02d}", SiteKind.SELLER) for i in range(1, self.sellers + 1))
            )
        return tuple(
            Site(site.id, kind) for kind in SiteKind for site in self.network.sites if site.kind.value == kind.value
        )


def _counts(config: SimConfig) -> tuple[int, int, int, int]:
    """(DCs, stores, suppliers, sellers) of the simulated network."""
    if config.network is None:
        return config.dcs, config.stores, config.suppliers, config.sellers
    kinds = Counter(site.kind.value for site in config.network.sites)
    return kinds[SiteKind.DC], kinds[SiteKind.STORE], kinds[SiteKind.SUPPLIER], kinds[SiteKind.SELLER]


def _sku_index(sku: str, skus: int) -> int | None:
    """The catalogue index of a generated sku name (`SKU-00042` is 42), or None if not among `skus`."""
    match = _SKU.match(sku)
    index = int(match.group(1)) if match else skus
    return index if index < skus else None


def _useful_routes(config: SimConfig) -> tuple[tuple[str, str, int, tuple[int, ...] | None], ...]:
    """The network's dropship routes that accept a generated sku: (supplier, store, lead days, sku indexes).

    The indexes are None when the route accepts every sku.
    """
    if config.network is None:
        return ()
    found = []
    for route in config.network.dropship:
        accepted = None
        if route.skus is not None:
            accepted = tuple(sorted(j for j in (_sku_index(sku, config.skus) for sku in route.skus) if j is not None))
            if not accepted:
                continue
        found.append((route.supplier, route.store, route.lead_days, accepted))
    return tuple(found)


def _effective_weights(config: SimConfig) -> tuple[float, ...]:
    """The mix in `EventMix` field order, with kinds the network cannot host set to 0."""
    mix = config.mix
    _, _, suppliers, sellers = _counts(config)
    can_dropship = suppliers > 0 if config.network is None else bool(_useful_routes(config))
    return (
        mix.sales,
        mix.reservations,
        mix.transfers,
        mix.returns,
        mix.adjustments,
        mix.counts,
        mix.dc_receipts,
        mix.supplier_receipts if suppliers > 0 else 0.0,
        mix.dropships if can_dropship else 0.0,
        mix.offers if sellers > 0 else 0.0,
    )


def _reorder(target: int, position: int) -> int:
    """Units to order up to `target`, or 0 while `position` holds 2/3 of it.

    Counting what is on its way in `position` bounds the open orders per position to three.
    """
    short = target - position
    return short if short >= max(_MIN_TRANSFER, target // 3) else 0


def _network(config: SimConfig) -> tuple[int, int, int, int, int, int]:
    return (config.seed, *_counts(config), config.skus)


def _digest(network: Network | None) -> str:
    """What of a network file the stream depends on, hashed ('' for the generated network).

    Sites with their kinds in order (they are the position indexes), lanes and routes; not
    names, coordinates or hours. Canonical JSON, so it is the same in every process.
    """
    if network is None:
        return ""
    described = {
        "sites": [[site.id, site.kind.value] for site in network.sites],
        "lanes": [[lane.origin, lane.destination, lane.transit_minutes] for lane in network.lanes],
        "routes": [
            [r.supplier, r.store, r.lead_days, None if r.skus is None else sorted(r.skus)] for r in network.dropship
        ],
    }
    return hashlib.sha256(json.dumps(described, separators=(",", ":")).encode()).hexdigest()[:16]


_Step = tuple[Millis, int, int, str, int, int, int, int, Millis]
"""A story's next step, due once the caller's clock reaches it, as a plain tuple:

    (due, seq, kind, ref, origin, sku, qty, dest, deadline)

A heap entry ordered by `due`, then `seq` (the number of the event that scheduled it; each
event schedules at most one step, so ties never reach the other fields). `origin` is the
site index where the story started (transfer origin, supplier, reserving store), `dest`
the one the units go to (the store itself for reservations), `deadline` a reservation's
`expires_at` (0 otherwise). Plain tuples, not a NamedTuple: the state pickles at every
snapshot, and plain tuples pickle several times faster.
"""


@dataclass(frozen=True, slots=True)
class SimState:
    """Everything a `RetailerSimulator` needs to continue its stream; treat it as opaque.

    Immutable and picklable: Bytewax may keep it while the simulator runs on.
    """

    network: tuple[int, int, int, int, int, int]
    """(seed, dcs, stores, suppliers, sellers, skus) the state belongs to."""
    rng_state: tuple[Any, ...]
    counter: int
    """Events emitted so far; the next event is number `counter + 1`."""
    clock: Millis
    opening: int
    """Opening-stock events emitted so far."""
    rate: float
    """Estimated events per millisecond of the caller's clock (0 until known)."""
    window_start: Millis
    window_counter: int
    walks: tuple[int, ...]
    """Where each review round (store shelves, DC and supplier positions) has got to."""
    open_stories: tuple[int, int]
    """Reservation holds and dropships in `pending`, each within its budget."""
    on_hand: tuple[int, ...]
    unavailable: tuple[int, ...]
    """Units held by reservations or staged for a shuttle, per position."""
    inbound: tuple[int, ...]
    """Units picked for the shelf by a transfer and not arrived yet."""
    pending: tuple[_Step, ...]
    network_digest: str = ""
    """A digest of the network file (sites, lanes, routes) the state belongs to; '' for generated sites."""


class RetailerSimulator:
    """A deterministic retailer: the same config and the same calls give the same events.

    It keeps a rough belief of each (site, sku) position - on hand, units held or staged,
    units inbound - so that sales follow the stock (a rare oversell stays, as in real
    stores), replenishment goes where stock runs low, and counts are close to the truth.
    Shelves are stocked to cover the demand the caller's event rate implies over a
    shuttle's lead time, so a fast stream does not simply empty the stores.
    """

    def __init__(self, config: SimConfig) -> None:
        self._config = config
        d, s, p, sellers = _counts(config)
        k = config.skus
        self._d, self._s, self._p, self._sellers, self._k = d, s, p, sellers, k
        self._seed = config.seed
        self._id_prefix = f"sim-{config.seed}-"
        self._jitter = config.jitter_ms
        # Holds last hours and dropships days: separate budgets keep the long ones from
        # crowding out the short ones when the caller's rate is high.
        self._hold_budget = config.max_pending // 2
        self._dropship_budget = config.max_pending // 4
        self._hot = max(1, int(k * _HOT_SHARE))

        # Site indices: DCs, stores, suppliers, then sellers; a position is site * k + sku,
        # so each kind's positions are one contiguous range (sellers hold none).
        self._sites = config.sites()
        self._site_ids = tuple(site.site_id for site in self._sites)
        self._digest = _digest(config.network)
        self._set_routes(config)
        self._sku_ids = tuple(f"SKU-{j:05d}" for j in range(k))
        self._rounds = ((d * k, s * k), (0, d * k), ((d + s) * k, p * k))  # (first position, size)
        positions = (d + s + p) * k

        # Demand per event for one sku: at one store's shelf, and at one supplier.
        weights = _effective_weights(config)
        mix = dict(zip((spec.name for spec in fields(EventMix)), weights, strict=True))
        total = sum(weights)
        share = [(_HOT_DRAW / self._hot if j < self._hot else 0.0) + (1 - _HOT_DRAW) / k for j in range(k)]
        per_store = (mix["sales"] * _SALE_QTY_MEAN + mix["reservations"] * _PICKUP_QTY_MEAN) / total / s
        per_supplier = mix["dropships"] * _DROPSHIP_QTY_MEAN / total / max(1, p)
        self._store_demand = tuple(per_store * x for x in share)
        self._supplier_demand = tuple(per_supplier * x for x in share)
        self._base_target = tuple(24 if j < self._hot else 8 for j in range(k))
        self._stores_per_dc = -(-s // d)
        # The catalogue has its own generator, so the stream's draws do not move prices.
        catalogue = random.Random(f"catalogue-{config.seed}")
        self._base_price = tuple(round(catalogue.uniform(2.0, 250.0), 2) for _ in range(k))

        starters: tuple[Callable[[Millis], InventoryEvent], ...] = (
            self._sale,
            self._reservation,
            self._transfer,
            self._return,
            self._adjustment,
            self._count,
            self._dc_receipt,
            self._supplier_receipt,
            self._dropship if config.network is None else self._routed_dropship,
            self._offer,
        )
        # Only kinds with a positive weight, so a draw can never land on a switched-off one.
        self._starters = tuple(f for f, w in zip(starters, weights, strict=True) if w > 0)
        self._cumulative = tuple(math.fsum(weights[: i + 1]) for i, w in enumerate(weights) if w > 0)
        self._total_weight = self._cumulative[-1]

        self._rng = random.Random(config.seed)
        self._rnd = self._rng.random
        self._counter = 0
        self._clock = config.start_at
        self._opening = 0
        self._rate = config.expected_rate / 1000
        self._window_start = -1  # set by the first call: the caller's clock may be anywhere
        self._window_counter = 0
        self._walks = [0, 0, 0]
        self._open_holds = 0
        self._open_dropships = 0
        self._on_hand = [0] * positions
        self._unavailable = [0] * positions
        self._inbound = [0] * positions
        self._pending: list[_Step] = []
        self._targets: list[tuple[int, ...]] = []
        self._set_targets()

    @classmethod
    def resume(cls, config: SimConfig, state: SimState) -> RetailerSimulator:
        """A simulator that continues exactly where `state` was taken.

        The config's network (seed, site counts or network file, skus) must be the one the
        state was taken with; its mix, jitter and cap may differ (the stream then differs from there).
        """
        # getattr: a state pickled before the field existed was taken on the generated network.
        taken_on, digest = getattr(state, "network_digest", ""), _digest(config.network)
        if taken_on != digest:
            msg = (
                f"SimConfig.network: the state was taken on network {taken_on or 'generated'}, the config has "
                f"network {digest or 'generated'} (a digest of its sites, lanes and routes); resume with the "
                "network the state was taken with"
            )
            raise ConfigError(msg)
        expected = _network(config)
        if state.network != expected:
            names = ("seed", "dcs", "stores", "suppliers", "sellers", "skus")
            name, have, want = next((n, h, w) for n, h, w in zip(names, state.network, expected, strict=True) if h != w)
            msg = (
                f"SimConfig.{name}: the state was taken with {name}={have}, the config has {name}={want}; "
                "resume with the config the state was taken with"
            )
            raise ConfigError(msg)
        sim = cls(config)
        sim._rng.setstate(state.rng_state)
        sim._counter = state.counter
        sim._clock = state.clock
        sim._opening = state.opening
        sim._rate = state.rate
        sim._window_start = state.window_start
        sim._window_counter = state.window_counter
        sim._walks = list(state.walks)
        sim._open_holds, sim._open_dropships = state.open_stories
        sim._on_hand = list(state.on_hand)
        sim._unavailable = list(state.unavailable)
        sim._inbound = list(state.inbound)
        sim._pending = list(state.pending)
        heapify(sim._pending)  # a no-op for states we took; cheap insurance for others
        sim._set_targets()
        return sim

    def state(self) -> SimState:
        """The simulator's state as an immutable value, safe to keep while it runs on."""
        return SimState(
            network=_network(self._config),
            rng_state=self._rng.getstate(),
            counter=self._counter,
            clock=self._clock,
            opening=self._opening,
            rate=self._rate,
            window_start=self._window_start,
            window_counter=self._window_counter,
            walks=tuple(self._walks),
            open_stories=(self._open_holds, self._open_dropships),
            on_hand=tuple(self._on_hand),
            unavailable=tuple(self._unavailable),
            inbound=tuple(self._inbound),
            pending=tuple(self._pending),
            network_digest=self._digest,
        )

    def sites(self) -> tuple[Site, ...]:
        """The network's sites: DCs, stores, suppliers, then sellers (`SimConfig.sites`)."""
        return self._sites

    def next_events(self, now: Millis, n: int) -> list[InventoryEvent]:
        """The next `n` events, each with `occurred_at` at most `jitter_ms` before `now`.

        Steps that are due come first, then the opening stock until it is all out, then
        new stories. A `now` earlier than a previous call's is read as that call's: the
        stream never goes back in time.
        """
        if n < 0:
            msg = f"next_events: expected n >= 0, got {n}"
            raise ValueError(msg)
        now = max(now, self._clock)
        self._clock = now
        self._measure_rate(now)
        out: list[InventoryEvent] = []
        append = out.append

        pending = self._pending
        while pending and pending[0][0] <= now and len(out) < n:
            event = self._continue(heappop(pending), now)
            if event is not None:
                append(event)

        while len(out) < n and self._opening < len(self._on_hand):
            append(self._open(now))

        starters = self._starters
        cumulative = self._cumulative
        last = len(starters) - 1
        total = self._total_weight
        rnd = self._rnd
        for _ in range(n - len(out)):
            # min(): rnd() * total can round up to total itself.
            append(starters[min(bisect_right(cumulative, rnd() * total), last)](now))
        return out

    # -- demand and targets --------------------------------------------------------------------------------------

    def _measure_rate(self, now: Millis) -> None:
        """Re-estimate the caller's event rate once per window (a moving average)."""
        if self._window_start < 0:
            self._window_start, self._window_counter = now, self._counter
        elif now - self._window_start >= _RATE_WINDOW_MS:
            seen = (self._counter - self._window_counter) / (now - self._window_start)
            self._rate = seen if self._rate == 0 else (self._rate + seen) / 2
            self._window_start, self._window_counter = now, self._counter
            self._set_targets()

    def _set_routes(self, config: SimConfig) -> None:
        """Index the network file's lanes and supplier routes by site index (None: the generated network).

        Without a file, any DC or other store may send to any store and any supplier ship to any store.
        """
        self._dc_sources: tuple[tuple[int, ...], ...] | None = None
        self._store_sources: tuple[tuple[int, ...], ...] | None = None
        self._transit: dict[tuple[int, int], int] | None = None
        self._routes: tuple[tuple[int, tuple[int, ...] | None], ...] = ()
        self._routes_into: dict[int, list[tuple[int, int, frozenset[int] | None]]] = {}
        network = config.network
        if network is None:
            return
        index = {site_id: i for i, site_id in enumerate(self._site_ids)}
        d, s = self._d, self._s
        sources: list[list[int]] = [[] for _ in range(s)]
        self._transit = {}
        for lane in network.lanes:
            pair = (index[lane.origin], index[lane.destination])
            if pair not in self._transit:  # the first lane of a pair, in file order
                self._transit[pair] = lane.transit_minutes * _MINUTE
                sources[pair[1] - d].append(pair[0])
        self._dc_sources = tuple(tuple(o for o in found if o < d) for found in sources)
        self._store_sources = tuple(tuple(o for o in found if o >= d) for found in sources)
        routes = []
        for supplier, store, lead_days, accepted in _useful_routes(config):
            routes.append((index[store], accepted))
            skus = None if accepted is None else frozenset(accepted)
            self._routes_into.setdefault(index[store], []).append((index[supplier], lead_days, skus))
        self._routes = tuple(routes)

    def _set_targets(self) -> None:
        """Per-sku stock targets (stores, DCs, suppliers) for the demand over `_COVER_MS`."""
        cover = self._rate * _COVER_MS  # events expected over the cover
        shelf = self._config.shelf_max or _MAX_TARGET
        store = tuple(
            min(shelf, _MAX_TARGET, max(base, int(demand * cover)))
            for base, demand in zip(self._base_target, self._store_demand, strict=True)
        )
        # Receipts land at once, so a DC holds half a round of its stores' shelves.
        dc = tuple(min(_MAX_TARGET, max(_DC_CASE, t * self._stores_per_dc // 2)) for t in store)
        vendor = _MAX_TARGET if not self._config.shelf_max else max(_SUPPLIER_BASE_TARGET, shelf * self._s // 2)
        supplier = tuple(min(vendor, max(_SUPPLIER_BASE_TARGET, int(x * cover))) for x in self._supplier_demand)
        self._targets = [store, dc, supplier]  # indexed by round: _STORES, _DCS, _SUPPLIERS

    def _shortfall(self, store: int, sku: int) -> int:
        """Units a shelf should be reordered (counting what is on its way), or 0 if none."""
        pos = store * self._k + sku
        return _reorder(self._targets[_STORES][sku], self._on_hand[pos] - self._unavailable[pos] + self._inbound[pos])

    def _walk(self, round_: int) -> tuple[int, int]:
        """Review the next positions of a round: the first one short and by how much, else (-1, 0).

        Rounds visit every position in turn, as store staff and planners do, so slow
        movers are reordered before they run out; each review looks at a few positions.
        """
        first, size = self._rounds[round_]
        targets = self._targets[round_]
        on_hand, unavailable, inbound, k = self._on_hand, self._unavailable, self._inbound, self._k
        cursor = self._walks[round_]
        for _ in range(_REVIEW_SPAN):
            pos = first + cursor
            cursor = cursor + 1 if cursor + 1 < size else 0
            qty = _reorder(targets[pos % k], on_hand[pos] - unavailable[pos] + inbound[pos])
            if qty:
                self._walks[round_] = cursor
                return pos, qty
        self._walks[round_] = cursor
        return -1, 0

    # -- emitting ------------------------------------------------------------------------------------------------

    def _event(
        self,
        type_: EventType,
        at: Millis,
        site: int,
        sku: int,
        qty: int,
        source: str,
        ref: str | None = None,
        dest: int = -1,
        eta: Millis | None = None,
        expires_at: Millis | None = None,
        price: float | None = None,
        lead_time_days: int | None = None,
    ) -> InventoryEvent:
        self._counter += 1
        return InventoryEvent(
            event_id=f"{self._id_prefix}{self._counter}",
            type=type_,
            occurred_at=at,
            site_id=self._site_ids[site],
            sku=self._sku_ids[sku],
            qty=qty,
            ref=ref,
            to_site_id=self._site_ids[dest] if dest >= 0 else None,
            eta=eta,
            expires_at=expires_at,
            price=price,
            lead_time_days=lead_time_days,
            source=source,
            origin="sim",
        )

    def _at(self, now: Millis) -> Millis:
        """When a new event occurred: a live feed reports it a little after the fact."""
        return now - int(self._rnd() * self._jitter)

    def _ref(self, prefix: str) -> tuple[int, str]:
        """The number of the event about to be emitted, and a story id derived from it."""
        seq = self._counter + 1
        return seq, f"{prefix}-{self._seed}-{seq}"

    def _between(self, low: int, high: int) -> int:
        """A uniform int in [low, high); cheaper than `randrange` on the hot path."""
        return low + int(self._rnd() * (high - low))

    def _popular_sku(self) -> int:
        """A sku as customers choose them, the hot fifth of the catalogue most often."""
        r = self._rnd()
        if r < _HOT_DRAW:
            return int(r / _HOT_DRAW * self._hot)  # r is uniform below _HOT_DRAW: reuse it
        return int(self._rnd() * self._k)

    def _store(self) -> int:
        return self._d + int(self._rnd() * self._s)

    def _free(self, site: int, sku: int) -> int:
        pos = site * self._k + sku
        return self._on_hand[pos] - self._unavailable[pos]

    # -- opening stock -------------------------------------------------------------------------------------------

    def _open(self, now: Millis) -> InventoryEvent:
        """The next position's opening balance, walking DCs, stores, then suppliers."""
        pos = self._opening
        self._opening += 1
        site, sku = divmod(pos, self._k)
        if site < self._d:
            target = self._targets[_DCS][sku]
            qty = target + self._between(0, target // 4 + 1)
        elif site < self._d + self._s:
            target = self._targets[_STORES][sku]
            qty = target + self._between(0, target // 4 + 1)
        else:
            target = self._targets[_SUPPLIERS][sku]
            qty = target + self._between(0, target + 1)
        self._on_hand[pos] += qty
        # Opening balances come from the ERP's books, not from a dock.
        return self._event(EventType.RECEIVED, self._at(now), site, sku, qty, _ERP)

    # -- new stories ---------------------------------------------------------------------------------------------

    def _sale(self, now: Millis) -> InventoryEvent:
        # The hot path (most events): names are bound locally for speed.
        rnd, k, on_hand, unavailable = self._rnd, self._k, self._on_hand, self._unavailable
        store = self._d + int(rnd() * self._s)
        r = rnd()
        qty = 1 if r < 0.8 else 2 if r < 0.95 else 3
        for _ in range(_SALE_RETRIES):
            sku = self._popular_sku()
            pos = store * k + sku
            free = on_hand[pos] - unavailable[pos]
            if free >= qty:
                break
            if free > 0:
                qty = free  # the customer takes what is left
                break
            if self._shortfall(store, sku):
                # An empty shelf nobody has reordered: staff reorder it, the customer leaves.
                return self._transfer(now, store, sku)
        else:
            if rnd() >= _OVERSELL_RATE or on_hand[pos] - unavailable[pos] - qty < -_MAX_PHANTOM:
                # Empty shelves with stock on its way: staff count the last one.
                return self._count_at(now, store, sku)
            # A rare oversell: the POS sells a unit the books say is not there.
        on_hand[pos] -= qty
        return self._event(EventType.SOLD, now - int(rnd() * self._jitter), store, sku, qty, _POS)

    def _reservation(self, now: Millis) -> InventoryEvent:
        if self._open_holds >= self._hold_budget:
            return self._sale(now)  # no room for another open story: the customer buys in store
        store = self._store()
        sku = self._popular_sku()
        qty = 1 if self._rnd() < 0.85 else 2
        at = self._at(now)
        expires_at = at + self._between(3 * _HOUR, _DAY)
        seq, ref = self._ref("RS")
        # Without free units the ledger will likely refuse it: no hold, nothing follows.
        if self._free(store, sku) >= qty:
            self._unavailable[store * self._k + sku] += qty
            self._open_holds += 1
            r = self._rnd()
            if r < 0.75:
                # Collected within four hours, before the hold lapses (it lasts >= 3 h).
                kind, due = _FULFIL, at + self._between(15 * _MINUTE, min(4 * _HOUR, expires_at - at - 5 * _MINUTE))
            elif r < 0.9:
                kind, due = _RELEASE, at + self._between(5 * _MINUTE, expires_at - at)
            else:
                kind, due = _EXPIRE, expires_at
            heappush(self._pending, (due, seq, kind, ref, store, sku, qty, store, expires_at))
        return self._event(EventType.RESERVATION_REQUESTED, at, store, sku, qty, _OMS, ref=ref, expires_at=expires_at)

    def _transfer(self, now: Millis, dest: int = -1, sku: int = -1) -> InventoryEvent:
        """Pick units for a store's shelf: from a DC, or now and then from another store's surplus.

        Drawn from the mix, it reviews the next shelves of the round; asked for a shelf
        (by a sale facing it empty), it reorders that one. On a network file only the
        origins of lanes to the shelf's store qualify; a store no lane reaches is restocked
        by a direct delivery.
        """
        if dest < 0:
            pos, qty = self._walk(_STORES)
            if not qty:
                return self._sale(now)  # every shelf reviewed is fine: a customer comes instead
            dest, sku = divmod(pos, self._k)
        else:
            qty = self._shortfall(dest, sku)
            if not qty:
                return self._count_at(now, dest, sku)  # stock is on its way: staff count the shelf
        target = self._targets[_STORES][sku]
        origin = -1
        other = self._lateral(dest)
        if other >= 0 and self._free(other, sku) - target >= qty:
            origin = other
        if origin < 0:
            dcs = range(self._d) if self._dc_sources is None else self._dc_sources[dest - self._d]
            if not dcs:
                return self._store_receipt(now, dest, sku, qty)
            origin = max(dcs, key=lambda dc: self._free(dc, sku))
            qty = min(qty, self._free(origin, sku))
            if qty <= 0:
                # The DC is out too: what the stream shows next is its purchase order landing.
                return self._dc_receipt(now, origin, sku)
        self._unavailable[origin * self._k + sku] += qty
        # Counted as on its way from the pick, so the shelf is not reordered meanwhile.
        self._inbound[dest * self._k + sku] += qty
        at = self._at(now)
        seq, ref = self._ref("TR")
        due = at + self._between(20 * _MINUTE, 3 * _HOUR)
        heappush(self._pending, (due, seq, _LOAD, ref, origin, sku, qty, dest, 0))
        return self._event(EventType.TRANSFER_PICKED, at, origin, sku, qty, _WMS, ref=ref, dest=dest)

    def _lateral(self, dest: int) -> int:
        """Now and then (`_LATERAL_RATE`), another store that could send to `dest`; else -1."""
        if self._store_sources is None:
            if self._s > 1 and self._rnd() < _LATERAL_RATE:
                other = self._d + int(self._rnd() * (self._s - 1))
                return other + (other >= dest)  # any store but the destination
            return -1
        stores = self._store_sources[dest - self._d]
        if stores and self._rnd() < _LATERAL_RATE:
            return stores[int(self._rnd() * len(stores))]
        return -1

    def _store_receipt(self, now: Millis, store: int, sku: int, short: int) -> InventoryEvent:
        """A delivery straight to a store no shuttle lane reaches, in whole cases."""
        qty = -(-short // _DC_CASE) * _DC_CASE
        self._on_hand[store * self._k + sku] += qty
        _, ref = self._ref("PO")
        return self._event(EventType.RECEIVED, self._at(now), store, sku, qty, _WMS, ref=ref)

    def _return(self, now: Millis) -> InventoryEvent:
        store = self._store()
        sku = self._popular_sku()
        qty = 1 if self._rnd() < 0.9 else 2
        self._on_hand[store * self._k + sku] += qty
        return self._event(EventType.RETURNED, self._at(now), store, sku, qty, _POS)

    def _adjustment(self, now: Millis) -> InventoryEvent:
        site = self._store() if self._rnd() < 0.8 else int(self._rnd() * self._d)
        sku = int(self._rnd() * self._k)
        pos = site * self._k + sku
        # Mostly shrink (damage, theft), never below zero; a found unit now and then.
        qty = -self._between(1, 4) if self._rnd() < 0.7 and self._on_hand[pos] >= 3 else self._between(1, 3)
        self._on_hand[pos] += qty
        return self._event(EventType.ADJUSTED, self._at(now), site, sku, qty, _WMS)

    def _count(self, now: Millis) -> InventoryEvent:
        site = self._store() if self._rnd() < 0.85 else int(self._rnd() * self._d)
        return self._count_at(now, site, int(self._rnd() * self._k))

    def _count_at(self, now: Millis, site: int, sku: int) -> InventoryEvent:
        pos = site * self._k + sku
        # Most counts confirm the books; the rest find a unit or two of drift.
        drift = 0 if self._rnd() < 0.7 else (-2, -1, 1, 2)[int(self._rnd() * 4)]
        found = self._on_hand[pos] + drift
        # Units held for a customer or staged for a shuttle sit isolated: a count never misses them.
        qty = max(0, found if found >= self._unavailable[pos] else self._on_hand[pos])
        self._on_hand[pos] = qty  # the count is the truth from now on
        return self._event(EventType.COUNTED, self._at(now), site, sku, qty, _WMS)

    def _dc_receipt(self, now: Millis, dc: int = -1, sku: int = -1) -> InventoryEvent:
        """A purchase order lands at a DC: the next short position of the round, or the one asked for."""
        if dc < 0:
            pos, short = self._walk(_DCS)
            if not short:
                return self._sale(now)  # every DC position reviewed is fine: a customer comes instead
            dc, sku = divmod(pos, self._k)
        else:
            short = max(1, self._targets[_DCS][sku] - self._free(dc, sku))  # DCs have nothing inbound
        qty = -(-short // _DC_CASE) * _DC_CASE
        self._on_hand[dc * self._k + sku] += qty
        _, ref = self._ref("PO")
        return self._event(EventType.RECEIVED, self._at(now), dc, sku, qty, _WMS, ref=ref)

    def _supplier_receipt(self, now: Millis, supplier: int = -1, sku: int = -1) -> InventoryEvent:
        """A supplier's production lands in its stock: the next short position of the round, or the one asked for."""
        if supplier < 0:
            pos, short = self._walk(_SUPPLIERS)
            if not short:
                return self._sale(now)  # every supplier position reviewed is fine: a customer comes instead
            supplier, sku = divmod(pos, self._k)
        else:
            short = max(1, self._targets[_SUPPLIERS][sku] - self._free(supplier, sku))
        qty = -(-short // _SUPPLIER_LOT) * _SUPPLIER_LOT
        self._on_hand[supplier * self._k + sku] += qty
        return self._event(EventType.RECEIVED, self._at(now), supplier, sku, qty, _SUPPLIER)

    def _dropship(self, now: Millis) -> InventoryEvent:
        """A supplier ships a customer's order to a store, for pickup there."""
        if self._open_dropships >= self._dropship_budget:
            return self._sale(now)  # no room for another open story: the customer buys in store
        store = self._store()
        sku = self._popular_sku()
        # The OMS routes the order to the supplier with the most stock of the sku.
        first = self._d + self._s
        supplier = max(range(first, first + self._p), key=lambda site: self._free(site, sku))
        qty = self._between(1, 5)
        if self._free(supplier, sku) < qty:
            return self._supplier_receipt(now, supplier, sku)
        # Not counted in the shelf's inbound: a customer's parcel does not refill the shelf.
        self._on_hand[supplier * self._k + sku] -= qty
        at = self._at(now)
        eta = at + self._between(_DAY, 3 * _DAY)
        seq, ref = self._ref("DS")
        due = max(eta + self._between(-2 * _HOUR, 6 * _HOUR), at + _HOUR)
        heappush(self._pending, (due, seq, _DS_RECEIVE, ref, supplier, sku, qty, store, 0))
        self._open_dropships += 1
        return self._event(EventType.DROPSHIP_SHIPPED, at, supplier, sku, qty, _SUPPLIER, ref=ref, dest=store, eta=eta)

    def _routed_dropship(self, now: Millis) -> InventoryEvent:
        """A dropship on a network file's supplier route, for a sku the route accepts."""
        if self._open_dropships >= self._dropship_budget:
            return self._sale(now)  # no room for another open story: the customer buys in store
        store, accepted = self._routes[int(self._rnd() * len(self._routes))]
        sku = self._popular_sku() if accepted is None else accepted[int(self._rnd() * len(accepted))]
        # The OMS routes the order to the supplier with the most stock among those shipping the sku there.
        supplier, lead_days = max(
            ((supplier, lead) for supplier, lead, skus in self._routes_into[store] if skus is None or sku in skus),
            key=lambda route: self._free(route[0], sku),
        )
        qty = self._between(1, 5)
        if self._free(supplier, sku) < qty:
            return self._supplier_receipt(now, supplier, sku)
        self._on_hand[supplier * self._k + sku] -= qty
        at = self._at(now)
        eta = at + _SAME_DAY_MS
        if lead_days and self._config.network is not None:
            # Lead days count on the store's wall clock, as the promise counts them.
            eta = self._config.network.add_days(self._site_ids[store], at, lead_days)
        seq, ref = self._ref("DS")
        due = max(eta + self._between(-2 * _HOUR, 6 * _HOUR), at + _HOUR)
        heappush(self._pending, (due, seq, _DS_RECEIVE, ref, supplier, sku, qty, store, 0))
        self._open_dropships += 1
        return self._event(EventType.DROPSHIP_SHIPPED, at, supplier, sku, qty, _SUPPLIER, ref=ref, dest=store, eta=eta)

    def _offer(self, now: Millis) -> InventoryEvent:
        seller = self._d + self._s + self._p + int(self._rnd() * self._sellers)
        sku = int(self._rnd() * self._k)
        qty = 0 if self._rnd() < 0.1 else self._between(1, 41)  # 0: the seller sold out
        price = round(self._base_price[sku] * (0.85 + 0.3 * self._rnd()), 2)
        lead_time_days = self._between(1, 15)
        return self._event(
            EventType.OFFER_UPDATED,
            self._at(now),
            seller,
            sku,
            qty,
            _MARKETPLACE,
            price=price,
            lead_time_days=lead_time_days,
        )

    # -- continuations -------------------------------------------------------------------------------------------

    def _continue(self, step: _Step, now: Millis) -> InventoryEvent | None:
        """Emit a due step (None for a silent one, such as a hold that lapsed)."""
        due, _, kind, ref, origin, sku, qty, dest, deadline = step
        k = self._k
        if kind == _EXPIRE:
            self._unavailable[origin * k + sku] -= qty
            self._open_holds -= 1
            return None
        # Reported when the feed sees it, but never before it was due.
        at = max(due, self._at(now))
        if kind == _LOAD:
            self._on_hand[origin * k + sku] -= qty
            self._unavailable[origin * k + sku] -= qty
            if self._transit is None:
                eta = at + self._between(2 * _HOUR, 10 * _HOUR)
                # Shuttles run early or late against their eta, but drive at least an hour.
                arrival = max(eta + self._between(-30 * _MINUTE, 90 * _MINUTE), at + _HOUR)
            else:
                # The lane's transit; early or late against it, but never in less than half of it.
                transit = max(self._transit[origin, dest], _MINUTE)
                eta = at + transit
                arrival = max(eta + self._between(-30 * _MINUTE, 90 * _MINUTE), at + max(transit // 2, _MINUTE))
            heappush(self._pending, (arrival, self._counter + 1, _ARRIVE, ref, origin, sku, qty, dest, 0))
            return self._event(EventType.SHUTTLE_LOADED, at, origin, sku, qty, _TMS, ref=ref, dest=dest, eta=eta)
        if kind == _ARRIVE:
            self._inbound[dest * k + sku] -= qty
            self._on_hand[dest * k + sku] += qty
            return self._event(EventType.SHUTTLE_ARRIVED, at, dest, sku, qty, _WMS, ref=ref)
        if kind == _DS_RECEIVE:
            self._open_dropships -= 1
            self._on_hand[dest * k + sku] += qty
            return self._event(EventType.DROPSHIP_RECEIVED, at, dest, sku, qty, _WMS, ref=ref)
        # _FULFIL or _RELEASE of a held reservation.
        self._unavailable[origin * k + sku] -= qty
        self._open_holds -= 1
        if at >= deadline:
            # Reported too late: the hold has lapsed in the ledger already; nothing to say.
            return None
        if kind == _FULFIL:
            self._on_hand[origin * k + sku] -= qty
            return self._event(EventType.RESERVATION_FULFILLED, at, origin, sku, qty, _OMS, ref=ref)
        return self._event(EventType.RESERVATION_RELEASED, at, origin, sku, qty, _OMS, ref=ref)
