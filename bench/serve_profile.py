"""cProfile of the service alone, one scenario at a time: where a request's CPU goes.

`python -m bench.serve_profile --skus 2000 --requests 100 --scenarios promise,promise_appt`
loads the service over the cached bench store (as `bench.serve_service`), answers
`--requests` requests of each scenario (the same as `bench.serve_service`'s: one
generator, `request_maker`) unmeasured (the memos fill), then as many again
under cProfile, and prints the top functions by own and cumulative time. Not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
from datetime import timedelta
from pathlib import Path

from bench.serve_service import CACHE, SCENARIOS, request_maker
from omni_ledger.config import ServeSettings, Settings, SnapshotSettings
from omni_ledger.serving import open_service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=1_000)
    parser.add_argument("--skus", type=int, default=200)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--warmup", type=int, default=None, help="requests answered unmeasured first (default: --requests)"
    )
    parser.add_argument("--store", type=Path, default=None, help="the bench store's directory (default: the cache's)")
    parser.add_argument(
        "--sample",
        action="store_true",
        help="answer the requests without cProfile (for a sampling profiler outside: py-spy record -- python -m ...)",
    )
    args = parser.parse_args()
    home = args.store or CACHE / f"{args.sites}x{args.skus}-seed1-slots14d-v1"
    settings = Settings(
        snapshots=SnapshotSettings(dir=home / "store"),
        serve=ServeSettings(network=home / "network.toml", max_snapshot_age=timedelta(days=3650)),
    )
    with open_service(settings) as service:
        for scenario in args.scenarios.split(","):
            one = request_maker(service, scenario, skus=args.skus, rng=random.Random(1))
            for _ in range(args.requests if args.warmup is None else args.warmup):
                one()
            if args.sample:
                # cProfile's cost per call would weigh on the many small calls a sampler then sees.
                for _ in range(args.requests):
                    one()
                continue
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(args.requests):
                one()
            profile.disable()
            for order in ("tottime", "cumulative"):
                out = io.StringIO()
                pstats.Stats(profile, stream=out).sort_stats(order).print_stats(args.top)
                print(f"== {scenario} by {order}\n{out.getvalue()}")


if __name__ == "__main__":
    main()
