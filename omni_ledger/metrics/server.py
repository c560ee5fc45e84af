"""The registry every omni-ledger metric is in, and the `/metrics` endpoint that serves it.

Each long-running process (`run`, `serve`) serves its own endpoint on
`metrics.host:metrics.port`; 0, the default, serves nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import timedelta
from importlib import metadata

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Gauge,
    Info,
    disable_created_metrics,
    start_http_server,
)

from ledger.errors import ConfigError

__all__ = ["REGISTRY", "serve_metrics"]

# `_created` series double every counter and histogram for a feature no query here uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry()
"""The registry `/metrics` serves: ours, plus the process, platform and GC collectors."""
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)


_LOG = logging.getLogger("omni_ledger.metrics")

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
