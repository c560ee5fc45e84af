"""`make bench-serve`: latency and throughput of the HTTP API over a 20M-position snapshot.

1. Build (or reuse) a snapshot store of sites x skus positions (default 1,000 x 20,000)
   with a generated network of those sites, inbound lines, seller offers and the
   stores' appointment slots (bench/serve_store.py, bench/serve_network.py), cached
   under var/bench-serve/ by its parameters.
2. Start the real server, `omni_ledger.serving.serve(settings)` (uvicorn, one process),
   on a free loopback port, and wait for /health. `--modes duckdb,memory` runs the whole
   bench once per mode, side by side: `duckdb` queries DuckLake per request (as before
   the read model), `memory` answers from the read model (adapters/snapshot_store/read_model.py).
   `--before DIR` runs that checkout's server too, and `--rounds N` all of it N times, the
   checkouts' order alternating each round.
   With `--publish-per-s N` (default 100,000) the run uses a copy of the store and
   another process (bench/serve_store.py) publishes N changed positions every second
   through `SnapshotWriter.publish`, logging each commit's snapshot id and time.
3. For each scenario, a load generator in another process (bench/serve_load.py):
   `--clients` keep-alive connections in a closed loop, `--warmup` seconds unmeasured,
   then `--seconds` measured: requests, requests/s, p50/p90/p99/max latency, non-2xx
   answers by status, and the server's CPU time per request.

Prints one table (`--json`: the JSON instead) and writes the JSON under bench/results/
(git-ignored). Client and server share the machine's cores: figures from one run are
comparable with each other. Not a test: nothing asserts a timing.

`publish_to_visible_p99_ms`: for each snapshot committed during a measured scenario,
the first answer naming it or a newer one, minus its commit time (both wall clock,
one machine). `read_model_bytes_per_position`: measured, the resident memory of
the server processes at the end of the run less what each held just before its read
model's first load (GET /health), divided by the positions (so the copies refreshes
made and DuckDB's buffers count); `read_model_array_bytes_per_position`, the model's own
count of its arrays, beside it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.common import write_result
from bench.cores import cpu_seconds
from bench.serve_load import SCENARIOS
from bench.serve_store import StoreBuild, copy_for_run, open_or_build, slot_window
from omni_ledger.table import render_table

REPO = Path(__file__).resolve().parents[1]

# The server process: the real `serve`, with a snapshot age limit no static store reaches.
_SERVER = """
import os, sys
# A checkout from before a dependency was added runs without it (uvicorn would pick it up).
for name in filter(None, os.environ.get("BENCH_SERVE_HIDE", "").split(",")):
    sys.modules[name] = None
from datetime import timedelta
from pathlib import Path
from omni_ledger.config import ServeSettings, Settings, SnapshotSettings
from omni_ledger.serving import serve
store, network, port, mode, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
try:
    serve(Settings(
        snapshots=SnapshotSettings(dir=Path(store)),
        serve=ServeSettings(host="127.0.0.1", port=port, network=Path(network), max_snapshot_age=timedelta(days=3650)),
    ), read_model=mode == "memory", workers=workers)
except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it stopped on; `omni-ledger serve` catches it too
    pass
"""


_NEW_DEPENDENCIES = ""
"""Installed for this code, hidden from a `--before` checkout's server (comma-separated modules it
did not have). Empty now: main has uvloop, httptools and orjson, and never imports numpy."""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    build: StoreBuild, port: int, log: Path, mode: str, workers: int, repo: Path = REPO
) -> subprocess.Popen[bytes]:
    """The server of `repo`'s code (another checkout, for a before/after in one run) on `build`'s store."""
    env = dict(os.environ)
    if repo != REPO:
        env["BENCH_SERVE_HIDE"] = _NEW_DEPENDENCIES
    with log.open("wb") as out:
        return subprocess.Popen(
            # `python -c` puts the working directory first on sys.path: `repo`'s packages are imported.
            [sys.executable, "-c", _SERVER, build.directory, build.network, str(port), mode, str(workers)],
            cwd=repo,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_healthy(server: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> dict[str, object]:
    """The /health body once it says ok; exits with the server's log if it dies or never gets there."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited with {server.returncode}; its log ({log}):\n{log.read_text()[-4000:]}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            body = json.loads(response.read())
            if response.status == 200:
                assert isinstance(body, dict)
                return body
            last = f"{response.status} {body}"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            last = type(exc).__name__
        finally:
            conn.close()
        time.sleep(0.2)
    sys.exit(f"the server was not healthy within {timeout:.0f} s (last: {last}); its log: {log}")


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident memory (Linux /proc), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def tree_rss_mb(pid: int) -> float:
    """Resident memory now of a process and its children (uvicorn's workers), in MB (Linux /proc)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if status.parent.name == str(pid) or fields.get("PPid", "").strip() == str(pid):
            total += int(fields.get("VmRSS", "0 kB").split()[0])
    return total / 1024


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)  # uvicorn shuts down cleanly on SIGINT
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def run_scenario(args: argparse.Namespace, scenario: str, port: int, server_pid: int) -> dict[str, object]:
    say(f"{scenario}: {args.warmup:g} s warm-up, then {args.seconds:g} s with {args.clients} clients...")
    began, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [
            sys.executable, "-m", "bench.serve_load", "--port", str(port), "--scenario", scenario,
            "--skus", str(args.skus), "--seconds", str(args.seconds), "--warmup", str(args.warmup),
            "--clients", str(args.clients), "--radius-km", str(args.radius_km), "--seed", str(args.seed),
            "--server-pid", str(server_pid),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if out.returncode != 0:
        sys.exit(f"the load generator failed on {scenario}:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    # The load generator shares the machine's cores with the server and the publisher: how many it took.
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = ended.ru_utime + ended.ru_stime - children.ru_utime - children.ru_stime
    result["load_generator_cores"] = round(used / (time.perf_counter() - began), 2)
    return result


def _refresh_line(refreshes: object) -> str:
    """The server's own record of its refreshes (GET /health): their wall against their CPU."""
    if not isinstance(refreshes, dict) or not refreshes.get("count"):
        return "no refresh of changes recorded; "
    parts = [f"{refreshes['count']} refreshes"]
    for name in ("wall_s", "cpu_s", "visible_s"):
        figures = refreshes.get(name)
        if isinstance(figures, dict):
            parts.append(f"{name[:-2]} p50/p99 {figures['p50']}/{figures['p99']} s")
    return ", ".join(parts) + "; "


def _errors(result: dict[str, object]) -> str:
    statuses = result["statuses"]
    assert isinstance(statuses, dict)
    bad = {status: n for status, n in statuses.items() if not status.startswith("2")}
    if not bad:
        return "0"
    return f"{sum(bad.values())} (" + ", ".join(f"{status} x{n}" for status, n in sorted(bad.items())) + ")"


def _answers(result: dict[str, object]) -> str:
    answers = result.get("answers")
    assert isinstance(answers, dict)
    return ", ".join(f"{value:,.1f} {name.replace('_', ' ')}" for name, value in answers.items()) or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=1_000)
    parser.add_argument("--skus", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--slot-days", type=int, default=14, help="days of appointment slots opened in the store")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each scenario")
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive connections")
    parser.add_argument("--radius-km", type=float, default=50.0)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--rebuild", action="store_true", help="build the store again even if cached")
    parser.add_argument("--json", action="store_true", help="print the JSON result instead of the table")
    parser.add_argument(
        "--modes", default="memory", help="comma-separated: memory (read model), duckdb (a query per request)"
    )
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (each with its read model)")
    parser.add_argument(
        "--before", type=Path, default=None,
        help="another checkout (e.g. main's): each mode runs its server first, then ours, side by side",
    )  # fmt: skip
    parser.add_argument(
        "--publish-per-s", type=int, default=100_000, help="changed positions published a second (0: none)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of every mode (and --before), their order alternating"
    )
    args = parser.parse_args()
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")

    build = open_or_build(
        sites=args.sites, skus=args.skus, seed=args.seed, slot_days=args.slot_days, rebuild=args.rebuild
    )
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"memory", "duckdb"}:
        parser.error(f"--modes takes memory and/or duckdb, got {args.modes!r}")
    runs = {}
    checkouts: list[tuple[str, Path]] = ([("before:", args.before.resolve())] if args.before else []) + [("", REPO)]
    for r in range(args.rounds):
        # Each round the other checkout first: the machine's load moves under a run.
        suffix = "" if r == 0 else f":r{r}"
        for mode in modes:
            for prefix, repo in checkouts if r % 2 == 0 else checkouts[::-1]:
                runs[f"{prefix}{mode}{suffix}"] = run_mode(args, build, mode, scenarios, repo=repo)
    main_run = runs[modes[-1]]
    machine = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "duckdb": version("duckdb"),
        "fastapi": version("fastapi"),
        "uvicorn": version("uvicorn"),
        "platform": platform.platform(),
    }
    result: dict[str, object] = {
        "at": datetime.now(UTC).isoformat(),
        "machine": machine,
        "params": vars(args) | {"scenarios": scenarios, "before": None if args.before is None else str(args.before)},
        "store": asdict(build),
        "mode": modes[-1],
        "positions": build.positions,
        "publishing": main_run["publishing"],
        "publish_to_visible_p99_ms": main_run["publish_to_visible_p99_ms"],
        "read_model_bytes_per_position": main_run["read_model_bytes_per_position"],
        "server": main_run["server"],
        "scenarios": main_run["scenarios"],
        "modes": runs,
    }
    path = write_result("serve", result)
    if args.json:
        print(json.dumps(result))
        return
    print(report(result, build, path))


def run_mode(
    args: argparse.Namespace, build: StoreBuild, mode: str, scenarios: list[str], repo: Path = REPO
) -> dict[str, Any]:
    """Serve the store in one mode, run every scenario against it while publishes land, and summarise."""
    publishing = args.publish_per_s > 0
    store = copy_for_run(build) if publishing else build
    home = Path(build.directory).parent
    tag = mode if repo == REPO else f"{mode}-before"
    log = home / f"server-{tag}.log"
    commits = home / f"publishes-{tag}.log"
    commits.write_text("")
    publisher = None
    if publishing:
        say(f"publishing {args.publish_per_s:,} changed positions a second into {store.directory}...")
        publisher = subprocess.Popen(
            [
                sys.executable, "-m", "bench.serve_store", "--dir", store.directory, "--network", build.network,
                "--skus", str(build.skus), "--per-second", str(args.publish_per_s), "--log", str(commits),
                "--seed", str(args.seed),
            ],
            cwd=REPO,
        )  # fmt: skip
    port = free_port()
    say(f"[{mode}] starting the server on 127.0.0.1:{port} (log: {log.relative_to(REPO)})...")
    started = time.perf_counter()
    server = start_server(store, port, log, mode, args.workers, repo)
    publisher_cpu: tuple[float, float] | None = None
    try:
        health = wait_healthy(server, port, log, timeout=900)
        ready_s = time.perf_counter() - started
        if publisher is not None:
            publisher_cpu = (time.perf_counter(), cpu_seconds(publisher.pid) or 0.0)
        results = [run_scenario(args, scenario, port, server.pid) for scenario in scenarios]
        if publisher is not None and publisher_cpu is not None:
            # The cores the publisher used while the scenarios ran (its load before, the store's copy, left out).
            publisher_cpu = (
                time.perf_counter() - publisher_cpu[0],
                (cpu_seconds(publisher.pid) or 0.0) - publisher_cpu[1],
            )
        health = wait_healthy(server, port, log, timeout=60)
        rss = peak_rss_mb(server.pid)
        tree_rss = tree_rss_mb(server.pid)
    finally:
        stop(server)
        if publisher is not None:
            publisher.terminate()
            publisher.wait(timeout=30)
    published = _commits(commits)
    model = health.get("read_model")
    per_position = arrays_per_position = None
    if isinstance(model, dict) and model.get("positions"):
        # Each worker holds its own copy: the figures are for all of them together. Measured:
        # how much the server's resident memory grew over its first load (allocator and DuckDB
        # buffers included), as the model reports it; beside it the model's own count of its arrays.
        arrays_per_position = round(int(model["bytes"]) * args.workers / int(model["positions"]), 1)
        if model.get("resident_before_load_bytes"):
            # The servers' resident memory at the end of the run, less what each held before loading.
            grown = tree_rss * 1024 * 1024 - int(model["resident_before_load_bytes"]) * args.workers
            per_position = round(grown / int(model["positions"]), 1)
    return {
        "mode": mode,
        "code": str(repo),
        "scenarios": results,
        "publishing": publishing and all(_published_during(r, published) for r in results),
        "publishes": {
            "count": len(published),
            "changes_per_publish": args.publish_per_s,
            "mean_seconds": round(sum(p[2] for p in published) / len(published), 3) if published else None,
        },
        "publish_to_visible_p99_ms": _visible_p99(results, published),
        # Each publish's own delay, to set beside the server's refreshes (`refreshes`).
        "publish_to_visible_ms": _visible(results, published),
        "publisher_cores": None if publisher_cpu is None else round(publisher_cpu[1] / publisher_cpu[0], 2),
        "refreshes": model.get("refreshes") if isinstance(model, dict) else None,
        "read_model_bytes_per_position": per_position,
        "read_model_array_bytes_per_position": arrays_per_position,
        "server": {
            "ready_s": ready_s, "peak_rss_mb": rss, "rss_mb_all_processes": tree_rss, "workers": args.workers,
            "health": health, "log": str(log),
        },
    }  # fmt: skip


def _commits(path: Path) -> list[tuple[int, int, float]]:
    """(snapshot id, commit wall ms, seconds the publish took) of every publish logged."""
    found = []
    for line in path.read_text().splitlines():
        sid, at, _, took = line.split()
        if sid != "None":
            found.append((int(sid), int(at), float(took)))
    return found


def _published_during(result: dict[str, Any], published: list[tuple[int, int, float]]) -> bool:
    start = int(result["measured_from_ms"])
    end = start + round(float(result["seconds"]) * 1000)
    return any(start <= at <= end for _, at, _ in published)


def _visible_p99(results: list[dict[str, Any]], published: list[tuple[int, int, float]]) -> float | None:
    """p99 over the publishes committed in measured windows of (first answer naming it or newer) - commit."""
    delays = sorted(delay for _, _, delay in _visible(results, published))
    if not delays:
        return None
    return float(delays[max(0, min(len(delays) - 1, round(0.99 * len(delays) + 0.5) - 1))])


def _visible(results: list[dict[str, Any]], published: list[tuple[int, int, float]]) -> list[tuple[int, int, int]]:
    """(snapshot id, commit wall ms, ms to the first answer naming it or newer) of each publish in a measured window."""
    seen: list[tuple[int, int]] = sorted((int(sid), at) for r in results for sid, at in r["first_seen_ms"].items())
    found = []
    for r in results:
        start = int(r["measured_from_ms"])
        end = start + round(float(r["seconds"]) * 1000)
        for sid, at, _ in published:
            if start <= at <= end:
                later = [when for named, when in seen if named >= sid and when >= at]
                if later:
                    found.append((sid, at, min(later) - at))
    return found


def report(result: dict[str, Any], build: StoreBuild, path: Path) -> str:
    columns = (
        "mode",
        "scenario",
        "requests",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "errors (non-2xx)",
        "server CPU ms/req",
    )
    runs: dict[str, dict[str, Any]] = result["modes"]
    machine = result["machine"]
    rows = [
        [
            mode, r["scenario"], r["requests"], r["requests_per_s"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"],
            _errors(r), r.get("server_cpu_ms_per_request"),
        ]
        for mode, run in runs.items()
        for r in run["scenarios"]
    ]  # fmt: skip
    first, last = slot_window(build)
    cached = f"reused from {Path(build.directory).parent.relative_to(REPO)}, " if build.reused else ""
    lines = [render_table(columns, rows), ""]
    if any(r["requests"] < 100 for run in runs.values() for r in run["scenarios"]):
        lines.append("(under 100 requests, p99 is about the max: run longer with --seconds for a real tail)")
    for mode, run in runs.items():
        server = run["server"]
        rss = server["peak_rss_mb"]
        publishes = run["publishes"]
        lines.append(
            f"[{mode}] {server['workers']} worker(s), healthy {server['ready_s']:.1f} s after start, "
            + (f"peak RSS {rss:,.0f} MB; " if isinstance(rss, float) else "peak RSS unknown; ")
            + f"RSS of all server processes at the end {server['rss_mb_all_processes']:,.0f} MB; "
            + f"publishing during every scenario: {run['publishing']} ({publishes['count']} publishes of "
            f"{publishes['changes_per_publish']:,}, {publishes['mean_seconds']} s each); "
            f"publish to visible p99: {run['publish_to_visible_p99_ms']} ms; "
            f"publisher {run.get('publisher_cores')} cores, load generator "
            + "/".join(str(r.get("load_generator_cores")) for r in run["scenarios"])
            + " cores; "
            + _refresh_line(run.get("refreshes"))
            + f"read model bytes per position: {run['read_model_bytes_per_position']} resident "
            f"({run.get('read_model_array_bytes_per_position')} in its arrays)"
        )
        lines.extend(
            f"  {r['scenario']}: {_answers(r)}; {r['mean_response_bytes'] / 1024:,.1f} KiB of JSON"
            for r in run["scenarios"]
            if r.get("mean_response_bytes") is not None
        )
    lines += [
        f"store: {build.sites:,} sites x {build.skus:,} skus = {build.positions:,} positions, "
        f"+ {build.appointment_positions:,} appointment-slot positions ({first:%Y-%m-%d} to {last:%Y-%m-%d}), "
        f"{build.inbound_lines:,} inbound lines, {build.offers:,} offers; {build.size_bytes / 1e6:,.0f} MB on disk; "
        f"{cached}built in {build.build_seconds:,.1f} s",
        f"network: {build.stores:,} stores ({build.appointment_stores:,} with appointments), {build.dcs} DCs, "
        f"{build.suppliers} suppliers, {build.sellers} sellers; {build.lanes:,} shuttle lanes, "
        f"{build.dropship:,} dropship routes, {build.carriers} carrier routes",
        f"machine: {machine['cores']} cores, Python {machine['python']}, duckdb {machine['duckdb']}, "
        f"fastapi {machine['fastapi']}, uvicorn {machine['uvicorn']}; results in {path.relative_to(REPO)}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
