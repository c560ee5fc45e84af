"""CPU a message of the flow's output path: rendering `atp.changes` and `reservation.decisions`, and producing them.

The changes and decisions are the fold's own, of N simulated events (admission and the fold as
in `bench.flow_stages`, untimed). They then go to the sinks as the flow hands them over:

- `render`: the sink's render function over every change and every decision, nothing else;
- `write`: the `atp.changes` sink (`KafkaOutSink` behind `adapters.partitions.each`) gets each
  read's fold results as one `write_batch` of `(changes, ...)` tuples, the decisions sink one
  `write_batch` of decisions a read; both flushed at the end (an epoch's `snapshot`), on a real
  broker (KAFKA_BOOTSTRAP_SERVERS, else a private one).

It times the calling thread's CPU (`time.thread_time`: the flow's worker thread, where these
calls run) and the whole process's (librdkafka's threads too). `--baseline DIR` runs this same
file in another checkout (DIR/.venv/bin/python, its modules first on the path) alternately with
this one, A B B A, so two versions are compared under the same load.

    python -m bench.sink_render --events 120000 --rounds 2 [--baseline DIR] [--json]

Not a test: nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]

__all__ = ["main", "measure"]


def _fold_outputs(events: int, read: int, shards: int, seed: int) -> tuple[list[list[Any]], list[list[Any]]]:
    """A read's change tuples (one per fold result that has any) and its decisions, for each read."""
    from prometheus_client import CollectorRegistry

    from adapters.avro_wire import WireCodec
    from adapters.clock import ReplayClock
    from adapters.codec import RawInput
    from bench.kafka import simulated
    from flows.logic import ShardLogic, admit_batch
    from ledger.policy import LedgerPolicy
    from omni_ledger.metrics import FlowMetrics

    codec = WireCodec()
    stream = simulated(events, 1_790_000_000_000, seed=seed)
    policy, clock = LedgerPolicy(), ReplayClock()
    observer = FlowMetrics(CollectorRegistry())
    logics: dict[str, ShardLogic] = {}
    changes: list[list[Any]] = []
    decisions: list[list[Any]] = []
    for start in range(0, events, read):
        values = tuple(
            RawInput(f"inventory[0]@{i}", codec.encode(e)) for i, e in enumerate(stream[start : start + read], start)
        )
        admitted = admit_batch(values, clock, policy.max_clock_skew_ms, codec.decode, shards)
        folded = []
        for key, batch in admitted.groups:
            logic = logics.get(key)
            if logic is None:
                logic = logics[key] = ShardLogic(None, policy, clock, None, shards, observer=observer)
            folded.extend(logic.on_batch([batch])[0])
        changes.append([out.changes for out in folded if out.changes])
        decisions.append([d for out in folded for d in out.decisions])
    return changes, decisions


def measure(events: int, read: int, shards: int, seed: int, bootstrap: str | None) -> dict[str, float]:
    """CPU microseconds a message of each part of the output path, over the fold's outputs of `events`."""
    from adapters.kafka_records import render_change, render_decision

    changes, decisions = _fold_outputs(events, read, shards, seed)
    n_changes = sum(len(c) for batch in changes for c in batch)
    n_decisions = sum(len(batch) for batch in decisions)
    result: dict[str, float] = {"changes": n_changes, "decisions": n_decisions}

    many = getattr(render_change, "many", None)  # a batch renderer, where this checkout has one
    flat = [[change for tup in batch for change in tup] for batch in changes]
    for warm in (True, False):  # once to fill the renderers' memos, as a running flow has them
        started = time.thread_time()
        for batch in flat:
            for change in batch:
                render_change(change)
        result["render_change_us"] = (time.thread_time() - started) / n_changes * 1e6
        if many is not None:
            started = time.thread_time()
            for batch in flat:
                many(batch)
            result["render_changes_batch_us"] = (time.thread_time() - started) / n_changes * 1e6
        started = time.thread_time()
        for batch in decisions:
            for decision in batch:
                render_decision(decision)
        result["render_decision_us"] = (time.thread_time() - started) / max(1, n_decisions) * 1e6
        del warm
    # What the `atp.changes` sink does: the batch renderer where there is one.
    result["render_as_sink_change_us"] = result.get("render_changes_batch_us", result["render_change_us"])

    if bootstrap is not None:
        result.update(_write(bootstrap, changes, decisions, n_changes, n_decisions))
    return result


def compare_renders(events: int, read: int, shards: int, seed: int, baseline: Path, rounds: int) -> dict[str, Any]:
    """Rendering only: this checkout's renderers and `baseline`'s (its adapters/kafka_records.py), in one process.

    The two modules are loaded side by side and take turns over the same fold outputs, A B
    then B A, for `rounds`; the figure of each is its fastest round (the least disturbed by
    whatever else the machine runs), in thread CPU microseconds a message.
    """
    import importlib.util

    from adapters import kafka_records

    spec = importlib.util.spec_from_file_location("baseline_kafka_records", baseline / "adapters" / "kafka_records.py")
    if spec is None or spec.loader is None:
        msg = f"no adapters/kafka_records.py in {baseline}"
        raise FileNotFoundError(msg)
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    changes, decisions = _fold_outputs(events, read, shards, seed)
    flat = [[change for tup in batch for change in tup] for batch in changes]
    n_changes, n_decisions = sum(map(len, flat)), max(1, sum(map(len, decisions)))

    def as_sink(module: Any) -> Any:
        many = getattr(module.render_change, "many", None)
        if many is not None:
            return many
        one = module.render_change
        return lambda batch: [one(change) for change in batch]

    def timed(render: Any, batches: list[list[Any]], count: int, each: bool) -> float:
        started = time.thread_time()
        for batch in batches:
            if each:
                for item in batch:
                    render(item)
            else:
                render(batch)
        return (time.thread_time() - started) / count * 1e6

    sides = {"baseline": base, "this": kafka_records}
    best: dict[str, Any] = {}
    every: dict[str, list[float]] = {}
    for round_ in range(rounds + 1):  # round 0 fills the memos, as a running flow has them
        for name in sides if round_ % 2 else list(sides)[::-1]:
            module = sides[name]
            got = {
                f"{name}_changes_us": timed(as_sink(module), flat, n_changes, each=False),
                f"{name}_decisions_us": timed(module.render_decision, decisions, n_decisions, each=True),
            }
            if round_:
                best.update({k: min(v, best.get(k, v)) for k, v in got.items()})
                for k, v in got.items():
                    every.setdefault(k, []).append(round(v, 3))
    best["changes_ratio"] = best["this_changes_us"] / best["baseline_changes_us"]
    best["decisions_ratio"] = best["this_decisions_us"] / best["baseline_decisions_us"]
    return {"changes": n_changes, "decisions": n_decisions, **best, "rounds": every}


def _write(
    bootstrap: str, changes: list[list[Any]], decisions: list[list[Any]], n_changes: int, n_decisions: int
) -> dict[str, float]:
    from adapters.kafka_io import KafkaAdmin, KafkaOutSink
    from adapters.kafka_records import render_change, render_decision
    from adapters.partitions import each

    config = {"bootstrap.servers": bootstrap}
    prefix = f"sinkbench{uuid.uuid4().hex[:8]}."
    KafkaAdmin(config).create(
        [prefix + "atp.changes", prefix + "reservation.decisions"], {}, partitions=4, replication=1
    )
    out: dict[str, float] = {}
    for name, sink, batches, count in (
        ("change", each(KafkaOutSink(config, prefix + "atp.changes", render_change)), changes, n_changes),
        ("decision", KafkaOutSink(config, prefix + "reservation.decisions", render_decision), decisions, n_decisions),
    ):
        part = sink.build_part("out", sink.list_parts()[0], None)
        part.write_batch(batches[0][:1])  # connect, learn the topic's partitions
        part.snapshot()
        wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
        for batch in batches:
            if batch:
                part.write_batch(batch)
        written = time.thread_time()
        part.snapshot()
        out[f"write_{name}_us"] = (written - thread) / max(1, count) * 1e6
        out[f"write_{name}_with_flush_us"] = (time.thread_time() - thread) / max(1, count) * 1e6
        out[f"process_{name}_us"] = (time.process_time() - cpu) / max(1, count) * 1e6
        out[f"wall_{name}_us"] = (time.perf_counter() - wall) / max(1, count) * 1e6
        part.close()
    return out


def _run_inner(python: str, root: Path, args: argparse.Namespace, bootstrap: str | None) -> dict[str, float]:
    cmd = [python, str(HERE), "--inner", "--events", str(args.events), "--read", str(args.read)]
    cmd += ["--shards", str(args.shards), "--seed", str(args.seed)]
    if bootstrap is not None:
        cmd += ["--bootstrap", bootstrap]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        msg = f"{' '.join(cmd)} in {root} failed:\n{done.stderr[-3000:]}"
        raise RuntimeError(msg)
    got: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    # The stream's options as bench.flow_stages declares them, written out: with --baseline this file runs in
    # another checkout (PYTHONPATH there), whose bench.flow_stages need not have any shared helper.
    parser.add_argument("--events", type=int, default=120_000)
    parser.add_argument("--read", type=int, default=4_000, help="values a read (the Kafka source reads up to 4,000)")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--baseline", type=Path, help="another checkout (with its .venv) to run alternately")
    parser.add_argument("--no-kafka", action="store_true", help="rendering only, no producing")
    parser.add_argument(
        "--render-baseline",
        type=Path,
        help="rendering only: this checkout's renderers against DIR's adapters/kafka_records.py, in one process",
    )
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.inner:
        try:
            from omni_ledger.collector import tune_collector
        except ImportError:  # a checkout from before the module moved out of flows/ (2026-12-04)
            from flows.collector import tune_collector  # type: ignore[no-redef]

        tune_collector()  # as the process that runs the flow does
        print(json.dumps(measure(args.events, args.read, args.shards, args.seed, args.bootstrap)))
        return

    from bench.common import Broker, machine, say, write_result
    from omni_ledger.table import render_table

    if args.render_baseline is not None:
        from omni_ledger.collector import tune_collector

        tune_collector()  # as the process that runs the flow does
        baseline = args.render_baseline.resolve()
        got = compare_renders(args.events, args.read, args.shards, args.seed, baseline, args.rounds)
        path = write_result("sink_render", {"args": {k: str(v) for k, v in vars(args).items()}, "renders": got})
        print(json.dumps(got, indent=1) if args.json else f"{json.dumps(got, indent=1)}\nresults in {path}")
        return

    checkouts = {"this": (sys.executable, REPO)}
    if args.baseline is not None:
        base = args.baseline.resolve()
        checkouts = {"baseline": (str(base / ".venv" / "bin" / "python"), base), **checkouts}
    order = list(checkouts)
    with tempfile.TemporaryDirectory(prefix="sink_render") as work:
        broker = None if args.no_kafka else Broker(Path(work))
        try:
            bootstrap = None if broker is None else broker.bootstrap
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in order}
            for round_ in range(args.rounds):
                for name in order if round_ % 2 == 0 else order[::-1]:  # A B, then B A
                    say(f"round {round_ + 1}, {name}: {args.events:,} events...")
                    runs[name].append(_run_inner(checkouts[name][0], checkouts[name][1], args, bootstrap))
        finally:
            if broker is not None:
                broker.close()
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs, "median": medians, "machine": machine()}
    path = write_result("sink_render", result)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    keys = [k for k in medians[order[-1]] if k.endswith("_us")]
    headers = ["us a message (median)", *order]
    if len(order) == 2:
        headers.append("this / baseline")
    rows = []
    for key in keys:
        row: list[object] = [key, *(f"{medians[name].get(key, float('nan')):.2f}" for name in order)]
        if len(order) == 2:
            base = medians["baseline"].get(key)
            row.append(f"{medians['this'][key] / base:.2f}" if base else "")
        rows.append(row)
    print(render_table(headers, rows))
    counts = medians[order[-1]]
    print(f"{counts['changes']:.0f} changes, {counts['decisions']:.0f} decisions; results in {path}")


if __name__ == "__main__":
    main()
