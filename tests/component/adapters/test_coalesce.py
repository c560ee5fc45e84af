"""`Coalesced`: intervals merged into one job write what publishing them one by one writes (a model of the MERGE)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.snapshot_store.coalesce import (
    TERMINAL,
    Coalesced,
    highest_ranks,
    latest_offers,
    latest_versions,
    winning_decisions,
)
from ledger.execution import TaskStatus, Work
from ledger.outputs import DecisionStatus, OfferTerms, PositionChange, ReservationDecision
from tests.integration.test_snapshot_store import T0, change, decision, task

pytestmark = pytest.mark.component


class _Store:
    """The rules of publish steps 4-7, on dicts: what a store holds after each publish."""

    def __init__(self) -> None:
        self.positions: dict[tuple[str, str], PositionChange] = {}
        self.offers: dict[tuple[str, str], OfferTerms] = {}
        self.reservations: dict[str, ReservationDecision] = {}
        self.work: dict[str, Work] = {}

    def publish(self, changes: list[PositionChange], decisions: list[ReservationDecision], work: list[Work]) -> None:
        for c in latest_versions(changes):
            kept = self.positions.get((c.site_id, c.sku))
            if kept is None or c.version >= kept.version:
                self.positions[(c.site_id, c.sku)] = c
        for o in latest_offers(changes):
            kept_offer = self.offers.get((o.seller_id, o.sku))
            if kept_offer is None or o.offer.updated_at > kept_offer.updated_at:
                self.offers[(o.seller_id, o.sku)] = o.offer
        for d in winning_decisions(decisions):
            kept_d = self.reservations.get(d.reservation_id)
            if kept_d is not None and kept_d.status.value in TERMINAL:
                if kept_d.decided_at > d.decided_at:
                    continue
                if kept_d.decided_at == d.decided_at and d.status.value not in TERMINAL:
                    continue
            self.reservations[d.reservation_id] = d
        tasks, _, _ = highest_ranks(work)
        for t in tasks:
            kept_task = self.work.get(t.task_id)
            if kept_task is None or t.rank > kept_task.rank:
                self.work[t.task_id] = t

    def seen(self) -> tuple[Any, ...]:
        # Positions by content but the offer (the positions table does not hold it).
        positions = {k: (c.version, c.on_hand, c.inbound) for k, c in self.positions.items()}
        return positions, self.offers, self.reservations, self.work


_KEYS = st.tuples(st.sampled_from(["S1", "S2"]), st.sampled_from(["A", "B", "C"]))
_CHANGE = st.builds(
    lambda key, version, on_hand, offer_at, qty: change(
        *key, version, on_hand=on_hand, offer=None if offer_at is None else OfferTerms(qty, None, None, T0 + offer_at)
    ),
    _KEYS,
    st.integers(1, 6),
    st.integers(-2, 9),
    st.none() | st.integers(0, 4),
    st.integers(0, 3),
)
_TASK = st.builds(
    lambda ref, status, updated: task(status, ref=ref, updated=updated),
    st.sampled_from(["R1", "R2"]),
    st.sampled_from(list(TaskStatus)),
    st.integers(0, 5),
)
_INTERVAL = st.tuples(
    st.lists(_CHANGE, max_size=6), st.lists(st.integers(0, 3), max_size=3), st.lists(_TASK, max_size=3)
)
_STATUSES = list(DecisionStatus)


def _decisions(intervals: list[Any], statuses: list[int]) -> list[list[ReservationDecision]]:
    # Decided in arrival order, as the fold decides them (the ledger clock only moves forward).
    out, at, n = [], T0, 0
    for _, picks, _ in intervals:
        batch = []
        for pick in picks:
            at += 1
            batch.append(decision(f"R{pick % 2}", _STATUSES[statuses[n % len(statuses)]], at))
            n += 1
        out.append(batch)
    return out


@settings(max_examples=100, deadline=None)
@given(st.lists(_INTERVAL, min_size=1, max_size=8), st.lists(st.integers(0, len(_STATUSES) - 1), min_size=1))
def test_intervals_merged_into_one_job_write_what_publishing_them_one_by_one_writes(
    intervals: list[Any], statuses: list[int]
) -> None:
    decisions = _decisions(intervals, statuses)
    one_by_one, merged, job = _Store(), _Store(), Coalesced()
    for (changes, _, work), batch in zip(intervals, decisions, strict=True):
        one_by_one.publish(changes, batch, work)
        job.add(changes, batch, work)
    merged.publish(job.changes(), job.decisions(), job.work())
    assert merged.seen() == one_by_one.seen()
    # At most one row per position, reservation and piece of work, however many intervals.
    keys = {(c.site_id, c.sku) for changes, _, _ in intervals for c in changes}
    assert len(job) <= len(keys) + len({d.reservation_id for b in decisions for d in b}) + len(
        {w.task_id for _, _, work in intervals for w in work}  # type: ignore[union-attr]
    )
