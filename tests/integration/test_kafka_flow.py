"""The flow on a real Kafka broker: Avro in, snapshots and output topics out, dead letters, crashes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from adapters.avro_wire import WireCodec
from adapters.kafka_io import EventProducer
from adapters.kafka_records import SingleObjectWriter
from adapters.snapshot_store import SnapshotReader
from ledger.contract import fulfilment_to_record
from ledger.events import InventoryEvent
from tests.conftest import EXAMPLES, REPO, recent_simulated_events, run_cli
from tests.integration.fulfilment_story import FAR, FINAL_STATUSES, NEAR, PART_1, PART_2, R1, R3, RUN, SUP
from tests.store_checks import assert_store_matches, difference, events_applied, reference_for, reference_live

pytestmark = pytest.mark.integration


class Cluster:
    """The broker plus a topic prefix of this test's own, so tests never share topics."""

    def __init__(self, kafka, partitions: int) -> None:
        self.bootstrap = kafka.bootstrap
        self.prefix = f"t{uuid.uuid4().hex[:10]}."
        self.env = {
            "OMNI_LEDGER_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "OMNI_LEDGER_KAFKA_TOPIC_PREFIX": self.prefix,
            "OMNI_LEDGER_KAFKA_PARTITIONS": str(partitions),
        }
        created = run_cli("topics", "create", "--json", env=self.env)
        assert created.returncode == 0, created.stderr

    def cli(self, *args: str, **kw) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env={**self.env, **kw.pop("env", {})}, **kw)

    def topic(self, name: str) -> str:
        return self.prefix + name

    def read_all(self, name: str, *, seconds: float = 20) -> list:
        """Every message of a topic, from the beginning to its end (bounded wait)."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"test-{uuid.uuid4()}",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
        metadata = consumer.list_topics(self.topic(name), timeout=10)
        parts = list(metadata.topics[self.topic(name)].partitions)
        consumer.assign([TopicPartition(self.topic(name), p, 0) for p in parts])
        done: set[int] = set()
        out = []
        deadline = time.monotonic() + seconds
        while len(done) < len(parts) and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.2):
                if message.error() is None:
                    out.append(message)
                elif message.error().code() == message.error()._PARTITION_EOF:
                    done.add(message.partition())
        consumer.close()
        assert len(done) == len(parts), f"{name}: did not reach the end of every partition"
        return out


def test_events_produced_as_avro_fold_into_snapshots_and_the_output_topics(kafka, tmp_path):
    cluster = Cluster(kafka, partitions=1)
    story = EXAMPLES / "story.jsonl"
    produced = cluster.cli("produce", "--file", str(story), "--json")
    assert produced.returncode == 0, produced.stderr
    out = tmp_path / "snap"
    run = cluster.cli(
        "run", "--source", "kafka", "--until-end", "--clock", "event", "--quiet", "--snapshot-dir", str(out)
    )
    assert run.returncode == 0, run.stderr
    # `produce` skipped the three invalid lines; the rest is the story as a replay would see it.
    assert_store_matches(out, *reference_for(story))

    changes = cluster.read_all("atp.changes")
    writer = SingleObjectWriter("position_change.avsc")
    latest: dict[bytes, dict] = {}
    for message in changes:
        record = writer.decode(message.value())
        if message.key() not in latest or record["version"] > latest[message.key()]["version"]:
            latest[message.key()] = record
    with SnapshotReader.open(out) as reader:
        positions = {f"{p['site_id']}|{p['sku']}".encode(): p for p in reader.positions()}
    assert set(latest) == set(positions)
    for key, record in latest.items():
        assert (record["on_hand"], record["atp"], record["version"]) == (
            positions[key]["on_hand"],
            positions[key]["atp"],
            positions[key]["version"],
        )

    decisions = SingleObjectWriter("reservation_decision.avsc")
    statuses = {
        (m.key().decode(), decisions.decode(m.value())["status"]) for m in cluster.read_all("reservation.decisions")
    }
    assert ("R-LEROY-A", "REJECTED") in statuses
    assert ("R-MARTIN-A", "FULFILLED") in statuses
    # The too-late count is the only dead letter: produce --file skipped the invalid lines.
    dlq = cluster.read_all("inventory.events.dlq")
    assert [dict(m.headers())["omni.reason"] for m in dlq] == [b"too_late"]


def test_a_confirmed_transfer_and_a_dropship_produce_their_work_on_the_three_topics(kafka, tmp_path):
    # One partition: on the event-time clock, a second one read ahead would move time past
    # the requests' expiry before they are read (the story is about outputs, not that).
    cluster = Cluster(kafka, partitions=1)
    codec = WireCodec()
    producer = EventProducer({"bootstrap.servers": kafka.bootstrap}, cluster.topic("inventory.events"))
    for event in PART_1 + PART_2:
        producer.send(f"{event.site_id}|{event.sku}".encode(), codec.encode(event))  # the plans travel as Avro
    producer.flush()
    out = tmp_path / "snap"
    run = cluster.cli(
        "run", "--source", "kafka", "--until-end", "--clock", "event", "--quiet", "--snapshot-dir", str(out)
    )
    assert run.returncode == 0, run.stderr

    latest: dict[str, dict] = {}
    for topic, schema, key in (
        ("store.tasks", "store_task.avsc", "task_id"),
        ("transport.loads", "shuttle_load.avsc", "parcel_id"),
        ("dropship.orders", "dropship_order.avsc", "order_ref"),
    ):
        writer = SingleObjectWriter(schema)
        messages = cluster.read_all(topic)
        assert messages, f"nothing on {topic}"
        for message in messages:
            record = writer.decode(message.value())
            assert message.key().decode() == record[key]
            # Statuses only move forward: a consumer keeps the highest rank per key.
            kept = latest.get(record[key])
            if kept is None or record["rank"] > kept["rank"]:
                latest[record[key]] = record
    assert {key: record["status"] for key, record in latest.items()} == FINAL_STATUSES

    pick, load, order = latest["R1/PICK_FOR_SHUTTLE"], latest["P-R1"], latest["R3"]
    assert (pick["site_id"], pick["kind"], pick["reservation_id"]) == (FAR, "PICK_FOR_SHUTTLE", "R1")
    assert (load["run_id"], load["origin"], load["destination"]) == (RUN, FAR, NEAR)
    assert (order["supplier_id"], order["deliver_to"]) == (SUP, NEAR)
    # The nested Fulfilment record: the plan as confirmed (timestamps decode as UTC datetimes).
    assert _millis(load["plan"]) == fulfilment_to_record(R1)
    assert _millis(order["plan"]) == fulfilment_to_record(R3)
    with SnapshotReader.open(out) as reader:
        stored = {r["parcel_id"]: r["status"] for r in reader.transport_loads()}
        assert stored == {"P-R1": "ARRIVED", "P-R2": "CANCELLED"}
    # `topics create` made them compacted, like atp.changes.
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    names = ("store.tasks", "transport.loads", "dropship.orders")
    described = admin.describe_configs([ConfigResource("topic", cluster.topic(name)) for name in names])
    assert {r.name: f.result(timeout=10)["cleanup.policy"].value for r, f in described.items()} == {
        cluster.topic(name): "compact" for name in names
    }


def _millis(record: dict) -> dict:
    """A decoded Avro record with its datetimes back to epoch milliseconds."""
    return {
        k: int(v.timestamp() * 1000) if hasattr(v, "timestamp") else v  # whole seconds here: exact
        for k, v in record.items()
    }


def test_garbage_another_schema_and_a_missing_field_go_to_the_dlq_and_the_rest_applies(kafka, tmp_path):
    cluster = Cluster(kafka, partitions=1)
    codec = WireCodec()
    producer = EventProducer({"bootstrap.servers": kafka.bootstrap}, cluster.topic("inventory.events"))
    good = [_event("g1", qty=5), _event("g2", qty=2, type_="SOLD")]
    other_schema = SingleObjectWriter("reservation_decision.avsc").encode(
        {
            "reservation_id": "x",
            "site_id": "S",
            "sku": "K",
            "qty": 1,
            "status": "ACCEPTED",
            "reason": "r",
            "expires_at": None,
            "decided_at": 0,
            "atp_before": 0,
        }
    )
    missing_field = b'{"event_id":"m1","type":"SOLD","occurred_at":1790000000000,"site_id":"ST-1","qty":1}'
    producer.send(b"ST-1|K", codec.encode(good[0]))
    producer.send(None, b"\x00\xffgarbage\x13")
    producer.send(None, other_schema)
    producer.send(None, missing_field)
    producer.send(b"ST-1|K", codec.encode(good[1]))
    producer.flush()

    out = tmp_path / "snap"
    run = cluster.cli("run", "--source", "kafka", "--until-end", "--quiet", "--snapshot-dir", str(out))
    assert run.returncode == 0, run.stderr
    with SnapshotReader.open(out) as reader:
        assert [p["on_hand"] for p in reader.positions(sku="K")] == [3]
    letters = cluster.read_all("inventory.events.dlq")
    by_offset = {int.from_bytes(dict(m.headers())["omni.source.offset"], "big"): m for m in letters}
    assert sorted(by_offset) == [1, 2, 3]
    reasons = {offset: dict(m.headers())["omni.reason"].decode() for offset, m in by_offset.items()}
    assert reasons == {1: "malformed", 2: "malformed", 3: "missing_field"}
    assert by_offset[1].value() == b"\x00\xffgarbage\x13"  # the original bytes, untouched
    assert b"fingerprint" in dict(by_offset[2].headers())["omni.detail"]
    assert dict(by_offset[3].headers())["omni.source.topic"] == cluster.topic("inventory.events").encode()


def test_kill_minus_nine_at_random_moments_loses_and_doubles_nothing(kafka, tmp_path):
    cluster = Cluster(kafka, partitions=3)
    # Kills are timed by the flow's progress, not by the clock alone, so that they land before the
    # end however fast the flow gets: with fixed sleeps a faster flow once folded the whole input
    # after two kills (2026-12-04). A run is killed at most ~1 s into its work, five times, so
    # this input outlasts them all even at twice today's ~50,000 events/s.
    events = recent_simulated_events(320_000)
    producer = EventProducer({"bootstrap.servers": kafka.bootstrap}, cluster.topic("inventory.events"))
    codec = WireCodec()
    for event in events:
        producer.send(f"{event.site_id}|{event.sku}".encode(), codec.encode(event))
    producer.flush()

    out = tmp_path / "snap"
    command = [
        sys.executable,
        "-m",
        "omni_ledger",
        "run",
        "--source",
        "kafka",
        "--until-end",
        "--clock",
        "wall",
        "--quiet",
        "--snapshot-dir",
        str(out),
    ]
    env = {
        **os.environ,
        **cluster.env,
        "OMNI_LEDGER_RUNTIME_EPOCH_INTERVAL": "300ms",
        "OMNI_LEDGER_SNAPSHOTS_INTERVAL": "300ms",
    }
    rng = random.Random(2026)
    kills = 0
    moments: list[str] = []
    for attempt in range(5):
        applied = events_applied(out)
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if attempt % 2 == 0:
            # Anywhere from inside start-up (~0.6-1.5 s) to just past it: some kills land before
            # the first event is folded, on purpose.
            time.sleep(rng.uniform(0.2, 1.0))
            moments.append("start-up")
        else:
            # Once this run has published a snapshot of its own (its first epochs are durable),
            # then up to one and a half epochs more: the kill falls anywhere in an epoch, inside a
            # checkpoint or a publish, or between the checkpoint and Bytewax's commit.
            deadline = time.monotonic() + 120
            while events_applied(out) <= applied and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.45))
            moments.append("after progress")
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
    assert kills >= 3, f"the flow finished before it could be killed several times ({moments}); make the input larger"
    final = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert final.returncode == 0, final.stderr

    # The reference: the same events in produce order (each key's order is its partition's),
    # on the wall clock of this test (no hold is due yet).
    now = time.time_ns() // 1_000_000
    model = reference_live(events, now)
    assert_store_matches(out, model, now)

    decided: dict[str, set[str]] = defaultdict(set)
    other: dict[str, set[str]] = defaultdict(set)  # what else the topic said of a reservation
    decisions = SingleObjectWriter("reservation_decision.avsc")
    for message in cluster.read_all("reservation.decisions", seconds=60):
        record = decisions.decode(message.value())
        if record["reason"] in {
            "atp_sufficient",
            "insufficient_atp",
            "expired_on_arrival",
            "ended_before_request_arrived",
        }:
            decided[record["reservation_id"]].add(record["status"])
        else:
            other[record["reservation_id"]].add(f"{record['status']}/{record['reason']}")
    expected = {rid: {status} for rid, status in dict(model.request_decisions).items()}
    problem = difference("reservation decisions", expected, decided)
    if problem:
        lost = [rid for rid in expected if rid not in decided][:5]
        problem += "\n  the topic's other decisions of the first missing: " + ", ".join(
            f"{rid}: {sorted(other.get(rid, ())) or 'none'}" for rid in lost
        )
    assert not problem, problem
    print(
        f"\ncrash test: {kills} kills ({', '.join(moments[:kills])}), {len(events):,} events, "
        f"{len(model.history):,} positions equal to the "
        f"reference model, {len(expected):,} reservations each decided once"
    )


def _event(event_id: str, qty: int, type_: str = "RECEIVED") -> InventoryEvent:
    from ledger.contract import require_event

    return require_event(
        {
            "event_id": event_id,
            "type": type_,
            "occurred_at": 1_790_000_000_000,
            "site_id": "ST-1",
            "sku": "K",
            "qty": qty,
        }
    )


def _sasl_env(kafka, password: str) -> dict[str, str]:
    if kafka.sasl_bootstrap is None:
        pytest.skip("this broker has no SASL listener (set KAFKA_SASL_BOOTSTRAP_SERVERS)")
    return {
        "OMNI_LEDGER_KAFKA_BOOTSTRAP": kafka.sasl_bootstrap,
        "OMNI_LEDGER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "OMNI_LEDGER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "OMNI_LEDGER_KAFKA_SASL_USERNAME": kafka.user,
        "OMNI_LEDGER_KAFKA_SASL_PASSWORD": password,
        "OMNI_LEDGER_KAFKA_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}.",
    }


def test_the_sasl_settings_reach_every_client_of_the_flow(kafka, tmp_path):
    env = _sasl_env(kafka, kafka.password)
    assert run_cli("topics", "create", "--partitions", "1", env=env).returncode == 0
    assert run_cli("produce", "--file", str(EXAMPLES / "story.jsonl"), env=env).returncode == 0
    out = tmp_path / "snap"
    run = run_cli("run", "--source", "kafka", "--until-end", "--quiet", "--snapshot-dir", str(out), env=env)
    assert run.returncode == 0, run.stderr
    with SnapshotReader.open(out) as reader:
        assert len(reader.positions()) == 6


def test_a_wrong_password_fails_within_seconds_with_a_clear_error(kafka):
    env = _sasl_env(kafka, "not-the-password")
    started = time.monotonic()
    result = run_cli("topics", "list", env=env, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert "Authentication" in result.stderr or "authentication" in result.stderr, result.stderr
    assert "sasl_password" in result.stderr  # says what to check
    assert elapsed < 20, f"took {elapsed:.1f} s"


def _broker(*args: str) -> dict:
    import json

    result = subprocess.run(
        [sys.executable, str(REPO / "infra" / "kafka" / "broker.py"), *args],
        capture_output=True,
        text=True,
        timeout=720,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]) if "--json" in args else {}


def test_a_broker_restart_while_the_flow_runs_loses_nothing(kafka, tmp_path):
    """A broker of this test's own: stop it under a running flow, start it again, go on."""
    home = tmp_path / "broker"
    up = _broker("up", "--free-ports", "--dir", str(home), "--json")
    ports = [
        str(up["bootstrap"]).rsplit(":", 1)[1],
        str(up["sasl_bootstrap"]).rsplit(":", 1)[1],
        str(up["controller"]).rsplit(":", 1)[1],
    ]
    try:
        env = {
            **os.environ,
            "OMNI_LEDGER_KAFKA_BOOTSTRAP": up["bootstrap"],
            "OMNI_LEDGER_KAFKA_PARTITIONS": "2",
            "OMNI_LEDGER_SNAPSHOTS_INTERVAL": "300ms",
        }
        assert run_cli("topics", "create", env=env).returncode == 0
        events = recent_simulated_events(6_000)
        codec = WireCodec()

        def send(batch):
            producer = EventProducer({"bootstrap.servers": up["bootstrap"]}, "inventory.events")
            for event in batch:
                producer.send(f"{event.site_id}|{event.sku}".encode(), codec.encode(event))
            producer.flush()

        send(events[:3_000])
        out = tmp_path / "snap"
        # Output to a file, not a pipe nobody reads while it runs: with the broker away the
        # client logs a line per retry, and a full pipe would stall the flow itself.
        log_path = tmp_path / "flow.log"
        log = log_path.open("w")
        flow = subprocess.Popen(
            [sys.executable, "-m", "omni_ledger", "run", "--source", "kafka", "--quiet", "--snapshot-dir", str(out)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while events_applied(out) < 3_000 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert events_applied(out) == 3_000
            _broker("down", "--dir", str(home))
            time.sleep(4)  # the flow keeps running against no broker
            assert flow.poll() is None, "the flow died when the broker went away"
            _broker(
                "up", "--dir", str(home), "--port", ports[0], "--sasl-port", ports[1], "--controller-port", ports[2]
            )
            send(events[3_000:])
            # Bounded, and generous: after a restart the broker reloads its coordinators
            # before idempotent producers get an id again, slower on a loaded machine.
            deadline = time.monotonic() + 180
            while events_applied(out) < 6_000 and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            flow.send_signal(signal.SIGINT)
            flow.wait(timeout=120)
            log.close()
        assert flow.returncode == 0, log_path.read_text()[-5000:]
        assert events_applied(out) == 6_000, log_path.read_text()[-5000:]
        now = time.time_ns() // 1_000_000
        model = reference_live(events, now)
        assert_store_matches(out, model, now)
    finally:
        subprocess.run(
            [sys.executable, str(REPO / "infra" / "kafka" / "broker.py"), "down", "--dir", str(home)],
            capture_output=True,
            timeout=60,
            check=False,
        )


def test_a_producer_that_adds_an_optional_field_does_not_break_the_flow(kafka, tmp_path):
    """v2 of the event schema adds `carrier`. Unknown, its values are dead letters naming the
    fingerprint and the flow goes on; listed in kafka.writer_schemas, they apply."""
    import io
    import json as _json

    import fastavro

    from adapters.avro_wire import schema_fingerprint
    from adapters.codec import SCHEMA_PATH
    from ledger.contract import event_to_record

    v2 = _json.loads(SCHEMA_PATH.read_text())
    v2["fields"].append({"name": "carrier", "type": ["null", "string"], "default": None})
    v2_file = tmp_path / "inventory_event_v2.avsc"
    v2_file.write_text(_json.dumps(v2))
    parsed = fastavro.parse_schema(v2)

    def v2_value(event: InventoryEvent) -> bytes:
        body = io.BytesIO()
        fastavro.schemaless_writer(body, parsed, {**event_to_record(event), "carrier": "DHL"})
        return b"\xc3\x01" + schema_fingerprint(v2) + body.getvalue()

    for listed, expected_on_hand in ((False, 5), (True, 12)):
        cluster = Cluster(kafka, partitions=1)
        producer = EventProducer({"bootstrap.servers": kafka.bootstrap}, cluster.topic("inventory.events"))
        producer.send(b"ST-1|K", WireCodec().encode(_event("v1", qty=5)))
        producer.send(b"ST-1|K", v2_value(_event("v2", qty=7)))
        producer.flush()
        out = tmp_path / f"snap-{listed}"
        env = {"OMNI_LEDGER_KAFKA_WRITER_SCHEMAS": str(v2_file)} if listed else {}
        run = cluster.cli("run", "--source", "kafka", "--until-end", "--quiet", "--snapshot-dir", str(out), env=env)
        assert run.returncode == 0, run.stderr
        with SnapshotReader.open(out) as reader:
            assert [p["on_hand"] for p in reader.positions(sku="K")] == [expected_on_hand]
        letters = cluster.read_all("inventory.events.dlq")
        if listed:
            assert letters == []
        else:
            (letter,) = letters
            assert schema_fingerprint(v2).hex() in dict(letter.headers())["omni.detail"].decode()
