"""A view's ATP as a numpy column (`sku_atp_column`, the read model's) or as lists: the same promise.

The bounded promise's walk (`ledger.promise._walk`) masks a sku's ATP whole; a view that offers
the column as numpy (`ReadView.sku_atp_column`) spares it the list `sku_atp` makes. Arrays in,
objects in: every answer must be the one the lists give, and the whole promise cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.answer import MAX_LIMIT, SnapshotView, bounded
from ledger.promise import promise
from tests.unit.ledger.test_promise import scenarios


class _Columns:
    """The view it wraps, offering the ATP as a numpy column too (of the read model's narrow type)."""

    def __init__(self, view: SnapshotView) -> None:
        self._view = view
        self.asked: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._view, name)

    def sku_atp_column(self, sku: str) -> tuple[Sequence[str], np.ndarray[Any, Any]]:
        self.asked.append(sku)
        sites, atps = self._view.sku_atp(sku)
        return sites, np.array(atps, dtype=np.int32)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from([1, 2, 3, 10, MAX_LIMIT]), st.booleans())
def test_a_view_offering_its_atp_as_a_numpy_column_gets_the_promise_the_lists_give(scenario, limit, appointment):
    network, view, request = scenario
    request = replace(request, appointment=appointment)
    columns = _Columns(view)
    answer = promise(network, columns, request, limit=limit, explain=False)  # type: ignore[arg-type]
    assert answer == promise(network, view, request, limit=limit, explain=False)
    assert answer == bounded(promise(network, view, request), limit)
    # The column was what the walk read, every sku of the basket.
    assert sorted(set(columns.asked)) == sorted({sku for sku, _ in request.items})
