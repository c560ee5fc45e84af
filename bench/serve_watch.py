"""What the store watch alone costs while publishes land: `ServingStore` in a process of its own.

`python -m bench.serve_watch [--sites 1000 --skus 20000] [--publish-per-s 100000] [--seconds 20]
[--rounds 3] [--before DIR]` copies the bench store (as `make bench-serve` does), starts the
bench's publisher on the copy, then each round starts a process per checkout (`--before`'s
first, then this one) that opens only a `ServingStore` on the copy and reports its CPU over
`--seconds` as a share of a core, with its catalog and snapshot_info reads where it counts
them. The server's whole CPU (`bench.serve_idle --http`) also holds the read model's
refreshes, whose cost varies with the publishes: this is the watch's part alone. Not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, say

__all__ = ["measure_watch"]

_WATCH = """
import json, resource, sys, time
from pathlib import Path
from adapters.snapshot_store.serving import ServingStore
store = ServingStore(Path(sys.argv[1]))
seconds = float(sys.argv[2])
time.sleep(2.0)  # the first polls are done
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
reads = store.catalog_reads, getattr(store, "snapshot_info_reads", None)
before, wall = cpu(), time.perf_counter()
time.sleep(seconds)
took, used = time.perf_counter() - wall, cpu() - before
after = store.catalog_reads, getattr(store, "snapshot_info_reads", None)
current = store.current
store.close()
print(json.dumps({
    "cpu_share_of_a_core": round(used / took, 4),
    "catalog_reads": after[0] - reads[0],
    "snapshot_info_reads": None if after[1] is None or reads[1] is None else after[1] - reads[1],
    "snapshot_id": None if current is None else current.snapshot_id,
}))
"""


def measure_watch(
    checkouts: list[Path], seconds: float, rounds: int, *, sites: int, skus: int, publish_per_s: int
) -> list[dict[str, Any]]:
    """Each round, each checkout's watch alone on a copy of the bench store with publishes landing."""
    from bench.serve_store import copy_for_run, open_or_build

    build = open_or_build(sites=sites, skus=skus, seed=1, slot_days=14)
    store = copy_for_run(build)
    commits = Path(build.directory).parent / "publishes-watch.log"
    commits.write_text("")
    publisher = subprocess.Popen(
        [
            sys.executable, "-m", "bench.serve_store", "--dir", store.directory, "--network", build.network,
            "--skus", str(build.skus), "--per-second", str(publish_per_s), "--log", str(commits), "--seed", "1",
        ],
        cwd=REPO,
    )  # fmt: skip
    runs = []
    try:
        for round_ in range(rounds):
            for checkout in checkouts:
                published = len(commits.read_text().splitlines())
                done = subprocess.run(
                    [sys.executable, "-c", _WATCH, store.directory, str(seconds)],
                    cwd=checkout,
                    env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                found = json.loads(done.stdout.strip().splitlines()[-1])
                found.update(
                    round=round_ + 1,
                    code=str(checkout),
                    publish_log_lines=len(commits.read_text().splitlines()) - published,
                )
                say(
                    f"  round {round_ + 1}, {checkout}: {found['cpu_share_of_a_core']:.1%} of a core, "
                    f"{found['catalog_reads']} catalog reads, {found['snapshot_info_reads']} snapshot_info reads, "
                    f"{found['publish_log_lines']} publish log lines"
                )
                runs.append(found)
    finally:
        publisher.terminate()
        publisher.wait(timeout=60)
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_watch", description=__doc__)
    parser.add_argument("--sites", type=int, default=1_000)
    parser.add_argument("--skus", type=int, default=20_000)
    parser.add_argument("--publish-per-s", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, default=None, help="another checkout, run first each round")
    args = parser.parse_args(argv)
    checkouts = ([args.before.resolve()] if args.before else []) + [REPO]
    started = time.perf_counter()
    runs = measure_watch(
        checkouts, args.seconds, args.rounds, sites=args.sites, skus=args.skus, publish_per_s=args.publish_per_s
    )
    print(json.dumps(runs, indent=1))
    say(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
