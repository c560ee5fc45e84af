"""The one place that picks the real adapters and wires them into the flow (`plan_run`).

Running the plan, a process of the flow, is `omni_ledger.runner`'s.

Layout of a snapshot directory:

    DIR/catalog.sqlite      DuckLake catalog (SQLite, WAL): what readers attach
    DIR/data/               Parquet data files of the snapshots
    DIR/recovery/           Bytewax recovery state (input offsets, one pointer per shard)
    DIR/recovery/shards/    the fold's positions: per shard, a base and the deltas of each
                            epoch since (adapters/shard_checkpoints.py)
    DIR/decisions.jsonl     every reservation decision, one JSON object a line
    DIR/dead_letters.jsonl  every refused input with its reason
    DIR/store_tasks.jsonl, DIR/transport_loads.jsonl, DIR/dropship_orders.jsonl
                            every state of each piece of work (embedded mode; on Kafka,
                            the topics store.tasks, transport.loads, dropship.orders)
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bytewax.inputs import Source

from adapters.avro_wire import wire_codec
from adapters.clock import Clock, ReplayClock, WallClock
from adapters.file_source import FileSource
from adapters.jsonl_sink import (
    JsonLinesSink,
    dead_letter_record,
    decision_record,
    work_record,
)
from adapters.kafka_io import KafkaAdmin, KafkaEventSource, KafkaOutSink
from adapters.kafka_records import (
    render_change,
    render_dead_letter,
    render_decision,
    render_load,
    render_order,
    render_task,
)
from adapters.shard_checkpoints import SHARDS_DIR, read_layout
from adapters.shutdown import StopFlag
from adapters.sim_source import SimSource
from adapters.snapshot_store import drop_store, store_exists
from adapters.snapshot_store.pending import SINK_DIR
from adapters.snapshot_store.sink import SnapshotSink
from flows.atp import Wiring
from ledger.dead_letter import DeadLetter
from ledger.errors import ConfigError, RecoveryError
from ledger.outputs import ReservationDecision
from ledger.shard import DEFAULT_SHARDS
from omni_ledger.config import Settings
from omni_ledger.metrics import FlowMetrics
from omni_ledger.progress import Progress

__all__ = ["RunPlan", "plan_run", "reset_store"]

CATALOG = "catalog.sqlite"
CLOCK_BOARD = ".replay-clock"
RECOVERY = "recovery"
TASKS_FILE = "store_tasks.jsonl"
LOADS_FILE = "transport_loads.jsonl"
ORDERS_FILE = "dropship_orders.jsonl"


@dataclass(frozen=True)
class RunPlan:
    """A validated run: its wiring and runtime settings."""

    wiring: Wiring
    settings: Settings
    recovery_dir: Path | None
    description: str


def _source(
    spec: str,
    settings: Settings,
    follow: bool,
    limit: int | None,
    stop: StopFlag | None,
    until_end: bool,
    metrics: FlowMetrics | None = None,
) -> tuple[Source[Any], str, Clock, str]:
    clock_choice = settings.clock
    # Where each source partition of a replay leaves its clock's reading at the end of its
    # input, for the processes of a cluster that read none (adapters/clock.py).
    board = settings.snapshot_dir / CLOCK_BOARD
    if spec == "sim":
        sim = settings.simulator
        config = sim.sim_config()
        clock: Clock = ReplayClock(board=board) if clock_choice == "event" else WallClock()
        limit_text = f", stopping after {limit:,} events" if limit else ""
        # --follow: also the API's inbox, so confirms and clicks are folded beside the simulator.
        inbox = settings.snapshot_dir / "inbox.jsonl" if follow else None
        inbox_text = f" and the inbox {inbox}" if inbox else ""
        return (
            SimSource(config, rate=sim.rate, limit=limit, stop=stop, inbox=inbox),
            "sim",
            clock,
            f"simulator at {sim.rate:,} events/s{limit_text}{inbox_text}",
        )
    if spec.startswith("file:"):
        paths = [Path(p) for p in spec.removeprefix("file:").split(",") if p]
        if not paths:
            msg = "--source file: needs at least one path, e.g. --source file:events.jsonl"
            raise ConfigError(msg)
        # A followed file is a live feed: its holds must expire on time, not when the next line comes.
        live = clock_choice == "wall" or (clock_choice == "auto" and follow)
        clock = WallClock() if live else ReplayClock(board=board)
        names = ", ".join(str(p) for p in paths)
        return (
            FileSource(paths, follow=follow, stop=stop, clock=clock),
            "files",
            clock,
            f"file {names}{' (following)' if follow else ''}",
        )
    if spec == "kafka":
        kafka = settings.kafka
        topic = kafka.topic("inventory.events")
        # Fail now, with advice, if the cluster is unreachable, the password wrong or the topic missing.
        KafkaAdmin(kafka.client_config()).partitions(topic)
        live = clock_choice == "wall" or (clock_choice == "auto" and not until_end)
        kafka_clock: Clock = WallClock() if live else ReplayClock(board=board)
        on_lag = metrics.consumer_lag if metrics is not None else None
        source = KafkaEventSource(
            kafka.client_config(), topic, tail=not until_end, stop=stop, clock=kafka_clock, on_lag=on_lag
        )
        description = f"Kafka topic {topic} at {kafka.bootstrap}" + (" until its end" if until_end else "")
        return source, "kafka", kafka_clock, description
    msg = f"--source {spec!r}: expected 'sim', 'kafka' or 'file:PATH[,PATH...]'"
    raise ConfigError(msg)


_R = TypeVar("_R")


def _counted_decisions(
    progress: Progress, render: Callable[[ReservationDecision], _R], metrics: FlowMetrics | None = None
) -> Callable[[ReservationDecision], _R]:
    """`render`, counting decisions by status on the way."""

    def counting(decision: ReservationDecision) -> _R:
        progress.decisions[decision.status.value] += 1
        if metrics is not None:
            metrics.decision(decision)
        return render(decision)

    return counting


def _counted_dead_letters(
    progress: Progress, render: Callable[[DeadLetter], _R], metrics: FlowMetrics | None = None
) -> Callable[[DeadLetter], _R]:
    """`render`, counting dead letters by reason on the way."""

    def counting(dead: DeadLetter) -> _R:
        progress.dead_letters[dead.reason] += 1
        if metrics is not None:
            metrics.dead_letter(dead)
        return render(dead)

    return counting


def reset_store(directory: Path) -> None:
    """Remove what a previous run left in `directory` (snapshots, recovery state, outputs).

    In a cluster each process may be started with `--reset`: every process resets before
    it joins the others, and nothing reads the directory until all have joined (Bytewax
    opens the recovery partitions only after the cluster's handshake), so no process can
    delete what another one is already using.
    """
    if store_exists(directory):
        # Its catalog may live in PostgreSQL and its writers' files vary: the store knows.
        drop_store(directory)
    for name in (
        CATALOG,
        f"{CATALOG}-wal",
        f"{CATALOG}-shm",
        "data",
        RECOVERY,
        "decisions.jsonl",
        "dead_letters.jsonl",
        "heartbeat.json",
        TASKS_FILE,
        LOADS_FILE,
        ORDERS_FILE,
        ".writer.lock",
        ".duckdb_extensions",
        CLOCK_BOARD,
    ):
        target = directory / name
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists():
            target.unlink(missing_ok=True)
    for marker in directory.glob(".published-*.json") if directory.is_dir() else ():
        marker.unlink(missing_ok=True)  # the snapshot writers' last published job (adapters/snapshot_store/sink.py)
    for leftover in directory.glob(f"{RECOVERY}.init-*") if directory.is_dir() else ():
        # A recovery directory being initialised when its process died (omni_ledger/runner.py).
        shutil.rmtree(leftover, ignore_errors=True)


def plan_run(
    source: str,
    settings: Settings,
    progress: Progress,
    *,
    follow: bool = False,
    limit: int | None = None,
    stop: StopFlag | None = None,
    until_end: bool = False,
    metrics: FlowMetrics | None = None,
) -> RunPlan:
    """Validate the settings against the snapshot directory and build the wiring (`metrics` counts)."""
    directory = settings.snapshot_dir
    directory.mkdir(parents=True, exist_ok=True)
    recovery_dir = directory / RECOVERY if settings.recovery else None
    has_store = store_exists(directory)
    if has_store and (recovery_dir is None or not recovery_dir.exists()):
        # The fold's state would start empty while the store holds higher versions:
        # new changes would be ignored as stale. Refuse rather than publish a wrong view.
        msg = (
            f"{directory} already holds snapshots but no recovery state to continue from; "
            f"run with --reset to start over, or keep recovery on (runtime.recovery = true) and reuse the same dir"
        )
        raise ConfigError(msg)
    shards = DEFAULT_SHARDS if recovery_dir is None else _recorded_shards(recovery_dir)
    src, kind, clock, description = _source(source, settings, follow, limit, stop, until_end, metrics)

    snapshots = SnapshotSink(
        directory,
        retention=settings.snapshot_retention,
        maintenance_every=settings.maintenance_interval,
        on_publish=progress.on_publish,
        observer=metrics,
        catalog=settings.snapshot_catalog,
        writers=settings.snapshot_writers,
        # Jobs not yet published at an epoch's close go to files beside the shard checkpoints.
        pending_dir=None if recovery_dir is None else recovery_dir / SINK_DIR,
    )
    if kind == "kafka":
        # On Kafka, the outputs are topics: decisions, dead letters, every position change and
        # every state of each piece of work.
        kafka = settings.kafka
        client = kafka.client_config()
        # The busy outputs get a producer per worker of the cluster; the rare ones one.
        producers = settings.workers * max(1, len(settings.addresses))
        wiring = Wiring(
            source=src,
            source_kind=kind,
            snapshots=snapshots,
            decisions=KafkaOutSink(
                client,
                kafka.topic("reservation.decisions"),
                _counted_decisions(progress, render_decision, metrics),
                parts=producers,
            ),
            dead_letters=KafkaOutSink(
                client,
                kafka.topic("inventory.events.dlq"),
                _counted_dead_letters(progress, render_dead_letter, metrics),
            ),
            changes=KafkaOutSink(client, kafka.topic("atp.changes"), render_change, parts=producers),
            tasks=KafkaOutSink(client, kafka.topic("store.tasks"), render_task),
            loads=KafkaOutSink(client, kafka.topic("transport.loads"), render_load),
            orders=KafkaOutSink(client, kafka.topic("dropship.orders"), render_order),
            clock=clock,
            policy=settings.policy(),
            snapshot_interval=settings.snapshot_interval,
            snapshot_writers=settings.snapshot_writers,
            decode=wire_codec(kafka).decode,
            fold_observer=metrics,
            shards=shards,
            shard_checkpoints=None if recovery_dir is None else recovery_dir / SHARDS_DIR,
        )
    else:
        wiring = Wiring(
            source=src,
            source_kind=kind,
            snapshots=snapshots,
            decisions=JsonLinesSink(
                directory / "decisions.jsonl", _counted_decisions(progress, decision_record, metrics)
            ),
            dead_letters=JsonLinesSink(
                directory / "dead_letters.jsonl", _counted_dead_letters(progress, dead_letter_record, metrics)
            ),
            tasks=JsonLinesSink(directory / TASKS_FILE, work_record),
            loads=JsonLinesSink(directory / LOADS_FILE, work_record),
            orders=JsonLinesSink(directory / ORDERS_FILE, work_record),
            clock=clock,
            policy=settings.policy(),
            snapshot_interval=settings.snapshot_interval,
            snapshot_writers=settings.snapshot_writers,
            fold_observer=metrics,
            shards=shards,
            shard_checkpoints=None if recovery_dir is None else recovery_dir / SHARDS_DIR,
        )
    return RunPlan(wiring, settings, recovery_dir, description)


def _recorded_shards(recovery_dir: Path) -> int:
    """The shard count recorded in an existing recovery directory (a new one gets the default).

    A recovery directory without a shard layout was written by the per-position ledger:
    its fold state is one Bytewax row per position. It is refused rather than migrated:
    reading it back goes through Bytewax's own loader, which takes hours past a million
    positions (the reason shards exist), and rebuilding from the input is exact.
    """
    if not recovery_dir.exists():
        return DEFAULT_SHARDS
    shards = read_layout(recovery_dir / SHARDS_DIR)
    if shards is not None:
        return shards
    if any(recovery_dir.glob("part-*.sqlite3")):
        msg = (
            f"{recovery_dir} was written by a ledger that kept one recovery row per position (before shards); "
            f"this ledger keeps positions in shards with their own checkpoints and cannot resume from it. "
            f"Rebuild: run again with --reset, then replay the input from Kafka (from the earliest offset the "
            f"topic still holds) or from the event files"
        )
        raise RecoveryError(msg)
    return DEFAULT_SHARDS
