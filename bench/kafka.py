"""`make bench-kafka`: the flow on a real local broker against the raw ceiling, and latency.

1. Produce N simulated events as Avro (single-object) to a fresh input topic.
2. Raw ceiling: a plain confluent-kafka consumer reading them all and decoding each with
   fastavro (`WireCodec.decode`: one dict lookup and one `schemaless_reader`), nothing else.
3. The flow: `omni-ledger run --source kafka --until-end` on the same topic (fold, snapshots,
   atp.changes, decisions), timed from start to exit; ratio to the raw ceiling.
4. Latency: the flow tailing while events are produced at a steady rate; for each event,
   the time from its produce to the first `atp.changes` message of its key that includes
   it (the change's `max_occurred_at` reached the event's `occurred_at`, which is its
   produce time), using the broker's timestamps of the change messages.

Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts a private broker (infra/kafka/broker.py).
Prints one table; JSON under bench/results/. Not a test: nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from bisect import bisect_left
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from adapters.avro_wire import WireCodec
from adapters.kafka_io import EventProducer
from adapters.kafka_records import SingleObjectWriter
from ledger.dead_letter import DeadLetter
from ledger.events import InventoryEvent
from omni_ledger.simulator import RetailerSimulator, SimConfig
from omni_ledger.table import render_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def broker(workdir: Path) -> tuple[str, Path | None]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"], None
    home = workdir / "broker"
    say("starting a private Kafka broker...")
    out = subprocess.run(
        [sys.executable, str(REPO / "infra/kafka/broker.py"), "up", "--free-ports", "--dir", str(home), "--json"],
        capture_output=True,
        text=True,
        timeout=720,
        check=False,
    )
    if out.returncode != 0:
        sys.exit(f"cannot start a Kafka broker:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])["bootstrap"], home


def simulated(count: int, start: int) -> list[InventoryEvent]:
    sim = RetailerSimulator(SimConfig(seed=int(time.time()), expected_rate=20_000))
    events: list[InventoryEvent] = []
    now = start
    while len(events) < count:
        now += 50
        events.extend(sim.next_events(now, 1_000))
    return events[:count]


def produce(bootstrap: str, topic: str, events: list[InventoryEvent]) -> float:
    codec = WireCodec()
    producer = EventProducer({"bootstrap.servers": bootstrap}, topic)
    started = time.perf_counter()
    for event in events:
        producer.send(f"{event.site_id}|{event.sku}".encode(), codec.encode(event))
    producer.flush()
    return len(events) / (time.perf_counter() - started)


def raw_ceiling(bootstrap: str, topic: str, partitions: int, count: int) -> float:
    codec = WireCodec()
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = bad = 0
    started = time.perf_counter()
    while seen < count:
        for message in consumer.consume(1000, 1.0):
            if message.error() is None:
                record = codec.decode(message.value(), "bench")
                bad += isinstance(record, DeadLetter)
                seen += 1
    rate = seen / (time.perf_counter() - started)
    consumer.close()
    if bad:
        sys.exit(f"{bad} messages did not decode")
    return rate


def flow_env(bootstrap: str, prefix: str, partitions: int) -> dict[str, str]:
    return {
        **os.environ,
        "OMNI_LEDGER_KAFKA_BOOTSTRAP": bootstrap,
        "OMNI_LEDGER_KAFKA_TOPIC_PREFIX": prefix,
        "OMNI_LEDGER_KAFKA_PARTITIONS": str(partitions),
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omni_ledger", *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--latency-rate", type=int, default=5_000, help="events/s produced during the latency run")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        work = Path(tmp)
        bootstrap, home = broker(work)
        try:
            rows, result = run(args, bootstrap, work)
        finally:
            if home is not None:
                subprocess.run(
                    [sys.executable, str(REPO / "infra/kafka/broker.py"), "down", "--dir", str(home)],
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"kafka-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result))
        return
    print(render_table(("figure", "value", "unit"), rows))
    machine = result["machine"]
    assert isinstance(machine, dict)
    print(f"machine: {machine['cores']} cores, Python {machine['python']}; results in {path.relative_to(REPO)}")


def run(args: argparse.Namespace, bootstrap: str, work: Path) -> tuple[list[list[object]], dict[str, object]]:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    env = flow_env(bootstrap, prefix, args.partitions)
    if cli(env, "topics", "create").returncode != 0:
        sys.exit("cannot create the topics")
    topic = prefix + "inventory.events"
    say(f"producing {args.events:,} events...")
    events = simulated(args.events, time.time_ns() // 1_000_000 - 3_600_000)
    produce_rate = produce(bootstrap, topic, events)
    say("raw ceiling: consumer + fastavro decode...")
    ceiling = raw_ceiling(bootstrap, topic, args.partitions, args.events)
    say("the flow, to the end of the topic...")
    started = time.perf_counter()
    flow = cli(
        env,
        "run",
        "--source",
        "kafka",
        "--until-end",
        "--clock",
        "wall",
        "--quiet",
        "--json",
        "--snapshot-dir",
        str(work / "snap"),
    )
    wall = time.perf_counter() - started
    if flow.returncode != 0:
        sys.exit(f"the flow failed:\n{flow.stderr}")
    summary = json.loads(flow.stdout.strip().splitlines()[-1])
    flow_rate = args.events / wall
    say(f"latency: {args.latency_rate:,} events/s for {args.latency_seconds:.0f} s through a tailing flow...")
    latency = measure_latency(args, bootstrap, work)
    say("sinks: Bytewax's KafkaSink against ours, the same messages through a bare dataflow...")
    sinks = compare_sinks(bootstrap, prefix, 200_000)
    rows: list[list[object]] = [
        ["producer (Avro encode + produce)", round(produce_rate), "events/s"],
        ["sink: bytewax KafkaSink (flush per batch)", round(sinks["bytewax"]), "messages/s"],
        ["sink: KafkaOutSink (flush per epoch)", round(sinks["ours"]), "messages/s"],
        ["raw ceiling (consume + fastavro decode)", round(ceiling), "events/s"],
        ["flow end to end (wall, incl. start-up)", round(flow_rate), "events/s"],
        ["flow / raw ceiling", f"{flow_rate / ceiling:.1%}", "ratio"],
        ["flow, from its own summary", round(summary["events_per_s"]), "events/s"],
        [f"produce -> atp.changes p50 at {args.latency_rate:,}/s", round(latency["p50_ms"]), "ms"],
        [f"produce -> atp.changes p99 at {args.latency_rate:,}/s", round(latency["p99_ms"]), "ms"],
    ]
    result = {
        "at": datetime.now(UTC).isoformat(),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "events": args.events,
        "partitions": args.partitions,
        "produce_per_s": produce_rate,
        "raw_ceiling_per_s": ceiling,
        "flow_per_s": flow_rate,
        "ratio": flow_rate / ceiling,
        "flow_summary": summary,
        "latency": latency,
        "sinks_per_s": sinks,
    }
    return rows, result


def compare_sinks(bootstrap: str, prefix: str, count: int) -> dict[str, float]:
    """Messages/s through a dataflow that only writes to Kafka, batches of 1,000 as after a keyed step."""
    import bytewax.operators as op
    from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSource, run_main

    from adapters.kafka_io import KafkaAdmin, KafkaOutSink, OutMessage

    admin = KafkaAdmin({"bootstrap.servers": bootstrap})
    topics = [prefix + "sink.bytewax", prefix + "sink.ours"]
    admin.create(topics, {}, partitions=2, replication=1)
    payload = b"x" * 120  # about an atp.changes value
    items = [
        (f"ST-{i % 500}|SKU-{i % 2000}", OutMessage(f"ST-{i % 500}|SKU-{i % 2000}".encode(), payload))
        for i in range(count)
    ]

    def to_bytewax(item: tuple[str, OutMessage]) -> KafkaSinkMessage[bytes | None, bytes]:
        return KafkaSinkMessage(item[1].key, item[1].value)

    def identity(message: OutMessage) -> OutMessage:
        return message

    rates: dict[str, float] = {}
    for name, topic in zip(("bytewax", "ours"), topics, strict=True):
        flow = Dataflow(f"sink_{name}")
        stream = op.input("in", flow, TestingSource(items, batch_size=1000))
        if name == "bytewax":
            op.output("out", op.map("msg", stream, to_bytewax), KafkaSink([bootstrap], topic))
        else:
            op.output("out", stream, KafkaOutSink({"bootstrap.servers": bootstrap}, topic, identity))
        started = time.perf_counter()
        run_main(flow)  # type: ignore[no-untyped-call]
        rates[name] = count / (time.perf_counter() - started)
    return rates


def measure_latency(args: argparse.Namespace, bootstrap: str, work: Path) -> dict[str, float]:
    prefix = f"lat{uuid.uuid4().hex[:8]}."
    env = {**flow_env(bootstrap, prefix, args.partitions), "OMNI_LEDGER_SNAPSHOTS_INTERVAL": "1s"}
    cli(env, "topics", "create")
    flow = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "omni_ledger",
            "run",
            "--source",
            "kafka",
            "--quiet",
            "--snapshot-dir",
            str(work / "lat"),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)  # start-up
    sim = RetailerSimulator(SimConfig(seed=int(time.time()) + 1, expected_rate=args.latency_rate))
    codec = WireCodec()
    producer = EventProducer({"bootstrap.servers": bootstrap, "linger.ms": "0"}, prefix + "inventory.events")
    sent: dict[bytes, list[int]] = defaultdict(list)
    started = time.monotonic()
    count = 0
    total = int(args.latency_rate * args.latency_seconds)
    while count < total:
        due = min(total, int((time.monotonic() - started) * args.latency_rate)) - count
        if due <= 0:
            time.sleep(0.001)
            continue
        now = time.time_ns() // 1_000_000
        for event in sim.next_events(now, due):
            # occurred_at := the produce time, so a change's max_occurred_at says what it includes.
            event = dataclasses.replace(event, occurred_at=now)
            key = f"{event.site_id}|{event.sku}".encode()
            producer.send(key, codec.encode(event))
            sent[key].append(now)
            count += 1
    producer.flush()
    time.sleep(3)
    flow.send_signal(signal.SIGINT)
    flow.communicate(timeout=120)

    changes: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    writer = SingleObjectWriter("position_change.avsc")
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"lat-{uuid.uuid4()}", "enable.partition.eof": True}
    )
    topic = prefix + "atp.changes"
    parts = list(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    done: set[int] = set()
    while len(done) < len(parts):
        for message in consumer.consume(1000, 1.0):
            if message.error() is not None:
                done.add(message.partition() or 0)
                continue
            record = writer.decode(message.value() or b"")
            stamp = record["max_occurred_at"]
            max_at = (stamp - _EPOCH) // timedelta(milliseconds=1) if isinstance(stamp, datetime) else int(stamp)
            changes[message.key() or b""].append((max_at, message.timestamp()[1]))
    consumer.close()
    latencies: list[int] = []
    for key, times in sent.items():
        seen = sorted(changes.get(key, []))
        marks = [m for m, _ in seen]
        for produced in times:
            i = bisect_left(marks, produced)
            later = [ts for _, ts in seen[i:]]
            if later:
                latencies.append(min(later) - produced)
    latencies.sort()
    if not latencies:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "samples": 0}
    return {
        "p50_ms": float(latencies[len(latencies) // 2]),
        "p99_ms": float(latencies[int(len(latencies) * 0.99)]),
        "samples": len(latencies),
        "events": count,
    }


if __name__ == "__main__":
    main()
