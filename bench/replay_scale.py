"""`make bench-replay`: issue 14's "done when" replay: N distinct positions from a file, 1 s epochs, then a resume.

`python -m bench.replay_scale --positions 2000000 [--json] [--dir DIR]`:

1. writes an event file of N receipts, one per distinct (site, sku) position (1,000 sites);
2. replays it: `OMNI_LEDGER_RUNTIME_EPOCH_INTERVAL=1s omni-ledger run --source file:FILE
   --snapshot-dir DIR --json`, timing the wall clock and sampling, every 2 s, the size of
   Bytewax's own recovery files (DIR/recovery without the ledger's `shards/` and `sink/`);
3. runs again on the same DIR with a small new file (sales on old positions, receipts on
   new ones): Bytewax resumes, the shards restore, the new events are applied, the run ends;
4. checks the store: every position present, the units summed as the events say.

Prints a table (targets beside the figures) and, with --json, the figures as JSON. Each
run prints its progress to stderr while it lasts. Wall times on a shared machine measure
the other tenants too: the CPU seconds of each run are given beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, last_json, say, tail, write_result
from bench.scale import positions_digest
from ledger.contract import event_to_json_bytes
from ledger.events import EventType, InventoryEvent
from omni_ledger.table import render_table

__all__ = ["directory_bytes", "main", "recovery_bytes", "replay_run", "write_events"]

SITES = 1_000
T0 = 1_790_000_000_000
RECEIPT = 10
"""Units of each receipt in the big file."""
LEDGER_DIRS = ("shards", "sink")
"""The ledger's own files under DIR/recovery; the rest is Bytewax's."""
TARGET_BYTEWAX_BYTES = 20_000_000
TARGET_RESUME_S = 120.0


def _key(index: int) -> tuple[str, str]:
    return f"ST-{index % SITES:04d}", f"SKU-{index // SITES:07d}"


def _receipt(n: int, at: int) -> InventoryEvent:
    site, sku = _key(n)
    return InventoryEvent(f"rcv-{n}", EventType.RECEIVED, at, site, sku, RECEIPT, ref=f"po-{n}")


def write_events(path: Path, positions: int, *, first: int = 0, sales: int = 0, at: int = T0) -> int:
    """N receipts on positions first..first+N-1, then `sales` sales of 1 on positions 0..; returns the last time.

    The receipts' lines are formatted from a template (building and encoding 2M events took
    ~18 min under load); the first and last are checked against `event_to_json_bytes`.
    """
    site0, sku0 = _key(first)
    template = event_to_json_bytes(_receipt(first, at + 1)).decode().replace("{", "{{").replace("}", "}}")
    pattern = (
        template.replace(f'"rcv-{first}"', '"rcv-{n}"')
        .replace(f'"po-{first}"', '"po-{n}"')
        .replace(str(at + 1), "{at}")
        .replace(f'"{site0}"', '"ST-{site}"')
        .replace(f'"{sku0}"', '"SKU-{sku}"')
    )
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as out:
        lines: list[str] = []
        for n in range(first, first + positions):
            at += 1
            lines.append(pattern.format(n=n, at=at, site=f"{n % SITES:04d}", sku=f"{n // SITES:07d}"))
            if len(lines) == 100_000:
                out.write("\n".join(lines) + "\n")
                lines.clear()
                say(f"  writing {path.name}: {n + 1 - first:,}/{positions:,}")
        if lines:
            out.write("\n".join(lines) + "\n")
        for n in range(sales):
            site, sku = _key(n)
            at += 1
            sale = InventoryEvent(f"sale-{first}-{n}", EventType.SOLD, at, site, sku, 1)
            out.write(event_to_json_bytes(sale).decode() + "\n")
    with tmp.open("rb") as check:
        head = check.readline().rstrip(b"\n")
    last_receipt = at - sales
    expected = event_to_json_bytes(_receipt(first, at - sales - positions + 1)) if positions else head
    assert head == expected, (head, expected)
    if positions:
        tail_line = pattern.format(
            n=first + positions - 1,
            at=last_receipt,
            site=f"{(first + positions - 1) % SITES:04d}",
            sku=f"{(first + positions - 1) // SITES:07d}",
        ).encode()
        assert tail_line == event_to_json_bytes(_receipt(first + positions - 1, last_receipt)), tail_line
    tmp.rename(path)
    return at


def directory_bytes(path: Path, skip: tuple[str, ...] = ()) -> int:
    """Bytes of the files under `path`, leaving out its top-level entries named in `skip`."""
    total = 0
    if not path.is_dir():
        return 0
    for entry in path.iterdir():
        if entry.name in skip:
            continue
        if entry.is_dir():
            total += directory_bytes(entry)
        else:
            try:
                total += entry.stat().st_size
            except FileNotFoundError:
                continue  # a temp file renamed or deleted while we looked
    return total


def recovery_bytes(snapshot_dir: Path) -> int:
    """Bytewax's own recovery files: DIR/recovery without the ledger's shard checkpoints and sink jobs."""
    return directory_bytes(snapshot_dir / "recovery", skip=LEDGER_DIRS)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def replay_run(
    events: Path, snapshot_dir: Path, log: Path, *, epoch: str, timeout: float, repo: Path = REPO
) -> dict[str, Any]:
    """One `omni-ledger run --source file:EVENTS` to its end: wall and CPU time, recovery bytes (the largest seen).

    `repo`: the checkout whose ledger runs (another one compares versions side by side).
    """
    env = {**os.environ, "OMNI_LEDGER_RUNTIME_EPOCH_INTERVAL": epoch}
    args = ["run", "--source", f"file:{events}", "--snapshot-dir", str(snapshot_dir), "--json"]
    cpu_before = _children_cpu_s()
    started = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out, log.with_name(log.name + ".err").open("ab") as err:
        # `-m` puts the working directory first on sys.path: `repo`'s packages are the ones run.
        proc = subprocess.Popen([sys.executable, "-m", "omni_ledger", *args], cwd=repo, env=env, stdout=out, stderr=err)
    largest = 0
    shown = started
    killed = False
    while proc.poll() is None:
        time.sleep(2.0)
        largest = max(largest, recovery_bytes(snapshot_dir))
        now = time.perf_counter()
        if now - started > timeout:
            proc.kill()
            killed = True
            break
        if now - shown >= 15:
            shown = now
            progress = tail(log.with_name(log.name + ".err"), 400).strip().splitlines()
            say(
                f"  {now - started:6.0f} s  Bytewax recovery {largest / 1e6:6.1f} MB (largest)  "
                f"shards {directory_bytes(snapshot_dir / 'recovery' / 'shards') / 1e6:7.1f} MB  "
                f"| {progress[-1][-110:] if progress else ''}"
            )
    proc.wait()
    wall = time.perf_counter() - started
    summary = last_json(log) or {}
    result = {
        "wall_s": round(wall, 1),
        "cpu_s": round(_children_cpu_s() - cpu_before, 1),
        "returncode": proc.returncode,
        "killed_by_timeout": killed,
        "events_applied": summary.get("events_applied"),
        "snapshots_published": summary.get("snapshots_published"),
        "bytewax_recovery_bytes_largest": max(largest, recovery_bytes(snapshot_dir)),
        "bytewax_recovery_bytes_end": recovery_bytes(snapshot_dir),
        "shard_checkpoint_bytes": directory_bytes(snapshot_dir / "recovery" / "shards"),
        "sink_pending_bytes": directory_bytes(snapshot_dir / "recovery" / "sink"),
    }
    if proc.returncode != 0:
        result["error"] = tail(log.with_name(log.name + ".err"), 1500)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", type=int, default=2_000_000, help="distinct positions in the big file")
    parser.add_argument("--new", type=int, default=1_000, help="events in the second, small file (half new positions)")
    parser.add_argument("--epoch", default="1s", help="OMNI_LEDGER_RUNTIME_EPOCH_INTERVAL of both runs")
    parser.add_argument("--dir", type=Path, help="work directory, kept (default: a temporary one, removed)")
    parser.add_argument("--timeout", type=float, default=5_400, help="seconds before a run is killed")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of the table")
    parser.add_argument("--repo", type=Path, default=REPO, help="run the ledger of this checkout (default: this one)")
    args = parser.parse_args()

    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-replay-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = _measure(work, args.positions, args.new, args.epoch, args.timeout, args.repo.resolve())
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    out = write_result("replay_scale", result)
    if args.json:
        print(json.dumps(result))
        return
    print(render_table(("figure", "value", "target"), result["rows"]))
    print(f"results in {out.relative_to(REPO)}")


def _measure(work: Path, positions: int, new: int, epoch: str, timeout: float, repo: Path) -> dict[str, Any]:
    big, small = work / f"receipts-{positions}.jsonl", work / f"new-{positions}-{new}.jsonl"
    store = work / "store"
    if store.exists():
        shutil.rmtree(store)
    say(f"writing {positions:,} receipts (one per position) and {new:,} new events...")
    last = write_events(big, positions)
    new_positions, sales = new - new // 2, new // 2
    write_events(small, new_positions, first=positions, sales=sales, at=last + 1_000)
    say(f"run 1: replaying {positions:,} events with {epoch} epochs...")
    first = replay_run(big, store, work / "run1.log", epoch=epoch, timeout=timeout, repo=repo)
    say(f"run 1: {first['wall_s']} s wall, {first['cpu_s']} s CPU; run 2: resume + {new:,} new events...")
    second = replay_run(small, store, work / "run2.log", epoch=epoch, timeout=timeout, repo=repo)
    digest = positions_digest(str(store))
    expected = [positions + new_positions, RECEIPT * (positions + new_positions) - sales]
    rate = positions / first["wall_s"] if first["wall_s"] else 0.0
    largest = max(first["bytewax_recovery_bytes_largest"], second["bytewax_recovery_bytes_largest"])
    rows: list[list[object]] = [
        ["positions (distinct, one receipt each)", f"{positions:,}", ""],
        ["run 1: wall time", f"{first['wall_s']:,.1f} s ({first['cpu_s']:,.1f} s CPU)", "finishes"],
        ["run 1: events/s (wall)", f"{rate:,.0f}", ""],
        ["run 1: snapshots published", first["snapshots_published"], ""],
        ["Bytewax recovery files, largest seen", f"{largest / 1e6:,.2f} MB", "< 20 MB"],
        ["shard checkpoints at the end", f"{second['shard_checkpoint_bytes'] / 1e6:,.1f} MB", ""],
        ["sink pending jobs at the end", f"{second['sink_pending_bytes'] / 1e6:,.2f} MB", ""],
        [
            f"run 2: resume + {new:,} new events, wall",
            f"{second['wall_s']:,.1f} s ({second['cpu_s']:,.1f} s CPU)",
            "<= 120 s",
        ],
        ["store: positions, sum on_hand", f"{digest[:2] if digest else None}", f"{expected}"],
    ]
    met = {
        "finished": first["returncode"] == 0 and second["returncode"] == 0,
        "bytewax_under_20mb": largest < TARGET_BYTEWAX_BYTES,
        "resume_within_2_min": second["wall_s"] <= TARGET_RESUME_S,
        "store_as_expected": digest is not None and digest[:2] == expected,
    }
    rows.append(["met", ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in met.items()), ""])
    return {
        "positions": positions,
        "new_events": new,
        "epoch": epoch,
        "repo": str(repo),
        "load_average": os.getloadavg(),
        "run1": first,
        "run2": second,
        "digest": digest,
        "expected": expected,
        "met": met,
        "rows": rows,
    }


if __name__ == "__main__":
    main()
