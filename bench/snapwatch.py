"""Another process reading the snapshot store: when does each probe position appear in it?

`python -m bench.snapwatch DIR SITE SECONDS` watches the store at DIR every 50 ms (a
`SnapshotReader`, as any reader process would) for the positions of SITE, and prints
`sku<TAB>epoch ms` the first time it sees each, for SECONDS at most (or until SIGTERM).
Used by bench/kafka.py for the produce -> published snapshot latency.

It queries only when the catalog's files changed since its last query (a commit, as the
API's read model does: `SnapshotReader.catalog_stat`), and once a second anyway: a probe
can only appear with a commit, so the figure keeps its 50 ms resolution. Querying the
`positions` view every 50 ms whatever happened took 0.78 of the machine's 2 cores beside a
flow tailing 20,000 events/s (the flow itself had 0.80): CPU taken from the flow, the
broker and the producer it measures (docs/scaling.md, "Thirteenth pass").
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType

from adapters.snapshot_store import SnapshotReader
from ledger.errors import SnapshotError

POLL_S = 0.05
RECHECK_S = 1.0
"""Query even with the catalog's stat unchanged this often (a commit of the same size within the clock's tick)."""


def main() -> None:
    directory, site, seconds = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    stop = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    deadline = time.monotonic() + seconds
    reader: SnapshotReader | None = None
    seen: set[str] = set()
    quoted = site.replace("'", "''")
    marker: object = None
    queried = 0.0
    while not stop and time.monotonic() < deadline:
        started = time.monotonic()
        rows: list[tuple[object, ...]] = []
        try:
            if reader is None:
                reader = SnapshotReader.open(directory)
            # Taken before the query: a commit during it changes the stat again.
            now_marker = reader.catalog_stat()
            if now_marker is None or now_marker != marker or started - queried >= RECHECK_S:
                marker, queried = now_marker, started
                _, rows = reader.sql(f"SELECT sku FROM positions WHERE site_id = '{quoted}'")
        except SnapshotError:
            marker = None  # no store yet, or a publish in the way: try again
        now = time.time_ns() // 1_000_000
        fresh = [str(row[0]) for row in rows if row[0] not in seen]
        if fresh:
            seen.update(fresh)
            sys.stdout.write("".join(f"{sku}\t{now}\n" for sku in fresh))
            sys.stdout.flush()
        time.sleep(max(0.0, POLL_S - (time.monotonic() - started)))
    if reader is not None:
        reader.close()


if __name__ == "__main__":
    main()
