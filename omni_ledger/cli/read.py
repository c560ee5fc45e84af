"""The commands that read the snapshots: atp, reservations, tasks, loads, orders, snapshots, sql, and maintain."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from ledger.errors import OmniLedgerError
from omni_ledger.cli.common import emit, json_default, settings_of
from omni_ledger.config import parse_duration
from omni_ledger.table import render_table

__all__ = [
    "cmd_atp",
    "cmd_loads",
    "cmd_maintain",
    "cmd_orders",
    "cmd_reservations",
    "cmd_snapshots",
    "cmd_sql",
    "cmd_tasks",
]


def cmd_atp(args: argparse.Namespace) -> int:
    """`omni-ledger atp`: positions of a sku from the latest (or an earlier) snapshot."""
    from adapters.snapshot_store import TABLES, SnapshotReader

    with SnapshotReader.open(settings_of(args).snapshot_dir) as reader:
        info = reader.latest() if args.as_of is None else {"snapshot_id": args.as_of}
        # Both tables at one pinned snapshot: two reads could otherwise straddle a publish.
        pinned = args.as_of if args.as_of is not None else (int(info["snapshot_id"]) if info else None)  # type: ignore[arg-type]
        positions = reader.positions(sku=args.sku, site_id=args.site, as_of=pinned)
        inbound = reader.inbound(sku=args.sku, site_id=args.site, as_of=pinned)
    if args.json:
        print(json.dumps({"snapshot": info, "positions": positions, "inbound": inbound}, default=json_default))
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
        snap += f" (published {json_default(info['created_at'])}, {info['events_applied']:,} events applied)"
    emit(args, positions, TABLES["positions"].shown, f"{args.sku}: {snap}")
    if inbound:
        print()
        emit(args, inbound, TABLES["inbound"].shown, "inbound (availability by date = atp + inbound due)")
    return 0


def cmd_reservations(args: argparse.Namespace) -> int:
    """`omni-ledger reservations`: reservations and their status."""
    from adapters.snapshot_store import TABLES, SnapshotReader

    with SnapshotReader.open(settings_of(args).snapshot_dir) as reader:
        rows = reader.reservations(sku=args.sku, site_id=args.site, as_of=args.as_of)
    emit(args, rows, TABLES["reservations"].shown)
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    """`omni-ledger tasks`: store tasks (pick, prepare a pickup) and their status."""
    from adapters.snapshot_store import TABLES, SnapshotReader

    with SnapshotReader.open(settings_of(args).snapshot_dir) as reader:
        rows = reader.store_tasks(site_id=args.site, status=args.status, as_of=args.as_of)
    emit(args, rows, TABLES["store_tasks"].shown)
    return 0


def cmd_loads(args: argparse.Namespace) -> int:
    """`omni-ledger loads`: parcels on shuttle runs and their status."""
    from adapters.snapshot_store import TABLES, SnapshotReader

    with SnapshotReader.open(settings_of(args).snapshot_dir) as reader:
        rows = reader.transport_loads(run_id=args.run, as_of=args.as_of)
    emit(args, rows, TABLES["transport_loads"].shown)
    return 0


def cmd_orders(args: argparse.Namespace) -> int:
    """`omni-ledger orders`: dropship orders to suppliers and sellers, and their status."""
    from adapters.snapshot_store import TABLES, SnapshotReader

    with SnapshotReader.open(settings_of(args).snapshot_dir) as reader:
        rows = reader.dropship_orders(supplier_id=args.supplier, as_of=args.as_of)
    emit(args, rows, TABLES["dropship_orders"].shown)
    return 0


def cmd_snapshots(args: argparse.Namespace) -> int:
    """`omni-ledger snapshots`: published snapshots still readable with --as-of."""
    from adapters.snapshot_store import TABLES, SnapshotReader

    with SnapshotReader.open(settings_of(args).snapshot_dir) as reader:
        rows = reader.snapshots()
    emit(args, rows, TABLES["snapshot_info"].shown)
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    """`omni-ledger sql`: SQL on the snapshot tables (interactive without -c)."""
    from adapters.snapshot_store import SnapshotReader

    with SnapshotReader.open(settings_of(args).snapshot_dir) as reader:
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
        print(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=json_default))
    elif columns:
        print(render_table(columns, rows))
        print(f"({len(rows):,} rows)")
    return 0


def cmd_maintain(args: argparse.Namespace) -> int:
    """`omni-ledger maintain`: compact small files and expire old snapshots now."""
    from adapters.snapshot_store import SnapshotWriter

    settings = settings_of(args)
    retention = parse_duration(args.retention, "--retention") if args.retention else settings.snapshot_retention
    with SnapshotWriter.open(settings.snapshot_dir) as writer:
        report = dataclasses.asdict(writer.maintain(keep_snapshots_for=retention))
    if args.json:
        print(json.dumps(report, default=json_default))
    else:
        print(render_table(("figure", "value"), list(report.items())))
    return 0
