"""The state of one (site, sku) position and its public view.

A `Position` is immutable: the fold returns a new one, so the runtime may keep a
reference as a recovery snapshot while the next batch is folded. Its mappings are
plain dicts typed as read-only `Mapping`s and are never mutated after construction
(the fold copies them into a draft first).

On hand is kept as "the latest count plus every delta after it":
`on_hand = count_qty + settled + deltas.total()`. Deltas older than the
lateness horizon are summed into `settled`, since no event older than the horizon is
accepted any more: a late count can only land after them and absorbs them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from ledger._frozen import built, fast_init
from ledger._pickle import positional_reduce
from ledger.events import Millis
from ledger.fulfilment import Fulfilment
from ledger.memory import NEVER, DeltaLog, EventIds
from ledger.outputs import InboundLine, OfferTerms, PositionChange

__all__ = ["NO_TIME", "Count", "Hold", "Position", "empty", "new_change", "new_position"]

_NOTHING: dict[Any, Any] = {}
"""The one empty mapping every position without holds, plans, ... shares: the fold copies
a mapping before its first write, so nothing ever writes this one. Millions of
positions would otherwise hold five empty dicts each, 320 bytes."""
_NO_DELTAS = DeltaLog()
_NO_IDS = EventIds((), _NOTHING)


def _nothing() -> dict[Any, Any]:
    return _NOTHING


NO_TIME: Millis = -(2**62)
"""Earlier than any event: the watermark of a position that has seen nothing."""


@fast_init
@dataclass(frozen=True, slots=True)
class Count:
    """The latest cycle count (or seller offer level) by (occurred_at, event_id)."""

    __reduce__ = positional_reduce

    at: Millis
    qty: int
    event_id: str


@fast_init
@dataclass(frozen=True, slots=True)
class Hold:
    """Units held for an accepted reservation until `expires_at`."""

    __reduce__ = positional_reduce

    qty: int
    expires_at: Millis
    requested_at: Millis


@fast_init
@dataclass(frozen=True, slots=True)
class Position:
    """Everything the fold knows about one (site, sku) position."""

    __reduce__ = positional_reduce

    site_id: str
    sku: str
    safety_stock: int = 0
    on_hand: int = 0
    count: Count | None = None
    settled: int = 0
    deltas: DeltaLog = field(default_factory=lambda: _NO_DELTAS)
    """(occurred_at, qty) of on-hand deltas after the count and inside the window."""
    holds: Mapping[str, Hold] = field(default_factory=_nothing)
    staged: Mapping[str, int] = field(default_factory=_nothing)
    inbound: Mapping[str, InboundLine] = field(default_factory=_nothing)
    ended: Mapping[tuple[str, str], tuple[str, Millis]] = field(default_factory=_nothing)
    """Tombstones: ("hold"|"staged"|"inbound", ref) -> (how it ended, when), so a late
    request, pick or load for a finished story changes nothing."""
    seen: EventIds = field(default_factory=lambda: _NO_IDS)
    """Event ids inside the lateness window, for deduplication."""
    max_at: Millis = NO_TIME
    forget_at: Millis = NEVER
    """The earliest horizon past which something remembered could be forgotten."""
    offer: OfferTerms | None = None
    offer_id: str = ""
    version: int = 0
    updated_at: Millis = NO_TIME
    plans: Mapping[str, tuple[Fulfilment, bool]] = field(default_factory=_nothing)
    """ref -> (the promise's plan, whether this site is its pickup store rather than its
    source), while the ref's units are held, staged or inbound here."""
    held_total: int = -1
    """The sum over `holds`, kept by the fold so a batch reads it in O(1) however many
    holds a busy position has; -1 when not kept (a state saved before it was)."""
    staged_total: int = -1
    """The sum over `staged`; -1 when not kept."""
    expiry_floor_at: Millis = -1
    """No hold expires before this (NEVER without holds); -1 when not kept."""

    @property
    def reserved(self) -> int:
        """Units held by accepted, unexpired reservations."""
        return self.held_total if self.held_total >= 0 else sum(h.qty for h in self.holds.values())

    @property
    def staged_qty(self) -> int:
        """Units isolated for shuttles, not loaded yet."""
        return self.staged_total if self.staged_total >= 0 else sum(self.staged.values())

    @property
    def expiry_floor(self) -> Millis:
        """A time no hold expires before (the earliest expiry, or earlier)."""
        if self.expiry_floor_at >= 0:
            return self.expiry_floor_at
        return min((h.expires_at for h in self.holds.values()), default=NEVER)

    @property
    def atp(self) -> int:
        """Available to promise now: never below zero, whatever on hand says."""
        return max(0, self.on_hand - self.reserved - self.staged_qty - self.safety_stock)

    def view(self) -> PositionChange:
        """The public view of this position (what snapshots and `atp.changes` carry)."""
        # Sorted by (eta, ref) with a key in C, summed over a list: a third of a plain fold's
        # view when the position has inbound lines, as a third of positions do.
        inbound = tuple(sorted(self.inbound.values(), key=_due)) if self.inbound else ()
        reserved = self.reserved
        staged = self.staged_qty
        return new_change(
            self.site_id,
            self.sku,
            self.on_hand,
            reserved,
            staged,
            sum([line.qty for line in inbound]) if inbound else 0,
            self.safety_stock,
            max(0, self.on_hand - reserved - staged - self.safety_stock),
            self.on_hand < 0,
            self.version,
            self.updated_at,
            self.max_at,
            inbound,
            self.offer,
        )


new_position: Callable[..., Position] = built(Position)
"""`Position(...)` with every field given in order, built 3x cheaper (see `built`): the fold makes one a batch."""

new_change: Callable[..., PositionChange] = built(PositionChange)
"""`PositionChange(...)` with every field given in order (see `built`): most folds emit one."""


_due: Callable[[InboundLine], tuple[Millis, str]] = attrgetter("eta", "ref")
"""An inbound line's place in a view: (eta, ref)."""


def empty(site_id: str, sku: str, safety_stock: int = 0) -> Position:
    """A position that has seen no event."""
    return Position(site_id=site_id, sku=sku, safety_stock=safety_stock)
