"""Latency of a tailing flow at a steady rate (part of `make bench` and `make bench-kafka`).

Events are produced at a steady rate, each with `occurred_at` := its produce time:

- produce -> `atp.changes`: the first change of the event's key whose `max_occurred_at`
  reached the event's produce time (broker CreateTime of the change: the flow's produce);
  an event whose first such change carries a later event's time is not timed but counted
  as `shared` (it changed nothing of its own, or was folded with a later one). Before
  2026-12-03 only a change covering the key's own next event counted so; a count that
  changed nothing was then timed to whatever changed the position next (a transfer into
  it, seconds later): that figure is kept as `p99_ms_to_next_change`;
- produce -> published snapshot: probe events on keys of their own (site BENCH-PROBE),
  seen by another process polling the store (bench/snapwatch.py);
- reservation request -> decision: the simulator's RESERVATION_REQUESTED events against
  the first `reservation.decisions` message of their reservation id.

`cores` says where the machine's cores went while the events were produced (`bench.cores`):
the flow, the broker (the process listening on the bootstrap port), the watcher, this
process (the load generator), everything else, and idle. With no idle core left the
latencies are a queue for a core, whatever the flow does with its own.

Not a test: nothing asserts a timing.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
import urllib.request
import uuid
from bisect import bisect_left
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from adapters.avro_wire import WireCodec
from adapters.kafka_records import SingleObjectWriter
from bench.common import REPO, flow_env, free_port, percentile, say, stop_process, tail, topic_watermarks
from bench.cores import CoreWatch, listening_pid
from bench.kafka import create_topics, simulated, spawn_flow
from ledger.events import EventType, InventoryEvent

__all__ = ["PROBE_SITE", "measure_latency"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PROBE_SITE = "BENCH-PROBE"


def _millis(value: object) -> int:
    return (value - _EPOCH) // timedelta(milliseconds=1) if isinstance(value, datetime) else int(value)  # type: ignore[call-overload]


def _read_topic(bootstrap: str, topic: str) -> list[tuple[bytes, bytes, int]]:
    """Every (key, value, CreateTime ms) of `topic`, to its current end."""
    ends = topic_watermarks(bootstrap, topic)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}", "enable.auto.commit": False}
    )
    out: list[tuple[bytes, bytes, int]] = []
    todo = {p: high for p, (_, high) in ends.items() if high > 0}
    consumer.assign([TopicPartition(topic, p, 0) for p in todo])
    deadline = time.monotonic() + 120
    while todo and time.monotonic() < deadline:
        for message in consumer.consume(1000, 1.0):
            if message.error() is not None:
                continue
            part = message.partition() or 0
            out.append((message.key() or b"", message.value() or b"", int(message.timestamp()[1])))
            if part in todo and (message.offset() or 0) >= todo[part] - 1:
                del todo[part]
    consumer.close()
    return out


def _distribution(latencies: list[float], **extra: Any) -> dict[str, Any]:
    latencies.sort()
    return {
        "samples": len(latencies),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else None,
        **extra,
    }


def _probe(n: int, now: int, run: str) -> InventoryEvent:
    return InventoryEvent(
        event_id=f"probe-{run}-{n}", type=EventType.RECEIVED, occurred_at=now, site_id=PROBE_SITE,
        sku=f"P-{n:07d}", qty=1, source="BENCH",
    )  # fmt: skip


def _send(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(0.05)


def _wait_ready(bootstrap: str, producer: Producer, codec: WireCodec, prefix: str, run: str) -> float:
    """Produce probe events until the flow answers one on `atp.changes`; seconds waited."""
    topic = prefix + "atp.changes"
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    started = time.monotonic()
    n = 0
    try:
        while time.monotonic() - started < 120:
            event = _probe(n, time.time_ns() // 1_000_000, run + "w")
            warm = dataclasses.replace(event, sku=f"W{n}")
            _send(producer, prefix + "inventory.events", f"{PROBE_SITE}|W{n}".encode(), codec.encode(warm))
            producer.flush(10)
            n += 1
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                return time.monotonic() - started
    finally:
        consumer.close()
    msg = "the tailing flow did not answer a probe event within 120 s"
    raise RuntimeError(msg)


def measure_latency(
    bootstrap: str,
    work: Path,
    *,
    rate: int,
    seconds: float,
    partitions: int = 2,
    probe_every: float = 0.1,
    checkout: Path | None = None,
    cold: bool = False,
) -> dict[str, Any]:
    """Latencies of a tailing flow fed `rate` events/s for `seconds` (see the module docstring).

    `cold`: feed it as soon as it answered on `atp.changes`, without waiting for its first
    snapshot: its start (opening the snapshot store, the first publish) is then measured too.
    """
    run_id = uuid.uuid4().hex[:8]
    prefix = f"lat{run_id}."
    create_topics(bootstrap, prefix, partitions)
    env = flow_env(bootstrap, prefix, partitions)
    snapdir = work / "lat-store"
    log = work / "lat-flow.log"
    port = free_port()
    flow = spawn_flow(
        env,
        [
            "run",
            "--source",
            "kafka",
            "--quiet",
            "--log-format",
            "json",
            "--snapshot-dir",
            str(snapdir),
            "--metrics-port",
            str(port),
        ],
        log,
        (),
        checkout,
    )
    watcher: subprocess.Popen[bytes] | None = None
    codec = WireCodec()
    # A producer that keeps up with the rate. With linger.ms 1 (one message a request) the local
    # broker took ~1,100 produce requests a second: at 2,000 events/s its high watermark stood at
    # 12,247 of 30,081 events produced after 15 s, so every figure below measured the bench's own
    # backlog (seconds), not the flow (2026-12-02, docs/scaling.md). 20 ms, as EventProducer:
    # at most 20 ms of each figure is the producer's batching.
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": "20", "queue.buffering.max.messages": "1000000"})
    topic = prefix + "inventory.events"
    # key -> [(occurred_at, sent at)]: occurred_at is the event's planned send time; a change
    # whose max_occurred_at reached it includes the event.
    sent: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    kinds: dict[tuple[bytes, int], str] = {}  # (key, occurred_at) -> event type, to name the worst
    requests: dict[str, int] = {}
    probes: dict[str, int] = {}
    count = 0
    stalls: dict[str, Any] = {}
    core_use: dict[str, object] = {}
    try:
        total = int(rate * seconds)
        say(f"  generating and encoding {total:,} simulated events, {rate:,} a second of their clock...")
        base = time.time_ns() // 1_000_000
        planned = [
            dataclasses.replace(event, occurred_at=base + i * 1_000 // rate)
            for i, event in enumerate(simulated(total, base, int(time.time()) + 1, rate))
        ]
        encoded = [
            (
                f"{e.site_id}|{e.sku}".encode(),
                codec.encode(e),
                e.occurred_at,
                e.ref if e.type is EventType.RESERVATION_REQUESTED else None,
                e.type.value,
            )
            for e in planned
        ]
        del planned
        # The watcher starts before the flow is fed, and the run waits until it has seen a warm-up
        # probe in a published snapshot: started with the load (as before 2026-12-04), its interpreter,
        # imports and first open of the store took a core in the first second measured, and the
        # flow's first publish landed there too (docs/scaling.md, "Seventeenth pass").
        seen_path = work / "lat-snapshots.tsv"
        with seen_path.open("wb") as seen_out:
            watcher = subprocess.Popen(
                [sys.executable, "-m", "bench.snapwatch", str(snapdir), PROBE_SITE, str(seconds + 180)],
                cwd=REPO,
                stdout=seen_out,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        ready = _wait_ready(bootstrap, producer, codec, prefix, run_id)
        if cold:
            say(f"  flow ready after {ready:.1f} s (cold: not waiting for its first snapshot); {rate:,} events/s...")
        else:
            published = _wait_published(seen_path, limit=120)
            say(
                f"  flow ready after {ready:.1f} s, its first snapshot seen {published:.1f} s later; "
                f"{rate:,} events/s for {seconds:.0f} s..."
            )
        step = max(1, rate // 200)  # at most 5 ms of events a pass, so probes keep their pace
        next_probe = 0.0
        # Where the cores went while the events were produced: at a rate the machine cannot
        # hold, every figure below is a queue for a core, and this says who took them.
        broker = listening_pid(int(bootstrap.split(",")[0].rsplit(":", 1)[1]))
        cores = CoreWatch({"flow": flow.pid, "broker": broker, "watcher": watcher.pid}, include_self="load generator")
        cores.start()
        started = time.monotonic()
        while count < total:
            elapsed = time.monotonic() - started
            due = min(total, int(elapsed * rate), count + step)
            if due <= count:
                time.sleep(0.0005)
                continue
            now = time.time_ns() // 1_000_000
            if elapsed >= next_probe:
                probe = _probe(len(probes), now, run_id)
                _send(producer, topic, f"{PROBE_SITE}|{probe.sku}".encode(), codec.encode(probe))
                probes[probe.sku] = now
                next_probe += probe_every
            for key, value, occurred_at, ref, kind in encoded[count:due]:
                kinds[key, occurred_at] = kind
                _send(producer, topic, key, value)
                sent[key].append((occurred_at, now))
                if ref is not None:
                    requests[ref] = now
            count = due
            producer.poll(0)
        produced_s = time.monotonic() - started
        core_use = cores.stop()
        producer.flush(30)
        say(f"  produced {count:,} events at {count / produced_s:,.0f}/s; letting the flow catch up...")
        last_probe = max(probes, key=probes.__getitem__) if probes else None
        _drain(seen_path, last_probe, limit=60)
        stalls = _stalls(port, time.monotonic() - started)
    finally:
        stop_process(flow, grace=60)
        if watcher is not None:
            stop_process(watcher, grace=10, sig=15)
    if flow.returncode not in (0, 130, -2):
        return {"error": f"the tailing flow exited {flow.returncode}:\n{tail(log.with_name(log.name + '.err'))}"}

    changes: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    writer = SingleObjectWriter("position_change.avsc")
    for key, value, stamp in _read_topic(bootstrap, prefix + "atp.changes"):
        changes[key].append((_millis(writer.decode(value)["max_occurred_at"]), stamp))
    change_ms: list[float] = []
    next_change_ms: list[float] = []  # every event timed to its position's next change, own or not
    # Per second of produce time, the worst latency: where the p99 comes from (steady or stalls).
    worst: dict[str, dict[int, float]] = {"changes": {}, "decisions": {}}
    missing = shared = 0
    slowest: list[tuple[float, bytes, int, int, int, list[tuple[int, int]]]] = []
    for key, times in sent.items():
        seen = sorted(changes.get(key, []))
        marks = [m for m, _ in seen]
        earliest = [0] * len(seen)  # earliest[i]: the first broker time among changes i..
        for i in range(len(seen) - 1, -1, -1):
            earliest[i] = seen[i][1] if i == len(seen) - 1 else min(seen[i][1], earliest[i + 1])
        for n, (occurred_at, at) in enumerate(times):
            i = bisect_left(marks, occurred_at)
            if i < len(seen) and marks[i] > occurred_at:
                # The first change covering this event carries a later event's time: the event
                # changed nothing of its own (a count equal to the stock, a refused request, a
                # duplicate) or was folded in one call with a later one. Timed to that change, a
                # count that changed nothing read as the seconds until some other event (its
                # key's, or a transfer's into the position) changed the position next.
                shared += 1
                if n + 1 >= len(times) or marks[i] < times[n + 1][0]:
                    next_change_ms.append(float(earliest[i] - at))  # the rule before 2026-12-03
            elif i < len(seen):
                change_ms.append(float(earliest[i] - at))
                next_change_ms.append(change_ms[-1])
                _note_worst(worst["changes"], at, change_ms[-1])
                slowest.append((change_ms[-1], key, occurred_at, at, i, seen))
            else:
                missing += 1

    decided: dict[str, int] = {}
    for key, _, stamp in _read_topic(bootstrap, prefix + "reservation.decisions"):
        ref = key.decode()
        decided[ref] = min(stamp, decided.get(ref, stamp))
    decision_ms = [float(decided[ref] - at) for ref, at in requests.items() if ref in decided]
    for ref, at in requests.items():
        if ref in decided:
            _note_worst(worst["decisions"], at, float(decided[ref] - at))

    snapshot_ms: list[float] = []
    for line in (work / "lat-snapshots.tsv").read_text().splitlines():
        sku, _, seen_at = line.partition("\t")
        if sku in probes and seen_at:
            snapshot_ms.append(float(int(seen_at) - probes[sku]))
    return {
        "rate": rate,
        "seconds": seconds,
        "cold": cold,
        "produced": count,
        "produced_per_s": count / produced_s,
        "changes": _distribution(
            change_ms,
            missing=missing,
            shared=shared,
            p99_ms_to_next_change=percentile(sorted(next_change_ms), 0.99),
        ),
        "decisions": _distribution(decision_ms, requests=len(requests)),
        "snapshots": _distribution(snapshot_ms, probes=len(probes)),
        "stalls": stalls,
        "cores": core_use,
        "slowest_changes": [
            _slow_change(ms, key, occurred_at, at, i, seen, kinds, times=sent[key])
            for ms, key, occurred_at, at, i, seen in sorted(slowest, key=lambda s: -s[0])[:12]
        ],
        "worst_by_second": {
            name: [[second, round(ms)] for second, ms in sorted(by_second.items())] for name, by_second in worst.items()
        },
    }


_STALLS = {
    "epoch closes": "omni_ledger_epoch_close_duration_seconds",
    "checkpoints": "omni_ledger_checkpoint_duration_seconds",
    "publishes": "omni_ledger_snapshot_publish_duration_seconds",
    "maintenance": "omni_ledger_snapshot_maintenance_duration_seconds",
}


def _stalls(port: int, seconds: float) -> dict[str, Any]:
    """What the flow waited on while tailing, from its /metrics: count, total and largest bucket bound of each.

    Epoch closes stall the fold (a worker's shard checkpoints, written together: the shards'
    own seconds overlap, so "checkpoints" sums to more than the wait); publishes and
    maintenance stall only the published snapshots (the writer's own thread). A flow too
    old to have a metric leaves it out.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        return {"error": f"cannot read the flow's /metrics on port {port}: {exc}"}
    found: dict[str, Any] = {"over_s": round(seconds, 1)}
    for family in text_string_to_metric_families(text):
        for label, name in _STALLS.items():
            if family.name != name:
                continue
            count = sum(s.value for s in family.samples if s.name == name + "_count")
            total = sum(s.value for s in family.samples if s.name == name + "_sum")
            buckets: dict[float, float] = defaultdict(float)
            for sample in family.samples:
                if sample.name == name + "_bucket":
                    buckets[float(sample.labels["le"])] += sample.value
            # The smallest bound holding every observation: the largest one was at most that.
            bound = min((le for le, n in buckets.items() if n >= count), default=None) if count else None
            found[label] = {"count": int(count), "seconds": round(total, 3), "largest_at_most_s": bound}
    return found


def _slow_change(
    ms: float,
    key: bytes,
    occurred_at: int,
    at: int,
    i: int,
    seen: list[tuple[int, int]],
    kinds: dict[tuple[bytes, int], str],
    times: list[tuple[int, int]],
) -> dict[str, Any]:
    """One slow event and the changes of its key around it: whether the flow was late or the key said nothing."""
    return {
        "latency_ms": round(ms),
        "key": key.decode(errors="replace"),
        "type": kinds.get((key, occurred_at)),
        "sent_ms": at,
        # Each (max_occurred_at - sent, broker time - sent) of the key's changes near the one that timed it.
        "changes_around": [[m - at, t - at] for m, t in seen[max(0, i - 2) : i + 3]],
        "sent_of_key": [[o - at, s - at, kinds.get((key, o))] for o, s in times][:12],
    }


def _note_worst(by_second: dict[int, float], sent_ms: int, latency_ms: float) -> None:
    second = sent_ms // 1000
    if latency_ms > by_second.get(second, -1.0):
        by_second[second] = latency_ms


def _wait_published(seen: Path, limit: float) -> float:
    """Wait until the watcher saw a warm-up probe in the store (published, and read); seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if seen.read_text().strip():
            return time.monotonic() - started
        time.sleep(0.05)
    msg = f"the snapshot watcher saw no warm-up probe in the store within {limit:.0f} s"
    raise RuntimeError(msg)


def _drain(seen: Path, last_probe: str | None, limit: float) -> None:
    """Wait (at most `limit` s) until the snapshot watcher saw the last probe, then 1 s more."""
    deadline = time.monotonic() + limit
    while last_probe is not None and time.monotonic() < deadline:
        if f"{last_probe}\t" in seen.read_text():
            break
        time.sleep(0.5)
    time.sleep(1.0)
