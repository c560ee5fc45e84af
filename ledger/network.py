"""The retail network a promise is made over: sites, shuttle lanes, routes, appointments.

Loaded once from a TOML file (`docs/network.md` documents every key) and then only
read. Every instant at the interface is `Millis` (UTC); opening hours, departures and
slots are local wall-clock times, converted with `zoneinfo` so a DST change moves
them in UTC and not on the shop floor.

    network = load_network("examples/network.toml")
    run = network.next_run(network.lane("VIENNE>LYON"), ready_at=now)
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from typing import NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
    "load_network",
    "network_from_mapping",
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
_HHMM = re.compile(r"^(\d{2}):(\d{2})$")
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


# --- loading -------------------------------------------------------------------------

_TOP = {"promise", "sites", "lanes", "dropship", "carriers"}
_PROMISE = {"radius_km", "horizon_days", "seller_lead_days"}
_SITE = {"id", "name", "kind", "lat", "lon", "tz", "hours", "prep_minutes", "pick_zone", "appointments"}
_APPOINTMENTS = {"slot_minutes", "capacity", "from", "until"}
_LANE = {"id", "origin", "destination", "days", "departures", "transit_minutes", "cutoff_minutes"}
_DEPARTURE = {"at", "days"}
_DROPSHIP = {"supplier", "store", "lead_days", "skus"}
_CARRIER = {"dc", "lead_days", "max_km"}
_REQUIRED = object()


def load_network(path: str | Path) -> Network:
    """Read and check a network TOML file; a `ConfigError` names the key path and the file."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        msg = f"cannot read the network file {path}: {exc.strerror}; check the path"
        raise ConfigError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path} is not valid TOML: {exc}"
        raise ConfigError(msg) from exc
    return network_from_mapping(data, origin=str(path))


def network_from_mapping(data: Mapping[str, object], *, origin: str = "network") -> Network:
    """Build a network from parsed TOML (or any plain mapping), checking every key."""
    top = _Table(data, "", origin, _TOP)
    settings = top.table("promise", _PROMISE, required=False)
    sites = tuple(_site(table) for table in top.tables("sites", _SITE))
    kinds = {}
    for index, site in enumerate(sites):
        if site.id in kinds:
            top.fail(f"sites[{index}].id", f"a unique site id; {site.id!r} is already used")
        kinds[site.id] = site.kind
    lanes = tuple(_lane(table, kinds) for table in top.tables("lanes", _LANE, required=False))
    seen: set[str] = set()
    for index, lane in enumerate(lanes):
        if lane.id in seen:
            top.fail(f"lanes[{index}].id", f"a unique lane id; {lane.id!r} is already used")
        seen.add(lane.id)
    dropship = tuple(_route(table, kinds) for table in top.tables("dropship", _DROPSHIP, required=False))
    carriers = tuple(_carrier(table, kinds) for table in top.tables("carriers", _CARRIER, required=False))
    return Network(
        sites=sites,
        lanes=lanes,
        dropship=dropship,
        carriers=carriers,
        radius_km=settings.number("radius_km", default=50.0, low=0.0, exclusive=True),
        horizon_days=settings.integer("horizon_days", default=14, low=1, high=366),
        seller_lead_days=settings.integer("seller_lead_days", default=3, low=0, high=365),
    )


class _Table:
    """Typed access to one table; every error names the key path and the file."""

    def __init__(self, value: object, path: str, origin: str, allowed: set[str]) -> None:
        self.path, self.origin = path, origin
        if not isinstance(value, Mapping):
            self.fail(path or "<top>", "a table", value)
        self.data: Mapping[str, object] = value
        for key in sorted(self.data):
            if key not in allowed:
                self.fail(self.key(key), f"no such key; expected one of {', '.join(sorted(allowed))}")

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, path: str, expected: str, got: object = _REQUIRED) -> NoReturn:
        came = "" if got is _REQUIRED else f", got {got!r}"
        msg = f"{path} ({self.origin}): expected {expected}{came}"
        raise ConfigError(msg)

    def get(self, name: str, default: object) -> object:
        value = self.data.get(name, default)
        if value is _REQUIRED:
            self.fail(self.key(name), "this required key (see docs/network.md)")
        return value

    def text(self, name: str, default: object = _REQUIRED) -> str:
        value = self.get(name, default)
        if not isinstance(value, str) or not value.strip():
            self.fail(self.key(name), "a non-empty string", value)
        if "|" in value:
            self.fail(self.key(name), "no '|' (it separates the parts of a position key)", value)
        return value

    def integer(self, name: str, *, default: object = _REQUIRED, low: int = 0, high: int = 10**6) -> int:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(self.key(name), f"a whole number within {low}..{high}", value)
        return value

    def number(
        self, name: str, *, default: object = _REQUIRED, low: float, high: float = math.inf, exclusive: bool = False
    ) -> float:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(self.key(name), "a number", value)
        if not low <= value <= high or (exclusive and value == low):
            self.fail(self.key(name), f"a number {'>' if exclusive else '>='} {low} and <= {high}", value)
        return float(value)

    def table(self, name: str, allowed: set[str], *, required: bool = True) -> _Table:
        value = self.data.get(name)
        if value is None:
            if required:
                self.fail(self.key(name), "this required table (see docs/network.md)")
            value = {}
        return _Table(value, self.key(name), self.origin, allowed)

    def tables(self, name: str, allowed: set[str], *, required: bool = True) -> list[_Table]:
        value = self.data.get(name)
        if value is None:
            if required:
                self.fail(self.key(name), f"at least one [[{name}]] table (see docs/network.md)")
            return []
        if not isinstance(value, list):
            self.fail(self.key(name), f"an array of tables, written [[{name}]]", value)
        return [_Table(item, f"{self.key(name)}[{index}]", self.origin, allowed) for index, item in enumerate(value)]


def _site(table: _Table) -> Site:
    site_id = table.text("id")
    kind_name = table.text("kind")
    kind = SourceKind.__members__.get(kind_name)
    if kind is None:
        table.fail(table.key("kind"), f"one of {', '.join(SourceKind.__members__)}", kind_name)
    tz = table.text("tz")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        table.fail(table.key("tz"), "an IANA time zone such as 'Europe/Paris'", tz)
    hours = None
    if "hours" in table.data:
        hours = _hours(table.data["hours"], table.key("hours"), table)
    elif kind is SourceKind.STORE:
        table.fail(table.key("hours"), 'opening hours for a STORE, e.g. { mon-sat = "10:00-19:00", sun = "closed" }')
    appointments = None
    if "appointments" in table.data:
        if kind is not SourceKind.STORE:
            table.fail(table.key("appointments"), f"appointments only on a STORE; {site_id} is a {kind.value}")
        book = table.table("appointments", _APPOINTMENTS)
        opens = _hhmm(book.data["from"], book.key("from"), book) if "from" in book.data else None
        closes = _hhmm(book.data["until"], book.key("until"), book, closing=True) if "until" in book.data else None
        if opens is not None and closes is not None and closes <= opens:
            book.fail(book.key("until"), f"a time after `from` ({opens // 60:02d}:{opens % 60:02d})")
        appointments = Appointments(
            slot_minutes=book.integer("slot_minutes", low=1, high=_DAY_MINUTES),
            capacity=book.integer("capacity", low=1, high=10_000),
            opens=opens,
            closes=closes,
        )
    return Site(
        id=site_id,
        name=table.text("name", default=site_id),
        kind=kind,
        lat=table.number("lat", low=-90.0, high=90.0),
        lon=table.number("lon", low=-180.0, high=180.0),
        tz=tz,
        hours=hours,
        prep_minutes=table.integer("prep_minutes", default=30, low=0, high=7 * _DAY_MINUTES),
        pick_zone=table.text("pick_zone", default="E-COM"),
        appointments=appointments,
    )


def _lane(table: _Table, kinds: Mapping[str, SourceKind]) -> Lane:
    origin = _known(table, "origin", kinds, (SourceKind.STORE, SourceKind.DC))
    destination = _known(table, "destination", kinds, (SourceKind.STORE,))
    if origin == destination:
        table.fail(table.key("destination"), f"a store other than the origin {origin!r}")
    days = _days(table.data["days"], table.key("days"), table) if "days" in table.data else None
    raw = table.get("departures", _REQUIRED)
    if not isinstance(raw, list) or not raw:
        table.fail(table.key("departures"), 'a non-empty list of "HH:MM" (or { at = "HH:MM", days = [...] })', raw)
    departures: set[tuple[int, int]] = set()
    for index, item in enumerate(raw):
        where = f"{table.key('departures')}[{index}]"
        if isinstance(item, Mapping):
            entry = _Table(item, where, table.origin, _DEPARTURE)
            minute = _hhmm(entry.get("at", _REQUIRED), entry.key("at"), entry)
            on = _days(entry.get("days", _REQUIRED), entry.key("days"), entry)
        else:
            minute = _hhmm(item, where, table)
            if days is None:
                table.fail(table.key("days"), f'the weekdays of the departure at {item}, e.g. ["mon-fri"]')
            on = days
        departures.update((weekday, minute) for weekday in on)
    return Lane(
        id=table.text("id"),
        origin=origin,
        destination=destination,
        departures=tuple(sorted(departures)),
        transit_minutes=table.integer("transit_minutes", low=0, high=30 * _DAY_MINUTES),
        cutoff_minutes=table.integer("cutoff_minutes", default=0, low=0, high=7 * _DAY_MINUTES),
    )


def _route(table: _Table, kinds: Mapping[str, SourceKind]) -> SupplierRoute:
    supplier = _known(table, "supplier", kinds, (SourceKind.SUPPLIER,))
    store = _known(table, "store", kinds, (SourceKind.STORE,))
    raw = table.get("skus", _REQUIRED)
    skus: frozenset[str] | None = None
    if raw != "*":
        if not isinstance(raw, list) or not all(isinstance(sku, str) and sku.strip() for sku in raw):
            table.fail(table.key("skus"), 'a list of skus, or "*" for every sku', raw)
        skus = frozenset(raw)
    return SupplierRoute(supplier, store, table.integer("lead_days", low=0, high=365), skus)


def _carrier(table: _Table, kinds: Mapping[str, SourceKind]) -> CarrierRoute:
    dc = _known(table, "dc", kinds, (SourceKind.DC,))
    max_km = table.number("max_km", low=0.0, exclusive=True) if "max_km" in table.data else None
    return CarrierRoute(dc, table.integer("lead_days", low=0, high=365), max_km)


def _known(table: _Table, name: str, kinds: Mapping[str, SourceKind], allowed: tuple[SourceKind, ...]) -> str:
    site_id = table.text(name)
    kind = kinds.get(site_id)
    if kind is None:
        table.fail(table.key(name), "the id of a site declared under [[sites]]", site_id)
    elif kind not in allowed:
        names = " or ".join(k.value for k in allowed)
        table.fail(table.key(name), f"a {names} site; {site_id} is a {kind.value}")
    return site_id


def _hhmm(value: object, where: str, table: _Table, *, closing: bool = False) -> int:
    match = _HHMM.match(value) if isinstance(value, str) else None
    minute = int(match.group(1)) * 60 + int(match.group(2)) if match else -1
    top = _DAY_MINUTES if closing else _DAY_MINUTES - 1
    if not match or int(match.group(2)) > 59 or not 0 <= minute <= top:
        table.fail(where, '"HH:MM" (24-hour local time' + (', up to "24:00")' if closing else ")"), value)
    return minute


def _days(value: object, where: str, table: _Table) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    found: list[int] = []
    for index, item in enumerate(items):
        spot = f"{where}[{index}]" if isinstance(value, list) else where
        found.extend(_day_range(item, spot, table))
    if not found:
        table.fail(where, 'at least one weekday, e.g. ["mon-fri"]', value)
    return tuple(sorted(set(found)))


def _day_range(item: object, where: str, table: _Table) -> range:
    names = item.split("-") if isinstance(item, str) else []
    if len(names) in (1, 2) and all(name in WEEKDAYS for name in names):
        lo, hi = WEEKDAYS.index(names[0]), WEEKDAYS.index(names[-1])
        if lo <= hi:
            return range(lo, hi + 1)
    table.fail(where, f"a weekday ({', '.join(WEEKDAYS)}) or a range like 'mon-fri'", item)


def _hours(value: object, where: str, table: _Table) -> tuple[tuple[Interval, ...], ...]:
    if not isinstance(value, Mapping):
        table.fail(where, 'a table like { mon-sat = "10:00-19:00", sun = "closed" }', value)
    week: list[tuple[Interval, ...] | None] = [None] * 7
    for key, spec in value.items():
        spot = f"{where}.{key}"
        for day in _day_range(key, spot, table):
            if week[day] is not None:
                table.fail(spot, f"each weekday once; {WEEKDAYS[day]} is already given")
            week[day] = _day_spec(spec, spot, table)
    # A weekday the table does not name is closed: say "closed" to be explicit.
    return tuple(day or () for day in week)


def _day_spec(spec: object, where: str, table: _Table) -> tuple[Interval, ...]:
    if spec == "closed":
        return ()
    items = spec if isinstance(spec, list) else [spec]
    intervals: list[Interval] = []
    for item in items:
        parts = item.split("-") if isinstance(item, str) else []
        if len(parts) != 2:
            table.fail(where, '"HH:MM-HH:MM", a list of them, or "closed"', item)
        lo, hi = _hhmm(parts[0], where, table), _hhmm(parts[1], where, table, closing=True)
        if hi <= lo:
            table.fail(where, f"closing after opening within the day (split an overnight opening), got {item!r}")
        intervals.append((lo, hi))
    intervals.sort()
    for (_, first_close), (second_open, _) in pairwise(intervals):
        if second_open < first_close:
            table.fail(where, "intervals that do not overlap", spec)
    return tuple(intervals)
