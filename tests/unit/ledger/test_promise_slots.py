"""The first free slots kept across requests per view (`ledger.promise._kept_slots`).

A view's slot searches are kept for as long as the view lives and shared by every
request it answers: the answers must be those of a promise that searched afresh, whatever
the requests before asked, in whatever view, and however many views went by (their ids
reused by the next ones).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import replace

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ledger.answer import MAX_LIMIT, Promise, PromiseRequest, SnapshotView, Stock
from ledger.events import Millis
from ledger.network import DAY_MS, Network
from ledger.promise import promise
from tests.unit.ledger.test_promise import HashedSlots, scenarios


class _Unkept:
    """The view it wraps, not weakly referable: a promise over it keeps nothing past itself (main's way)."""

    __slots__ = ("_view", "snapshot_id")

    def __init__(self, view: SnapshotView) -> None:
        self._view = view
        self.snapshot_id = view.snapshot_id

    def sku_atp(self, sku: str) -> tuple[Sequence[str], Sequence[int]]:
        return self._view.sku_atp(sku)

    def stock_at(self, site_id: str, sku: str) -> Stock | None:
        return self._view.stock_at(site_id, sku)

    def free_slot_capacity(self, store_id: str, slot_start: Millis) -> int | None:
        return self._view.free_slot_capacity(store_id, slot_start)


def _ask(network: Network, view: SnapshotView, request: PromiseRequest, limit: int | None, explain: bool) -> Promise:
    return promise(network, view, request, limit=limit, explain=explain)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scenarios(),
    st.lists(
        st.tuples(
            st.booleans(),  # a new view (another salt: other capacities) before this request
            st.integers(0, 2**31),  # its salt
            st.just(0) | st.integers(-2 * 3_600_000, 2 * DAY_MS),  # `now` from the first request's
            st.sampled_from([None, 1, 2, 3, 10, MAX_LIMIT]),
            st.booleans(),  # explain
        ),
        min_size=2,
        max_size=8,
    ),
)
def test_slots_kept_across_requests_and_views_answer_as_a_fresh_search(scenario, steps):
    network, view, request = scenario
    del scenario  # the view is held by `view` alone, so it dies when replaced
    request = replace(request, appointment=True)
    reused = 0
    for new_view, salt, later, limit, explain in steps:
        if new_view:
            # The old view dropped first: the new one often takes its id (and the same snapshot id,
            # so only the capacities tell them apart). A memo keyed by `id(view)` answers from the old.
            rows, snapshot_id, old = view.rows, view.snapshot_id, id(view)
            del view
            gc.collect()
            # Made in a batch, one of them almost always at the dropped view's address: that one is taken.
            made = [HashedSlots(snapshot_id, rows, salt + n) for n in range(32)]
            view = next((each for each in made if id(each) == old), made[0])
            del made
            reused += id(view) == old
        asked = replace(request, now=request.now + later)
        kept = _ask(network, view, asked, limit, explain)
        assert kept == _ask(network, _Unkept(view), asked, limit, explain)
    event(f"views whose id was reused: {min(reused, 2)}+" if reused else "no id reused")
