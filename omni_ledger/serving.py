"""Builds the promise service from settings and runs the HTTP server (`omni-ledger serve`).

With `serve.bus = "file"` (embedded, no broker) a confirm appends to `DIR/inbox.jsonl`
and waits on `DIR/decisions.jsonl`: run the flow beside it with
`omni-ledger run --source file:DIR/inbox.jsonl --follow`. With `serve.bus = "kafka"`
it produces to `inventory.events` and follows `reservation.decisions`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from adapters.atp_view import ServingStore
from adapters.decision_feed import DecisionFeed, JsonLinesDecisionFeed, KafkaDecisionFeed
from adapters.inbox import EventInbox, JsonLinesInbox, KafkaInbox
from adapters.read_model import ReadModel
from ledger.network import Network, load_network
from omni_ledger.config import Settings
from omni_ledger.metrics import watch_serving_store
from omni_ledger.service import LedgerService

__all__ = ["INBOX", "inbox_path", "open_inbox", "open_service", "serve"]

INBOX = "inbox.jsonl"


def inbox_path(settings: Settings) -> Path:
    """The events file an embedded flow follows and the service appends to."""
    return settings.snapshot_dir / INBOX


def open_inbox(settings: Settings) -> EventInbox:
    """Where events for the flow go: the followed inbox file, or the Kafka input topic."""
    if settings.serve.bus == "kafka":
        from omni_ledger.bootstrap import wire_codec

        kafka = settings.kafka
        return KafkaInbox(kafka.client_config(), kafka.topic("inventory.events"), wire_codec(kafka))
    return JsonLinesInbox(inbox_path(settings))


@contextlib.contextmanager
def open_service(
    settings: Settings, network: Network | None = None, *, read_model: bool = True
) -> Iterator[LedgerService]:
    """The service over the snapshot store and the bus the settings name; closed on exit.

    `read_model`: answer availability and promises from an in-memory `ReadModel` that
    follows the store (False: query DuckLake per request, as before; kept for comparison).
    """
    network = network or load_network(settings.serve.network)
    store = ServingStore(settings.snapshot_dir)
    model: ReadModel | None = None
    inbox: EventInbox
    decisions: DecisionFeed
    try:
        if read_model:
            model = ReadModel.open(settings.snapshot_dir)
            model.follow()
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


def serve(settings: Settings, *, read_model: bool = True) -> None:
    """Run the HTTP API until interrupted."""
    import uvicorn

    from omni_ledger.api import create_app

    with open_service(settings, read_model=read_model) as service:
        app = create_app(service)
        watch_serving_store(service.store)
        config = uvicorn.Config(
            app,
            host=settings.serve.host,
            port=settings.serve.port,
            log_level="info",
            log_config=None,  # uvicorn's records go through our handler (omni_ledger.logs): JSON or text
            # Bounded: a slow client cannot hold the server's threads forever.
            timeout_keep_alive=5,
            limit_concurrency=256,
        )
        uvicorn.Server(config).run()
