"""The fulfilment plan a confirmed promise attaches to its reservation.

A customer confirms an option ("B from the store 40 km away, on tomorrow morning's
shuttle, for an appointment at 18:00"); the reservation request then carries this
plan. The fold decides the request like any other; only when it accepts does it emit
the work that makes the promise real (a store task, a shuttle load, a dropship order),
and the plan travels on with the parcel (`SHUTTLE_LOADED`, `DROPSHIP_SHIPPED`) so the
unit is held for the customer when it arrives at `deliver_to`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from ledger._pickle import positional_reduce

if TYPE_CHECKING:  # events.py imports this module
    from ledger.events import Millis

__all__ = ["HOME", "Fulfilment", "FulfilmentMode", "SourceKind"]

HOME = "HOME"
"""`deliver_to` of a home delivery: the unit goes to the customer, not to a store."""


class FulfilmentMode(StrEnum):
    """How the customer gets the unit."""

    RESERVE_IN_STORE = "RESERVE_IN_STORE"
    TRANSFER_TO_STORE = "TRANSFER_TO_STORE"
    DROPSHIP_TO_STORE = "DROPSHIP_TO_STORE"
    HOME_DELIVERY = "HOME_DELIVERY"


class SourceKind(StrEnum):
    """What kind of site the unit comes from."""

    DC = "DC"
    STORE = "STORE"
    SUPPLIER = "SUPPLIER"
    SELLER = "SELLER"


@dataclass(frozen=True, slots=True)
class Fulfilment:
    """What to do once the reservation at the source site is accepted."""

    __reduce__ = positional_reduce

    mode: FulfilmentMode
    source_kind: SourceKind
    order_id: str
    deliver_to: str
    """The store where the customer collects it, or `HOME`."""
    ready_at: Millis
    """When the customer can have it (the promised date)."""
    hold_until: Millis
    """End of the hold for the customer at `deliver_to` once the unit is there."""
    zone: str | None = None
    """Stock-room zone where the clerk isolates the unit."""
    parcel_id: str | None = None
    """The label on the parcel (transfers)."""
    run_id: str | None = None
    """The shuttle run that carries the parcel (transfers)."""
    departs_at: Millis | None = None
    arrives_at: Millis | None = None
    """When the parcel or delivery reaches `deliver_to`."""
    appointment_at: Millis | None = None
    """Start of the customer's appointment slot at `deliver_to`, if booked."""
    customer: str | None = None
    """A name for the parcel label and the clerk's task."""
    source_site: str | None = None
    """Where the units come from (the site the reservation holds them at)."""
