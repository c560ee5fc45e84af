"""Sites that may lie within a radius of a point, from a grid over the network's sites.

Availability near a customer and a promise both start with "which sites are within
`radius_km`": measured site by site that was a great-circle distance for each of a
national network's thousand sites on every request, most of an availability answer's
time. `candidates` returns a superset, every site in the grid cells that the circle's
bounding box touches, and callers measure only those with the distance they always
used (`Network.distance_km`) and apply their own rule to it: the sites found are the
same as before, to the last float.

The box: on a sphere a point within angular distance t of (lat0, lon0) has
|lat - lat0| <= t and, away from the poles, |lon - lon0| <= asin(sin t / cos lat0).
A circle that reaches a pole, or crosses the antimeridian, gets every site.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ledger.network import Network

__all__ = ["candidates", "distances_km"]

_EARTH_RADIUS_KM = 6371.0088
"""ledger.network's radius: the box is computed on the sphere the distances are measured on."""
_CELL_DEG = 0.5
"""Grid cell side: ~55 km of latitude, about one search radius, so a search touches a few cells."""
_SLACK_DEG = 1e-6
"""Added to the box on every side, against rounding at its edge (cells add far more slack anyway)."""


@dataclass(frozen=True, slots=True)
class _Grid:
    cells: dict[tuple[int, int], tuple[tuple[int, str], ...]]
    """Cell -> (position in the network's sites, site id) of the sites in it."""
    everything: tuple[str, ...]


_GRIDS: dict[int, tuple[Network, _Grid]] = {}


def _grid(network: Network) -> _Grid:
    """The grid of a network, built once per network object."""
    cached = _GRIDS.get(id(network))
    if cached is not None and cached[0] is network:
        return cached[1]
    cells: dict[tuple[int, int], list[tuple[int, str]]] = {}
    for i, site in enumerate(network.sites):
        cells.setdefault(_cell(site.lat, site.lon), []).append((i, site.id))
    grid = _Grid({cell: tuple(ids) for cell, ids in cells.items()}, tuple(site.id for site in network.sites))
    if len(_GRIDS) >= 8:  # a process serves one network; tests build many
        _GRIDS.clear()
    # The network is kept with its grid so its id cannot be reused by another while cached.
    _GRIDS[id(network)] = (network, grid)
    return grid


def _cell(lat: float, lon: float) -> tuple[int, int]:
    return math.floor(lat / _CELL_DEG), math.floor(lon / _CELL_DEG)


def candidates(network: Network, lat: float, lon: float, radius_km: float) -> tuple[str, ...]:
    """Every site of the network that may be within `radius_km` of (lat, lon), in network order.

    A superset: measure each with `network.distance_km` to keep the ones inside.
    """
    grid = _grid(network)
    reach = radius_km / _EARTH_RADIUS_KM  # radians
    if not math.isfinite(reach) or reach >= math.pi / 2 - abs(math.radians(lat)):
        return grid.everything  # the circle reaches a pole (or is too wide to bound simply)
    dlat = math.degrees(reach) + _SLACK_DEG
    dlon = math.degrees(math.asin(min(1.0, math.sin(reach) / math.cos(math.radians(lat))))) + _SLACK_DEG
    if lon - dlon < -180 or lon + dlon > 180:
        return grid.everything  # across the antimeridian: not worth a second box
    (south, west), (north, east) = _cell(lat - dlat, lon - dlon), _cell(lat + dlat, lon + dlon)
    found: list[tuple[int, str]] = []
    for row in range(south, north + 1):
        for column in range(west, east + 1):
            found.extend(grid.cells.get((row, column), ()))
    found.sort()
    return tuple(site for _, site in found)


_FIXED: dict[int, tuple[Network, dict[str, tuple[float, float, float]]]] = {}


def distances_km(network: Network, site_ids: Iterable[str], lat: float, lon: float) -> list[float]:
    """`[network.distance_km(site, lat, lon) for site in site_ids]`, to the last bit, for less.

    The same formula (`ledger.network.haversine_km`) in the same order of operations, with
    what depends on the site alone (its latitude in radians and that latitude's cosine) kept
    per network and the point's computed once: a promise measures ~90 sites, and two calls
    and four trigonometric functions a site were a tenth of it.
    """
    cached = _FIXED.get(id(network))
    if cached is None or cached[0] is not network:
        fixed = {s.id: (s.lon, math.radians(s.lat), math.cos(math.radians(s.lat))) for s in network.sites}
        if len(_FIXED) >= 8:  # a process serves one network; tests build many
            _FIXED.clear()
        cached = _FIXED[id(network)] = (network, fixed)
    fixed = cached[1]
    p2 = math.radians(lat)
    cos_p2 = math.cos(p2)
    sin, asin, sqrt, radians = math.sin, math.asin, math.sqrt, math.radians
    found = []
    for site_id in site_ids:
        lon1, p1, cos_p1 = fixed[site_id]
        a = sin((p2 - p1) / 2) ** 2 + cos_p1 * cos_p2 * sin(radians(lon - lon1) / 2) ** 2
        found.append(2 * _EARTH_RADIUS_KM * asin(min(1.0, sqrt(a))))
    return found
