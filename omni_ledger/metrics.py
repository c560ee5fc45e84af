"""Prometheus metrics of omni-ledger: the registry, what the flow and the API count, `/metrics`.

Every long-running process (`omni-ledger run`, `omni-ledger serve`) serves its own
`/metrics` on `metrics.host:metrics.port` (`--metrics-port`; 0, the default, serves
nothing). Names follow Prometheus conventions: base units (`_seconds`), `_total`
counters, bounded labels (never a sku, a site or an event id).

The flow (`omni-ledger run`), labels in brackets:

- `omni_ledger_events_total` [type, outcome]: events taken in by the fold; outcome
  `applied`, `duplicate` (an id already seen at the position) or `too_late`.
- `omni_ledger_late_events_total` [type]: applied, but older than the newest event
  already at their position (out of order, within the lateness window).
- `omni_ledger_dead_letters_total` [reason]; `omni_ledger_reservation_decisions_total`
  [status, reason].
- `omni_ledger_event_lag_seconds` (histogram): the wall clock minus `occurred_at` when
  an event is applied.
- `omni_ledger_end_to_end_latency_seconds` (histogram): snapshot commit time minus the
  `occurred_at` of the newest event behind each published position change.
- `omni_ledger_snapshot_publish_duration_seconds`, `omni_ledger_snapshot_changed_rows`
  (histograms: rows written per snapshot), `omni_ledger_snapshots_published_total`.
- `omni_ledger_snapshot_published_timestamp_seconds`: commit time of the newest
  snapshot; `omni_ledger_snapshot_heartbeat_timestamp_seconds`: when the flow last
  confirmed it current (a publish, or a heartbeat when idle). Both absent until known.
- `omni_ledger_positions` [worker], `omni_ledger_negative_positions`,
  `omni_ledger_worker_effects_total` [worker] (effects folded: the workers' balance).
- `omni_ledger_kafka_consumer_lag_messages` [topic, partition]: the partition's high
  watermark minus the next offset to read.

The API (`omni-ledger serve`): `omni_ledger_http_request_duration_seconds` [method,
route (the template), status], `omni_ledger_api_snapshot_published_timestamp_seconds`
and `omni_ledger_api_snapshot_heartbeat_timestamp_seconds` (of the snapshot it serves).
Both: `omni_ledger_snapshot_max_age_seconds` (`serve.max_snapshot_age`: past it /health
answers 503 and the stale-snapshot alert fires), `omni_ledger_build_info` [version,
command], and the client's `process_*` and `python_*` metrics.

Threads and processes. The fold's counters are written on the hot path of every worker
thread: each thread adds to its own plain cells (no lock, no contention) and a scrape
sums every thread's cells, so with `--workers N` one endpoint reports the process's
totals, and the per-thread `worker` label shows the balance. The rest are
prometheus-client metrics, thread-safe by their own locks. Several processes each
serve their own endpoint, and Prometheus adds them up: `sum by (type, outcome)
(rate(omni_ledger_events_total[1m]))` across instances.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import metadata
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ledger.dead_letter import DeadLetter, Reason
from ledger.effects import Effect, EffectKind
from ledger.errors import ConfigError
from ledger.events import EventType, Millis
from ledger.outputs import DecisionStatus, FoldTally, PositionChange, ReservationDecision
from ledger.position import Position
from omni_ledger.logs import worker

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from adapters.snapshot_store import MaintenanceReport
    from adapters.snapshot_store.serving import ServingStore

__all__ = [
    "REGISTRY",
    "FlowMetrics",
    "ServingSnapshot",
    "flow_metrics",
    "instrument_app",
    "serve_metrics",
    "watch_serving_store",
]

# `_created` series double every counter and histogram for a feature no query here uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry()
"""The registry `/metrics` serves: ours, plus the process, platform and GC collectors."""
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

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
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_INBOUND = EffectKind.INBOUND


class _Buckets:
    """A histogram's cells in one thread: counts per bucket (the last is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # `le` buckets: the first bound >= value.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


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
        self.kafka_lag = Gauge(
            "omni_ledger_kafka_consumer_lag_messages",
            "Messages in the input partition not read yet: its high watermark minus the next offset to read.",
            ["topic", "partition"],
            registry=registry,
        )
        registry.register(self)

    # -- the fold (a FoldObserver: flows.logic calls it on the worker thread, per batch)

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

    def resumed(self, position: Position) -> None:
        """A position came back from recovery state on this worker."""
        cells = self._mine()
        cells.positions += 1
        if position.on_hand < 0:
            cells.negative += 1

    def folded(
        self,
        before: Position | None,
        values: Sequence[tuple[Millis, Effect]],
        after: Position,
        out: Sequence[object],
    ) -> None:
        """One fold call: `values` took the position from `before` to `after`, emitting `out`."""
        cells = self._mine()
        now_ms = int(self._clock() * 1000)
        if before is None:
            cells.positions += 1
            was_negative, max_at = False, None
        else:
            was_negative, max_at = before.on_hand < 0, before.max_at
        is_negative = after.on_hand < 0
        if is_negative != was_negative:
            cells.negative += 1 if is_negative else -1
        cells.effects += len(values)
        tally = out[-1] if out else None
        if isinstance(tally, FoldTally) and (tally.duplicates or tally.too_late):
            self._count_mixed(cells, before, values, out, now_ms)
            return
        # Every effect applied (the common case): one pass, the histogram inlined.
        events, late, lag = cells.events, cells.late, cells.lag
        bounds, buckets, total = lag.bounds, lag.counts, lag.total
        for _, effect in values:
            event = effect.event
            at = event.occurred_at
            is_late = max_at is not None and at < max_at
            if not is_late:
                max_at = at
            if effect.kind is _INBOUND:
                continue  # a move's destination leg: the event is counted at its origin
            key = (event.type, "applied")
            events[key] = events.get(key, 0) + 1
            if is_late:
                late[event.type] = late.get(event.type, 0) + 1
            seconds = (now_ms - at) / 1000 if at < now_ms else 0.0
            buckets[bisect_left(bounds, seconds)] += 1
            total += seconds
        lag.total = total

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


# -- the API ----------------------------------------------------------------------------------

_HTTP_SECONDS = Histogram(
    "omni_ledger_http_request_duration_seconds",
    "HTTP requests to the API by method, route template and status, and how long they took.",
    ["method", "route", "status"],
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)


class _Instrumented:
    """ASGI middleware: times every HTTP request and labels it with its route template."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before it starts a response, the server answers 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The router put the matched route in the scope: its template, never the raw
            # path, keeps the label bounded (/v1/skus/{sku}/availability, not every sku).
            route = scope.get("route")
            template = getattr(route, "path", None)
            if template is None and scope.get("endpoint") is not None and scope.get("root_path"):
                # A mounted app (the console's files): the router set its prefix, not a route.
                template = f"{scope['root_path']}/{{file}}"
            template = template or "unmatched"
            self.histogram.labels(scope["method"], template, str(status)).observe(time.perf_counter() - started)


def instrument_app(app: Any, histogram: Histogram = _HTTP_SECONDS) -> None:
    """Time every request of the FastAPI `app` into `omni_ledger_http_request_duration_seconds`."""
    app.add_middleware(_Instrumented, histogram=histogram)


class ServingSnapshot(Collector):
    """The commit time of the snapshot the API serves, read from its store at each scrape."""

    def __init__(self) -> None:
        self.store: ServingStore | None = None

    def collect(self) -> Iterable[Metric]:
        published, heartbeat = self._families()
        current = self.store.current if self.store is not None else None
        if current is not None:
            published.add_metric([], current.created_at / 1000)
            # The flow's heartbeat: when it last confirmed this snapshot is its newest.
            confirmed = max(getattr(current, "current_at", 0) or 0, current.created_at)
            heartbeat.add_metric([], confirmed / 1000)
        return [published, heartbeat]

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "omni_ledger_api_snapshot_published_timestamp_seconds",
                "Commit time of the newest snapshot the API serves (Unix seconds).",
            ),
            GaugeMetricFamily(
                "omni_ledger_api_snapshot_heartbeat_timestamp_seconds",
                "Last time the flow confirmed the snapshot the API serves is its newest (Unix seconds): "
                "the age /health reports counts from here.",
            ),
        )


_SERVING = ServingSnapshot()
REGISTRY.register(_SERVING)


def watch_serving_store(store: ServingStore) -> None:
    """Report the snapshot `store` serves (the latest call wins)."""
    _SERVING.store = store


# -- both processes ---------------------------------------------------------------------------

_MAX_AGE = Gauge(
    "omni_ledger_snapshot_max_age_seconds",
    "Age past which a snapshot is stale (serve.max_snapshot_age): /health answers 503 and the alert fires.",
    registry=REGISTRY,
)
_BUILD = Info("omni_ledger_build", "The running omni-ledger: its version and command.", registry=REGISTRY)


def _version() -> str:
    try:
        return metadata.version("omni-ledger")
    except metadata.PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def serve_metrics(
    host: str, port: int, *, command: str, max_snapshot_age: timedelta, registry: CollectorRegistry = REGISTRY
) -> Iterator[str | None]:
    """Serve `registry` at `http://host:port/metrics` while the block runs; yields that URL.

    Port 0 serves nothing (yields None). A port in use is a `ConfigError` naming the fix.
    """
    _BUILD.info({"version": _version(), "command": command})
    _MAX_AGE.set(max_snapshot_age.total_seconds())
    if port == 0:
        yield None
        return
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        msg = (
            f"metrics.port: cannot serve /metrics on {host}:{port}: {exc.strerror}; "
            "pick a free port with --metrics-port (or OMNI_LEDGER_METRICS_PORT), or 0 for none"
        )
        raise ConfigError(msg) from exc
    url = f"http://{host}:{server.server_address[1]}/metrics"
    _LOG.info("metrics at %s", url, extra={"metrics_url": url})
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
