"""The work a confirmed promise creates: store tasks, shuttle loads, dropship orders.

The fold emits these when a reservation carrying a `Fulfilment` plan is accepted, and
again each time its unit moves on (picked, loaded or shipped, arrived, collected, or
cancelled when the hold ends without it). Each record is the whole current state of
one piece of work. Statuses only move forward, so a consumer keeps, per key, the record
with the highest `rank` (ties: the one it has): replays and redeliveries are harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ledger._pickle import positional_reduce
from ledger.contract import fulfilment_to_record
from ledger.events import Millis
from ledger.fulfilment import HOME, Fulfilment, FulfilmentMode, SourceKind

__all__ = [
    "WORK_TIMES",
    "DropshipOrder",
    "OrderStatus",
    "ShuttleLoad",
    "StoreTask",
    "TaskKind",
    "TaskStatus",
    "Work",
    "on_accepted",
    "on_arrived",
    "on_dispatched",
    "on_ended",
    "on_fulfilled",
    "on_picked",
    "work_fields",
]


class TaskKind(StrEnum):
    """What the clerk at `site_id` has to do."""

    PICK_FOR_SHUTTLE = "PICK_FOR_SHUTTLE"
    """Isolate the units in a labelled parcel in the zone, before the shuttle's departure."""
    PREPARE_PICKUP = "PREPARE_PICKUP"
    """Set the units aside for the customer (and the appointment) at this store."""
    PICK_FOR_CARRIER = "PICK_FOR_CARRIER"
    """Pick and pack for the home-delivery carrier (a DC)."""


class TaskStatus(StrEnum):
    OPEN = "OPEN"
    DONE = "DONE"
    CANCELLED = "CANCELLED"


class LoadStatus(StrEnum):
    PLANNED = "PLANNED"
    LOADED = "LOADED"
    ARRIVED = "ARRIVED"
    CANCELLED = "CANCELLED"


class OrderStatus(StrEnum):
    ORDERED = "ORDERED"
    SHIPPED = "SHIPPED"
    RECEIVED = "RECEIVED"
    CANCELLED = "CANCELLED"


# One table per status type: the three CANCELLED members are equal strings, so a single
# dict keyed by status would merge them.
_TASK_RANK = {TaskStatus.OPEN: 1, TaskStatus.DONE: 2, TaskStatus.CANCELLED: 2}
_LOAD_RANK = {LoadStatus.PLANNED: 1, LoadStatus.LOADED: 2, LoadStatus.ARRIVED: 3, LoadStatus.CANCELLED: 3}
_ORDER_RANK = {OrderStatus.ORDERED: 1, OrderStatus.SHIPPED: 2, OrderStatus.RECEIVED: 3, OrderStatus.CANCELLED: 3}


@dataclass(frozen=True, slots=True)
class StoreTask:
    """A task for the staff of one site, keyed by `task_id`."""

    __reduce__ = positional_reduce

    task_id: str
    site_id: str
    sku: str
    qty: int
    kind: TaskKind
    status: TaskStatus
    reservation_id: str
    due_at: Millis
    """Done by then: the shuttle's departure, the appointment, or the pickup date."""
    plan: Fulfilment
    updated_at: Millis

    @property
    def rank(self) -> int:
        return _TASK_RANK[self.status]


@dataclass(frozen=True, slots=True)
class ShuttleLoad:
    """One parcel on one shuttle run's load plan, keyed by `parcel_id`."""

    __reduce__ = positional_reduce

    parcel_id: str
    run_id: str
    origin: str
    destination: str
    sku: str
    qty: int
    departs_at: Millis
    arrives_at: Millis
    status: LoadStatus
    reservation_id: str
    plan: Fulfilment
    updated_at: Millis

    @property
    def rank(self) -> int:
        return _LOAD_RANK[self.status]


@dataclass(frozen=True, slots=True)
class DropshipOrder:
    """An order to a supplier (or a marketplace seller) to ship to a store or `HOME`, keyed by `order_ref`."""

    __reduce__ = positional_reduce

    order_ref: str
    """The reservation id: one order per reservation."""
    supplier_id: str
    deliver_to: str
    sku: str
    qty: int
    due_at: Millis
    status: OrderStatus
    plan: Fulfilment
    updated_at: Millis

    @property
    def rank(self) -> int:
        return _ORDER_RANK[self.status]


Work = StoreTask | ShuttleLoad | DropshipOrder


def _task(
    kind: TaskKind, status: TaskStatus, site: str, sku: str, qty: int, ref: str, plan: Fulfilment, now: Millis
) -> StoreTask:
    if kind is TaskKind.PICK_FOR_SHUTTLE:
        due = plan.departs_at if plan.departs_at is not None else plan.ready_at
    elif kind is TaskKind.PREPARE_PICKUP:
        due = plan.appointment_at if plan.appointment_at is not None else plan.ready_at
    else:
        due = plan.ready_at
    return StoreTask(f"{ref}/{kind.value}", site, sku, qty, kind, status, ref, due, plan, now)


def _load(status: LoadStatus, origin: str, sku: str, qty: int, ref: str, plan: Fulfilment, now: Millis) -> ShuttleLoad:
    assert plan.parcel_id is not None
    assert plan.run_id is not None
    departs = plan.departs_at if plan.departs_at is not None else plan.ready_at
    arrives = plan.arrives_at if plan.arrives_at is not None else plan.ready_at
    return ShuttleLoad(
        plan.parcel_id, plan.run_id, origin, plan.deliver_to, sku, qty, departs, arrives, status, ref, plan, now
    )


def _order(
    status: OrderStatus, supplier: str, sku: str, qty: int, ref: str, plan: Fulfilment, now: Millis
) -> DropshipOrder:
    due = plan.arrives_at if plan.arrives_at is not None else plan.ready_at
    return DropshipOrder(ref, supplier, plan.deliver_to, sku, qty, due, status, plan, now)


def _is_order(plan: Fulfilment) -> bool:
    """A supplier or marketplace seller ships it: an order, not a task of ours."""
    return plan.mode is FulfilmentMode.DROPSHIP_TO_STORE or (
        plan.mode is FulfilmentMode.HOME_DELIVERY and plan.source_kind is SourceKind.SELLER
    )


def _source_task_kind(plan: Fulfilment) -> TaskKind:
    if plan.mode is FulfilmentMode.TRANSFER_TO_STORE:
        return TaskKind.PICK_FOR_SHUTTLE
    if plan.mode is FulfilmentMode.HOME_DELIVERY:
        return TaskKind.PICK_FOR_CARRIER
    return TaskKind.PREPARE_PICKUP


def on_accepted(site: str, sku: str, qty: int, ref: str, plan: Fulfilment, now: Millis) -> list[Work]:
    """The source site accepted the reservation: open its task, plan the load, or order it."""
    if _is_order(plan):
        return [_order(OrderStatus.ORDERED, site, sku, qty, ref, plan, now)]
    work: list[Work] = [_task(_source_task_kind(plan), TaskStatus.OPEN, site, sku, qty, ref, plan, now)]
    if plan.mode is FulfilmentMode.TRANSFER_TO_STORE:
        work.append(_load(LoadStatus.PLANNED, site, sku, qty, ref, plan, now))
    return work


def on_picked(site: str, sku: str, qty: int, ref: str, plan: Fulfilment, now: Millis) -> list[Work]:
    """The clerk isolated the units in their parcel."""
    if plan.mode is not FulfilmentMode.TRANSFER_TO_STORE:
        return []
    return [_task(TaskKind.PICK_FOR_SHUTTLE, TaskStatus.DONE, site, sku, qty, ref, plan, now)]


def on_dispatched(site: str, sku: str, qty: int, ref: str, plan: Fulfilment, now: Millis) -> list[Work]:
    """The parcel left the source: loaded on the shuttle, or shipped by the supplier."""
    if plan.mode is FulfilmentMode.TRANSFER_TO_STORE:
        return [_load(LoadStatus.LOADED, site, sku, qty, ref, plan, now)]
    if _is_order(plan):
        return [_order(OrderStatus.SHIPPED, site, sku, qty, ref, plan, now)]
    return []


def on_arrived(site: str, sku: str, qty: int, ref: str, plan: Fulfilment, now: Millis) -> list[Work]:
    """The parcel reached the pickup store: close the move, ask the clerk to set it aside."""
    work: list[Work] = []
    if plan.mode is FulfilmentMode.TRANSFER_TO_STORE:
        work.append(_load(LoadStatus.ARRIVED, plan.source_site or "", sku, qty, ref, plan, now))
    elif _is_order(plan):
        work.append(_order(OrderStatus.RECEIVED, plan.source_site or "", sku, qty, ref, plan, now))
    if plan.deliver_to != HOME:
        work.append(_task(TaskKind.PREPARE_PICKUP, TaskStatus.OPEN, site, sku, qty, ref, plan, now))
    return work


def on_fulfilled(site: str, sku: str, qty: int, ref: str, plan: Fulfilment, now: Millis) -> list[Work]:
    """The units left with the customer or the carrier."""
    if plan.mode is FulfilmentMode.HOME_DELIVERY and plan.source_kind is SourceKind.SELLER:
        return [_order(OrderStatus.SHIPPED, site, sku, qty, ref, plan, now)]
    kind = TaskKind.PICK_FOR_CARRIER if plan.mode is FulfilmentMode.HOME_DELIVERY else TaskKind.PREPARE_PICKUP
    return [_task(kind, TaskStatus.DONE, site, sku, qty, ref, plan, now)]


def on_ended(
    site: str, sku: str, qty: int, ref: str, plan: Fulfilment, now: Millis, *, at_destination: bool
) -> list[Work]:
    """The hold ended without the units moving on (released or expired): cancel its work."""
    if at_destination:
        return [_task(TaskKind.PREPARE_PICKUP, TaskStatus.CANCELLED, site, sku, qty, ref, plan, now)]
    if _is_order(plan):
        return [_order(OrderStatus.CANCELLED, site, sku, qty, ref, plan, now)]
    work: list[Work] = [_task(_source_task_kind(plan), TaskStatus.CANCELLED, site, sku, qty, ref, plan, now)]
    if plan.mode is FulfilmentMode.TRANSFER_TO_STORE:
        work.append(_load(LoadStatus.CANCELLED, site, sku, qty, ref, plan, now))
    return work


WORK_TIMES = ("due_at", "departs_at", "arrives_at", "updated_at")
"""The fields of `work_fields` that are times (epoch milliseconds)."""


def work_fields(item: Work) -> dict[str, object]:
    """A piece of work as a flat record (times in epoch milliseconds, the plan as its record),
    for every output format: one field mapping, like `decision_fields`."""
    if isinstance(item, StoreTask):
        head: dict[str, object] = {
            "task_id": item.task_id,
            "site_id": item.site_id,
            "sku": item.sku,
            "qty": item.qty,
            "kind": item.kind.value,
        }
        middle: dict[str, object] = {"reservation_id": item.reservation_id, "due_at": item.due_at}
    elif isinstance(item, ShuttleLoad):
        head = {
            "parcel_id": item.parcel_id,
            "run_id": item.run_id,
            "origin": item.origin,
            "destination": item.destination,
            "sku": item.sku,
            "qty": item.qty,
            "departs_at": item.departs_at,
            "arrives_at": item.arrives_at,
        }
        middle = {"reservation_id": item.reservation_id}
    else:
        head = {
            "order_ref": item.order_ref,
            "supplier_id": item.supplier_id,
            "deliver_to": item.deliver_to,
            "sku": item.sku,
            "qty": item.qty,
            "due_at": item.due_at,
        }
        middle = {}
    return {
        **head,
        "status": item.status.value,
        "rank": item.rank,
        **middle,
        "plan": fulfilment_to_record(item.plan),
        "updated_at": item.updated_at,
    }
