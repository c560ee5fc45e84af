"""Epoch closes that make every shard's base due: bases written inline, or by the compactor thread.

`python -m bench.compaction [--rows 1250000] [--shards 16] [--json]` plants 16 shards of
1.25M positions (20,000,000 in all: a national retailer), then, for each way in turn,
side by side in one process:

- checkpoint 1 is each shard's base, written beforehand (not timed);
- epoch 1: `--changed` sales folded into each shard, then every shard's `save` with a
  compaction ratio low enough that its base is due; then epochs of `--later` sales each,
  `--gap` seconds of 1 ms units of pure Python apart (what the fold does between two
  closes), until every shard has a new base on disk;
- the ways: "none" (no base due: the same deltas alone, the reference), "inline" (every
  base written in the epoch close, as before 2026-12-02), "thread" (the compactor: a
  shard takes its image when the compactor is idle, the others ask at later closes);
- reported: each close's wall and CPU time (what the fold waits for), the epochs until
  every shard has its base, and the longest 1 ms unit between closes (how long another
  thread held the GIL at once, or the machine did not run this process).

Times are of this process; wall times include fsyncs and the machine's other tenants.
Not a test: nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from adapters.shard_checkpoints import Compactor, ShardCheckpoints
from bench.common import say
from bench.planted import planted_images
from ledger.effects import split
from ledger.events import EventType, InventoryEvent
from ledger.policy import LedgerPolicy
from ledger.shard import Shard, position_key

__all__ = ["measure"]


def _units(seconds: float) -> tuple[int, float]:
    """1 ms units of Python work for `seconds`: (units run, the longest one in ms)."""
    longest, count = 0.0, 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        began = time.perf_counter()
        spin = began + 0.001
        while time.perf_counter() < spin:
            pass
        longest = max(longest, time.perf_counter() - began)
        count += 1
    return count, longest * 1000


_AT = [2_000_000_000_000]


def _sales(shard: Shard, changed: int, tag: str, policy: LedgerPolicy) -> None:
    positions = shard.positions()
    for n, key in enumerate(positions):
        if n >= changed:
            break
        site, _, sku = key.partition("|")
        _AT[0] += 1
        at = _AT[0]
        event = InventoryEvent(f"b{tag}-{n}", EventType.SOLD, at, site, sku, 1)
        shard.fold(position_key(site, sku), [(at, effect) for effect in split(event)], policy)


def _epoch(
    shards: list[Shard], stores: list[ShardCheckpoints], changed: int, tag: str, policy: LedgerPolicy
) -> tuple[float, float, float]:
    """Fold `changed` sales into each shard, then close the epoch: (wall s, CPU s, the slowest shard's wall s)."""
    for shard in shards:
        _sales(shard, changed, tag, policy)
    wall, cpu, slowest = time.perf_counter(), time.process_time(), 0.0
    for shard, store in zip(shards, stores, strict=True):
        began = time.perf_counter()
        store.save(shard.take_changed(), shard)
        slowest = max(slowest, time.perf_counter() - began)
    return time.perf_counter() - wall, time.process_time() - cpu, slowest


def _based(store: ShardCheckpoints) -> bool:
    return any(name.startswith("base-") and int(name[5:]) > 1 for name in store.files())


def _one(shards: list[Shard], work: Path, changed: int, later: int, gap: float, way: str) -> dict[str, Any]:
    """Every shard's base due in one epoch (way "none": never); epochs until every shard has a new base."""
    policy = LedgerPolicy()
    compactor = None if way == "inline" else Compactor()
    rows = len(shards[0])
    ratio = 1e9 if way == "none" else changed / (4 * rows)
    stores = [
        ShardCheckpoints(work, i, len(shards), compact_ratio=ratio, compactor=compactor) for i in range(len(shards))
    ]
    for shard, store in zip(shards, stores, strict=True):
        store.replace_with_base(1, shard.image())
        shard.take_changed()
    closes, longest, epochs = [], 0.0, 0
    while epochs < (2 if way == "none" else 4 * len(shards)) and not (way != "none" and all(map(_based, stores))):
        wall, cpu, slowest = _epoch(shards, stores, changed if epochs == 0 else later, f"{work.name}-{epochs}", policy)
        closes.append({"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "slowest_shard_s": round(slowest, 3)})
        epochs += 1
        _, worst = _units(gap)  # the fold's time between closes; the compactor writes meanwhile
        longest = max(longest, worst)
    return {
        "way": way,
        "shards": len(shards),
        "rows_per_shard": rows,
        "epochs_until_every_base": None if way == "none" else epochs,
        "first_close_wall_s": closes[0]["wall_s"],
        "first_close_cpu_s": closes[0]["cpu_s"],
        "worst_close_wall_s": max(c["wall_s"] for c in closes),
        "longest_1ms_unit_between_closes_ms": round(longest, 1),
        "closes": closes,
    }


def measure(rows: int, shards: int, changed: int, later: int, gap: float, rounds: int) -> dict[str, Any]:
    say(f"planting {shards} shards of {rows:,} positions ({shards * rows:,} in all)...")
    planted = []
    for image in planted_images(rows * shards, shards):
        shard = Shard()
        shard.restore([image])
        planted.append(shard)
    runs = []
    for round_ in range(rounds):
        for way in ("none", "inline", "thread"):
            with tempfile.TemporaryDirectory(prefix="compaction-", dir=Path.cwd() / "var") as tmp:
                found = _one(planted, Path(tmp) / f"r{round_}{way}", changed, later, gap, way)
            found["round"] = round_
            say(
                f"  round {round_ + 1} {found['way']:>6}: first close {found['first_close_wall_s']:.2f} s wall "
                f"({found['first_close_cpu_s']:.2f} s CPU), worst {found['worst_close_wall_s']:.2f} s; "
                f"every base after {found['epochs_until_every_base']} epochs; longest 1 ms unit "
                f"{found['longest_1ms_unit_between_closes_ms']} ms"
            )
            runs.append(found)
    return {"rows_per_shard": rows, "shards": shards, "changed": changed, "runs": runs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compaction", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_250_000, help="positions a shard (1.25M: 20M over 16 shards)")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--changed", type=int, default=10_000, help="rows a shard changes in the epoch a base is due")
    parser.add_argument("--later", type=int, default=1_000, help="rows a shard changes in each epoch after it")
    parser.add_argument("--gap", type=float, default=2.0, help="seconds of fold work between two epoch closes")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    (Path.cwd() / "var").mkdir(exist_ok=True)
    found = measure(args.rows, args.shards, args.changed, args.later, args.gap, args.rounds)
    if args.json:
        print(json.dumps(found))
        return
    head = ("way", "round", "first close s", "its CPU s", "worst close s", "epochs to all bases", "longest unit ms")
    print("".join(f"{h:>20}" for h in head))
    for run in found["runs"]:
        cells = (
            run["way"], run["round"] + 1, f"{run['first_close_wall_s']:.2f}", f"{run['first_close_cpu_s']:.2f}",
            f"{run['worst_close_wall_s']:.2f}", run["epochs_until_every_base"] or "-",
            f"{run['longest_1ms_unit_between_closes_ms']:.1f}",
        )  # fmt: skip
        print("".join(f"{c:>20}" for c in cells))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
