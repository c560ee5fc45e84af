"""A deliberately naive reference ledger: keeps every accepted effect, recomputes from scratch.

It shares no code with `ledger.fold` beyond the effect types: on hand is recomputed
from the whole history at each question, holds from the list of decisions. It assumes
each reservation, transfer and shipment ref has at most one event of each kind (an
exact duplicate shares the event id), which is how the test stories are generated.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ledger.effects import Effect, EffectKind
from ledger.policy import LedgerPolicy

K = EffectKind


@dataclass
class RefView:
    on_hand: int
    reserved: int
    staged: int
    inbound: dict[str, tuple[int, int]]
    safety_stock: int

    @property
    def atp(self) -> int:
        return max(0, self.on_hand - self.reserved - self.staged - self.safety_stock)


@dataclass
class ReferenceLedger:
    policy: LedgerPolicy
    history: dict[tuple[str, str], list[tuple[int, Effect]]] = field(default_factory=lambda: defaultdict(list))
    accepted: dict[tuple[str, str], dict[str, tuple[int, int]]] = field(default_factory=lambda: defaultdict(dict))
    """key -> ref -> (qty, expires_at) for every request the model accepted."""
    last_now: dict[tuple[str, str], int] = field(default_factory=dict)
    request_decisions: list[tuple[str, str]] = field(default_factory=list)
    too_late: list[tuple[str, str]] = field(default_factory=list)

    def view(self, key: tuple[str, str], now: int | None = None) -> RefView:
        effects = [e for _, e in self.history[key]]
        now = self.last_now.get(key, -(2**62)) if now is None else now
        counts = [e for e in effects if e.kind in (K.COUNT, K.OFFER)]
        latest = max(counts, key=lambda e: (e.event.occurred_at, e.event.event_id), default=None)
        since = latest.event.occurred_at if latest else -(2**62)
        on_hand = latest.qty if latest else 0
        for e in effects:
            if e.event.occurred_at <= since:
                continue
            if e.kind is K.DELTA or e.kind is K.ARRIVE:
                on_hand += e.qty
            elif e.kind is K.FULFIL or e.kind is K.DISPATCH:
                on_hand -= e.qty
        refs = lambda kind: {e.event.ref for e in effects if e.kind is kind}  # noqa: E731
        dispatched, arrived, ended = refs(K.DISPATCH), refs(K.ARRIVE), refs(K.RELEASE) | refs(K.FULFIL)
        staged: dict[str, int] = {}
        inbound: dict[str, tuple[int, int]] = {}
        for e in effects:
            ref = e.event.ref
            if e.kind is K.STAGE and ref not in dispatched:
                staged.setdefault(ref, e.qty)
            if e.kind is K.INBOUND and ref not in arrived:
                inbound.setdefault(ref, (e.qty, e.event.eta))
        reserved = sum(q for ref, (q, exp) in self.accepted[key].items() if ref not in ended and exp > now)
        site, sku = key
        return RefView(
            on_hand, reserved, sum(staged.values()), inbound, self.policy.safety_stock.for_position(site, sku)
        )

    def feed(self, now: int, effect: Effect) -> None:
        key = (effect.site_id, effect.sku)
        history = self.history[key]
        event = effect.event
        newest = max((e.event.occurred_at for _, e in history), default=None)
        if newest is not None and event.occurred_at < newest - self.policy.lateness_window_ms:
            self.too_late.append((key[0] + "|" + key[1], event.event_id))
            return
        if any(e.event.event_id == event.event_id for _, e in history):
            return
        self.last_now[key] = now
        if effect.kind is K.HOLD:
            self._decide(key, now, effect)
        history.append((now, effect))

    def _decide(self, key: tuple[str, str], now: int, effect: Effect) -> None:
        event = effect.event
        effects = [e for _, e in self.history[key]]
        if any(e.kind is K.FULFIL and e.event.ref == event.ref for e in effects):
            status = "FULFILLED"
        elif any(e.kind is K.RELEASE and e.event.ref == event.ref for e in effects):
            status = "RELEASED"
        elif event.expires_at <= now:
            status = "REJECTED"
        elif self.view(key, now).atp >= effect.qty:
            status = "ACCEPTED"
            self.accepted[key][event.ref] = (effect.qty, event.expires_at)
        else:
            status = "REJECTED"
        self.request_decisions.append((event.ref, status))
