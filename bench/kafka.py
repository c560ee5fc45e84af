"""The flow on a real local broker: throughput against the raw ceiling, and latency at a steady rate.

Pieces of `make bench` (bench/suite.py), and `make bench-kafka` on their own:

1. Input: N simulated events as Avro (single-object framing) on a fresh `inventory.events`
   topic of P partitions (`make_input`).
2. Raw ceiling (`raw_ceiling`): a plain confluent-kafka consumer reading them all and
   decoding each with fastavro (`WireCodec.decode`), nothing else.
3. The flow (`run_flow`): `omni-ledger run --source kafka --until-end` on that topic (fold,
   `atp.changes`, decisions, DuckLake snapshots), 1 process or a cluster of several
   (`--process-id/--addresses`). Its rate is N over the wall time net of start-up, where
   start-up is the wall time of the same command on an empty topic (`startup_s`); the
   rate over the span from the first `atp.changes` message to the last snapshot is kept
   beside it.
4. Latency (`bench.latency.measure_latency`): the flow tailing while events are produced
   at a steady rate; produce -> `atp.changes`, -> published snapshot, request -> decision.

`--baseline DIR` runs the flow of another checkout (DIR/.venv/bin/python, in DIR) on the
same input too, alternating with this one for `--rounds`, so a change is measured side by
side with what it replaces under the same load; `--no-latency --no-sinks` keep to throughput.

Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts a private broker (infra/kafka/broker.py).
Not a test: nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from adapters.avro_wire import WireCodec
from adapters.kafka_io import EventProducer
from bench.common import (
    REPO,
    Broker,
    flow_env,
    free_port,
    last_json,
    machine,
    machine_line,
    omni,
    say,
    spawn_omni,
    stop_process,
    tail,
    topic_span,
    topic_watermarks,
    write_result,
)
from bench.cores import describe as describe_cores
from ledger.dead_letter import DeadLetter
from ledger.events import InventoryEvent
from omni_ledger.table import render_table
from simulator import RetailerSimulator, SimConfig

__all__ = [
    "FlowRun",
    "InputTopic",
    "make_input",
    "raw_ceiling",
    "run_flow",
    "simulated",
    "spawn_flow",
    "startup_s",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class InputTopic:
    """A prefix whose `inventory.events` holds `events` Avro events over `partitions` partitions."""

    prefix: str
    partitions: int
    events: int
    produce_per_s: float

    @property
    def topic(self) -> str:
        return self.prefix + "inventory.events"


def create_topics(bootstrap: str, prefix: str, partitions: int) -> None:
    """`omni-ledger topics create` for `prefix` (every topic the flow reads and writes)."""
    done = omni(flow_env(bootstrap, prefix, partitions), "topics", "create", timeout=60)
    if done.returncode != 0:
        msg = f"cannot create the topics {prefix}*:\n{done.stderr[-2000:]}"
        raise RuntimeError(msg)


def simulated(count: int, start: int, seed: int, rate: int = 20_000) -> list[InventoryEvent]:
    """`count` events of the retailer simulator from `start` (ms), `rate` a second of its clock."""
    sim = RetailerSimulator(SimConfig(seed=seed, expected_rate=rate))
    events: list[InventoryEvent] = []
    now = start
    while len(events) < count:
        now += 1_000_000 // rate
        events.extend(sim.next_events(now, 1_000))
    return events[:count]


def produce(bootstrap: str, topic: str, events: Sequence[InventoryEvent]) -> float:
    """Encode (Avro) and produce `events` keyed site|sku; events/s."""
    codec = WireCodec()
    producer = EventProducer({"bootstrap.servers": bootstrap}, topic)
    started = time.perf_counter()
    for event in events:
        producer.send(f"{event.site_id}|{event.sku}".encode(), codec.encode(event))
    producer.flush()
    return len(events) / (time.perf_counter() - started)


def make_input(bootstrap: str, events: int, partitions: int, tag: str = "bench") -> InputTopic:
    """A fresh prefix with its topics, and `events` simulated events (an hour old) on its input."""
    prefix = f"{tag}{uuid.uuid4().hex[:8]}."
    create_topics(bootstrap, prefix, partitions)
    if not events:
        return InputTopic(prefix, partitions, 0, 0.0)
    say(f"generating {events:,} simulated events...")
    batch = simulated(events, time.time_ns() // 1_000_000 - 3_600_000, seed=int(time.time()))
    say(f"producing them to {prefix}inventory.events ({partitions} partitions)...")
    rate = produce(bootstrap, prefix + "inventory.events", batch)
    return InputTopic(prefix, partitions, events, rate)


def raw_ceiling(bootstrap: str, inp: InputTopic, timeout: float = 300.0) -> float:
    """Events/s of a plain consumer + fastavro decode of the whole input, nothing else."""
    codec = WireCodec()
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(inp.topic, p, 0) for p in range(inp.partitions)])
    seen = bad = 0
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    while seen < inp.events and time.monotonic() < deadline:
        for message in consumer.consume(1000, 1.0):
            if message.error() is None:
                record = codec.decode(message.value(), "bench")
                bad += isinstance(record, DeadLetter)
                seen += 1
    rate = seen / (time.perf_counter() - started)
    consumer.close()
    if bad or seen < inp.events:
        msg = f"raw ceiling: {seen:,} of {inp.events:,} messages read, {bad:,} did not decode"
        raise RuntimeError(msg)
    return rate


@dataclass
class FlowRun:
    """One run of the flow to the end of its input, by `processes` processes."""

    processes: int
    events: int
    wall_s: float
    summaries: list[dict[str, Any]]
    span: tuple[int, int, int] | None = None
    """(first atp.changes ms, end ms: the last change or the last snapshot, changes written)"""
    error: str | None = None
    logs: list[str] = field(default_factory=list)
    store: str = ""
    cpu_s: float | None = None
    """CPU seconds (user + system) of the flow's processes (py-spy's too when wrapped)."""

    def net_rate(self, startup: float) -> float | None:
        """Events/s over the wall time net of start-up (None when it failed)."""
        if self.error is not None:
            return None
        return self.events / max(self.wall_s - startup, 1e-3)

    def span_rate(self) -> float | None:
        if self.error is not None or self.span is None or self.span[1] <= self.span[0]:
            return None
        return self.events / ((self.span[1] - self.span[0]) / 1000)

    def as_dict(self, startup: float | None = None) -> dict[str, Any]:
        return {
            "processes": self.processes,
            "events": self.events,
            "wall_s": self.wall_s,
            "startup_s": startup,
            "net_per_s": None if startup is None else self.net_rate(startup),
            "span_per_s": self.span_rate(),
            "span": self.span,
            "summaries": self.summaries,
            "error": self.error,
            "logs": self.logs,
            "store": self.store,
            "cpu_s": self.cpu_s,
            "cpu_us_per_event": None if self.cpu_s is None or not self.events else self.cpu_s / self.events * 1e6,
        }


def _last_snapshot_ms(snapdir: Path) -> int | None:
    """created_at of the store's newest snapshot_info row (epoch ms), None without one."""
    from adapters.snapshot_store import SnapshotReader

    try:
        with SnapshotReader.open(snapdir) as reader:
            latest = reader.latest()
    except Exception:  # a benchmark reports what it cannot read, it does not stop
        return None
    stamp = (latest or {}).get("created_at")
    return (stamp - _EPOCH) // timedelta(milliseconds=1) if isinstance(stamp, datetime) else None


def run_flow(
    bootstrap: str,
    inp: InputTopic,
    work: Path,
    *,
    processes: int = 1,
    workers: int = 1,
    wrapper: Sequence[str] = (),
    timeout: float = 600.0,
    env: dict[str, str] | None = None,
    extra: Sequence[str] = (),
    checkout: Path | None = None,
) -> FlowRun:
    """`omni-ledger run --source kafka --until-end` on `inp` by `processes` processes (a cluster when > 1).

    Each run writes a new store under `work`. `wrapper` prefixes process 0's command (py-spy).
    `checkout` runs another checkout's flow (its `.venv`, from its directory) instead of this one.
    """
    snapdir = work / "store"
    base = env or flow_env(bootstrap, inp.prefix, inp.partitions)
    changes = inp.prefix + "atp.changes"
    before = topic_watermarks(bootstrap, changes)
    args = [
        "run",
        "--source",
        "kafka",
        "--until-end",
        "--clock",
        "wall",
        "--quiet",
        "--json",
        "--log-format",
        "json",
        "--workers",
        str(workers),
        "--snapshot-dir",
        str(snapdir),
        *extra,
    ]
    cluster: list[list[str]] = [[]]
    if processes > 1:
        addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
        cluster = [["--process-id", str(i), "--addresses", addresses] for i in range(processes)]
    logs = [work / f"flow-{i}.log" for i in range(len(cluster))]
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    procs = [
        spawn_flow(base, [*args, *more], log, wrapper if i == 0 else (), checkout)
        for i, (more, log) in enumerate(zip(cluster, logs, strict=True))
    ]
    deadline = time.monotonic() + timeout
    codes: list[int | None] = [None] * len(procs)
    while any(c is None for c in codes) and time.monotonic() < deadline:
        codes = [p.poll() for p in procs]
        if any(c not in (None, 0) for c in codes):
            break  # one failed: the others would wait for it forever
        time.sleep(0.05)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (used.ru_utime + used.ru_stime)
    error = None
    if any(c != 0 for c in codes):
        for proc in procs:
            stop_process(proc, grace=10)
        failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
        why = f"process {failed[0]} exited {codes[failed[0]]}" if failed else f"timed out after {timeout:.0f} s"
        detail = "\n".join(tail(log.with_name(log.name + ".err"), 1500) for log in logs)
        error = f"{why}:\n{detail}"
    summaries = [s for s in (last_json(log) for log in logs) if s is not None]
    run = FlowRun(
        processes,
        inp.events,
        wall,
        summaries,
        error=error,
        logs=[str(log) for log in logs],
        store=str(snapdir),
        cpu_s=cpu if error is None else None,
    )
    if error is None and inp.events:
        span = topic_span(bootstrap, changes, before)
        snap_end = _last_snapshot_ms(snapdir)
        if span is not None:
            run.span = (span[0], max(span[1], snap_end or 0), span[2])
    return run


def spawn_flow(
    env: dict[str, str], args: list[str], log: Path, wrapper: Sequence[str], checkout: Path | None
) -> subprocess.Popen[bytes]:
    """`omni-ledger ARGS` of this checkout (`bench.common.spawn_omni`), or of `checkout` with its own venv."""
    if checkout is None:
        return spawn_omni(env, args, log, wrapper=wrapper)
    log.parent.mkdir(parents=True, exist_ok=True)
    # Its own code only: PYTHONPATH or a stray path of this checkout would mix the two.
    clean = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    with log.open("ab") as out, log.with_name(log.name + ".err").open("ab") as err:
        return subprocess.Popen(
            [*wrapper, str(checkout / ".venv" / "bin" / "python"), "-m", "omni_ledger", *args],
            cwd=checkout,
            env=clean,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )


def startup_s(bootstrap: str, work: Path, processes: int = 1, workers: int = 1, checkout: Path | None = None) -> float:
    """Wall time of the flow on an empty topic: interpreter, imports, Bytewax and Kafka start-up, exit."""
    empty = make_input(bootstrap, 0, 2, tag="empty")
    run = run_flow(bootstrap, empty, work, processes=processes, workers=workers, timeout=120, checkout=checkout)
    if run.error is not None:
        msg = f"the flow on an empty topic failed: {run.error}"
        raise RuntimeError(msg)
    return run.wall_s


# -- make bench-kafka


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


def _throughput_rows(label: str, runs: list[FlowRun], startup: float, ceilings: list[float]) -> list[list[object]]:
    rates = [run.net_rate(startup) or 0.0 for run in runs]
    ratios = [rate / ceiling for rate, ceiling in zip(rates, ceilings, strict=True)]
    cpu = [run.cpu_s / run.events * 1e6 for run in runs if run.cpu_s is not None and run.events]
    each = ", ".join(f"{rate:,.0f}" for rate in rates)
    return [
        [f"{label}: flow end to end (wall net of start-up)", f"{statistics.median(rates):,.0f} ({each})", "events/s"],
        [f"{label}: flow / raw ceiling of its round", f"{statistics.median(ratios):.1%}", "ratio"],
        [f"{label}: CPU per event (flow processes)", f"{statistics.median(cpu):.1f}" if cpu else "-", "us"],
        [
            f"{label}: first change to last snapshot",
            f"{statistics.median(r.span_rate() or 0 for r in runs):,.0f}",
            "/s",
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--latency-rate", type=int, default=20_000, help="events/s produced during the latency run")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--baseline", type=Path, help="another checkout (with its .venv) to run side by side")
    parser.add_argument("--rounds", type=int, default=1, help="throughput runs of each flow, alternating")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency run")
    parser.add_argument("--no-sinks", action="store_true", help="skip the sink comparison")
    parser.add_argument(
        "--baseline-first",
        action="store_true",
        help="with --baseline, run the baseline's latency run before this tree's (alternate between invocations)",
    )
    parser.add_argument(
        "--latency-cold",
        action="store_true",
        help="feed the tailing flow once it answers a change, not after its first snapshot (its start is measured)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    baseline = args.baseline.resolve() if args.baseline else None
    if baseline is not None and not (baseline / ".venv" / "bin" / "python").exists():
        sys.exit(f"--baseline {baseline}: no .venv/bin/python there (make venv in it first)")
    flows: list[tuple[str, Path | None]] = [("this", None)] + ([("baseline", baseline)] if baseline else [])

    latency: dict[str, dict[str, Any]] = {}
    sinks: dict[str, float] = {}
    runs: dict[str, list[FlowRun]] = {name: [] for name, _ in flows}
    ceilings: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        work = Path(tmp)
        broker = Broker(work)
        try:
            bootstrap = broker.bootstrap
            inp = make_input(bootstrap, args.events, args.partitions)
            startup = {}
            for name, checkout in flows:
                say(f"start-up of {name}: the flow on an empty topic...")
                startup[name] = startup_s(bootstrap, work / f"empty-{name}", checkout=checkout)
            for round_ in range(args.rounds):
                say(f"round {round_ + 1}: raw ceiling, consumer + fastavro decode...")
                ceilings.append(raw_ceiling(bootstrap, inp))
                # Alternate who goes first: the machine's load drifts within a round too.
                for name, checkout in flows if round_ % 2 == 0 else flows[::-1]:
                    say(f"round {round_ + 1}: the flow of {name}, to the end of the topic...")
                    where = work / f"flow-{name}-{round_}"
                    flow = run_flow(bootstrap, inp, where, timeout=60 + args.events / 500, checkout=checkout)
                    if flow.error is not None:
                        sys.exit(f"the flow of {name} failed: {flow.error}")
                    runs[name].append(flow)
            if not args.no_latency:
                from bench.latency import measure_latency  # it builds on this module

                # One latency run each: which goes first is the caller's to alternate between invocations.
                for name, checkout in flows[::-1] if args.baseline_first else flows:
                    say(f"latency of {name}: {args.latency_rate:,} events/s for {args.latency_seconds:.0f} s...")
                    latency[name] = measure_latency(
                        bootstrap,
                        work / f"latency-{name}",
                        rate=args.latency_rate,
                        seconds=args.latency_seconds,
                        partitions=args.partitions,
                        checkout=checkout,
                        cold=args.latency_cold,
                    )
            if not args.no_sinks:
                say("sinks: Bytewax's KafkaSink against ours, the same messages through a bare dataflow...")
                sinks = compare_sinks(bootstrap, inp.prefix, 200_000)
        finally:
            broker.close()
    rows: list[list[object]] = [
        ["producer (Avro encode + produce)", round(inp.produce_per_s), "events/s"],
        ["raw ceiling (consume + fastavro decode)", ", ".join(f"{c:,.0f}" for c in ceilings), "events/s"],
    ]
    if sinks:
        rows[1:1] = [
            ["sink: bytewax KafkaSink (flush per batch)", round(sinks["bytewax"]), "messages/s"],
            ["sink: KafkaOutSink (flush per epoch)", round(sinks["ours"]), "messages/s"],
        ]
    for name, _ in flows:
        rows += _throughput_rows(name, runs[name], startup[name], ceilings)
    if baseline is not None:
        ratio = statistics.median(
            (a.net_rate(startup["this"]) or 0) / max(b.net_rate(startup["baseline"]) or 1e-9, 1e-9)
            for a, b in zip(runs["this"], runs["baseline"], strict=True)
        )
        rows.append(["this / baseline, events/s (median of rounds)", f"{ratio:.2f}x", "ratio"])
    for name, found in latency.items():
        for what in ("changes", "snapshots", "decisions"):
            dist = found.get(what) or {}
            rows.append(
                [
                    f"{name}: {what} p50 / p99 at {args.latency_rate:,}/s",
                    f"{dist.get('p50_ms')} / {dist.get('p99_ms')}",
                    "ms",
                ]
            )
        changes = found.get("changes") or {}
        if changes.get("samples") is not None:
            rows.append(
                [
                    f"{name}: changes timed / not their own (shared) / none",
                    f"{changes['samples']:,} / {changes.get('shared', 0):,} / {changes.get('missing', 0):,}",
                    "events",
                ]
            )
        if (found.get("cores") or {}).get("cores"):
            rows.append([f"{name}: cores while producing", describe_cores(found["cores"]), ""])
        stalls = found.get("stalls") or {}
        for what in ("epoch closes", "checkpoints", "publishes", "maintenance"):
            stall = stalls.get(what)
            if stall:
                rows.append(
                    [
                        f"{name}: {what} while tailing ({stalls.get('over_s')} s)",
                        f"{stall['count']:,}, {stall['seconds']:.2f} s in all, largest <= {stall['largest_at_most_s']}",
                        "s",
                    ]
                )
    this = runs["this"][0]
    result = {
        "at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "events": args.events,
        "partitions": args.partitions,
        "produce_per_s": inp.produce_per_s,
        "raw_ceiling_per_s": ceilings[0],
        "raw_ceilings_per_s": ceilings,
        "flow": this.as_dict(startup["this"]),
        "ratio": (this.net_rate(startup["this"]) or 0.0) / ceilings[0],
        "runs": {name: [r.as_dict(startup[name]) for r in found] for name, found in runs.items()},
        "baseline": None if baseline is None else str(baseline),
        "latency": latency.get("this"),
        "latencies": latency,
        "sinks_per_s": sinks,
    }
    path = write_result("kafka", result)
    if args.json:
        print(json.dumps(result))
        return
    print(render_table(("figure", "value", "unit"), rows))
    print(f"{machine_line(result['machine'])}; results in {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
