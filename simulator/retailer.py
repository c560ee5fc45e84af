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
wraps it lives in adapters/. The stories themselves are simulator/stories.py.

Example:

    sim = RetailerSimulator(SimConfig(seed=7))
    batch = sim.next_events(now=1_735_689_600_000, n=500)
    snapshot = sim.state()

    lyon = RetailerSimulator(SimConfig(seed=7, network=load_network("examples/network.toml")))
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import fields
from heapq import heapify, heappop

from ledger.errors import ConfigError
from ledger.events import InventoryEvent, Millis
from simulator.config import (
    HOUR,
    MAX_TARGET,
    MINUTE,
    EventMix,
    SimConfig,
    Site,
    effective_weights,
    site_counts,
    useful_routes,
)
from simulator.state import SimState, network_digest, network_key
from simulator.stories import DC_CASE, HOT_DRAW, Stories

__all__ = ["RetailerSimulator"]

# Customer demand: the first fifth of the catalogue takes 60 % of it.
_HOT_SHARE = 0.2
_SALE_QTY_MEAN = 1.25  # 1, 2 or 3 units with 80/15/5 %
_PICKUP_QTY_MEAN = 0.86  # reserved units that end up collected: 75 % of 1.15
_DROPSHIP_QTY_MEAN = 2.5

# Replenishment: shelves are stocked to cover the demand seen until a shuttle can refill them.
_COVER_MS = 24 * HOUR  # reorder at 2/3 of it (16 h) outlasts pick, load and drive (8 h on average)
_RATE_WINDOW_MS = 15 * MINUTE  # how often the event rate, hence the demand, is re-estimated
_SUPPLIER_BASE_TARGET = 200


class RetailerSimulator(Stories):
    """A deterministic retailer: the same config and the same calls give the same events.

    It keeps a rough belief of each (site, sku) position - on hand, units held or staged,
    units inbound - so that sales follow the stock (a rare oversell stays, as in real
    stores), replenishment goes where stock runs low, and counts are close to the truth.
    Shelves are stocked to cover the demand the caller's event rate implies over a
    shuttle's lead time, so a fast stream does not simply empty the stores.
    """

    def __init__(self, config: SimConfig) -> None:
        self._config = config
        d, s, p, sellers = site_counts(config)
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
        self._digest = network_digest(config.network)
        self._set_routes(config)
        self._sku_ids = tuple(f"SKU-{j:05d}" for j in range(k))
        self._rounds = ((d * k, s * k), (0, d * k), ((d + s) * k, p * k))  # (first position, size)
        positions = (d + s + p) * k

        # Demand per event for one sku: at one store's shelf, and at one supplier.
        weights = effective_weights(config)
        mix = dict(zip((spec.name for spec in fields(EventMix)), weights, strict=True))
        total = sum(weights)
        share = [(HOT_DRAW / self._hot if j < self._hot else 0.0) + (1 - HOT_DRAW) / k for j in range(k)]
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
        self._pending = []
        self._targets = []
        self._set_targets()

    @classmethod
    def resume(cls, config: SimConfig, state: SimState) -> RetailerSimulator:
        """A simulator that continues exactly where `state` was taken.

        The config's network (seed, site counts or network file, skus) must be the one the
        state was taken with; its mix, jitter and cap may differ (the stream then differs from there).
        """
        # getattr: a state pickled before the field existed was taken on the generated network.
        taken_on, digest = getattr(state, "network_digest", ""), network_digest(config.network)
        if taken_on != digest:
            msg = (
                f"SimConfig.network: the state was taken on network {taken_on or 'generated'}, the config has "
                f"network {digest or 'generated'} (a digest of its sites, lanes and routes); resume with the "
                "network the state was taken with"
            )
            raise ConfigError(msg)
        expected = network_key(config)
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
            network=network_key(self._config),
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
        self._dc_sources = None
        self._store_sources = None
        self._transit = None
        self._routes = ()
        self._routes_into = {}
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
                self._transit[pair] = lane.transit_minutes * MINUTE
                sources[pair[1] - d].append(pair[0])
        self._dc_sources = tuple(tuple(o for o in found if o < d) for found in sources)
        self._store_sources = tuple(tuple(o for o in found if o >= d) for found in sources)
        routes = []
        for supplier, store, lead_days, accepted in useful_routes(config):
            routes.append((index[store], accepted))
            skus = None if accepted is None else frozenset(accepted)
            self._routes_into.setdefault(index[store], []).append((index[supplier], lead_days, skus))
        self._routes = tuple(routes)

    def _set_targets(self) -> None:
        """Per-sku stock targets (stores, DCs, suppliers) for the demand over `_COVER_MS`."""
        cover = self._rate * _COVER_MS  # events expected over the cover
        shelf = self._config.shelf_max or MAX_TARGET
        store = tuple(
            min(shelf, MAX_TARGET, max(base, int(demand * cover)))
            for base, demand in zip(self._base_target, self._store_demand, strict=True)
        )
        # Receipts land at once, so a DC holds half a round of its stores' shelves.
        dc = tuple(min(MAX_TARGET, max(DC_CASE, t * self._stores_per_dc // 2)) for t in store)
        vendor = MAX_TARGET if not self._config.shelf_max else max(_SUPPLIER_BASE_TARGET, shelf * self._s // 2)
        supplier = tuple(min(vendor, max(_SUPPLIER_BASE_TARGET, int(x * cover))) for x in self._supplier_demand)
        self._targets = [store, dc, supplier]  # indexed by round: STORES, DCS, SUPPLIERS
