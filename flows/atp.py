"""The ATP dataflow: events in, per-site available-to-promise out.

    input ─ admit ─┬─ split ─ key ─ fold ─┬─ changes, decisions, work, tallies ─ batch ─ snapshots
                   │                      ├─ changes ─────────────────────────────── atp.changes (optional)
                   │                      ├─ decisions ───────────────────────────── decisions
                   │                      ├─ store tasks ─────────────────────────── tasks (optional)
                   │                      ├─ shuttle loads ───────────────────────── loads (optional)
                   │                      ├─ dropship orders ─────────────────────── orders (optional)
                   └─ dead letters ───────┴─ dead letters (too_late) ─────────────── dead letters

Sources and sinks are injected (`Wiring`), so the same flow runs on files, the
simulator or Kafka, into DuckLake or anything else with the same item shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from adapters.clock import Clock
from adapters.codec import Decoder, admit
from flows.logic import FoldObserver, PositionLogic, SnapshotBatchLogic, Stamped
from ledger.dead_letter import DeadLetter
from ledger.effects import split
from ledger.events import InventoryEvent, Millis
from ledger.execution import DropshipOrder, ShuttleLoad, StoreTask
from ledger.outputs import FoldTally, PositionChange, ReservationDecision
from ledger.policy import LedgerPolicy

__all__ = ["SNAPSHOT_KEY", "Wiring", "build_flow"]

SNAPSHOT_KEY = "snapshot"
"""Every snapshot item goes to this one key: the snapshot store has a single writer."""


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


def _is_admitted(item: tuple[Millis, InventoryEvent] | DeadLetter) -> bool:
    return not isinstance(item, DeadLetter)


def _stamped_effects(item: tuple[Millis, InventoryEvent] | DeadLetter) -> list[Stamped]:
    assert not isinstance(item, DeadLetter)  # routed by the "valid" branch
    now, event = item
    return [(now, effect) for effect in split(event)]


def _effect_key(item: Stamped) -> str:
    return item[1].key


def _for_snapshot(item: object) -> bool:
    return isinstance(item, PositionChange | ReservationDecision | FoldTally | StoreTask | ShuttleLoad | DropshipOrder)


def build_flow(wiring: Wiring, flow_id: str = "omni_ledger_atp") -> Dataflow:
    """The dataflow, wired to `wiring`'s source and sinks."""
    w = wiring
    flow = Dataflow(flow_id)
    raw = op.input(f"input_{w.source_kind}", flow, w.source)
    # RawInput
    admitted = op.map(
        "admit", raw, partial(admit, clock=w.clock, max_skew_ms=w.policy.max_clock_skew_ms, decode=w.decode)
    )
    # (now, InventoryEvent) | DeadLetter
    valid = op.branch("valid", admitted, _is_admitted)
    effects = op.flat_map("split", valid.trues, _stamped_effects)
    # (now, Effect), one per site the event touches
    keyed = op.key_on("key", effects, _effect_key)
    # ("site|sku", (now, Effect))
    fold_logic = partial(PositionLogic, policy=w.policy, clock=w.clock, observer=w.fold_observer)
    folded = op.stateful_batch("fold", keyed, fold_logic)
    # ("site|sku", PositionChange | ReservationDecision | DeadLetter | FoldTally | Work)
    outputs = op.key_rm("unkey", folded)
    # PositionChange | ReservationDecision | DeadLetter | FoldTally | Work
    to_snapshot = op.filter("to_snapshot", outputs, _for_snapshot)
    one_writer = op.key_on("one_writer", to_snapshot, _snapshot_key)
    batcher = partial(SnapshotBatchLogic, interval=w.snapshot_interval, max_items=w.snapshot_max_items)
    batches = op.stateful_batch("batch", one_writer, batcher)
    # ("snapshot", (PositionChange | ReservationDecision | FoldTally | Work, ...)) once per interval
    op.output("snapshots", batches, w.snapshots)
    if w.changes is not None:
        changes = op.filter("changes", outputs, _is_change)
        # PositionChange
        op.output("changes_out", op.key_on("change_key", changes, _change_key), w.changes)
    decisions = op.filter("decisions", outputs, _is_decision)
    # ReservationDecision
    op.output("decisions_out", op.key_on("decision_key", decisions, _decision_key), w.decisions)
    if w.tasks is not None:
        tasks = op.filter("tasks", outputs, _is_task)
        # StoreTask
        op.output("tasks_out", op.key_on("task_key", tasks, _task_key), w.tasks)
    if w.loads is not None:
        loads = op.filter("loads", outputs, _is_load)
        # ShuttleLoad
        op.output("loads_out", op.key_on("load_key", loads, _load_key), w.loads)
    if w.orders is not None:
        orders = op.filter("orders", outputs, _is_order)
        # DropshipOrder
        op.output("orders_out", op.key_on("order_key", orders, _order_key), w.orders)
    late = op.filter("too_late", outputs, _is_dead_letter)
    rejected = op.merge("rejected", valid.falses, late)
    # DeadLetter
    op.output("dead_letters", op.key_on("dlq_key", rejected, _dead_letter_key), w.dead_letters)
    return flow


def _is_decision(item: object) -> bool:
    return isinstance(item, ReservationDecision)


def _is_dead_letter(item: object) -> bool:
    return isinstance(item, DeadLetter)


def _is_change(item: object) -> bool:
    return isinstance(item, PositionChange)


def _change_key(change: PositionChange) -> str:
    return change.key


def _snapshot_key(_: object) -> str:
    return SNAPSHOT_KEY


def _decision_key(decision: ReservationDecision) -> str:
    return decision.reservation_id


def _dead_letter_key(letter: DeadLetter) -> str:
    return letter.origin


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
