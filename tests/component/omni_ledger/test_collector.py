"""The garbage collector settings of the flow and the server: why they are safe, and that the collector still runs."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from adapters.avro_wire import WireCodec
from adapters.clock import ReplayClock
from adapters.codec import RawInput
from adapters.kafka_records import render_change, render_decision
from bench.kafka import simulated
from flows.logic import ShardLogic, admit_batch
from ledger.policy import LedgerPolicy
from ledger.promise import promise
from omni_ledger.api_hot import promise_json
from omni_ledger.collector import THRESHOLDS, tune_collector
from omni_ledger.metrics.flow import FlowMetrics
from tests.unit.ledger.test_promise import scenarios

pytestmark = pytest.mark.component


@pytest.fixture
def collector() -> Iterator[None]:
    """Put the test process's collector back as it was."""
    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    if enabled:
        gc.enable()


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_admission_the_fold_and_encoding_leave_no_cyclic_garbage(collector):
    # The premise of running the collector rarely: what the flow makes per event is freed
    # by reference counting alone, so nothing waits for the collector.
    codec = WireCodec()
    events = simulated(6_000, time.time_ns() // 1_000_000 - 3_600_000, seed=11)
    reads = [
        tuple(RawInput(f"t[0]@{i}", codec.encode(e)) for i, e in enumerate(events[start : start + 1_000], start))
        for start in range(0, len(events), 1_000)
    ]
    policy, clock = LedgerPolicy(), ReplayClock()
    metrics = FlowMetrics(CollectorRegistry())
    logics: dict[str, ShardLogic] = {}
    gc.collect()
    gc.disable()
    folded = 0
    for read in reads:
        admitted = admit_batch(read, clock, policy.max_clock_skew_ms, codec.decode, 4)
        for key, batch in admitted.groups:
            logic = logics.get(key)
            if logic is None:
                logic = logics[key] = ShardLogic(None, policy, clock, None, 4, observer=metrics)
            for out in logic.on_batch([batch])[0]:
                folded += len(out.changes)
                for change in out.changes:
                    render_change(change)
                for decision in out.decisions:
                    render_decision(decision)
        del admitted
    assert folded > 1_000  # the positions did change: the stories were folded
    assert gc.collect() == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.none() | st.integers(1, 100), st.booleans())
def test_a_promise_and_its_json_leave_no_cyclic_garbage(scenario, limit, explain):  # type: ignore[no-untyped-def]
    # The same premise for the server, which runs the collector as rarely: what a request makes
    # is freed by reference counting alone (a context once kept its ways' bound details: a cycle).
    network, view, request = scenario
    gc.collect()
    gc.disable()
    try:
        for _ in range(2):  # the second answers from what the first kept across requests
            answer = promise(network, view, request, limit=limit, explain=explain)
            assert promise_json(answer)
        del answer
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_the_thresholds_keep_the_collector_on(collector):
    tune_collector()
    assert gc.isenabled()
    assert gc.get_threshold() == THRESHOLDS
    assert gc.get_freeze_count() > 0  # start-up's objects are out of its reach


def test_a_cycle_made_after_tuning_is_collected_without_asking(collector):
    tune_collector((100, 2, 2))
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    kept = [[] for _ in range(2_000)]  # net allocations: young and middle collections run
    assert gone() is None
    assert len(kept) == 2_000
