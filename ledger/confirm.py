"""Confirm: the events that make a chosen option real, and the ones that open slots.

Pure and deterministic: the same option and reservation id give the same events with
the same ids, so a retried confirm is a duplicate the ledger ignores. The ledger then
decides the reservation like any other; nothing here assumes it is accepted.
"""

from __future__ import annotations

from ledger.answer import Option
from ledger.events import EventType, InventoryEvent, Millis
from ledger.fulfilment import HOME, Fulfilment, FulfilmentMode, SourceKind
from ledger.network import Network, appointment_sku

__all__ = ["HOLD_DAYS", "SOURCE", "confirm_events", "open_slots_events"]

HOLD_DAYS = 3
"""Days the unit is held for the customer once it is ready (or after the appointment)."""
SOURCE = "OMS"
"""The `source` of every event built here: the order management system."""


def confirm_events(
    option: Option,
    *,
    reservation_id: str,
    order_id: str,
    customer: str | None,
    now: Millis,
    network: Network,
    hold_days: int = HOLD_DAYS,
    appointment: bool = True,
) -> tuple[InventoryEvent, ...]:
    """The reservation request at the source carrying the plan, then the appointment's, if any.

    The hold at the pickup store lasts `hold_days` from when the unit is ready, or from
    the appointment when that is later. `appointment=False` keeps `appointment_at` in
    the plan but books no slot: for the other legs of a together plan, whose slot one
    leg books. Raises `ValueError` when the option can no longer be kept at `now`
    (a transfer's pick cut-off passed): promise again.
    """
    if not reservation_id.strip() or "|" in reservation_id:
        msg = f"reservation_id must be non-empty and without '|', got {reservation_id!r}"
        raise ValueError(msg)
    if hold_days < 1:
        msg = f"hold_days must be >= 1, got {hold_days}"
        raise ValueError(msg)
    transfer = option.mode is FulfilmentMode.TRANSFER_TO_STORE
    if transfer and (option.pick_by is None or option.departs_at is None or option.run_id is None):
        msg = f"transfer option {option.option_id} has no run; it was not built by ledger.promise"
        raise ValueError(msg)
    if option.pick_by is not None and now > option.pick_by:
        msg = f"option {option.option_id}: the pick cut-off of run {option.run_id} has passed; promise again"
        raise ValueError(msg)
    hold_site = option.deliver_to if option.deliver_to != HOME else option.source_id
    hold_from = max(option.available_at, option.appointment_at or option.available_at)
    hold_until = network.add_days(hold_site, hold_from, hold_days)
    # A transfer's hold at the source ends when the shuttle leaves: unpicked by then, it missed the run.
    expires_at = option.departs_at if transfer and option.departs_at is not None else hold_until
    if expires_at <= now:
        msg = f"option {option.option_id} ends at {expires_at} ms, not after now ({now} ms); promise again"
        raise ValueError(msg)
    source = network.site(option.source_id)
    ours = source.kind in (SourceKind.STORE, SourceKind.DC)
    plan = Fulfilment(
        mode=option.mode,
        source_kind=option.source_kind,
        order_id=order_id,
        deliver_to=option.deliver_to,
        ready_at=option.available_at,
        hold_until=hold_until,
        # Our own sites isolate the unit in their pick zone; a supplier or seller ships it.
        zone=source.pick_zone if ours else None,
        parcel_id=f"P-{reservation_id}",
        run_id=option.run_id,
        departs_at=option.departs_at,
        arrives_at=option.arrives_at,
        appointment_at=option.appointment_at,
        customer=customer,
        source_site=option.source_id,
    )
    events = [
        InventoryEvent(
            event_id=f"{SOURCE}:{reservation_id}:request",
            type=EventType.RESERVATION_REQUESTED,
            occurred_at=now,
            site_id=option.source_id,
            sku=option.sku,
            qty=option.qty,
            ref=reservation_id,
            expires_at=expires_at,
            source=SOURCE,
            fulfilment=plan,
        )
    ]
    if appointment and option.appointment_at is not None:
        slot = option.appointment_at
        # No plan on the slot's hold: it is capacity, not a unit for a clerk to move.
        events.append(
            InventoryEvent(
                event_id=f"{SOURCE}:{reservation_id}:appointment",
                type=EventType.RESERVATION_REQUESTED,
                occurred_at=now,
                site_id=option.deliver_to,
                sku=appointment_sku(slot),
                qty=1,
                ref=f"{reservation_id}/appt",
                expires_at=network.slot_end(option.deliver_to, slot),
                source=SOURCE,
            )
        )
    return tuple(events)


def open_slots_events(network: Network, start: Millis, end: Millis, now: Millis) -> tuple[InventoryEvent, ...]:
    """`COUNTED` events opening every store's appointment slots starting in [start, end).

    The count sets the slot's level to its capacity; the event id names the store, the
    slot and the capacity, so publishing the same range twice changes nothing, and a
    new capacity is a new count.
    """
    events: list[InventoryEvent] = []
    for site in network.sites:
        if site.appointments is None:
            continue
        capacity = site.appointments.capacity
        for slot in network.slots(site.id, start, end):
            sku = appointment_sku(slot)
            events.append(
                InventoryEvent(
                    event_id=f"{SOURCE}:open:{site.id}:{sku}:{capacity}",
                    type=EventType.COUNTED,
                    occurred_at=now,
                    site_id=site.id,
                    sku=sku,
                    qty=capacity,
                    source=SOURCE,
                )
            )
    return tuple(events)
