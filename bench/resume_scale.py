"""The whole flow's resume with N positions (issue 14: 20,000,000, first new event folded <= 30 s after start).

`python -m bench.resume_scale --positions 20000000 [--json] [--dir DIR]`:

1. *Seed.* A real run replays a small file (one receipt on each of a few thousand
   positions, 1 s epochs): the recovery directory then holds Bytewax's own state (the
   file source's offsets, one pointer `(shard, S, c)` per shard, the sink's) and each
   shard's checkpoint chain, as after any run.
2. *Plant.* Folding 20M positions through the flow would take hours on this machine, so
   each shard's chain is replaced by one base holding its share of N positions, at the
   checkpoint its Bytewax pointer names (read from Bytewax's SQLite files), which is
   what the flow's own compaction leaves after a run. Each position is a real one: a
   receipt of 10 units folded by `ledger.fold` into a shard, packed to columns, its row
   replicated under N distinct (site, sku) keys and restored into each shard through
   `Shard.restore`, then written with `Shard.image()`. What a resume does with it is
   what it does after a kill -9 of a run whose last epoch had committed: Bytewax
   resumes from its pointers, each shard deletes what is newer and restores its base.
3. *Resume.* `omni-ledger run --source file:NEW --metrics-port P` on the same directory,
   NEW holding a few sales on planted positions. /metrics is polled every 0.2 s: the
   time from start to the positions gauge reaching N (every shard restored) and to the
   first event folded (`omni_ledger_events_total` above 0), then the wall time to the
   end and the process's peak RSS.

The store (DuckLake) holds only the seed's positions: the planted ones are in the fold's
state, not in the published snapshots, which a resume does not read.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from adapters.shard_checkpoints import SHARDS_DIR, ShardCheckpoints, read_layout
from bench.common import REPO, free_port, say, tail, write_result
from bench.planted import SITES, planted_images
from bench.replay_scale import directory_bytes, replay_run, write_events
from ledger.contract import event_to_json_bytes
from ledger.events import EventType, InventoryEvent
from omni_ledger.table import render_table

__all__ = ["bytewax_pointers", "main", "plant_positions"]

TARGET_FIRST_EVENT_S = 30.0
_SAMPLE = re.compile(r"^(omni_ledger_events_total|omni_ledger_positions)(\{[^}]*\})? ([0-9.e+]+)$", re.M)


def bytewax_pointers(recovery: Path) -> dict[int, tuple[int, int, int]]:
    """Each shard's pointer `(shard, S, c)` as Bytewax will resume it: its newest snapshot in any partition."""
    pointers: dict[int, tuple[int, int, int, int]] = {}
    for part in sorted(recovery.glob("part-*.sqlite3")):
        con = sqlite3.connect(part)
        try:
            rows = con.execute(
                "SELECT state_key, snap_epoch, ser_change FROM snaps "
                "WHERE step_id LIKE '%.fold' AND ser_change IS NOT NULL"
            ).fetchall()
        finally:
            con.close()
        for _key, epoch, blob in rows:
            shard, shards, checkpoint = pickle.loads(blob)
            if shard not in pointers or pointers[shard][0] < epoch:
                pointers[shard] = (epoch, shard, shards, checkpoint)
    return {shard: (s, n, c) for shard, (_, s, n, c) in pointers.items()}


def plant_positions(recovery: Path, positions: int) -> dict[str, Any]:
    """Step 2: replace every shard's chain by one base of its share of `positions` (see the module docstring)."""
    root = recovery / SHARDS_DIR
    shards = read_layout(root)
    assert shards is not None, f"no shard layout in {root}"
    pointers = bytewax_pointers(recovery)
    missing = sorted(set(range(shards)) - set(pointers))
    assert not missing, f"the seed run left no Bytewax pointer for shards {missing}: seed more positions"
    began, cpu = time.perf_counter(), time.process_time()
    images = planted_images(positions, shards)
    written = 0
    for shard_index in range(shards):
        image = images.pop(0)  # dropped once written: the images of 20M positions are ~3 GB
        _, _, checkpoint = pointers[shard_index]
        ShardCheckpoints(root, shard_index, shards).replace_with_base(checkpoint, image)
        written += len(image)
        say(f"  shard {shard_index}: {len(image):,} positions as base {checkpoint} ({written:,}/{positions:,})")
    return {
        "planted": written,
        "plant_wall_s": round(time.perf_counter() - began, 1),
        "plant_cpu_s": round(time.process_time() - cpu, 1),
        "shard_checkpoint_bytes": directory_bytes(root),
    }


def _metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            text = response.read().decode()
    except OSError:
        return {}
    found: dict[str, float] = {}
    for name, labels, value in _SAMPLE.findall(text):
        if name == "omni_ledger_events_total" and 'outcome="applied"' not in (labels or ""):
            continue
        found[name] = found.get(name, 0.0) + float(value)
    return found


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) the process used so far, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(found.group(1)) * 1024 if found else 0


def resume_run(events: Path, store: Path, log: Path, positions: int, timeout: float) -> dict[str, Any]:
    """Step 3: the resumed run, timed from its start to the positions restored and to the first event folded."""
    port = free_port()
    env = {**os.environ, "OMNI_LEDGER_RUNTIME_EPOCH_INTERVAL": "1s"}
    args = ["run", "--source", f"file:{events}", "--snapshot-dir", str(store), "--metrics-port", str(port), "--json"]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = usage.ru_utime + usage.ru_stime
    with log.open("wb") as out, log.with_name(log.name + ".err").open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "omni_ledger", *args], cwd=REPO, env=env, stdout=out, stderr=err)
    restored_s = first_s = None
    restored_cpu = first_cpu = None
    peak = 0
    shown = started
    while proc.poll() is None:
        time.sleep(0.2)
        now = time.perf_counter()
        peak = max(peak, _peak_rss(proc.pid))
        seen = _metrics(port)
        if restored_s is None and seen.get("omni_ledger_positions", 0) >= positions:
            restored_s, restored_cpu = now - started, _cpu_s(proc.pid)
            say(f"  every shard restored ({positions:,} positions) {restored_s:.1f} s after start")
        if first_s is None and seen.get("omni_ledger_events_total", 0) > 0:
            first_s, first_cpu = now - started, _cpu_s(proc.pid)
            say(f"  first new event folded {first_s:.1f} s after start")
        if now - shown >= 10:
            shown = now
            say(f"  {now - started:5.0f} s, RSS peak {peak / 1e9:.2f} GB, metrics {seen or 'not up yet'}")
        if now - started > timeout:
            proc.kill()
    proc.wait()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result: dict[str, Any] = {
        "cpu_s": round(usage.ru_utime + usage.ru_stime - cpu_before, 1),
        "first_event_folded_s": None if first_s is None else round(first_s, 1),
        "positions_restored_s": None if restored_s is None else round(restored_s, 1),
        "cpu_at_restored_s": None if restored_cpu is None else round(restored_cpu, 1),
        "cpu_at_first_event_s": None if first_cpu is None else round(first_cpu, 1),
        "wall_to_end_s": round(time.perf_counter() - started, 1),
        "peak_rss_bytes": peak,
        "returncode": proc.returncode,
    }
    if proc.returncode != 0:
        result["error"] = tail(log.with_name(log.name + ".err"), 1500)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", type=int, default=20_000_000)
    parser.add_argument("--seed-positions", type=int, default=5_000, help="positions of the real seed run")
    parser.add_argument("--new", type=int, default=100, help="sales on planted positions in the resumed run")
    parser.add_argument("--dir", type=Path, help="work directory, kept (default: a temporary one, removed)")
    parser.add_argument("--timeout", type=float, default=1_800)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--resume-only", action="store_true", help="only step 3, on the store a kept --dir already holds (planted)"
    )
    args = parser.parse_args()
    if args.resume_only:
        assert args.dir is not None, "--resume-only needs the --dir of an earlier run"
        again = args.dir / f"again-{int(time.time())}.jsonl"
        write_sales(again, args.new, at=int(time.time() * 1000))
        result = resume_run(again, args.dir / "store", args.dir / "again.log", args.positions, args.timeout)
        write_result("resume_scale", {"positions": args.positions, "resume_only": result})
        print(json.dumps(result) if args.json else render_table(("figure", "value"), list(result.items())))
        return
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-resume-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        store = work / "store"
        if store.exists():
            shutil.rmtree(store)
        seed_file, new_file = work / "seed.jsonl", work / "new.jsonl"
        # Seed positions live on sites of their own ("ST-S..."), apart from the planted ones.
        last = write_events(seed_file, args.seed_positions, first=10**9)
        write_sales(new_file, args.new, at=last + 1_000)
        say(f"seed: replaying {args.seed_positions:,} receipts...")
        seed = replay_run(seed_file, store, work / "seed.log", epoch="1s", timeout=args.timeout)
        assert seed["returncode"] == 0, seed.get("error")
        # The same resume on the seed's few thousand positions: what start-up costs without the state.
        baseline_store = work / "baseline"
        if baseline_store.exists():
            shutil.rmtree(baseline_store)
        shutil.copytree(store, baseline_store)
        say("baseline: the same resume on the seed's positions only...")
        baseline = resume_run(new_file, baseline_store, work / "baseline.log", args.seed_positions, args.timeout)
        say(f"plant: {args.positions:,} positions as one base per shard...")
        planted = plant_positions(store / "recovery", args.positions)
        say(f"resume: omni-ledger run with {args.new} new sales on planted positions...")
        # The planted bases replace the seed's chains: the fold holds exactly the planted positions.
        resumed = resume_run(new_file, store, work / "resume.log", args.positions, args.timeout)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    first = resumed["first_event_folded_s"]
    result = {
        "positions": args.positions,
        "seed": seed,
        "planted": planted,
        "resume": resumed,
        "baseline": baseline,
        "load_average": os.getloadavg(),
        "met": first is not None and first <= TARGET_FIRST_EVENT_S,
    }
    out = write_result("resume_scale", result)
    if args.json:
        print(json.dumps(result))
        return
    b, r = baseline, resumed
    rows = [
        ["positions in the fold's state", f"{args.seed_positions:,}", f"{args.positions:,}", ""],
        ["shard checkpoints", "", f"{planted['shard_checkpoint_bytes'] / 1e9:,.2f} GB", ""],
        ["start -> every shard restored", f"{b['positions_restored_s']} s", f"{r['positions_restored_s']} s", ""],
        ["start -> first new event folded", f"{baseline['first_event_folded_s']} s", f"{first} s", "<= 30 s"],
        ["start -> end (new events published)", f"{baseline['wall_to_end_s']} s", f"{resumed['wall_to_end_s']} s", ""],
        ["CPU seconds to the first event folded", f"{b['cpu_at_first_event_s']}", f"{r['cpu_at_first_event_s']}", ""],
        ["CPU seconds of the run", f"{baseline['cpu_s']}", f"{resumed['cpu_s']}", ""],
        ["peak RSS", f"{baseline['peak_rss_bytes'] / 1e9:,.2f} GB", f"{resumed['peak_rss_bytes'] / 1e9:,.2f} GB", ""],
        ["met", "", "yes" if result["met"] else "NO", ""],
    ]
    print(render_table(("resume", "seed only", "planted", "target"), rows))
    print(f"results in {out.relative_to(REPO)}")


def write_sales(path: Path, count: int, *, at: int) -> None:
    """`count` sales of 1 unit on planted positions (site i, the first skus); ids unique per `at`."""
    with path.open("wb") as out:
        for n in range(count):
            site = f"ST-{n % SITES:04d}"
            event = InventoryEvent(f"new-sale-{at}-{n}", EventType.SOLD, at + n, site, "SKU-0000000", 1)
            out.write(event_to_json_bytes(event) + b"\n")


if __name__ == "__main__":
    main()
