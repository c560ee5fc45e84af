"""The retail network a promise is made over: sites, shuttle lanes, routes, appointments.

Loaded once from a TOML file (`docs/network.md` documents every key;
`ledger.network_schema` checks it, `adapters.network_file` reads it) and then only
read. Every instant at the interface is `Millis` (UTC); opening hours, departures and
slots are local wall-clock times, converted with `zoneinfo` so a DST change moves
them in UTC and not on the shop floor.

    network = parse_network(text)  # ledger.network_schema
    run = network.next_run(network.lane("VIENNE>LYON"), ready_at=now)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ledger.errors import ConfigError
from ledger.events import Millis
from ledger.fulfilment import SourceKind

__all__ = [
    "DAY_MS",
    "MINUTE_MS",
    "WEEKDAYS",
    "Appointments",
    "CarrierRoute",
    "Lane",
    "Network",
    "Run",
    "Site",
    "SupplierRoute",
    "appointment_sku",
    "appointment_slot",
    "haversine_km",
]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Weekday names as the file spells them; index 0 is Monday, as `date.weekday()`."""

MINUTE_MS = 60_000
_DAY_MINUTES = 24 * 60
DAY_MS = _DAY_MINUTES * MINUTE_MS
"""A day of 24 hours in milliseconds (calendar days across DST go through `Network.add_days`)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_APPT_PREFIX = "appt:"
_APPT_FORMAT = "%Y-%m-%dT%H:%MZ"
_APPT = re.compile(r"^appt:\d{4}-\d{2}-\d{2}T\d{2}:\d{2}Z$")
_EARTH_RADIUS_KM = 6371.0088

Interval = tuple[int, int]
"""Local minutes since midnight, [open, close); close may be 1440 (24:00)."""
_ALL_DAY: tuple[Interval, ...] = ((0, _DAY_MINUTES),)


@dataclass(frozen=True, slots=True)
class Appointments:
    """A store's appointment slots: `capacity` customers at once, every `slot_minutes`.

    Slots lie inside the opening hours, narrowed to [`opens`, `closes`) when given
    (local minutes since midnight).
    """

    slot_minutes: int
    capacity: int
    opens: int | None = None
    closes: int | None = None


@dataclass(frozen=True, slots=True)
class Site:
    """A place that holds stock: a DC, a store, a supplier or a marketplace seller."""

    id: str
    name: str
    kind: SourceKind
    lat: float
    lon: float
    tz: str
    """IANA time zone of the site's wall clock, e.g. `Europe/Paris`."""
    hours: tuple[tuple[Interval, ...], ...] | None = None
    """Opening intervals per weekday (Monday first); an empty day is closed; None is always open."""
    prep_minutes: int = 30
    """Time for the store to have a unit ready for pickup."""
    pick_zone: str = "E-COM"
    """Stock-room zone where clerks isolate units for e-commerce."""
    appointments: Appointments | None = None

    @property
    def zone(self) -> ZoneInfo:
        """The site's time zone (`ZoneInfo` caches instances, so this is cheap)."""
        return ZoneInfo(self.tz)


@dataclass(frozen=True, slots=True)
class Lane:
    """A scheduled shuttle from a store or DC to a store.

    `departures` are (weekday, local minute) in the origin's time zone. A parcel rides
    a departure when it is picked `cutoff_minutes` before it leaves.
    """

    id: str
    origin: str
    destination: str
    departures: tuple[tuple[int, int], ...]
    transit_minutes: int
    cutoff_minutes: int


@dataclass(frozen=True, slots=True)
class Run:
    """One departure of a lane: `run_id` is `"{lane_id}@{local ISO date-time}"`."""

    lane_id: str
    run_id: str
    cutoff_at: Millis
    departs_at: Millis
    arrives_at: Millis


@dataclass(frozen=True, slots=True)
class SupplierRoute:
    """A supplier ships to a store in `lead_days`; `skus` None accepts every sku."""

    supplier: str
    store: str
    lead_days: int
    skus: frozenset[str] | None = None

    def accepts(self, sku: str) -> bool:
        """Whether the store takes this sku by dropship on this route."""
        return self.skus is None or sku in self.skus


@dataclass(frozen=True, slots=True)
class CarrierRoute:
    """Home delivery from a DC in `lead_days`, to customers within `max_km` when given."""

    dc: str
    lead_days: int
    max_km: float | None = None


@dataclass(frozen=True, slots=True)
class Network:
    """The whole network, with the defaults a promise uses; read-only once built."""

    sites: tuple[Site, ...]
    lanes: tuple[Lane, ...] = ()
    dropship: tuple[SupplierRoute, ...] = ()
    carriers: tuple[CarrierRoute, ...] = ()
    radius_km: float = 50.0
    """Default search radius around the customer."""
    horizon_days: int = 14
    """How far ahead departures, openings and slots are searched."""
    seller_lead_days: int = 3
    """Home delivery lead time of a seller whose offer gives none."""
    _sites: dict[str, Site] = field(init=False, repr=False, compare=False)
    _lanes: dict[str, Lane] = field(init=False, repr=False, compare=False)
    _from: dict[str, tuple[Lane, ...]] = field(init=False, repr=False, compare=False)
    _routes: dict[str, tuple[SupplierRoute, ...]] = field(init=False, repr=False, compare=False)
    _carriers: dict[str, CarrierRoute] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Indexes built once (a promise looks lanes up per site and sku: a scan of
        # 2,700 lanes was three quarters of its time); object.__setattr__: frozen.
        object.__setattr__(self, "_sites", {site.id: site for site in self.sites})
        object.__setattr__(self, "_lanes", {lane.id: lane for lane in self.lanes})
        lanes: dict[str, list[Lane]] = {}
        for lane in self.lanes:
            lanes.setdefault(lane.origin, []).append(lane)
        object.__setattr__(self, "_from", {origin: tuple(found) for origin, found in lanes.items()})
        routes: dict[str, list[SupplierRoute]] = {}
        for route in self.dropship:
            routes.setdefault(route.supplier, []).append(route)
        object.__setattr__(self, "_routes", {supplier: tuple(found) for supplier, found in routes.items()})
        carriers: dict[str, CarrierRoute] = {}
        for carrier in self.carriers:
            carriers.setdefault(carrier.dc, carrier)
        object.__setattr__(self, "_carriers", carriers)
        if len(self._sites) != len(self.sites) or len(self._lanes) != len(self.lanes):
            msg = "network: site ids and lane ids must be unique"
            raise ConfigError(msg)
        refs = [(f"lane {x.id!r}", x.origin) for x in self.lanes]
        refs += [(f"lane {x.id!r}", x.destination) for x in self.lanes]
        refs += [(f"dropship route {x.supplier}>{x.store}", s) for x in self.dropship for s in (x.supplier, x.store)]
        refs += [(f"carrier route from {x.dc!r}", x.dc) for x in self.carriers]
        for what, site_id in refs:
            if site_id not in self._sites:
                msg = f"network: {what} names site {site_id!r}, which is not among the sites"
                raise ConfigError(msg)

    def site(self, site_id: str) -> Site:
        """The site with this id (KeyError when unknown)."""
        return self._sites[site_id]

    def has_site(self, site_id: str) -> bool:
        """Whether the network knows this site."""
        return site_id in self._sites

    def lane(self, lane_id: str) -> Lane:
        """The lane with this id (KeyError when unknown)."""
        return self._lanes[lane_id]

    def lanes_from(self, origin: str) -> tuple[Lane, ...]:
        """Lanes leaving a site, in file order."""
        return self._from.get(origin, ())

    def routes_from(self, supplier: str) -> tuple[SupplierRoute, ...]:
        """Dropship routes of a supplier, in file order."""
        return self._routes.get(supplier, ())

    def carrier(self, dc: str) -> CarrierRoute | None:
        """The home-delivery route from a DC, if it has one."""
        return self._carriers.get(dc)

    def distance_km(self, site_id: str, lat: float, lon: float) -> float:
        """Great-circle distance from a site to a point."""
        site = self._sites[site_id]
        return haversine_km(site.lat, site.lon, lat, lon)

    def add_days(self, site_id: str, at: Millis, days: int) -> Millis:
        """`at` plus whole days on the site's wall clock (so 09:00 stays 09:00 across DST)."""
        # Aware datetime + timedelta is wall-clock arithmetic; the offset is recomputed after.
        return _millis(_local(at, self._sites[site_id].zone) + timedelta(days=days))

    def next_opening(self, site_id: str, at: Millis) -> Millis | None:
        """The first instant at or after `at` when the site is open; None if closed for the horizon."""
        site = self._sites[site_id]
        for day in _days_from(at, site.zone, self.horizon_days + 1):
            for lo, hi in _open(site, day):
                closes = _wall(day, hi, site.zone)
                if at < closes:
                    return max(at, _wall(day, lo, site.zone))
        return None

    def runs(self, lane: Lane, start: Millis, end: Millis) -> tuple[Run, ...]:
        """The lane's departures leaving in [start, end), in time order."""
        zone = self._sites[lane.origin].zone
        found: list[Run] = []
        for day in _days_from(start, zone, (end - start) // DAY_MS + 2):
            for weekday, minute in lane.departures:
                if weekday != day.weekday():
                    continue
                departs = _wall(day, minute, zone)
                if start <= departs < end:
                    run_id = f"{lane.id}@{day.isoformat()}T{minute // 60:02d}:{minute % 60:02d}"
                    cutoff = departs - lane.cutoff_minutes * MINUTE_MS
                    found.append(Run(lane.id, run_id, cutoff, departs, departs + lane.transit_minutes * MINUTE_MS))
        return tuple(sorted(found, key=lambda run: (run.departs_at, run.run_id)))

    def next_run(self, lane: Lane, ready_at: Millis) -> Run | None:
        """The first departure whose pick cut-off is at or after `ready_at`, within the horizon."""
        horizon_end = ready_at + self.horizon_days * DAY_MS + lane.cutoff_minutes * MINUTE_MS
        return next((run for run in self.runs(lane, ready_at, horizon_end) if run.cutoff_at >= ready_at), None)

    def slots(self, store_id: str, start: Millis, end: Millis) -> tuple[Millis, ...]:
        """Start instants of the store's appointment slots starting in [start, end)."""
        site = self._sites[store_id]
        book = site.appointments
        if book is None:
            return ()
        step, zone = book.slot_minutes, site.zone
        found: set[Millis] = set()
        for day in _days_from(start, zone, (end - start) // DAY_MS + 2):
            for lo, hi in _open(site, day):
                lo = max(lo, book.opens if book.opens is not None else lo)
                hi = min(hi, book.closes if book.closes is not None else hi)
                for minute in range(lo, hi - step + 1, step):
                    slot = _wall(day, minute, zone)
                    if start <= slot < end:
                        found.add(slot)
        return tuple(sorted(found))

    def slot_end(self, store_id: str, slot_start: Millis) -> Millis:
        """End of an appointment slot that starts at `slot_start`."""
        book = self._sites[store_id].appointments
        if book is None:
            msg = f"{store_id} takes no appointments"
            raise ValueError(msg)
        return slot_start + book.slot_minutes * MINUTE_MS


def appointment_sku(slot_start: Millis) -> str:
    """The sku of an appointment slot's capacity position, e.g. `appt:2026-11-25T17:00Z`."""
    if slot_start % MINUTE_MS:
        msg = f"an appointment slot starts on a whole minute, got {slot_start} ms"
        raise ValueError(msg)
    return _APPT_PREFIX + (_EPOCH + timedelta(milliseconds=slot_start)).strftime(_APPT_FORMAT)


def appointment_slot(sku: str) -> Millis | None:
    """The slot start an `appointment_sku` names; None for any other sku."""
    if not _APPT.match(sku):
        return None
    try:
        parsed = datetime.strptime(sku, _APPT_PREFIX + _APPT_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return _millis(parsed)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance between two points in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _millis(moment: datetime) -> Millis:
    # Integer arithmetic: `timestamp() * 1000` is a float and can land 1 ms low.
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _local(at: Millis, zone: ZoneInfo) -> datetime:
    return (_EPOCH + timedelta(milliseconds=at)).astimezone(zone)


def _wall(day: date, minute: int, zone: ZoneInfo) -> Millis:
    """A local wall-clock time as an instant; a time skipped by DST moves forward by the gap."""
    day, minute = day + timedelta(days=minute // _DAY_MINUTES), minute % _DAY_MINUTES
    return _millis(datetime.combine(day, time(minute // 60, minute % 60), tzinfo=zone))


def _days_from(at: Millis, zone: ZoneInfo, count: int) -> Iterator[date]:
    """`count` local dates from the one `at` falls on."""
    first = _local(at, zone).date()
    return (first + timedelta(days=offset) for offset in range(count))


def _open(site: Site, day: date) -> tuple[Interval, ...]:
    return _ALL_DAY if site.hours is None else site.hours[day.weekday()]
