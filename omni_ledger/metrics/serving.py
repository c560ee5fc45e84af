"""What the API counts: request durations by route template, and the snapshot it serves."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    Counter,
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from omni_ledger.metrics.server import REGISTRY

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from adapters.snapshot_store.read_model import ReadModel, Refreshed
    from adapters.snapshot_store.serving import ServingStore

__all__ = ["HTTP_BUCKETS", "ServingSnapshot", "instrument_app", "watch_serving_store"]

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

_HTTP_SECONDS = Histogram(
    "omni_ledger_http_request_duration_seconds",
    "HTTP requests to the API by method, route template and status, and how long they took.",
    ["method", "route", "status"],
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)

# Publish -> visible is issue 15's 1 s target; a refresh at 20M positions is ~0.3 s alone, seconds under load.
_REFRESH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_REFRESH_SECONDS = Histogram(
    "omni_ledger_read_model_refresh_duration_seconds",
    "Wall time of each read-model refresh that swapped in a new view, by load "
    "(changes: the snapshots' change feed; whole: the whole store read again).",
    ["load"],
    buckets=_REFRESH_BUCKETS,
    registry=REGISTRY,
)
_REFRESH_CPU = Counter(
    "omni_ledger_read_model_refresh_cpu_seconds",
    "CPU of the refreshing thread over those refreshes: far below their wall time, refreshes wait "
    "for a core or for the GIL behind the request threads.",
    registry=REGISTRY,
)
_VISIBLE_SECONDS = Histogram(
    "omni_ledger_read_model_visible_delay_seconds",
    "From a snapshot's publish (its created_at, stamped by the flow) to the read model answering from it.",
    buckets=_REFRESH_BUCKETS,
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
    """The commit time of the snapshot the API serves, read from its store at each scrape, and
    how far the read model (when it answers) is behind that snapshot."""

    def __init__(self) -> None:
        self.store: ServingStore | None = None
        self.model: ReadModel | None = None

    def collect(self) -> Iterable[Metric]:
        published, heartbeat, behind, cursor = self._families()
        current = self.store.current if self.store is not None else None
        if current is not None:
            published.add_metric([], current.created_at / 1000)
            # The flow's heartbeat: when it last confirmed this snapshot is its newest.
            confirmed = max(getattr(current, "current_at", 0) or 0, current.created_at)
            heartbeat.add_metric([], confirmed / 1000)
            last = self.model.refreshes[-1] if self.model is not None and self.model.refreshes else None
            if last is not None and last.published_at is not None:
                # The store watch and the model poll apart: a view newer than the watch is not behind.
                behind.add_metric([], max(0, current.created_at - last.published_at) / 1000)
        resident = self.model.cursor_process_resident if self.model is not None else None
        if resident is not None:
            cursor.add_metric([], resident)
        return [published, heartbeat, behind, cursor]

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
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
            GaugeMetricFamily(
                "omni_ledger_read_model_behind_seconds",
                "How much older the read model's view is than the newest snapshot the API sees (the two "
                "publishes' created_at apart; 0 when it answers from it). Absent without a read model.",
            ),
            GaugeMetricFamily(
                "omni_ledger_read_model_cursor_process_resident_bytes",
                "Resident memory of the child process that runs the read model's refresh statements "
                "(serve.refresh_process), not counted in this process's process_resident_memory_bytes. "
                "Absent without one.",
            ),
        )


_SERVING = ServingSnapshot()
REGISTRY.register(_SERVING)


def watch_serving_store(store: ServingStore, model: ReadModel | None = None) -> None:
    """Report the snapshot `store` serves and, with the read model that answers from it, its refreshes
    (the latest call wins)."""
    _SERVING.store, _SERVING.model = store, model
    if model is not None:
        model.on_refresh = observe_refresh


def observe_refresh(refreshed: Refreshed) -> None:
    """Count one read-model refresh (called on the model's refreshing thread)."""
    _REFRESH_SECONDS.labels("whole" if refreshed.whole else "changes").observe(refreshed.wall_s)
    _REFRESH_CPU.inc(refreshed.cpu_s)
    visible = refreshed.visible_after_s
    if visible is not None:
        _VISIBLE_SECONDS.observe(visible)
