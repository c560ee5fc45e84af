"""A story of confirmed promises, shared by the file-replay and Kafka tests.

A transfer from a far store to the pickup store (confirmed with a plan, picked, loaded,
arrived, collected), a replenishment on the same shuttle promised to nobody, a dropship
from a supplier (shipped, received, held for the customer), and a second transfer
released before its pick. Events go through the contract (`require_event`), plans
through `fulfilment_to_record`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from ledger.contract import event_to_record, fulfilment_to_record, require_event
from ledger.events import InventoryEvent
from ledger.fulfilment import Fulfilment, FulfilmentMode, SourceKind

T0 = 1_795_161_600_000  # 2026-11-20T08:00:00Z
MIN, HOUR = 60_000, 3_600_000
FAR, NEAR, SUP = "ST-FAR", "ST-NEAR", "SUP-ACME"
PHONE, CASE = "PHONE-A", "CASE-C"
RUN = "FAR-NEAR@2026-11-20T16:00"


def transfer_plan(ref: str) -> Fulfilment:
    return Fulfilment(
        mode=FulfilmentMode.TRANSFER_TO_STORE,
        source_kind=SourceKind.STORE,
        order_id=f"O-{ref}",
        deliver_to=NEAR,
        ready_at=T0 + 12 * HOUR,
        hold_until=T0 + 72 * HOUR,
        zone="E-COM",
        parcel_id=f"P-{ref}",
        run_id=RUN,
        departs_at=T0 + 8 * HOUR,
        arrives_at=T0 + 10 * HOUR,
        appointment_at=T0 + 12 * HOUR,
        customer="Martin",
        source_site=FAR,
    )


R1, R2 = transfer_plan("R1"), transfer_plan("R2")
R3 = Fulfilment(
    mode=FulfilmentMode.DROPSHIP_TO_STORE,
    source_kind=SourceKind.SUPPLIER,
    order_id="O-R3",
    deliver_to=NEAR,
    ready_at=T0 + 24 * HOUR,
    hold_until=T0 + 96 * HOUR,
    arrives_at=T0 + 24 * HOUR,
    customer="Dupont",
    source_site=SUP,
)


def event(n: int, type_: str, site: str, sku: str, at: int, qty: int = 1, **extra: object) -> InventoryEvent:
    plan = extra.pop("plan", None)
    if isinstance(plan, Fulfilment):
        extra["fulfilment"] = fulfilment_to_record(plan)
    record = {"event_id": f"ev-{n}", "type": type_, "occurred_at": T0 + at, "site_id": site, "sku": sku, "qty": qty}
    return require_event({**record, **extra})


PART_1 = [
    event(1, "RECEIVED", FAR, PHONE, 0, qty=3),
    event(2, "COUNTED", SUP, CASE, 0, qty=50),
    event(3, "RESERVATION_REQUESTED", FAR, PHONE, 10 * MIN, ref="R1", expires_at=T0 + 8 * HOUR, plan=R1),
    event(4, "RESERVATION_REQUESTED", FAR, PHONE, 20 * MIN, ref="R2", expires_at=T0 + 8 * HOUR, plan=R2),
    event(5, "RESERVATION_REQUESTED", SUP, CASE, 30 * MIN, ref="R3", expires_at=T0 + 30 * HOUR, plan=R3),
    event(6, "RESERVATION_RELEASED", FAR, PHONE, 40 * MIN, ref="R2"),
    event(7, "TRANSFER_PICKED", FAR, PHONE, HOUR, ref="R1", to_site_id=NEAR),
    event(8, "SHUTTLE_LOADED", FAR, PHONE, 8 * HOUR, ref="R1", to_site_id=NEAR, eta=T0 + 10 * HOUR, plan=R1),
    # A replenishment on the same shuttle, promised to nobody: for sale on arrival.
    event(9, "SHUTTLE_LOADED", FAR, PHONE, 8 * HOUR, ref="T9", to_site_id=NEAR, eta=T0 + 10 * HOUR),
    event(10, "DROPSHIP_SHIPPED", SUP, CASE, 8 * HOUR, ref="R3", to_site_id=NEAR, eta=T0 + 24 * HOUR, plan=R3),
]
"""Up to the parcel and the dropship on their way."""
PART_2 = [
    event(11, "SHUTTLE_ARRIVED", NEAR, PHONE, 10 * HOUR, ref="R1"),
    event(12, "SHUTTLE_ARRIVED", NEAR, PHONE, 10 * HOUR, ref="T9"),
    event(13, "RESERVATION_FULFILLED", NEAR, PHONE, 12 * HOUR, ref="R1"),
    event(14, "DROPSHIP_RECEIVED", NEAR, CASE, 20 * HOUR, ref="R3"),
]
"""Arrivals, the transfer collected, the dropship received."""

FINAL_STATUSES = {
    "R1/PICK_FOR_SHUTTLE": "DONE",
    "R1/PREPARE_PICKUP": "DONE",
    "R2/PICK_FOR_SHUTTLE": "CANCELLED",
    "R3/PREPARE_PICKUP": "OPEN",
    "P-R1": "ARRIVED",
    "P-R2": "CANCELLED",
    "R3": "RECEIVED",
}
"""The latest status of each piece of work (task_id, parcel_id, order_ref) at the end."""


def json_lines(events: Iterable[InventoryEvent]) -> bytes:
    return b"".join(json.dumps(event_to_record(e)).encode() + b"\n" for e in events)
