"""A running ledger behind the HTTP API, for the API and console tests: embedded flow, service, uvicorn."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import uvicorn

from adapters.network_file import load_network
from ledger.confirm import open_slots_events
from ledger.contract import event_to_record
from ledger.events import EventType, InventoryEvent
from omni_ledger.api import create_app
from omni_ledger.config import Secret, ServeSettings, Settings, SnapshotSettings
from omni_ledger.embedded import EmbeddedFlow, embedded_flow
from omni_ledger.service import LedgerService
from omni_ledger.serving import open_service

NETWORK = Path(__file__).resolve().parents[1] / "examples" / "network.toml"
WRITE = "write-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"
LYON = {"lat": 45.7606, "lon": 4.8598}  # Mme Martin, next to STORE-LYON-PART-DIEU
DAY_MS = 86_400_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """uvicorn serving an app on loopback in a thread, for real HTTP requests."""

    def __init__(self, service: LedgerService) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(service), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def seed_events(now: int) -> list[InventoryEvent]:
    def stock(site: str, sku: str, qty: int, kind: EventType = EventType.COUNTED, **extra: object) -> InventoryEvent:
        return InventoryEvent(
            event_id=f"seed:{site}:{sku}", type=kind, occurred_at=now - 60_000, site_id=site, sku=sku, qty=qty,
            source="TEST", **extra,  # type: ignore[arg-type]
        )  # fmt: skip

    network = load_network(NETWORK)
    return [
        stock("STORE-LYON-PART-DIEU", "PHONE-A", 2),
        stock("STORE-GRENOBLE", "PHONE-A", 0),  # a source that cannot serve: explained
        stock("STORE-VIENNE", "PHONE-B", 1),  # the last unit two customers race for
        stock("DC-LYON-EST", "PHONE-B", 3),  # the next best source
        stock("SUP-ACME", "PHONE-C", 5),
        stock("SELLER-PHONEHUB", "PHONE-A", 4, EventType.OFFER_UPDATED, price=449.0, lead_time_days=3),
        *open_slots_events(network, now, now + 3 * DAY_MS, now - 60_000),
    ]


@dataclass
class Stack:
    url: str
    service: LedgerService
    flow: EmbeddedFlow
    directory: Path
    settings: Settings


@contextlib.contextmanager
def running_stack(directory: Path) -> Iterator[Stack]:
    """Seed stock and slots, run the flow on them, and serve the API on loopback until the block ends."""
    now = time.time_ns() // 1_000_000
    seed = seed_events(now)
    (directory / "inbox.jsonl").write_text("".join(json.dumps(event_to_record(e)) + "\n" for e in seed))
    settings = Settings(
        snapshots=SnapshotSettings(dir=directory),
        serve=ServeSettings(
            network=NETWORK,
            write_tokens=(Secret(WRITE),),
            read_tokens=(Secret(READ),),
            confirm_timeout=timedelta(seconds=20),
        ),
    )
    with embedded_flow(directory) as flow:
        flow.wait_applied(len(seed))
        with open_service(settings) as service:
            server = Server(service)
            try:
                yield Stack(server.url, service, flow, directory, settings)
            finally:
                server.stop()
