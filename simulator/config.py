"""What to simulate: the sites, the catalogue, the start time and the mix of stories (`SimConfig`).

A config is checked whole when it is made: a wrong value raises `ConfigError` naming the
field, so a simulator never starts on a network it cannot run. The network is generated
from site counts (`DC-01`, `ST-001`, `SUP-01`, `SEL-01`...) or taken from a network file
(`ledger.network`, docs/network.md).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, fields
from enum import StrEnum

from ledger.errors import ConfigError
from ledger.events import Millis
from ledger.network import Network

__all__ = [
    "DAY",
    "HOUR",
    "MAX_TARGET",
    "MINUTE",
    "EventMix",
    "SimConfig",
    "Site",
    "SiteKind",
    "effective_weights",
    "site_counts",
    "useful_routes",
]

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

_DEFAULT_START_AT: Millis = 1_735_689_600_000
"""2025-01-01T00:00:00Z: a fixed default, so a config without one is still reproducible."""

_MAX_POSITIONS = 2_000_000
"""(DCs + stores + suppliers) x skus; the beliefs are three flat lists of this length."""

_MAX_JITTER_MS = MINUTE
"""Below every story's shortest delay (5 min), so a continuation never precedes its start."""

MAX_TARGET = 99_000  # keeps every qty (at most twice a target) far below the contract's 1,000,000
_SKU = re.compile(r"^SKU-(\d{5})$")


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
    "shelf_max": (0, MAX_TARGET),
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
        dcs, stores, suppliers, sellers = site_counts(self)
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
        if sum(effective_weights(self)) <= 0:
            routes = "" if self.network is None else f", {len(useful_routes(self))} route(s) for its skus"
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


def site_counts(config: SimConfig) -> tuple[int, int, int, int]:
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


def useful_routes(config: SimConfig) -> tuple[tuple[str, str, int, tuple[int, ...] | None], ...]:
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


def effective_weights(config: SimConfig) -> tuple[float, ...]:
    """The mix in `EventMix` field order, with kinds the network cannot host set to 0."""
    mix = config.mix
    _, _, suppliers, sellers = site_counts(config)
    can_dropship = suppliers > 0 if config.network is None else bool(useful_routes(config))
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
