"""A small Bytewax flow for the uncommitted-state tests, run as a process of its own.

    python -m tests.integration.leftover_flow RECOVERY_DIR OUT_FILE [--block-at I] [--first-read-empty] [--discard]

Items 0..9 are read one per epoch (epoch interval 0), keyed `k<i>`, deduplicated by a
stateful step the way the ledger's fold deduplicates event ids (a replayed item emits
nothing), and written by a partitioned sink that makes an epoch's outputs durable in
`snapshot()`, as the Kafka sink waits for the broker's acknowledgements there.
`--block-at I` makes that acknowledgement never come for the epoch holding item I (a
broker that does not answer: the test kills the process there). `--first-read-empty`
makes the first read return nothing, as a Kafka consumer's first poll after start-up
usually does. `--discard` runs `adapters.recovery.discard_uncommitted` first, as
`omni-ledger run` does.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from bytewax.recovery import RecoveryConfig
from bytewax.run import cli_main

from adapters.recovery import discard_uncommitted

ITEMS = 10


class _Reads(StatefulSourcePartition[int, int]):
    def __init__(self, resume: int | None, first_empty: bool) -> None:
        self._next = resume or 0
        self._first_empty = first_empty

    def next_batch(self) -> list[int]:
        if self._first_empty:
            self._first_empty = False
            return []
        if self._next >= ITEMS:
            raise StopIteration
        self._next += 1
        return [self._next - 1]

    def snapshot(self) -> int:
        return self._next


class Reads(FixedPartitionedSource[int, int]):
    def __init__(self, first_empty: bool) -> None:
        self._first_empty = first_empty

    def list_parts(self) -> list[str]:
        return ["reads"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Reads:
        return _Reads(resume_state, self._first_empty)


class _Acknowledged(StatefulSinkPartition[int, None]):
    def __init__(self, path: Path, block_at: int | None) -> None:
        self._path = path
        self._block_at = block_at
        self._pending: list[int] = []

    def write_batch(self, values: list[int]) -> None:
        self._pending.extend(values)

    def snapshot(self) -> None:
        if self._block_at in self._pending:
            while True:  # the acknowledgement never comes; the test kills the process
                time.sleep(1)
        with self._path.open("a") as out:
            out.write("".join(f"{i}\n" for i in self._pending))
            out.flush()
            os.fsync(out.fileno())
        self._pending = []


class Acknowledged(FixedPartitionedSink[int, None]):
    def __init__(self, path: Path, block_at: int | None) -> None:
        self._path = path
        self._block_at = block_at

    def list_parts(self) -> list[str]:
        return ["out"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Acknowledged:
        return _Acknowledged(self._path, self._block_at)


def _dedup(seen: bool | None, item: int) -> tuple[bool, int | None]:
    return True, (None if seen else item)


def build(out: Path, block_at: int | None, first_empty: bool) -> Dataflow:
    flow = Dataflow("leftover")
    reads = op.input("reads", flow, Reads(first_empty))
    keyed = op.key_on("key", reads, lambda i: f"k{i}")
    fresh = op.filter_map("fresh", op.stateful_map("dedup", keyed, _dedup), lambda kv: kv[1])
    op.output("out", op.key_on("one", fresh, lambda _: "out"), Acknowledged(out, block_at))
    return flow


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recovery", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--block-at", type=int)
    parser.add_argument("--first-read-empty", action="store_true")
    parser.add_argument("--discard", action="store_true")
    args = parser.parse_args()
    if args.discard:
        discard_uncommitted(args.recovery)
    cli_main(  # type: ignore[no-untyped-call]
        build(args.out, args.block_at, args.first_read_empty),
        epoch_interval=timedelta(0),
        recovery_config=RecoveryConfig(str(args.recovery)),  # type: ignore[no-untyped-call]
    )


if __name__ == "__main__":
    main()
