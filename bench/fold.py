"""`make bench-fold`: events/s of the fold alone, and of a 1M-event file replay end to end.

Prints one table and writes the figures as JSON under bench/results/ (git-ignored).
Figures from one run are comparable with each other; across runs, compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from adapters.codec import decode_json
from bench.common import write_result
from ledger.contract import event_to_json_bytes, validate
from ledger.dead_letter import DeadLetter
from ledger.effects import Effect, split
from ledger.fold import fold
from ledger.policy import LedgerPolicy
from ledger.position import Position
from omni_ledger.table import render_table
from simulator import RetailerSimulator, SimConfig

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def event_file(count: int, seed: int) -> Path:
    """A JSON-lines file of `count` simulated events (cached under bench/results/)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"events-{count}-seed{seed}-v2.jsonl"
    if path.exists():
        return path
    sim = RetailerSimulator(SimConfig(seed=seed, expected_rate=2_000))  # stocked for the pace below
    now = 1_790_000_000_000
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as out:
        written = 0
        while written < count:
            now += 500  # 2,000 events a simulated second
            batch = sim.next_events(now, min(1000, count - written))
            out.write(b"".join(event_to_json_bytes(e) + b"\n" for e in batch))
            written += len(batch)
            if written % 100_000 == 0 or written == count:
                print(f"\rgenerating {path.name}: {written:,}/{count:,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    tmp.rename(path)
    return path


def load_effects(path: Path, limit: int) -> tuple[list[tuple[int, Effect]], float]:
    """Decode, validate and split the first `limit` lines; returns the stamped effects and the seconds it took."""
    items: list[tuple[int, Effect]] = []
    now = -(2**62)
    started = time.perf_counter()
    with path.open("rb") as lines:
        for number, line in enumerate(lines):
            if number >= limit:
                break
            record = decode_json(line, "bench")
            event = record if isinstance(record, DeadLetter) else validate(record, origin="bench", raw=line)
            if isinstance(event, DeadLetter):
                continue
            now = max(now, event.occurred_at)
            items.extend((now, effect) for effect in split(event))
    return items, time.perf_counter() - started


def fold_rate(items: list[tuple[int, Effect]], batch: int, policy: LedgerPolicy) -> float:
    """Effects/s folding `batch` effects at a time, grouped by key as the dataflow does."""
    positions: dict[str, Position] = {}
    started = time.perf_counter()
    for i in range(0, len(items), batch):
        by_key: dict[str, list[tuple[int, Effect]]] = defaultdict(list)
        for item in items[i : i + batch]:
            by_key[item[1].key].append(item)
        for key, group in by_key.items():
            first = group[0][1]
            positions[key], _ = fold(positions.get(key), first.site_id, first.sku, group, policy)
    return len(items) / (time.perf_counter() - started)


def replay(path: Path, events: int) -> dict[str, float | dict[str, object]]:
    """`omni-ledger run --source file:PATH` in a subprocess; wall time includes start-up and the last publish."""
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as out:
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "omni_ledger", "run", "--source", f"file:{path}", "--snapshot-dir", out, "--json"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"replay failed:\n{result.stderr}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "events_per_s": events / wall, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the end-to-end replay")
    parser.add_argument("--fold-events", type=int, default=300_000, help="events in the fold-alone runs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the JSON result instead of the table")
    args = parser.parse_args()

    path = event_file(args.events, args.seed)
    policy = LedgerPolicy()
    print("decoding and splitting the fold input...", file=sys.stderr)
    items, decode_s = load_effects(path, args.fold_events)
    events_in = min(args.fold_events, args.events)
    rows: list[list[object]] = [["decode + validate + split (JSON)", round(events_in / decode_s), "events/s"]]
    for batch in (1, 100, 1000):
        print(f"folding in batches of {batch}...", file=sys.stderr)
        rows.append([f"fold alone, batches of {batch} effects", round(fold_rate(items, batch, policy)), "effects/s"])
    print(f"replaying {args.events:,} events end to end (omni-ledger run --source file:...)...", file=sys.stderr)
    e2e = replay(path, args.events)
    rate = e2e["events_per_s"]
    assert isinstance(rate, float)
    rows.append([f"end to end, {args.events:,}-event file replay", round(rate), "events/s (wall)"])
    machine = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "bytewax": version("bytewax"),
        "duckdb": version("duckdb"),
        "platform": platform.platform(),
    }
    result = {"at": datetime.now(UTC).isoformat(), "machine": machine, "rows": rows, "replay": e2e}
    out = write_result("fold", result)
    if args.json:
        print(json.dumps(result))
        return
    print(render_table(("figure", "value", "unit"), rows))
    print(
        f"machine: {machine['cores']} cores, Python {machine['python']}, bytewax {machine['bytewax']}, "
        f"duckdb {machine['duckdb']}; results in {out.relative_to(REPO)}"
    )


if __name__ == "__main__":
    main()
