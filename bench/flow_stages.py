"""CPU an event of the flow's own stages, in one process: admission, the fold, encoding the outputs.

The end-to-end benchmark (`bench.kafka`) times the whole process (Kafka, Bytewax, sinks, the
snapshot writer); this one runs the flow's steps on simulated Avro values without them, so a
change to one step is seen at the size it has, and two checkouts can be compared by running
this module in each, alternately (`--rounds`). Reads are cut as the Kafka source cuts them
(`--read` values a read), the shards as the flow's (`--shards`), the metrics observer on.

    python -m bench.flow_stages --events 120000 --rounds 3 [--json]

Not a test: nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from prometheus_client import CollectorRegistry

from adapters.avro_wire import WireCodec
from adapters.clock import ReplayClock
from adapters.codec import RawInput
from adapters.kafka_records import render_change, render_decision
from bench.common import machine, say, write_result
from bench.kafka import simulated
from flows.logic import ShardLogic, admit_batch
from ledger.policy import LedgerPolicy
from omni_ledger.collector import tune_collector
from omni_ledger.metrics import FlowMetrics
from omni_ledger.table import render_table

__all__ = ["main", "measure"]

STAGES = ("admission", "fold", "encoding")


def measure(events: int, read: int, shards: int, seed: int) -> dict[str, float]:
    """CPU seconds an event of each stage over `events` simulated values, cut into reads of `read`."""
    codec = WireCodec()
    stream = simulated(events, time.time_ns() // 1_000_000 - 3_600_000, seed=seed)
    reads = [
        tuple(RawInput(f"inventory[0]@{i}", codec.encode(e)) for i, e in enumerate(stream[start : start + read], start))
        for start in range(0, events, read)
    ]
    policy, clock = LedgerPolicy(), ReplayClock()
    observer = FlowMetrics(CollectorRegistry())
    logics: dict[str, ShardLogic] = {}
    spent = dict.fromkeys(STAGES, 0.0)
    changes = 0
    for values in reads:
        started = time.process_time()
        admitted = admit_batch(values, clock, policy.max_clock_skew_ms, codec.decode, shards)
        admitted_at = time.process_time()
        folded = []
        for key, batch in admitted.groups:
            logic = logics.get(key)
            if logic is None:
                logic = logics[key] = ShardLogic(None, policy, clock, None, shards, observer=observer)
            folded.extend(logic.on_batch([batch])[0])
        folded_at = time.process_time()
        for out in folded:
            changes += len(out.changes)
            render_change.many(out.changes)  # as the `atp.changes` sink renders a fold call's changes
            for decision in out.decisions:
                render_decision(decision)
        spent["admission"] += admitted_at - started
        spent["fold"] += folded_at - admitted_at
        spent["encoding"] += time.process_time() - folded_at
    result = {stage: seconds / events * 1e6 for stage, seconds in spent.items()}
    result["changes_per_event"] = changes / events
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=120_000)
    parser.add_argument("--read", type=int, default=4_000, help="values a read (the Kafka source reads up to 4,000)")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tune_collector()  # as the process that runs the flow does
    rounds = []
    for round_ in range(args.rounds):
        say(f"round {round_ + 1}: {args.events:,} events in reads of {args.read:,}...")
        rounds.append(measure(args.events, args.read, args.shards, args.seed))
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    result = {"args": vars(args), "rounds": rounds, "median": medians, "machine": machine()}
    path = write_result("flow_stages", result)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    rows = [[stage, f"{medians[stage]:.1f}", ", ".join(f"{r[stage]:.1f}" for r in rounds)] for stage in STAGES]
    rows.append(["all three", f"{sum(medians[s] for s in STAGES):.1f}", ""])
    print(render_table(["stage", "CPU us an event (median)", "rounds"], rows))
    print(f"{medians['changes_per_event']:.2f} position changes an event; results in {path}")


if __name__ == "__main__":
    main()
