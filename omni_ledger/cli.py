"""`omni-ledger`: run the ledger, read its snapshots.

    omni-ledger run --source file:PATH|sim [--rate N] [--snapshot-dir DIR] [--follow]
    omni-ledger atp --sku SKU [--site SITE] [--as-of SNAPSHOT] [--json]
    omni-ledger reservations [--sku SKU] [--site SITE] [--json]
    omni-ledger tasks [--site SITE] [--status OPEN|DONE|CANCELLED] [--json]
    omni-ledger loads [--run RUN] [--json]
    omni-ledger orders [--supplier SUPPLIER] [--json]
    omni-ledger snapshots [--json]
    omni-ledger sql [-c QUERY]
    omni-ledger maintain
    omni-ledger sim-network [--out FILE]
    omni-ledger up [--port N] [--snapshot-dir DIR] [--rate N] [--reset]

Exit codes: 0 done, 1 a run or query failed, 2 bad arguments or settings.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from ledger.errors import ConfigError, OmniLedgerError
from omni_ledger import logs
from omni_ledger.config import Settings, load_settings, parse_duration
from omni_ledger.table import render_table

if TYPE_CHECKING:
    from adapters.shutdown import StopFlag

__all__ = ["main"]

_LOG = logging.getLogger("omni_ledger.cli")

_POSITION_COLUMNS = (
    "site_id",
    "on_hand",
    "reserved",
    "staged",
    "inbound",
    "safety_stock",
    "atp",
    "negative",
    "version",
    "updated_at",
)
_TASK_COLUMNS = ("task_id", "site_id", "sku", "qty", "kind", "status", "due_at", "zone", "parcel_id", "customer")
_LOAD_COLUMNS = ("parcel_id", "run_id", "origin", "destination", "sku", "qty", "departs_at", "arrives_at", "status")
_ORDER_COLUMNS = ("order_ref", "supplier_id", "deliver_to", "sku", "qty", "due_at", "status", "order_id")
_TASK_STATUSES = ("OPEN", "DONE", "CANCELLED")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omni-ledger", description="Real-time inventory ledger for omnichannel retail."
    )
    parser.add_argument("--config", type=Path, help="TOML settings file (see omni_ledger/config.py for keys)")
    log_help = "log lines on stderr: json (one object a line) or text (default: text on a terminal, else json)"
    parser.add_argument("--log-format", choices=logs.FORMATS, help=log_help)
    parser.add_argument("--log-level", type=str.upper, choices=logs.LEVELS, help="default INFO")
    # --config and the log options are accepted after the command too: `omni-ledger run --config f.toml ...`.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML settings file")
    common.add_argument("--log-format", choices=logs.FORMATS, default=argparse.SUPPRESS, help=log_help)
    common.add_argument("--log-level", type=str.upper, choices=logs.LEVELS, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def store_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--snapshot-dir", type=Path, help="snapshot directory (default: var/snapshots)")
        p.add_argument("--json", action="store_true", help="print JSON for machines instead of a table")

    run = _sub(sub, common, "run", help="fold events into ATP and publish snapshots")
    run.add_argument(
        "--source", required=True, help="'sim', 'kafka', or 'file:PATH[,PATH...]' (JSON lines or Avro files)"
    )
    run.add_argument("--bootstrap", help="Kafka bootstrap servers (default from kafka.bootstrap)")
    run.add_argument("--until-end", action="store_true", help="kafka: stop at the end of every partition")
    run.add_argument("--rate", type=int, help="simulator events per second (default 2000)")
    run.add_argument("--seed", type=int, help="simulator seed")
    run.add_argument("--limit", type=int, help="simulator: stop after this many events")
    run.add_argument(
        "--follow",
        action="store_true",
        help="file: keep tailing for appended lines; sim: also fold the API's inbox (SNAPSHOT_DIR/inbox.jsonl)",
    )
    run.add_argument(
        "--clock",
        choices=("auto", "wall", "event"),
        help="ledger clock (default: event for a file replay, wall for sim and --follow)",
    )
    run.add_argument("--workers", type=int, help="Bytewax workers in this process")
    run.add_argument("--process-id", type=int, help="this process's index in a cluster (0..N-1), with --addresses")
    run.add_argument(
        "--addresses", help="a cluster's processes, 'host:port;host:port' in process-id order (docs/scaling.md)"
    )
    run.add_argument("--snapshot-writers", type=int, help="snapshot writers sharing the catalog (default 1)")
    run.add_argument("--snapshot-interval", help="e.g. 500ms, 1s (default 1s)")
    run.add_argument("--lateness-window", help="e.g. 24h (default 24h)")
    run.add_argument("--no-recovery", action="store_true", help="do not keep recovery state (a restart starts over)")
    run.add_argument("--reset", action="store_true", help="delete the snapshot directory's previous state first")
    run.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    _metrics_args(run)
    store_args(run)

    atp = _sub(sub, common, "atp", help="positions of a sku from the latest (or an earlier) snapshot")
    atp.add_argument("--sku", required=True, help="the sku to show, e.g. SKU-00042 (simulator) or PHONE-B (demo)")
    atp.add_argument("--site", help="one site id only (default: every site holding the sku)")
    atp.add_argument("--as-of", type=int, metavar="SNAPSHOT", help="a snapshot id from `omni-ledger snapshots`")
    store_args(atp)

    res = _sub(sub, common, "reservations", help="reservations and their status")
    res.add_argument("--sku")
    res.add_argument("--site")
    res.add_argument("--as-of", type=int, metavar="SNAPSHOT")
    store_args(res)

    tasks = _sub(sub, common, "tasks", help="store tasks (pick, prepare a pickup) and their status")
    tasks.add_argument("--site")
    tasks.add_argument("--status", type=str.upper, choices=_TASK_STATUSES, help="OPEN, DONE or CANCELLED")
    tasks.add_argument("--as-of", type=int, metavar="SNAPSHOT")
    store_args(tasks)

    loads = _sub(sub, common, "loads", help="parcels on shuttle runs and their status")
    loads.add_argument("--run", help="one shuttle run id")
    loads.add_argument("--as-of", type=int, metavar="SNAPSHOT")
    store_args(loads)

    orders = _sub(sub, common, "orders", help="dropship orders to suppliers and sellers, and their status")
    orders.add_argument("--supplier", help="one supplier or seller site id")
    orders.add_argument("--as-of", type=int, metavar="SNAPSHOT")
    store_args(orders)

    snaps = _sub(sub, common, "snapshots", help="published snapshots still readable with --as-of")
    store_args(snaps)

    sql = _sub(sub, common, "sql", help="SQL on the snapshot tables (interactive without -c)")
    sql.add_argument("-c", "--command", dest="query", help="run one query and exit")
    store_args(sql)

    topics = _sub(sub, common, "topics", help="create or list the Kafka topics")
    topics.add_argument("action", choices=("create", "list"))
    topics.add_argument("--bootstrap")
    topics.add_argument("--partitions", type=int, help="partitions of each new topic (default kafka.partitions)")
    topics.add_argument("--json", action="store_true")

    produce = _sub(sub, common, "produce", help="load events into the Kafka input topic")
    what = produce.add_mutually_exclusive_group(required=True)
    what.add_argument("--file", type=Path, help="JSON lines: each valid event is sent as Avro, keyed site_id|sku")
    what.add_argument("--sim", action="store_true", help="the built-in simulator, at --rate for --limit events")
    produce.add_argument("--raw", action="store_true", help="--file: send each line's bytes as they are")
    produce.add_argument("--rate", type=int, help="--sim: events per second (default simulator.rate)")
    produce.add_argument("--limit", type=int, help="--sim: stop after this many events (default: until Ctrl-C)")
    produce.add_argument("--seed", type=int, help="--sim: simulator seed (default: a new one each run, so ids differ)")
    produce.add_argument("--bootstrap")
    produce.add_argument("--json", action="store_true")

    serve = _sub(sub, common, "serve", help="the HTTP API: availability, promise, confirm, tasks, loads")
    serve.add_argument("--host", help="listen address (default serve.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default serve.port, 8080)")
    serve.add_argument("--network", type=Path, help="network file (default serve.network, examples/network.toml)")
    serve.add_argument("--bus", choices=("file", "kafka"), help="where confirms go (default serve.bus, file)")
    serve.add_argument("--snapshot-dir", type=Path, help="snapshot directory (default: var/snapshots)")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes, each with its own read model (docs/serving.md)"
    )
    _metrics_args(serve)

    up = _sub(
        sub,
        common,
        "up",
        help="the whole embedded system: the simulated retailer's flow, the API and console, simulated people",
    )
    up.add_argument("--host", help="API and console listen address (default serve.host, 127.0.0.1)")
    up.add_argument("--port", type=int, help="API and console TCP port (default serve.port, 8080)")
    up.add_argument("--snapshot-dir", type=Path, help="snapshot directory (default: var/snapshots)")
    up.add_argument("--network-out", type=Path, help="the simulator's network file to write (default DIR/network.toml)")
    up.add_argument("--rate", type=int, help="simulator events per second (default simulator.rate)")
    up.add_argument("--flow-metrics-port", type=int, default=9610, help="the flow's /metrics port (0: none)")
    up.add_argument("--api-metrics-port", type=int, default=9611, help="the API's /metrics port (0: none)")
    up.add_argument("--no-people", action="store_true", help="no simulated customers, clerks or drivers")
    up.add_argument("--customer-every", type=float, default=15.0, help="mean seconds between two simulated customers")
    up.add_argument("--reset", action="store_true", help="start from an empty store (else continue the last run)")
    up.add_argument("--stop-timeout", type=float, default=25.0, help="seconds a part has to stop before it is killed")

    people = _sub(sub, common, "people", help="simulated customers, clerks and drivers acting on a running API")
    people.add_argument("--url", default="http://127.0.0.1:8080", help="the API's base URL")
    people.add_argument("--network", type=Path, help="the API's network file (default serve.network)")
    people.add_argument("--customer-every", type=float, default=15.0, help="mean seconds between two customers")
    people.add_argument("--leave-every", type=int, default=4, help="stores at an index multiple of N wait for a person")
    people.add_argument("--seed", type=int, default=7, help="the people's seed")
    # Accepted and unused: every part of `omni-ledger up` is given the same directory.
    people.add_argument("--snapshot-dir", type=Path, help=argparse.SUPPRESS)

    demo = _sub(sub, common, "demo", help="Mme Martin's visit, end to end through the real fold")
    demo.add_argument("--dir", type=Path, default=Path("var/demo"), help="a scratch directory (emptied first)")
    demo.add_argument("--network", type=Path, default=Path("examples/network.toml"), help="the demo network")
    demo.add_argument("--json", action="store_true", help="print the steps as JSON")

    slots = _sub(sub, common, "open-slots", help="open stores' appointment capacity for the coming days")
    slots.add_argument("--days", type=int, default=7, help="how many days ahead, from today (default 7)")
    slots.add_argument("--network", type=Path, help="network file (default serve.network)")
    slots.add_argument("--bus", choices=("file", "kafka"), help="where the events go (default serve.bus, file)")
    store_args(slots)

    simnet = _sub(sub, common, "sim-network", help="the simulator's network as a network file, for serve --network")
    simnet.add_argument("--out", type=Path, help="write it to this file (default: standard output)")

    maintain = _sub(sub, common, "maintain", help="compact small files and expire old snapshots now")
    maintain.add_argument("--retention", help="keep snapshots this long (default from settings, 7d)")
    store_args(maintain)
    return parser


def _sub(sub: Any, common: argparse.ArgumentParser, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, parents=[common], **kwargs)
    return parser


def _metrics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics on this port (default metrics.port; 0: none)")
    p.add_argument("--metrics-host", help="listen address of /metrics (default metrics.host, 127.0.0.1)")


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config).with_overrides(
        snapshot_dir=getattr(args, "snapshot_dir", None),
        metrics_port=getattr(args, "metrics_port", None),
        metrics_host=getattr(args, "metrics_host", None),
        log_format=getattr(args, "log_format", None),
        log_level=getattr(args, "log_level", None),
    )
    logs.configure(settings.logging.format, settings.logging.level)  # type: ignore[arg-type]  # checked by Settings
    return settings


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def _emit(args: argparse.Namespace, rows: list[dict[str, Any]], columns: Sequence[str], title: str = "") -> None:
    if args.json:
        print(json.dumps(rows, default=_json_default, indent=None))
        return
    if title:
        print(title)
    if not rows:
        print("(no rows)")
        return
    print(render_table(columns, [[row.get(c) for c in columns] for row in rows]))


def _cmd_run(args: argparse.Namespace) -> int:
    from adapters.shutdown import StopFlag, install_interrupt_handler
    from omni_ledger.bootstrap import plan_run, reset_store
    from omni_ledger.metrics import flow_metrics, serve_metrics
    from omni_ledger.progress import Progress, ProgressPrinter
    from omni_ledger.runner import run

    settings = _settings(args).with_overrides(
        bootstrap=args.bootstrap,
        rate=args.rate,
        seed=args.seed,
        clock=args.clock,
        workers=args.workers,
        process_id=args.process_id,
        addresses=tuple(a.strip() for a in args.addresses.split(";") if a.strip()) if args.addresses else None,
        snapshot_writers=args.snapshot_writers,
        recovery=False if args.no_recovery else None,
        snapshot_interval=parse_duration(args.snapshot_interval, "--snapshot-interval")
        if args.snapshot_interval
        else None,
        lateness_window=parse_duration(args.lateness_window, "--lateness-window") if args.lateness_window else None,
    )
    if args.reset:
        reset_store(settings.snapshot_dir)
    progress = Progress()
    stop = StopFlag()
    # Always counted (about 1.3 us per event on the worker), so logs and the summary do not
    # depend on whether a metrics server is asked for.
    metrics = flow_metrics()
    plan = plan_run(
        args.source,
        settings,
        progress,
        follow=args.follow,
        limit=args.limit,
        stop=stop,
        until_end=args.until_end,
        metrics=metrics,
    )
    install_interrupt_handler(stop)
    directory = settings.snapshot_dir.resolve()
    cluster = len(settings.addresses) > 0
    logs.set_context(command="run", flow="omni_ledger_atp", process_id=settings.process_id if cluster else None)
    _LOG.info(
        "reading %s (Ctrl-C ends the input and publishes a last snapshot)",
        plan.description,
        extra={"source": args.source, "workers": settings.workers},
    )
    _LOG.info(
        "snapshots in %s (query: omni-ledger atp --sku SKU --snapshot-dir %s)",
        directory,
        directory,
        extra={"snapshot_dir": str(directory)},
    )
    interrupted = False
    max_age = settings.serve.max_snapshot_age
    structured = logging.getLogger("omni_ledger.progress") if logs.active_format() == "json" else None
    try:
        with (
            serve_metrics(settings.metrics.host, settings.metrics.port, command="run", max_snapshot_age=max_age),
            _signals_while_joining(stop) if cluster else contextlib.nullcontext(),
        ):
            if args.quiet:
                run(plan)
            else:
                # In a cluster each process prints its own line: its figures are what its workers did.
                stream = cast(TextIO, _Prefixed(sys.stderr, f"[process {settings.process_id}] ")) if cluster else None
                with ProgressPrinter(progress, log=structured, stream=stream):
                    run(plan)
    except KeyboardInterrupt:
        interrupted = True
    summary = {
        **progress.summary(),
        "snapshot_dir": str(directory),
        "stopped_by_signal": stop.is_set(),
        "interrupted": interrupted,
    }
    if cluster:
        # Events applied and snapshots are counted where the snapshot writer runs, decisions
        # and dead letters where their file's writer runs: one process of the cluster each.
        summary |= {"process_id": settings.process_id, "processes": len(settings.addresses)}
    if args.json:
        print(json.dumps(summary))
    else:
        rows = [[k, json.dumps(v) if isinstance(v, dict) else v] for k, v in summary.items()]
        print(render_table(("figure", "value"), rows))
    return 0


_SIGNAL_GRACE_S = 5.0


@contextlib.contextmanager
def _signals_while_joining(stop: StopFlag) -> Iterator[None]:
    """Exit at once on SIGINT/SIGTERM that the main thread cannot take: it waits for the cluster.

    While a process waits for the other processes of its cluster to join, Bytewax holds
    the main thread in Rust, so Python's signal handler (which ends the input, see
    adapters/shutdown.py) cannot run: Ctrl-C or a SIGTERM (Kubernetes stopping a pod)
    would be ignored until the others come. The signal still reaches this wake-up
    socket; if the handler has not run within a few seconds, nothing has started that a
    graceful stop could save, and the process exits. Once the dataflow runs, Bytewax
    checks for signals every millisecond and the handler runs as usual.
    """
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            try:
                received = reader.recv(16)
            except OSError:
                return
            if not received:
                return
            deadline = time.monotonic() + _SIGNAL_GRACE_S
            while not stop.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not stop.is_set():
                signum = received[-1]
                _LOG.error(
                    "stopped by %s while waiting for the other processes of the cluster to join",
                    signal.Signals(signum).name,
                )
                for handler in logging.getLogger().handlers:
                    handler.flush()
                os._exit(128 + signum)

    watcher = threading.Thread(target=watch, name="omni-ledger-signal-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        writer.close()
        reader.close()


class _Prefixed:
    """A text stream that starts every line written to it with `prefix`."""

    def __init__(self, stream: Any, prefix: str) -> None:
        self._stream = stream
        self._prefix = prefix

    def write(self, text: str) -> int:
        lines = text.splitlines(keepends=True)
        return self._stream.write("".join(self._prefix + line if line.strip() else line for line in lines))  # type: ignore[no-any-return]

    def flush(self) -> None:
        self._stream.flush()


def _cmd_atp(args: argparse.Namespace) -> int:
    from adapters.snapshots import SnapshotReader

    with SnapshotReader.open(_settings(args).snapshot_dir) as reader:
        info = reader.latest() if args.as_of is None else {"snapshot_id": args.as_of}
        # Both tables at one pinned snapshot: two reads could otherwise straddle a publish.
        pinned = args.as_of if args.as_of is not None else (int(info["snapshot_id"]) if info else None)  # type: ignore[arg-type]
        positions = reader.positions(sku=args.sku, site_id=args.site, as_of=pinned)
        inbound = reader.inbound(sku=args.sku, site_id=args.site, as_of=pinned)
    if args.json:
        print(json.dumps({"snapshot": info, "positions": positions, "inbound": inbound}, default=_json_default))
        return 0
    if not positions and not inbound:
        # Nothing at all: a typo, or a sku of another network; say so and fail, scripts test the code.
        where = f" at {args.site}" if args.site else ""
        msg = (
            f"no position of sku {args.sku!r}{where} in "
            f"{'any snapshot yet' if not info else 'snapshot ' + str(info['snapshot_id'])}; "
            "list the skus with: omni-ledger sql -c 'SELECT DISTINCT sku FROM positions ORDER BY sku LIMIT 20'"
        )
        raise OmniLedgerError(msg)
    snap = "no snapshot yet" if not info else f"snapshot {info['snapshot_id']}"
    if info and "created_at" in info:
        snap += f" (published {_json_default(info['created_at'])}, {info['events_applied']:,} events applied)"
    _emit(args, positions, _POSITION_COLUMNS, f"{args.sku}: {snap}")
    if inbound:
        print()
        _emit(args, inbound, ("site_id", "ref", "eta", "qty"), "inbound (availability by date = atp + inbound due)")
    return 0


def _cmd_reservations(args: argparse.Namespace) -> int:
    from adapters.snapshots import SnapshotReader

    with SnapshotReader.open(_settings(args).snapshot_dir) as reader:
        rows = reader.reservations(sku=args.sku, site_id=args.site, as_of=args.as_of)
    _emit(args, rows, ("reservation_id", "site_id", "sku", "qty", "status", "expires_at", "decided_at"))
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from adapters.snapshots import SnapshotReader

    with SnapshotReader.open(_settings(args).snapshot_dir) as reader:
        rows = reader.store_tasks(site_id=args.site, status=args.status, as_of=args.as_of)
    _emit(args, rows, _TASK_COLUMNS)
    return 0


def _cmd_loads(args: argparse.Namespace) -> int:
    from adapters.snapshots import SnapshotReader

    with SnapshotReader.open(_settings(args).snapshot_dir) as reader:
        rows = reader.transport_loads(run_id=args.run, as_of=args.as_of)
    _emit(args, rows, _LOAD_COLUMNS)
    return 0


def _cmd_orders(args: argparse.Namespace) -> int:
    from adapters.snapshots import SnapshotReader

    with SnapshotReader.open(_settings(args).snapshot_dir) as reader:
        rows = reader.dropship_orders(supplier_id=args.supplier, as_of=args.as_of)
    _emit(args, rows, _ORDER_COLUMNS)
    return 0


def _cmd_snapshots(args: argparse.Namespace) -> int:
    from adapters.snapshots import SnapshotReader

    with SnapshotReader.open(_settings(args).snapshot_dir) as reader:
        rows = reader.snapshots()
    _emit(args, rows, ("snapshot_id", "created_at", "events_applied", "max_occurred_at"))
    return 0


def _cmd_sql(args: argparse.Namespace) -> int:
    from adapters.snapshots import SnapshotReader

    with SnapshotReader.open(_settings(args).snapshot_dir) as reader:
        if args.query:
            return _run_query(reader, args.query, args.json)
        print(
            "omni-ledger sql: tables positions, inbound, reservations, offers, store_tasks, transport_loads, "
            "dropship_orders, snapshot_info. "
            "End a statement with ';'. \\q or Ctrl-D quits.",
            file=sys.stderr,
        )
        buffer = ""
        while True:
            line = _prompt("sql> " if not buffer else "...> ")
            if line is None:
                print(file=sys.stderr)
                return 0
            if line.strip() in {"\\q", "quit", "exit"}:
                return 0
            buffer += line + "\n"
            if buffer.strip().endswith(";"):
                _run_query(reader, buffer, args.json)
                buffer = ""


def _prompt(text: str) -> str | None:
    """A line from the user; the prompt goes to stderr when stdin is piped, so stdout stays data."""
    if sys.stdin.isatty():
        try:
            return input(text)
        except EOFError:
            return None
    sys.stderr.write(text)
    sys.stderr.flush()
    line = sys.stdin.readline()
    return line.rstrip("\n") if line else None


def _run_query(reader: Any, query: str, as_json: bool) -> int:
    try:
        columns, rows = reader.sql(query)
    except OmniLedgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=_json_default))
    elif columns:
        print(render_table(columns, rows))
        print(f"({len(rows):,} rows)")
    return 0


def _cmd_maintain(args: argparse.Namespace) -> int:
    from adapters.snapshots import SnapshotWriter

    settings = _settings(args)
    retention = parse_duration(args.retention, "--retention") if args.retention else settings.snapshot_retention
    with SnapshotWriter.open(settings.snapshot_dir) as writer:
        report = dataclasses.asdict(writer.maintain(keep_snapshots_for=retention))
    if args.json:
        print(json.dumps(report, default=_json_default))
    else:
        print(render_table(("figure", "value"), list(report.items())))
    return 0


def _cmd_topics(args: argparse.Namespace) -> int:
    from adapters.kafka_io import TOPICS, KafkaAdmin

    kafka = _settings(args).with_overrides(bootstrap=args.bootstrap).kafka
    admin = KafkaAdmin(kafka.client_config())
    names = [kafka.topic(name) for name in TOPICS]
    if args.action == "create":
        configs = {kafka.topic(name): config for name, config in TOPICS.items()}
        outcome = admin.create(names, configs, args.partitions or kafka.partitions, kafka.replication)
        existing = admin.topics()
        rows = [{"topic": n, "outcome": outcome[n], "partitions": existing.get(n)} for n in names]
    else:
        existing = admin.topics()
        rows = [
            {"topic": n, "partitions": existing.get(n), "outcome": "present" if n in existing else "missing"}
            for n in names
        ]
    _emit(args, rows, ("topic", "partitions", "outcome"), f"Kafka at {kafka.bootstrap}")
    return 0


def _cmd_produce(args: argparse.Namespace) -> int:
    from omni_ledger.producing import produce_file, produce_simulator

    settings = _settings(args).with_overrides(bootstrap=args.bootstrap, rate=args.rate)
    if args.file is not None:
        report = produce_file(settings.kafka, args.file, raw=args.raw)
    else:
        from adapters.shutdown import StopFlag, install_interrupt_handler

        stop = StopFlag()
        install_interrupt_handler(stop)
        report = produce_simulator(settings, limit=args.limit, stop=stop, seed=args.seed)
    if args.json:
        print(json.dumps(report))
    else:
        print(render_table(("figure", "value"), list(report.items())))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from omni_ledger.metrics import serve_metrics
    from omni_ledger.serving import serve

    settings = _settings(args).with_overrides(host=args.host, port=args.port, network=args.network, bus=args.bus)
    logs.set_context(command="serve")
    _wait_for_snapshot_dir(settings.snapshot_dir)
    base = f"http://{settings.serve.host}:{settings.serve.port}"
    _LOG.info(
        "serving %s: console at %s/console/, OpenAPI at %s/docs (confirms go to the %s bus)",
        settings.snapshot_dir.resolve(),
        base,
        base,
        settings.serve.bus,
    )
    max_age = settings.serve.max_snapshot_age
    try:
        with serve_metrics(settings.metrics.host, settings.metrics.port, command="serve", max_snapshot_age=max_age):
            serve(settings, workers=args.workers)
    except KeyboardInterrupt:
        # uvicorn shut down cleanly, then re-raised the signal: a Ctrl-C is the normal way to stop.
        _LOG.info("server stopped")
    return 0


_SNAPSHOT_DIR_WAIT_S = 15.0


def _wait_for_snapshot_dir(directory: Path) -> None:
    """Return once `directory` exists; a ConfigError if it does not come.

    Never created here: a mistyped directory would be served empty forever while the flow
    writes elsewhere. A flow started at the same time (`make stack`) creates it within
    seconds, so a directory whose parent exists is waited for, briefly.
    """
    deadline = time.monotonic() + (_SNAPSHOT_DIR_WAIT_S if directory.parent.is_dir() else 0.0)
    while not directory.is_dir():
        if time.monotonic() >= deadline:
            msg = (
                f"--snapshot-dir {directory}: no such directory; pass the directory the flow writes "
                "(omni-ledger run --snapshot-dir DIR), or start everything at once with `make run`"
            )
            raise ConfigError(msg)
        time.sleep(0.2)


def _cmd_up(args: argparse.Namespace) -> int:
    from omni_ledger.embedded import http_ok, live_retailer, prepare_live_retailer
    from omni_ledger.supervisor import Supervisor

    settings = _settings(args).with_overrides(host=args.host, port=args.port, rate=args.rate)
    logs.set_context(command="up")
    network_file = args.network_out or settings.snapshot_dir / "network.toml"
    opened = prepare_live_retailer(settings, network_file, reset=args.reset)
    system = live_retailer(
        settings,
        network_file=network_file,
        config_file=args.config,
        people=not args.no_people,
        flow_metrics_port=args.flow_metrics_port,
        api_metrics_port=args.api_metrics_port,
        # The parts write to a pipe: they log as this command does, not as a pipe's reader would want.
        log_format=logs.active_format(),
        customer_every=args.customer_every,
    )
    names = ", ".join(part.name for part in system.parts)
    _LOG.info("starting %s over %s (%d appointment slots opened)", names, settings.snapshot_dir.resolve(), opened)
    sign_in = (
        f"sign in with the write token {system.token}"
        if system.token
        else "sign in with a token from OMNI_LEDGER_SERVE_WRITE_TOKENS"
    )

    def banner() -> None:
        lines = [
            f"omni-ledger is up: console at {system.console_url} ({sign_in})",
            f"  API at {system.console_url.removesuffix('/console/')}/docs",
            f"  Prometheus metrics at {', '.join(system.metrics_urls) or 'none'}",
            f"  snapshots in {settings.snapshot_dir.resolve()}; Ctrl-C stops every part",
        ]
        for line in lines:
            print(line, file=sys.stderr, flush=True)

    supervisor = Supervisor(system.parts, stop_timeout=args.stop_timeout)
    asked = [0.0]

    def ready() -> bool:
        # Once a second at most: each probe is a line in the API's log.
        if time.monotonic() - asked[0] < 1.0:
            return False
        asked[0] = time.monotonic()
        return http_ok(system.health_url, timeout=1.0)

    code = supervisor.run(ready=ready, on_ready=banner)
    if supervisor.failed is not None:
        _LOG.error("stopped because the %s part failed (exit code %d); see its output above", supervisor.failed, code)
        return 1
    _LOG.info("every part stopped")
    return 0


def _cmd_people(args: argparse.Namespace) -> int:
    from adapters.shutdown import StopFlag, install_interrupt_handler
    from ledger.network import load_network
    from omni_ledger.people import People, PeopleConfig

    settings = _settings(args).with_overrides(network=args.network)
    token = os.environ.get("OMNI_LEDGER_PEOPLE_TOKEN", "").strip()
    if not token:
        msg = "OMNI_LEDGER_PEOPLE_TOKEN is not set: give the people one of the API's write tokens"
        raise ConfigError(msg)
    config = PeopleConfig(
        url=args.url, token=token, seed=args.seed, customer_every=args.customer_every, leave_every=args.leave_every
    )
    people = People(config, load_network(settings.serve.network))
    logs.set_context(command="people")
    left = ", ".join(sorted(people.left_to_people)) or "none"
    _LOG.info("customers, clerks and drivers acting on %s; stores left to a person in the console: %s", args.url, left)
    stop = StopFlag()
    install_interrupt_handler(stop)
    people.run(stop)
    _LOG.info("people stopped: %s", json.dumps(people.done))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from omni_ledger.demo import run_demo

    run_demo(args.dir, args.network, as_json=args.json)
    return 0


def _cmd_open_slots(args: argparse.Namespace) -> int:
    import time

    from ledger.confirm import open_slots_events
    from ledger.network import DAY_MS, load_network
    from omni_ledger.serving import open_inbox

    if not 1 <= args.days <= 60:
        msg = f"--days must be within 1..60, got {args.days}"
        raise ConfigError(msg)
    settings = _settings(args).with_overrides(network=args.network, bus=args.bus)
    network = load_network(settings.serve.network)
    now = time.time_ns() // 1_000_000
    events = open_slots_events(network, now, now + args.days * DAY_MS, now)
    inbox = open_inbox(settings)
    try:
        inbox.send(events)
    finally:
        inbox.close()
    stores = len({e.site_id for e in events})
    rows = [{"events": len(events), "stores": stores, "days": args.days, "sent_to": inbox.description}]
    _emit(args, rows, ("events", "stores", "days", "sent_to"))
    return 0


def _cmd_sim_network(args: argparse.Namespace) -> int:
    from simulator.network import network_toml, simulated_network

    settings = _settings(args).simulator
    network = simulated_network(settings.sim_config())
    source = f"the network file {settings.network}" if settings.network else "the simulator's generated sites"
    text = network_toml(network, title=f"The simulator's network ({source}), written by `omni-ledger sim-network`.")
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    except OSError as exc:
        msg = f"--out {args.out}: cannot write the network file: {exc.strerror}; pass a writable path"
        raise ConfigError(msg) from exc
    sizes = len(network.sites), len(network.lanes)
    _LOG.info("wrote the simulator's network to %s (%d sites, %d lanes)", args.out, *sizes)
    return 0


_COMMANDS = {
    "run": _cmd_run,
    "atp": _cmd_atp,
    "reservations": _cmd_reservations,
    "tasks": _cmd_tasks,
    "loads": _cmd_loads,
    "orders": _cmd_orders,
    "snapshots": _cmd_snapshots,
    "sql": _cmd_sql,
    "maintain": _cmd_maintain,
    "topics": _cmd_topics,
    "produce": _cmd_produce,
    "serve": _cmd_serve,
    "up": _cmd_up,
    "people": _cmd_people,
    "demo": _cmd_demo,
    "open-slots": _cmd_open_slots,
    "sim-network": _cmd_sim_network,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `omni-ledger` command."""
    args = _parser().parse_args(argv)
    # From the flags alone first, so that an error reading the settings is logged in the same format.
    logs.configure(getattr(args, "log_format", None) or "auto", getattr(args, "log_level", None) or "INFO")
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        _LOG.error("configuration error: %s", exc)
        return 2
    except OmniLedgerError as exc:
        _LOG.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        _LOG.warning("interrupted")
        return 130
    except BrokenPipeError:
        # `omni-ledger snapshots | head`: the reader has what it wanted. Python would print a
        # traceback flushing stdout at exit; point stdout at /dev/null first (Python docs, SIGPIPE).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
