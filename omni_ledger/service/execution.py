"""The staff's actions (picked, loaded, arrived): each is one event the fold applies like any other."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ledger.contract import plan_from_record as _fulfilment_of
from ledger.events import EventType, InventoryEvent, Millis
from ledger.fulfilment import Fulfilment
from omni_ledger.errors import Conflict, InvalidRequest
from omni_ledger.service.reads import Reads, as_millis

__all__ = ["Execution"]


class Execution(Reads):
    """What clerks and drivers do to a shuttle task or parcel, checked against the snapshot first."""

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
            to_site_id=load["destination"], eta=as_millis(load["arrives_at"]), fulfilment=plan,
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
