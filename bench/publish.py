"""`python -m bench.publish`: one publish's cost, this tree against another (before/after), side by side in one run.

1. Build a store of `--positions` positions (as `bench.snapshot` does: sites x 10,000
   skus, one snapshot) once, and copy it for each tree.
2. `--rounds` rounds; in each, every tree (this one and `--before DIR`, a checkout of
   the code to compare with, e.g. `git archive main | tar -x -C DIR`) publishes
   `--publishes` intervals of `--changes` random changed positions into its own copy, in
   a process of its own (`SnapshotWriter.publish` with DuckDB on one thread, as the
   sink runs it), the trees' order alternating between rounds (the machine is shared
   and noisy). Both trees get the same keys and versions.
3. Per publish: CPU seconds of the process, wall seconds, the load average, the
   process's resident memory and the bytes of the versions the writer keeps (0 for a
   tree without). A writer's first publish is reported apart ("first CPU"): it reads
   what later ones keep.
4. After each round's publishes, in the same process, a reader (one DuckDB thread)
   queries `positions` at the last publish: one sku's sites, one key, the whole table,
   and the position count the followers check; CPU seconds, median of a few. The
   recent table (a tree of layout 2) is then at its fullest.
5. A tree of layout 2 (its writer has `compact_recent`) then folds the round's
   publishes into the base: that CPU divided by the round's publishes is what each
   publish owes for it (amortised).

With `--before`, the store is built by the `--before` tree (layout 1), and a tree of
layout 2 migrates its copy at its first open, as it would a store in service.

`--paced S` measures instead what a reader waits for: a batch of `--changes` is due
every S seconds (one unmeasured publish first: it reads the versions a writer keeps),
the writer opened as the sink opens it (`RECENT_LIMIT`: the folds into the base happen
as in service, inline or beside the publishes, whichever the tree does); batches that
fall due while the writer is busy are merged into its next publish, as the sink merges
them. Per batch: the wait from due to visible (committed), and the longest gap between
two publishes landing; per round the process's CPU seconds.

Prints a table and writes the JSON under bench/results/ (git-ignored). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from bench.common import write_result
from bench.snapshot import SKUS, _build

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]

# One round of one tree: open the writer, publish, read through `positions`, compact; one JSON line each.
_CHILD = textwrap.dedent(
    """
    import inspect, json, os, random, statistics, sys, time
    from pathlib import Path
    from adapters.snapshot_store import SnapshotReader, SnapshotWriter
    from ledger.outputs import PositionChange

    store, seed, first, publishes, changes, sites, skus = Path(sys.argv[1]), *map(int, sys.argv[2:8])
    rng = random.Random(seed)
    appends = "recent_limit" in inspect.signature(SnapshotWriter.open).parameters  # layout 2: compacted here
    writer = SnapshotWriter.open(store, recent_limit=None) if appends else SnapshotWriter.open(store)
    writer.use_one_thread()

    def rss():
        # Resident now (ru_maxrss would carry the parent's peak across exec).
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def timed(action):
        cpu, wall = time.process_time(), time.perf_counter()
        out = action()
        return time.process_time() - cpu, time.perf_counter() - wall, out

    for k in range(publishes):
        now = 1_764_000_000_000 + first + k
        batch = []
        for i in rng.sample(range(sites * skus), changes):
            on_hand = rng.randrange(50)
            batch.append(PositionChange(
                site_id=f"S{i // skus:05d}", sku=f"SKU-{i % skus:05d}", on_hand=on_hand, reserved=0, staged=0,
                inbound_qty=0, safety_stock=0, atp=on_hand, negative=False, version=first + k, updated_at=now,
                max_occurred_at=now, inbound=(), offer=None,
            ))
        cpu, wall, sid = timed(lambda: writer.publish(batch, [], events_applied=first + k, now=now))
        kept = getattr(writer, "_versions", None)  # the versions a writer keeps, where it keeps them
        kept_bytes = kept.nbytes if kept is not None else 0
        print(json.dumps({"k": k, "cpu": cpu, "wall": wall, "load": os.getloadavg()[0], "rss": rss(),
                          "kept_bytes": kept_bytes}), flush=True)
    # A reader in this process (one DuckDB thread), with the recent table at its fullest:
    # what the view's join adds to a query by sku, by key, of the whole table, and the
    # followers' position count.
    reader = SnapshotReader.open(store)
    with reader.cursor() as c:
        c.execute("SET threads = 1")
    at = f"AT (VERSION => {int(sid)})"
    count_sql = (reader.position_count_sql(sid) if hasattr(reader, "position_count_sql")
                 else f"SELECT count(*) FROM positions {at}")
    def sku():
        return f"SKU-{rng.randrange(skus):05d}"

    def site():
        return f"S{rng.randrange(sites):05d}"

    reads = {}
    for name, query, times in (
        ("sku", lambda: f"SELECT site_id, sku, atp FROM positions {at} WHERE sku = '{sku()}'", 5),
        ("key", lambda: f"SELECT * FROM positions {at} WHERE site_id = '{site()}' AND sku = '{sku()}'", 5),
        ("whole", lambda: f"SELECT count(*), sum(atp) FROM positions {at}", 3),
        ("count", lambda: count_sql, 3),
    ):
        reads[name] = statistics.median(timed(lambda: reader.sql(query()))[0] for _ in range(times))
    reader.close()
    print(json.dumps({"reads": reads}), flush=True)
    if appends:
        cpu, wall, moved = timed(writer.compact_recent)
        print(json.dumps({"compaction": {"cpu": cpu, "wall": wall, "moved": moved, "load": os.getloadavg()[0]}}),
              flush=True)
    writer.close()
    """
)


# One paced round of one tree: a batch due every `interval` seconds, late ones merged.
_PACED_CHILD = textwrap.dedent(
    """
    import json, os, random, sys, time
    from pathlib import Path
    from adapters.snapshot_store import SnapshotWriter
    from ledger.outputs import PositionChange

    store, seed, first, publishes, changes, sites, skus = Path(sys.argv[1]), *map(int, sys.argv[2:8])
    interval = float(sys.argv[8])
    rng = random.Random(seed)
    writer = SnapshotWriter.open(store)
    writer.use_one_thread()

    def batch(version, now):
        out = {}
        for i in rng.sample(range(sites * skus), changes):
            on_hand = rng.randrange(50)
            out[i] = PositionChange(
                site_id=f"S{i // skus:05d}", sku=f"SKU-{i % skus:05d}", on_hand=on_hand, reserved=0, staged=0,
                inbound_qty=0, safety_stock=0, atp=on_hand, negative=False, version=version, updated_at=now,
                max_occurred_at=now, inbound=(), offer=None,
            )
        return out

    # Made before the clock starts: the fold's batches are ready-made objects.
    batches = [batch(first + k, 1_764_000_000_000 + first + k) for k in range(publishes + 1)]
    writer.publish(list(batches[0].values()), [], events_applied=first, now=1_764_000_000_000 + first)
    cpu0, start = time.process_time(), time.perf_counter()
    due = [start + interval * (k + 1) for k in range(publishes)]
    landed, waits, walls, merged, held, folds, k = [], [], [], [], [], [], 0
    while k < publishes:
        pause = due[k] - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        now = time.perf_counter()
        ready = [j for j in range(k, publishes) if due[j] <= now]
        changes_now = {}
        for j in ready:
            changes_now.update(batches[j + 1])
        t = time.perf_counter()
        writer.publish(list(changes_now.values()), [], events_applied=first + ready[-1] + 1,
                       now=1_764_000_000_000 + first + ready[-1] + 1)
        done = time.perf_counter()
        walls.append(done - t)
        landed.append(done)
        # This tree's writer: how long the publish waited for a fold, and the folds that ended.
        held.append(getattr(writer, "compaction_seconds", 0.0))
        for fold in (writer.take_folds() if hasattr(writer, "take_folds") else []):
            folds.append({"at": done - start, "rows": fold.rows, "keys": fold.keys, "read": fold.read_seconds,
                          "commit": fold.commit_seconds})
        merged.append(len(ready))
        waits += [done - due[j] for j in ready]
        k = ready[-1] + 1
    writer.wait_for_fold() if hasattr(writer, "wait_for_fold") else None
    cpu = time.process_time() - cpu0
    gaps = [b - a for a, b in zip([start] + landed, landed)]
    print(json.dumps({"paced": {"waits": waits, "walls": walls, "gaps": gaps, "merged": merged, "cpu": cpu,
                                "held": held, "folds": folds,
                                "seconds": time.perf_counter() - start, "load": os.getloadavg()[0]}}), flush=True)
    writer.close()
    """
)


_BUILD = """
import json, sys
from pathlib import Path
from bench.snapshot import _build
print(json.dumps(_build(Path(sys.argv[1]), int(sys.argv[2]), "", 1)))
"""


def _round(
    tree: Path, store: Path, seed: int, first: int, publishes: int, changes: int, sites: int, paced: float | None
) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = [str(a) for a in (store, seed, first, publishes, changes, sites, SKUS)]
    child = _CHILD if paced is None else _PACED_CHILD
    if paced is not None:
        args.append(str(paced))
    out = subprocess.run(
        [sys.executable, "-c", child, *args], cwd=tree, env=env, check=True, capture_output=True, text=True
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def run(
    positions: int,
    changes: int,
    rounds: int,
    publishes: int,
    before: Path | None,
    work: Path,
    paced: float | None = None,
) -> dict[str, Any]:
    template = work / "template"
    if not template.exists() and before is not None:
        # Built by the older tree, so that it can open it: a tree of layout 2 migrates it
        # at its first open (a rename), as it would a store in service.
        out = subprocess.run(
            [sys.executable, "-c", _BUILD, str(template), str(positions)],
            cwd=before, env={**os.environ, "PYTHONPATH": str(before.resolve())},
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        build = json.loads(out.stdout.strip().splitlines()[-1])
    elif not template.exists():
        build = _build(template, positions, "", 1)
    else:
        build = {"sites": positions // SKUS, "positions": positions // SKUS * SKUS, "reused": True}
    trees = {"after": REPO, **({"before": before.resolve()} if before else {})}
    for name in trees:
        shutil.rmtree(work / name, ignore_errors=True)
        shutil.copytree(template, work / name)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    reads: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    compactions: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    paced_runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for r in range(rounds):
        order = list(trees) if r % 2 else list(reversed(trees))
        for name in order:
            rows = _round(
                trees[name], work / name, 1000 + r, 2 + r * (publishes + 1), publishes, changes, build["sites"], paced
            )
            for row in rows:
                row["round"] = r
            if paced is not None:
                paced_runs[name] += [row["paced"] for row in rows if "paced" in row]
                print(f"round {r} {name}: {_paced_line(paced_runs[name][-1:])}", file=sys.stderr)
                continue
            published = [row for row in rows if "k" in row]
            reads[name] += [row["reads"] for row in rows if "reads" in row]
            compactions[name] += [row["compaction"] for row in rows if "compaction" in row]
            results[name] += published
            print(
                f"round {r} {name}: " + ", ".join(f"{row['cpu']:.2f}s cpu" for row in published) + f"; {rows[-1]}",
                file=sys.stderr,
            )
    return {
        "build": build,
        "positions": positions,
        "changes": changes,
        "rounds": rounds,
        "publishes": results,
        "reads": reads,
        "compactions": compactions,
        "paced": paced,
        "paced_runs": paced_runs,
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _paced_line(runs: list[dict[str, Any]]) -> str:
    waits = [w for run in runs for w in run["waits"]]
    walls = [w for run in runs for w in run["walls"]]
    gaps = [g for run in runs for g in run["gaps"]]
    cpu = [run["cpu"] for run in runs]
    return (
        f"due->visible p50 {_pct(waits, 0.5):.2f} p99 {_pct(waits, 0.99):.2f} max {max(waits):.2f}; "
        f"publish wall p50 {_pct(walls, 0.5):.2f} p99 {_pct(walls, 0.99):.2f}; longest gap {max(gaps):.2f}; "
        f"{len(walls)} publishes for {len(waits)} batches; CPU {statistics.median(cpu):.1f} s per round "
        f"({min(cpu):.1f}-{max(cpu):.1f}); load {min(r['load'] for r in runs):.1f}-{max(r['load'] for r in runs):.1f}"
    )


def report(result: dict[str, Any]) -> str:
    if result.get("paced") is not None:
        head = (
            f"{result['changes']:,} changed positions due every {result['paced']} s into "
            f"{result['build']['positions']:,}; {result['rounds']} rounds alternating (seconds)"
        )
        return "\n".join([head] + [f"{name:8} {_paced_line(runs)}" for name, runs in result["paced_runs"].items()])
    lines = [
        f"{result['changes']:,} changed positions into {result['build']['positions']:,}; "
        f"{result['rounds']} rounds alternating; CPU and wall seconds per publish (median, min-max)",
        f"{'tree':8} {'publishes':>9} {'first CPU':>10} {'CPU':>18} {'wall':>18} {'load':>10} "
        f"{'RSS MB':>7} {'kept MB':>7}",
    ]
    for name, rows in result["publishes"].items():
        first = [row["cpu"] for row in rows if row["k"] == 0]
        later = [row for row in rows if row["k"] > 0] or rows
        cpu, wall = [row["cpu"] for row in later], [row["wall"] for row in later]
        loads = [row["load"] for row in rows]
        lines.append(
            f"{name:8} {len(rows):>9} {statistics.median(first):>10.2f} "
            f"{statistics.median(cpu):>6.2f} ({min(cpu):.2f}-{max(cpu):.2f}) "
            f"{statistics.median(wall):>6.2f} ({min(wall):.2f}-{max(wall):.2f}) "
            f"{min(loads):>4.1f}-{max(loads):<4.1f} {max(row['rss'] for row in rows) / 2**20:>7.0f} "
            f"{max(row['kept_bytes'] for row in rows) / 2**20:>7.0f}"
        )
    publishes = max(1, len(next(iter(result["publishes"].values()))) // max(1, result["rounds"]))
    for name, runs in result["compactions"].items():
        if runs:
            cpu = [run["cpu"] for run in runs]
            lines.append(
                f"{name}: compaction of the recent table after each round ({publishes} publishes, "
                f"{statistics.median(run['moved'] for run in runs):,.0f} keys): CPU {statistics.median(cpu):.2f} "
                f"({min(cpu):.2f}-{max(cpu):.2f}), {statistics.median(cpu) / publishes:.2f} per publish amortised"
            )
    lines.append("a reader's query through `positions` at the round's last publish (CPU seconds, median of rounds):")
    for name, runs in result["reads"].items():
        if runs:
            lines.append(
                f"  {name:8} "
                + ", ".join(f"{what} {statistics.median(run[what] for run in runs):.3f}" for what in runs[0])
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=2_000_000, help="store size (default 2,000,000)")
    parser.add_argument("--changes", type=int, default=100_000, help="changed positions per publish")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--publishes", type=int, default=3, help="publishes per round and tree (the first apart)")
    parser.add_argument("--before", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--work", type=Path, help="keep the stores here (default: a temporary directory)")
    parser.add_argument("--paced", type=float, help="a batch due every this many seconds: the wait until visible")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-publish-"))
    try:
        result = run(args.positions, args.changes, args.rounds, args.publishes, args.before, work, args.paced)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(report(result))
    print(f"written to {write_result('publish', result)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
