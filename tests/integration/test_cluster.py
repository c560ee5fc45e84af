"""`omni-ledger run` as a Bytewax cluster of two processes gives the positions of one process.

The same input is folded (a) by one process, (b) by a cluster of two processes
(`--process-id 0|1 --addresses "127.0.0.1:P0;127.0.0.1:P1"`) on one snapshot directory,
and (c) by such a cluster where one process is killed with SIGKILL mid-run, then the
whole cluster is started again on the same directory. All must end with the same
positions, inbound lines, reservations, events applied and decisions. The input is event
files (a replay on the event-time clock, deterministic to the decision), then a Kafka
topic of four partitions, which the two processes share.

What Bytewax 0.21.1 does when a process of a cluster dies: the other process's network
thread fails writing to the dead peer and Bytewax panics ("Send thread panic") about a
second later; `run` turns that into exit code 1 and a message saying to start every
process again on the same directory. A cluster cannot go on with a process missing: the
restart is of the whole cluster, and it resumes from the last epoch every process
completed (one recovery directory for the cluster, its partitions shared by all workers).

The file source is one partition (one worker reads, the others fold): the keys, the fold
and the sinks are spread over the two processes. On Kafka the partitions are spread too,
and each process resumes its partitions' offsets after the kill; the wall clock is used
there (as in test_kafka_flow.py), because on the event-time clock each process would
stamp events with the newest time of the partitions it reads, not of all of them.
Position `version` and `updated_at` are left out of the comparison: a version counts fold
calls that changed a position, and how many items of one key Bytewax hands one fold call
depends on timing (more so across processes); test_recovery.py leaves them out likewise.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from adapters.avro_wire import WireCodec
from adapters.kafka_io import EventProducer
from adapters.snapshot_store import SnapshotReader
from ledger.contract import event_to_json_bytes
from ledger.events import EventType, InventoryEvent
from simulator import RetailerSimulator, SimConfig
from tests.conftest import REPO, recent_simulated_events, run_cli
from tests.store_checks import events_applied

pytestmark = pytest.mark.integration

FILES = 3
# Sized so that the kill of the file-source cluster lands mid-run: at 15,000 a file the faster flow
# (2026-12-05: the store opened on the writer thread, no longer on the worker) folded all 45,000 events
# before a snapshot showed a sixth of them, once in a clean-clone CI run.
EVENTS_PER_FILE = 40_000
TOTAL = FILES * EVENTS_PER_FILE
FAST_EPOCHS = {"OMNI_LEDGER_RUNTIME_EPOCH_INTERVAL": "200ms", "OMNI_LEDGER_SNAPSHOTS_INTERVAL": "200ms"}
KAFKA_EVENTS = 40_000
RUN_TIMEOUT_S = 180
QUIET = ("--quiet", "--json", "--log-format", "text")
PEER_DEATH_TIMEOUT_S = 30


def write_files(directory: Path) -> list[Path]:
    """A few simulated days' worth of events, split into consecutive files."""
    sim = RetailerSimulator(SimConfig(seed=11, stores=10, skus=100))
    now = 1_790_000_000_000
    paths = []
    for index in range(FILES):
        path = directory / f"events-{index}.jsonl"
        with path.open("wb") as out:
            written = 0
            while written < EVENTS_PER_FILE:
                now += 2_000
                batch = sim.next_events(now, min(500, EVENTS_PER_FILE - written))
                out.write(b"".join(event_to_json_bytes(e) + b"\n" for e in batch))
                written += len(batch)
        paths.append(path)
    return paths


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on now (held open together so they differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Process:
    """One `omni-ledger run` subprocess, its output in files (a full pipe nobody reads would stall it)."""

    def __init__(self, name: str, source: str, out: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.stdout_path = out.parent / f"{out.name}.{name}.stdout"
        self.stderr_path = out.parent / f"{out.name}.{name}.stderr"
        command = [sys.executable, "-m", "omni_ledger", "run", "--source", source, "--snapshot-dir", str(out)]
        with self.stdout_path.open("wb") as stdout, self.stderr_path.open("wb") as stderr:
            self.popen = subprocess.Popen(
                [*command, *QUIET, *extra],
                cwd=REPO,
                env={**os.environ, **FAST_EPOCHS, **(env or {})},
                stdout=stdout,
                stderr=stderr,
            )

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=30)
            pytest.fail(f"{self.stderr_path.name} did not end within {timeout:.0f} s:\n{self.stderr()[-3000:]}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def summary(self) -> dict[str, object]:
        # --json prints one object; Bytewax's own lines must not reach stdout.
        return json.loads(self.stdout_path.read_text())  # type: ignore[no-any-return]


def start_cluster(source: str, out: Path, *extra: str, env: dict[str, str] | None = None) -> list[Process]:
    addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(2))
    return [
        Process(f"p{index}", source, out, *extra, "--process-id", str(index), "--addresses", addresses, env=env)
        for index in range(2)
    ]


def finish(processes: list[Process]) -> None:
    """Wait for every process of a run (bounded); all must succeed."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    codes = [p.wait(max(1.0, deadline - time.monotonic())) for p in processes]
    for process, code in zip(processes, codes, strict=True):
        assert code == 0, f"{process.stderr_path.name} exited {code}:\n{process.stderr()[-3000:]}"


def store_state(out: Path, *, wall_clock: bool = False) -> dict[str, object]:
    """Everything the store holds that must not depend on how the work was spread."""
    # On the wall clock a decision's time is when it was made, not the event's.
    untimed = {"decided_at"} if wall_clock else set()
    with SnapshotReader.open(out) as reader:
        positions = sorted(
            ({k: v for k, v in p.items() if k not in {"version", "updated_at"}} for p in reader.positions()),
            key=lambda p: (p["site_id"], p["sku"]),
        )
        reservations = sorted(
            ({k: v for k, v in r.items() if k not in untimed} for r in reader.reservations()),
            key=lambda r: r["reservation_id"],
        )
        latest = reader.latest()
        assert latest is not None
        return {
            "positions": positions,
            "inbound": sorted(reader.inbound(), key=repr),
            "reservations": reservations,
            "events_applied": latest["events_applied"],
        }


def output_lines(out: Path, name: str) -> list[bytes]:
    """A JSON-lines output as a sorted list: processes interleave keys differently, each line once."""
    path = out / name
    return sorted(path.read_bytes().splitlines()) if path.exists() else []


def assert_same_state(state: dict[str, object], reference: dict[str, object]) -> None:
    assert len(state["positions"]) == len(reference["positions"])  # type: ignore[arg-type]
    for mine, theirs in zip(state["positions"], reference["positions"], strict=True):  # type: ignore[call-overload]
        assert mine == theirs  # the first differing position, readably
    assert state == reference


def assert_same_as(reference: dict[str, object], ref_dir: Path, out: Path) -> None:
    state = store_state(out)
    assert state["events_applied"] == TOTAL
    assert_same_state(state, reference)
    assert output_lines(out, "decisions.jsonl") == output_lines(ref_dir, "decisions.jsonl")
    assert output_lines(out, "dead_letters.jsonl") == output_lines(ref_dir, "dead_letters.jsonl")


def produced(bootstrap: str, topic: str) -> int:
    """Messages in `topic` so far: the sum of its partitions' high watermarks."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"watch-{uuid.uuid4().hex[:8]}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
    finally:
        consumer.close()


def kill_mid_run(
    victim: Process, survivor: Process, out: Path, total: int, started: Callable[[], bool] | None = None
) -> None:
    """SIGKILL `victim` mid-run; the survivor must stop by itself.

    Mid-run is once a sixth of the input is in a snapshot, or, given `started`, once it
    says the fold has begun plus a few epochs (0.4 s of 200 ms epochs). A snapshot can land
    late: since the flow got faster, a Kafka cluster folded all 40,000 events before a
    snapshot showed a sixth of them (the changes topic is no better a count: a shard call
    sends one change per position however many of its events it folded).
    """
    deadline = time.monotonic() + RUN_TIMEOUT_S
    if started is None:
        while events_applied(out) < total // 6 and time.monotonic() < deadline and victim.popen.poll() is None:
            time.sleep(0.05)
    else:
        while not started() and time.monotonic() < deadline and victim.popen.poll() is None:
            time.sleep(0.01)
        time.sleep(0.4)
    assert victim.popen.poll() is None, "the cluster ended before it could be killed; make the input larger"
    victim.popen.send_signal(signal.SIGKILL)
    victim.popen.wait(timeout=30)
    killed_at = events_applied(out)
    print(f"\nkilled with {killed_at:,} of {total:,} events in the store")
    # Killed with part of the input in the store (a Kafka kill may come before the first publish).
    assert killed_at < total, killed_at
    assert killed_at > 0 or started is not None, killed_at
    # Bytewax does not carry on without a process: the survivor stops by itself, and says why.
    code = survivor.wait(PEER_DEATH_TIMEOUT_S)
    assert code != 0
    assert "connection to another process of the cluster broke" in survivor.stderr()


def test_a_two_process_cluster_folds_like_one_process_even_after_a_kill_9_and_a_restart(tmp_path):
    paths = write_files(tmp_path)
    source = "file:" + ",".join(str(p) for p in paths)

    # (a) one process: the reference.
    single = tmp_path / "single"
    finish([Process("single", source, single)])
    reference = store_state(single)
    assert reference["events_applied"] == TOTAL
    decisions = output_lines(single, "decisions.jsonl")
    assert decisions, "the input should hold reservation requests"

    # (b) a cluster of two processes on one snapshot directory.
    clustered = tmp_path / "cluster"
    cluster = start_cluster(source, clustered)
    finish(cluster)
    summaries = [p.summary() for p in cluster]
    assert [(s["process_id"], s["processes"]) for s in summaries] == [(0, 2), (1, 2)]
    # The work was spread: one snapshot writer counted every event, in one of the two processes.
    assert sorted(s["events_applied"] for s in summaries) == [0, TOTAL]
    assert_same_as(reference, single, clustered)

    # (c) a cluster whose process 1 is killed mid-run, then the whole cluster started again.
    crashed = tmp_path / "crashed"
    first, second = start_cluster(source, crashed)
    kill_mid_run(second, first, crashed, TOTAL)
    finish(start_cluster(source, crashed))
    assert_same_as(reference, single, crashed)


def test_a_two_process_cluster_shares_four_kafka_partitions_and_resumes_them_after_a_kill_9(kafka, tmp_path):
    env = {
        "OMNI_LEDGER_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "OMNI_LEDGER_KAFKA_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}.",
        "OMNI_LEDGER_KAFKA_PARTITIONS": "4",
    }
    created = run_cli("topics", "create", "--json", env=env)
    assert created.returncode == 0, created.stderr
    producer = EventProducer(
        {"bootstrap.servers": kafka.bootstrap}, env["OMNI_LEDGER_KAFKA_TOPIC_PREFIX"] + "inventory.events"
    )
    codec = WireCodec()
    for event in recent_simulated_events(KAFKA_EVENTS):
        # Keyed by position: each position's events keep their order, in one partition.
        producer.send(f"{event.site_id}|{event.sku}".encode(), codec.encode(event))
    producer.flush()
    args = ("--until-end", "--clock", "wall")

    single = tmp_path / "single"
    finish([Process("single", "kafka", single, *args, env=env)])
    reference = store_state(single, wall_clock=True)
    assert reference["events_applied"] == KAFKA_EVENTS
    assert reference["reservations"], "the input should hold reservation requests"

    # Process 0 is the victim this time; then the whole cluster again, on the same directory.
    crashed = tmp_path / "crashed"
    first, second = start_cluster("kafka", crashed, *args, env=env)
    changes = env["OMNI_LEDGER_KAFKA_TOPIC_PREFIX"] + "atp.changes"
    already = produced(kafka.bootstrap, changes)  # the single run's changes, same topic
    kill_mid_run(first, second, crashed, KAFKA_EVENTS, lambda: produced(kafka.bootstrap, changes) > already)
    finish(start_cluster("kafka", crashed, *args, env=env))
    assert_same_state(store_state(crashed, wall_clock=True), reference)


def write_holds(path: Path) -> None:
    """Forty holds on forty positions, due a minute after they are taken; the input goes on for ten minutes."""
    t0 = 1_790_000_000_000
    events = []
    for i in range(40):
        sku = f"SKU-{i:05d}"
        events.append(InventoryEvent(f"r{i}", EventType.RECEIVED, t0 + i, "ST-001", sku, 5))
        events.append(
            InventoryEvent(
                f"h{i}",
                EventType.RESERVATION_REQUESTED,
                t0 + 1_000 + i,
                "ST-001",
                sku,
                2,
                ref=f"R{i}",
                expires_at=t0 + 60_000,
            )
        )
    events.append(InventoryEvent("last", EventType.RECEIVED, t0 + 600_000, "ST-002", "SKU-99999", 1))
    path.write_bytes(b"".join(event_to_json_bytes(e) + b"\n" for e in events))


def test_holds_due_by_the_end_of_a_replay_expire_in_every_process_of_a_cluster(tmp_path):
    source = tmp_path / "holds.jsonl"
    write_holds(source)
    single, clustered = tmp_path / "single", tmp_path / "cluster"
    finish([Process("single", f"file:{source}", single)])
    with SnapshotReader.open(single) as reader:
        assert {r["status"] for r in reader.reservations()} == {"EXPIRED"}
    finish(start_cluster(f"file:{source}", clustered))
    assert store_state(clustered) == store_state(single)
