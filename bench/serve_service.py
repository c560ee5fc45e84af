"""CPU a request of the service alone (no HTTP, no client): availability and the promise scenarios.

`python -m bench.serve_service --sites 1000 --skus 200 --requests 150`, run from a
checkout's root, opens that checkout's service over the cached bench store (build it
first with `python -m bench.serve --sites ... --skus ...`), answers `--requests` random
requests of each scenario unmeasured (the schedules' memos fill), then as many again
measured with the process's CPU clock and the calling thread's (the read model's
follower thread apart), and prints CPU ms a request of each. Run it from main's
checkout and from ours, back to back: the same store, the same requests, the code apart.
Not a test: nothing asserts a timing.

`--before <checkout>` compares two promises in one process instead: that checkout's
`ledger/promise.py` and `ledger/schedule.py` (loaded beside ours, its promise on its
schedule; every other module is ours, so it measures a change of those two files alone)
and ours answer the same requests in alternating rounds, `--rounds` of each (the order
flips every round), with the same `now` (`--moving-clock`: the service's, per request); the calling
thread's CPU a request is printed per round and the answers of the first round are
compared (they must be equal). On a shared machine this is the comparison to trust:
the load moves between runs, much less between two rounds a few seconds apart.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.serve_network import customer_point, sku_name
from omni_ledger.config import ServeSettings, Settings, SnapshotSettings
from omni_ledger.service import LedgerService, reads
from omni_ledger.serving import open_service

CACHE = Path(__file__).resolve().parents[1] / "var" / "bench-serve"
SCENARIOS = ("availability", "promise", "promise_appt", "promise_basket3")


def request_maker(
    service: LedgerService, scenario: str, *, skus: int, rng: random.Random, now: int | None = None
) -> Callable[[], Any]:
    """A function answering one random request of the scenario per call, as the HTTP bench asks them:
    a customer point (`customer_point`), random skus of the store's `skus`, a 50 km radius, limit 10
    (at `now`, or the service's clock)."""

    def one() -> Any:
        lat, lon = customer_point(rng)
        if scenario == "availability":
            return service.availability(sku_name(rng.randrange(skus)), lat=lat, lon=lon, radius_km=50.0)
        count = 3 if scenario == "promise_basket3" else 1
        items = [(sku_name(i), 1) for i in rng.sample(range(skus), count)]
        appointment = scenario == "promise_appt"
        return service.promise(items, lat=lat, lon=lon, radius_km=50.0, appointment=appointment, limit=10, now=now)

    return one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=1_000)
    parser.add_argument("--skus", type=int, default=200)
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument(
        "--warmup", type=int, default=None, help="requests answered unmeasured first (default: --requests)"
    )
    parser.add_argument("--store", type=Path, default=None, help="the bench store's directory (default: the cache's)")
    parser.add_argument(
        "--before", type=Path, default=None, help="a checkout whose ledger/promise.py and schedule.py to compare with"
    )
    parser.add_argument(
        "--moving-clock",
        action="store_true",
        help="with --before: each request at the service's clock, not one fixed `now` (answers then not compared)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="with --before: rounds of each")
    args = parser.parse_args()
    home = args.store or CACHE / f"{args.sites}x{args.skus}-seed1-slots14d-v1"
    settings = Settings(
        snapshots=SnapshotSettings(dir=home / "store"),
        serve=ServeSettings(network=home / "network.toml", max_snapshot_age=timedelta(days=3650)),
    )
    if args.before is not None:
        compare(settings, args)
        return
    figures = []
    with open_service(settings) as service:
        for scenario in SCENARIOS:
            one = request_maker(service, scenario, skus=args.skus, rng=random.Random(1))
            for _ in range(args.requests if args.warmup is None else args.warmup):
                one()
            started, alone = time.process_time(), time.thread_time()
            for _ in range(args.requests):
                one()
            process, thread = time.process_time() - started, time.thread_time() - alone
            figures.append(f"{scenario} {process / args.requests * 1000:.2f} ({thread / args.requests * 1000:.2f})")
    # The process's CPU counts the read model's follower thread too; the calling thread's is the requests' own.
    print(f"{Path.cwd()}: CPU ms a request, process (thread): " + ", ".join(figures), file=sys.stdout)


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def compare(settings: Settings, args: argparse.Namespace) -> None:
    """Ours and `--before`'s promise in alternating rounds, one process, the same requests and `now`."""
    # That checkout's schedule too (its memos apart from ours), imported by its promise in place of ours.
    schedule = _load("ledger._schedule_before", args.before / "ledger" / "schedule.py")
    ours_schedule = sys.modules["ledger.schedule"]
    sys.modules["ledger.schedule"] = schedule
    try:
        before = _load("ledger._promise_before", args.before / "ledger" / "promise.py")
    finally:
        sys.modules["ledger.schedule"] = ours_schedule
    # reads.py calls the `promise` it imported: swapping that name swaps what every request runs.
    names = vars(reads)
    ours = names["promise"]
    with open_service(settings) as service:
        # A fixed `now` keeps every memo kept by instant warm; the server's clock moves (`--moving-clock`).
        now = None if args.moving_clock else service.clock()
        for scenario in SCENARIOS[1:]:  # availability does not call the promise
            for code in (before.promise, ours):  # warm both: the memos fill
                names["promise"] = code
                one = request_maker(service, scenario, skus=args.skus, rng=random.Random(0), now=now)
                for _ in range(args.requests if args.warmup is None else args.warmup):
                    one()
            figures: dict[str, list[float]] = {"before": [], "ours": []}
            answers: dict[str, list[Any]] = {}
            for n in range(args.rounds):
                order = (("before", before.promise), ("ours", ours))
                for name, code in order if n % 2 == 0 else order[::-1]:
                    names["promise"] = code
                    one = request_maker(service, scenario, skus=args.skus, rng=random.Random(n + 1), now=now)
                    started = time.thread_time()
                    got = [one() for _ in range(args.requests)]
                    figures[name].append((time.thread_time() - started) / args.requests * 1000)
                    if n == 0:
                        answers[name] = got
            names["promise"] = ours
            same = "not compared (clock moving)" if now is None else answers["before"] == answers["ours"]
            # Each round beside its pair: the load of a shared machine moves less within a pair than across rounds.
            ratios = [b / o for b, o in zip(figures["before"], figures["ours"], strict=True)]
            medians = statistics.median(figures["before"]), statistics.median(figures["ours"])
            print(
                f"{scenario}: thread CPU ms a request, before {' '.join(f'{x:.2f}' for x in figures['before'])}"
                f" | ours {' '.join(f'{x:.2f}' for x in figures['ours'])} | answers equal: {same}\n"
                f"  medians before {medians[0]:.2f} ours {medians[1]:.2f};"
                f" before/ours per pair: median {statistics.median(ratios):.2f},"
                f" ours cheaper in {sum(r > 1 for r in ratios)}/{len(ratios)}",
                file=sys.stdout,
            )


if __name__ == "__main__":
    main()
