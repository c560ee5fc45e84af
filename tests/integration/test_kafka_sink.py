"""The Kafka sink partition on a real broker: batches rendered at once, single renders with headers, a full queue."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from adapters.kafka_io import KafkaOutSink, OutMessage, RendersMany
from adapters.kafka_records import render_change, render_dead_letter
from adapters.partitions import each
from ledger.dead_letter import DeadLetter
from ledger.outputs import InboundLine, OfferTerms, PositionChange

pytestmark = pytest.mark.integration

DEADLINE_S = 30


def _read_all(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"g{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(got) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message)
    finally:
        consumer.close()
    return got


def _change(site: str, sku: str, version: int, offer: OfferTerms | None = None) -> PositionChange:
    inbound = (InboundLine(f"PO-{version}", version, 1_790_000_000_000 + version),) if version % 2 else ()
    return PositionChange(site, sku, version, 1, 0, sum(line.qty for line in inbound), 0, version - 1, False, version,
                          1_790_000_000_000, 1_790_000_000_000, inbound, offer)  # fmt: skip


def test_changes_written_a_batch_at_a_time_arrive_with_their_rendered_bytes_in_order_per_key(kafka, topic_factory):
    topic = topic_factory(partitions=3)
    offer = OfferTerms(4, 12.5, 3, 1_790_000_000_000)
    batches = [
        tuple(_change(f"S{i % 3}", f"K{i % 5}", v, offer if v % 3 == 0 else None) for i in range(15))
        for v in range(1, 5)
    ]
    sink = each(KafkaOutSink(kafka.config(), topic, render_change))
    part = sink.build_part("changes_out", sink.list_parts()[0], None)
    part.write_batch(batches[:2])  # as the flow hands them: one tuple of changes per fold result
    part.write_batch(batches[2:])
    part.snapshot()
    part.close()

    changes = [change for batch in batches for change in batch]
    got = _read_all(kafka.bootstrap, topic, len(changes))
    assert len(got) == len(changes)
    by_key: dict[bytes, list[bytes]] = {}
    for message in got:
        by_key.setdefault(message.key(), []).append(message.value())
    expected: dict[bytes, list[bytes]] = {}
    for change in changes:
        expected.setdefault(change.key.encode(), []).append(render_change(change).value)
    assert by_key == expected


def test_a_render_without_a_batch_form_produces_each_message_with_its_headers(kafka, topic_factory):
    topic = topic_factory()
    letter = DeadLetter("inventory.events[2]@41", "undecodable", "bad magic", b"\x00broken")
    assert not isinstance(render_dead_letter, RendersMany)
    sink = KafkaOutSink(kafka.config(), topic, render_dead_letter)
    part = sink.build_part("dead_letters", sink.list_parts()[0], None)
    part.write_batch([letter])
    part.snapshot()
    part.close()

    (message,) = _read_all(kafka.bootstrap, topic, 1)
    assert (message.key(), message.value()) == (b"inventory.events[2]@41", b"\x00broken")
    headers = dict(message.headers())
    assert headers["omni.reason"] == b"undecodable"
    assert headers["omni.source.topic"] == b"inventory.events"


class _Numbered:
    """A batch renderer of our own: message i of a batch is key `k<i % 64>`, value `v<i>`."""

    def __call__(self, item: int) -> OutMessage:
        key, value = self.many([item])[0]
        return OutMessage(key, value)

    def many(self, items: Sequence[int]) -> list[tuple[bytes, bytes]]:
        return [(f"k{i % 64}".encode(), f"v{i}".encode()) for i in items]


def test_a_batch_larger_than_the_producer_queue_waits_for_room_and_every_message_arrives(kafka, topic_factory):
    topic = topic_factory(partitions=2)
    count = 230_000  # the sink's producer queues at most 200,000
    sink = KafkaOutSink(kafka.config(), topic, _Numbered())
    part = sink.build_part("out", sink.list_parts()[0], None)
    part.write_batch(list(range(count)))
    part.snapshot()
    part.close()

    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": f"g{uuid.uuid4().hex[:8]}"})
    try:
        ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=DEADLINE_S) for p in (0, 1)]
    finally:
        consumer.close()
    assert sum(high - low for low, high in ends) == count
