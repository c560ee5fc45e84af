"""Positions at scale: the fold's shard store pre-loaded with N positions, the same event stream at each N.

`python -m bench.positions_scale --positions 2000000 [--json]` measures, in one process:

- resident bytes per position: RSS after folding one receipt into each of N positions
  spread over S shards, minus RSS before, over N; and the same at rest, after the first
  checkpoint and one idle checkpoint interval (when the shards have packed every plain
  position into columns);
- the first checkpoint: every shard writes its positions (a base) durably;
- events/s of a fixed stream (sales and receipts on a hot set of positions, in reads of
  1,000 effects, an epoch close every 20,000 events): fold time plus epoch-close time;
- epoch close: per epoch, every shard's `take_changed` + durable `save` (a delta);
- resume: new shards restored from the checkpoint files (what a restart after kill -9
  does before its first event; Bytewax's own recovery rows are one per shard, not timed).

Times are CPU seconds of this process (`time.process_time`), not wall time: on a shared
machine the wall clock mostly measures the other tenants. Epoch close also reports its
wall time, which includes waiting for fsync.

It measures the shard store and the fold as the flow drives them, not the whole flow
(no Bytewax, no admission, no snapshot writer): `make bench`'s throughput section covers
the flow end to end. Each size runs in a fresh process so RSS figures do not mix.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from adapters.shard_checkpoints import ShardCheckpoints
from bench.planted import planted_images
from ledger.effects import split
from ledger.events import EventType, InventoryEvent
from ledger.policy import LedgerPolicy
from ledger.shard import DEFAULT_SHARDS, Shard, position_key, shard_of

__all__ = ["measure_positions", "rows", "run_sizes"]

SITES = 1_000
T0 = 1_790_000_000_000
READ = 1_000
EPOCH_EVENTS = 20_000


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _effect(event_id: str, kind: EventType, at: int, index: int, qty: int) -> Any:
    site, sku = f"ST-{index % SITES:04d}", f"SKU-{index // SITES:06d}"
    return split(InventoryEvent(event_id, kind, at, site, sku, qty))[0]


def measure_positions(
    positions: int, events: int, hot: int, shards: int, work: Path, *, planted: bool = False
) -> dict[str, Any]:
    """The figures of one size (see the module docstring); `planted`: preloaded by `bench.planted`, not folded."""
    policy = LedgerPolicy()
    rss_before = _rss_bytes()
    by_index = [Shard() for _ in range(shards)]
    began = time.process_time()
    if planted:
        # The same positions as the fold's preload (site i % 1000, sku i // 1000), each a
        # receipt of 10 folded once and replicated: minutes instead of ~40 min at 20M.
        for shard, image in zip(by_index, planted_images(positions, shards, width=6), strict=True):
            shard.restore([image])
    else:
        for i in range(positions):
            effect = _effect(f"p{i}", EventType.RECEIVED, T0 + i, i, 10)
            key = position_key(effect.site_id, effect.sku)
            by_index[shard_of(key, shards)].fold(key, [(T0 + i, effect)], policy)
    preload_s = time.process_time() - began
    rss_loaded = _rss_bytes()

    stores = [ShardCheckpoints(work, i, shards) for i in range(shards)]
    began = time.process_time()
    for shard, store in zip(by_index, stores, strict=True):
        if planted:
            # A restored shard has nothing changed: its first checkpoint is its base.
            store.replace_with_base(1, shard.image())
            continue
        store.start_empty()
        store.save(shard.take_changed(), shard)
    first_checkpoint_s = time.process_time() - began
    for shard in by_index:
        shard.take_changed()  # an idle interval: what was folded in the last one is packed
    rss_at_rest = _rss_bytes()

    # The same stream at every size: `hot` positions among the first 100,000 (present at every N).
    rng = random.Random(7)
    targets = rng.sample(range(min(positions, 100_000)), min(hot, positions))
    now = T0 + positions + 1
    stream = []
    for n in range(events):
        kind, qty = (EventType.SOLD, 1) if n % 3 else (EventType.RECEIVED, 2)
        stream.append((now + n, _effect(f"s{n}", kind, now + n, rng.choice(targets), qty)))
    fold_s = 0.0
    closes: list[float] = []
    close_walls: list[float] = []
    for start in range(0, events, READ):
        began = time.process_time()
        groups: dict[str, list[Any]] = {}
        for stamped in stream[start : start + READ]:
            groups.setdefault(position_key(stamped[1].site_id, stamped[1].sku), []).append(stamped)
        for key, effects in groups.items():
            by_index[shard_of(key, shards)].fold(key, effects, policy)
        fold_s += time.process_time() - began
        if (start + READ) % EPOCH_EVENTS == 0 or start + READ >= events:
            began, wall = time.process_time(), time.perf_counter()
            for shard, store in zip(by_index, stores, strict=True):
                changed = shard.take_changed()
                if changed:
                    store.save(changed, shard)
            closes.append(time.process_time() - began)
            close_walls.append(time.perf_counter() - wall)

    began = time.process_time()
    restored = 0
    for i, store in enumerate(stores):
        shard = Shard()
        shard.restore(ShardCheckpoints(work, i, shards).resume(store.last))
        restored += len(shard)
    resume_s = time.process_time() - began
    assert restored == positions, (restored, positions)
    return {
        "positions": positions,
        "preload": "planted" if planted else "folded",
        "shards": shards,
        "events": events,
        "hot_positions": len(targets),
        "preload_cpu_s": preload_s,
        "rss_bytes_per_position": (rss_loaded - rss_before) / positions,
        "rss_bytes_per_position_at_rest": (rss_at_rest - rss_before) / positions,
        "rss_bytes": rss_loaded,
        "first_checkpoint_cpu_s": first_checkpoint_s,
        "events_per_cpu_s": events / (fold_s + sum(closes)),
        "fold_events_per_cpu_s": events / fold_s,
        "epoch_close_median_cpu_s": statistics.median(closes),
        "epoch_close_max_cpu_s": max(closes),
        "epoch_close_wall_median_s": statistics.median(close_walls),
        "resume_cpu_s": resume_s,
        "checkpoint_bytes": sum(p.stat().st_size for p in work.rglob("*") if p.is_file()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.positions_scale", description=__doc__)
    parser.add_argument("--positions", type=int, required=True)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--hot", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=DEFAULT_SHARDS)
    parser.add_argument("--dir", type=Path, help="where the checkpoints go (default: a temporary directory)")
    parser.add_argument(
        "--preload",
        choices=("folded", "planted"),
        default="folded",
        help="fold a receipt into each position, or plant them (bench.planted: minutes at 20M, not ~40 min)",
    )
    args = parser.parse_args(argv)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)  # a checkpoint directory on another disk may not exist yet
    with tempfile.TemporaryDirectory(prefix="positions-", dir=args.dir) as tmp:
        found = measure_positions(
            args.positions, args.events, args.hot, args.shards, Path(tmp), planted=args.preload == "planted"
        )
    print(json.dumps(found))
    sys.stdout.flush()


if __name__ == "__main__":
    main()


FLAT_SHARE = 0.85
RESUME_S_AT_20M = 30.0
BYTES_AT_20M = 200
TARGET_POSITIONS = 20_000_000


def run_sizes(
    sizes: tuple[int, ...], events: int, work: Path, timeout: float, *, planted: bool = False
) -> dict[str, Any]:
    """`measure_positions` at each size, each in a fresh process; {"sizes": [figures...]} (or an error)."""
    import subprocess

    found: dict[str, Any] = {"sizes": []}
    for positions in sizes:
        done = subprocess.run(
            [sys.executable, "-m", "bench.positions_scale", "--positions", str(positions), "--events", str(events),
             "--dir", str(work), "--preload", "planted" if planted else "folded"],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            found["error"] = f"{positions:,} positions: {done.stderr.strip().splitlines()[-1:]}"
            break
        found["sizes"].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return found


def rows(found: dict[str, Any]) -> list[Any]:
    """The suite's rows: a figure per size, then the issue's targets (20M projected when not measured)."""
    from bench.common import Row

    out = []
    measured = found.get("sizes", [])
    for size in measured:
        at = f"{size['positions']:,} positions, {size['shards']} shards"
        out.extend(
            [
                Row("positions", f"events/CPU-s at {size['positions']:,}", round(size["events_per_cpu_s"]), "/s",
                    note=f"{at}; fold only {size['fold_events_per_cpu_s']:,.0f}/s"),
                Row("positions", f"epoch close at {size['positions']:,}",
                    round(size["epoch_close_median_cpu_s"] * 1000), "ms CPU",
                    note=f"median; wall {size['epoch_close_wall_median_s'] * 1000:,.0f} ms (fsync)"),
                Row("positions", f"resume at {size['positions']:,}", round(size["resume_cpu_s"], 1), "s CPU",
                    note="restore of every shard from its base + deltas"),
                Row("positions", f"resident bytes per position at {size['positions']:,}",
                    round(size.get("rss_bytes_per_position_at_rest", size["rss_bytes_per_position"])), "B",
                    note=f"at rest (columns); {size['rss_bytes_per_position']:,.0f} B right after the load"),
            ]
        )  # fmt: skip
    if len(measured) >= 2:
        small, large = measured[0], measured[-1]
        share = large["events_per_cpu_s"] / small["events_per_cpu_s"]
        scale = TARGET_POSITIONS / large["positions"]
        label = "" if large["positions"] >= TARGET_POSITIONS else f" (projected linearly from {large['positions']:,})"
        resume = large["resume_cpu_s"] * scale
        at_rest = large.get("rss_bytes_per_position_at_rest", large["rss_bytes_per_position"])
        out.extend(
            [
                Row("positions", f"events/s at {large['positions']:,} / at {small['positions']:,}",
                    f"{share:.0%}", target=f">= {FLAT_SHARE:.0%}", met=share >= FLAT_SHARE),
                Row("positions", f"resume at {TARGET_POSITIONS:,}{label}", round(resume, 1), "s CPU",
                    target=f"<= {RESUME_S_AT_20M:.0f} s", met=resume <= RESUME_S_AT_20M),
                Row("positions", f"bytes per position at {TARGET_POSITIONS:,}{label}",
                    round(at_rest), "B", target=f"<= {BYTES_AT_20M}", met=at_rest <= BYTES_AT_20M),
            ]
        )  # fmt: skip
    if "error" in found:
        out.append(Row("positions", "positions scale", "failed", note=str(found["error"])[:160]))
    return out
