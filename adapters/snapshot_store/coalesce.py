"""Step 1 of a publish: coalesce what the fold emitted to one row per key, by the rules the MERGE applies.

Within one batch the same rules hold as against the stored rows (publish step 7), so a
batch that carries a key twice writes what two publishes in a row would have left.
"""

from __future__ import annotations

from collections.abc import Iterable

from adapters.snapshot_store.tables import SellerOffer
from ledger.execution import DropshipOrder, ShuttleLoad, StoreTask, Work
from ledger.outputs import DecisionStatus, OfferTerms, PositionChange, ReservationDecision

__all__ = ["TERMINAL", "highest_ranks", "latest_offers", "latest_versions", "winning_decisions"]

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


def winning_decisions(decisions: Iterable[ReservationDecision]) -> list[ReservationDecision]:
    # The same rule as the MERGE in publish step 7, applied in call order.
    best: dict[str, ReservationDecision] = {}
    for decision in decisions:
        kept = best.get(decision.reservation_id)
        if (
            kept is not None
            and _is_terminal(kept.status)
            and (
                kept.decided_at > decision.decided_at
                or (kept.decided_at == decision.decided_at and not _is_terminal(decision.status))
            )
        ):
            continue
        best[decision.reservation_id] = decision
    return list(best.values())


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
