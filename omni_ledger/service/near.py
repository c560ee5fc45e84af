"""Availability of a sku near a point, answered from the read model's arrays.

The reference (`omni_ledger.service.reads.reference_near`) asks the network's grid for
the sites that may be in the radius, turns the sku's rows at those sites into a dict
each (`ReadView.sku_rows`), then into the answer's dict each, measuring every one with
`Network.distance_km`: two dicts and a dozen look-ups per site, most of an availability
read's CPU (bench/serve_profile.py: 36 % the rows, 23 % the distances).

Here, per request:

1. The sku's block (`SkuColumns`): its sites, ascending, and their records, contiguous.
2. One bound over all of the sku's sites at once: each site is kept as a unit vector
   per site set (the sites holding a sku, shared by every sku held by the same sites:
   a national range is one set), so the sites within the radius plus `_MARGIN_KM` are
   one matrix-vector product and a comparison; the sites the network does not know go
   on too (listed whatever the point, as the reference does). A prefilter only: its
   floats are not haversine's, so each site it keeps is measured again with
   `haversine_km`'s own steps (its `radians(lat)` and cosine kept per site: the same
   floats), rounded to metres and held to the radius as before. The answer is the
   reference's to the last float: a property holds the two equal
   (tests/component/omni_ledger/test_near.py).
3. The kept sites' records unpacked from their raw bytes in one C call (`struct`: a
   structured array's `tolist()` cost as much as the bound), one dict per site shown.
"""

from __future__ import annotations

import math
import struct
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.snapshot_store.read_model import NARROW, WIDE, ReadView, SiteSet
from ledger.events import Millis
from ledger.network import Network

__all__ = ["NearbyAvailability"]

_EARTH_RADIUS_KM = 6371.0088
"""ledger.network's: the bound is drawn on the sphere the distances are measured on."""
_MARGIN_KM = 1.0
"""How much wider than the radius the numpy bound keeps sites: far above any rounding of it (~1e-9 km)."""

_SITES_KEPT = 1_000_000
"""Sites measured and kept over all site sets (~50 bytes each) before the cache starts again."""
Floats = npt.NDArray[np.float64]
_NARROW, _WIDE = "<5i?q", "<5q?q"
"""`NARROW` and `WIDE` records as `struct` reads them: five counts, `negative`, `updated_at`, unpadded."""
_NARROW_SIZE = NARROW.itemsize
assert struct.calcsize(_NARROW) == NARROW.itemsize
assert struct.calcsize(_WIDE) == WIDE.itemsize


_Static = tuple[str, str, float, float, float, float]
"""A known site's (name, kind, latitude, longitude, latitude in radians, its cosine)."""


@dataclass(frozen=True, slots=True)
class _Measured:
    """A site set (the sites holding a sku, shared by every sku held by the same sites) measured once."""

    held: SiteSet
    """Kept so that the set, the cache's key by identity, lives as long as its entry."""
    unit: Floats
    """Each site as a unit vector (n x 3): the bound is one product with the point's."""
    unknown: npt.NDArray[np.bool_]
    static: tuple[_Static | None, ...]
    """Per site of the set, its constants; None when the network does not know it."""


def _measured(network: Network, held: SiteSet) -> _Measured:
    static: list[_Static | None] = []
    for name in held.names:
        if network.has_site(name):
            site = network.site(name)
            p1 = math.radians(site.lat)  # as haversine_km computes it: the same float
            static.append((site.name, site.kind.value, site.lat, site.lon, p1, math.cos(p1)))
        else:
            static.append(None)
    lat = np.array([0.0 if s is None else s[4] for s in static], dtype=np.float64)
    lon = np.radians(np.array([0.0 if s is None else s[3] for s in static], dtype=np.float64))
    unit = np.stack((np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)), axis=1)
    unknown = np.array([s is None for s in static], dtype=np.bool_)
    return _Measured(held, unit.reshape(len(static), 3), unknown, tuple(static))


class NearbyAvailability:
    """Availability of a sku within a radius of a point, over one network and any view of the read model."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self._measured: dict[int, _Measured] = {}
        self._kept = 0
        self._lock = threading.Lock()

    def _measure(self, held: SiteSet) -> _Measured:
        found = self._measured.get(id(held))
        if found is None or found.held is not held:
            with self._lock:
                if self._kept + len(held.names) > _SITES_KEPT:
                    # A view holds a few site sets (a national range is one); many means many
                    # views went by, or a store whose skus are each held by other sites.
                    self._measured.clear()
                    self._kept = 0
                found = self._measured[id(held)] = _measured(self.network, held)
                self._kept += len(held.names)
        return found

    def answer(
        self, view: ReadView, sku: str, *, lat: float, lon: float, radius_km: float, by: Millis | None
    ) -> dict[str, Any] | None:
        """The answer `reference_near` gives, or None when the view holds no position of the sku."""
        block = view.skus.get(sku)
        if block is None:
            return None
        sites = self._measure(block.held)
        # 2. The bound: within an angle t of the point iff the unit vectors' product is >= cos t.
        reach = (radius_km + _MARGIN_KM) / _EARTH_RADIUS_KM
        p2 = math.radians(lat)
        if reach < math.pi:
            cos_p2, lon2 = math.cos(p2), math.radians(lon)
            point = np.array((cos_p2 * math.cos(lon2), cos_p2 * math.sin(lon2), math.sin(p2)))
            kept = np.flatnonzero((sites.unit @ point >= math.cos(reach)) | sites.unknown)
        else:
            kept = np.arange(len(sites.static))
        # 3. The kept sites' records in one C call (their raw bytes unpacked), one dict each.
        packed = block.records[kept].tobytes()
        records = struct.iter_unpack(_NARROW if block.records.dtype.itemsize == _NARROW_SIZE else _WIDE, packed)
        names, static, inbound = block.held.names, sites.static, view.inbound
        cos_p2 = math.cos(p2)
        asin, sin, sqrt, radians = math.asin, math.sin, math.sqrt, math.radians
        shown = []
        for i, (atp, on_hand, reserved, staged, inbound_count, negative, updated_at) in zip(
            kept.tolist(), records, strict=True
        ):
            site_id = names[i]
            measured = static[i]
            if measured is None:
                name = kind = distance = None
            else:
                name, kind, _, site_lon, p1, cos_p1 = measured
                # ledger.network.haversine_km(site lat, site lon, lat, lon), step for step: the same float
                # (its p1 and cos(p1) kept per site; the property compares with Network.distance_km).
                a = sin((p2 - p1) / 2) ** 2 + cos_p1 * cos_p2 * sin(radians(lon - site_lon) / 2) ** 2
                distance = round(2 * _EARTH_RADIUS_KM * asin(min(1.0, sqrt(a))), 3)
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
