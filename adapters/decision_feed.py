"""The fold's reservation decisions, followed live so a confirm can answer with its decision.

Embedded, the flow writes `DIR/decisions.jsonl`; on Kafka, `reservation.decisions`.
A feed follows one of them from where it was when opened, in a background thread, and
keeps the recent decisions by reservation id: `wait` returns as soon as the fold has
decided, or None at the timeout. It never reads a snapshot: the fold decides, not a
reader of a possibly stale view.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, TopicPartition

from adapters.kafka_records import SingleObjectWriter
from ledger.errors import SourceError

__all__ = ["DecisionFeed", "JsonLinesDecisionFeed", "KafkaDecisionFeed"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KEEP = 100_000
"""Recent decisions remembered, so one that lands before its waiter is still found."""


class DecisionFeed(Protocol):
    def wait(self, reservation_id: str, timeout: float) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


class _Board:
    """Decisions by reservation id (first one wins), with waiters."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._changed = threading.Condition()

    def post(self, decision: dict[str, Any]) -> None:
        ref = str(decision.get("reservation_id"))
        with self._changed:
            # The answer to a request is its first decision; later ones (expiry...) are not.
            if ref not in self._seen:
                self._seen[ref] = decision
                if len(self._seen) > _KEEP:
                    self._seen.popitem(last=False)
            self._changed.notify_all()

    def wait(self, ref: str, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while ref not in self._seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)
            return self._seen[ref]


class JsonLinesDecisionFeed:
    """Follows `decisions.jsonl` from its current end."""

    def __init__(self, path: Path, poll_interval: float = 0.02) -> None:
        self._path = Path(path)
        self._board = _Board()
        self._stop = threading.Event()
        self._poll = poll_interval
        self._offset = self._path.stat().st_size if self._path.exists() else 0
        self._thread = threading.Thread(target=self._follow, name="decision-feed", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        pending = b""
        while not self._stop.is_set():
            try:
                size = self._path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size < self._offset:
                # The flow truncated an epoch it is about to replay: read the rewrite.
                self._offset, pending = size, b""
            if size > self._offset:
                with self._path.open("rb") as f:
                    f.seek(self._offset)
                    chunk = f.read(size - self._offset)
                self._offset += len(chunk)
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        self._board.post(_from_json(line))
            else:
                self._stop.wait(self._poll)

    def wait(self, reservation_id: str, timeout: float) -> dict[str, Any] | None:
        return self._board.wait(reservation_id, timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def _from_json(line: bytes) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(line)
    for name in ("expires_at", "decided_at"):
        value = record.get(name)
        if isinstance(value, str):
            record[name] = _millis(datetime.fromisoformat(value))
    return record


def _millis(moment: datetime) -> int:
    # Integer arithmetic: a float timestamp lands 1 ms low for some values.
    return (moment - _EPOCH) // timedelta(milliseconds=1)


class KafkaDecisionFeed:
    """Follows `reservation.decisions` from the end offsets it reads when opened."""

    def __init__(self, config: dict[str, str], topic: str, timeout: float = 10.0) -> None:
        self._board = _Board()
        self._stop = threading.Event()
        self._writer = SingleObjectWriter("reservation_decision.avsc")
        # No group commits: each API process reads every decision for its own waiters.
        self._consumer = Consumer(
            {**config, "group.id": f"omni-ledger-api-{uuid.uuid4().hex[:12]}", "enable.auto.commit": "false"}
        )
        metadata = self._consumer.list_topics(topic, timeout=timeout)
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            self._consumer.close()
            where = config.get("bootstrap.servers")
            msg = f"Kafka topic {topic!r} is missing at {where}: run `omni-ledger topics create`"
            raise SourceError(msg)
        # Explicit end offsets, not OFFSET_END: a decision produced before the first fetch
        # resolves "end" would otherwise be skipped.
        assignment = []
        for partition in sorted(described.partitions):
            _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            assignment.append(TopicPartition(topic, partition, high))
        self._consumer.assign(assignment)
        self._thread = threading.Thread(target=self._follow, name="decision-feed", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.1)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    time.sleep(0.1)
                continue
            value = message.value()
            if value:
                record = self._writer.decode(value)
                for name in ("expires_at", "decided_at"):
                    if isinstance(record.get(name), datetime):
                        record[name] = _millis(record[name])
                self._board.post(record)

    def wait(self, reservation_id: str, timeout: float) -> dict[str, Any] | None:
        return self._board.wait(reservation_id, timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._consumer.close()
