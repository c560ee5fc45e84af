"""The network file's schema: every key of `docs/network.md` checked, and the network built.

Pure (no file is opened here: `adapters.network_file` reads the file). Every error is a
`ConfigError` naming the key path and where the document came from, e.g.
`lanes[0].transit_minutes (examples/network.toml): expected a whole number within 1..10080, got 0`.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from itertools import pairwise
from typing import NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ledger.errors import ConfigError
from ledger.fulfilment import SourceKind
from ledger.network import (
    DAY_MS,
    MINUTE_MS,
    WEEKDAYS,
    Appointments,
    CarrierRoute,
    Interval,
    Lane,
    Network,
    Site,
    SupplierRoute,
)

__all__ = ["network_from_mapping", "parse_network"]

_DAY_MINUTES = DAY_MS // MINUTE_MS
_HHMM = re.compile(r"^(\d{2}):(\d{2})$")


def parse_network(document: str | Mapping[str, object], *, origin: str = "network") -> Network:
    """Build a network from TOML text or parsed TOML (any plain mapping), checking every key."""
    if isinstance(document, str):
        try:
            document = tomllib.loads(document)
        except tomllib.TOMLDecodeError as exc:
            msg = f"{origin} is not valid TOML: {exc}"
            raise ConfigError(msg) from exc
    return network_from_mapping(document, origin=origin)


_TOP = {"promise", "sites", "lanes", "dropship", "carriers"}
_PROMISE = {"radius_km", "horizon_days", "seller_lead_days"}
_SITE = {"id", "name", "kind", "lat", "lon", "tz", "hours", "prep_minutes", "pick_zone", "appointments"}
_APPOINTMENTS = {"slot_minutes", "capacity", "from", "until"}
_LANE = {"id", "origin", "destination", "days", "departures", "transit_minutes", "cutoff_minutes"}
_DEPARTURE = {"at", "days"}
_DROPSHIP = {"supplier", "store", "lead_days", "skus"}
_CARRIER = {"dc", "lead_days", "max_km"}
_REQUIRED = object()


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
