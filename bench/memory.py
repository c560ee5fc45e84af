"""Resident memory per tracked position, and what dominates it.

1. Event files: one RECEIVED event per (site, sku) position, 5,000 skus a site
   (`ST-0000|SKU-000000`...), as JSON lines.
2. RSS: the real flow (`omni-ledger run --source file:PATH --follow`, defaults otherwise:
   recovery on, snapshots every second) over N positions, then over a baseline of 1,000;
   when the store's snapshot_info says every event is applied, VmRSS of the flow process
   (/proc/PID/status) is read, then the flow is stopped (Ctrl-C). Bytes per position =
   (RSS(N) - RSS(baseline)) / (N - baseline).
3. Breakdown: the same on a smaller sample and baseline under bench/memprobe.py
   (tracemalloc and a census of live objects by type), subtracted the same way: Python
   heap bytes per position, the source lines and object types that hold them. What RSS
   holds beyond the Python heap is native: Bytewax's Rust state, DuckDB, allocator slack.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, rss_bytes, say, spawn_omni, stop_process, tail
from ledger.contract import event_to_json_bytes
from ledger.events import EventType, InventoryEvent

__all__ = ["measure_memory"]

SKUS_PER_SITE = 5_000
BASELINE = 1_000


def _event(i: int, start: int) -> InventoryEvent:
    return InventoryEvent(
        event_id=f"mem-{i}", type=EventType.RECEIVED, occurred_at=start + i // 1_000,
        site_id=f"ST-{i // SKUS_PER_SITE:04d}", sku=f"SKU-{i % SKUS_PER_SITE:06d}", qty=10, source="ERP",
    )  # fmt: skip


def event_file(path: Path, positions: int) -> Path:
    """One RECEIVED event per position, times a minute back from now (the flow runs on the wall clock).

    Lines come from a template (the contract's encoder costs ~40 us an event: minutes for
    5,000,000); the first is checked against `event_to_json_bytes`, so they cannot drift apart.
    """
    start = time.time_ns() // 1_000_000 - 60_000
    template = (
        '{"event_id":"mem-%d","type":"RECEIVED","occurred_at":%d,"site_id":"ST-%04d","sku":"SKU-%06d","qty":10,'
        '"ref":null,"to_site_id":null,"eta":null,"expires_at":null,"price":null,"lead_time_days":null,'
        '"source":"ERP","fulfilment":null}\n'
    )

    def line(i: int) -> str:
        return template % (i, start + i // 1_000, i // SKUS_PER_SITE, i % SKUS_PER_SITE)

    expected = event_to_json_bytes(_event(0, start)).decode() + "\n"
    if line(0) != expected:
        msg = f"bench/memory.py: the event template is out of date:\n{line(0)}expected\n{expected}"
        raise RuntimeError(msg)
    with path.open("w") as out:
        for chunk in range(0, positions, 10_000):
            out.write("".join(line(i) for i in range(chunk, min(positions, chunk + 10_000))))
    return path


def _applied(store: Path, reader: Any) -> tuple[Any, int]:
    from adapters.snapshot_store import SnapshotReader

    if reader is None:
        if not (store / "catalog.sqlite").exists():
            return None, 0
        try:
            reader = SnapshotReader.open(store)
        except Exception:  # not there yet: try again
            return None, 0
    try:
        latest = reader.latest() or {}
    except Exception:  # a publish in the way: try again
        return reader, 0
    return reader, int(latest.get("events_applied") or 0)


def run_once(work: Path, events: Path, count: int, *, probe: bool, timeout: float) -> dict[str, Any]:
    """The flow over `events` (`count` lines) until all are applied; its RSS, or the memprobe breakdown."""
    store = work / "store"
    args = ["run", "--source", f"file:{events}", "--follow", "--quiet", "--log-format", "json"]
    args += ["--snapshot-dir", str(store)]
    log = work / "flow.log"
    out = work / "breakdown.json"
    trigger = work / "trigger"
    env = dict(os.environ)
    if probe:
        proc = spawn_omni(env, [str(out), str(trigger), "--", *args], log, module="bench.memprobe")
    else:
        proc = spawn_omni(env, args, log)
    reader = None
    applied = 0
    started = time.monotonic()
    result: dict[str, Any] = {"positions": count}
    try:
        while applied < count:
            if proc.poll() is not None:
                result["error"] = f"the flow exited {proc.returncode}: {tail(log.with_name(log.name + '.err'))}"
                return result
            if time.monotonic() - started > timeout:
                result["error"] = f"{applied:,} of {count:,} events applied after {timeout:.0f} s"
                return result
            time.sleep(0.5)
            reader, applied = _applied(store, reader)
        result["seconds_to_apply"] = time.monotonic() - started
        time.sleep(1.0)  # the last publish's buffers settle
        if probe:
            trigger.touch()
            deadline = time.monotonic() + max(60.0, timeout / 2)
            while not Path(f"{out}.done").exists() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.5)
            if not Path(f"{out}.done").exists():
                result["error"] = "the memory probe did not answer"
                return result
            result["breakdown"] = json.loads(out.read_text())
        result["rss_bytes"], result["hwm_bytes"] = rss_bytes(proc.pid)
    finally:
        if reader is not None:
            reader.close()
        stop_process(proc, grace=120)
    return result


def _delta(big: dict[str, Any], small: dict[str, Any], per: int) -> dict[str, Any]:
    """Breakdown of `big` minus `small`, per position."""
    types: list[dict[str, Any]] = []
    base_types = small["by_type"]
    for name, (count, size) in big["by_type"].items():
        base_count, base_size = base_types.get(name, (0, 0))
        if size - base_size > 0:
            types.append(
                {
                    "type": name,
                    "objects_per_position": (count - base_count) / per,
                    "bytes_per_position": (size - base_size) / per,
                }
            )
    types.sort(key=lambda t: -t["bytes_per_position"])
    base_lines = {line["where"]: line["bytes"] for line in small["by_line"]}
    repo = f"{REPO}/"
    lines = [
        {
            "where": line["where"].removeprefix(repo),
            "bytes_per_position": (line["bytes"] - base_lines.get(line["where"], 0)) / per,
        }
        for line in big["by_line"]
    ]
    lines.sort(key=lambda t: -t["bytes_per_position"])
    return {
        "python_heap_bytes_per_position": (big["traced_bytes"] - small["traced_bytes"]) / per,
        "census_bytes_per_position": sum(t["bytes_per_position"] for t in types),
        "by_type": types[:12],
        "by_line": lines[:12],
    }


def measure_memory(work: Path, positions: int, sample: int, timeout: float) -> dict[str, Any]:
    """RSS per position at `positions`, and a tracemalloc breakdown at `sample` (see the module docstring)."""
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"positions": positions, "baseline_positions": BASELINE, "sample_positions": sample}
    say(f"  writing event files ({positions:,}, {sample:,} and {BASELINE:,} positions)...")
    files = {n: event_file(work / f"positions-{n}.jsonl", n) for n in {positions, sample, BASELINE}}

    say(f"  RSS: the flow over {BASELINE:,} positions (baseline)...")
    base = run_once(work / "rss-base", files[BASELINE], BASELINE, probe=False, timeout=120)
    say(f"  RSS: the flow over {positions:,} positions...")
    full = run_once(work / "rss-full", files[positions], positions, probe=False, timeout=120 + positions / 2_000)
    result["rss_runs"] = {"baseline": base, "full": full}
    if "error" in base or "error" in full:
        result["error"] = base.get("error") or full.get("error")
    else:
        result["rss_bytes_per_position"] = (full["rss_bytes"] - base["rss_bytes"]) / (positions - BASELINE)
        result["rss_bytes"] = full["rss_bytes"]
        result["seconds_to_apply"] = full["seconds_to_apply"]

    say(f"  breakdown: tracemalloc over {sample:,} positions and over {BASELINE:,}...")
    pbase = run_once(work / "probe-base", files[BASELINE], BASELINE, probe=True, timeout=180)
    psample = run_once(work / "probe-sample", files[sample], sample, probe=True, timeout=180 + sample / 500)
    if "error" in pbase or "error" in psample:
        result["breakdown_error"] = pbase.get("error") or psample.get("error")
    else:
        per = sample - BASELINE
        result["breakdown"] = _delta(psample["breakdown"], pbase["breakdown"], per)
        result["breakdown"]["rss_bytes_per_position_under_tracemalloc"] = (
            psample["rss_bytes"] - pbase["rss_bytes"]
        ) / per
    for path in files.values():
        path.unlink(missing_ok=True)
    return result
