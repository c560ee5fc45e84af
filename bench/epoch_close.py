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

    python -m bench.epoch_close --rows 200 --rounds 3 [--busy 1] [--json]
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
from adapters.shard_checkpoints import write_layout
from bench.common import REPO, machine, say, write_result
from flows.logic import EpochClose, ShardBatch, ShardLogic, Stamped
from ledger.effects import split
from ledger.events import EventType, InventoryEvent
from ledger.policy import LedgerPolicy
from ledger.shard import PositionKey
from omni_ledger.table import render_table

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


def measure(shards: int, rows: int, closes: int, together: bool, busy_threads: int = 0) -> list[float]:
    """Wall seconds of each epoch close after the first (the first also creates the directories)."""
    root = Path(tempfile.mkdtemp(prefix="epoch-close-", dir=REPO / "var"))
    try:
        write_layout(root, shards)
        shared = EpochClose() if together else None
        policy = LedgerPolicy()
        logics = [ShardLogic(None, policy, ReplayClock(), root, shards, close=shared) for _ in range(shards)]
        walls = []
        with busy(busy_threads):
            for close in range(closes + 1):
                for index, logic in enumerate(logics):
                    logic.on_batch([_batch(index, rows, close)])
                began = time.perf_counter()
                for logic in logics:
                    logic.snapshot()
                walls.append(time.perf_counter() - began)
        return walls[1:]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--rows", type=int, default=200, help="changed rows a shard at each close")
    parser.add_argument("--closes", type=int, default=8, help="closes a mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", type=int, default=0, help="threads running Python meanwhile, as in a flow")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    (REPO / "var").mkdir(exist_ok=True)
    rounds: list[dict[str, list[float]]] = []
    for round_ in range(args.rounds):
        say(
            f"round {round_ + 1}: {args.shards} shards, {args.rows:,} changed rows each, {args.closes} closes a mode, "
            f"{args.busy} busy threads"
        )
        order = MODES if round_ % 2 == 0 else MODES[::-1]
        rounds.append(
            {mode: measure(args.shards, args.rows, args.closes, mode == "together", args.busy) for mode in order}
        )
    medians = {mode: statistics.median(w for r in rounds for w in r[mode]) for mode in MODES}
    result = {"args": vars(args), "rounds": rounds, "median_s": medians, "machine": machine()}
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
        ]
        for mode in MODES
    ]
    print(render_table(["checkpoints", "close wall ms (median)", "max", "rounds' medians"], rows))
    print(f"one by one / together: {medians['one by one'] / medians['together']:.2f}x; results in {path}")


if __name__ == "__main__":
    main()
