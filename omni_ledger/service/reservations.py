"""Promise and confirm: a customer's option reserved through the fold, answered with its decision.

The service never decides a reservation from a snapshot: two customers confirming the last
unit at once both send a request, and the fold accepts the first and rejects the second,
who is then offered the next best option.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.answer import Option, Promise
from ledger.confirm import confirm_events
from ledger.events import EventType, InventoryEvent, Millis
from ledger.network import appointment_sku
from omni_ledger.errors import DecisionTimeout, OptionGone
from omni_ledger.service.reads import Reads

__all__ = ["ConfirmResult", "Reservations"]


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


class Reservations(Reads):
    """Confirm (promise again, then reserve) and the events sent to the flow."""

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
