"""Another process reading the snapshot store: when does each probe position appear in it?

`python -m bench.snapwatch DIR SITE SECONDS` polls the store at DIR every 50 ms (a
`SnapshotReader`, as any reader process would) for the positions of SITE, and prints
`sku<TAB>epoch ms` the first time it sees each, for SECONDS at most (or until SIGTERM).
Used by bench/kafka.py for the produce -> published snapshot latency.
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
    while not stop and time.monotonic() < deadline:
        started = time.monotonic()
        try:
            if reader is None:
                reader = SnapshotReader.open(directory)
            _, rows = reader.sql(f"SELECT sku FROM positions WHERE site_id = '{quoted}'")
        except SnapshotError:
            rows = []  # no store yet, or a publish in the way: try again
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
