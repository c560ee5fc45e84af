"""The read model alone: a first load's time and resident memory, then the CPU of each refresh.

`python -m bench.serve_refresh --sites 1000 --skus 2000 --changes 100000 --publishes 3
--before /work/main` builds (or reuses) the bench store of bench/serve_store.py, and for
each checkout (`--before`'s first, then this one), in a process of its own on a fresh
copy of the store:

With `--before` the store is built by that checkout (cached in its var/bench-serve/): a
checkout of a newer store layout migrates its copy when its writer opens it.

1. opens `ReadModel` on it (the first load): wall and CPU seconds, and how much the
   process's resident memory grew (per position), and its peak (VmHWM) so far;
2. `--publishes` times: publishes `--changes` changed positions through
   `SnapshotWriter.publish` (random sites and skus, as `make bench-serve`'s publisher
   does), then times `ReadModel.refresh()` alone, wall and process CPU, and checks the
   view names the new snapshot; the resident memory after each, and the peak at the end
   (the transient of every refresh, and of the writer publishing in the same process).

Prints one line a checkout and round, then a table (`--json`: each run's JSON), and writes the
JSON under bench/results/. A publish that starts a fold waits for it to commit before the
refresh is timed (the fold runs in this process: its CPU is not the refresh's), and the next
refresh, the first to read the fold's snapshot, is told apart ("after a fold"). The
checkouts run one after the other, their order alternating between `--rounds`, on the
same machine: compare them within one run. With more than 10 publishes of 100,000
changes, a checkout of layout 2 compacts its recent table once (`RECENT_LIMIT`), and the
refresh after it reads that snapshot too.
Not a test: nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from bench.common import write_result
from bench.serve_store import open_or_build
from omni_ledger.table import render_table

REPO = Path(__file__).resolve().parents[1]

# Run in the checkout under test (`python -c` puts it first on sys.path): its ReadModel and writer.
_CHILD = """
import json, os, random, sys, time
from pathlib import Path
from adapters.network_file import load_network
from adapters.snapshot_store import SnapshotWriter
from adapters.snapshot_store.read_model import ReadModel
from ledger.outputs import PositionChange

store, network, skus, changes, publishes, seed = (
    Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
)

def rss():
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def peak():
    # VmHWM: the most the process ever held resident (kB), the transient peak of a refresh included.
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

# The writer first: a checkout of a newer store layout migrates the store as it opens.
writer = SnapshotWriter.open(store)
before = rss()
wall, cpu = time.perf_counter(), time.process_time()
model = ReadModel.open(store)
view = model.view
out = {
    "load_wall_s": round(time.perf_counter() - wall, 2),
    "load_cpu_s": round(time.process_time() - cpu, 2),
    "positions": view.positions,
    "resident_growth_bytes": rss() - before,
}
out["resident_bytes_per_position"] = round(out["resident_growth_bytes"] / view.positions, 1)
out["peak_after_load_bytes"] = peak()
rng = random.Random(seed)
sites = [site.id for site in load_network(network).sites]
applied = 0
refreshes = []
fold_seen = False
for step in range(publishes):
    now = time.time_ns() // 1_000_000
    keys = {(rng.choice(sites), f"SKU-{rng.randrange(skus):06d}") for _ in range(changes)}
    batch = []
    for site, sku in keys:
        on_hand = rng.randrange(13)
        batch.append(PositionChange(
            site_id=site, sku=sku, on_hand=on_hand, reserved=0, staged=0, inbound_qty=0, safety_stock=0,
            atp=on_hand, negative=False, version=1_000 + step, updated_at=now, max_occurred_at=now,
        ))
    applied += len(batch)
    sid = writer.publish(batch, [], events_applied=applied, now=now)
    # A fold a publish started runs in the background of this process: waited for, so that
    # its CPU is not a refresh's. Its snapshot is not a publish's: the next refresh reads it.
    writer.wait_for_fold()
    folded, fold_seen = fold_seen, bool(writer.take_folds())
    wall, cpu = time.perf_counter(), time.process_time()
    changed = model.refresh()
    took = {"changes": changed, "wall_s": round(time.perf_counter() - wall, 3),
            "cpu_s": round(time.process_time() - cpu, 3), "resident_bytes": rss(), "after_fold": folded}
    assert model.view.snapshot_id == sid, (model.view.snapshot_id, sid)
    refreshes.append(took)
out["refreshes"] = refreshes
out["resident_bytes_per_position_end"] = round((rss() - before) / model.view.positions, 1)
out["peak_resident_bytes"] = peak()
out["resident_before_load_bytes"] = before
writer.close()
model.close()
print(json.dumps(out))
"""


_BUILD = """
import json, sys
from bench.serve_store import open_or_build
from omni_ledger.table import render_table
build = open_or_build(sites=int(sys.argv[1]), skus=int(sys.argv[2]), seed=int(sys.argv[3]), slot_days=int(sys.argv[4]))
print(json.dumps([str(build.directory), str(build.network)]))
"""


def run(checkout: Path, source: Path, network: str, args: argparse.Namespace) -> dict[str, object]:
    """One checkout's load and refreshes, on a fresh copy of the store."""
    store = source.parent / f"refresh-store-{checkout.name}"
    if store.exists():
        shutil.rmtree(store)
    shutil.copytree(source, store)
    try:
        out = subprocess.run(
            [
                sys.executable, "-c", _CHILD, str(store), network, str(args.skus), str(args.changes),
                str(args.publishes), str(args.seed),
            ],
            cwd=checkout, capture_output=True, text=True, check=False, env=dict(os.environ),
        )  # fmt: skip
    finally:
        shutil.rmtree(store, ignore_errors=True)
    if out.returncode != 0:
        sys.exit(f"{checkout}: the read model run failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    found: dict[str, object] = {"code": str(checkout)}
    found.update(result)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=1_000)
    parser.add_argument("--skus", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--slot-days", type=int, default=14)
    parser.add_argument("--changes", type=int, default=100_000, help="changed positions a publish")
    parser.add_argument("--publishes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="rounds, the checkouts' order alternating")
    parser.add_argument("--before", type=Path, default=None, help="another checkout, run first (e.g. main's)")
    parser.add_argument("--json", action="store_true", help="print each run's JSON rather than a table")
    args = parser.parse_args()
    if args.before:
        # Built (and cached) by the older checkout, so that it can open it; a checkout of
        # a newer store layout migrates its copy at its first open, as in service.
        out = subprocess.run(
            [sys.executable, "-c", _BUILD, *(str(v) for v in (args.sites, args.skus, args.seed, args.slot_days))],
            cwd=args.before, capture_output=True, text=True, check=True, env=dict(os.environ),
        )  # fmt: skip
        directory, network = json.loads(out.stdout.strip().splitlines()[-1])
    else:
        build = open_or_build(sites=args.sites, skus=args.skus, seed=args.seed, slot_days=args.slot_days)
        directory, network = build.directory, build.network
    runs = []
    checkouts = ([args.before.resolve()] if args.before else []) + [REPO]
    for r in range(args.rounds):
        for checkout in checkouts if r % 2 == 0 else checkouts[::-1]:
            result = run(checkout, Path(directory), network, args)
            result["round"] = r
            runs.append(result)
            print(json.dumps(result) if args.json else summary_line(result), flush=True)
    if not args.json:
        print(render_table([*_COLUMNS], [summary_row(run) for run in runs]))
    path = write_result("serve-refresh", {"params": {k: str(v) for k, v in vars(args).items()}, "runs": runs})
    print(f"results in {path.relative_to(REPO)}")


_COLUMNS = (
    "checkout",
    "round",
    "load s",
    "B/position",
    "refresh wall p50 s",
    "CPU p50 s",
    "after a fold: wall s",
    "CPU s",
)


def summary_row(run: dict[str, object]) -> list[object]:
    """One run's figures: the load, the refreshes' medians, and the refreshes that read a fold's snapshot."""
    refreshes = run["refreshes"]
    assert isinstance(refreshes, list)
    plain = [r for r in refreshes if not r.get("after_fold")]
    folds = [r for r in refreshes if r.get("after_fold")]
    return [
        Path(str(run["code"])).name,
        run["round"],
        run["load_wall_s"],
        run["resident_bytes_per_position"],
        statistics.median(r["wall_s"] for r in plain) if plain else None,
        statistics.median(r["cpu_s"] for r in plain) if plain else None,
        ", ".join(str(r["wall_s"]) for r in folds) or None,
        ", ".join(str(r["cpu_s"]) for r in folds) or None,
    ]


def summary_line(run: dict[str, object]) -> str:
    return "  ".join(f"{name}: {value}" for name, value in zip(_COLUMNS, summary_row(run), strict=True))


if __name__ == "__main__":
    main()
