"""`omni-ledger produce`: load events into the Kafka input topic, from a file or the simulator."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from adapters.avro_wire import WireCodec
from adapters.codec import decode_json
from adapters.kafka_io import EventProducer, KafkaAdmin
from adapters.shutdown import StopFlag
from ledger.contract import validate
from ledger.dead_letter import DeadLetter
from ledger.errors import SourceError
from omni_ledger.config import KafkaSettings, Settings
from simulator import RetailerSimulator

__all__ = ["produce_file", "produce_simulator"]


def _producer(kafka: KafkaSettings) -> EventProducer:
    topic = kafka.topic("inventory.events")
    KafkaAdmin(kafka.client_config()).partitions(topic)  # fails fast, with advice
    return EventProducer(kafka.client_config(), topic)


def produce_file(kafka: KafkaSettings, path: Path, *, raw: bool = False) -> dict[str, object]:
    """Send each valid line of a JSON-lines file as an Avro event keyed `site_id|sku`.

    Invalid lines are counted and skipped (the flow would dead-letter them anyway);
    with `raw=True` every line is sent as it is, which is how the dead-letter path is tested.
    """
    if not path.is_file():
        msg = f"no event file at {path}; pass a JSON-lines file to --file"
        raise SourceError(msg)
    producer = _producer(kafka)
    codec = WireCodec()
    skipped = 0
    started = time.perf_counter()
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            if raw:
                producer.send(None, line)
                continue
            record = decode_json(line, f"{path.name}:{number}")
            event = record if isinstance(record, DeadLetter) else validate(record, origin=path.name, raw=line)
            if isinstance(event, DeadLetter):
                skipped += 1
                continue
            producer.send(f"{event.site_id}|{event.sku}".encode(), codec.encode(event))
    producer.flush()
    seconds = time.perf_counter() - started
    return {
        "sent": producer.delivered,
        "skipped_invalid": skipped,
        "seconds": round(seconds, 3),
        "topic": kafka.topic("inventory.events"),
    }


def produce_simulator(
    settings: Settings, *, limit: int | None, stop: StopFlag, seed: int | None = None
) -> dict[str, object]:
    """Run the simulator at `simulator.rate` into the input topic until `limit` or Ctrl-C."""
    sim_settings = settings.simulator
    # Event ids are `sim-<seed>-<n>`: a fixed seed would resend the ids of an earlier run, and
    # the ledger would rightly ignore them as duplicates. Each run gets a seed of its own.
    seed = seed if seed is not None else secrets.randbelow(2**31)
    sim = RetailerSimulator(sim_settings.sim_config(seed))
    producer = _producer(settings.kafka)
    codec = WireCodec()
    started = time.monotonic()
    sent = 0
    while not stop.is_set() and (limit is None or sent < limit):
        due = int((time.monotonic() - started) * sim_settings.rate) - sent
        if limit is not None:
            due = min(due, limit - sent)
        if due <= 0:
            time.sleep(0.005)
            continue
        for event in sim.next_events(time.time_ns() // 1_000_000, min(due, 5_000)):
            producer.send(f"{event.site_id}|{event.sku}".encode(), codec.encode(event))
            sent += 1
    producer.flush()
    return {
        "sent": producer.delivered,
        "seconds": round(time.monotonic() - started, 3),
        "topic": settings.kafka.topic("inventory.events"),
    }
