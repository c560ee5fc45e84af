"""When the snapshot writer compacts: once the publishes have lost what a compaction costs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.snapshot_store.compaction import CompactionPolicy

pytestmark = pytest.mark.component


def publishes_until_due(policy: CompactionPolicy, times: list[float]) -> int | None:
    for n, seconds in enumerate(times, start=1):
        policy.published(seconds)
        if policy.due():
            return n
    return None


def test_publishes_growing_linearly_compact_near_the_interval_that_minimises_the_average_cost() -> None:
    # Measured at 10,000,000 positions: 0.8 s after a compaction, 65 ms more a publish, 3.6 s a compaction.
    policy = CompactionPolicy()
    policy.compacted(3.6)
    n = publishes_until_due(policy, [0.8 + 0.065 * i for i in range(100)])
    best = math.sqrt(2 * 3.6 / 0.065)  # ~10.5
    assert n is not None
    assert best - 1 <= n <= best + 2


def test_cheap_compactions_wait_until_the_publishes_lost_the_floor() -> None:
    policy = CompactionPolicy(floor=2.0)
    policy.compacted(0.05)
    # 10 ms of noise a publish: 0.05 s lost after a handful, 2 s only after ~200.
    n = publishes_until_due(policy, [0.1 + 0.01 * (i % 2) for i in range(1_000)])
    assert n is not None
    assert n >= 300


def test_publishes_that_do_not_slow_down_never_call_for_a_compaction() -> None:
    policy = CompactionPolicy()
    policy.compacted(0.5)
    assert publishes_until_due(policy, [0.3] * 10_000) is None


def test_a_single_slow_publish_is_not_enough() -> None:
    policy = CompactionPolicy(first_compaction_guess=0.1, floor=0.0)
    policy.published(5.0)
    assert not policy.due()


def test_a_compaction_starts_the_count_again_and_sets_the_price() -> None:
    policy = CompactionPolicy(first_compaction_guess=1.0, floor=0.0)
    assert publishes_until_due(policy, [0.1, 0.6, 0.7]) == 3  # lost 0.5 + 0.6
    policy.compacted(10.0)
    assert policy.lost == 0.0
    assert publishes_until_due(policy, [0.1, 0.6, 0.7, 1.0]) is None  # lost 2.0 < 10


def lost_after(times: list[float]) -> float:
    """The reference: each publish's time above the cheapest one so far, summed."""
    lost, cheapest = 0.0, math.inf
    for seconds in times:
        cheapest = min(cheapest, seconds)
        lost += seconds - cheapest
    return lost


@given(
    st.floats(0.01, 10.0),
    st.floats(0.001, 0.5),
    st.floats(0.05, 5.0),
    st.lists(st.floats(0.0, 0.05), min_size=400, max_size=400),
)
def test_with_growth_a_compaction_comes_as_soon_as_it_pays_and_never_before(
    cost: float, growth: float, base: float, noise: list[float]
) -> None:
    policy = CompactionPolicy(floor=0.0)
    policy.compacted(cost)
    times = [base + growth * i + jitter for i, jitter in enumerate(noise)]
    n = publishes_until_due(policy, times)
    assert n is not None
    # No later than growth alone would need, plus the noise's worth of growth steps: noise on
    # the first publishes raises the cheapest one seen, and what those lost is not counted
    # (found by hypothesis: cost 1, growth 1/128, 4 steps' noise on the first two -> 19 > 18).
    assert n <= math.ceil(math.sqrt(2 * cost / growth)) + math.ceil(max(noise) / growth) + 2
    assert lost_after(times[:n]) >= cost - 1e-9
    assert lost_after(times[: n - 1]) < cost
