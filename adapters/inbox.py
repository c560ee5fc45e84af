"""Where the API puts the events a confirm (or a clerk's click) emits: the flow's own input.

The service never changes stock itself: it appends events to the input the flow folds,
and the fold decides. Embedded, that input is a JSON-lines file the flow follows
(`omni-ledger run --source file:DIR/inbox.jsonl --follow`); on Kafka, the
`inventory.events` topic.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from adapters.avro_wire import WireCodec
from adapters.kafka_io import EventProducer
from ledger.contract import event_to_record
from ledger.errors import SourceError
from ledger.events import InventoryEvent

__all__ = ["EventInbox", "JsonLinesInbox", "KafkaInbox"]


class EventInbox(Protocol):
    """Sends events to the flow's input; returns once they are durable there."""

    def send(self, events: Sequence[InventoryEvent]) -> None: ...

    def close(self) -> None: ...

    @property
    def description(self) -> str: ...


class JsonLinesInbox:
    """Appends events as JSON lines to a file the flow follows."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            # O_APPEND: each write lands whole at the end, even with other writers.
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            msg = f"cannot open the event inbox {self._path}: {exc.strerror}"
            raise SourceError(msg) from exc

    @property
    def description(self) -> str:
        return f"file {self._path}"

    def send(self, events: Sequence[InventoryEvent]) -> None:
        if not events:
            return
        lines = b"".join(json.dumps(event_to_record(event), separators=(",", ":")).encode() + b"\n" for event in events)
        with self._lock:
            try:
                # One write for the batch: the follower never sees half of a confirm.
                written = os.write(self._fd, lines)
                os.fsync(self._fd)
            except OSError as exc:
                msg = f"cannot append to the event inbox {self._path}: {exc.strerror}"
                raise SourceError(msg) from exc
        if written != len(lines):
            msg = f"short write to the event inbox {self._path} ({written} of {len(lines)} bytes); check the disk"
            raise SourceError(msg)

    def close(self) -> None:
        os.close(self._fd)


class KafkaInbox:
    """Produces events, Avro-encoded and keyed `site_id|sku`, to the input topic."""

    def __init__(self, config: dict[str, str], topic: str, codec: WireCodec) -> None:
        self._producer = EventProducer(config, topic)
        self._codec = codec
        self._topic = topic
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        return f"Kafka topic {self._topic}"

    def send(self, events: Sequence[InventoryEvent]) -> None:
        with self._lock:
            for event in events:
                self._producer.send(f"{event.site_id}|{event.sku}".encode(), self._codec.encode(event))
            self._producer.flush(timeout=10.0)

    def close(self) -> None:
        with self._lock:
            self._producer.flush(timeout=10.0)
