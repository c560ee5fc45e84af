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
and `omni_ledger_api_snapshot_heartbeat_timestamp_seconds` (of the snapshot it serves);
with its read model, `omni_ledger_read_model_refresh_duration_seconds` [load] and
`omni_ledger_read_model_visible_delay_seconds` (histograms),
`omni_ledger_read_model_refresh_cpu_seconds_total`, `omni_ledger_read_model_behind_seconds`.
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

The package: `server` (the registry and the `/metrics` endpoint), `flow` (what the fold
counts), `serving` (what the API counts).
"""

from __future__ import annotations

from omni_ledger.metrics.flow import FlowMetrics, flow_metrics
from omni_ledger.metrics.server import REGISTRY, serve_metrics
from omni_ledger.metrics.serving import ServingSnapshot, instrument_app, watch_serving_store

__all__ = [
    "REGISTRY",
    "FlowMetrics",
    "ServingSnapshot",
    "flow_metrics",
    "instrument_app",
    "serve_metrics",
    "watch_serving_store",
]
