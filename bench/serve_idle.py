"""What an idle server's read model costs: its follower polling a store nobody publishes to.

`python -m bench.serve_idle [--store DIR] [--seconds 5] [--rounds 2] [--json]` opens the
read model on the store (default: the 1,000 x 2,000 `bench-serve` store), follows it every
50 ms, and reports the process's CPU over `--seconds` of idling as a share of a core and
how many refreshes the follower ran; each round measures the follower as it is (a poll
whose SQLite catalog files stat unchanged is skipped) and the follower refreshing at every
poll (the way before 2026-12-02), side by side in one process. That CPU is taken from the
requests on a 2-core server. Not a test: nothing asserts a timing.

`--http [--before /work/main]`: the whole server instead (`omni_ledger.serving.serve`, as
`make bench-serve` starts it, read model on, nothing published and no request), each
checkout's in turn per round (`--before`'s first): the server process's CPU over
`--seconds` once it is healthy, as a share of a core. Counts every thread of the idle
server: the read model's follower and the store watch (`ServingStore`) both poll.
`--publish-per-s N` (with `--sites`/`--skus` for the store) publishes into a copy of the store
meanwhile, as `make bench-serve` does: the server's CPU with publishes landing and no request,
the share of a core its refreshes take from the requests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

from adapters.snapshot_store.read_model import ReadModel
from bench.common import REPO, say

__all__ = ["measure_idle"]

DEFAULT_STORE = REPO / "var" / "bench-serve" / "1000x2000-seed1-slots14d-v1" / "store"


def _idle(store: Path, seconds: float, *, stat_first: bool) -> dict[str, Any]:
    with (
        mock.patch.object(ReadModel, "_catalog_marker", return_value=None)
        if not stat_first
        else contextlib.nullcontext()
    ):
        model = ReadModel.open(store)
        try:
            model.follow(every=0.05)
            time.sleep(1.0)  # the first poll's refresh is done
            cpu, wall, refreshes = time.process_time(), time.perf_counter(), model.follower_refreshes
            time.sleep(seconds)
            share = (time.process_time() - cpu) / (time.perf_counter() - wall)
            return {
                "follower": "stat first" if stat_first else "refresh every poll",
                "cpu_share_of_a_core": round(share, 4),
                "refreshes": model.follower_refreshes - refreshes,
                "seconds": seconds,
            }
        finally:
            model.close()


def measure_idle(store: Path, seconds: float, rounds: int) -> list[dict[str, Any]]:
    """Each round: the follower refreshing at every poll, then as it is."""
    runs = []
    for round_ in range(rounds):
        for stat_first in (False, True):
            found = _idle(store, seconds, stat_first=stat_first)
            found["round"] = round_ + 1
            say(
                f"  round {round_ + 1}, {found['follower']}: {found['cpu_share_of_a_core']:.1%} of a core, "
                f"{found['refreshes']} refreshes in {seconds:.0f} s"
            )
            runs.append(found)
    return runs


def measure_idle_http(
    checkouts: list[Path],
    seconds: float,
    rounds: int,
    *,
    sites: int = 1_000,
    skus: int = 2_000,
    publish_per_s: int = 0,
) -> list[dict[str, Any]]:
    """Each round, each checkout's server started on the bench store, left idle, its CPU measured.

    With `publish_per_s`, on a copy of the store that another process publishes that many
    changed positions a second into (as `bench.serve` does): the server's CPU with no request
    is then what following the publishes costs it (the read model's refreshes, the store watch).
    """
    from bench.serve import free_port, start_server, stop, wait_healthy
    from bench.serve_load import _cpu_seconds
    from bench.serve_store import copy_for_run, open_or_build

    build = open_or_build(sites=sites, skus=skus, seed=1, slot_days=14)
    runs = []
    for round_ in range(rounds):
        for checkout in checkouts:
            store = copy_for_run(build) if publish_per_s else build
            publisher = None
            commits = Path(build.directory).parent / "publishes-idle.log"
            if publish_per_s:
                commits.write_text("")
                publisher = subprocess.Popen(
                    [
                        sys.executable, "-m", "bench.serve_store", "--dir", store.directory, "--network",
                        build.network, "--skus", str(build.skus), "--per-second", str(publish_per_s), "--log",
                        str(commits), "--seed", "1",
                    ],
                    cwd=REPO,
                )  # fmt: skip
            port = free_port()
            log = Path(build.directory).parent / "server-idle.log"
            server = start_server(store, port, log, "memory", 1, checkout)
            try:
                wait_healthy(server, port, log, timeout=900)
                time.sleep(2.0)  # the first polls after the load are done
                published = len(commits.read_text().splitlines()) if publisher is not None else 0
                cpu, wall = _cpu_seconds(server.pid), time.perf_counter()
                time.sleep(seconds)
                after = _cpu_seconds(server.pid)
                took = time.perf_counter() - wall
                published = len(commits.read_text().splitlines()) - published if publisher is not None else 0
            finally:
                stop(server)
                if publisher is not None:
                    publisher.terminate()
                    publisher.wait(timeout=60)
            share = None if cpu is None or after is None else round((after - cpu) / took, 4)
            found = {
                "round": round_ + 1,
                "code": str(checkout),
                "cpu_share_of_a_core": share,
                "seconds": seconds,
                "publish_log_lines": published,
            }
            say(
                f"  round {round_ + 1}, {checkout}: {share if share is None else f'{share:.1%}'} of a core idle"
                + (f", {published} publish log lines in the window" if publisher is not None else "")
            )
            runs.append(found)
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_idle", description=__doc__)
    parser.add_argument(
        "--store", type=Path, default=DEFAULT_STORE, help="a snapshot store (make bench-serve builds one)"
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--http", action="store_true", help="the whole server, idle, instead of the read model alone")
    parser.add_argument("--before", type=Path, default=None, help="with --http: another checkout, run first each round")
    parser.add_argument("--sites", type=int, default=1_000, help="with --http: the bench store's sites")
    parser.add_argument("--skus", type=int, default=2_000, help="with --http: the bench store's skus")
    parser.add_argument(
        "--publish-per-s",
        type=int,
        default=0,
        help="with --http: changed positions published a second into a copy of the store (0: none, idle)",
    )
    args = parser.parse_args(argv)
    if args.http:
        checkouts = ([args.before.resolve()] if args.before else []) + [REPO]
        found = measure_idle_http(
            checkouts, args.seconds, args.rounds, sites=args.sites, skus=args.skus, publish_per_s=args.publish_per_s
        )
        if args.json:
            print(json.dumps(found))
            return
        print(f"{'round':>6}  {'code':<30}{'CPU, share of a core':>22}")
        for run in found:
            share = run["cpu_share_of_a_core"]
            print(f"{run['round']:>6}  {run['code']:<30}{'-' if share is None else f'{share:.1%}':>22}")
        return
    if not args.store.is_dir():
        parser.error(f"no store at {args.store}: run `make bench-serve` first, or give --store DIR")
    runs = measure_idle(args.store, args.seconds, args.rounds)
    if args.json:
        print(json.dumps(runs))
        return
    print(f"{'round':>6}  {'follower':<20}{'CPU, share of a core':>22}{'refreshes':>11}")
    for run in runs:
        print(f"{run['round']:>6}  {run['follower']:<20}{run['cpu_share_of_a_core']:>22.1%}{run['refreshes']:>11}")


if __name__ == "__main__":
    main()
