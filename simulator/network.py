"""The simulator's network as a network file (docs/network.md), so a promise can be made over it.

`simulated_network(config)` is the `ledger.network.Network` the simulator moves stock in:
the config's network file when it has one, else the generated network of its site counts.
`network_toml(network)` writes any network as a TOML document that `load_network` reads
back equal; `omni-ledger sim-network` is the two together.

The generated network depends on the site counts only, not on the seed: `produce --sim`
draws a new seed each run and still moves stock in the same sites. Stores lie around Paris
(a sunflower spiral within 30 km), DCs on a ring 40 km out, suppliers and sellers in other
cities. It describes what the simulator does without a file: a lane from every DC to every
store and between every two stores (a transfer's origin is any DC, or any other store), so
lanes grow as stores squared (420 for the default 20 stores); every supplier ships every
sku to every store. Transit times and lead days are the means of the simulator's draws
(a shuttle's eta 2-10 h after the load, a dropship's 1-3 days).

    network = simulated_network(SimConfig(stores=20))
    Path("network.toml").write_text(network_toml(network))
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import groupby

from ledger.fulfilment import SourceKind
from ledger.network import (
    WEEKDAYS,
    Appointments,
    CarrierRoute,
    Lane,
    Network,
    Site,
    SupplierRoute,
)
from simulator.config import SimConfig, SiteKind

__all__ = ["network_toml", "simulated_network"]

_TZ = "Europe/Paris"
_CENTRE = (48.8566, 2.3522)  # Paris, Hôtel de Ville
_STORE_RADIUS_KM = 30.0
_DC_RADIUS_KM = 40.0
_KM_PER_DEGREE = 111.2
_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))

# Where suppliers and sellers are, in turn: (city, lat, lon, tz).
_VENDOR_PLACES = (
    ("Lille", 50.6292, 3.0573, "Europe/Paris"),
    ("Lyon", 45.7640, 4.8357, "Europe/Paris"),
    ("Rotterdam", 51.9244, 4.4777, "Europe/Amsterdam"),
    ("Nantes", 47.2184, -1.5536, "Europe/Paris"),
    ("Milano", 45.4642, 9.1900, "Europe/Rome"),
    ("Marseille", 43.2965, 5.3698, "Europe/Paris"),
    ("Barcelona", 41.3874, 2.1686, "Europe/Madrid"),
    ("Strasbourg", 48.5734, 7.7521, "Europe/Paris"),
)


def _day(spec: str) -> tuple[tuple[int, int], ...]:
    """One day's opening intervals in local minutes: `"09:30-12:30 14:00-19:00"`; `""` is closed."""
    minutes = [[int(hh) * 60 + int(mm) for hh, mm in (t.split(":") for t in part.split("-"))] for part in spec.split()]
    return tuple((lo, hi) for lo, hi in minutes)


# Opening hours per weekday (Monday first), store after store in turn.
_HOURS = (
    (_day("09:30-19:30"),) * 6 + (_day(""),),  # high street
    (_day("10:00-20:00"),) * 6 + (_day(""),),  # mall
    (_day("09:30-12:30 14:00-19:00"),) * 5 + (_day("09:30-19:00"), _day("")),  # closed for lunch
    (_day("09:00-19:30"),) * 6 + (_day("09:00-12:30"),),  # Sunday morning
)
_PREP_MINUTES = (30, 20, 45, 30)
_APPOINTMENTS = Appointments(slot_minutes=30, capacity=2, opens=10 * 60, closes=19 * 60)
_STORE_DEPARTURES = tuple((weekday, 7 * 60) for weekday in range(6))  # (weekday, minute): 07:00 mon-sat
_DC_DEPARTURES = tuple((weekday, 5 * 60 + 30) for weekday in range(6))  # 05:30 mon-sat
_TRANSIT_MINUTES = 6 * 60  # the mean of the simulator's 2-10 h between load and eta
_DROPSHIP_LEAD_DAYS = 2  # the mean of its 1-3 days between shipping and eta
_CARRIER_LEAD_DAYS = 2
_CARRIER_MAX_KM = 900.0


def simulated_network(config: SimConfig) -> Network:
    """The network the simulator moves stock in: `config.network`, or the generated one."""
    if config.network is not None:
        return config.network
    sites = config.sites()
    dcs = [s.site_id for s in sites if s.kind is SiteKind.DC]
    stores = [s.site_id for s in sites if s.kind is SiteKind.STORE]
    suppliers = [s.site_id for s in sites if s.kind is SiteKind.SUPPLIER]
    sellers = [s.site_id for s in sites if s.kind is SiteKind.SELLER]
    lat, lon = _CENTRE
    placed = []
    for index, dc in enumerate(dcs):
        point = _offset(lat, lon, _DC_RADIUS_KM, 2 * math.pi * index / len(dcs) + 0.3)
        placed.append(Site(dc, f"Simulated DC {index + 1:02d}", SourceKind.DC, *point, _TZ, pick_zone="PICK-B2C"))
    for index, store in enumerate(stores):
        # A sunflower spiral: evenly spread over the disc whatever the count.
        point = _offset(lat, lon, _STORE_RADIUS_KM * math.sqrt((index + 0.5) / len(stores)), index * _GOLDEN_ANGLE)
        placed.append(
            Site(
                store,
                f"Simulated store {index + 1:03d}",
                SourceKind.STORE,
                *point,
                _TZ,
                hours=_HOURS[index % len(_HOURS)],
                prep_minutes=_PREP_MINUTES[index % len(_PREP_MINUTES)],
                appointments=_APPOINTMENTS if index % 4 != 3 else None,  # three stores in four take them
            )
        )
    for kind, ids in ((SourceKind.SUPPLIER, suppliers), (SourceKind.SELLER, sellers)):
        for index, site_id in enumerate(ids):
            # Sellers start half-way down the list, so a supplier and a seller rarely share a city.
            turn = index + (len(_VENDOR_PLACES) // 2 if kind is SourceKind.SELLER else 0)
            city, city_lat, city_lon, tz = _VENDOR_PLACES[turn % len(_VENDOR_PLACES)]
            # The same city a second time round: a few kilometres further out.
            point = _offset(city_lat, city_lon, 3.0 * (turn // len(_VENDOR_PLACES)), turn)
            name = f"Simulated {kind.value.lower()} {index + 1:02d} ({city})"
            placed.append(Site(site_id, name, kind, *point, tz))
    lanes = [
        Lane(f"SH-{dc}-{store}", dc, store, _DC_DEPARTURES, _TRANSIT_MINUTES, cutoff_minutes=120)
        for dc in dcs
        for store in stores
    ]
    lanes += [
        Lane(f"SH-{origin}-{store}", origin, store, _STORE_DEPARTURES, _TRANSIT_MINUTES, cutoff_minutes=60)
        for origin in stores
        for store in stores
        if origin != store
    ]
    return Network(
        sites=tuple(placed),
        lanes=tuple(lanes),
        dropship=tuple(SupplierRoute(s, store, _DROPSHIP_LEAD_DAYS) for s in suppliers for store in stores),
        carriers=tuple(CarrierRoute(dc, _CARRIER_LEAD_DAYS, _CARRIER_MAX_KM) for dc in dcs),
    )


def network_toml(network: Network, *, title: str = "") -> str:
    """The network as a TOML document (docs/network.md) that `load_network` reads back equal.

    `title` becomes the first comment lines.
    """
    kinds = [site.kind for site in network.sites]
    summary = ", ".join(f"{kinds.count(kind)} {kind.value}" for kind in SourceKind)
    out = [f"# {line}\n" for line in title.splitlines()]
    out.append(
        f"# {len(kinds)} sites ({summary}); lanes: {len(network.lanes)}, dropship routes: {len(network.dropship)}, "
        f"carrier routes: {len(network.carriers)}.\n# The format is documented in docs/network.md.\n\n"
    )
    out.append(
        _table(
            "[promise]",
            {
                "radius_km": network.radius_km,
                "horizon_days": network.horizon_days,
                "seller_lead_days": network.seller_lead_days,
            },
        )
    )
    for site in network.sites:
        fields: dict[str, object] = {
            "id": site.id,
            "name": site.name,
            "kind": site.kind.value,
            "lat": site.lat,
            "lon": site.lon,
            "tz": site.tz,
        }
        if site.hours is not None:
            fields["hours"] = _hours(site.hours)
        fields |= {"prep_minutes": site.prep_minutes, "pick_zone": site.pick_zone}
        if site.appointments is not None:
            book = site.appointments
            appointments: dict[str, object] = {"slot_minutes": book.slot_minutes, "capacity": book.capacity}
            if book.opens is not None:
                appointments["from"] = _hhmm(book.opens)
            if book.closes is not None:
                appointments["until"] = _hhmm(book.closes)
            fields["appointments"] = appointments
        out.append(_table("[[sites]]", fields))
    for lane in network.lanes:
        out.append(
            _table(
                "[[lanes]]",
                {"id": lane.id, "origin": lane.origin, "destination": lane.destination}
                | _departures(lane.departures)
                | {"transit_minutes": lane.transit_minutes, "cutoff_minutes": lane.cutoff_minutes},
            )
        )
    for route in network.dropship:
        skus: object = "*" if route.skus is None else sorted(route.skus)
        fields = {"supplier": route.supplier, "store": route.store, "lead_days": route.lead_days, "skus": skus}
        out.append(_table("[[dropship]]", fields))
    for carrier in network.carriers:
        fields = {"dc": carrier.dc, "lead_days": carrier.lead_days}
        if carrier.max_km is not None:
            fields["max_km"] = carrier.max_km
        out.append(_table("[[carriers]]", fields))
    return "".join(out).rstrip("\n") + "\n"


def _offset(lat: float, lon: float, km: float, angle: float) -> tuple[float, float]:
    """The point `km` from (lat, lon) in direction `angle` (radians from north), to 4 decimals (~10 m)."""
    north, east = km * math.cos(angle), km * math.sin(angle)
    return (
        round(lat + north / _KM_PER_DEGREE, 4),
        round(lon + east / (_KM_PER_DEGREE * math.cos(math.radians(lat))), 4),
    )


# -- writing TOML ------------------------------------------------------------------------------


def _table(header: str, fields: dict[str, object]) -> str:
    """A table under its header, one key a line; a nested table is written inline."""
    return header + "\n" + "".join(f"{key} = {_value(value)}\n" for key, value in fields.items()) + "\n"


def _value(value: object) -> str:
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # repr is the shortest text that reads back the same float; TOML spells infinity `inf`.
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_value(item)}" for key, item in value.items()) + " }"
    msg = f"network_toml: no TOML for {value!r}"
    raise TypeError(msg)


def _string(text: str) -> str:
    """A TOML basic string: quote, backslash and control characters (but tab) escaped."""
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif (ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04X}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _day_ranges(days: Sequence[int]) -> list[str]:
    """Weekday indexes as the file spells them: runs of days become ranges, `["mon-fri", "sun"]`."""
    ranges = []
    for run in _runs(sorted(set(days))):
        first, last = WEEKDAYS[run[0]], WEEKDAYS[run[-1]]
        ranges.append(first if first == last else f"{first}-{last}")
    return ranges


def _runs(days: Sequence[int]) -> Iterator[list[int]]:
    """Consecutive runs of sorted weekday indexes: [0, 1, 2, 6] gives [0, 1, 2] and [6]."""
    for _, run in groupby(enumerate(days), key=lambda pair: pair[1] - pair[0]):
        yield [day for _, day in run]


def _hours(week: tuple[tuple[tuple[int, int], ...], ...]) -> dict[str, object]:
    """Opening hours per weekday as a table: days in a row with the same hours share a key."""
    table: dict[str, object] = {}
    for day_hours, days in groupby(range(7), key=lambda day: week[day]):
        run = list(days)
        key = WEEKDAYS[run[0]] if len(run) == 1 else f"{WEEKDAYS[run[0]]}-{WEEKDAYS[run[-1]]}"
        intervals = [f"{_hhmm(lo)}-{_hhmm(hi)}" for lo, hi in day_hours]
        table[key] = "closed" if not intervals else intervals[0] if len(intervals) == 1 else intervals
    return table


def _departures(departures: tuple[tuple[int, int], ...]) -> dict[str, object]:
    """`days` and plain departures when every departure runs on the same days, else `{ at, days }` entries."""
    days_by_minute: dict[int, list[int]] = {}
    for weekday, minute in departures:
        days_by_minute.setdefault(minute, []).append(weekday)
    schedules = {tuple(days) for days in days_by_minute.values()}
    if len(schedules) == 1:
        (days,) = schedules
        return {"days": _day_ranges(days), "departures": [_hhmm(minute) for minute in sorted(days_by_minute)]}
    return {
        "departures": [
            {"at": _hhmm(minute), "days": _day_ranges(days)} for minute, days in sorted(days_by_minute.items())
        ]
    }
