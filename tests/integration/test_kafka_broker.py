"""The local Kafka broker (infra/kafka/broker.py) as clients see it: plain, SCRAM, wrong password."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from tests.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration

DEADLINE_S = 30


def produce(config: dict[str, Any], topic: str, records: list[tuple[str, str]]) -> None:
    """Send (key, value) records and wait until the broker acknowledged each of them."""
    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: object) -> None:
        if error is not None:
            failures.append(error)

    producer = Producer({**config, "message.timeout.ms": DEADLINE_S * 1000})
    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=delivered)
    assert producer.flush(DEADLINE_S) == 0, "messages still unacknowledged"
    assert failures == []


def consume(config: dict[str, Any], topic: str, count: int) -> list[tuple[str, str]]:
    """Read `count` records from the start of `topic` with a fresh group; gives up after DEADLINE_S."""
    consumer = Consumer(
        {**config, "group.id": f"test-{uuid.uuid4().hex}", "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    consumer.subscribe([topic])
    received: list[tuple[str, str]] = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(received) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                raise KafkaException(message.error())
            key, value = message.key(), message.value()
            assert isinstance(key, bytes)
            assert isinstance(value, bytes)
            received.append((key.decode(), value.decode()))
    finally:
        consumer.close()
    return received


def test_a_message_produced_to_a_fresh_topic_is_consumed_back_in_order_per_key(
    kafka: KafkaBroker, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(partitions=3)
    records = [(f"SKU-{n % 4:05d}", f"event-{n}") for n in range(20)]

    produce(kafka.config(), topic, records)
    received = consume(kafka.config(), topic, len(records))

    assert sorted(received) == sorted(records)
    by_key: dict[str, list[str]] = defaultdict(list)
    for key, value in received:
        by_key[key].append(value)
    for key, values in by_key.items():
        assert values == [v for k, v in records if k == key], f"{key} out of order"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_a_scram_client_with_the_right_password_produces_and_consumes_on_the_sasl_listener(
    kafka: KafkaBroker, topic_factory: Callable[..., str], mechanism: str
) -> None:
    if kafka.sasl_bootstrap is None:
        pytest.skip("this broker has no SASL listener (KAFKA_SASL_BOOTSTRAP_SERVERS is not set)")
    topic = topic_factory()
    records = [("SKU-00001", f"{mechanism} {n}") for n in range(3)]

    produce(kafka.sasl_config(mechanism), topic, records)

    assert consume(kafka.sasl_config(mechanism), topic, len(records)) == records


def test_a_client_with_a_wrong_password_fails_fast_with_an_authentication_error(kafka: KafkaBroker) -> None:
    if kafka.sasl_bootstrap is None:
        pytest.skip("this broker has no SASL listener (KAFKA_SASL_BOOTSTRAP_SERVERS is not set)")
    errors: list[KafkaError] = []
    producer = Producer(
        {
            **kafka.sasl_config("SCRAM-SHA-256", password=f"not-{kafka.password}"),
            "socket.timeout.ms": 3000,
            "message.timeout.ms": 3000,
            "error_cb": errors.append,
        }
    )
    started = time.monotonic()

    # librdkafka reports the failed handshake through error_cb, served by poll(); no metadata
    # ever arrives. The loop is bounded so that a client that would hang fails this test instead.
    while not any(e.code() == KafkaError._AUTHENTICATION for e in errors) and time.monotonic() - started < 10:
        producer.poll(0.1)
    elapsed = time.monotonic() - started
    with pytest.raises(KafkaException):
        producer.list_topics(timeout=1)

    authentication = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    assert authentication, f"no authentication error within {elapsed:.1f} s; errors: {errors}"
    assert elapsed < 5
    assert "authentication failed" in authentication[0].str().lower()
