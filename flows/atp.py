"""The ATP dataflow: events in, per-site available-to-promise out.

    input ─ admit ─┬─ split ─ fold ─┬─ changes, decisions, work, tallies ─ batch ─ snapshots
    (one item      │   (per shard,  ├─ changes ─────────────────────────────── atp.changes (optional)
     per read)     │   one item per ├─ decisions ───────────────────────────── decisions
                   │   fold call)   ├─ store tasks ─────────────────────────── tasks (optional)
                   │                ├─ shuttle loads ───────────────────────── loads (optional)
                   │                ├─ dropship orders ─────────────────────── orders (optional)
                   └─ refused ──────┴─ too late ────────────────────────────── dead letters

Sources and sinks are injected (`Wiring`), so the same flow runs on files, the
simulator or Kafka, into DuckLake or anything else with the same item shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import FixedPartitionedSink, Sink

from adapters.clock import Clock
from adapters.codec import Decoder
from adapters.partitions import batched, each
from flows.logic import (
    Admitted,
    EpochClose,
    Folded,
    FoldObserver,
    ShardBatch,
    ShardLogic,
    SnapshotBatchLogic,
    admit_batch,
)
from ledger.dead_letter import DeadLetter
from ledger.execution import DropshipOrder, ShuttleLoad, StoreTask
from ledger.outputs import PositionChange, ReservationDecision
from ledger.policy import LedgerPolicy
from ledger.shard import DEFAULT_SHARDS

__all__ = ["SNAPSHOT_KEY", "Wiring", "build_flow"]

SNAPSHOT_KEY = "snapshot"
"""The snapshot batch key of a single writer; with several, `snapshot-<i>` for writer i."""


@dataclass(frozen=True)
class Wiring:
    """What the flow reads and where it writes; sinks take `(key, item)` pairs."""

    source: Source[Any]
    source_kind: str
    """Names the input step (`input_sim`, `input_files`): recovery state of one kind of
    source is never offered to another on the same snapshot directory."""
    snapshots: Sink[Any]
    decisions: Sink[Any]
    dead_letters: Sink[Any]
    clock: Clock
    policy: LedgerPolicy
    snapshot_interval: timedelta = timedelta(seconds=1)
    snapshot_max_items: int = 200_000
    decode: Decoder | None = None
    """How message bytes become records (default: JSON lines)."""
    changes: Sink[Any] | None = None
    """Where every position change also goes, keyed `site|sku` (the `atp.changes` topic)."""
    tasks: Sink[Any] | None = None
    """Where every store task goes, keyed `task_id` (the `store.tasks` topic, or a file)."""
    loads: Sink[Any] | None = None
    """Where every shuttle load goes, keyed `parcel_id` (`transport.loads`)."""
    orders: Sink[Any] | None = None
    """Where every dropship order goes, keyed `order_ref` (`dropship.orders`)."""
    fold_observer: FoldObserver | None = None
    """Told what each fold call did (the metrics), on the worker thread."""
    snapshot_writers: int = 1
    """Snapshot writers sharing the catalog; each gets a stable hash share of the keys."""
    shards: int = DEFAULT_SHARDS
    """Shards the fold's positions are spread over (fixed for the life of a recovery store)."""
    shard_checkpoints: Path | None = None
    """Where each shard checkpoints its changes at every epoch close (under the recovery
    directory); None when recovery is off."""


def _groups(admitted: Admitted) -> list[tuple[str, ShardBatch]]:
    return admitted.groups


def _rejected(admitted: Admitted) -> list[tuple[str, DeadLetter]]:
    return [(letter.origin, letter) for letter in admitted.rejected]


def build_flow(wiring: Wiring, flow_id: str = "omni_ledger_atp") -> Dataflow:
    """The dataflow, wired to `wiring`'s source and sinks.

    The process that runs it sets its garbage collector for the flow's allocations first
    (`omni_ledger.collector.tune_collector`, called by `omni_ledger.runner`).
    """
    w = wiring
    flow = Dataflow(flow_id)
    reads = op.input(f"input_{w.source_kind}", flow, batched(w.source))
    # (RawInput, ...): one item per source read
    admitted = op.map(
        "admit",
        reads,
        partial(admit_batch, clock=w.clock, max_skew_ms=w.policy.max_clock_skew_ms, decode=w.decode, shards=w.shards),
    )
    # Admitted: effects grouped by shard, then position, and dead letters
    keyed = op.flat_map("split", admitted, _groups)
    # ("shard-<i>", (i, (("site|sku", ((now, Effect), ...)), ...)))
    fold_logic = partial(
        ShardLogic,
        policy=w.policy,
        clock=w.clock,
        checkpoints=w.shard_checkpoints,
        shards=w.shards,
        observer=w.fold_observer,
        writers=w.snapshot_writers,
        close=EpochClose(),
    )
    folded = op.stateful_batch("fold", keyed, fold_logic)
    # ("shard-<i>", Folded): one per fold call of a shard (per snapshot writer)
    one_writer = op.map("one_writer", folded, partial(_writer_key, writers=w.snapshot_writers))
    batcher = partial(SnapshotBatchLogic, interval=w.snapshot_interval, max_items=w.snapshot_max_items)
    batches = op.stateful_batch("batch", one_writer, batcher)
    # ("snapshot[-i]", SnapshotBatch(changes, decisions, work, tally)) once per interval
    op.output("snapshots", batches, w.snapshots)
    if w.changes is not None:
        changes = op.filter_map("changes", folded, _changes)
        # ("shard-<i>", (PositionChange, ...)): the sink writes each, routed by shard
        if isinstance(w.changes, FixedPartitionedSink):
            op.output("changes_out", changes, each(w.changes))
        else:
            op.output("changes_out", op.flat_map("each_change", changes, _each_change), w.changes)
    # A decision leaves for every reservation request: its own step, keyed by reservation
    # (one producer a reservation keeps its decisions in order). Work and late events are
    # rarer: one step picks them out of every fold result, the steps after it see only them.
    op.output("decisions_out", op.flat_map("decisions", folded, _decisions), w.decisions)
    notices = op.flat_map("notices", folded, _notices)
    # ("work" | "late", item)
    if w.tasks is not None or w.loads is not None or w.orders is not None:
        work = op.filter_map("work", notices, _work)
        # StoreTask | ShuttleLoad | DropshipOrder
        if w.tasks is not None:
            op.output("tasks_out", op.key_on("task_key", op.filter("tasks", work, _is_task), _task_key), w.tasks)
        if w.loads is not None:
            op.output("loads_out", op.key_on("load_key", op.filter("loads", work, _is_load), _load_key), w.loads)
        if w.orders is not None:
            orders = op.filter("orders", work, _is_order)
            op.output("orders_out", op.key_on("order_key", orders, _order_key), w.orders)
    late = op.filter_map("too_late", notices, _late)
    rejected = op.merge("rejected", op.flat_map("refused", admitted, _rejected), late)
    # ("origin", DeadLetter)
    op.output("dead_letters", rejected, w.dead_letters)
    return flow


def _writer_key(item: tuple[str, Folded], writers: int) -> tuple[str, Folded]:
    folded = item[1]
    if writers == 1:
        return SNAPSHOT_KEY, folded
    # The fold split its outputs by writer (a stable hash of site|sku, the same in every process).
    return f"{SNAPSHOT_KEY}-{folded.writer}", folded


def _changes(item: tuple[str, Folded]) -> tuple[str, tuple[PositionChange, ...]] | None:
    changes = item[1].changes
    return (item[0], changes) if changes else None


def _each_change(item: tuple[str, tuple[PositionChange, ...]]) -> list[tuple[str, PositionChange]]:
    return [(change.key, change) for change in item[1]]


_Notice = tuple[str, object]


def _decisions(item: tuple[str, Folded]) -> list[tuple[str, ReservationDecision]]:
    return [(d.reservation_id, d) for d in item[1].decisions]


def _notices(item: tuple[str, Folded]) -> list[_Notice]:
    folded = item[1]
    if not (folded.work or folded.dead_letters):
        return []
    return [
        *(("work", w) for w in folded.work),
        *(("late", (letter.origin, letter)) for letter in folded.dead_letters),
    ]


def _work(notice: _Notice) -> object | None:
    return notice[1] if notice[0] == "work" else None


def _late(notice: _Notice) -> object | None:
    return notice[1] if notice[0] == "late" else None


def _is_task(item: object) -> bool:
    return isinstance(item, StoreTask)


def _is_load(item: object) -> bool:
    return isinstance(item, ShuttleLoad)


def _is_order(item: object) -> bool:
    return isinstance(item, DropshipOrder)


def _task_key(task: StoreTask) -> str:
    return task.task_id


def _load_key(load: ShuttleLoad) -> str:
    return load.parcel_id


def _order_key(order: DropshipOrder) -> str:
    return order.order_ref
