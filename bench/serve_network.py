"""A generated network file for `make bench-serve`: stores around France, DCs, suppliers, sellers.

Stores cluster around French cities (weighted by size, scattered a few kilometres
around the centre) with a handful of opening-hour patterns, most of them taking
appointments; DCs sit at logistics hubs and ship home; suppliers (some abroad) dropship
to a few dozen stores each; marketplace sellers need no route. Shuttle lanes run from
each store to its two nearest stores within 40 km and from the nearest DC to every
store. Seeded: the same arguments give the same file.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from adapters.network_file import load_network
from ledger.network import Network, haversine_km

__all__ = ["CITIES", "NetworkSpec", "customer_point", "sku_name", "write_network"]

# (name, lat, lon, weight): weight ~ how many stores the city gets relative to others.
CITIES: tuple[tuple[str, float, float, int], ...] = (
    ("Paris", 48.8566, 2.3522, 14),
    ("Saint-Denis", 48.9362, 2.3574, 2),
    ("Nanterre", 48.8924, 2.2071, 2),
    ("Versailles", 48.8049, 2.1204, 2),
    ("Créteil", 48.7904, 2.4556, 2),
    ("Cergy", 49.0364, 2.0761, 1),
    ("Évry", 48.6294, 2.4410, 1),
    ("Marne-la-Vallée", 48.8461, 2.6541, 1),
    ("Marseille", 43.2965, 5.3698, 8),
    ("Lyon", 45.7640, 4.8357, 8),
    ("Toulouse", 43.6047, 1.4442, 6),
    ("Nice", 43.7102, 7.2620, 4),
    ("Nantes", 47.2184, -1.5536, 5),
    ("Montpellier", 43.6108, 3.8767, 4),
    ("Strasbourg", 48.5734, 7.7521, 4),
    ("Bordeaux", 44.8378, -0.5792, 6),
    ("Lille", 50.6292, 3.0573, 6),
    ("Rennes", 48.1173, -1.6778, 4),
    ("Reims", 49.2583, 4.0317, 2),
    ("Toulon", 43.1242, 5.9280, 3),
    ("Saint-Étienne", 45.4397, 4.3872, 2),
    ("Le Havre", 49.4944, 0.1079, 2),
    ("Grenoble", 45.1885, 5.7245, 3),
    ("Dijon", 47.3220, 5.0415, 2),
    ("Angers", 47.4784, -0.5632, 2),
    ("Nîmes", 43.8367, 4.3601, 2),
    ("Clermont-Ferrand", 45.7772, 3.0870, 2),
    ("Le Mans", 48.0061, 0.1996, 2),
    ("Aix-en-Provence", 43.5297, 5.4474, 2),
    ("Brest", 48.3904, -4.4861, 2),
    ("Tours", 47.3941, 0.6848, 2),
    ("Amiens", 49.8941, 2.2958, 2),
    ("Limoges", 45.8336, 1.2611, 2),
    ("Annecy", 45.8992, 6.1294, 2),
    ("Perpignan", 42.6887, 2.8948, 2),
    ("Metz", 49.1193, 6.1757, 2),
    ("Besançon", 47.2378, 6.0241, 2),
    ("Orléans", 47.9030, 1.9093, 2),
    ("Rouen", 49.4432, 1.0999, 3),
    ("Mulhouse", 47.7508, 7.3359, 2),
    ("Caen", 49.1829, -0.3707, 2),
    ("Nancy", 48.6921, 6.1844, 2),
    ("Avignon", 43.9493, 4.8055, 1),
    ("Poitiers", 46.5802, 0.3404, 1),
    ("La Rochelle", 46.1603, -1.1511, 1),
    ("Pau", 43.2951, -0.3708, 1),
    ("Bayonne", 43.4929, -1.4748, 1),
    ("Calais", 50.9513, 1.8587, 1),
    ("Dunkerque", 51.0344, 2.3768, 1),
    ("Valence", 44.9334, 4.8924, 1),
    ("Chambéry", 45.5646, 5.9178, 1),
    ("Troyes", 48.2973, 4.0744, 1),
    ("Lorient", 47.7483, -3.3700, 1),
    ("Quimper", 47.9960, -4.1024, 1),
    ("Saint-Malo", 48.6493, -2.0257, 1),
    ("Vannes", 47.6582, -2.7608, 1),
    ("Niort", 46.3237, -0.4588, 1),
    ("Colmar", 48.0794, 7.3585, 1),
    ("Béziers", 43.3442, 3.2158, 1),
    ("Cherbourg", 49.6337, -1.6222, 1),
    ("Bourges", 47.0810, 2.3988, 1),
    ("Montauban", 44.0176, 1.3550, 1),
    ("Agen", 44.2033, 0.6163, 1),
    ("Angoulême", 45.6484, 0.1562, 1),
    ("Carcassonne", 43.2130, 2.3491, 1),
    ("Auxerre", 47.7982, 3.5673, 1),
    ("Nevers", 46.9908, 3.1590, 1),
    ("Gap", 44.5594, 6.0786, 1),
    ("Périgueux", 45.1846, 0.7214, 1),
    ("Laval", 48.0707, -0.7734, 1),
    ("Saint-Brieuc", 48.5141, -2.7603, 1),
    ("Cannes", 43.5528, 7.0174, 1),
    ("Arras", 50.2910, 2.7775, 1),
    ("Beauvais", 49.4295, 2.0807, 1),
    ("Chartres", 48.4439, 1.4890, 1),
    ("Blois", 47.5861, 1.3359, 1),
)

# Logistics hubs: (name, lat, lon).
_HUBS = (
    ("Saint-Quentin-Fallavier", 45.6430, 5.1120),
    ("Moissy-Cramayel", 48.6260, 2.5930),
    ("Gennevilliers", 48.9330, 2.2950),
    ("Lesquin", 50.5890, 3.1110),
    ("Miramas", 43.5830, 5.0010),
    ("Cestas", 44.7430, -0.6800),
    ("Toulouse Eurocentre", 43.7580, 1.3770),
    ("Carquefou", 47.2970, -1.4920),
    ("Strasbourg Port", 48.5650, 7.7960),
    ("Saran", 47.9500, 1.8760),
    ("Vern-sur-Seiche", 48.0460, -1.6010),
    ("Longvic", 47.2890, 5.0640),
    ("Gerzat", 45.8250, 3.1450),
    ("Fréjorgues", 43.5830, 3.9620),
    ("Grand-Couronne", 49.3570, 1.0060),
    ("Ennery", 49.2260, 6.2120),
    ("Chalon-sur-Saône", 46.7800, 4.8530),
    ("Limoges Sud", 45.7900, 1.2700),
    ("Tours Nord", 47.4300, 0.7000),
    ("Saint-Isidore", 43.7000, 7.1900),
)

# Suppliers and sellers: (city, lat, lon, tz); some abroad.
_VENDOR_PLACES = (
    ("Paris", 48.90, 2.38, "Europe/Paris"),
    ("Lyon", 45.72, 4.92, "Europe/Paris"),
    ("Lille", 50.66, 3.10, "Europe/Paris"),
    ("Nantes", 47.20, -1.60, "Europe/Paris"),
    ("Toulouse", 43.64, 1.38, "Europe/Paris"),
    ("Milano", 45.4642, 9.1900, "Europe/Rome"),
    ("Barcelona", 41.3874, 2.1686, "Europe/Madrid"),
    ("Rotterdam", 51.9244, 4.4777, "Europe/Amsterdam"),
    ("Hamburg", 53.5511, 9.9937, "Europe/Berlin"),
    ("Antwerpen", 51.2194, 4.4025, "Europe/Brussels"),
)

# Opening hours and how often each appears.
_HOURS: tuple[tuple[dict[str, str | list[str]], int], ...] = (
    ({"mon-sat": "09:30-19:30", "sun": "closed"}, 5),
    ({"mon-sat": "10:00-20:00", "sun": "closed"}, 3),  # malls
    ({"mon-fri": ["09:30-12:30", "14:00-19:00"], "sat": "09:30-19:00", "sun": "closed"}, 2),
    ({"mon-sat": "09:00-19:30", "sun": "09:00-12:30"}, 2),
    ({"mon-sat": "08:30-21:00", "sun": "09:00-12:30"}, 1),  # hypermarkets
)

SHUTTLE_NEIGHBOURS = 2
SHUTTLE_MAX_KM = 40.0
DROPSHIP_STORES = 40


def sku_name(index: int) -> str:
    """The sku of product `index` (zero-padded, so names sort like indexes)."""
    return f"SKU-{index:06d}"


def customer_point(rng: random.Random) -> tuple[float, float]:
    """A random customer in France: near a city, picked by weight, up to ~15 km out."""
    _, lat, lon, _ = rng.choices(CITIES, weights=[c[3] for c in CITIES])[0]
    return _scatter(rng, lat, lon, 6.0)


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """What the generated file holds."""

    path: Path
    sites: tuple[tuple[str, str], ...]
    """(site id, kind), sorted by id."""
    stores: int
    dcs: int
    suppliers: int
    sellers: int
    lanes: int
    dropship: int
    carriers: int
    appointment_stores: int

    def load(self) -> Network:
        """The file loaded and checked, as the server loads it."""
        return load_network(self.path)


def _scatter(rng: random.Random, lat: float, lon: float, sigma_km: float) -> tuple[float, float]:
    dlat = rng.gauss(0.0, sigma_km) / 111.0
    dlon = rng.gauss(0.0, sigma_km) / (111.0 * math.cos(math.radians(lat)))
    return round(lat + dlat, 4), round(lon + dlon, 4)


def _kind_counts(sites: int) -> tuple[int, int, int, int]:
    """(stores, dcs, suppliers, sellers): 3 % DCs, 3 % suppliers, 4 % sellers, the rest stores."""
    dcs, suppliers, sellers = max(1, sites * 3 // 100), max(1, sites * 3 // 100), max(1, sites * 4 // 100)
    stores = sites - dcs - suppliers - sellers
    if stores < 2:
        msg = f"--sites {sites} is too small for a network: give at least 8"
        raise SystemExit(msg)
    return stores, dcs, suppliers, sellers


def _toml(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    msg = f"no TOML for {value!r}"
    raise TypeError(msg)


def _table(name: str, fields: dict[str, object]) -> str:
    return f"[[{name}]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in fields.items()) + "\n"


def _nearest(
    origin: tuple[float, float], places: Sequence[tuple[str, float, float]], count: int
) -> list[tuple[float, str]]:
    ranked = sorted((haversine_km(origin[0], origin[1], lat, lon), pid) for pid, lat, lon in places)
    return ranked[:count]


def write_network(path: Path, *, sites: int, skus: int, seed: int) -> NetworkSpec:
    """Write a network of `sites` sites to `path` and check it loads."""
    rng = random.Random(seed)
    n_stores, n_dcs, n_suppliers, n_sellers = _kind_counts(sites)
    out = [
        f"# Generated by bench/serve_network.py: {sites} sites (seed {seed}); see docs/network.md.\n\n",
        "[promise]\nradius_km = 50\nhorizon_days = 14\nseller_lead_days = 3\n\n",
    ]
    stores: list[tuple[str, float, float]] = []
    appointment_stores = 0
    per_city: dict[str, int] = {}
    for index in range(n_stores):
        city, lat, lon, weight = rng.choices(CITIES, weights=[c[3] for c in CITIES])[0]
        per_city[city] = per_city.get(city, 0) + 1
        site_id = f"ST-{index + 1:04d}"
        point = _scatter(rng, lat, lon, 2.0 + 2.0 * math.sqrt(weight))
        stores.append((site_id, *point))
        hours = rng.choices([h for h, _ in _HOURS], weights=[w for _, w in _HOURS])[0]
        fields: dict[str, object] = {
            "id": site_id,
            "name": f"{city} {per_city[city]}",
            "kind": "STORE",
            "lat": point[0],
            "lon": point[1],
            "tz": "Europe/Paris",
            "hours": hours,
            "prep_minutes": rng.choice((15, 20, 30, 30, 45, 60)),
            "pick_zone": "E-COM",
        }
        if rng.random() < 0.8:
            appointment_stores += 1
            fields["appointments"] = {
                "slot_minutes": rng.choice((30, 30, 30, 60)),
                "capacity": rng.randint(2, 6),
                "from": "10:00",
                "until": "19:00",
            }
        out.append(_table("sites", fields))
    dcs: list[tuple[str, float, float]] = []
    for index in range(n_dcs):
        name, lat, lon = _HUBS[index % len(_HUBS)]
        site_id = f"DC-{index + 1:03d}"
        point = _scatter(rng, lat, lon, 3.0) if index >= len(_HUBS) else (lat, lon)
        dcs.append((site_id, *point))
        fields = {"id": site_id, "name": f"DC {name}", "kind": "DC", "lat": point[0], "lon": point[1]}
        out.append(_table("sites", fields | {"tz": "Europe/Paris", "pick_zone": "PICK-B2C"}))
    vendors: list[tuple[str, str, float, float, str]] = []
    for kind, prefix, count in (("SUPPLIER", "SUP", n_suppliers), ("SELLER", "SELLER", n_sellers)):
        for index in range(count):
            city, lat, lon, tz = rng.choice(_VENDOR_PLACES)
            site_id = f"{prefix}-{index + 1:03d}"
            point = _scatter(rng, lat, lon, 10.0)
            vendors.append((site_id, kind, *point, tz))
            fields = {"id": site_id, "name": f"{kind.title()} {index + 1} ({city})", "kind": kind}
            out.append(_table("sites", fields | {"lat": point[0], "lon": point[1], "tz": tz}))

    lanes = 0
    for site_id, lat, lon in stores:
        others = [s for s in stores if s[0] != site_id]
        for km, dest in _nearest((lat, lon), others, SHUTTLE_NEIGHBOURS):
            if km > SHUTTLE_MAX_KM:
                break
            lanes += 1
            departures: list[object] = ["07:00"] if rng.random() < 0.6 else ["07:00", "14:00"]
            out.append(
                _table(
                    "lanes",
                    {
                        "id": f"SH-{site_id}-{dest}",
                        "origin": site_id,
                        "destination": dest,
                        "days": ["mon-sat"],
                        "departures": departures,
                        "transit_minutes": 15 + round(km / 40 * 60),
                        "cutoff_minutes": 60,
                    },
                )
            )
    for site_id, lat, lon in stores:
        for km, dc in _nearest((lat, lon), dcs, 1):
            lanes += 1
            departures = ["05:30"] if km > 120 else ["05:30", {"at": "12:00", "days": ["mon-fri"]}]
            out.append(
                _table(
                    "lanes",
                    {
                        "id": f"SH-{dc}-{site_id}",
                        "origin": dc,
                        "destination": site_id,
                        "days": ["mon-sat"],
                        "departures": departures,
                        "transit_minutes": 30 + round(km / 70 * 60),
                        "cutoff_minutes": 120,
                    },
                )
            )
    dropship = 0
    for site_id, kind, _, _, tz in vendors:
        if kind != "SUPPLIER":
            continue
        abroad = tz != "Europe/Paris"
        start = rng.randrange(max(1, skus - 25))
        accepted: object = "*" if rng.random() < 0.6 else [sku_name(start + i) for i in range(min(25, skus))]
        for store_id, _, _ in rng.sample(stores, min(DROPSHIP_STORES, len(stores))):
            dropship += 1
            lead = rng.randint(3, 6) if abroad else rng.randint(1, 4)
            fields = {"supplier": site_id, "store": store_id, "lead_days": lead, "skus": accepted}
            out.append(_table("dropship", fields))
    for site_id, _, _ in dcs:
        out.append(
            _table("carriers", {"dc": site_id, "lead_days": rng.randint(1, 2), "max_km": rng.choice((400, 600, 900))})
        )

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(out), encoding="utf-8")
    kinds = [(s, "STORE") for s, _, _ in stores] + [(d, "DC") for d, _, _ in dcs] + [(v[0], v[1]) for v in vendors]
    spec = NetworkSpec(
        path=path,
        sites=tuple(sorted(kinds)),
        stores=n_stores,
        dcs=n_dcs,
        suppliers=n_suppliers,
        sellers=n_sellers,
        lanes=lanes,
        dropship=dropship,
        carriers=n_dcs,
        appointment_stores=appointment_stores,
    )
    spec.load()  # fails here, with the key path, if the generator wrote something the server would refuse
    return spec
