"""Step 1 of a publish: coalesce what the fold emitted to one row per key, by the rules the MERGE applies.

Within one batch the same rules hold as against the stored rows (publish step 7), so a
batch that carries a key twice writes what two publishes in a row would have left.
`Coalesced` applies the same rules as outputs arrive, so the snapshot sink can merge the
intervals that pile up while a publish runs into one job whose size is bounded by the
distinct keys it touches, not by the events behind them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from adapters.snapshot_store.tables import SellerOffer
from ledger.execution import DropshipOrder, ShuttleLoad, StoreTask, Work
from ledger.outputs import DecisionStatus, OfferTerms, PositionChange, ReservationDecision

__all__ = ["TERMINAL", "Coalesced", "highest_ranks", "latest_offers", "latest_versions", "winning_decisions"]

TERMINAL = tuple(
    s.value
    for s in (
        DecisionStatus.REJECTED,
        DecisionStatus.RELEASED,
        DecisionStatus.FULFILLED,
        DecisionStatus.EXPIRED,
    )
)
"""The decision statuses a reservation never leaves (but a newer terminal one may replace)."""


def latest_versions(changes: Iterable[PositionChange]) -> list[PositionChange]:
    best: dict[tuple[str, str], PositionChange] = {}
    for change in changes:
        key = (change.site_id, change.sku)
        kept = best.get(key)
        if kept is None or change.version >= kept.version:
            best[key] = change
    return list(best.values())


def latest_offers(changes: Iterable[PositionChange]) -> list[SellerOffer]:
    # Every change carrying an offer counts, not only the coalesced ones: the newest
    # offer wins by updated_at, as it does against the stored row.
    best: dict[tuple[str, str], OfferTerms] = {}
    for change in changes:
        offer = change.offer
        if offer is None:
            continue
        key = (change.site_id, change.sku)
        kept = best.get(key)
        if kept is None or offer.updated_at >= kept.updated_at:
            best[key] = offer
    return [SellerOffer(seller, sku, offer) for (seller, sku), offer in best.items()]


def _is_terminal(status: DecisionStatus) -> bool:
    return status.value in TERMINAL


def _replaces(kept: ReservationDecision | None, decision: ReservationDecision) -> bool:
    # The same rule as the MERGE in publish step 7: the later decision wins unless the
    # kept one is terminal and newer (at the same instant, terminal beats non-terminal).
    return not (
        kept is not None
        and _is_terminal(kept.status)
        and (
            kept.decided_at > decision.decided_at
            or (kept.decided_at == decision.decided_at and not _is_terminal(decision.status))
        )
    )


def winning_decisions(decisions: Iterable[ReservationDecision]) -> list[ReservationDecision]:
    # The same rule as the MERGE in publish step 7, applied in call order.
    best: dict[str, ReservationDecision] = {}
    for decision in decisions:
        if _replaces(best.get(decision.reservation_id), decision):
            best[decision.reservation_id] = decision
    return list(best.values())


def _work_key(item: Work) -> tuple[str, str]:
    if isinstance(item, StoreTask):
        return "task", item.task_id
    if isinstance(item, ShuttleLoad):
        return "load", item.parcel_id
    return "order", item.order_ref


def highest_ranks(work: Iterable[Work]) -> tuple[list[StoreTask], list[ShuttleLoad], list[DropshipOrder]]:
    # The same rule as the MERGE in publish step 7, except that within one batch an equal
    # rank replaces: the later record is the fold's newer word on it.
    tasks: dict[str, StoreTask] = {}
    loads: dict[str, ShuttleLoad] = {}
    orders: dict[str, DropshipOrder] = {}
    for item in work:
        if isinstance(item, StoreTask):
            kept_task = tasks.get(item.task_id)
            if kept_task is None or item.rank >= kept_task.rank:
                tasks[item.task_id] = item
        elif isinstance(item, ShuttleLoad):
            kept_load = loads.get(item.parcel_id)
            if kept_load is None or item.rank >= kept_load.rank:
                loads[item.parcel_id] = item
        else:
            kept_order = orders.get(item.order_ref)
            if kept_order is None or item.rank >= kept_order.rank:
                orders[item.order_ref] = item
    return list(tasks.values()), list(loads.values()), list(orders.values())


class Coalesced:
    """Fold outputs merged as they arrive, to what publishing each `add` in turn would write.

    Positions: the highest version per (site, sku), the later one on a tie (the MERGE's
    `>=`), carrying the winning offer of every change merged (the `offers` table is
    written from the changes' offers, the `positions` table does not read them; an offer
    can come on a change that a newer version replaced). Decisions: the winning one per
    reservation, in arrival order (the MERGE's rule, `winning_decisions`). Work and
    offers: within one `add` the later of equal ranks (offer times) wins, as within one
    publish (`highest_ranks`, `latest_offers`); across two `add`s only a higher one does,
    as the store's MERGE (`>`) decides between two publishes. So the rows held never
    exceed the distinct positions, reservations and pieces of work merged, however many
    intervals were merged, and publishing `changes()`, `decisions()` and `work()` once
    writes what publishing every added interval in turn would have written.
    """

    __slots__ = ("_adds", "_changes", "_decisions", "_offers", "_work")

    def __init__(self) -> None:
        self._adds = 0
        self._changes: dict[tuple[str, str], PositionChange] = {}
        self._offers: dict[tuple[str, str], tuple[OfferTerms, int]] = {}
        self._decisions: dict[str, ReservationDecision] = {}
        self._work: dict[tuple[str, str], tuple[Work, int]] = {}

    def __len__(self) -> int:
        """Rows held: what bounds the memory (and the publish) of a merged job."""
        return len(self._changes) + len(self._decisions) + len(self._work)

    def add(
        self, changes: Iterable[PositionChange], decisions: Iterable[ReservationDecision], work: Iterable[Work]
    ) -> None:
        """Merge one publish's worth of outputs that came after everything already added."""
        self._adds += 1
        this = self._adds
        kept_changes, offers = self._changes, self._offers
        for change in changes:
            key = (change.site_id, change.sku)
            kept = kept_changes.get(key)
            if kept is None or change.version >= kept.version:
                kept_changes[key] = change
            offer = change.offer
            if offer is not None:
                best = offers.get(key)
                if (
                    best is None
                    or offer.updated_at > best[0].updated_at
                    or (offer.updated_at == best[0].updated_at and best[1] == this)
                ):
                    offers[key] = (offer, this)
        kept_decisions = self._decisions
        for decision in decisions:
            if _replaces(kept_decisions.get(decision.reservation_id), decision):
                kept_decisions[decision.reservation_id] = decision
        kept_work = self._work
        for item in work:
            key = _work_key(item)
            got = kept_work.get(key)
            if got is None or item.rank > got[0].rank or (item.rank == got[0].rank and got[1] == this):
                kept_work[key] = (item, this)

    def changes(self) -> list[PositionChange]:
        offers = self._offers
        if not offers:
            return list(self._changes.values())
        out = []
        for key, change in self._changes.items():
            best = offers.get(key)
            if best is not None and best[0] is not change.offer:
                change = replace(change, offer=best[0])
            out.append(change)
        return out

    def decisions(self) -> list[ReservationDecision]:
        return list(self._decisions.values())

    def work(self) -> list[Work]:
        return [item for item, _ in self._work.values()]
