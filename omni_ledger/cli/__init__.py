"""`omni-ledger`: run the ledger, read its snapshots, serve its API. The parser and `main` are here.

    run.py    omni-ledger run --source sim|kafka|file:PATH[,PATH...] [--follow] [--limit N] [--reset]
    read.py   omni-ledger atp --sku SKU [--site SITE] [--as-of SNAPSHOT] [--json]
              omni-ledger reservations [--sku SKU] [--site SITE] [--as-of SNAPSHOT] [--json]
              omni-ledger tasks [--site SITE] [--status OPEN|DONE|CANCELLED] [--as-of SNAPSHOT] [--json]
              omni-ledger loads [--run RUN] [--as-of SNAPSHOT] [--json]
              omni-ledger orders [--supplier SUPPLIER] [--as-of SNAPSHOT] [--json]
              omni-ledger snapshots [--json]
              omni-ledger sql [-c QUERY]
              omni-ledger maintain [--retention DURATION]
    kafka.py  omni-ledger topics create|list [--partitions N]
              omni-ledger produce --file PATH [--raw] | --sim [--rate N] [--limit N] [--seed N]
    serve.py  omni-ledger serve [--host H] [--port N] [--network FILE] [--bus file|kafka] [--workers N]
              omni-ledger up [--port N] [--snapshot-dir DIR] [--rate N] [--reset] [--no-people]
              omni-ledger people [--url URL] [--network FILE]
              omni-ledger demo [--dir DIR] [--network FILE] [--json]
              omni-ledger open-slots [--days N] [--network FILE] [--bus file|kafka]
              omni-ledger sim-network [--out FILE]

Every command takes --config FILE, --log-format and --log-level; `omni-ledger COMMAND --help` lists the rest.
Exit codes: 0 done, 1 a run or query failed, 2 bad arguments or settings.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ledger.errors import ConfigError, OmniLedgerError
from omni_ledger import logs
from omni_ledger.cli import kafka, read, run, serve

__all__ = ["main"]

_LOG = logging.getLogger("omni_ledger.cli")

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


_COMMANDS = {
    "run": run.cmd_run,
    "atp": read.cmd_atp,
    "reservations": read.cmd_reservations,
    "tasks": read.cmd_tasks,
    "loads": read.cmd_loads,
    "orders": read.cmd_orders,
    "snapshots": read.cmd_snapshots,
    "sql": read.cmd_sql,
    "maintain": read.cmd_maintain,
    "topics": kafka.cmd_topics,
    "produce": kafka.cmd_produce,
    "serve": serve.cmd_serve,
    "up": serve.cmd_up,
    "people": serve.cmd_people,
    "demo": serve.cmd_demo,
    "open-slots": serve.cmd_open_slots,
    "sim-network": serve.cmd_sim_network,
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
