"""What the fold counts: events by outcome, dead letters, decisions, lags, snapshots, positions.

Written on the hot path of every worker thread: each thread adds to its own plain cells
(no lock) and a scrape sums them (see the package docstring for every name).
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ledger.dead_letter import DeadLetter, Reason
from ledger.effects import Effect, EffectKind
from ledger.events import EventType, Millis
from ledger.outputs import DecisionStatus, FoldTally, PositionChange, ReservationDecision
from ledger.position import Position
from omni_ledger.logs import worker
from omni_ledger.metrics.server import REGISTRY

if TYPE_CHECKING:
    from adapters.snapshot_store import MaintenanceReport
    from adapters.snapshot_store.recent import FoldReport

__all__ = [
    "E2E_BUCKETS",
    "LAG_BUCKETS",
    "OUTCOMES",
    "PUBLISH_BUCKETS",
    "ROWS_BUCKETS",
    "FlowMetrics",
    "Fold",
    "flow_metrics",
]

_LOG = logging.getLogger("omni_ledger.metrics")
OUTCOMES = ("applied", "duplicate", "too_late")
# Known decision (status, reason) pairs, exposed at zero from the start so that a rate()
# over them has data before the first one happens; other pairs appear when they do.
_DECISIONS = (
    (DecisionStatus.ACCEPTED, "atp_sufficient"),
    (DecisionStatus.REJECTED, "insufficient_atp"),
    (DecisionStatus.REJECTED, "expired_on_arrival"),
    (DecisionStatus.RELEASED, "released"),
    (DecisionStatus.FULFILLED, "fulfilled"),
    (DecisionStatus.EXPIRED, "hold_expired"),
)
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600, 21600, 86400)
E2E_BUCKETS = (0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 120, 300, 900, 3600)
PUBLISH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ROWS_BUCKETS = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)
_INBOUND = EffectKind.INBOUND

Fold = tuple[Position | None, Sequence[tuple[Millis, Effect]], Position, Sequence[object]]
"""One position's fold in a shard call: (before, its effects, after, what it emitted)."""


class _Buckets:
    """A histogram's cells in one thread: counts per bucket (the last is +Inf) and the sum."""

    __slots__ = ("bounds", "bounds_ms", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        # A lag of d whole ms is in bucket `le` b exactly when d <= b * 1000 (b a multiple of 1 ms):
        # d / 1000 <= b, as `observe` compares it, without a division an event.
        self.bounds_ms = [round(b * 1000) for b in bounds]
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # `le` buckets: the first bound >= value.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_lags(self, now_ms: int, times: Sequence[int]) -> None:
        """`observe` the lag in seconds from each of `times` (ms) to `now_ms` (0 for a time after it)."""
        counts, bounds_ms = self.counts, self.bounds_ms
        total_ms = 0
        for at in times:
            lag_ms = now_ms - at if at < now_ms else 0
            counts[bisect_left(bounds_ms, lag_ms)] += 1
            total_ms += lag_ms
        self.total += total_ms / 1000


def _histogram(name: str, doc: str, bounds: Sequence[float], cells: Iterable[_Buckets]) -> HistogramMetricFamily:
    counts = [0] * (len(bounds) + 1)
    total = 0.0
    for cell in cells:
        for i, n in enumerate(list(cell.counts)):  # list(): one consistent copy under the GIL
            counts[i] += n
        total += cell.total
    cumulative, buckets = 0, []
    les = [floatToGoString(b) for b in bounds]  # type: ignore[no-untyped-call]
    for bound, n in zip((*les, "+Inf"), counts, strict=True):
        cumulative += n
        buckets.append((bound, float(cumulative)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)


@dataclass(eq=False)
class _WorkerCells:
    """What one worker thread counted; only that thread writes, a scrape reads."""

    worker: str
    events: dict[tuple[str, str], int] = field(default_factory=dict)
    late: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)
    effects: int = 0
    positions: int = 0
    negative: int = 0
    lag: _Buckets = field(default_factory=lambda: _Buckets(LAG_BUCKETS))
    e2e: _Buckets = field(default_factory=lambda: _Buckets(E2E_BUCKETS))


def _outcomes(before: Position | None, values: Sequence[tuple[Millis, Effect]], out: Sequence[object]) -> list[str]:
    """Each effect's outcome in a batch the fold's tally says was not all applied.

    The fold reports only totals; this follows its rules in its order: an effect whose
    id has a `too_late` dead letter in the output was refused, else an id already seen at
    the position (before the batch, or earlier in it) was a duplicate, else it applied.
    """
    late = Tally(o.event_id for o in out if isinstance(o, DeadLetter) and o.reason == Reason.TOO_LATE)
    seen: Any = before.seen if before is not None else ()
    applied: set[str] = set()
    result = []
    for _, effect in values:
        event_id = effect.event.event_id
        if late[event_id] > 0:
            late[event_id] -= 1
            result.append("too_late")
        elif event_id in applied or event_id in seen:
            result.append("duplicate")
        else:
            applied.add(event_id)
            result.append("applied")
    return result


class FlowMetrics(Collector):
    """What the flow counts: a fold observer, a publish observer and the Kafka lag gauge.

    Bootstrap hands it to the flow's hooks (`Wiring.fold_observer`, `SnapshotSink(observer=)`,
    `KafkaEventSource(on_lag=)`) and to the sinks' counting of dead letters and decisions.
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # By OS thread id (see omni_ledger.logs.worker: no threading.local on Bytewax's threads).
        self._by_thread: dict[int, _WorkerCells] = {}
        self._cells: list[_WorkerCells] = []
        self._lock = threading.Lock()
        self._published_at: float | None = None
        self._heartbeat_at: float | None = None
        self._last_warning: dict[str, float] = {}
        self._suppressed: Tally[str] = Tally()
        self.publish_seconds = Histogram(
            "omni_ledger_snapshot_publish_duration_seconds",
            "Time to commit one DuckLake snapshot (write, commit, record what it covers).",
            buckets=PUBLISH_BUCKETS,
            registry=registry,
        )
        self.changed_rows = Histogram(
            "omni_ledger_snapshot_changed_rows",
            "Rows written per snapshot: position changes, reservation decisions and work.",
            buckets=ROWS_BUCKETS,
            registry=registry,
        )
        self.snapshots = Counter(
            "omni_ledger_snapshots_published", "Snapshots committed by this process.", registry=registry
        )
        self.maintenance_seconds = Histogram(
            "omni_ledger_snapshot_maintenance_duration_seconds",
            "Time of one snapshot store maintenance run (compaction, expiry); publishes wait for it. "
            "reason: interval (the timer) or publishes (they had slowed by as much as a run costs).",
            ["reason"],
            buckets=PUBLISH_BUCKETS,
            registry=registry,
        )
        self.fold_seconds = Histogram(
            "omni_ledger_snapshot_fold_duration_seconds",
            "One fold of a writer's recent positions into its base. phase: read (beside the publishes) or "
            "commit (between two publishes: the publish after it waited at most this long).",
            ["phase"],
            buckets=PUBLISH_BUCKETS,
            registry=registry,
        )
        self.folded_rows = Counter(
            "omni_ledger_snapshot_folded_rows", "Recent position rows folded into the base.", registry=registry
        )
        self.checkpoint_seconds = Histogram(
            "omni_ledger_checkpoint_duration_seconds",
            "Time of one shard's checkpoint at an epoch close (its changed rows made durable). A worker's "
            "shards are written at once, so its close waits about as long as the longest of them.",
            buckets=PUBLISH_BUCKETS,
            registry=registry,
        )
        self.epoch_close_seconds = Histogram(
            "omni_ledger_epoch_close_duration_seconds",
            "Time one worker's folds waited at an epoch close: every changed shard's checkpoint, written together.",
            buckets=PUBLISH_BUCKETS,
            registry=registry,
        )
        self.checkpoint_rows = Histogram(
            "omni_ledger_checkpoint_rows",
            "Changed rows one shard's checkpoint wrote at an epoch close.",
            buckets=ROWS_BUCKETS,
            registry=registry,
        )
        self.kafka_lag = Gauge(
            "omni_ledger_kafka_consumer_lag_messages",
            "Messages in the input partition not read yet: its high watermark minus the next offset to read.",
            ["topic", "partition"],
            registry=registry,
        )
        registry.register(self)

    # -- the fold (a FoldObserver: flows.logic calls it on the worker thread, once per shard call)

    def _mine(self) -> _WorkerCells:
        ident = threading.get_ident()
        cells = self._by_thread.get(ident)
        if cells is None:
            with self._lock:
                cells = self._by_thread.get(ident)
                if cells is None:
                    # A thread id reused after its thread ended keeps its cells and label:
                    # the labels stay bounded by the threads alive at once.
                    cells = _WorkerCells(worker())
                    self._cells.append(cells)
                    self._by_thread[ident] = cells
        return cells

    def resumed(self, positions: int, negative: int) -> None:
        """A shard came back from recovery state on this worker: its positions, those below zero."""
        cells = self._mine()
        cells.positions += positions
        cells.negative += negative

    def checkpointed(self, rows: int, seconds: float) -> None:
        """A shard's checkpoint at an epoch close (on the worker thread: a few per epoch, not per event)."""
        self.checkpoint_seconds.observe(seconds)
        self.checkpoint_rows.observe(rows)

    def epoch_closed(self, checkpoints: int, seconds: float) -> None:
        """A worker's epoch close: its shards' checkpoints written together, the folds waiting."""
        self.epoch_close_seconds.observe(seconds)

    def folded(
        self,
        before: Position | None,
        values: Sequence[tuple[Millis, Effect]],
        after: Position,
        out: Sequence[object],
    ) -> None:
        """One position's fold: `values` took it from `before` to `after`, emitting `out`."""
        self.folded_call(((before, values, after, out),))

    def folded_call(self, folds: Iterable[Fold]) -> None:
        """One fold call of a shard: each of its positions' folds, as `folded` takes one.

        The worker's cells and the clock are read once for the call (a call takes
        milliseconds; the lag histogram's first bucket is 50 ms): one call per position
        was 3-5% of the flow's GIL time, most of it this per-call work. Each applied
        effect only notes its event's time and type; the types are counted in C
        (`collections.Counter`) and the lags bucketed in whole milliseconds, once per call
        (`_Buckets.observe_lags`): 1.18x cheaper than an event at a time on `bench.flow_stages`'s
        stream (1.83 -> 1.47 us an event, docs/scaling.md "Fourteenth pass").
        """
        cells = self._mine()
        now_ms = int(self._clock() * 1000)
        late = cells.late
        positions = negative = effects = 0
        times: list[int] = []
        kinds: list[EventType] = []
        note_time, note_kind = times.append, kinds.append
        for before, values, after, out in folds:
            if before is None:
                positions += 1
                was_negative, max_at = False, None
            else:
                was_negative, max_at = before.on_hand < 0, before.max_at
            is_negative = after.on_hand < 0
            if is_negative != was_negative:
                negative += 1 if is_negative else -1
            effects += len(values)
            tally = out[-1] if out else None
            if isinstance(tally, FoldTally) and (tally.duplicates or tally.too_late):
                self._count_mixed(cells, before, values, out, now_ms)
                continue
            # Every effect applied (the common case).
            for _, effect in values:
                event = effect.event
                at = event.occurred_at
                if max_at is not None and at < max_at:
                    if effect.kind is not _INBOUND:
                        late[event.type] = late.get(event.type, 0) + 1
                        note_time(at)
                        note_kind(event.type)
                    continue
                max_at = at
                if effect.kind is not _INBOUND:  # a move's destination leg: the event is counted at its origin
                    note_time(at)
                    note_kind(event.type)
        if kinds:
            events = cells.events
            for kind, n in Tally(kinds).items():
                key = (kind, "applied")
                events[key] = events.get(key, 0) + n
            cells.lag.observe_lags(now_ms, times)
        cells.positions += positions
        cells.negative += negative
        cells.effects += effects

    def _count_mixed(
        self,
        cells: _WorkerCells,
        before: Position | None,
        values: Sequence[tuple[Millis, Effect]],
        out: Sequence[object],
        now_ms: int,
    ) -> None:
        max_at = before.max_at if before is not None else None
        events, late, lag = cells.events, cells.late, cells.lag
        for outcome, (_, effect) in zip(_outcomes(before, values, out), values, strict=True):
            event = effect.event
            applied = outcome == "applied"
            at = event.occurred_at
            is_late = applied and max_at is not None and at < max_at
            if applied and not is_late:
                max_at = at
            if effect.kind is _INBOUND:
                continue
            key = (event.type, outcome)
            events[key] = events.get(key, 0) + 1
            if is_late:
                late[event.type] = late.get(event.type, 0) + 1
            if applied:
                lag.observe(max(0, now_ms - at) / 1000)

    # -- the sinks (bootstrap's counting wrapper calls these on the sink's worker thread)

    def dead_letter(self, letter: DeadLetter) -> None:
        """Count a refused input, and log it (at most one line per reason every 10 s)."""
        cells = self._mine()
        cells.dead_letters[letter.reason] = cells.dead_letters.get(letter.reason, 0) + 1
        now = time.monotonic()
        with self._lock:
            if now - self._last_warning.get(letter.reason, -1e9) < 10:
                self._suppressed[letter.reason] += 1
                return
            self._last_warning[letter.reason] = now
            suppressed = self._suppressed.pop(letter.reason, 0)
        _LOG.warning(
            "dead letter: %s",
            letter.detail,
            extra={
                "step": "dead_letters",
                "reason": letter.reason,
                "origin": letter.origin,
                "event_id": letter.event_id,
                "suppressed_since_last": suppressed,
            },
        )

    def decision(self, decision: ReservationDecision) -> None:
        """Count a reservation decision."""
        cells = self._mine()
        key = (decision.status.value, decision.reason)
        cells.decisions[key] = cells.decisions.get(key, 0) + 1
        if decision.status is DecisionStatus.REJECTED:
            _LOG.debug(
                "reservation rejected",
                extra={"step": "decisions", "reservation_id": decision.reservation_id, "reason": decision.reason},
            )

    # -- the snapshot sink (a PublishObserver)

    def published(
        self, snapshot_id: int | None, changes: Sequence[PositionChange], rows: int, seconds: float, at: Millis
    ) -> None:
        """One publish: its id, the changes it holds, rows and time; an id of None is a heartbeat.

        A heartbeat (nothing new to write) still says the newest snapshot is current at `at`.
        """
        self._heartbeat_at = at / 1000
        if snapshot_id is None:
            return
        self.snapshots.inc()
        self.publish_seconds.observe(seconds)
        self.changed_rows.observe(rows)
        e2e = self._mine().e2e
        for change in changes:
            if change.max_occurred_at > 0:
                e2e.observe(max(0, at - change.max_occurred_at) / 1000)
        self._published_at = at / 1000
        _LOG.debug(
            "snapshot published",
            extra={"step": "snapshots", "snapshot_id": snapshot_id, "rows": rows, "seconds": round(seconds, 4)},
        )

    def compacted(self, report: FoldReport) -> None:
        """One fold of a writer's recent positions into its base (the snapshot sink logs it too)."""
        self.fold_seconds.labels("read").observe(report.read_seconds)
        self.fold_seconds.labels("commit").observe(report.commit_seconds)
        self.folded_rows.inc(report.rows)

    def maintained(self, report: MaintenanceReport, reason: str) -> None:
        """One maintenance run of the snapshot store, and why it ran."""
        self.maintenance_seconds.labels(reason).observe(report.seconds)
        _LOG.info(
            "snapshot store maintained",
            extra={
                "step": "snapshots",
                "reason": reason,
                "seconds": round(report.seconds, 3),
                "files_before": report.files_before,
                "files_after": report.files_after,
            },
        )

    # -- Kafka (the source partition reports after each poll)

    def consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        """The input partition's lag in messages."""
        self.kafka_lag.labels(topic, str(partition)).set(lag)

    # -- the scrape

    def describe(self) -> Iterable[Metric]:
        return list(self._families([]))

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            cells = list(self._cells)
        return list(self._families(cells))

    def _families(self, cells: list[_WorkerCells]) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "omni_ledger_events",
            "Events taken in by the fold, by type and outcome: applied, duplicate (an id already seen at the "
            "position), too_late (older than the lateness window; also a dead letter).",
            labels=["type", "outcome"],
        )
        late = CounterMetricFamily(
            "omni_ledger_late_events",
            "Events applied out of order: older than the newest event already at their position, "
            "within the lateness window.",
            labels=["type"],
        )
        dead = CounterMetricFamily(
            "omni_ledger_dead_letters", "Inputs refused to the dead-letter output, by reason.", labels=["reason"]
        )
        decisions = CounterMetricFamily(
            "omni_ledger_reservation_decisions",
            "Reservation decisions by status and reason.",
            labels=["status", "reason"],
        )
        effects = CounterMetricFamily(
            "omni_ledger_worker_effects",
            "Effects (an event's part at one site) folded by each worker thread of this process.",
            labels=["worker"],
        )
        positions = GaugeMetricFamily(
            "omni_ledger_positions", "(site, sku) positions held by each worker thread.", labels=["worker"]
        )
        negative = GaugeMetricFamily("omni_ledger_negative_positions", "Positions whose on hand is below zero.")
        sums: dict[str, Tally[Any]] = {"events": Tally(), "late": Tally(), "dead": Tally(), "decisions": Tally()}
        sums["events"].update({(t.value, o): 0 for t in EventType for o in OUTCOMES})
        sums["late"].update({t.value: 0 for t in EventType})
        sums["dead"].update({r: 0 for r in Reason.ALL})
        sums["decisions"].update({(s.value, r): 0 for s, r in _DECISIONS})
        by_worker: dict[str, list[int]] = {}
        total_negative = 0
        for cell in cells:
            # dict(): a copy taken in one C call, while the worker may be adding a key.
            sums["events"].update(dict(cell.events))
            sums["late"].update(dict(cell.late))
            sums["dead"].update(dict(cell.dead_letters))
            sums["decisions"].update(dict(cell.decisions))
            counts = by_worker.setdefault(cell.worker, [0, 0])
            counts[0] += cell.effects
            counts[1] += cell.positions
            total_negative += cell.negative
        for (kind, outcome), n in sorted(sums["events"].items()):
            events.add_metric([kind, outcome], n)
        for kind, n in sorted(sums["late"].items()):
            late.add_metric([kind], n)
        for reason, n in sorted(sums["dead"].items()):
            dead.add_metric([reason], n)
        for (status, reason), n in sorted(sums["decisions"].items()):
            decisions.add_metric([status, reason], n)
        for label, (n_effects, n_positions) in sorted(by_worker.items()):
            effects.add_metric([label], n_effects)
            positions.add_metric([label], n_positions)
        negative.add_metric([], total_negative)
        yield from (events, late, dead, decisions, effects, positions, negative)
        yield _histogram(
            "omni_ledger_event_lag_seconds",
            "Event-time lag: the wall clock minus the event's occurred_at when the fold applies it.",
            LAG_BUCKETS,
            (c.lag for c in cells),
        )
        yield _histogram(
            "omni_ledger_end_to_end_latency_seconds",
            "From the occurred_at of the newest event behind a published position change to the commit "
            "of the snapshot that shows it.",
            E2E_BUCKETS,
            (c.e2e for c in cells),
        )
        # Absent until known: a zero would read as a snapshot 56 years old.
        if self._published_at is not None:
            stamp = GaugeMetricFamily(
                "omni_ledger_snapshot_published_timestamp_seconds",
                "Commit time of the newest snapshot this process published (Unix seconds).",
            )
            stamp.add_metric([], self._published_at)
            yield stamp
        if self._heartbeat_at is not None:
            beat = GaugeMetricFamily(
                "omni_ledger_snapshot_heartbeat_timestamp_seconds",
                "Last time this process confirmed its newest snapshot is current: a publish, or a heartbeat "
                "when there was nothing new (Unix seconds). The snapshot's age counts from here.",
            )
            beat.add_metric([], self._heartbeat_at)
            yield beat


_flow: FlowMetrics | None = None
_flow_lock = threading.Lock()


def flow_metrics() -> FlowMetrics:
    """The process's `FlowMetrics`, in `REGISTRY` (created on first use)."""
    global _flow
    with _flow_lock:
        if _flow is None:
            _flow = FlowMetrics(REGISTRY)
        return _flow
