"""The promise service: what the HTTP API, the web console and the demo call.

Reads come from the newest snapshot (pinned per request, never older than
`serve.max_snapshot_age`); writes are events appended to the flow's input, and a
confirm answers with the fold's own decision. The service never decides a reservation
from a snapshot: two customers confirming the last unit at once both send a request,
and the fold accepts the first and rejects the second, who is then offered the next
best option.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.decision_feed import DecisionFeed
from adapters.inbox import EventInbox
from adapters.snapshot_store.read_model import ReadModel, ReadView
from adapters.snapshot_store.serving import ServingStore, SnapshotMeta
from ledger.confirm import confirm_events
from ledger.contract import plan_from_record as _fulfilment_of
from ledger.errors import OmniLedgerError
from ledger.events import EventType, InventoryEvent, Millis
from ledger.fulfilment import Fulfilment
from ledger.network import Network, appointment_sku, appointment_slot
from ledger.promise import Option, Promise, PromiseRequest, SnapshotView, StaticView, promise
from omni_ledger.config import ServeSettings

__all__ = [
    "ConfirmResult",
    "Conflict",
    "DecisionTimeout",
    "InvalidRequest",
    "LedgerService",
    "NotFound",
    "OptionGone",
    "ServiceError",
    "StaleSnapshot",
]


class ServiceError(OmniLedgerError):
    """A request the service cannot answer as asked; `status` is the HTTP status it maps to."""

    status = 400
    code = "bad_request"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class InvalidRequest(ServiceError):
    status, code = 422, "invalid_request"


class OptionGone(ServiceError):
    """The option confirmed is no longer offered (stock moved, cut-off passed): promise again."""

    status, code = 409, "option_gone"


class Conflict(ServiceError):
    """The action does not fit the current state of its task or parcel."""

    status, code = 409, "conflict"


class StaleSnapshot(ServiceError):
    status, code = 503, "snapshot_stale"


class DecisionTimeout(ServiceError):
    status, code = 504, "decision_timeout"


@dataclass(frozen=True)
class ConfirmResult:
    """What a confirm came to: the fold's decision, the booked slot, the next best option if rejected."""

    reservation_id: str
    order_id: str
    status: str
    reason: str
    option: Option
    snapshot_id: int
    decision: Mapping[str, Any]
    appointment_status: str | None = None
    next_best: Option | None = None
    events: tuple[InventoryEvent, ...] = field(default=(), repr=False)


def _wall_ms() -> Millis:
    return time.time_ns() // 1_000_000


class LedgerService:
    """Promise, confirm and the reads of the API, over one network and one snapshot store."""

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
        sites = []
        for row in rows:
            site_id = str(row["site_id"])
            known = self.network.has_site(site_id)
            distance = None
            if known and lat is not None and lon is not None:
                distance = round(self.network.distance_km(site_id, lat, lon), 3)
                if radius_km is not None and distance > radius_km:
                    continue
            lines = row.pop("inbound_lines")
            free_due = sum(
                int(line["qty"])
                for line in lines
                if not line.get("promised") and (by is None or _ms(line["eta"]) <= by)
            )
            site = self.network.site(site_id) if known else None
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
                            "eta": _ms(line["eta"]),
                            "promised": bool(line.get("promised")),
                        }
                        for line in lines
                    ],
                    "updated_at": _ms(row["updated_at"]),
                }
            )
        sites.sort(key=lambda s: (s["distance_km"] is None, s["distance_km"] or 0.0, s["site_id"]))
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
        rows = self.store.positions(site_id, meta.snapshot_id)
        stock = [r for r in rows if appointment_slot(str(r["sku"])) is None]
        slots = [r for r in rows if appointment_slot(str(r["sku"])) is not None]
        return {"snapshot_id": meta.snapshot_id, "site_id": site_id, "positions": stock, "appointment_slots": slots}

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

    # -- writes

    def confirm(
        self,
        items: Mapping[str, int] | Sequence[tuple[str, int]],
        option_id: str,
        *,
        lat: float,
        lon: float,
        radius_km: float | None = None,
        appointment: bool = False,
        customer: str | None = None,
        order_id: str | None = None,
        idempotency_key: str | None = None,
        now: Millis | None = None,
    ) -> ConfirmResult:
        """Reserve the option (or a leg of a together plan) through the fold; answer with its decision.

        The promise is made again on the current snapshot: an option that is no longer
        offered is refused (`OptionGone`) rather than reserved blind.
        """
        now = self.clock() if now is None else now
        # Whole, not bounded: the customer may have chosen an option past the first page.
        offered = self.promise(items, lat=lat, lon=lon, radius_km=radius_km, appointment=appointment, now=now)
        legs = [leg for plan in offered.together for leg in plan.legs]
        option = next((o for o in (*offered.options, *legs) if o.option_id == option_id), None)
        if option is None:
            msg = (
                f"option {option_id!r} is not offered any more on snapshot {offered.snapshot_id} "
                f"(stock moved or a cut-off passed); promise again: {len(offered.options)} options now"
            )
            raise OptionGone(msg)
        if idempotency_key:
            reservation_id = f"R-{hashlib.sha256(idempotency_key.encode()).hexdigest()[:20]}"
        else:
            reservation_id = f"R-{uuid.uuid4().hex[:20]}"
        return self.reserve(
            option,
            reservation_id=reservation_id,
            order_id=order_id,
            customer=customer,
            now=now,
            alternatives=offered,
        )

    def reserve(
        self,
        option: Option,
        *,
        reservation_id: str,
        order_id: str | None = None,
        customer: str | None = None,
        now: Millis,
        alternatives: Promise,
        book_appointment: bool = True,
    ) -> ConfirmResult:
        """Send the option's events to the fold and wait for its decisions on them."""
        order = order_id or f"O-{reservation_id.removeprefix('R-')}"
        book = book_appointment and option.appointment_at is not None
        try:
            events = confirm_events(
                option,
                reservation_id=reservation_id,
                order_id=order,
                customer=customer,
                now=now,
                network=self.network,
                hold_days=self.settings.hold_days,
                appointment=book,
            )
        except ValueError as exc:
            raise OptionGone(str(exc)) from exc
        self.inbox.send(events)
        timeout = self.settings.confirm_timeout.total_seconds()
        deadline = time.monotonic() + timeout
        decision = self.decisions.wait(reservation_id, timeout)
        if decision is None:
            msg = (
                f"the ledger has not decided reservation {reservation_id} within {timeout:.1f} s; "
                f"its request was sent to {self.inbox.description}: ask GET /v1/reservations/{reservation_id} later"
            )
            raise DecisionTimeout(msg)
        appointment_status = None
        if book:
            appt = self.decisions.wait(f"{reservation_id}/appt", max(0.1, deadline - time.monotonic()))
            appointment_status = None if appt is None else str(appt["status"])
        status = str(decision["status"])
        next_best = None
        if status != "ACCEPTED":
            if appointment_status == "ACCEPTED":
                self.inbox.send([_release_appointment(reservation_id, option, now)])
                appointment_status = "RELEASED"
            # The next best is the best option for the same sku from another source.
            next_best = next(
                (o for o in alternatives.options if o.sku == option.sku and o.source_id != option.source_id),
                None,
            )
        return ConfirmResult(
            reservation_id,
            order,
            status,
            str(decision.get("reason", "")),
            option,
            alternatives.snapshot_id,
            decision,
            appointment_status,
            next_best,
            events,
        )

    def emit(self, events: Sequence[InventoryEvent]) -> None:
        """Send events to the flow (the demo's story, tools)."""
        self.inbox.send(events)

    # -- the staff's actions: each is one event the fold applies like any other

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

    def mark_picked(self, task_id: str, now: Millis | None = None) -> InventoryEvent:
        """The clerk isolated the units of a shuttle task in their labelled parcel: TRANSFER_PICKED."""
        task = self._one("store_tasks", "task_id", task_id, "task_id")
        if task["kind"] != "PICK_FOR_SHUTTLE":
            msg = f"task {task_id} is a {task['kind']} task: only PICK_FOR_SHUTTLE tasks are picked into a parcel"
            raise Conflict(msg)
        if task["status"] == "CANCELLED":
            msg = f"task {task_id} was cancelled (its reservation ended): put the unit back on the shelf"
            raise Conflict(msg)
        return self._act(
            EventType.TRANSFER_PICKED, "picked", task["reservation_id"], task["site_id"], task["sku"], task["qty"],
            now, to_site_id=task["deliver_to"],
        )  # fmt: skip

    def mark_loaded(self, parcel_id: str, now: Millis | None = None) -> InventoryEvent:
        """The driver scanned the parcel onto its shuttle: SHUTTLE_LOADED, carrying the plan to the destination."""
        load = self._one("transport_loads", "parcel_id", parcel_id, "parcel_id")
        if load["status"] == "CANCELLED":
            msg = f"parcel {parcel_id} was cancelled (its reservation ended): do not load it"
            raise Conflict(msg)
        plan = load["plan"]
        if not isinstance(plan, Fulfilment):
            plan = _plan_from(plan)
        return self._act(
            EventType.SHUTTLE_LOADED, "loaded", load["reservation_id"], load["origin"], load["sku"], load["qty"], now,
            to_site_id=load["destination"], eta=_ms(load["arrives_at"]), fulfilment=plan,
        )  # fmt: skip

    def mark_arrived(self, parcel_id: str, now: Millis | None = None) -> InventoryEvent:
        """The parcel was scanned in at the destination: SHUTTLE_ARRIVED."""
        load = self._one("transport_loads", "parcel_id", parcel_id, "parcel_id")
        if load["status"] not in ("LOADED", "ARRIVED"):
            msg = f"parcel {parcel_id} is {load['status']}: it must be loaded before it arrives"
            raise Conflict(msg)
        return self._act(
            EventType.SHUTTLE_ARRIVED, "arrived", load["reservation_id"], load["destination"], load["sku"], load["qty"],
            now,
        )  # fmt: skip

    def _act(
        self, kind: EventType, what: str, ref: object, site: object, sku: object, qty: object, now: Millis | None,
        **extra: Any,
    ) -> InventoryEvent:  # fmt: skip
        assert isinstance(ref, str)
        assert isinstance(site, str)
        assert isinstance(sku, str)
        assert isinstance(qty, int)
        event = InventoryEvent(
            # One id per action and reservation: a double click is a duplicate the fold ignores.
            event_id=f"CONSOLE:{ref}:{what}",
            type=kind,
            occurred_at=self.clock() if now is None else now,
            site_id=site,
            sku=sku,
            qty=qty,
            ref=ref,
            source="CONSOLE",
            **extra,
        )
        self.inbox.send([event])
        return event


def _plan_from(value: object) -> Fulfilment:
    """A plan as the snapshot table holds it (JSON text, or its decoded mapping)."""
    record = json.loads(value) if isinstance(value, str) else value
    if not isinstance(record, Mapping):
        msg = f"a load's plan is not a fulfilment record: {value!r}"
        raise InvalidRequest(msg)
    plan = _fulfilment_of(record)
    if plan is None:
        msg = f"a load's plan does not validate: {value!r}"
        raise InvalidRequest(msg)
    return plan


def _release_appointment(reservation_id: str, option: Option, now: Millis) -> InventoryEvent:
    assert option.appointment_at is not None
    return InventoryEvent(
        event_id=f"OMS:{reservation_id}:appointment-release",
        type=EventType.RESERVATION_RELEASED,
        occurred_at=now,
        site_id=option.deliver_to,
        sku=appointment_sku(option.appointment_at),
        qty=1,
        ref=f"{reservation_id}/appt",
        source="OMS",
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(value: object) -> Millis:
    if isinstance(value, datetime):
        return (value - _EPOCH) // timedelta(milliseconds=1)
    assert isinstance(value, int)
    return value
