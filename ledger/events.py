"""The `InventoryEvent` record: the one input the ledger folds.

Times are integers, milliseconds since the Unix epoch (UTC): the fold compares and
subtracts them millions of times a second, and the contract's `timestamp-millis` is
exactly that. Conversion to and from `datetime` happens at the edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ledger._frozen import fast_init
from ledger.fulfilment import Fulfilment

__all__ = ["EventType", "InventoryEvent", "Millis"]

Millis = int
"""Milliseconds since 1970-01-01T00:00:00Z."""


class EventType(StrEnum):
    """What happened; each type's effect on positions is documented in the README."""

    RECEIVED = "RECEIVED"
    RETURNED = "RETURNED"
    ADJUSTED = "ADJUSTED"
    SOLD = "SOLD"
    COUNTED = "COUNTED"
    RESERVATION_REQUESTED = "RESERVATION_REQUESTED"
    RESERVATION_RELEASED = "RESERVATION_RELEASED"
    RESERVATION_FULFILLED = "RESERVATION_FULFILLED"
    TRANSFER_PICKED = "TRANSFER_PICKED"
    SHUTTLE_LOADED = "SHUTTLE_LOADED"
    SHUTTLE_ARRIVED = "SHUTTLE_ARRIVED"
    DROPSHIP_SHIPPED = "DROPSHIP_SHIPPED"
    DROPSHIP_RECEIVED = "DROPSHIP_RECEIVED"
    OFFER_UPDATED = "OFFER_UPDATED"


@fast_init
@dataclass(frozen=True, slots=True)
class InventoryEvent:
    """One validated event, as the contract `omniledger.v1.InventoryEvent` defines it."""

    event_id: str
    type: EventType
    occurred_at: Millis
    site_id: str
    sku: str
    qty: int
    ref: str | None = None
    to_site_id: str | None = None
    eta: Millis | None = None
    expires_at: Millis | None = None
    price: float | None = None
    lead_time_days: int | None = None
    source: str | None = None
    fulfilment: Fulfilment | None = None
    """The plan of a confirmed promise, on its reservation request and on the parcel's move."""
    origin: str = ""
    """Where the event was read (`file.jsonl:12`, `topic[3]@1042`); not part of the contract."""
