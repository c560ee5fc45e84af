"""`python -m bench.snapshot`: publishing intervals into a large snapshot store, and point lookups meanwhile.

1. Build a store of `--positions` positions (default 10,000,000: sites x 10,000 skus,
   version 1) in SQL, in one transaction through the writer's own connection, as one
   publish would leave it (one snapshot, its snapshot_info row), sorted by (site, sku).
2. Start the readers, each in another process: `SnapshotReader` (as `omni-ledger atp`
   reads: a DuckLake query each) and a `PositionReplica` (an in-memory copy refreshed
   every 50 ms; also how long after a publish's commit it holds that snapshot). Each
   looks up random (site, sku) positions in a loop, `--think` seconds apart, first while
   the store is idle, then while the publishes run. `--readers` picks them.
3. Hand `--intervals` intervals of `--changes` changed positions (default 100,000, random
   keys, a new version each) to the real sink partition (`SnapshotSink`, its background
   writer thread and `SnapshotWriter.publish`), one interval every `--period` seconds, as
   the flow's batching step does; every `--epoch-every` intervals close an epoch
   (`snapshot()`, which keeps the intervals not published yet in the epoch's state).
   Measured: the handover on the calling thread (what the fold waits for: it blocks while
   two intervals wait), the publish on the writer thread, the maintenance runs the writer
   makes between publishes (timer or slowed publishes), and the epoch's close.

With `--writers N`, N sink partitions (writers) share the store, each with its share of
every interval (keys routed by sku); `--catalog postgres` keeps the catalog in a
throwaway PostgreSQL server (infra/postgres/server.py, durable: fsync on).

Prints a table (`--json`: the JSON) and writes the JSON under bench/results/ (git-ignored).
Not a test: nothing asserts a timing. `run(...)` is what the benchmark suite calls.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

from adapters.snapshot_store import MaintenanceReport, SnapshotWriter
from adapters.snapshot_store.layout import LAKE, StoreLayout
from adapters.snapshot_store.sink import SnapshotSink
from bench.common import write_result
from ledger.outputs import FoldTally, PositionChange, SnapshotBatch
from omni_ledger.table import render_table

__all__ = ["main", "run"]

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / "infra" / "postgres" / "server.py"
SKUS = 10_000  # per site
PUBLISH_TARGET_S = 1.0
LOOKUP_TARGET_MS = 10.0
READERS = ("ducklake", "replica")
# The fold counts as not paused when handing an interval over takes under this share of the period.
PAUSE_SHARE = 0.05

# The reader process: idle lookups until DIR/go exists, then measured lookups until DIR/stop.
_READER = textwrap.dedent(
    """
    import json, random, sys, time
    from pathlib import Path
    from adapters.snapshot_store import SnapshotReader

    store, control, sites, skus = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(7)
    think = float(sys.argv[5])
    reader = SnapshotReader.open(store)
    torn = []

    def lookup():
        i = rng.randrange(sites * skus)
        site, sku = f"S{i // skus:05d}", f"SKU-{i % skus:05d}"
        started = time.perf_counter()
        rows = reader.positions(sku=sku, site_id=site)
        took = time.perf_counter() - started
        if len(rows) != 1:
            # A torn read of DuckLake's SQLite catalog (README): counted, not hidden.
            torn.append([site, sku, len(rows)])
        return took

    for _ in range(20):
        lookup()  # warm: metadata, extension, file footers
    print("ready", flush=True)
    idle, busy = [], []
    while not (control / "stop").exists():
        (busy if (control / "go").exists() else idle).append(lookup())
        time.sleep(think if busy or len(idle) <= 2000 else 0.01)
    print(json.dumps({"idle": idle, "busy": busy, "torn": torn}), flush=True)
    """
)

# The replica reader process: a PositionReplica following the store (a refresh 50 ms after
# the last), looked up like the reader above; also when it reached each snapshot (wall
# clock, to compare with the publishes' commit times) and the memory the copy took.
_REPLICA_READER = textwrap.dedent(
    """
    import json, random, sys, time
    from pathlib import Path
    from adapters.snapshot_store.replica import PositionReplica

    store, control, sites, skus = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    think = float(sys.argv[5])
    rng = random.Random(8)

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    rss_before = rss()
    started = time.perf_counter()
    replica = PositionReplica.open(store)
    load_seconds = time.perf_counter() - started
    held = replica.count()
    rss_loaded = rss()
    refreshed = []
    replica.follow(every=0.05)

    def lookup():
        i = rng.randrange(sites * skus)
        site, sku = f"S{i // skus:05d}", f"SKU-{i % skus:05d}"
        started = time.perf_counter()
        row = replica.position(site, sku)
        took = time.perf_counter() - started
        assert row is not None, (site, sku)
        return took

    for _ in range(20):
        lookup()
    print("ready", flush=True)
    idle, busy = [], []
    while not (control / "stop").exists():
        (busy if (control / "go").exists() else idle).append(lookup())
        if not refreshed or refreshed[-1][0] != replica.snapshot_id:
            refreshed.append((replica.snapshot_id, replica.refreshed_at))
        time.sleep(think if busy or len(idle) <= 2000 else 0.01)
    replica.close()
    print(json.dumps({
        "idle": idle, "busy": busy, "refreshed": refreshed,
        "load_seconds": load_seconds, "positions": held, "rss_bytes": rss_loaded - rss_before,
    }), flush=True)
    """
)


def _recorder(writer: int, publishes: list[tuple[int, float]]) -> Callable[[int | None, int, int, float], None]:
    """The sink's publish hook: how long each publish took."""

    def record(snapshot_id: int | None, applied: int, rows: int, seconds: float) -> None:
        publishes.append((writer, seconds))

    return record


class _Commits:
    """The sink's observer: when each snapshot was committed (wall clock, on the writer thread)."""

    def __init__(self) -> None:
        self.committed: list[tuple[int, float]] = []
        self.maintenance: list[tuple[str, float]] = []

    def published(
        self, snapshot_id: int | None, changes: Sequence[PositionChange], rows: int, seconds: float, at: int
    ) -> None:
        if snapshot_id is not None:
            self.committed.append((snapshot_id, at / 1000))

    def maintained(self, report: MaintenanceReport, reason: str) -> None:
        self.maintenance.append((reason, report.seconds))


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * q))])


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _build(directory: Path, positions: int, catalog: str, writers: int) -> dict[str, Any]:
    """The store: `positions` rows (sites x SKUS), version 1, sorted by (site, sku); one snapshot."""
    started = time.perf_counter()
    sites = positions // SKUS
    total = sites * SKUS
    opened = [SnapshotWriter.open(directory, catalog=catalog, writers=writers, writer=w) for w in range(writers)]
    try:
        con = opened[0]._con  # the bulk rows go in as one publish would, without 10M Python objects
        con.execute("SET enable_progress_bar = false")
        con.execute("BEGIN")
        for w in range(writers):
            table = StoreLayout(catalog, writers).positions_base(w)  # layout 2: the compacted rows
            owned = "" if writers == 1 else f"WHERE i % {SKUS} % {writers} = {w}"
            con.execute(
                f"INSERT INTO {LAKE}.{table} SELECT printf('S%05d', i // {SKUS}) AS site_id, "
                f"printf('SKU-%05d', i % {SKUS}) AS sku, (hash(i) % 50)::BIGINT AS on_hand, 0, 0, 0, 0, "
                "(hash(i) % 50)::BIGINT AS atp, false, 1, timezone('UTC', epoch_ms(1764000000000::BIGINT)) "
                f"FROM range({total}) r(i) {owned} ORDER BY i"
            )
        if writers == 1:
            snapshot_id = int(con.execute(f"SELECT * FROM {LAKE}.current_snapshot()").fetchone()[0]) + 1  # type: ignore[index]
            con.execute(
                f"INSERT INTO {LAKE}.snapshot_info VALUES "
                "(?, timezone('UTC', epoch_ms(1764000000000::BIGINT)), 0, NULL)",
                [snapshot_id],
            )
        else:
            con.execute(
                f"INSERT INTO {LAKE}.snapshot_log VALUES (0, timezone('UTC', epoch_ms(1764000000000::BIGINT)), 0, NULL)"
            )
        con.execute("COMMIT")
    finally:
        for writer in opened:
            writer.close()
    size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    return {"sites": sites, "positions": total, "seconds": round(time.perf_counter() - started, 2), "bytes": size}


def _interval(rng: random.Random, sites: int, changes: int, version: int) -> list[PositionChange]:
    now = time.time_ns() // 1_000_000
    out = []
    for i in rng.sample(range(sites * SKUS), changes):
        on_hand = rng.randrange(50)
        out.append(
            PositionChange(
                site_id=f"S{i // SKUS:05d}",
                sku=f"SKU-{i % SKUS:05d}",
                on_hand=on_hand,
                reserved=0,
                staged=0,
                inbound_qty=0,
                safety_stock=0,
                atp=on_hand,
                negative=False,
                version=version,
                updated_at=now,
                max_occurred_at=now,
                inbound=(),
                offer=None,
            )
        )
    return out


def _postgres(home: Path) -> str:
    installed = subprocess.run(["bash", str(REPO / "infra" / "postgres" / "install.sh")], check=False)
    if installed.returncode != 0:
        msg = "PostgreSQL is not installed (infra/postgres/install.sh)"
        raise SystemExit(msg)
    out = subprocess.run(
        [sys.executable, str(SERVER), "up", "--dir", str(home), "--durable"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return "postgres:" + out.stdout.strip()


def run(
    *,
    positions: int = 10_000_000,
    changes: int = 100_000,
    intervals: int = 30,
    period: float = 1.0,
    epoch_every: int = 5,
    writers: int = 1,
    catalog: str = "sqlite",
    quick: bool = False,
    work: Path | None = None,
    readers: Sequence[str] = READERS,
    think: float = 0.005,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build, publish, look up; the figures (and `rows` for the suite's table).

    `readers`: which lookup processes run beside the publishes ("ducklake":
    `SnapshotReader`, a DuckLake query each; "replica": a `PositionReplica` refreshed
    every 50 ms), each looking up in a loop with `think` seconds between lookups.
    """
    say = progress or _say
    load_before = os.getloadavg()[0]
    if quick:
        positions, intervals = min(positions, 1_000_000), min(intervals, 5)
    home = Path(tempfile.mkdtemp(prefix="bench-snapshot-", dir=work)) if work is None else Path(work)
    if home.exists() and work is not None:
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    store, control = home / "store", home / "control"
    control.mkdir()
    unknown = set(readers) - set(READERS)
    if unknown or not readers:
        # Checked before the PostgreSQL server starts: exiting here would leave it running.
        msg = f"readers must be some of {', '.join(READERS)}, not {', '.join(sorted(unknown)) or 'none'}"
        raise SystemExit(msg)
    pg_home = home / "postgres"
    conninfo = _postgres(pg_home) if catalog == "postgres" else ""
    processes: list[subprocess.Popen[str]] = []
    try:
        say(f"snapshot: building {positions:,} positions ({catalog} catalog, {writers} writer(s))...")
        build = _build(store, positions, conninfo, writers)
        say(
            f"snapshot: built in {build['seconds']} s, {build['bytes'] / 1e6:,.0f} MB; "
            f"starting the reader processes ({', '.join(readers)})..."
        )
        scripts = {"ducklake": _READER, "replica": _REPLICA_READER}
        for name in readers:
            args = [str(store), str(control), str(build["sites"]), str(SKUS), str(think)]
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", scripts[name], *args],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=REPO,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                )
            )
        for name, reader in zip(readers, processes, strict=True):
            assert reader.stdout is not None
            if reader.stdout.readline().strip() != "ready":
                msg = f"the {name} reader process failed: {reader.stderr.read() if reader.stderr else ''}"
                raise SystemExit(msg)
        time.sleep(min(3.0, period * 3))  # idle lookups

        publishes: list[tuple[int, float]] = []  # (writer, seconds)
        commits = _Commits()
        sink = SnapshotSink(
            store,
            catalog=conninfo,
            writers=writers,
            maintenance_every=timedelta(days=1),
            observer=commits,
        )
        parts = []
        for name in sink.list_parts():
            index = 0 if writers == 1 else int(name.rsplit("-", 1)[1])
            part = sink.build_part("snapshots", name, None)
            part._on_publish = _recorder(index, publishes)
            parts.append(part)
        rng = random.Random(1)
        handovers: list[float] = []
        epoch_waits: list[float] = []
        (control / "go").touch()
        say(f"snapshot: {intervals} intervals of {changes:,} changes, one every {period:g} s...")
        started = time.perf_counter()
        for k in range(intervals):
            batch = _interval(rng, build["sites"], changes, version=k + 2)
            shares: list[list[PositionChange]] = [[] for _ in range(writers)]
            for change in batch:
                shares[int(change.sku[4:]) % writers].append(change)
            due = started + k * period
            time.sleep(max(0.0, due - time.perf_counter()))
            if k and k % epoch_every == 0:
                t = time.perf_counter()
                for part in parts:
                    part.snapshot()
                epoch_waits.append(time.perf_counter() - t)
            t = time.perf_counter()
            for part, share in zip(parts, shares, strict=True):
                part.write_batch(
                    [SnapshotBatch(tuple(share), tally=FoldTally(applied=len(share), duplicates=0, too_late=0))]
                )
            handovers.append(time.perf_counter() - t)
        t = time.perf_counter()
        for part in parts:
            part.snapshot()
        epoch_waits.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - started
        for part in parts:
            part.close()
        time.sleep(0.5 if "replica" in readers else 0)  # the last publish reaches the replica
        (control / "stop").touch()
        outputs: dict[str, Any] = {}
        for name, reader in zip(readers, processes, strict=True):
            out, err = reader.communicate(timeout=120)
            if reader.returncode != 0:
                msg = f"the {name} reader process failed: {err}"
                raise SystemExit(msg)
            outputs[name] = json.loads(out.strip().splitlines()[-1])
    finally:
        (control / "stop").touch()
        for reader in processes:
            if reader.poll() is None:
                reader.kill()
                reader.wait()
        if catalog == "postgres":
            subprocess.run([sys.executable, str(SERVER), "down", "--dir", str(pg_home)], check=False)
        if work is None:
            shutil.rmtree(home, ignore_errors=True)

    seconds = [s for _, s in publishes]
    publish_p50, publish_max = _pct(seconds, 0.5), max(seconds) if seconds else None
    handover_max = max(handovers)
    paused = handover_max >= PAUSE_SHARE * period
    result: dict[str, Any] = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "duckdb": version("duckdb"),
            "bytewax": version("bytewax"),
            # Other work on the machine shows in every figure: the 1-minute load average.
            "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2),
        },
        "params": {
            "positions": build["positions"],
            "sites": build["sites"],
            "changes": changes,
            "intervals": intervals,
            "period_s": period,
            "epoch_every": epoch_every,
            "writers": writers,
            "catalog": catalog,
        },
        "build": build,
        "publish_p50_s": publish_p50,
        "publish_max_s": publish_max,
        "publishes": len(seconds),
        "maintenance_runs": [(reason, round(took, 3)) for reason, took in commits.maintenance],
        "writer_seconds_per_interval": round((sum(seconds) + sum(t for _, t in commits.maintenance)) / intervals, 3),
        "handover_p50_ms": _ms(_pct(handovers, 0.5)),
        "handover_max_ms": _ms(handover_max),
        "epoch_wait_p50_ms": _ms(_pct(epoch_waits, 0.5)),
        "epoch_wait_max_ms": _ms(max(epoch_waits)),
        "fold_paused": paused,
        "published_changes_per_s": round(changes * intervals / elapsed),
    }
    interval_text = f"{changes:,} changes into {build['positions']:,}"
    result["rows"] = [
        {
            "figure": f"publish p50 ({interval_text})",
            "value": round(publish_p50 or 0, 3),
            "unit": "s",
            "target": f"<= {PUBLISH_TARGET_S:g} s",
            "met": publish_p50 is not None and publish_p50 <= PUBLISH_TARGET_S,
            "note": f"{catalog}, {writers} writer(s), {len(seconds)} publishes",
        },
        {
            "figure": "publish max",
            "value": round(publish_max or 0, 3),
            "unit": "s",
            "target": f"<= {PUBLISH_TARGET_S:g} s",
            "met": publish_max is not None and publish_max <= PUBLISH_TARGET_S,
        },
        {
            "figure": "writer time per interval (publish + maintenance)",
            "value": result["writer_seconds_per_interval"],
            "unit": "s",
            "target": f"<= {PUBLISH_TARGET_S:g} s",
            "met": result["writer_seconds_per_interval"] <= PUBLISH_TARGET_S,
            "note": (
                f"{len(commits.maintenance)} maintenance runs "
                f"({', '.join(f'{reason} {took:.1f} s' for reason, took in commits.maintenance) or 'none'}): "
                "what keeps up with one interval a period"
            ),
        },
        {
            "figure": "fold paused by a publish (handover max)",
            "value": result["handover_max_ms"],
            "unit": "ms",
            "target": "not paused",
            "met": not paused,
            "note": (
                f"handover p50 {result['handover_p50_ms']} ms; epoch close waits max {result['epoch_wait_max_ms']} ms"
            ),
        },
    ]
    if "ducklake" in outputs:
        result["rows"].append(_ducklake_lookups(result, outputs["ducklake"], think))
    if "replica" in outputs:
        result["rows"].extend(_replica_lookups(result, outputs["replica"], commits.committed, think))
    return result


def _ducklake_lookups(result: dict[str, Any], lookups: dict[str, Any], think: float) -> dict[str, Any]:
    busy, idle = lookups["busy"], lookups["idle"]
    p99 = _pct(busy, 0.99)
    result.update(
        {
            "lookup_idle_p50_ms": _ms(_pct(idle, 0.5)),
            "lookup_idle_p99_ms": _ms(_pct(idle, 0.99)),
            "lookup_p50_ms": _ms(_pct(busy, 0.5)),
            "lookup_p99_ms": _ms(p99),
            "lookup_max_ms": _ms(max(busy) if busy else None),
            "lookups": len(busy),
            "lookups_not_one_row": lookups["torn"],
        }
    )
    return {
        "figure": "point lookup p99 during publishes (other process)",
        "value": result["lookup_p99_ms"],
        "unit": "ms",
        "target": f"<= {LOOKUP_TARGET_MS:g} ms",
        "met": p99 is not None and p99 * 1000 <= LOOKUP_TARGET_MS,
        "note": (
            f"SnapshotReader (a DuckLake query each): p50 {result['lookup_p50_ms']} ms, {len(busy):,} lookups "
            f"{think * 1000:g} ms apart; idle p99 {result['lookup_idle_p99_ms']} ms"
            + (f"; {len(lookups['torn'])} returned a key twice or not at all (torn reads)" if lookups["torn"] else "")
        ),
    }


def _replica_lookups(
    result: dict[str, Any], replica: dict[str, Any], committed: Sequence[tuple[int, float]], think: float
) -> list[dict[str, Any]]:
    busy = replica["busy"]
    p99 = _pct(busy, 0.99)
    # A publish is in the replica once a refresh reached its snapshot id (or a later one).
    lags = []
    for sid, at in committed:
        reached = [when for got, when in replica["refreshed"] if got >= sid]
        if reached:
            lags.append(min(reached) - at)
    result.update(
        {
            "replica_lookup_idle_p99_ms": _ms(_pct(replica["idle"], 0.99)),
            "replica_lookup_p50_ms": _ms(_pct(busy, 0.5)),
            "replica_lookup_p99_ms": _ms(p99),
            "replica_lookup_max_ms": _ms(max(busy) if busy else None),
            "replica_lookups": len(busy),
            "replica_lag_p50_ms": _ms(_pct(lags, 0.5)),
            "replica_lag_max_ms": _ms(max(lags) if lags else None),
            "replica_publishes_seen": f"{len(lags)} of {len(committed)}",
            "replica_load_s": round(replica["load_seconds"], 2),
            "replica_rss_bytes_per_position": round(replica["rss_bytes"] / max(1, replica["positions"])),
        }
    )
    return [
        {
            "figure": "point lookup p99 from a PositionReplica (other process)",
            "value": result["replica_lookup_p99_ms"],
            "unit": "ms",
            "target": f"<= {LOOKUP_TARGET_MS:g} ms",
            "met": p99 is not None and p99 * 1000 <= LOOKUP_TARGET_MS,
            "note": (
                f"p50 {result['replica_lookup_p50_ms']} ms, {len(busy):,} lookups {think * 1000:g} ms apart; "
                f"idle p99 {result['replica_lookup_idle_p99_ms']} ms; {result['replica_rss_bytes_per_position']} B "
                f"RSS/position, loaded in {result['replica_load_s']} s"
            ),
        },
        {
            "figure": "publish commit -> in the replica (max)",
            "value": result["replica_lag_max_ms"],
            "unit": "ms",
            "target": "reported",
            "met": bool(lags) and len(lags) == len(committed),
            "note": f"p50 {result['replica_lag_p50_ms']} ms, {result['replica_publishes_seen']} publishes",
        },
    ]


def report(result: dict[str, Any]) -> str:
    rows = [
        (
            r["figure"],
            r["value"],
            r["unit"],
            r["target"],
            "yes" if r["met"] else "NO",
            r.get("note", ""),
        )
        for r in result["rows"]
    ]
    return render_table(("figure", "value", "unit", "target", "met", "note"), rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--positions", type=int, default=10_000_000, help="store size (default 10,000,000)")
    parser.add_argument("--changes", type=int, default=100_000, help="changed positions per interval")
    parser.add_argument(
        "--intervals", type=int, default=30, help="intervals published (default 30: maintenance runs among them)"
    )
    parser.add_argument("--period", type=float, default=1.0, help="seconds between intervals (the snapshot interval)")
    parser.add_argument("--epoch-every", type=int, default=5, help="intervals per epoch (snapshot() drains)")
    parser.add_argument("--writers", type=int, default=1)
    parser.add_argument("--catalog", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--quick", action="store_true", help="1,000,000 positions, 5 intervals")
    parser.add_argument("--work", type=Path, help="keep the store here (default: a temporary directory)")
    parser.add_argument(
        "--readers",
        default=",".join(READERS),
        help="lookup processes beside the publishes: ducklake (a DuckLake query each), replica (PositionReplica)",
    )
    parser.add_argument("--think", type=float, default=0.005, help="seconds between a reader's lookups")
    parser.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    args = parser.parse_args(argv)
    result = run(
        positions=args.positions,
        changes=args.changes,
        intervals=args.intervals,
        period=args.period,
        epoch_every=args.epoch_every,
        writers=args.writers,
        catalog=args.catalog,
        quick=args.quick,
        work=args.work,
        readers=[name.strip() for name in args.readers.split(",") if name.strip()],
        think=args.think,
    )
    path = write_result("snapshot", result)
    if args.json:
        print(json.dumps(result))
    else:
        print(report(result))
        load = result["machine"]
        print(f"(load average {load['load_before']} -> {load['load_after']} on {load['cores']} cores)")
        print(f"(results: {path.relative_to(REPO)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
