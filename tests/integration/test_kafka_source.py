"""The Kafka source partition on a real broker: a fetcher that stops while messages wait is replaced."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from adapters.kafka_io import EventProducer, KafkaEventSource

pytestmark = pytest.mark.integration

DEADLINE_S = 30


def _topic_with(kafka, messages: int) -> str:
    topic = f"t{uuid.uuid4().hex[:10]}.source"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        future.result(timeout=DEADLINE_S)
    producer = EventProducer({"bootstrap.servers": kafka.bootstrap}, topic)
    for i in range(messages):
        producer.send(b"k", f"m{i}".encode())
    producer.flush(DEADLINE_S)
    return topic


def _read(part, count: int) -> list[bytes]:
    """Poll like Bytewax does until `count` messages came; bounded by DEADLINE_S."""
    got: list[bytes] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < count and time.monotonic() < deadline:
        got.extend(item.payload for item in part.next_batch())  # type: ignore[misc]
        time.sleep(0.02)
    return got


def test_a_partition_whose_fetcher_stopped_while_messages_wait_gets_a_new_consumer_and_reads_on(kafka):
    topic = _topic_with(kafka, 20)
    source = KafkaEventSource({"bootstrap.servers": kafka.bootstrap}, topic, stall_after=1.0)
    part = source.build_part("input", f"{topic}[0]", None)
    try:
        # The fault seen after a broker restart (librdkafka's fetcher stuck for an assigned
        # partition), injected: this consumer never fetches again.
        part._consumer.pause([TopicPartition(topic, 0)])
        got = _read(part, 20)
        assert got == [f"m{i}".encode() for i in range(20)]
        assert part.reconnects >= 1
    finally:
        part.close()


def test_a_caught_up_partition_that_stays_quiet_keeps_its_consumer(kafka):
    topic = _topic_with(kafka, 3)
    source = KafkaEventSource({"bootstrap.servers": kafka.bootstrap}, topic, stall_after=0.5)
    part = source.build_part("input", f"{topic}[0]", None)
    try:
        assert _read(part, 3) == [b"m0", b"m1", b"m2"]
        reconnects = part.reconnects  # a first fetch slower than 0.5 s on a busy machine may count one
        quiet_until = time.monotonic() + 2.5  # several stall periods with nothing to read
        while time.monotonic() < quiet_until:
            assert part.next_batch() == []
            time.sleep(0.05)
        assert part.reconnects == reconnects
    finally:
        part.close()
