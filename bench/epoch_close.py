"""The wall one worker's epoch close holds its folds: every shard's checkpoint, one by one or together.

Bytewax asks each shard a worker touched for its pointer at an epoch close, one after
another, and each pointer must name a durable checkpoint. `flows.logic.EpochClose` writes
a worker's changed shards at once (their fsyncs overlap); a shard built without one saves
alone, as every shard did before. This runs `--shards` real `ShardLogic`s on a temporary
directory under var/, folds `--rows` new positions into each, and times the loop of their
`snapshot()` calls (what Bytewax runs), `--closes` closes a mode, both modes alternating
over `--rounds` rounds. `--busy N` keeps N threads running Python meanwhile, as a flow's
process has (the snapshot writer, Kafka's callbacks): a thread that waits on a system call
must then take the GIL back from them, which an idle bench never shows (docs/scaling.md,
"Tenth pass"). Not a test: nothing asserts a timing.

`--events N` folds, before each close, the next N events of the retailer simulator (2,000
events a simulated second, in reads of 1,000, routed to the shards by `shard_of`, due
holds expired as the flow's timers would) instead of `--rows` receipts at new positions:
the changed rows are then the flow's, positions with holds, staged parcels, inbound lines
and a window's memory that grow over the closes (docs/scaling.md, "Eleventh pass"), not
plain receipts. `--closes` then counts closes in sequence over one growing state.

After the closes of each mode and round, every shard is restored from its checkpoint chain
(the resume a restarted flow runs: `ShardCheckpoints.resume` into a new `Shard`), timed,
and its positions counted against the live shard's.

`--prepare-passes P` (with `--events`) then measures the CPU part of a close on its own: it folds the
closes with checkpoints as above, and for the last close's changed rows runs
`ShardCheckpoints.prepare` of every shard P times over (prepare writes nothing and changes no
store, so each pass does the same work): the min and median of the passes are steadier on a
loaded machine than a close's CPU (docs/scaling.md, "Fifteenth pass").

    python -m bench.epoch_close --events 100000 --closes 8 --prepare-passes 15

    python -m bench.epoch_close --rows 200 --rounds 3 [--busy 1] [--json]
    python -m bench.epoch_close --events 20000 --closes 4 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from adapters.clock import ReplayClock
from adapters.shard_checkpoints import ShardCheckpoints, write_layout
from bench.common import REPO, machine, say, write_result
from flows.logic import EpochClose, ShardBatch, ShardLogic, Stamped
from ledger.effects import by_position, split
from ledger.events import EventType, InventoryEvent
from ledger.policy import LedgerPolicy
from ledger.shard import PositionKey, Shard, shard_of
from omni_ledger.table import render_table
from simulator import RetailerSimulator, SimConfig

__all__ = ["main", "measure"]

MODES = ("one by one", "together")


def _batch(shard: int, rows: int, close: int) -> ShardBatch:
    """A read of `shard`: a receipt at each of `rows` new positions (each becomes a changed row)."""
    at = 1_000 + close
    groups: list[tuple[PositionKey, tuple[Stamped, ...]]] = []
    for row in range(rows):
        event = InventoryEvent(f"e{shard}-{close}-{row}", EventType.RECEIVED, at, f"ST-{shard}-{close}", f"K{row}", 1)
        groups.extend((effect.key, ((at, effect),)) for effect in split(event))
    return shard, tuple(groups)


_READ = 1_000
"""Events a read of the simulated stream: a flow's source reads in batches of about this many."""
_START: int = 1_790_000_000_000


Reads = list[tuple[int, list[ShardBatch]]]
"""A close's reads of the simulated stream: (the read's clock, its shard batches)."""


def _simulated(shards: int, events: int, closes: int, seed: int = 7) -> list[Reads]:
    """For each close, its reads of `events` simulated events, each read split into shard batches.

    Made before anything is timed, the same for every mode and round (the simulator is
    deterministic), as `admit_batch` groups a read: effects by position, positions by shard.
    """
    sim = RetailerSimulator(SimConfig(seed=seed, expected_rate=2_000))
    now = _START
    out: list[Reads] = []
    for _ in range(closes):
        reads: Reads = []
        for _ in range(0, events, _READ):
            now += _READ // 2  # 2,000 events a simulated second
            stamped = [(now, event) for event in sim.next_events(now, _READ)]
            by_shard: dict[int, list[tuple[PositionKey, tuple[Stamped, ...]]]] = {}
            for key, group in by_position(stamped).items():
                by_shard.setdefault(shard_of(key, shards), []).append((key, tuple(group)))
            reads.append((now, [(index, tuple(groups)) for index, groups in sorted(by_shard.items())]))
        out.append(reads)
    return out


def _spin(stop: threading.Event) -> None:
    """Python bytecode without a pause: it holds the GIL until the interpreter makes it let go."""
    total = 0
    while not stop.is_set():
        for n in range(10_000):
            total += n


@contextmanager
def busy(threads: int) -> Iterator[None]:
    """`threads` threads spinning Python for as long as the block runs."""
    stop = threading.Event()
    spinning = [threading.Thread(target=_spin, args=(stop,), name="busy", daemon=True) for _ in range(threads)]
    for thread in spinning:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in spinning:
            thread.join()


def measure(
    shards: int,
    rows: int,
    closes: int,
    together: bool,
    busy_threads: int = 0,
    simulated: list[Reads] | None = None,
    costs: list[tuple[float, int, int]] | None = None,
    restores: list[tuple[float, float, int]] | None = None,
) -> list[float]:
    """Wall seconds of each epoch close after the first (the first also creates the directories).

    With `simulated` (from `_simulated`, one list of reads per close, `closes + 1` of them)
    each close folds its reads instead of `rows` receipts a shard. `costs` gets, for the
    same closes, (the closing thread's CPU seconds, changed rows, bytes of the files written).
    `restores` gets (wall seconds, CPU seconds, bytes read) of restoring every shard from its chain.
    """
    root = Path(tempfile.mkdtemp(prefix="epoch-close-", dir=REPO / "var"))
    try:
        write_layout(root, shards)
        shared = EpochClose() if together else None
        policy = LedgerPolicy()
        logics = [ShardLogic(None, policy, ReplayClock(), root, shards, close=shared) for _ in range(shards)]
        walls = []
        seen: set[Path] = set()
        with busy(busy_threads):
            for close in range(closes + 1):
                changed: set[str] = set()
                if simulated is None:
                    for index, logic in enumerate(logics):
                        logic.on_batch([_batch(index, rows, close)])
                    changed.update(str(i) for i in range(shards * rows))
                else:
                    for now, read in simulated[close]:
                        for batch in read:
                            logics[batch[0]].on_batch([batch])
                            changed.update(key for key, _ in batch[1])
                        for logic in logics:
                            # What the flow's timers do; a position whose holds ended is a changed row too.
                            changed.update(key for key, _ in logic.shard.expire_due(now, policy))
                began, cpu = time.perf_counter(), time.thread_time()
                for logic in logics:
                    logic.snapshot()
                walls.append(time.perf_counter() - began)
                cpu = time.thread_time() - cpu
                written = {path for path in root.rglob("*-*") if path.is_file()} - seen
                seen |= written
                if costs is not None and close > 0:
                    costs.append((cpu, len(changed), sum(path.stat().st_size for path in written)))
        if restores is not None:
            restores.append(_restore(root, shards, [logic.shard for logic in logics]))
        return walls[1:]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _restore(root: Path, shards: int, live: list[Shard]) -> tuple[float, float, int]:
    """(wall, CPU seconds, bytes on disk) of restoring each shard from its newest checkpoint, as a resume does."""
    stores = [ShardCheckpoints(root, index, shards, compactor=None) for index in range(shards)]
    size = sum(path.stat().st_size for path in root.rglob("*-*") if path.is_file())
    lasts = [max((int(name[-12:]) for name in store.files()), default=0) for store in stores]
    began, cpu = time.perf_counter(), time.thread_time()
    restored = []
    for store, last in zip(stores, lasts, strict=True):
        shard = Shard()
        shard.restore(store.resume(last))
        restored.append(shard)
    wall, cpu = time.perf_counter() - began, time.thread_time() - cpu
    for shard, kept in zip(restored, live, strict=True):
        if len(shard) != len(kept):
            msg = f"a shard restored {len(shard)} positions of the {len(kept)} it had"
            raise AssertionError(msg)
    return wall, cpu, size


def prepare_passes(shards: int, simulated: list[Reads], passes: int) -> dict[str, float]:
    """CPU seconds of preparing the last close's checkpoints of every shard, `passes` times: min, median, bytes."""
    root = Path(tempfile.mkdtemp(prefix="epoch-close-", dir=REPO / "var"))
    try:
        write_layout(root, shards)
        shared, policy = EpochClose(), LedgerPolicy()
        logics = [ShardLogic(None, policy, ReplayClock(), root, shards, close=shared) for _ in range(shards)]
        for close, reads in enumerate(simulated):
            for now, read in reads:
                for batch in read:
                    logics[batch[0]].on_batch([batch])
                for logic in logics:
                    logic.shard.expire_due(now, policy)
            if close < len(simulated) - 1:
                for logic in logics:
                    logic.snapshot()
        taken = [(logic.take_checkpoint(0), logic.shard) for logic in logics]
        saves = [(checkpoint[0], checkpoint[1], shard) for checkpoint, shard in taken if checkpoint is not None]
        seconds, size = [], 0
        for _ in range(passes):
            began = time.thread_time()
            prepared = [store.prepare(changed, shard) for store, changed, shard in saves]
            seconds.append(time.thread_time() - began)
            size = sum(len(p.blob) for p in prepared if p.blob is not None)
        return {
            "rows": sum(len(changed) for _, changed, _ in saves),
            "bytes": size,
            "min_s": min(seconds),
            "median_s": statistics.median(seconds),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--rows", type=int, default=200, help="changed rows a shard at each close")
    parser.add_argument("--closes", type=int, default=8, help="closes a mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", type=int, default=0, help="threads running Python meanwhile, as in a flow")
    parser.add_argument(
        "--events",
        type=int,
        default=0,
        help="simulated events folded before each close (the flow's rows: holds, tails...) instead of --rows",
    )
    parser.add_argument(
        "--prepare-passes",
        type=int,
        default=0,
        help="with --events: time the last close's prepares this many times over instead of the closes",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    (REPO / "var").mkdir(exist_ok=True)
    simulated = _simulated(args.shards, args.events, args.closes + 1) if args.events else None
    if simulated is not None and args.prepare_passes:
        prepare = prepare_passes(args.shards, simulated, args.prepare_passes)
        path = write_result("epoch_close", {"args": vars(args), "prepare": prepare, "machine": machine()})
        print(
            f"prepare of the last close's {prepare['rows']:,} changed rows ({prepare['bytes'] / 1e6:.2f} MB of "
            f"deltas), {args.prepare_passes} passes: min {prepare['min_s'] * 1e3:.1f} ms, median "
            f"{prepare['median_s'] * 1e3:.1f} ms CPU; results in {path}"
        )
        return
    rounds: list[dict[str, list[float]]] = []
    costs: dict[str, list[tuple[float, int, int]]] = {mode: [] for mode in MODES}
    restores: list[tuple[float, float, int]] = []
    for round_ in range(args.rounds):
        what = f"{args.events:,} simulated events a close" if args.events else f"{args.rows:,} changed rows each"
        say(f"round {round_ + 1}: {args.shards} shards, {what}, {args.closes} closes a mode, {args.busy} busy threads")
        order = MODES if round_ % 2 == 0 else MODES[::-1]
        rounds.append(
            {
                mode: measure(
                    args.shards,
                    args.rows,
                    args.closes,
                    mode == "together",
                    args.busy,
                    simulated,
                    costs[mode],
                    restores,
                )
                for mode in order
            }
        )
    medians = {mode: statistics.median(w for r in rounds for w in r[mode]) for mode in MODES}
    cpu = {mode: statistics.median(c for c, _, _ in costs[mode]) for mode in MODES}
    per_row = {mode: statistics.median(c / max(1, n) for c, n, _ in costs[mode]) for mode in MODES}
    result = {
        "args": vars(args),
        "rounds": rounds,
        "median_s": medians,
        "costs": costs,
        "cpu_median_s": cpu,
        "cpu_per_row_median_s": per_row,
        "restores": restores,
        "machine": machine(),
    }
    path = write_result("epoch_close", result)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    rows = [
        [
            mode,
            f"{medians[mode] * 1e3:.1f}",
            f"{max(w for r in rounds for w in r[mode]) * 1e3:.1f}",
            ", ".join(f"{statistics.median(r[mode]) * 1e3:.1f}" for r in rounds),
            f"{cpu[mode] * 1e3:.1f}",
            f"{per_row[mode] * 1e6:.2f}",
        ]
        for mode in MODES
    ]
    headers = ["checkpoints", "close wall ms (median)", "max", "rounds' medians", "closing thread CPU ms", "us a row"]
    print(render_table(headers, rows))
    changed = [n for mode in MODES for _, n, _ in costs[mode]]
    written = [b for mode in MODES for _, _, b in costs[mode]]
    print(
        f"changed rows a close: {min(changed):,}-{max(changed):,}; bytes written a close: "
        f"{min(written) / 1e6:.2f}-{max(written) / 1e6:.2f} MB"
    )
    print(
        "restore of every shard's chain: "
        + ", ".join(
            f"{wall * 1e3:.0f} ms ({cpu * 1e3:.0f} ms CPU, {size / 1e6:.1f} MB)" for wall, cpu, size in restores
        )
    )
    print(f"one by one / together: {medians['one by one'] / medians['together']:.2f}x; results in {path}")


if __name__ == "__main__":
    main()
