"""Builds the promise service from settings and runs the HTTP server (`omni-ledger serve`).

With `serve.bus = "file"` (embedded, no broker) a confirm appends to `DIR/inbox.jsonl`
and waits on `DIR/decisions.jsonl`: run the flow beside it with
`omni-ledger run --source file:DIR/inbox.jsonl --follow`. With `serve.bus = "kafka"`
it produces to `inventory.events` and follows `reservation.decisions`.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.decision_feed import DecisionFeed, JsonLinesDecisionFeed, KafkaDecisionFeed
from adapters.inbox import EventInbox, JsonLinesInbox, KafkaInbox
from adapters.network_file import load_network
from adapters.snapshot_store.read_model import ReadModel
from adapters.snapshot_store.serving import ServingStore, SnapshotMeta
from ledger.network import Network
from omni_ledger.collector import tune_collector
from omni_ledger.config import Settings
from omni_ledger.metrics import watch_serving_store
from omni_ledger.service import LedgerService

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["INBOX", "inbox_path", "open_inbox", "open_service", "serve", "worker_app"]

INBOX = "inbox.jsonl"

REFRESH_SWITCH_INTERVAL_S = 0.0005
"""The interpreter's switch interval while the read model refreshes: its DuckDB statements take
the GIL back after every task, each time behind the request thread; at the default 5 ms a
refresh's wall was ~1.6 s p50 against ~1.0 s at 0.5 ms in `make bench-serve` (docs/serving.md)."""


def inbox_path(settings: Settings) -> Path:
    """The events file an embedded flow follows and the service appends to."""
    return settings.snapshot_dir / INBOX


def open_inbox(settings: Settings) -> EventInbox:
    """Where events for the flow go: the followed inbox file, or the Kafka input topic."""
    if settings.serve.bus == "kafka":
        from adapters.avro_wire import wire_codec

        kafka = settings.kafka
        return KafkaInbox(kafka.client_config(), kafka.topic("inventory.events"), wire_codec(kafka))
    return JsonLinesInbox(inbox_path(settings))


class _StoreWithModel(ServingStore):
    """The store watch; asked directly to refresh (`service.store.refresh()`), it brings the read model along.

    A caller that waited for the flow and refreshes the store expects its next read to
    see that snapshot (the demo does): without this it would read the model's previous
    view until the model's own follower caught up. The watch's own polling thread does
    not wait for the model (the model follows on its own).
    """

    def __init__(self, directory: Path, model: ReadModel) -> None:
        self._model = model
        super().__init__(directory)

    def refresh(self) -> SnapshotMeta | None:
        meta = super().refresh()
        if threading.current_thread() is not getattr(self, "_thread", None):
            self._model.refresh()
        return meta


@contextlib.contextmanager
def open_service(
    settings: Settings, network: Network | None = None, *, read_model: bool = True
) -> Iterator[LedgerService]:
    """The service over the snapshot store and the bus the settings name; closed on exit.

    `read_model`: answer availability and promises from an in-memory `ReadModel` that
    follows the store (False: query DuckLake per request, as before; kept for comparison).
    """
    network = network or load_network(settings.serve.network)
    model = ReadModel.open(settings.snapshot_dir, process=settings.serve.refresh_process) if read_model else None
    try:
        store = ServingStore(settings.snapshot_dir) if model is None else _StoreWithModel(settings.snapshot_dir, model)
    except BaseException:
        if model is not None:
            model.close()
        raise
    inbox: EventInbox
    decisions: DecisionFeed
    try:
        if model is not None:
            model.follow(switch_interval=REFRESH_SWITCH_INTERVAL_S)
        inbox = open_inbox(settings)
        if settings.serve.bus == "kafka":
            kafka = settings.kafka
            decisions = KafkaDecisionFeed(kafka.client_config(), kafka.topic("reservation.decisions"))
        else:
            decisions = JsonLinesDecisionFeed(settings.snapshot_dir / "decisions.jsonl")
    except BaseException:
        if model is not None:
            model.close()
        store.close()
        raise
    try:
        yield LedgerService(network, store, inbox, decisions, settings.serve, read_model=model)
    finally:
        decisions.close()
        inbox.close()
        if model is not None:
            model.close()
        store.close()


_WORKER_SETTINGS = "OMNI_LEDGER_WORKER_SETTINGS"
_WORKER_READ_MODEL = "OMNI_LEDGER_WORKER_READ_MODEL"


def worker_app() -> FastAPI:
    """The app of one worker process of `serve(workers=N)`: its own service, store watch and read model.

    uvicorn starts each worker as a new interpreter (spawn) and calls this factory there;
    the settings come from the parent through the environment, which only its children see.
    """
    from omni_ledger.api import create_app

    settings = pickle.loads(base64.b64decode(os.environ[_WORKER_SETTINGS]))  # written by our parent process
    if not isinstance(settings, Settings):
        msg = f"{_WORKER_SETTINGS} does not hold omni-ledger settings: start workers with serve(settings, workers=N)"
        raise TypeError(msg)
    resources = contextlib.ExitStack()
    service = resources.enter_context(open_service(settings, read_model=os.environ.get(_WORKER_READ_MODEL) != "0"))
    app = create_app(service)
    app.router.on_shutdown.append(resources.close)
    watch_serving_store(service.store, service.read_model)
    tune_collector()  # the network and the first read model loaded: out of the collector's reach
    return app


def serve(settings: Settings, *, read_model: bool = True, workers: int = 1) -> None:
    """Run the HTTP API until interrupted, in `workers` processes sharing the port.

    Each worker holds its own read model (a copy per process: see the README's figures
    on why a copy, not a shared memory map). The write path needs nothing shared: every
    worker appends to the same inbox and follows the same decisions, and the fold decides.
    """
    import uvicorn

    from omni_ledger.api import create_app

    if workers < 1:
        msg = f"serve needs at least 1 worker, got {workers}"
        raise ValueError(msg)
    if workers > 1:
        os.environ[_WORKER_SETTINGS] = base64.b64encode(pickle.dumps(settings)).decode()
        os.environ[_WORKER_READ_MODEL] = "1" if read_model else "0"
        uvicorn.run(
            "omni_ledger.serving:worker_app",
            factory=True,
            workers=workers,
            host=settings.serve.host,
            port=settings.serve.port,
            log_level=_uvicorn_level(),
            log_config=None,
            timeout_keep_alive=5,
            limit_concurrency=256,
            # A worker loads its read model before it answers: minutes at 20M positions.
            timeout_worker_healthcheck=900,
        )
        return
    with open_service(settings, read_model=read_model) as service:
        app = create_app(service)
        watch_serving_store(service.store, service.read_model)
        tune_collector()  # the network and the first read model loaded: out of the collector's reach
        config = uvicorn.Config(
            app,
            host=settings.serve.host,
            port=settings.serve.port,
            log_level=_uvicorn_level(),
            log_config=None,  # uvicorn's records go through our handler (omni_ledger.logs): JSON or text
            # Bounded: a slow client cannot hold the server's threads forever.
            timeout_keep_alive=5,
            limit_concurrency=256,
        )
        uvicorn.Server(config).run()


def _uvicorn_level() -> str:
    """uvicorn's own level follows ours: at WARNING, one line per request would flood `make run`'s terminal."""
    return logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
