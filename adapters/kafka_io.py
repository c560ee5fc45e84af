"""Kafka in and out: the admin checks, a resumable source, an at-least-once sink.

The only module that imports confluent_kafka. Its errors become `SourceError` with a
message that says what to do; a wrong password or an unreachable cluster fails within
seconds instead of hanging.

- `KafkaEventSource`: one Bytewax partition per topic partition, read with `assign()`
  at an explicit offset (no consumer group: the resume offset lives in Bytewax's
  recovery state, committed with the epoch it belongs to). Transient errors (a broker
  restarting) are waited out by librdkafka; fatal ones stop the flow with a message.
- `KafkaOutSink`: produces asynchronously with bounded buffering (librdkafka's queue),
  and blocks only when an epoch ends (`snapshot`), until every message of the epoch is
  acknowledged. Bytewax's own KafkaSink flushes after every batch instead, a round trip
  per ~1,000 messages; here a crash can only replay an epoch (at-least-once), and every
  consumer of our topics applies by key and version.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from adapters.clock import Clock
from adapters.codec import RawInput
from adapters.shutdown import StopFlag
from ledger._frozen import fast_init
from ledger.errors import SourceError

__all__ = [
    "READ_SIZE",
    "STALL_AFTER_S",
    "TOPICS",
    "EventProducer",
    "KafkaAdmin",
    "KafkaEventSource",
    "KafkaOutSink",
    "KafkaResume",
    "LagCallback",
    "OutMessage",
    "RendersMany",
    "resume_of",
]

TOPICS = {
    "inventory.events": {},
    "inventory.events.dlq": {"retention.ms": str(30 * 24 * 3_600_000)},
    # Compacted: the latest change per site|sku is kept, so a snapshot can be rebuilt from it.
    "atp.changes": {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "3600000"},
    "reservation.decisions": {},
    # Compacted too: each record is the whole state of one piece of work (key task_id,
    # parcel_id, order_ref). Caution: compaction keeps a key's last record, and a key's
    # records come from two sites' folds (a load's LOADED from its origin, ARRIVED from
    # its destination) in either order; consumers keep the highest rank.
    "store.tasks": {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "3600000"},
    "transport.loads": {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "3600000"},
    "dropship.orders": {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "3600000"},
}
"""Topic names (before the configured prefix) and their configs."""

_FATAL = {
    KafkaError._AUTHENTICATION,
    KafkaError._SSL,
    KafkaError._FATAL,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._AUTO_OFFSET_RESET,
}
_POLL_IDLE = timedelta(milliseconds=10)
"""How long a partition whose read came back empty waits before the next. While tailing, a
read is empty whenever the flow is faster than the input: at 50 ms, a tailing flow at
20,000 events/s on a quiet machine read every ~50-60 ms (520 of 1,185 reads in 40 s
empty), so each change waited up to 50 ms for no work (docs/scaling.md, "Seventeenth
pass"). An empty read costs one `consume` call of at most 1 ms."""
READ_SIZE = 4000
"""Most messages one poll of a partition returns (what it has, up to this, within 1 ms).

A read is one item through the flow and one fold call per shard it touches, so a
position with several events in a read is folded, checkpointed and published once for
all of them: reads of 4,000 instead of 1,000 left 0.59 position changes an event instead
of 0.81 in the simulated mix, and a third less fold CPU an event (in process). It only
matters with a backlog: a flow keeping up reads what arrived since its last poll, so it
does not wait for a read to fill and its latency does not grow."""
STALL_AFTER_S = 5.0
"""A partition with messages waiting and none delivered for this long gets a new consumer."""
_WATERMARK_TIMEOUT_S = 1.0
_MAX_PATIENCE_S = 60.0
LagCallback = Callable[[str, int, int], None]
"""(topic, partition, messages not read yet)."""
_LOG = logging.getLogger("omni_ledger.kafka")
"""librdkafka's own log lines go here instead of raw to stderr; our errors say what matters."""


def _advice(error: KafkaError | str, bootstrap: str) -> str:
    text = str(error)
    if "offset reset" in text.lower() or "OFFSET_OUT_OF_RANGE" in text:
        return (
            f"{text}: the resume offset is no longer in the topic (retention deleted it); events were lost "
            "upstream of the ledger: rebuild with --reset from a full source, or raise the topic's retention"
        )
    if "Authentication" in text or "SASL" in text or "authentication" in text:
        return f"{text}: check kafka.sasl_username / kafka.sasl_password and kafka.sasl_mechanism"
    if "SSL" in text:
        return f"{text}: check kafka.security_protocol and kafka.ssl_ca_location"
    return f"{text}: is a broker listening at {bootstrap}? (`make kafka-up` starts a local one)"


class _ErrorTrap:
    """Remembers the first fatal client error reported through librdkafka's error callback."""

    def __init__(self) -> None:
        self.error: KafkaError | None = None
        self._lock = threading.Lock()

    def __call__(self, error: KafkaError) -> None:
        if error.fatal() or error.code() in _FATAL:
            with self._lock:
                self.error = self.error or error


class KafkaAdmin:
    """Topic administration and a connection check, with errors that say what to do."""

    def __init__(self, config: dict[str, str], *, timeout: float = 10.0) -> None:
        self._config = config
        self._timeout = timeout
        self._trap = _ErrorTrap()
        settings: dict[str, Any] = {
            **config,
            "error_cb": self._trap,
            "logger": _LOG,
            "socket.timeout.ms": str(int(timeout * 1000)),
        }
        self._client = AdminClient(settings)

    def topics(self) -> dict[str, int]:
        """Topic name -> partition count; raises `SourceError` when the cluster cannot be reached."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                metadata = self._client.list_topics(timeout=1.0)
                return {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}
            except KafkaException as exc:
                # An authentication failure surfaces only through the error callback, which
                # librdkafka serves during poll(): poll, so a wrong password fails in seconds.
                self._client.poll(0.5)
                failure = self._trap.error or exc.args[0]
                if self._trap.error is not None or time.monotonic() >= deadline:
                    where = self._config["bootstrap.servers"]
                    msg = f"cannot reach Kafka at {where}: " + _advice(failure, where)
                    raise SourceError(msg) from exc

    def partitions(self, topic: str) -> int:
        """How many partitions `topic` has; `SourceError` naming the fix when it does not exist."""
        count = self.topics().get(topic)
        if count is None:
            where = self._config["bootstrap.servers"]
            msg = f"Kafka topic {topic!r} does not exist at {where}: run `omni-ledger topics create`"
            raise SourceError(msg)
        return count

    def create(
        self, names: Sequence[str], configs: dict[str, dict[str, str]], partitions: int, replication: int
    ) -> dict[str, str]:
        """Create the missing topics; returns name -> 'created' | 'exists'."""
        existing = self.topics()
        wanted = [n for n in names if n not in existing]
        result = {n: "exists" for n in names if n in existing}
        if not wanted:
            return result
        futures = self._client.create_topics(
            [
                NewTopic(n, num_partitions=partitions, replication_factor=replication, config=configs.get(n, {}))
                for n in wanted
            ],
            request_timeout=self._timeout,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=self._timeout)
                result[name] = "created"
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    result[name] = "exists"
                    continue
                msg = f"cannot create Kafka topic {name!r}: " + _advice(error, self._config["bootstrap.servers"])
                raise SourceError(msg) from exc
        return result


@dataclass(frozen=True, slots=True)
class KafkaResume:
    """The next offset to read, and the event-time clock's reading (None on the wall clock)."""

    offset: int
    clock: int | None


def resume_of(saved: object) -> KafkaResume | None:
    """A partition's saved state as a `KafkaResume`, whichever version of the source saved it.

    Versions before the event-time clock saved the next offset alone (an int); refusing
    it made `make stack` on an old state directory fail with "'int' object has no
    attribute 'offset'".
    """
    if saved is None or isinstance(saved, KafkaResume):
        return saved
    if isinstance(saved, int) and not isinstance(saved, bool):
        return KafkaResume(offset=saved, clock=None)
    msg = (
        f"the recovery state of a Kafka input partition is {saved!r}, which this version cannot read: "
        "restart with --reset (the flow then reads its input again from the start)"
    )
    raise SourceError(msg)


class _SourcePartition(StatefulSourcePartition[RawInput, KafkaResume]):
    def __init__(
        self,
        config: dict[str, str],
        topic: str,
        index: int,
        resume: KafkaResume | None,
        tail: bool,
        batch_size: int,
        stop: StopFlag | None,
        clock: Clock | None = None,
        on_lag: LagCallback | None = None,
        stall_after: float = STALL_AFTER_S,
    ) -> None:
        self._trap = _ErrorTrap()
        self._settings: dict[str, Any] = {
            **config,
            # No group membership: Bytewax's recovery state holds the offsets.
            "group.id": "omni-ledger-unused",
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
            # A resume offset already deleted by retention must stop the flow, not
            # silently jump to the end and skip the events in between.
            "auto.offset.reset": "error",
            "error_cb": self._trap,
            "logger": _LOG,
        }
        self._topic, self._index = topic, index
        self._origin = f"{topic}[{index}]@"  # a message's origin is this and its offset
        resume = resume_of(resume)
        self._next = resume.offset if resume is not None else OFFSET_BEGINNING
        self._clock = clock
        if resume is not None and resume.clock is not None and clock is not None:
            clock.observe(resume.clock)  # event time restarts where the input stood
        self._consumer = self._assigned()
        self._stall = self._patience = stall_after
        self._progress_at = self._checked_at = time.monotonic()
        self.reconnects = 0
        self._tail = tail
        self._batch_size = batch_size
        self._stop = stop
        self._awake: datetime | None = None
        self._at_end = False
        self._bootstrap = config["bootstrap.servers"]
        self._on_lag = on_lag

    def next_batch(self) -> list[RawInput]:
        if self._trap.error is not None:
            msg = f"Kafka source {self._topic}[{self._index}] stopped: " + _advice(self._trap.error, self._bootstrap)
            raise SourceError(msg)
        if self._stop is not None and self._stop.is_set():
            raise StopIteration
        batch: list[RawInput] = []
        origin = self._origin
        for message in self._consumer.consume(self._batch_size, 0.001):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    # Reported once per reach of the end, possibly with the last messages
                    # in the same call: remember it until a newer message arrives.
                    self._at_end = True
                    continue
                if error.fatal() or error.code() in _FATAL:
                    msg = f"Kafka source {self._topic}[{self._index}]: " + _advice(error, self._bootstrap)
                    raise SourceError(msg)
                continue  # transient (a broker restarting): librdkafka retries
            offset = message.offset()
            assert offset is not None  # a message without error has an offset
            batch.append(RawInput(f"{origin}{offset}", message.value() or b""))
            self._next = offset + 1
            self._at_end = False
        now = time.monotonic()
        if batch:
            self._progress_at = now
            self._patience = self._stall
        elif now - self._progress_at >= self._patience and now - self._checked_at >= self._patience:
            self._checked_at = now
            self._reconnect_if_stalled(now)
        if self._at_end and not batch and not self._tail:
            if self._clock is not None:
                self._clock.reached_end(f"{self._topic}[{self._index}]")
            raise StopIteration
        self._awake = None if batch else datetime.now(UTC) + _POLL_IDLE
        if self._on_lag is not None and self._next >= 0:
            # The high watermark librdkafka cached from its last fetch: no broker round trip.
            _, high = self._consumer.get_watermark_offsets(TopicPartition(self._topic, self._index), cached=True)
            if high >= 0:
                self._on_lag(self._topic, self._index, max(0, high - self._next))
        return batch

    def next_awake(self) -> datetime | None:
        return self._awake

    def _assigned(self) -> Consumer:
        consumer = Consumer(self._settings)
        consumer.assign([TopicPartition(self._topic, self._index, self._next)])
        return consumer

    def _reconnect_if_stalled(self, now: float) -> None:
        """A new consumer at the next offset, when the partition holds messages that never come.

        After a broker restart, librdkafka's fetcher for an assigned partition can stay
        stuck while the other partitions resume (reported upstream for `assign()`
        consumers: confluentinc/librdkafka#4492, #5153; which fetch state it sticks in
        was not observed here). In CI one of two partitions never delivered again: the
        flow applied 3,000 + 1,486 = 4,486 of 6,000 events in 180 s, the 1,486 being the
        other partition's share. A consumer made anew at the same offset fetches at once.
        """
        try:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, self._index), timeout=_WATERMARK_TIMEOUT_S, cached=False
            )
        except KafkaException:
            return  # the broker is away: nothing to tell yet, the next check asks again
        start = self._next if self._next >= 0 else low  # not read yet: from the beginning
        if high <= start:
            return  # caught up: quiet, not stalled
        _LOG.warning(
            "Kafka source %s[%d]: %d messages wait from offset %d but none came for %.0f s: reconnecting",
            self._topic,
            self._index,
            high - start,
            start,
            now - self._progress_at,
            extra={"topic": self._topic, "partition": self._index, "waiting": high - start},
        )
        self._consumer.close()
        self._consumer = self._assigned()
        self.reconnects += 1
        self._progress_at = now
        # A broker so slow that a first fetch takes longer must not be interrupted forever.
        self._patience = min(self._patience * 2, _MAX_PATIENCE_S)

    def snapshot(self) -> KafkaResume:
        reading = self._clock.now() if self._clock is not None and not self._clock.live else None
        return KafkaResume(self._next, reading)

    def close(self) -> None:
        self._consumer.close()


class KafkaEventSource(FixedPartitionedSource[RawInput, KafkaResume]):
    """Raw messages of `topic` as `RawInput` (origin `topic[partition]@offset`).

    `tail=False` ends at the end of every partition (a replay); `stop` ends a tailing run;
    `on_lag(topic, partition, messages)` hears each partition's lag after every poll; a
    partition that delivers nothing for `stall_after` seconds while messages wait gets a
    new consumer at its next offset.
    """

    def __init__(
        self,
        config: dict[str, str],
        topic: str,
        *,
        tail: bool = True,
        batch_size: int = READ_SIZE,
        stop: StopFlag | None = None,
        clock: Clock | None = None,
        on_lag: LagCallback | None = None,
        stall_after: float = STALL_AFTER_S,
    ) -> None:
        self._config = config
        self._topic = topic
        self._tail = tail
        self._batch_size = batch_size
        self._stop = stop
        self._clock = clock
        self._on_lag = on_lag
        self._stall_after = stall_after

    def list_parts(self) -> list[str]:
        count = KafkaAdmin(self._config).partitions(self._topic)
        return [f"{self._topic}[{i}]" for i in range(count)]

    def build_part(self, step_id: str, for_part: str, resume_state: KafkaResume | None) -> _SourcePartition:
        index = int(for_part.rsplit("[", 1)[1].rstrip("]"))
        return _SourcePartition(
            self._config,
            self._topic,
            index,
            resume_state,
            self._tail,
            self._batch_size,
            self._stop,
            self._clock,
            self._on_lag,
            self._stall_after,
        )


@fast_init  # one per message
@dataclass(frozen=True, slots=True)
class OutMessage:
    """What a sink produces for one item."""

    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@runtime_checkable
class RendersMany(Protocol):
    """A render function that also renders a batch at once: `many(items)` gives each item's (key, value), in order.

    What the busy outputs offer (`adapters.kafka_records.render_change`): one call a batch
    instead of one a message, and no `OutMessage` made per message. No headers.
    """

    def __call__(self, item: Any) -> OutMessage: ...

    def many(self, items: list[Any]) -> Sequence[tuple[bytes | None, bytes]]: ...


class _SinkPartition(StatefulSinkPartition[Any, None]):
    def __init__(
        self, config: dict[str, str], topic: str, render: Callable[[Any], OutMessage], flush_timeout: float
    ) -> None:
        self._failed: KafkaError | None = None
        self._producer = Producer(
            {
                **config,
                "enable.idempotence": "true",  # retries never duplicate within a session
                "acks": "all",
                "linger.ms": "5",
                "queue.buffering.max.messages": "200000",
                "logger": _LOG,
                # Told of failures only: a Python call back per acknowledged message cost
                # about as much as producing it, and a success needs no action.
                "on_delivery": self._delivered,
                "delivery.report.only.error": True,
            }
        )
        self._topic = topic
        self._render = render
        self._many = render.many if isinstance(render, RendersMany) else None
        self._flush_timeout = flush_timeout
        self._bootstrap = config["bootstrap.servers"]

    def _delivered(self, error: KafkaError | None, message: object) -> None:
        if error is not None and self._failed is None:
            self._failed = error

    def write_batch(self, values: list[Any]) -> None:
        produce, topic = self._producer.produce, self._topic
        if self._many is not None:
            for key, value in self._many(values):
                try:
                    produce(topic, value, key)
                except BufferError:
                    self._produce_when_room(value, key, None)
        else:
            render = self._render
            for item in values:
                out = render(item)
                try:
                    if out.headers:
                        produce(topic, out.value, out.key, headers=list(out.headers))
                    else:
                        produce(topic, out.value, out.key)
                except BufferError:
                    self._produce_when_room(out.value, out.key, list(out.headers) or None)
        self._producer.poll(0)
        self._raise_if_failed()

    def _produce_when_room(
        self, value: bytes, key: bytes | None, headers: list[tuple[str, str | bytes | None]] | None
    ) -> None:
        """Produce once librdkafka's queue has room: wait for acknowledgements, bounded by the broker."""
        while True:
            self._producer.poll(0.05)
            try:
                self._producer.produce(self._topic, value, key, headers=headers)
            except BufferError:
                continue
            return

    def snapshot(self) -> None:
        # The epoch ends: everything it produced must be acknowledged before Bytewax
        # records that the input behind it need not be read again.
        remaining = self._producer.flush(self._flush_timeout)
        if remaining:
            msg = (
                f"{remaining} messages to Kafka topic {self._topic!r} not acknowledged within "
                f"{self._flush_timeout:.0f} s: " + _advice("delivery timed out", self._bootstrap)
            )
            raise SourceError(msg)
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            msg = f"producing to Kafka topic {self._topic!r} failed: " + _advice(self._failed, self._bootstrap)
            raise SourceError(msg)

    def close(self) -> None:
        self.snapshot()


class KafkaOutSink(FixedPartitionedSink[Any, None]):
    """Produce `render(item)` for each `(key, item)` to `topic`.

    A `render` that offers `many` (`RendersMany`) renders each batch in one call instead.

    `parts` producers share the work by a stable hash of the key (a key always goes
    through the same one, so its messages stay in order); a cluster gives one per worker,
    so no single worker produces everything.
    """

    def __init__(
        self,
        config: dict[str, str],
        topic: str,
        render: Callable[[Any], OutMessage],
        *,
        flush_timeout: float = 30.0,
        parts: int = 1,
    ) -> None:
        self._config = config
        self._topic = topic
        self._render = render
        self._flush_timeout = flush_timeout
        self._parts = max(1, parts)

    def list_parts(self) -> list[str]:
        return [f"{self._topic}-out"] + [f"{self._topic}-out-{i}" for i in range(1, self._parts)]

    def part_fn(self, item_key: str) -> int:
        if self._parts == 1:
            return 0
        return zlib.crc32(item_key.encode()) % self._parts

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _SinkPartition:
        return _SinkPartition(self._config, self._topic, self._render, self._flush_timeout)


class EventProducer:
    """A plain producer for tools (`omni-ledger produce`, tests, benchmarks): send, then flush."""

    def __init__(self, config: dict[str, str], topic: str) -> None:
        self._trap = _ErrorTrap()
        settings: dict[str, Any] = {
            **config,
            "enable.idempotence": "true",
            "linger.ms": "20",
            "queue.buffering.max.messages": "500000",
            "error_cb": self._trap,
            "logger": _LOG,
        }
        self._producer = Producer(settings)
        self._topic = topic
        self._bootstrap = config["bootstrap.servers"]
        self.delivered = 0
        self.failed = 0
        self._first_failure: KafkaError | None = None

    def _on_delivery(self, error: KafkaError | None, message: object) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.failed += 1
            self._first_failure = self._first_failure or error

    def send(self, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        """Queue one message (waits while librdkafka's queue is full)."""
        if self._trap.error is not None:
            msg = f"producing to {self._topic!r} failed: " + _advice(self._trap.error, self._bootstrap)
            raise SourceError(msg)
        while True:
            try:
                self._producer.produce(
                    self._topic, value, key, headers=list(headers) or None, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every queued message is acknowledged; `SourceError` if some never were."""
        remaining = self._producer.flush(timeout)
        failure = self._trap.error or self._first_failure
        if remaining or failure is not None:
            what = f"{remaining} unacknowledged, {self.failed} failed"
            msg = f"producing to {self._topic!r}: {what}: " + _advice(failure or "delivery timed out", self._bootstrap)
            raise SourceError(msg)
