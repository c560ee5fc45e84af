"""The service's reads: the snapshot it answers from, availability, promise and the tables.

Each request pins the newest snapshot, never older than `serve.max_snapshot_age`
(`StaleSnapshot` otherwise); availability and promise read the in-memory read model when
there is one, else the snapshot store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.decision_feed import DecisionFeed
from adapters.inbox import EventInbox
from adapters.snapshot_store.read_model import ReadModel, ReadView
from adapters.snapshot_store.serving import ServingStore, SnapshotMeta
from ledger.answer import Promise, PromiseRequest, SnapshotView, StaticView
from ledger.events import Millis
from ledger.nearby import candidates
from ledger.network import Network, appointment_slot
from ledger.promise import promise
from omni_ledger.config import ServeSettings
from omni_ledger.errors import InvalidRequest, NotFound, StaleSnapshot
from omni_ledger.service.near import NearbyAvailability

__all__ = ["Reads", "as_millis", "reference_near", "sites_shown"]

_ROUNDING_KM = 0.001
"""A site is in the radius when its distance rounded to metres is: candidates are sought that much wider."""


def _refreshes(model: ReadModel) -> dict[str, object]:
    """The model's last refreshes of changes (whole loads left out): how many, and p50 / p99 / max of their
    wall and CPU seconds and of publish -> visible (the metrics' histograms, readable without Prometheus)."""
    kept = [r for r in list(model.refreshes) if not r.whole]
    summary: dict[str, object] = {"count": len(kept)}
    for name, values in (
        ("wall_s", [r.wall_s for r in kept]),
        ("cpu_s", [r.cpu_s for r in kept]),
        ("visible_s", [v for r in kept if (v := r.visible_after_s) is not None]),
    ):
        ordered = sorted(values)
        summary[name] = (
            {
                q: round(ordered[min(len(ordered) - 1, int(f * len(ordered)))], 3)
                for q, f in (("p50", 0.5), ("p99", 0.99))
            }
            | {"max": round(ordered[-1], 3)}
            if ordered
            else None
        )
    return summary


def _wall_ms() -> Millis:
    return time.time_ns() // 1_000_000


class Reads:
    """The reads of the API over one network and one snapshot store, and what the writes share."""

    def __init__(
        self,
        network: Network,
        store: ServingStore,
        inbox: EventInbox,
        decisions: DecisionFeed,
        settings: ServeSettings,
        clock: Callable[[], Millis] = _wall_ms,
        read_model: ReadModel | None = None,
    ) -> None:
        self.network = network
        self.store = store
        self.read_model = read_model
        """Where availability and promise read from, when given (no DuckLake query per request)."""
        self.inbox = inbox
        self.decisions = decisions
        self.settings = settings
        self.clock = clock
        self._near = NearbyAvailability(network)

    # -- the snapshot

    def snapshot(self) -> SnapshotMeta:
        """The snapshot to answer from; `StaleSnapshot` when there is none or it is too old."""
        meta = self.store.current
        if meta is None:
            msg = "no snapshot has been published yet: is the flow (`omni-ledger run`) running?"
            raise StaleSnapshot(msg)
        age = self.snapshot_age(meta)
        limit = self.settings.max_snapshot_age.total_seconds()
        if age > limit:
            msg = (
                f"the newest snapshot ({meta.snapshot_id}) is {age:.1f} s old, over the {limit:.0f} s limit "
                "(serve.max_snapshot_age): the flow has stopped publishing; check `omni-ledger run`"
            )
            raise StaleSnapshot(msg)
        return meta

    def snapshot_age(self, meta: SnapshotMeta) -> float:
        """Seconds since the flow last confirmed this snapshot is its newest (heartbeat or publish)."""
        return max(0.0, (_wall_ms() - max(meta.current_at, meta.created_at)) / 1000)

    def health(self) -> dict[str, Any]:
        meta = self.store.current
        body: dict[str, Any] = {"snapshot_id": None, "snapshot_age_s": None, "events_applied": None}
        if meta is not None:
            body |= {
                "snapshot_id": meta.snapshot_id,
                "snapshot_age_s": round(self.snapshot_age(meta), 3),
                "events_applied": meta.events_applied,
            }
        try:
            self.snapshot()
            body["status"] = "ok"
        except StaleSnapshot as exc:
            body |= {"status": "stale", "message": str(exc)}
        body["max_snapshot_age_s"] = self.settings.max_snapshot_age.total_seconds()
        view = self._read_view()
        if view is not None and self.read_model is not None:
            body["read_model"] = {
                "snapshot_id": view.snapshot_id,
                "positions": view.positions,
                "bytes": view.nbytes(),
                "last_refresh_s": round(self.read_model.last_refresh_s, 3),
                "resident_growth_bytes": self.read_model.resident_growth,
                "resident_before_load_bytes": self.read_model.resident_before,
                "cursor_process_resident_bytes": self.read_model.cursor_process_resident,
                "refreshes": _refreshes(self.read_model),
            }
        return body

    # -- reads

    def _known_site(self, site_id: str) -> None:
        if not self.network.has_site(site_id):
            msg = f"unknown site {site_id!r}: not in the network ({self.settings.network})"
            raise NotFound(msg)

    def availability(
        self,
        sku: str,
        *,
        lat: float | None = None,
        lon: float | None = None,
        radius_km: float | None = None,
        by: Millis | None = None,
    ) -> dict[str, Any]:
        """Every site's position of `sku`, nearest first from a point if given, with ATP by a date."""
        meta = self.snapshot()
        view = self._read_view()
        if view is not None and lat is not None and lon is not None and radius_km is not None:
            # From the read model's arrays (omni_ledger.service.near): the answer `reference_near` gives.
            answer = self._near.answer(view, sku, lat=lat, lon=lon, radius_km=radius_km, by=by)
            if answer is None:
                msg = f"unknown sku {sku!r}: no site has a position for it in snapshot {view.snapshot_id}"
                raise NotFound(msg)
            return answer
        if view is not None:
            snapshot_id, rows = view.snapshot_id, view.sku_rows(sku)
        else:
            snapshot_id, rows = meta.snapshot_id, self.store.sku_positions(sku, meta.snapshot_id)
        if not rows:
            msg = f"unknown sku {sku!r}: no site has a position for it in snapshot {snapshot_id}"
            raise NotFound(msg)
        if (lat is None) != (lon is None):
            msg = "give both lat and lon, or neither"
            raise InvalidRequest(msg)
        sites = sites_shown(self.network, rows, lat=lat, lon=lon, radius_km=radius_km, by=by)
        return {"snapshot_id": snapshot_id, "sku": sku, "by": by, "sites": sites}

    def promise(
        self,
        items: Mapping[str, int] | Sequence[tuple[str, int]],
        *,
        lat: float,
        lon: float,
        radius_km: float | None = None,
        appointment: bool = False,
        now: Millis | None = None,
        limit: int | None = None,
        explain: bool = False,
    ) -> Promise:
        """Every option for the basket on the current snapshot, ranked, with the exclusions.

        With a `limit` (the API's default is `DEFAULT_LIMIT`) only the best `limit` options
        and plans, the exclusions summarised (listed too with `explain`). Whole (None) is
        what confirm needs to find the chosen option wherever it ranks.
        """
        meta = self.snapshot()
        try:
            request = PromiseRequest.of(
                items,
                lat=lat,
                lon=lon,
                now=self.clock() if now is None else now,
                radius_km=radius_km,
                appointment=appointment,
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        try:
            view = self._view(meta, request)
            return promise(self.network, view, request, limit=limit, explain=explain or limit is None)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc

    def _read_view(self) -> ReadView | None:
        """The read model's newest view, None without a read model or before its first load."""
        return None if self.read_model is None else self.read_model.view

    def _view(self, meta: SnapshotMeta, request: PromiseRequest) -> SnapshotView:
        # One reference read once: the whole promise answers from this view's snapshot.
        view = self._read_view()
        if view is not None:
            return view
        skus = [sku for sku, _ in request.items]
        stocks = self.store.stock(skus, meta.snapshot_id)
        slots: dict[tuple[str, Millis], int] = {}
        if request.appointment:
            # Only the stores a customer there could visit: reading every store's slots
            # of a national network cost 1.3 s a promise (make bench-serve).
            radius = request.radius_km if request.radius_km is not None else self.network.radius_km
            near = [
                site.id
                for site in self.network.sites
                if site.appointments is not None
                and self.network.distance_km(site.id, request.lat, request.lon) <= radius
            ]
            slots = self.store.slots(near, meta.snapshot_id)
        return StaticView(meta.snapshot_id, tuple(stocks), slots)

    def positions(self, site_id: str) -> dict[str, Any]:
        self._known_site(site_id)
        meta = self.snapshot()
        # At the read model's snapshot when there is one: promises answer from it, and the store
        # watch and the read model follow the store apart (one was seen 5 snapshots ahead). A
        # client that picks a sku by these positions and then asks for a promise is answered
        # from this snapshot or a newer one, never from before the stock it saw.
        view = self._read_view()
        snapshot_id = meta.snapshot_id if view is None else view.snapshot_id
        rows = self.store.positions(site_id, snapshot_id)
        stock = [r for r in rows if appointment_slot(str(r["sku"])) is None]
        slots = [r for r in rows if appointment_slot(str(r["sku"])) is not None]
        return {"snapshot_id": snapshot_id, "site_id": site_id, "positions": stock, "appointment_slots": slots}

    def tasks(self, site_id: str, status: str | None = None) -> dict[str, Any]:
        self._known_site(site_id)
        meta = self.snapshot()
        rows = self.store.table(
            "store_tasks", {"site_id": site_id, "status": status}, meta.snapshot_id, "due_at, task_id"
        )
        return {"snapshot_id": meta.snapshot_id, "site_id": site_id, "tasks": rows}

    def load_plan(self, run_id: str) -> dict[str, Any]:
        meta = self.snapshot()
        rows = self.store.table("transport_loads", {"run_id": run_id}, meta.snapshot_id, "parcel_id")
        if not rows:
            msg = f"no parcel is planned on shuttle run {run_id!r} in snapshot {meta.snapshot_id}"
            raise NotFound(msg)
        return {"snapshot_id": meta.snapshot_id, "run_id": run_id, "loads": rows}

    def runs(self) -> dict[str, Any]:
        meta = self.snapshot()
        rows = self.store.table("transport_loads", {}, meta.snapshot_id, "departs_at, run_id, parcel_id")
        return {"snapshot_id": meta.snapshot_id, "loads": rows}

    def orders(self, supplier_id: str | None = None) -> dict[str, Any]:
        meta = self.snapshot()
        rows = self.store.table("dropship_orders", {"supplier_id": supplier_id}, meta.snapshot_id, "due_at, order_ref")
        return {"snapshot_id": meta.snapshot_id, "orders": rows}

    def reservation(self, reservation_id: str) -> dict[str, Any]:
        meta = self.snapshot()
        rows = self.store.table("reservations", {"reservation_id": reservation_id}, meta.snapshot_id, "reservation_id")
        if not rows:
            msg = f"no reservation {reservation_id!r} in snapshot {meta.snapshot_id} (it may not be decided yet)"
            raise NotFound(msg)
        return {"snapshot_id": meta.snapshot_id, **rows[0]}

    def _one(self, table: str, key: str, value: str, order: str) -> dict[str, Any]:
        meta = self.snapshot()
        rows = self.store.table(table, {key: value}, meta.snapshot_id, order)
        if not rows:
            msg = f"no {table.replace('_', ' ')[:-1]} {value!r} in snapshot {meta.snapshot_id}"
            raise NotFound(msg)
        return rows[0]

    def parcel(self, parcel_id: str) -> dict[str, Any]:
        """The load plan entry of one parcel."""
        return self._one("transport_loads", "parcel_id", parcel_id, "parcel_id")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def as_millis(value: object) -> Millis:
    """A timestamp as a snapshot table holds it (a datetime, or epoch millis) in epoch millis."""
    if isinstance(value, datetime):
        return (value - _EPOCH) // timedelta(milliseconds=1)
    assert isinstance(value, int)
    return value


def reference_near(
    network: Network, view: ReadView, sku: str, *, lat: float, lon: float, radius_km: float, by: Millis | None
) -> dict[str, Any] | None:
    """Availability near a point from a view, row by row: the reference `NearbyAvailability` is held to.

    None when the view holds no position of the sku. Only the sites that may be in the
    radius (ledger.nearby), and those the network does not know (listed whatever the
    point), are read, each as a row dict, then measured and shown by `sites_shown`.
    """
    holders = view.sku_sites(sku)
    if not holders:
        return None
    near = set(candidates(network, lat, lon, radius_km + _ROUNDING_KM))
    near.update(site for site in holders if not network.has_site(site))
    rows = view.sku_rows(sku, near)
    sites = sites_shown(network, rows, lat=lat, lon=lon, radius_km=radius_km, by=by)
    return {"snapshot_id": view.snapshot_id, "sku": sku, "by": by, "sites": sites}


def sites_shown(
    network: Network,
    rows: Sequence[dict[str, Any]],
    *,
    lat: float | None,
    lon: float | None,
    radius_km: float | None,
    by: Millis | None,
) -> list[dict[str, Any]]:
    """The availability answer's sites from position rows (the read model's or the store's), nearest first."""
    sites = []
    for row in rows:
        site_id = str(row["site_id"])
        known = network.has_site(site_id)
        distance = None
        if known and lat is not None and lon is not None:
            distance = round(network.distance_km(site_id, lat, lon), 3)
            if radius_km is not None and distance > radius_km:
                continue
        lines = row["inbound_lines"]
        free_due = sum(
            int(line["qty"])
            for line in lines
            if not line.get("promised") and (by is None or as_millis(line["eta"]) <= by)
        )
        site = network.site(site_id) if known else None
        sites.append(
            {
                "site_id": site_id,
                "name": site.name if site else None,
                "kind": site.kind.value if site else None,
                "distance_km": distance,
                "on_hand": row["on_hand"],
                "reserved": row["reserved"],
                "staged": row["staged"],
                "inbound": row["inbound"],
                "atp": row["atp"],
                "atp_by_date": None if by is None else int(row["atp"]) + free_due,
                "negative": row["negative"],
                "inbound_lines": [
                    {
                        "ref": line["ref"],
                        "qty": line["qty"],
                        "eta": as_millis(line["eta"]),
                        "promised": bool(line.get("promised")),
                    }
                    for line in lines
                ],
                "updated_at": as_millis(row["updated_at"]),
            }
        )
    sites.sort(key=lambda s: (s["distance_km"] is None, s["distance_km"] or 0.0, s["site_id"]))
    return sites
