"""What the API counts: request durations by route template, and the snapshot it serves."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from omni_ledger.metrics.server import REGISTRY

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from adapters.atp_view import ServingStore

__all__ = ["HTTP_BUCKETS", "ServingSnapshot", "instrument_app", "watch_serving_store"]

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

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
