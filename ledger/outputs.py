"""What the fold emits: position changes, reservation decisions (and dead letters), and a snapshot's batch of them.

These are the records the snapshot store and the output topics are built from. A
`PositionChange` carries the whole visible state of one (site, sku) position with a
per-key `version`, so a consumer that receives it twice, or out of order, keeps the
highest version and is right.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ledger._frozen import fast_init
from ledger._pickle import positional_reduce
from ledger.events import Millis
from ledger.execution import Work

__all__ = [
    "DecisionStatus",
    "FoldTally",
    "InboundLine",
    "OfferTerms",
    "PositionChange",
    "ReservationDecision",
    "SnapshotBatch",
    "decision_fields",
]


@dataclass(frozen=True, slots=True)
class InboundLine:
    """Units on their way to a site: a loaded shuttle parcel or a shipped dropship."""

    __reduce__ = positional_reduce

    ref: str
    qty: int
    eta: Millis
    promised: bool = False
    """Already promised to a customer (a confirmed transfer or dropship): not for sale."""


@dataclass(frozen=True, slots=True)
class OfferTerms:
    """A marketplace seller's current offer for one sku (the latest by `occurred_at`)."""

    __reduce__ = positional_reduce

    qty: int
    price: float | None
    lead_time_days: int | None
    updated_at: Millis


@fast_init
@dataclass(frozen=True, slots=True)
class PositionChange:
    """The visible state of one (site, sku) position after a change.

    `atp = max(0, on_hand - reserved - staged - safety_stock)`; `inbound` lists what is
    due, so availability by a date is `atp` plus the inbound lines due by then.
    """

    __reduce__ = positional_reduce

    site_id: str
    sku: str
    on_hand: int
    reserved: int
    staged: int
    inbound_qty: int
    safety_stock: int
    atp: int
    negative: bool
    version: int
    updated_at: Millis
    max_occurred_at: Millis
    inbound: tuple[InboundLine, ...] = ()
    offer: OfferTerms | None = None

    @property
    def key(self) -> str:
        """The routing key `site_id|sku`."""
        return f"{self.site_id}|{self.sku}"


class DecisionStatus(StrEnum):
    """Where a reservation stands after the decision."""

    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    RELEASED = "RELEASED"
    FULFILLED = "FULFILLED"
    EXPIRED = "EXPIRED"


@fast_init
@dataclass(frozen=True, slots=True)
class ReservationDecision:
    """A reservation's new status: the answer to a request, or the end of a hold."""

    __reduce__ = positional_reduce

    reservation_id: str
    site_id: str
    sku: str
    qty: int
    status: DecisionStatus
    reason: str
    """Why: `atp_sufficient`, `insufficient_atp`, `expired_on_arrival`, `released`, ..."""
    expires_at: Millis | None
    decided_at: Millis
    atp_before: int
    """ATP at the position when the decision was taken (before the hold)."""


@fast_init
@dataclass(frozen=True, slots=True)
class FoldTally:
    """What one fold call did with its events (each event counted once, on its own site).

    The destination leg of a move is not counted, so sums over keys count events.
    """

    __reduce__ = positional_reduce

    applied: int
    duplicates: int
    too_late: int


@dataclass(frozen=True, slots=True)
class SnapshotBatch:
    """What the fold emitted during one snapshot interval, for one snapshot writer: the seam between flow and sink.

    The flow gathers it (`flows.logic.SnapshotBatchLogic`) and the snapshot sink publishes
    it, each reading the fields: nothing is sorted by type on the way. An empty batch is a
    heartbeat: nothing to publish, but the flow is alive.
    """

    __reduce__ = positional_reduce

    changes: tuple[PositionChange, ...] = ()
    decisions: tuple[ReservationDecision, ...] = ()
    work: tuple[Work, ...] = ()
    tally: FoldTally = FoldTally(0, 0, 0)
    """The interval's events: applied, duplicates, too late."""


def decision_fields(decision: ReservationDecision) -> dict[str, object]:
    """A decision as a flat record (times in epoch milliseconds), for the output formats."""
    return {
        "reservation_id": decision.reservation_id,
        "site_id": decision.site_id,
        "sku": decision.sku,
        "qty": decision.qty,
        "status": decision.status.value,
        "reason": decision.reason,
        "expires_at": decision.expires_at,
        "decided_at": decision.decided_at,
        "atp_before": decision.atp_before,
    }
