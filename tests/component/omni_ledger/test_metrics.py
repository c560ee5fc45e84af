"""What the flow and the API count, read back through a registry as Prometheus would."""

from __future__ import annotations

import bisect
import itertools
import socket
import threading
import urllib.request
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from adapters.snapshot_store.recent import FoldReport
from adapters.snapshot_store.sink import FoldObserver
from ledger.dead_letter import DeadLetter
from ledger.effects import EffectKind, split
from ledger.errors import ConfigError
from ledger.events import EventType, InventoryEvent
from ledger.fold import fold
from ledger.outputs import DecisionStatus, FoldTally, ReservationDecision
from ledger.policy import LedgerPolicy
from omni_ledger import metrics
from omni_ledger.metrics import FlowMetrics, instrument_app, serve_metrics
from omni_ledger.metrics.flow import LAG_BUCKETS, _outcomes
from tests.stories import MIN, T0, deliveries, stories

pytestmark = pytest.mark.component

# A narrow window, so that shuffled stories also produce too_late refusals.
POLICY = LedgerPolicy(lateness_window_ms=20 * MIN)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def fold_through(
    observer: FlowMetrics,
    events: list[InventoryEvent],
    batch: int,
    now_ms: int,
    positions: dict[str, object] | None = None,
) -> list[FoldTally]:
    """Fold `events` in arrival order, per key, `batch` effects at a time, telling `observer`."""
    positions = {} if positions is None else positions
    pending: dict[str, list[tuple[int, object]]] = {}
    for event in events:
        for effect in split(event):
            pending.setdefault(effect.key, []).append((now_ms, effect))
    tallies = []
    for key, values in pending.items():
        for start in range(0, len(values), batch):
            chunk = values[start : start + batch]
            before = positions.get(key)
            first = chunk[0][1]
            after, out = fold(before, first.site_id, first.sku, chunk, POLICY)  # type: ignore[arg-type]
            observer.folded(before, chunk, after, out)  # type: ignore[arg-type]
            positions[key] = after
            tallies.append(out[-1])
    return tallies


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), batch=st.integers(1, 6))
def test_outcomes_by_type_add_up_to_the_folds_own_tally(data, batch):
    events = data.draw(stories())
    arrivals = data.draw(deliveries(events))
    registry = CollectorRegistry()
    observer = FlowMetrics(registry, clock=lambda: (T0 + 200 * MIN) / 1000)
    tallies = fold_through(observer, arrivals, batch, T0 + 200 * MIN)
    expected = {
        "applied": sum(t.applied for t in tallies),
        "duplicate": sum(t.duplicates for t in tallies),
        "too_late": sum(t.too_late for t in tallies),
    }
    for outcome, total in expected.items():
        counted = sum(value(registry, "omni_ledger_events_total", type=t.value, outcome=outcome) for t in EventType)
        assert counted == total, outcome
    # Every applied event is one lag observation.
    assert value(registry, "omni_ledger_event_lag_seconds_count") == expected["applied"]


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in registry.collect() for s in f.samples}


def _same_samples(got: dict[Any, float], want: dict[Any, float]) -> None:
    """Equal counts; equal sums of seconds but for the float rounding of adding them in another order."""
    assert got.keys() == want.keys()
    for key, value in want.items():
        if key[0].endswith("_sum"):
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-9), key
        else:
            assert got[key] == value, key


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), batch=st.integers(1, 6))
def test_one_call_per_shard_call_counts_what_one_call_per_position_counts(data, batch):
    # `folded_call` reads the worker's cells and the clock once for many positions: nothing
    # of one position (its max_at, its outcomes, negative or new) may leak into the next.
    events = data.draw(stories())
    arrivals = data.draw(deliveries(events))
    now = T0 + 200 * MIN
    folds: list[tuple[object, ...]] = []

    class Recorder:
        def folded(self, *fold: object) -> None:
            folds.append(fold)

    fold_through(Recorder(), arrivals, batch, now)  # type: ignore[arg-type]
    one, calls = CollectorRegistry(), CollectorRegistry()
    per_position = FlowMetrics(one, clock=lambda: now / 1000)
    per_call = FlowMetrics(calls, clock=lambda: now / 1000)
    for fold_ in folds:
        per_position.folded(*fold_)  # type: ignore[arg-type]
    cuts = sorted(data.draw(st.sets(st.integers(0, len(folds)), max_size=4)) | {0, len(folds)})
    for start, end in itertools.pairwise(cuts):
        per_call.folded_call(folds[start:end])  # type: ignore[arg-type]
    _same_samples(_samples(calls), _samples(one))
    effects = [s.value for f in calls.collect() if f.name == "omni_ledger_worker_effects" for s in f.samples]
    assert sum(effects) == sum(len(f[1]) for f in folds)  # type: ignore[arg-type]


def _one_by_one(folds: list[tuple[object, ...]], now_ms: int) -> dict[str, object]:
    """The reference: what a fold call counts, effect by effect, as a reader of the metrics' docs would."""
    events: dict[tuple[object, str], int] = {}
    late: dict[object, int] = {}
    lag = [0] * (len(LAG_BUCKETS) + 1)
    lag_sum, positions, negative, effects = 0.0, 0, 0, 0
    for before, values, after, out in folds:
        positions += before is None
        negative += (after.on_hand < 0) - (before is not None and before.on_hand < 0)  # type: ignore[attr-defined]
        effects += len(values)  # type: ignore[arg-type]
        max_at = None if before is None else before.max_at  # type: ignore[attr-defined]
        for outcome, (_, effect) in zip(_outcomes(before, values, out), values, strict=True):  # type: ignore[arg-type]
            event = effect.event
            is_late = outcome == "applied" and max_at is not None and event.occurred_at < max_at
            if outcome == "applied" and not is_late:
                max_at = event.occurred_at
            if effect.kind is EffectKind.INBOUND:
                continue
            events[event.type, outcome] = events.get((event.type, outcome), 0) + 1
            if is_late:
                late[event.type] = late.get(event.type, 0) + 1
            if outcome == "applied":
                seconds = max(0, now_ms - event.occurred_at) / 1000
                lag[bisect.bisect_left(LAG_BUCKETS, seconds)] += 1
                lag_sum += seconds
    return {"events": events, "late": late, "lag": lag, "lag_sum": lag_sum, "counts": (positions, negative, effects)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), batch=st.integers(1, 6), behind_ms=st.sampled_from([0, 70, 3_000, 400_000, 10**8]))
def test_a_fold_call_counts_what_counting_each_effect_in_turn_counts(data, batch, behind_ms):
    # `folded_call` takes a call's positions in one pass with the histogram inlined; the
    # reference counts effect by effect. Lags from 0 to days, across the buckets' bounds.
    events = data.draw(stories())
    arrivals = data.draw(deliveries(events))
    now = max(e.occurred_at for e in events) + behind_ms
    folds: list[tuple[object, ...]] = []

    class Recorder:
        def folded(self, *fold: object) -> None:
            folds.append(fold)

    fold_through(Recorder(), arrivals, batch, now)  # type: ignore[arg-type]
    observer = FlowMetrics(CollectorRegistry(), clock=lambda: now / 1000)
    observer.folded_call(folds)  # type: ignore[arg-type]
    cells = observer._mine()
    want = _one_by_one(folds, now)
    assert cells.events == want["events"]
    assert cells.late == want["late"]
    assert cells.lag.counts == want["lag"]
    # Summed in whole milliseconds, then in seconds: the reference adds seconds one by one.
    assert cells.lag.total == pytest.approx(want["lag_sum"], rel=1e-12, abs=1e-9)
    assert (cells.positions, cells.negative, cells.effects) == want["counts"]


def _event(event_id: str, type_: EventType, at: int, qty: int = 1) -> InventoryEvent:
    return InventoryEvent(event_id, type_, T0 + at, "ST-A", "SKU-1", qty, origin="test")


def test_a_redelivered_event_counts_as_duplicate_of_its_own_type():
    registry = CollectorRegistry()
    observer = FlowMetrics(registry, clock=lambda: (T0 + 10 * MIN) / 1000)
    received = _event("e1", EventType.RECEIVED, 0, 5)
    sold = _event("e2", EventType.SOLD, MIN)
    fold_through(observer, [received, sold, received], batch=3, now_ms=T0)
    assert value(registry, "omni_ledger_events_total", type="RECEIVED", outcome="applied") == 1
    assert value(registry, "omni_ledger_events_total", type="RECEIVED", outcome="duplicate") == 1
    assert value(registry, "omni_ledger_events_total", type="SOLD", outcome="applied") == 1


def test_an_event_past_the_window_is_too_late_and_one_within_it_is_late():
    registry = CollectorRegistry()
    observer = FlowMetrics(registry, clock=lambda: (T0 + 60 * MIN) / 1000)
    newest = _event("e1", EventType.RECEIVED, 40 * MIN, 5)
    within = _event("e2", EventType.SOLD, 30 * MIN)
    beyond = _event("e3", EventType.RETURNED, 0)
    fold_through(observer, [newest, within, beyond], batch=1, now_ms=T0)
    assert value(registry, "omni_ledger_events_total", type="RETURNED", outcome="too_late") == 1
    assert value(registry, "omni_ledger_late_events_total", type="SOLD") == 1
    assert value(registry, "omni_ledger_late_events_total", type="RECEIVED") == 0
    # Lag: 20 minutes for the first, 30 for the late one (the refused one is not applied).
    assert value(registry, "omni_ledger_event_lag_seconds_sum") == pytest.approx(20 * 60 + 30 * 60)


def test_negative_positions_follow_on_hand_across_batches():
    registry = CollectorRegistry()
    observer = FlowMetrics(registry)
    positions: dict[str, object] = {}
    fold_through(observer, [_event("e1", EventType.SOLD, 0, 3)], 1, T0, positions)
    assert value(registry, "omni_ledger_negative_positions") == 1
    fold_through(observer, [_event("e2", EventType.RECEIVED, MIN, 10)], 1, T0, positions)
    assert value(registry, "omni_ledger_negative_positions") == 0
    tracked = [s for f in registry.collect() if f.name == "omni_ledger_positions" for s in f.samples]
    assert sum(s.value for s in tracked) == 1  # one (site, sku), counted once


def test_counts_from_several_worker_threads_add_up_in_one_scrape():
    registry = CollectorRegistry()
    observer = FlowMetrics(registry)
    per_thread = 500
    # All alive at once, as a flow's workers are (an ended thread's id may be reused).
    together = threading.Barrier(4)

    def work(n: int) -> None:
        together.wait(timeout=10)
        events = [_event(f"w{n}-{i}", EventType.RECEIVED, i) for i in range(per_thread)]
        for event in events:
            effect = split(event)[0]
            observer.folded(None, [(T0, effect)], *fold(None, "ST-A", f"SKU-{n}", [(T0, effect)], POLICY))
        together.wait(timeout=10)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert value(registry, "omni_ledger_events_total", type="RECEIVED", outcome="applied") == 4 * per_thread
    workers = [s for f in registry.collect() if f.name == "omni_ledger_worker_effects" for s in f.samples]
    assert len(workers) == 4
    assert {s.value for s in workers} == {per_thread}


def test_dead_letters_and_decisions_are_counted_by_reason_and_status_from_zero():
    registry = CollectorRegistry()
    observer = FlowMetrics(registry)
    assert registry.get_sample_value("omni_ledger_dead_letters_total", {"reason": "malformed"}) == 0
    assert (
        registry.get_sample_value(
            "omni_ledger_reservation_decisions_total", {"status": "REJECTED", "reason": "insufficient_atp"}
        )
        == 0
    )
    observer.dead_letter(DeadLetter("f.jsonl:3", "malformed", "not JSON", b"{"))
    observer.dead_letter(DeadLetter("f.jsonl:4", "malformed", "not JSON", b"}"))
    observer.decision(
        ReservationDecision("r1", "ST-A", "SKU-1", 1, DecisionStatus.REJECTED, "insufficient_atp", None, T0, 0)
    )
    assert value(registry, "omni_ledger_dead_letters_total", reason="malformed") == 2
    assert value(registry, "omni_ledger_reservation_decisions_total", status="REJECTED", reason="insufficient_atp") == 1


def test_checkpoints_are_timed_and_their_rows_counted_per_shard_checkpoint():
    registry = CollectorRegistry()
    observer = FlowMetrics(registry)
    observer.checkpointed(1_200, 0.012)
    observer.checkpointed(0, 0.004)
    assert value(registry, "omni_ledger_checkpoint_duration_seconds_count") == 2
    assert value(registry, "omni_ledger_checkpoint_duration_seconds_sum") == pytest.approx(0.016)
    assert value(registry, "omni_ledger_checkpoint_duration_seconds_bucket", le="0.005") == 1
    assert value(registry, "omni_ledger_checkpoint_rows_sum") == 1_200


def test_an_epoch_close_is_timed_once_for_all_the_shards_it_wrote_together():
    registry = CollectorRegistry()
    observer = FlowMetrics(registry)
    observer.epoch_closed(16, 0.021)
    assert value(registry, "omni_ledger_epoch_close_duration_seconds_count") == 1
    assert value(registry, "omni_ledger_epoch_close_duration_seconds_sum") == pytest.approx(0.021)


def test_a_fold_of_the_recent_positions_is_timed_by_phase_and_its_rows_counted():
    registry = CollectorRegistry()
    observer = FlowMetrics(registry)
    assert isinstance(observer, FoldObserver)  # the snapshot sink tells it of each fold
    observer.compacted(FoldReport(41, 40, 1_000_000, 950_000, 4.2, 0.8, background=True))
    observer.compacted(FoldReport(52, 51, 10, 10, 0.01, 0.002, background=True))
    assert value(registry, "omni_ledger_snapshot_fold_duration_seconds_count", phase="read") == 2
    assert value(registry, "omni_ledger_snapshot_fold_duration_seconds_sum", phase="read") == pytest.approx(4.21)
    assert value(registry, "omni_ledger_snapshot_fold_duration_seconds_bucket", phase="commit", le="1.0") == 2
    assert value(registry, "omni_ledger_snapshot_fold_duration_seconds_bucket", phase="commit", le="0.5") == 1
    assert value(registry, "omni_ledger_snapshot_folded_rows_total") == 1_000_010


def test_snapshot_timestamps_appear_with_the_first_publish_and_heartbeats_move_only_one():
    registry = CollectorRegistry()
    observer = FlowMetrics(registry)
    assert registry.get_sample_value("omni_ledger_snapshot_published_timestamp_seconds") is None
    assert registry.get_sample_value("omni_ledger_snapshot_heartbeat_timestamp_seconds") is None
    observer.published(7, [], 3, 0.02, T0)
    observer.published(None, [], 0, 0.0, T0 + 5000)  # nothing new: a heartbeat
    assert value(registry, "omni_ledger_snapshot_published_timestamp_seconds") == T0 / 1000
    assert value(registry, "omni_ledger_snapshot_heartbeat_timestamp_seconds") == (T0 + 5000) / 1000
    assert value(registry, "omni_ledger_snapshots_published_total") == 1
    assert value(registry, "omni_ledger_snapshot_changed_rows_sum") == 3


def test_http_requests_are_labelled_by_route_template_never_by_raw_path():
    registry = CollectorRegistry()
    histogram = Histogram("t_http_seconds", "test", ["method", "route", "status"], registry=registry)
    app = FastAPI()

    @app.get("/v1/skus/{sku}")
    def sku(sku: str) -> dict[str, str]:
        return {"sku": sku}

    instrument_app(app, histogram)
    client = TestClient(app)
    for name in ("SKU-1", "SKU-2", "SKU-3"):
        assert client.get(f"/v1/skus/{name}").status_code == 200
    assert client.get("/nowhere").status_code == 404
    labels = {"method": "GET", "route": "/v1/skus/{sku}", "status": "200"}
    assert registry.get_sample_value("t_http_seconds_count", labels) == 3
    assert registry.get_sample_value("t_http_seconds_count", {**labels, "route": "unmatched", "status": "404"}) == 1
    routes = {s.labels.get("route") for f in registry.collect() for s in f.samples if "route" in s.labels}
    assert routes == {"/v1/skus/{sku}", "unmatched"}


def test_the_consoles_files_are_labelled_by_their_mount_not_as_unmatched():
    from omni_ledger.console import mount_console

    registry = CollectorRegistry()
    histogram = Histogram("t_http_seconds", "test", ["method", "route", "status"], registry=registry)
    app = FastAPI()
    mount_console(app)
    instrument_app(app, histogram)
    client = TestClient(app)
    for path in ("/console/", "/console/console.js", "/console/console.css"):
        assert client.get(path).status_code == 200
    assert client.get("/nowhere").status_code == 404

    labels = {"method": "GET", "route": "/console/{file}", "status": "200"}
    assert registry.get_sample_value("t_http_seconds_count", labels) == 3
    assert registry.get_sample_value("t_http_seconds_count", {**labels, "route": "unmatched", "status": "404"}) == 1


def test_metrics_are_served_on_loopback_and_a_taken_port_is_a_config_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    registry = CollectorRegistry()
    FlowMetrics(registry)
    with serve_metrics(
        "127.0.0.1", port, command="test", max_snapshot_age=timedelta(seconds=30), registry=registry
    ) as url:
        assert url == f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
        assert "omni_ledger_events_total" in body
        with (
            pytest.raises(ConfigError, match="--metrics-port"),
            serve_metrics("127.0.0.1", port, command="test", max_snapshot_age=timedelta(seconds=30)),
        ):
            pass
    with serve_metrics("127.0.0.1", 0, command="test", max_snapshot_age=timedelta(seconds=30)) as none:
        assert none is None  # port 0: no server


def test_the_process_registry_has_the_api_and_shared_metrics_and_no_created_series():
    names = {f.name for f in metrics.REGISTRY.collect()}
    assert {
        "omni_ledger_http_request_duration_seconds",
        "omni_ledger_snapshot_max_age_seconds",
        "omni_ledger_build",
        "process_cpu_seconds",
    } <= names
    samples = [s.name for f in metrics.REGISTRY.collect() for s in f.samples]
    assert not [s for s in samples if s.endswith("_created")]
