"""`make bench-serve`: latency and throughput of the HTTP API over a 20M-position snapshot.

1. Build (or reuse) a snapshot store of sites x skus positions (default 1,000 x 20,000)
   with a generated network of those sites, inbound lines, seller offers and the
   stores' appointment slots (bench/serve_store.py, bench/serve_network.py), cached
   under var/bench-serve/ by its parameters.
2. Start the real server, `omni_ledger.serving.serve(settings)` (uvicorn, one process),
   on a free loopback port, and wait for /health.
3. For each scenario, a load generator in another process (bench/serve_load.py):
   `--clients` keep-alive connections in a closed loop, `--warmup` seconds unmeasured,
   then `--seconds` measured: requests, requests/s, p50/p90/p99/max latency, non-2xx
   answers by status, and the server's CPU time per request.

Prints one table (`--json`: the JSON instead) and writes the JSON under bench/results/
(git-ignored). Client and server share the machine's cores: figures from one run are
comparable with each other. Not a test: nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from bench.serve_load import SCENARIOS
from bench.serve_store import StoreBuild, open_or_build, slot_window
from omni_ledger.table import render_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

# The server process: the real `serve`, with a snapshot age limit no static store reaches.
_SERVER = """
import sys
from datetime import timedelta
from pathlib import Path
from omni_ledger.config import ServeSettings, Settings
from omni_ledger.serving import serve
store, network, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    serve(Settings(
        snapshot_dir=Path(store),
        serve=ServeSettings(host="127.0.0.1", port=port, network=Path(network), max_snapshot_age=timedelta(days=3650)),
    ))
except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it stopped on; `omni-ledger serve` catches it too
    pass
"""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(build: StoreBuild, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", _SERVER, build.directory, build.network, str(port)],
            cwd=REPO,
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
    return result


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
    args = parser.parse_args()
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")

    build = open_or_build(
        sites=args.sites, skus=args.skus, seed=args.seed, slot_days=args.slot_days, rebuild=args.rebuild
    )
    port = free_port()
    log = Path(build.directory).parent / "server.log"
    say(f"starting the server on 127.0.0.1:{port} (log: {log.relative_to(REPO)})...")
    started = time.perf_counter()
    server = start_server(build, port, log)
    try:
        health = wait_healthy(server, port, log, timeout=300)
        ready_s = time.perf_counter() - started
        results = [run_scenario(args, scenario, port, server.pid) for scenario in scenarios]
        rss = peak_rss_mb(server.pid)
    finally:
        stop(server)

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
        "params": vars(args) | {"scenarios": scenarios},
        "store": asdict(build),
        "server": {"ready_s": ready_s, "peak_rss_mb": rss, "health": health, "log": str(log)},
        "scenarios": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"serve-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result))
        return
    print(report(result, build, path))


def report(result: dict[str, object], build: StoreBuild, path: Path) -> str:
    columns = (
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
    scenarios = result["scenarios"]
    server = result["server"]
    machine = result["machine"]
    assert isinstance(scenarios, list)
    assert isinstance(server, dict)
    assert isinstance(machine, dict)
    rows = [
        [
            r["scenario"], r["requests"], r["requests_per_s"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"],
            _errors(r), r.get("server_cpu_ms_per_request"),
        ]
        for r in scenarios
    ]  # fmt: skip
    first, last = slot_window(build)
    cached = f"reused from {Path(build.directory).parent.relative_to(REPO)}, " if build.reused else ""
    rss = server["peak_rss_mb"]
    lines = [render_table(columns, rows), ""]
    if any(r["requests"] < 100 for r in scenarios):
        lines.append("(under 100 requests, p99 is about the max: run longer with --seconds for a real tail)")
    lines.append("answers (averages over the warm-up answers):")
    lines.extend(
        f"  {r['scenario']}: {_answers(r)}; {r['mean_response_bytes'] / 1024:,.1f} KiB of JSON" for r in scenarios
    )
    lines += [
        f"store: {build.sites:,} sites x {build.skus:,} skus = {build.positions:,} positions, "
        f"+ {build.appointment_positions:,} appointment-slot positions ({first:%Y-%m-%d} to {last:%Y-%m-%d}), "
        f"{build.inbound_lines:,} inbound lines, {build.offers:,} offers; {build.size_bytes / 1e6:,.0f} MB on disk; "
        f"{cached}built in {build.build_seconds:,.1f} s",
        f"network: {build.stores:,} stores ({build.appointment_stores:,} with appointments), {build.dcs} DCs, "
        f"{build.suppliers} suppliers, {build.sellers} sellers; {build.lanes:,} shuttle lanes, "
        f"{build.dropship:,} dropship routes, {build.carriers} carrier routes",
        f"server: one uvicorn process, healthy {server['ready_s']:.1f} s after start, "
        + (f"peak RSS {rss:,.0f} MB" if isinstance(rss, float) else "peak RSS unknown"),
        f"machine: {machine['cores']} cores, Python {machine['python']}, duckdb {machine['duckdb']}, "
        f"fastapi {machine['fastapi']}, uvicorn {machine['uvicorn']}; results in {path.relative_to(REPO)}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
