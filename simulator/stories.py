"""The stories the simulated retailer tells, each as the events it emits and what it does to the beliefs.

A new story (a sale, a reservation, a transfer, a count, a dropship...) emits its first
event at once; a story that takes time schedules its next step (`Step`) on the pending
heap, and `Stories._continue` emits it once the caller's clock has passed its due time.
Each story keeps the beliefs of the positions it touches (on hand, held or staged,
inbound) close to what the ledger will compute, so the next story follows the stock.
`RetailerSimulator` (simulator/retailer.py) builds the beliefs and draws the stories.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappush

from ledger.events import EventType, InventoryEvent, Millis
from simulator.config import DAY, HOUR, MINUTE, SimConfig
from simulator.state import Step

__all__ = ["DCS", "DC_CASE", "HOT_DRAW", "STORES", "SUPPLIERS", "Stories"]

# Customer demand: the first fifth of the catalogue takes 60 % of it.
HOT_DRAW = 0.6
_OVERSELL_RATE = 0.02  # share of empty-shelf sales the POS books anyway (phantom stock)
_MAX_PHANTOM = 3  # units a shelf's books may fall below zero by oversells before someone counts it
_SALE_RETRIES = 3  # a customer facing an empty shelf tries other skus first

# Replenishment: shelves are reordered by reviewing each round of positions in turn.
_REVIEW_SPAN = 8  # positions one drawn replenishment looks at
STORES, DCS, SUPPLIERS = range(3)  # the review rounds: index into walks and targets
_LATERAL_RATE = 0.1  # share of transfers sourced from another store's surplus
_MIN_TRANSFER = 4
DC_CASE = 12  # DC receipts come in whole cases
_SUPPLIER_LOT = 50  # and supplier receipts in production lots
_SAME_DAY_MS = 4 * HOUR  # a dropship route with lead_days = 0

# The sources the contract allows, by the system that would really report each event.
_POS, _WMS, _TMS, _ERP, _SUPPLIER, _MARKETPLACE, _OMS = "POS", "WMS", "TMS", "ERP", "SUPPLIER", "MARKETPLACE", "OMS"

# Pending step kinds (ints: they sit in heap tuples).
_LOAD, _ARRIVE, _FULFIL, _RELEASE, _EXPIRE, _DS_RECEIVE = range(6)


def _reorder(target: int, position: int) -> int:
    """Units to order up to `target`, or 0 while `position` holds 2/3 of it.

    Counting what is on its way in `position` bounds the open orders per position to three.
    """
    short = target - position
    return short if short >= max(_MIN_TRANSFER, target // 3) else 0


class Stories:
    """The stories of `RetailerSimulator`, over the beliefs it builds (declared here, set by its constructor).

    The beliefs are three flat lists indexed by position, `site * skus + sku`; sites are
    indexed DCs, stores, suppliers, then sellers (who hold no positions).
    """

    _config: SimConfig
    _d: int
    """DCs, then `_s` stores, `_p` suppliers, `_sellers` sellers and `_k` skus."""
    _s: int
    _p: int
    _sellers: int
    _k: int
    _seed: int
    _id_prefix: str
    _jitter: int
    _hold_budget: int
    _dropship_budget: int
    _hot: int
    _site_ids: tuple[str, ...]
    _sku_ids: tuple[str, ...]
    _rounds: tuple[tuple[int, int], ...]
    _base_price: tuple[float, ...]
    _rnd: Callable[[], float]
    _counter: int
    _opening: int
    _walks: list[int]
    _open_holds: int
    _open_dropships: int
    _on_hand: list[int]
    _unavailable: list[int]
    _inbound: list[int]
    _pending: list[Step]
    _targets: list[tuple[int, ...]]
    _dc_sources: tuple[tuple[int, ...], ...] | None
    _store_sources: tuple[tuple[int, ...], ...] | None
    _transit: dict[tuple[int, int], int] | None
    _routes: tuple[tuple[int, tuple[int, ...] | None], ...]
    _routes_into: dict[int, list[tuple[int, int, frozenset[int] | None]]]

    # -- beliefs -------------------------------------------------------------------------------------------------

    def _shortfall(self, store: int, sku: int) -> int:
        """Units a shelf should be reordered (counting what is on its way), or 0 if none."""
        pos = store * self._k + sku
        return _reorder(self._targets[STORES][sku], self._on_hand[pos] - self._unavailable[pos] + self._inbound[pos])

    def _walk(self, round_: int) -> tuple[int, int]:
        """Review the next positions of a round: the first one short and by how much, else (-1, 0).

        Rounds visit every position in turn, as store staff and planners do, so slow
        movers are reordered before they run out; each review looks at a few positions.
        """
        first, size = self._rounds[round_]
        targets = self._targets[round_]
        on_hand, unavailable, inbound, k = self._on_hand, self._unavailable, self._inbound, self._k
        cursor = self._walks[round_]
        for _ in range(_REVIEW_SPAN):
            pos = first + cursor
            cursor = cursor + 1 if cursor + 1 < size else 0
            qty = _reorder(targets[pos % k], on_hand[pos] - unavailable[pos] + inbound[pos])
            if qty:
                self._walks[round_] = cursor
                return pos, qty
        self._walks[round_] = cursor
        return -1, 0

    # -- emitting ------------------------------------------------------------------------------------------------

    def _event(
        self,
        type_: EventType,
        at: Millis,
        site: int,
        sku: int,
        qty: int,
        source: str,
        ref: str | None = None,
        dest: int = -1,
        eta: Millis | None = None,
        expires_at: Millis | None = None,
        price: float | None = None,
        lead_time_days: int | None = None,
    ) -> InventoryEvent:
        self._counter += 1
        return InventoryEvent(
            event_id=f"{self._id_prefix}{self._counter}",
            type=type_,
            occurred_at=at,
            site_id=self._site_ids[site],
            sku=self._sku_ids[sku],
            qty=qty,
            ref=ref,
            to_site_id=self._site_ids[dest] if dest >= 0 else None,
            eta=eta,
            expires_at=expires_at,
            price=price,
            lead_time_days=lead_time_days,
            source=source,
            origin="sim",
        )

    def _at(self, now: Millis) -> Millis:
        """When a new event occurred: a live feed reports it a little after the fact."""
        return now - int(self._rnd() * self._jitter)

    def _ref(self, prefix: str) -> tuple[int, str]:
        """The number of the event about to be emitted, and a story id derived from it."""
        seq = self._counter + 1
        return seq, f"{prefix}-{self._seed}-{seq}"

    def _between(self, low: int, high: int) -> int:
        """A uniform int in [low, high); cheaper than `randrange` on the hot path."""
        return low + int(self._rnd() * (high - low))

    def _popular_sku(self) -> int:
        """A sku as customers choose them, the hot fifth of the catalogue most often."""
        r = self._rnd()
        if r < HOT_DRAW:
            return int(r / HOT_DRAW * self._hot)  # r is uniform below HOT_DRAW: reuse it
        return int(self._rnd() * self._k)

    def _store(self) -> int:
        return self._d + int(self._rnd() * self._s)

    def _free(self, site: int, sku: int) -> int:
        pos = site * self._k + sku
        return self._on_hand[pos] - self._unavailable[pos]

    # -- opening stock -------------------------------------------------------------------------------------------

    def _open(self, now: Millis) -> InventoryEvent:
        """The next position's opening balance, walking DCs, stores, then suppliers."""
        pos = self._opening
        self._opening += 1
        site, sku = divmod(pos, self._k)
        if site < self._d:
            target = self._targets[DCS][sku]
            qty = target + self._between(0, target // 4 + 1)
        elif site < self._d + self._s:
            target = self._targets[STORES][sku]
            qty = target + self._between(0, target // 4 + 1)
        else:
            target = self._targets[SUPPLIERS][sku]
            qty = target + self._between(0, target + 1)
        self._on_hand[pos] += qty
        # Opening balances come from the ERP's books, not from a dock.
        return self._event(EventType.RECEIVED, self._at(now), site, sku, qty, _ERP)

    # -- new stories ---------------------------------------------------------------------------------------------

    def _sale(self, now: Millis) -> InventoryEvent:
        # The hot path (most events): names are bound locally for speed.
        rnd, k, on_hand, unavailable = self._rnd, self._k, self._on_hand, self._unavailable
        store = self._d + int(rnd() * self._s)
        r = rnd()
        qty = 1 if r < 0.8 else 2 if r < 0.95 else 3
        for _ in range(_SALE_RETRIES):
            sku = self._popular_sku()
            pos = store * k + sku
            free = on_hand[pos] - unavailable[pos]
            if free >= qty:
                break
            if free > 0:
                qty = free  # the customer takes what is left
                break
            if self._shortfall(store, sku):
                # An empty shelf nobody has reordered: staff reorder it, the customer leaves.
                return self._transfer(now, store, sku)
        else:
            if rnd() >= _OVERSELL_RATE or on_hand[pos] - unavailable[pos] - qty < -_MAX_PHANTOM:
                # Empty shelves with stock on its way: staff count the last one.
                return self._count_at(now, store, sku)
            # A rare oversell: the POS sells a unit the books say is not there.
        on_hand[pos] -= qty
        return self._event(EventType.SOLD, now - int(rnd() * self._jitter), store, sku, qty, _POS)

    def _reservation(self, now: Millis) -> InventoryEvent:
        if self._open_holds >= self._hold_budget:
            return self._sale(now)  # no room for another open story: the customer buys in store
        store = self._store()
        sku = self._popular_sku()
        qty = 1 if self._rnd() < 0.85 else 2
        at = self._at(now)
        expires_at = at + self._between(3 * HOUR, DAY)
        seq, ref = self._ref("RS")
        # Without free units the ledger will likely refuse it: no hold, nothing follows.
        if self._free(store, sku) >= qty:
            self._unavailable[store * self._k + sku] += qty
            self._open_holds += 1
            r = self._rnd()
            if r < 0.75:
                # Collected within four hours, before the hold lapses (it lasts >= 3 h).
                kind, due = _FULFIL, at + self._between(15 * MINUTE, min(4 * HOUR, expires_at - at - 5 * MINUTE))
            elif r < 0.9:
                kind, due = _RELEASE, at + self._between(5 * MINUTE, expires_at - at)
            else:
                kind, due = _EXPIRE, expires_at
            heappush(self._pending, (due, seq, kind, ref, store, sku, qty, store, expires_at))
        return self._event(EventType.RESERVATION_REQUESTED, at, store, sku, qty, _OMS, ref=ref, expires_at=expires_at)

    def _transfer(self, now: Millis, dest: int = -1, sku: int = -1) -> InventoryEvent:
        """Pick units for a store's shelf: from a DC, or now and then from another store's surplus.

        Drawn from the mix, it reviews the next shelves of the round; asked for a shelf
        (by a sale facing it empty), it reorders that one. On a network file only the
        origins of lanes to the shelf's store qualify; a store no lane reaches is restocked
        by a direct delivery.
        """
        if dest < 0:
            pos, qty = self._walk(STORES)
            if not qty:
                return self._sale(now)  # every shelf reviewed is fine: a customer comes instead
            dest, sku = divmod(pos, self._k)
        else:
            qty = self._shortfall(dest, sku)
            if not qty:
                return self._count_at(now, dest, sku)  # stock is on its way: staff count the shelf
        target = self._targets[STORES][sku]
        origin = -1
        other = self._lateral(dest)
        if other >= 0 and self._free(other, sku) - target >= qty:
            origin = other
        if origin < 0:
            dcs = range(self._d) if self._dc_sources is None else self._dc_sources[dest - self._d]
            if not dcs:
                return self._store_receipt(now, dest, sku, qty)
            origin = max(dcs, key=lambda dc: self._free(dc, sku))
            qty = min(qty, self._free(origin, sku))
            if qty <= 0:
                # The DC is out too: what the stream shows next is its purchase order landing.
                return self._dc_receipt(now, origin, sku)
        self._unavailable[origin * self._k + sku] += qty
        # Counted as on its way from the pick, so the shelf is not reordered meanwhile.
        self._inbound[dest * self._k + sku] += qty
        at = self._at(now)
        seq, ref = self._ref("TR")
        due = at + self._between(20 * MINUTE, 3 * HOUR)
        heappush(self._pending, (due, seq, _LOAD, ref, origin, sku, qty, dest, 0))
        return self._event(EventType.TRANSFER_PICKED, at, origin, sku, qty, _WMS, ref=ref, dest=dest)

    def _lateral(self, dest: int) -> int:
        """Now and then (`_LATERAL_RATE`), another store that could send to `dest`; else -1."""
        if self._store_sources is None:
            if self._s > 1 and self._rnd() < _LATERAL_RATE:
                other = self._d + int(self._rnd() * (self._s - 1))
                return other + (other >= dest)  # any store but the destination
            return -1
        stores = self._store_sources[dest - self._d]
        if stores and self._rnd() < _LATERAL_RATE:
            return stores[int(self._rnd() * len(stores))]
        return -1

    def _store_receipt(self, now: Millis, store: int, sku: int, short: int) -> InventoryEvent:
        """A delivery straight to a store no shuttle lane reaches, in whole cases."""
        qty = -(-short // DC_CASE) * DC_CASE
        self._on_hand[store * self._k + sku] += qty
        _, ref = self._ref("PO")
        return self._event(EventType.RECEIVED, self._at(now), store, sku, qty, _WMS, ref=ref)

    def _return(self, now: Millis) -> InventoryEvent:
        store = self._store()
        sku = self._popular_sku()
        qty = 1 if self._rnd() < 0.9 else 2
        self._on_hand[store * self._k + sku] += qty
        return self._event(EventType.RETURNED, self._at(now), store, sku, qty, _POS)

    def _adjustment(self, now: Millis) -> InventoryEvent:
        site = self._store() if self._rnd() < 0.8 else int(self._rnd() * self._d)
        sku = int(self._rnd() * self._k)
        pos = site * self._k + sku
        # Mostly shrink (damage, theft), never below zero; a found unit now and then.
        qty = -self._between(1, 4) if self._rnd() < 0.7 and self._on_hand[pos] >= 3 else self._between(1, 3)
        self._on_hand[pos] += qty
        return self._event(EventType.ADJUSTED, self._at(now), site, sku, qty, _WMS)

    def _count(self, now: Millis) -> InventoryEvent:
        site = self._store() if self._rnd() < 0.85 else int(self._rnd() * self._d)
        return self._count_at(now, site, int(self._rnd() * self._k))

    def _count_at(self, now: Millis, site: int, sku: int) -> InventoryEvent:
        pos = site * self._k + sku
        # Most counts confirm the books; the rest find a unit or two of drift.
        drift = 0 if self._rnd() < 0.7 else (-2, -1, 1, 2)[int(self._rnd() * 4)]
        found = self._on_hand[pos] + drift
        # Units held for a customer or staged for a shuttle sit isolated: a count never misses them.
        qty = max(0, found if found >= self._unavailable[pos] else self._on_hand[pos])
        self._on_hand[pos] = qty  # the count is the truth from now on
        return self._event(EventType.COUNTED, self._at(now), site, sku, qty, _WMS)

    def _dc_receipt(self, now: Millis, dc: int = -1, sku: int = -1) -> InventoryEvent:
        """A purchase order lands at a DC in whole cases: the next short position of the round, or the one asked."""
        return self._receipt(now, DCS, dc, sku)

    def _supplier_receipt(self, now: Millis, supplier: int = -1, sku: int = -1) -> InventoryEvent:
        """A supplier's production lands in lots: the next short position of the round, or the one asked for."""
        return self._receipt(now, SUPPLIERS, supplier, sku)

    def _receipt(self, now: Millis, round_: int, site: int, sku: int) -> InventoryEvent:
        if site < 0:
            pos, short = self._walk(round_)
            if not short:
                return self._sale(now)  # every position reviewed is fine: a customer comes instead
            site, sku = divmod(pos, self._k)
        else:
            short = max(1, self._targets[round_][sku] - self._free(site, sku))  # nothing is inbound to them
        unit = DC_CASE if round_ == DCS else _SUPPLIER_LOT
        qty = -(-short // unit) * unit
        self._on_hand[site * self._k + sku] += qty
        if round_ != DCS:
            return self._event(EventType.RECEIVED, self._at(now), site, sku, qty, _SUPPLIER)
        _, ref = self._ref("PO")
        return self._event(EventType.RECEIVED, self._at(now), site, sku, qty, _WMS, ref=ref)

    def _dropship(self, now: Millis) -> InventoryEvent:
        """A supplier ships a customer's order to a store, for pickup there."""
        if self._open_dropships >= self._dropship_budget:
            return self._sale(now)  # no room for another open story: the customer buys in store
        store = self._store()
        sku = self._popular_sku()
        # The OMS routes the order to the supplier with the most stock of the sku.
        first = self._d + self._s
        supplier = max(range(first, first + self._p), key=lambda site: self._free(site, sku))
        return self._ship(now, supplier, store, sku, None)

    def _routed_dropship(self, now: Millis) -> InventoryEvent:
        """A dropship on a network file's supplier route, for a sku the route accepts."""
        if self._open_dropships >= self._dropship_budget:
            return self._sale(now)  # no room for another open story: the customer buys in store
        store, accepted = self._routes[int(self._rnd() * len(self._routes))]
        sku = self._popular_sku() if accepted is None else accepted[int(self._rnd() * len(accepted))]
        # The OMS routes the order to the supplier with the most stock among those shipping the sku there.
        supplier, lead_days = max(
            ((supplier, lead) for supplier, lead, skus in self._routes_into[store] if skus is None or sku in skus),
            key=lambda route: self._free(route[0], sku),
        )
        return self._ship(now, supplier, store, sku, lead_days)

    def _ship(self, now: Millis, supplier: int, store: int, sku: int, lead_days: int | None) -> InventoryEvent:
        """The supplier ships the order: in 1-3 days on the generated network, else in its route's `lead_days`."""
        qty = self._between(1, 5)
        if self._free(supplier, sku) < qty:
            return self._supplier_receipt(now, supplier, sku)
        # Not counted in the shelf's inbound: a customer's parcel does not refill the shelf.
        self._on_hand[supplier * self._k + sku] -= qty
        at = self._at(now)
        if lead_days is None:
            eta = at + self._between(DAY, 3 * DAY)
        else:
            eta = at + _SAME_DAY_MS
            if lead_days and self._config.network is not None:
                # Lead days count on the store's wall clock, as the promise counts them.
                eta = self._config.network.add_days(self._site_ids[store], at, lead_days)
        seq, ref = self._ref("DS")
        due = max(eta + self._between(-2 * HOUR, 6 * HOUR), at + HOUR)
        heappush(self._pending, (due, seq, _DS_RECEIVE, ref, supplier, sku, qty, store, 0))
        self._open_dropships += 1
        return self._event(EventType.DROPSHIP_SHIPPED, at, supplier, sku, qty, _SUPPLIER, ref=ref, dest=store, eta=eta)

    def _offer(self, now: Millis) -> InventoryEvent:
        seller = self._d + self._s + self._p + int(self._rnd() * self._sellers)
        sku = int(self._rnd() * self._k)
        qty = 0 if self._rnd() < 0.1 else self._between(1, 41)  # 0: the seller sold out
        price = round(self._base_price[sku] * (0.85 + 0.3 * self._rnd()), 2)
        lead_time_days = self._between(1, 15)
        return self._event(
            EventType.OFFER_UPDATED,
            self._at(now),
            seller,
            sku,
            qty,
            _MARKETPLACE,
            price=price,
            lead_time_days=lead_time_days,
        )

    # -- continuations -------------------------------------------------------------------------------------------

    def _continue(self, step: Step, now: Millis) -> InventoryEvent | None:
        """Emit a due step (None for a silent one, such as a hold that lapsed)."""
        due, _, kind, ref, origin, sku, qty, dest, deadline = step
        k = self._k
        if kind == _EXPIRE:
            self._unavailable[origin * k + sku] -= qty
            self._open_holds -= 1
            return None
        # Reported when the feed sees it, but never before it was due.
        at = max(due, self._at(now))
        if kind == _LOAD:
            self._on_hand[origin * k + sku] -= qty
            self._unavailable[origin * k + sku] -= qty
            if self._transit is None:
                eta = at + self._between(2 * HOUR, 10 * HOUR)
                # Shuttles run early or late against their eta, but drive at least an hour.
                arrival = max(eta + self._between(-30 * MINUTE, 90 * MINUTE), at + HOUR)
            else:
                # The lane's transit; early or late against it, but never in less than half of it.
                transit = max(self._transit[origin, dest], MINUTE)
                eta = at + transit
                arrival = max(eta + self._between(-30 * MINUTE, 90 * MINUTE), at + max(transit // 2, MINUTE))
            heappush(self._pending, (arrival, self._counter + 1, _ARRIVE, ref, origin, sku, qty, dest, 0))
            return self._event(EventType.SHUTTLE_LOADED, at, origin, sku, qty, _TMS, ref=ref, dest=dest, eta=eta)
        if kind == _ARRIVE:
            self._inbound[dest * k + sku] -= qty
            self._on_hand[dest * k + sku] += qty
            return self._event(EventType.SHUTTLE_ARRIVED, at, dest, sku, qty, _WMS, ref=ref)
        if kind == _DS_RECEIVE:
            self._open_dropships -= 1
            self._on_hand[dest * k + sku] += qty
            return self._event(EventType.DROPSHIP_RECEIVED, at, dest, sku, qty, _WMS, ref=ref)
        # _FULFIL or _RELEASE of a held reservation.
        self._unavailable[origin * k + sku] -= qty
        self._open_holds -= 1
        if at >= deadline:
            # Reported too late: the hold has lapsed in the ledger already; nothing to say.
            return None
        if kind == _FULFIL:
            self._on_hand[origin * k + sku] -= qty
            return self._event(EventType.RESERVATION_FULFILLED, at, origin, sku, qty, _OMS, ref=ref)
        return self._event(EventType.RESERVATION_RELEASED, at, origin, sku, qty, _OMS, ref=ref)
