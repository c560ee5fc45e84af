"""Availability of a sku near a point, answered from the read model's arrays.

The reference (`omni_ledger.service.reads.reference_near`) asks the network's grid for
the sites that may be in the radius, turns the sku's rows at those sites into a dict
each (`ReadView.sku_rows`), then into the answer's dict each, measuring every one with
`Network.distance_km`: two dicts and a dozen look-ups per site, most of an availability
read's CPU (bench/serve_profile.py: 36 % the rows, 23 % the distances).

Here, per request:

1. The sku's block (`SkuColumns`): its sites' numbers in the view's site table and
   their records, contiguous.
2. One great-circle bound over all of the sku's sites at once (numpy over the site
   numbers, each site's latitude, longitude and cosine computed once per site table):
   only the sites within the radius plus `_MARGIN_KM`, and the sites the network does
   not know (listed whatever the point, as the reference does), go on. A prefilter
   only: numpy's sine may differ from libm's in the last bit, so each site it keeps is
   measured again with `haversine_km` exactly as `Network.distance_km` does, rounded to
   metres and held to the radius as before. The answer is the reference's to the last
   float (a property holds the two equal: tests/unit/service/test_near.py).
3. The kept sites' records in one `tolist()`, and one dict per site shown.

The per-site constants (name, kind, coordinates) are kept per site table, which a
refresh replaces only when a site new to the model appears.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.snapshot_store.read_model import ReadView
from ledger.events import Millis
from ledger.network import Network, haversine_km

__all__ = ["NearbyAvailability"]

_EARTH_RADIUS_KM = 6371.0088
"""ledger.network's: the bound is drawn on the sphere the distances are measured on."""
_MARGIN_KM = 1.0
"""How much wider than the radius the numpy bound keeps sites: far above any rounding of it (~1e-9 km)."""

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class _Sites:
    """A view's site table measured once against the network, by site number."""

    names: tuple[str, ...]
    """The table's site ids (the cache's key: a new table is a new tuple)."""
    lat: Floats
    """Latitude in radians (0 for a site the network does not know)."""
    lon: Floats
    cos_lat: Floats
    unknown: npt.NDArray[np.bool_]
    static: tuple[tuple[str, str, float, float] | None, ...]
    """(name, kind, latitude, longitude) in degrees as the network holds them; None when unknown."""


def _measured(network: Network, names: tuple[str, ...]) -> _Sites:
    static: list[tuple[str, str, float, float] | None] = []
    for name in names:
        if network.has_site(name):
            site = network.site(name)
            static.append((site.name, site.kind.value, site.lat, site.lon))
        else:
            static.append(None)
    lat = np.radians(np.array([0.0 if s is None else s[2] for s in static], dtype=np.float64))
    lon = np.radians(np.array([0.0 if s is None else s[3] for s in static], dtype=np.float64))
    unknown = np.array([s is None for s in static], dtype=np.bool_)
    return _Sites(names, lat, lon, np.cos(lat), unknown, tuple(static))


class NearbyAvailability:
    """Availability of a sku within a radius of a point, over one network and any view of the read model."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self._sites: _Sites | None = None
        self._lock = threading.Lock()

    def _sites_of(self, view: ReadView) -> _Sites:
        names = view.site_ids
        sites = self._sites
        if sites is None or sites.names is not names:
            with self._lock:
                sites = self._sites
                if sites is None or sites.names is not names:
                    sites = self._sites = _measured(self.network, names)
        return sites

    def answer(
        self, view: ReadView, sku: str, *, lat: float, lon: float, radius_km: float, by: Millis | None
    ) -> dict[str, Any] | None:
        """The answer `reference_near` gives, or None when the view holds no position of the sku."""
        block = view.skus.get(sku)
        if block is None:
            return None
        sites = self._sites_of(view)
        codes = block.held.codes
        # 2. The bound, in haversine's own terms: within d km iff a <= sin(d / 2R)^2.
        reach = (radius_km + _MARGIN_KM) / (2 * _EARTH_RADIUS_KM)
        if reach < math.pi / 2:
            p2 = math.radians(lat)
            half_dp = (p2 - sites.lat[codes]) * 0.5
            half_dl = (math.radians(lon) - sites.lon[codes]) * 0.5
            a = np.sin(half_dp) ** 2 + sites.cos_lat[codes] * math.cos(p2) * np.sin(half_dl) ** 2
            kept = np.flatnonzero((a <= math.sin(reach) ** 2) | sites.unknown[codes])
        else:
            kept = np.arange(len(codes))
        # 3. The kept sites' figures in one call, one dict each.
        at = kept.tolist()
        records = block.figures[kept].tolist()
        names, numbers, static, inbound = block.held.names, codes[kept].tolist(), sites.static, view.inbound
        shown = []
        for i, number, (atp, on_hand, reserved, staged, inbound_count, negative, updated_at) in zip(
            at, numbers, records, strict=True
        ):
            site_id = names[i]
            measured = static[number]
            if measured is None:
                name = kind = distance = None
            else:
                name, kind, site_lat, site_lon = measured
                distance = round(haversine_km(site_lat, site_lon, lat, lon), 3)
                if distance > radius_km:
                    continue
            lines = inbound.get((site_id, sku), ())
            if by is None:
                by_date = None
            else:
                by_date = atp + sum(qty for _, qty, eta, promised in lines if not promised and eta <= by)
            shown.append(
                {
                    "site_id": site_id, "name": name, "kind": kind, "distance_km": distance,
                    "on_hand": on_hand, "reserved": reserved, "staged": staged, "inbound": inbound_count,
                    "atp": atp, "atp_by_date": by_date, "negative": negative,
                    "inbound_lines": [
                        {"ref": ref, "qty": qty, "eta": eta, "promised": bool(promised)}
                        for ref, qty, eta, promised in lines
                    ],
                    "updated_at": updated_at,
                }
            )  # fmt: skip
        shown.sort(key=_nearest_first)
        return {"snapshot_id": view.snapshot_id, "sku": sku, "by": by, "sites": shown}


def _nearest_first(site: dict[str, Any]) -> tuple[bool, float, str]:
    distance = site["distance_km"]
    return (distance is None, distance or 0.0, site["site_id"])
