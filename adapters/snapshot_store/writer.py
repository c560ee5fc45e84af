"""The snapshot store: DuckLake tables of positions that other processes can query.

This module is the only one that imports duckdb. `SnapshotWriter`s (the flow's sink
partitions) publish what the fold emitted as DuckLake snapshots; any number of
`SnapshotReader`s, in any process, read committed snapshots, the latest or an older one
(`as_of`).

Layout of a store directory `DIR`:

    DIR/catalog.sqlite        DuckLake catalog: a SQLite database in WAL mode (the default)
    DIR/store.json            which catalog and how many writers, when not the default
                              (a PostgreSQL catalog, or several writers): readers find
                              the catalog here
    DIR/data/                 Parquet data and delete files written by DuckLake
    DIR/.writer.lock          held (flock) by the open SnapshotWriter (writer i of several:
                              DIR/.writer-{i}.lock)
    DIR/.commit.lock          several writers on a SQLite catalog take turns on it
    DIR/heartbeat.json        the newest snapshot is current as of ... (several writers:
                              DIR/heartbeat-{i}.json each)

Why a SQLite catalog in WAL mode (measured with DuckDB 1.5.5, see the stack facts sheet):
a DuckDB-file catalog is locked by the process that attaches it, so no other process can
attach it, not even READ_ONLY. A SQLite catalog can be read by other processes while the
writer commits; in SQLite's default journal mode a reader polling every 50 ms cut the
writer from 52 to 5 commits/s, in WAL mode the writer kept 38 commits/s and the reader
saw every snapshot, with no errors. WAL is a property of the file, set once when the
store is created.

Several writers on one catalog (`writers` > 1, a flow scaled out: each writer owns the
(site, sku) keys the flow routes to it). Measured with DuckDB 1.5.5 / DuckLake 1.0, two
processes MERGE-ing disjoint keys into one table: on PostgreSQL 8 of 40 commits failed
"Transaction conflict - attempting to insert into table ... but another transaction has
deleted from it" (DuckLake checks inserts against deletes per table, not per key, and
does not retry a logical conflict); on SQLite 3 of 40 failed "database is locked" (no
busy timeout, no retry). So each writer has its own tables (`positions_w0`,
`positions_w1`, ...) and the public names are DuckLake views over their UNION ALL,
created with them: readers query `positions`, `AT (VERSION => n)` included (a view read
at a version reads its tables at that version). Writers only ever insert into the one
shared table, `snapshot_log`. With per-writer tables, two writers on PostgreSQL committed
40 of 40 each (DuckLake retries the race for the next snapshot id itself); on SQLite they
still failed "database is locked" unless each whole transaction (BEGIN to COMMIT) takes
its turn on DIR/.commit.lock, so with SQLite the writers stage and coalesce in parallel
and write one at a time (one host). A PostgreSQL catalog is the one for a cluster.

Public tables (a contract for other processes; `omni-ledger` readers rely on it):

    positions(site_id, sku, on_hand, reserved, staged, inbound, safety_stock, atp,
              negative, version, updated_at)
    inbound(site_id, sku, ref, eta, qty, promised)
    reservations(reservation_id, site_id, sku, qty, status, expires_at, decided_at)
    offers(seller_id, sku, qty, price, lead_time_days, updated_at)
    store_tasks(task_id, site_id, sku, qty, kind, status, rank, reservation_id, order_id,
                customer, zone, parcel_id, run_id, deliver_to, departs_at, due_at,
                appointment_at, plan, updated_at)
    transport_loads(parcel_id, run_id, origin, destination, sku, qty, departs_at,
                    arrives_at, status, rank, reservation_id, order_id, customer, plan,
                    updated_at)
    dropship_orders(order_ref, supplier_id, deliver_to, sku, qty, due_at, status, rank,
                    order_id, customer, plan, updated_at)
    snapshot_info(snapshot_id, created_at, events_applied, max_occurred_at)

With several writers they are views (same columns), and `snapshot_info` has one row per
publish of any writer, plus a `writer` column; its `events_applied` is the store's total
at that snapshot (each writer's latest count, summed).

Integers are BIGINT, times TIMESTAMPTZ (UTC), `negative` and `promised` BOOLEAN, `price`
DOUBLE, `plan` VARCHAR (the fulfilment plan as JSON, times in epoch milliseconds; the
typed readers return it decoded). Every datetime this module returns is timezone-aware UTC.

A store written by an earlier version gets the tables and columns it lacks when a
writer opens it (one snapshot); rows written before a column existed hold its
`_ADDED_COLUMN_DEFAULTS` value, or NULL.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import importlib.resources
import json
import os
import random
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import duckdb

from ledger.contract import fulfilment_to_record
from ledger.errors import SnapshotError
from ledger.events import Millis
from ledger.execution import DropshipOrder, ShuttleLoad, StoreTask, Work
from ledger.outputs import DecisionStatus, OfferTerms, PositionChange, ReservationDecision

__all__ = [
    "POSITION_COLUMNS",
    "MaintenanceReport",
    "SnapshotReader",
    "SnapshotWriter",
    "StoreLayout",
    "drop_store",
    "read_heartbeat",
    "store_exists",
]

CATALOG_FILE = "catalog.sqlite"
MANIFEST_FILE = "store.json"
DATA_DIR = "data"
LOCK_FILE = ".writer.lock"
COMMIT_LOCK_FILE = ".commit.lock"
HEARTBEAT_FILE = "heartbeat.json"
LAKE = "lake"
POSTGRES_PREFIX = "postgres:"
# With several writers: the one table all of them insert into, one row per publish.
SNAPSHOT_LOG = "snapshot_log"

# Extension name as LOAD knows it -> (PyPI package holding the file, file name in it).
# The sqlite file must be installed under the name `sqlite_scanner`: INSTALL does that,
# LOAD of the original file fails on its entrypoint name.
_EXTENSIONS = {
    "ducklake": ("duckdb_extension_ducklake", "ducklake.duckdb_extension"),
    "sqlite_scanner": ("duckdb_extension_sqlite", "sqlite.duckdb_extension"),
    # Loaded only for a PostgreSQL catalog; its package names the file as LOAD wants it.
    "postgres_scanner": ("duckdb_extension_postgres_scanner", "postgres_scanner.duckdb_extension"),
}
_ALWAYS = ("ducklake", "sqlite_scanner")

# A commit that lost a race with another writer is tried again from BEGIN (its staged
# rows kept), this many times with a growing, jittered pause. DuckLake's own retry (the
# race for the next snapshot id) comes first, inside each attempt.
_COMMIT_ATTEMPTS = 8
_TRANSIENT = ("database is locked", "transaction conflict", "could not serialize", "deadlock detected", "duplicate key")

# Column name -> SQL type. "MILLIS" columns travel as epoch milliseconds and are stored
# as TIMESTAMPTZ; the others are stored as written.
_Columns = tuple[tuple[str, str], ...]

_POSITIONS: _Columns = (
    ("site_id", "VARCHAR"),
    ("sku", "VARCHAR"),
    ("on_hand", "BIGINT"),
    ("reserved", "BIGINT"),
    ("staged", "BIGINT"),
    ("inbound", "BIGINT"),
    ("safety_stock", "BIGINT"),
    ("atp", "BIGINT"),
    ("negative", "BOOLEAN"),
    ("version", "BIGINT"),
    ("updated_at", "MILLIS"),
)
POSITION_COLUMNS: tuple[str, ...] = tuple(name for name, _ in _POSITIONS)
"""The positions table's columns, in order."""

_INBOUND: _Columns = (
    ("site_id", "VARCHAR"),
    ("sku", "VARCHAR"),
    ("ref", "VARCHAR"),
    ("eta", "MILLIS"),
    ("qty", "BIGINT"),
    ("promised", "BOOLEAN"),
)
_RESERVATIONS: _Columns = (
    ("reservation_id", "VARCHAR"),
    ("site_id", "VARCHAR"),
    ("sku", "VARCHAR"),
    ("qty", "BIGINT"),
    ("status", "VARCHAR"),
    ("expires_at", "MILLIS"),
    ("decided_at", "MILLIS"),
)
_OFFERS: _Columns = (
    ("seller_id", "VARCHAR"),
    ("sku", "VARCHAR"),
    ("qty", "BIGINT"),
    ("price", "DOUBLE"),
    ("lead_time_days", "BIGINT"),
    ("updated_at", "MILLIS"),
)
_STORE_TASKS: _Columns = (
    ("task_id", "VARCHAR"),
    ("site_id", "VARCHAR"),
    ("sku", "VARCHAR"),
    ("qty", "BIGINT"),
    ("kind", "VARCHAR"),
    ("status", "VARCHAR"),
    ("rank", "BIGINT"),
    ("reservation_id", "VARCHAR"),
    ("order_id", "VARCHAR"),
    ("customer", "VARCHAR"),
    ("zone", "VARCHAR"),
    ("parcel_id", "VARCHAR"),
    ("run_id", "VARCHAR"),
    ("deliver_to", "VARCHAR"),
    ("departs_at", "MILLIS"),
    ("due_at", "MILLIS"),
    ("appointment_at", "MILLIS"),
    ("plan", "VARCHAR"),
    ("updated_at", "MILLIS"),
)
_TRANSPORT_LOADS: _Columns = (
    ("parcel_id", "VARCHAR"),
    ("run_id", "VARCHAR"),
    ("origin", "VARCHAR"),
    ("destination", "VARCHAR"),
    ("sku", "VARCHAR"),
    ("qty", "BIGINT"),
    ("departs_at", "MILLIS"),
    ("arrives_at", "MILLIS"),
    ("status", "VARCHAR"),
    ("rank", "BIGINT"),
    ("reservation_id", "VARCHAR"),
    ("order_id", "VARCHAR"),
    ("customer", "VARCHAR"),
    ("plan", "VARCHAR"),
    ("updated_at", "MILLIS"),
)
_DROPSHIP_ORDERS: _Columns = (
    ("order_ref", "VARCHAR"),
    ("supplier_id", "VARCHAR"),
    ("deliver_to", "VARCHAR"),
    ("sku", "VARCHAR"),
    ("qty", "BIGINT"),
    ("due_at", "MILLIS"),
    ("status", "VARCHAR"),
    ("rank", "BIGINT"),
    ("order_id", "VARCHAR"),
    ("customer", "VARCHAR"),
    ("plan", "VARCHAR"),
    ("updated_at", "MILLIS"),
)
_SNAPSHOT_INFO: _Columns = (
    ("snapshot_id", "BIGINT"),
    ("created_at", "MILLIS"),
    ("events_applied", "BIGINT"),
    ("max_occurred_at", "MILLIS"),
)
# With several writers, snapshot_info is a view over this table: its snapshot_id is
# DuckLake's `snapshot_id` virtual column (the snapshot that inserted the row), exact
# even when DuckLake renumbered a commit that lost the race for the next id.
_SNAPSHOT_LOG_COLUMNS: _Columns = (
    ("writer", "BIGINT"),
    ("created_at", "MILLIS"),
    ("events_applied", "BIGINT"),
    ("max_occurred_at", "MILLIS"),
)
_TABLES: dict[str, tuple[_Columns, tuple[str, ...]]] = {
    # table -> (columns, key columns); key columns are declared NOT NULL
    "positions": (_POSITIONS, ("site_id", "sku")),
    "inbound": (_INBOUND, ("site_id", "sku")),
    "reservations": (_RESERVATIONS, ("reservation_id",)),
    "offers": (_OFFERS, ("seller_id", "sku")),
    "store_tasks": (_STORE_TASKS, ("task_id",)),
    "transport_loads": (_TRANSPORT_LOADS, ("parcel_id",)),
    "dropship_orders": (_DROPSHIP_ORDERS, ("order_ref",)),
    "snapshot_info": (_SNAPSHOT_INFO, ("snapshot_id",)),
}
# (table, column) -> what rows written before the column existed hold (a SQL literal:
# DuckLake adds columns with literal defaults only). Stores from before fulfilment plans
# had no promised inbound lines.
_ADDED_COLUMN_DEFAULTS = {("inbound", "promised"): "'false'"}

# maintain() rewrites every data file that has deleted rows (threshold 0). Positions are
# updated in place, so most files carry delete files, and merge_adjacent_files skips
# those: with DuckLake's default threshold (0.95), 2,000 small publishes into 1M
# positions left 227 files (216 with deletes) and reads 2x slower than after a full
# rewrite, which took 0.4 s for 1M positions and left one file. The price: each run
# rewrites the files touched since the last one, up to the whole table.
_REWRITE_DELETED_FRACTION = 0.0

# A stable order for what readers return.
_ORDER = {
    "positions": "site_id, sku",
    "inbound": "site_id, sku, eta, ref",
    "reservations": "reservation_id",
    "offers": "sku, seller_id",
    "store_tasks": "site_id, due_at, task_id",
    "transport_loads": "departs_at, run_id, parcel_id",
    "dropship_orders": "supplier_id, due_at, order_ref",
}
# Tables whose `plan` column the typed readers decode from JSON.
_WITH_PLAN = frozenset({"store_tasks", "transport_loads", "dropship_orders"})

_TERMINAL = tuple(
    s.value
    for s in (
        DecisionStatus.REJECTED,
        DecisionStatus.RELEASED,
        DecisionStatus.FULFILLED,
        DecisionStatus.EXPIRED,
    )
)
_TERMINAL_SQL = ", ".join(f"'{s}'" for s in _TERMINAL)


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    """What one `SnapshotWriter.maintain` call did."""

    files_before: int
    """Parquet files (data and delete files) under DIR/data before maintenance."""
    files_after: int
    inlined_tables_flushed: int
    files_merged: int
    """Files rewritten into larger ones (deletes applied, neighbours merged)."""
    snapshots_expired: int
    files_deleted: int
    oldest_snapshot_id: int
    """The oldest snapshot still readable with `as_of`."""
    seconds: float


_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\\\]|\\\\.)*'|\S+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class StoreLayout:
    """Where a store's DuckLake catalog lives and how many writers share it (DIR/store.json).

    `catalog` "" is SQLite at DIR/catalog.sqlite; "postgres:<libpq conninfo>" is a
    PostgreSQL database (put a password in a passfile, not here: the manifest holds the
    conninfo). `writers` > 1 gives each writer its own tables behind views.
    """

    catalog: str = ""
    writers: int = 1

    def __post_init__(self) -> None:
        if self.catalog and not self.catalog.startswith(POSTGRES_PREFIX):
            msg = (
                f'snapshot catalog {self.described()!r} is not understood: use "" for SQLite in the store '
                f'directory, or "postgres:<libpq conninfo>" (for example "postgres:host=db dbname=ledger")'
            )
            raise SnapshotError(msg)
        if self.writers < 1:
            msg = f"a snapshot store needs at least one writer, got writers={self.writers}"
            raise SnapshotError(msg)

    @property
    def postgres(self) -> bool:
        return bool(self.catalog)

    @property
    def sharded(self) -> bool:
        """Several writers: per-writer tables behind views."""
        return self.writers > 1

    @property
    def default(self) -> bool:
        return not self.postgres and not self.sharded

    def target(self, directory: Path) -> str:
        """What ATTACH takes."""
        if self.postgres:
            return "ducklake:" + self.catalog
        return "ducklake:sqlite:" + str(directory / CATALOG_FILE)

    def table(self, name: str, writer: int) -> str:
        """The physical table a writer writes for public table `name`."""
        if name == "snapshot_info" and self.sharded:
            return SNAPSHOT_LOG
        return f"{name}_w{writer}" if self.sharded else name

    def described(self) -> str:
        """The catalog for messages, password masked."""
        if not self.catalog:
            return "SQLite (catalog.sqlite)"
        return _PASSWORD.sub(r"\1***", self.catalog)

    @classmethod
    def of(cls, directory: Path) -> StoreLayout | None:
        """The layout of the store at `directory`, None when there is none yet."""
        manifest = directory / MANIFEST_FILE
        if manifest.is_file():
            try:
                record = json.loads(manifest.read_text())
                return cls(str(record.get("catalog", "")), int(record.get("writers", 1)))
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                msg = f"cannot read the store manifest {manifest}: {exc}"
                raise SnapshotError(msg) from exc
        if (directory / CATALOG_FILE).is_file():
            return cls()
        return None

    def save(self, directory: Path) -> None:
        """Write DIR/store.json (only for a layout that is not the default), atomically, owner-only."""
        if self.default:
            return
        target = directory / MANIFEST_FILE
        scratch = target.with_name(f".{MANIFEST_FILE}.{os.getpid()}")
        try:
            fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"catalog": self.catalog, "writers": self.writers}, out)
            os.replace(scratch, target)
        except OSError as exc:
            msg = f"cannot write the store manifest {target}: {exc.strerror}"
            raise SnapshotError(msg) from exc


def store_exists(directory: Path) -> bool:
    """Whether a writer has created a store at `directory` (any catalog)."""
    directory = Path(directory)
    return (directory / MANIFEST_FILE).is_file() or (directory / CATALOG_FILE).is_file()


def drop_store(directory: Path) -> None:
    """Delete the store at `directory`: its catalog (a PostgreSQL catalog's DuckLake tables too), data and heartbeats.

    For `--reset`; nothing else in the directory is touched. No writer may have it open.
    """
    directory = Path(directory).resolve()
    layout = StoreLayout.of(directory)
    if layout is not None and layout.postgres:
        con = _connect(directory, layout)
        try:
            conninfo = layout.catalog[len(POSTGRES_PREFIX) :]
            con.execute(f"ATTACH {_sql_literal(conninfo)} AS catalog_db (TYPE postgres)")
            # DuckLake's tables (ducklake_*, inlined data included) in the connection's schema.
            drop = (
                "DO $drop$ DECLARE t record; BEGIN "
                "FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename LIKE 'ducklake\\_%' LOOP "
                "EXECUTE format('DROP TABLE IF EXISTS %I CASCADE', t.tablename); END LOOP; END $drop$"
            )
            con.execute(f"CALL postgres_execute('catalog_db', {_sql_literal(drop)})")
        except duckdb.Error as exc:
            msg = f"cannot drop the DuckLake catalog of {directory} ({layout.described()}): {exc}"
            raise SnapshotError(msg) from exc
        finally:
            con.close()
    for pattern in (CATALOG_FILE, f"{CATALOG_FILE}-wal", f"{CATALOG_FILE}-shm", MANIFEST_FILE, "heartbeat*.json"):
        for path in directory.glob(pattern):
            path.unlink(missing_ok=True)
    for pattern in (".writer*.lock", COMMIT_LOCK_FILE):
        for path in directory.glob(pattern):
            path.unlink(missing_ok=True)
    shutil.rmtree(directory / DATA_DIR, ignore_errors=True)


def _heartbeat_file(directory: Path, layout: StoreLayout, writer: int) -> Path:
    return directory / (f"heartbeat-{writer}.json" if layout.sharded else HEARTBEAT_FILE)


def read_heartbeat(directory: Path) -> tuple[Millis, int | None] | None:
    """When the flow last confirmed its newest snapshot is current, and which snapshot that was.

    With several writers: the oldest of their heartbeats (the store is current only as of
    the slowest writer) and None for the snapshot (each writer knows only its own); None
    while a writer has not beaten yet.
    """
    directory = Path(directory)
    try:
        layout = StoreLayout.of(directory) or StoreLayout()
    except SnapshotError:
        return None
    beats: list[tuple[Millis, int | None]] = []
    for writer in range(layout.writers):
        try:
            record = json.loads(_heartbeat_file(directory, layout, writer).read_text())
            beats.append((int(record["at"]), record.get("snapshot_id")))
        except (OSError, ValueError, KeyError, TypeError):
            return None
    if len(beats) == 1:
        return beats[0]
    return min(at for at, _ in beats), None


@dataclass(frozen=True, slots=True)
class _Staged:
    """Which temp tables a publish staged (step 2), for the commit steps."""

    positions: bool
    inbound: bool
    offers: bool
    reservations: bool
    tasks: bool
    loads: bool
    orders: bool


# --------------------------------------------------------------------------- helpers


def _sql_literal(text: str) -> str:
    """A SQL string literal; ATTACH and INSTALL take no parameters."""
    return "'" + text.replace("'", "''") + "'"


def _storage_type(sql_type: str) -> str:
    return "TIMESTAMPTZ" if sql_type == "MILLIS" else sql_type


def _staged_type(sql_type: str) -> str:
    return "BIGINT" if sql_type == "MILLIS" else sql_type


def _from_millis(expr: str) -> str:
    # timezone('UTC', TIMESTAMP) does not depend on the session's TimeZone setting.
    return f"timezone('UTC', epoch_ms({expr}))"


def _to_utc(row: Iterable[Any]) -> tuple[Any, ...]:
    """The row with every datetime as an aware datetime in `datetime.UTC`."""
    return tuple(v.astimezone(UTC) if isinstance(v, datetime) else v for v in row)


def _millis_to_datetime(ms: Millis) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _file_count(directory: Path) -> int:
    return sum(1 for _ in (directory / DATA_DIR).rglob("*.parquet"))


def _extension_file(package: str, filename: str) -> Path:
    version = duckdb.__version__
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError as exc:
        msg = (
            f"the DuckDB extension package {package!r} is not installed: "
            f"pip install {package.replace('_', '-')}=={version}"
        )
        raise SnapshotError(msg) from exc
    path = Path(str(root / "extensions" / f"v{version}" / filename))
    if not path.is_file():
        msg = (
            f"{package} has no {filename} for duckdb {version} (looked for {path}): "
            f"install {package.replace('_', '-')}=={version}, matching duckdb"
        )
        raise SnapshotError(msg)
    return path


def _loadable(name: str) -> Path:
    """A file `LOAD '<file>'` accepts for extension `name`, without copying 35 MB per store.

    DuckDB wants the file named after the extension's entry point: ducklake's file already
    is; the sqlite one must be called `sqlite_scanner.duckdb_extension`. That name is made
    once per installation as a hard link beside the original (same file system, no copy),
    or, where site-packages is read-only, as a copy in the user's cache.
    """
    package, filename = _EXTENSIONS[name]
    source = _extension_file(package, filename)
    wanted = f"{name}.duckdb_extension"
    if source.name == wanted:
        return source
    candidates = [
        source.with_name(wanted),
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "omni-ledger"
        / f"duckdb-{duckdb.__version__}"
        / wanted,
    ]
    for target in candidates:
        if target.is_file() and target.stat().st_size == source.stat().st_size:
            return target
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{wanted}.{os.getpid()}")
            try:
                os.link(source, partial)
            except OSError:
                shutil.copyfile(source, partial)
            os.replace(partial, target)  # atomic: concurrent first uses never see half a file
            return target
        except OSError:
            continue
    msg = f"cannot place {wanted} beside {source} nor in the user cache; make one of them writable"
    raise SnapshotError(msg)


def _connect(directory: Path, layout: StoreLayout | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with ducklake, sqlite_scanner (postgres_scanner for PostgreSQL), never from the network.

    The extensions are LOADed straight from the installed PyPI packages' files (see
    `_loadable`); autoinstall and autoload stay off so nothing reaches for
    extensions.duckdb.org.
    """
    try:
        con = duckdb.connect(
            ":memory:",
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
        )
    except duckdb.Error as exc:
        msg = f"cannot start DuckDB for the snapshot store at {directory}: {exc}"
        raise SnapshotError(msg) from exc
    try:
        # Results come back in UTC; stored values never depend on it (see _from_millis).
        con.execute("SET TimeZone = 'UTC'")
        for name in (*_ALWAYS, "postgres_scanner") if layout is not None and layout.postgres else _ALWAYS:
            con.execute(f"LOAD {_sql_literal(str(_loadable(name)))}")
        if layout is not None and layout.sharded:
            # Losing the race for the next snapshot id is normal with several writers:
            # try again soon (DuckLake's default first pause is 100 ms).
            con.execute("SET ducklake_retry_wait_ms = 10")
            con.execute("SET ducklake_retry_backoff = 2")
            con.execute("SET ducklake_max_retry_count = 20")
    except duckdb.Error as exc:
        con.close()
        msg = f"cannot load the DuckDB extensions for the snapshot store at {directory}: {exc}"
        raise SnapshotError(msg) from exc
    except SnapshotError:
        con.close()
        raise
    return con


def _attach(con: duckdb.DuckDBPyConnection, directory: Path, layout: StoreLayout, *, read_only: bool) -> None:
    # DuckLake records the data path in the catalog and file paths relative to it. Passing
    # DIR/data with OVERRIDE_DATA_PATH (this session only; the catalog is not rewritten)
    # keeps a store readable and writable after it is copied or moved.
    data_path = _sql_literal(str(directory / DATA_DIR) + os.sep)
    options = f"DATA_PATH {data_path}, OVERRIDE_DATA_PATH true" + (", READ_ONLY" if read_only else "")
    try:
        con.execute(f"ATTACH {_sql_literal(layout.target(directory))} AS {LAKE} ({options})")
        con.execute(f"USE {LAKE}")
    except duckdb.Error as exc:
        detail = _PASSWORD.sub(r"\1***", str(exc))
        msg = f"cannot attach the DuckLake catalog of {directory} ({layout.described()}): {detail}"
        raise SnapshotError(msg) from exc


def _set_wal(catalog: Path) -> None:
    """Create the SQLite catalog file if needed and put it in WAL mode (persists in the file)."""
    try:
        db = sqlite3.connect(catalog, timeout=10)
        try:
            # Switching needs the file to itself (and SQLite does not wait for that), so
            # a store already in WAL mode is left alone: another writer may be using it.
            mode = db.execute("PRAGMA journal_mode").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        msg = f"cannot put the catalog {catalog} in WAL mode: {exc}"
        raise SnapshotError(msg) from exc
    if mode is None or str(mode[0]).lower() != "wal":
        msg = (
            f"the catalog {catalog} stayed in journal mode {mode!r}, expected 'wal': "
            "without WAL, readers in other processes stall the writer"
        )
        raise SnapshotError(msg)


def _dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, object]]:
    names = [d[0] for d in cursor.description or ()]
    return [dict(zip(names, _to_utc(row), strict=True)) for row in cursor.fetchall()]


# ----------------------------------------------------------------------------- writer


class SnapshotWriter:
    """A writer: publishes fold outputs as DuckLake snapshots.

    Open it with `SnapshotWriter.open(directory)`: one writer per store. With
    `writers=N`, N writers (indexes 0..N-1, in this or other processes) share the store,
    each writing its own tables; a second writer with the same index is refused (its
    commits would race for the same rows).
    """

    def __init__(
        self,
        directory: Path,
        con: duckdb.DuckDBPyConnection,
        lock: IO[bytes],
        layout: StoreLayout | None = None,
        writer: int = 0,
    ) -> None:
        """Use `SnapshotWriter.open`."""
        self._dir = directory
        self._con = con
        self._lock = lock
        self._layout = layout or StoreLayout()
        self._index = writer
        self._names = {name: self._layout.table(name, writer) for name in _TABLES}
        self._last_info = self._read_last_info()

    # -- lifecycle

    @classmethod
    def open(cls, directory: Path, *, catalog: str = "", writers: int = 1, writer: int = 0) -> SnapshotWriter:
        """Open the store at `directory` as writer `writer` of `writers`, creating whatever is missing (idempotent).

        `catalog`: "" for SQLite at DIR/catalog.sqlite, "postgres:<libpq conninfo>" for
        PostgreSQL. A store keeps the catalog and writer count it was created with
        (DIR/store.json): opening it with others is refused.
        """
        directory = Path(directory).resolve()
        layout = StoreLayout(catalog, writers)
        if not 0 <= writer < writers:
            msg = f"writer index {writer} is out of range for {writers} writer(s) (0..{writers - 1})"
            raise SnapshotError(msg)
        try:
            (directory / DATA_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create the snapshot store directory {directory}: {exc}"
            raise SnapshotError(msg) from exc
        existing = StoreLayout.of(directory)
        deadline = time.monotonic() + 15
        while existing is not None and existing != layout and existing.default and time.monotonic() < deadline:
            # Another writer of this layout may be creating the store right now: its catalog
            # file appears before its manifest (the manifest comes last, for readers).
            time.sleep(0.1)
            existing = StoreLayout.of(directory)
        if existing is not None and existing != layout:
            msg = (
                f"the snapshot store {directory} was created with the catalog {existing.described()} and "
                f"{existing.writers} writer(s); it cannot be opened with {layout.described()} and "
                f"{layout.writers} writer(s) (keys would move between writers' tables): use the same "
                "settings, or start over with --reset"
            )
            raise SnapshotError(msg)
        lock = cls._take_lock(directory, layout, writer)
        con: duckdb.DuckDBPyConnection | None = None
        try:
            # Extensions first: a reader that sees the catalog file can then load them.
            con = _connect(directory, layout)
            if not layout.postgres:
                with _commit_turn(directory, layout):
                    _set_wal(directory / CATALOG_FILE)
            for attempt in range(_COMMIT_ATTEMPTS):
                try:
                    with _commit_turn(directory, layout):
                        _attach(con, directory, layout, read_only=False)
                    break
                except SnapshotError as exc:
                    # Several writers attaching a new PostgreSQL catalog at once race to
                    # create DuckLake's own tables ("duplicate key", or "relation ... already
                    # exists": seen in CI); the loser attaches what the winner made.
                    if attempt + 1 < _COMMIT_ATTEMPTS and _lost_creation_race(exc):
                        _pause(attempt)
                        continue
                    raise
            cls._create_tables(con, directory, layout)
            # Last: a reader that finds the manifest finds the tables.
            layout.save(directory)
            return cls(directory, con, lock, layout, writer)
        except BaseException:
            if con is not None:
                con.close()
            lock.close()
            raise

    @staticmethod
    def _take_lock(directory: Path, layout: StoreLayout, writer: int) -> IO[bytes]:
        path = directory / (f".writer-{writer}.lock" if layout.sharded else LOCK_FILE)
        lock = path.open("ab")
        try:
            # Released by the OS when the process dies, so a crash never leaves it stale.
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            who = f"writer {writer}" if layout.sharded else "a SnapshotWriter"
            msg = (
                f"another process has {who} of the snapshot store {directory} open "
                f"({path} is locked): each writer index takes one writer; stop the other one"
            )
            raise SnapshotError(msg) from exc
        return lock

    @staticmethod
    def _create_tables(con: duckdb.DuckDBPyConnection, directory: Path, layout: StoreLayout) -> None:
        """Create the missing tables (and views) and add the missing columns, in one snapshot.

        A store written by an earlier version lacks what was added since; nothing is
        dropped or retyped, so its readers keep working. Several writers opening a new
        store at once race to create it: the loser finds the tables on its next attempt.
        """
        for attempt in range(_COMMIT_ATTEMPTS):
            try:
                with _commit_turn(directory, layout):
                    _create_missing(con, layout)
                return
            except duckdb.Error as exc:
                _rollback(con)
                # "already exists": another writer created a table between this writer's
                # look at the catalog and its CREATE (seen on PostgreSQL in CI); the next
                # attempt looks again and finds it.
                if attempt + 1 < _COMMIT_ATTEMPTS and _lost_creation_race(exc):
                    _pause(attempt)
                    continue
                msg = f"cannot create or upgrade the snapshot store tables: {exc}"
                raise SnapshotError(msg) from exc

    def close(self) -> None:
        """Close the connection and release the writer lock."""
        try:
            self._con.close()
        finally:
            self._lock.close()

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- publishing

    def publish(
        self,
        changes: Sequence[PositionChange],
        decisions: Sequence[ReservationDecision],
        work: Sequence[Work] = (),
        *,
        events_applied: int,
        now: Millis,
    ) -> int | None:
        """Write one DuckLake snapshot holding `changes`, `decisions` and `work`; return its id.

        Returns None, writing nothing, when all three are empty. Safe to call again with
        what was already published (at-least-once delivery): an older position version
        changes nothing, nor does work of a rank already stored. `events_applied` is the
        caller's running total.

        Commit order (one transaction, so readers see all of it or none of it):

        1. Coalesce in memory: the highest version per (site, sku), the newest offer per
           (seller, sku), the winning decision per reservation, the highest rank per
           piece of work (equal ranks: the later one).
        2. Stage the rows in temp tables (one JSON parameter per table: cost grows with
           the change, not with the store).
        3. BEGIN (with several writers on SQLite, after taking the commit turn); one
           writer alone reads the current snapshot id: this commit will create id + 1.
        4. Pick the accepted positions: new keys, or a version above the stored one.
        5. Replace the inbound lines of the accepted keys (before 6, which changes the
           versions that 4 compared).
        6. MERGE the accepted positions (the version guard is repeated in the MERGE).
        7. MERGE offers (newer updated_at wins), reservations (last decision wins
           unless the stored one is terminal and newer) and work (store tasks, transport
           loads, dropship orders: a higher rank replaces, new keys are inserted; statuses
           only move forward, so a replayed or redelivered record changes nothing).
        8. INSERT the snapshot_info row (id, events_applied, max_occurred_at); several
           writers: the snapshot_log row (writer, events_applied, max_occurred_at), whose
           id DuckLake records as it commits.
        9. COMMIT, then check DuckLake created the id written in 8; only now may the
           caller advance its input position.

        A commit that lost a race with another writer (a conflict, a locked SQLite
        catalog) is rolled back and steps 3-9 run again with the staged rows, up to
        `_COMMIT_ATTEMPTS` times; a conflict is only a lost race here, never a
        contradiction, because no two writers own the same rows.
        """
        if not changes and not decisions and not work:
            return None
        # 1. Coalesce.
        positions = _latest_versions(changes)
        offers = _latest_offers(changes)
        reservations = _winning_decisions(decisions)
        tasks, loads, orders = _highest_ranks(work)
        max_occurred = max((c.max_occurred_at for c in changes), default=None)
        previous = self._last_info.get("max_occurred_at_ms")
        if isinstance(previous, int) and (max_occurred is None or previous > max_occurred):
            max_occurred = previous
        con = self._con
        try:
            # 2. Stage (temp tables are local to this connection, outside the lake);
            # an empty one is skipped with its statement: each costs ~3 ms.
            has_inbound = any(c.inbound for c in positions)
            if positions:
                _stage_csv(con, "stage_positions", _POSITIONS, _position_rows(positions))
            if has_inbound:
                _stage_csv(con, "stage_inbound", _INBOUND, _inbound_rows(positions))
            if offers:
                _stage(con, "stage_offers", _OFFERS, _offer_rows(offers))
            if reservations:
                _stage(con, "stage_reservations", _RESERVATIONS, _reservation_rows(reservations))
            if tasks:
                _stage(con, "stage_store_tasks", _STORE_TASKS, _task_rows(tasks))
            if loads:
                _stage(con, "stage_transport_loads", _TRANSPORT_LOADS, _load_rows(loads))
            if orders:
                _stage(con, "stage_dropship_orders", _DROPSHIP_ORDERS, _order_rows(orders))
        except duckdb.Error as exc:
            msg = f"cannot stage a publish to the snapshot store {self._dir}: {exc}"
            raise SnapshotError(msg) from exc
        staged = _Staged(
            bool(positions), has_inbound, bool(offers), bool(reservations), bool(tasks), bool(loads), bool(orders)
        )
        for attempt in range(_COMMIT_ATTEMPTS):
            try:
                with _commit_turn(self._dir, self._layout):
                    snapshot_id, committed = self._commit(staged, events_applied, now, max_occurred)
                break
            except SnapshotError:
                _rollback(con)
                raise
            except duckdb.Error as exc:
                _rollback(con)
                if attempt + 1 < _COMMIT_ATTEMPTS and _is_transient(exc):
                    _pause(attempt)
                    continue
                msg = (
                    f"cannot publish {len(positions)} positions, {len(reservations)} reservation "
                    f"decisions, {len(tasks)} store tasks, {len(loads)} transport loads and "
                    f"{len(orders)} dropship orders to the snapshot store {self._dir}"
                    f"{f' (writer {self._index}, attempt {attempt + 1})' if self._layout.sharded else ''}: {exc}"
                )
                raise SnapshotError(msg) from exc
        if snapshot_id is not None and committed != snapshot_id:
            msg = (
                f"published DuckLake snapshot {committed} but recorded it as {snapshot_id} in "
                f"snapshot_info at {self._dir}: another process wrote to the catalog; "
                "the store takes one writer (or open it with writers=N, one index each)"
            )
            raise SnapshotError(msg)
        self._last_info = {
            "snapshot_id": committed,
            "created_at": _millis_to_datetime(now),
            "events_applied": events_applied,
            "max_occurred_at": None if max_occurred is None else _millis_to_datetime(max_occurred),
            "max_occurred_at_ms": max_occurred,
        }
        return committed

    def _commit(
        self, staged: _Staged, events_applied: int, now: Millis, max_occurred: Millis | None
    ) -> tuple[int | None, int]:
        """Steps 3-9 of `publish`: (the id predicted in 3, or None with several writers; the id committed)."""
        con = self._con
        names = self._names
        # 3. Begin; predict the snapshot id (one writer: nobody else commits).
        con.execute("BEGIN")
        snapshot_id = None if self._layout.sharded else _scalar(con, f"SELECT * FROM {LAKE}.current_snapshot()") + 1
        if staged.positions:
            # 4. Accepted positions.
            con.execute(
                "CREATE OR REPLACE TEMP TABLE accepted AS "
                "SELECT s.* FROM stage_positions s "
                f"LEFT JOIN {LAKE}.{names['positions']} p ON p.site_id = s.site_id AND p.sku = s.sku "
                # >=: after a crash the replayed epoch may re-derive a version with other
                # content (live clock, partitions interleaving anew); the fold continues
                # from the replay, so the replay's row is the true one.
                "WHERE p.version IS NULL OR s.version >= p.version"
            )
            if _scalar(con, "SELECT count(*) FROM accepted"):
                # 5. Inbound lines of accepted keys: delete, then insert the new ones.
                inbound = names["inbound"]
                con.execute(
                    f"DELETE FROM {LAKE}.{inbound} USING accepted a "
                    f"WHERE {inbound}.site_id = a.site_id AND {inbound}.sku = a.sku"
                )
                if staged.inbound:
                    # Columns by name: a store upgraded in place has them in another order.
                    inbound_columns = ", ".join(c for c, _ in _INBOUND)
                    con.execute(
                        f"INSERT INTO {LAKE}.{inbound} ({inbound_columns}) "
                        f"SELECT {inbound_columns} FROM stage_inbound i SEMI JOIN accepted a "
                        "ON i.site_id = a.site_id AND i.sku = a.sku"
                    )
                # 6. Positions.
                _merge(con, "positions", names["positions"], "accepted", "s.version >= t.version")
        # 7. Offers, reservations and work.
        if staged.offers:
            _merge(con, "offers", names["offers"], "stage_offers", "s.updated_at > t.updated_at")
        if staged.reservations:
            _merge(
                con,
                "reservations",
                names["reservations"],
                "stage_reservations",
                # Replace unless the stored decision is terminal and newer; at the
                # same instant a terminal status beats a non-terminal one.
                f"NOT (t.status IN ({_TERMINAL_SQL}) AND (t.decided_at > s.decided_at "
                f"OR (t.decided_at = s.decided_at AND s.status NOT IN ({_TERMINAL_SQL}))))",
            )
        for table, present in (
            ("store_tasks", staged.tasks),
            ("transport_loads", staged.loads),
            ("dropship_orders", staged.orders),
        ):
            if present:
                _merge(con, table, names[table], f"stage_{table}", "s.rank > t.rank")
        # 8. The snapshot_info (snapshot_log) row.
        if snapshot_id is None:
            con.execute(
                f"INSERT INTO {LAKE}.{SNAPSHOT_LOG} (writer, created_at, events_applied, max_occurred_at) VALUES "
                f"(?, {_from_millis('?::BIGINT')}, ?, {_from_millis('?::BIGINT')})",
                [self._index, now, events_applied, max_occurred],
            )
        else:
            con.execute(
                f"INSERT INTO {LAKE}.snapshot_info VALUES "
                f"(?, {_from_millis('?::BIGINT')}, ?, {_from_millis('?::BIGINT')})",
                [snapshot_id, now, events_applied, max_occurred],
            )
        # 9. Commit and read the id DuckLake gave it.
        con.execute("COMMIT")
        committed = _scalar(con, f"SELECT * FROM ducklake_last_committed_snapshot('{LAKE}')")
        return snapshot_id, committed

    def heartbeat(self, now: Millis) -> None:
        """Record that the newest snapshot is current as of `now` (DIR/heartbeat.json, replaced atomically).

        Readers take a snapshot's age from this, not from its creation: a ledger with
        nothing new to publish is not stale; one whose flow stopped is. With several
        writers each writes its own (DIR/heartbeat-{i}.json); see `read_heartbeat`.
        """
        info = self._last_info
        record = {"at": now, "snapshot_id": info.get("snapshot_id") if info else None}
        target = _heartbeat_file(self._dir, self._layout, self._index)
        scratch = target.with_suffix(".tmp")
        try:
            scratch.write_text(json.dumps(record))
            os.replace(scratch, target)
        except OSError as exc:
            msg = f"cannot write the heartbeat {target}: {exc.strerror}"
            raise SnapshotError(msg) from exc

    def last_snapshot_info(self) -> dict[str, object] | None:
        """The snapshot_info row of this writer's last publish (None for a store never published)."""
        if not self._last_info:
            return None
        return {k: v for k, v in self._last_info.items() if k != "max_occurred_at_ms"}

    def _read_last_info(self) -> dict[str, object]:
        # Read once at open and then kept in memory: the table grows by a row per publish
        # and publishing must not cost more as it grows.
        if self._layout.sharded:
            query = (
                f"SELECT snapshot_id, created_at, events_applied, max_occurred_at, "
                f"epoch_ms(max_occurred_at) AS max_occurred_at_ms FROM {LAKE}.{SNAPSHOT_LOG} "
                f"WHERE writer = {int(self._index)} ORDER BY snapshot_id DESC LIMIT 1"
            )
        else:
            query = (
                f"SELECT *, epoch_ms(max_occurred_at) AS max_occurred_at_ms "
                f"FROM {LAKE}.snapshot_info ORDER BY snapshot_id DESC LIMIT 1"
            )
        try:
            rows = _dicts(self._con.execute(query))
        except duckdb.Error as exc:
            msg = f"cannot read snapshot_info in the snapshot store {self._dir}: {exc}"
            raise SnapshotError(msg) from exc
        return rows[0] if rows else {}

    # -- maintenance

    def maintain(self, *, keep_snapshots_for: timedelta) -> MaintenanceReport:
        """Compact files and expire old snapshots so reads stay fast over weeks.

        Snapshots older than `keep_snapshots_for` stop being readable with `as_of` and the
        files only they used are deleted. A query reads the snapshot that was current when
        it started, so keep it longer than any reader's query (0 is for tests). Creates
        snapshots of its own (no snapshot_info row), so publish ids after it jump.

        Order: 1. flush inlined rows (small commits live in the catalog) to Parquet;
        2. rewrite files with deleted rows (positions are updated in place, so every
           file collects delete files; merging skips files that have them);
        3. merge adjacent small files; 4. expire the snapshots older than the cutoff
        (never the newest); 5. delete the files no
        snapshot uses any more; 6. delete orphaned files (from failed commits).

        With several writers, 1-3 touch only this writer's tables (writer 0 also the
        shared snapshot_log), so they never conflict with another writer's publish, and
        only writer 0 runs 4-6; 6 then spares files younger than an hour, which may be
        another writer's commit in flight.
        """
        if keep_snapshots_for < timedelta(0):
            msg = f"keep_snapshots_for must not be negative, got {keep_snapshots_for}"
            raise SnapshotError(msg)
        started = time.perf_counter()
        files_before = _file_count(self._dir)
        cutoff = datetime.now(UTC) - keep_snapshots_for
        layout = self._layout
        if layout.sharded:
            own = [name for name, _ in self._names.items() if name != "snapshot_info"]
            tables: list[str | None] = [self._names[name] for name in own]
            if self._index == 0:
                tables.append(SNAPSHOT_LOG)
            orphan_cutoff = min(cutoff, datetime.now(UTC) - timedelta(hours=1))
        else:
            tables = [None]  # the whole lake in one call
            orphan_cutoff = cutoff
        owns_lake = self._index == 0

        def table_args(table: str | None) -> str:
            return "" if table is None else f", {_sql_literal(table)}"

        flushed: list[tuple[Any, ...]] = []
        rewritten: list[tuple[Any, ...]] = []
        merged: list[tuple[Any, ...]] = []
        expired: list[tuple[Any, ...]] = []
        deleted: list[tuple[Any, ...]] = []
        orphans: list[tuple[Any, ...]] = []
        for table in tables:
            # 1.
            flush_args = "" if table is None else f", table_name => {_sql_literal(table)}"
            flushed += self._maintenance_step(f"FROM ducklake_flush_inlined_data('{LAKE}'{flush_args})", [])
            # 2.
            rewritten += self._maintenance_step(
                f"FROM ducklake_rewrite_data_files('{LAKE}'{table_args(table)}, delete_threshold => ?)",
                [_REWRITE_DELETED_FRACTION],
            )
            # 3.
            merged += self._maintenance_step(f"FROM ducklake_merge_adjacent_files('{LAKE}'{table_args(table)})", [])
        if owns_lake:
            # 4. By id: with a SQLite catalog, `older_than` expired every snapshot but the
            # newest, however recent (DuckLake compares the catalog's text timestamps;
            # measured with DuckLake 1.0: `now() - INTERVAL 1 HOUR` expired 4 of 5 snapshots
            # made a second earlier). The newest is never expired.
            try:
                versions = [
                    int(row[0])
                    for row in self._con.execute(
                        f"SELECT snapshot_id FROM {LAKE}.snapshots() WHERE snapshot_time < ? "
                        f"AND snapshot_id < (SELECT max(snapshot_id) FROM {LAKE}.snapshots())",
                        [cutoff],
                    ).fetchall()
                ]
            except duckdb.Error as exc:
                msg = f"maintenance of the snapshot store {self._dir} failed listing snapshots: {exc}"
                raise SnapshotError(msg) from exc
            if versions:
                expired = self._maintenance_step(
                    f"FROM ducklake_expire_snapshots('{LAKE}', versions => ?::UBIGINT[])", [versions]
                )
            # 5.
            deleted = self._maintenance_step(f"FROM ducklake_cleanup_old_files('{LAKE}', older_than => ?)", [cutoff])
            # 6.
            orphans = self._maintenance_step(
                f"FROM ducklake_delete_orphaned_files('{LAKE}', older_than => ?)", [orphan_cutoff]
            )
        try:
            oldest = _scalar(self._con, f"SELECT min(snapshot_id) FROM {LAKE}.snapshots()")
        except duckdb.Error as exc:
            msg = f"maintenance of the snapshot store {self._dir} failed: {exc}"
            raise SnapshotError(msg) from exc
        return MaintenanceReport(
            files_before=files_before,
            files_after=_file_count(self._dir),
            inlined_tables_flushed=len(flushed),
            files_merged=sum(int(r[2]) for r in (*rewritten, *merged)),
            snapshots_expired=len(expired),
            files_deleted=len(deleted) + len(orphans),
            oldest_snapshot_id=oldest,
            seconds=time.perf_counter() - started,
        )

    def _maintenance_step(self, query: str, params: list[object]) -> list[tuple[Any, ...]]:
        """One maintenance call, in the commit turn, tried again when it lost a race."""
        for attempt in range(_COMMIT_ATTEMPTS):
            try:
                with _commit_turn(self._dir, self._layout):
                    return self._con.execute(query, params).fetchall()
            except duckdb.Error as exc:
                _rollback(self._con)
                if attempt + 1 < _COMMIT_ATTEMPTS and _is_transient(exc):
                    _pause(attempt)
                    continue
                msg = f"maintenance of the snapshot store {self._dir} failed: {exc}"
                raise SnapshotError(msg) from exc
        msg = f"maintenance of the snapshot store {self._dir} kept losing races with other writers"
        raise SnapshotError(msg)


def _is_transient(exc: BaseException) -> bool:
    """A lost race with another writer (worth trying again), not a fault."""
    text = str(exc).lower()
    return any(marker in text for marker in _TRANSIENT)


def _lost_creation_race(exc: BaseException) -> bool:
    """A lost race, or another writer creating the same table or catalog first."""
    return _is_transient(exc) or "already exists" in str(exc).lower()


def _pause(attempt: int) -> None:
    # 20, 40, 80 ... ms with jitter, so two losers do not collide again in step.
    time.sleep(0.02 * (2**attempt) * (0.5 + random.random()))


@contextlib.contextmanager
def _commit_turn(directory: Path, layout: StoreLayout) -> Iterator[None]:
    """With several writers on a SQLite catalog, one transaction at a time (DIR/.commit.lock).

    SQLite refuses a second writer ("database is locked", no busy timeout in DuckDB's
    sqlite scanner), even when only the COMMITs are taken in turn (measured: 10 of 80
    commits failed), so the turn spans BEGIN to COMMIT. PostgreSQL needs no turn.
    """
    if not layout.sharded or layout.postgres:
        yield
        return
    with (directory / COMMIT_LOCK_FILE).open("ab") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _physical_tables(layout: StoreLayout) -> dict[str, tuple[str, _Columns, tuple[str, ...]]]:
    """Physical table -> (public name, columns, key columns)."""
    if not layout.sharded:
        return {name: (name, columns, key) for name, (columns, key) in _TABLES.items()}
    tables = {
        layout.table(name, writer): (name, columns, key)
        for name, (columns, key) in _TABLES.items()
        if name != "snapshot_info"
        for writer in range(layout.writers)
    }
    tables[SNAPSHOT_LOG] = ("snapshot_info", _SNAPSHOT_LOG_COLUMNS, ())
    return tables


def _view_sql(name: str, layout: StoreLayout) -> str:
    """The public view `name` over the writers' tables (several writers only)."""
    if name == "snapshot_info":
        # One row per publish; events_applied is the total at that snapshot: each row adds
        # its writer's progress since that writer's previous row (a replay after a crash
        # may go back, then forward again), so the running sum is every writer's latest.
        return (
            "SELECT snapshot_id, created_at, "
            "sum(events_applied - coalesce(previous, 0)) OVER w AS events_applied, "
            "max(max_occurred_at) OVER w AS max_occurred_at, writer "
            "FROM (SELECT snapshot_id, created_at, events_applied, max_occurred_at, writer, "
            "lag(events_applied) OVER (PARTITION BY writer ORDER BY snapshot_id) AS previous "
            f"FROM {SNAPSHOT_LOG}) "
            "WINDOW w AS (ORDER BY snapshot_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
        )
    columns = ", ".join(c for c, _ in _TABLES[name][0])
    return " UNION ALL ".join(f"SELECT {columns} FROM {layout.table(name, writer)}" for writer in range(layout.writers))


def _create_missing(con: duckdb.DuckDBPyConnection, layout: StoreLayout) -> None:
    """Steps of `SnapshotWriter._create_tables`; raises duckdb.Error (a lost race included)."""
    # Look and create in one transaction, so the tables, columns and views appear in one
    # snapshot and a writer that created them meanwhile shows up as a conflict at COMMIT.
    con.execute("BEGIN")
    tables = {
        name
        for (name,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [LAKE]).fetchall()
    }
    views = {
        name
        for (name,) in con.execute("SELECT view_name FROM duckdb_views() WHERE database_name = ?", [LAKE]).fetchall()
    }
    existing: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = ?", [LAKE]
    ).fetchall():
        if table in tables:
            existing.setdefault(table, set()).add(column)
    wanted = _physical_tables(layout)
    missing = [name for name in wanted if name not in tables]
    added = [
        (name, public, col, typ)
        for name, (public, columns, _) in wanted.items()
        if name in tables
        for col, typ in columns
        if col not in existing.get(name, set())
    ]
    stale_views = [name for name in _TABLES if name not in views or missing or added] if layout.sharded else []
    if not missing and not added and not stale_views:
        con.execute("ROLLBACK")  # no empty snapshot for a re-open
        return
    for name in missing:
        _, columns, key = wanted[name]
        cols = ", ".join(f"{col} {_storage_type(typ)}" + (" NOT NULL" if col in key else "") for col, typ in columns)
        con.execute(f"CREATE TABLE {LAKE}.{name} ({cols})")
    for name, public, col, typ in added:
        default = _ADDED_COLUMN_DEFAULTS.get((public, col))
        con.execute(
            f"ALTER TABLE {LAKE}.{name} ADD COLUMN {col} {_storage_type(typ)}"
            + (f" DEFAULT {default}" if default is not None else "")
        )
    for name in stale_views:
        con.execute(f"CREATE OR REPLACE VIEW {LAKE}.{name} AS {_view_sql(name, layout)}")
    con.execute("COMMIT")


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    # Fails only when no transaction is open: then there is nothing to undo.
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")


def _scalar(con: duckdb.DuckDBPyConnection, query: str) -> int:
    row = con.execute(query).fetchone()
    if row is None or row[0] is None:
        msg = f"the snapshot store returned no value for: {query}"
        raise SnapshotError(msg)
    return int(row[0])


def _stage(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: _Columns,
    rows: Mapping[str, list[Any]],
) -> None:
    """(Re)create a temp table holding `rows` (column name -> values).

    The values travel as one JSON string parameter: binding Python lists (executemany,
    unnest of list parameters, multi-row VALUES) cost about 50 us per value on this
    duckdb build, 5.7 s for 10,000 positions; JSON costs 25 ms.
    """
    shape = json.dumps({name: [_staged_type(typ)] for name, typ in columns})
    unnested = ", ".join(f"unnest(j.{name}) AS {name}" for name, _ in columns)
    converted = ", ".join(f"{_from_millis(name)} AS {name}" if typ == "MILLIS" else name for name, typ in columns)
    try:
        payload = json.dumps(rows, allow_nan=False)
    except ValueError as exc:
        msg = f"cannot publish to {table}: a number is NaN or infinite (JSON has neither)"
        raise SnapshotError(msg) from exc
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {table} AS "
        f"WITH p AS (SELECT from_json(?, {_sql_literal(shape)}) AS j), "
        f"u AS (SELECT {unnested} FROM p) "
        f"SELECT {converted} FROM u",
        [payload],
    )


def _stage_csv(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: _Columns,
    rows: Mapping[str, list[Any]],
) -> None:
    """`_stage` through a temporary CSV file, for the big tables whose values are never NULL.

    DuckDB's CSV reader takes 100,000 positions in about 0.55 s with Python's csv module
    writing them, against 1.3 s through `from_json` (measured on a loaded 2-core
    machine). Only for tables without NULLs (positions and inbound lines: every column
    is set by the fold): an unquoted empty field would read back as NULL.
    """
    names = [name for name, _ in columns]
    types = "{" + ", ".join(f"{_sql_literal(name)}: {_sql_literal(_staged_type(typ))}" for name, typ in columns) + "}"
    converted = ", ".join(f"{_from_millis(name)} AS {name}" if typ == "MILLIS" else name for name, typ in columns)
    fd, scratch = tempfile.mkstemp(prefix="omni-ledger-stage-", suffix=".csv")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
            # Strings quoted, so an empty one ("") stays a string (allow_quoted_nulls off).
            csv.writer(out, quoting=csv.QUOTE_NONNUMERIC).writerows(zip(*(rows[name] for name in names), strict=True))
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {converted} FROM read_csv("
            f"{_sql_literal(scratch)}, header = false, auto_detect = false, columns = {types}, "
            "quote = '\"', escape = '\"', allow_quoted_nulls = false, strict_mode = true)"
        )
    except OSError as exc:
        msg = f"cannot stage {table} in a temporary file: {exc.strerror}"
        raise SnapshotError(msg) from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(scratch)


def _merge(con: duckdb.DuckDBPyConnection, table: str, target: str, source: str, newer: str) -> None:
    """Upsert `source` into lake.`target` (public table `table`'s columns and key); update only where `newer` holds."""
    columns, key = _TABLES[table]
    names = [c for c, _ in columns]
    on = " AND ".join(f"t.{k} = s.{k}" for k in key)
    sets = ", ".join(f"{c} = s.{c}" for c in names if c not in key)
    con.execute(
        f"MERGE INTO {LAKE}.{target} t USING {source} s ON {on} "
        f"WHEN MATCHED AND {newer} THEN UPDATE SET {sets} "
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}) "
        f"VALUES ({', '.join('s.' + c for c in names)})"
    )


def _latest_versions(changes: Iterable[PositionChange]) -> list[PositionChange]:
    best: dict[tuple[str, str], PositionChange] = {}
    for change in changes:
        key = (change.site_id, change.sku)
        kept = best.get(key)
        if kept is None or change.version >= kept.version:
            best[key] = change
    return list(best.values())


def _latest_offers(changes: Iterable[PositionChange]) -> list[tuple[str, str, OfferTerms]]:
    # Every change carrying an offer counts, not only the coalesced ones: the newest
    # offer wins by updated_at, as it does against the stored row.
    best: dict[tuple[str, str], OfferTerms] = {}
    for change in changes:
        offer = change.offer
        if offer is None:
            continue
        key = (change.site_id, change.sku)
        kept = best.get(key)
        if kept is None or offer.updated_at >= kept.updated_at:
            best[key] = offer
    return [(seller, sku, offer) for (seller, sku), offer in best.items()]


def _is_terminal(status: DecisionStatus) -> bool:
    return status.value in _TERMINAL


def _winning_decisions(decisions: Iterable[ReservationDecision]) -> list[ReservationDecision]:
    # The same rule as the MERGE in publish step 7, applied in call order.
    best: dict[str, ReservationDecision] = {}
    for decision in decisions:
        kept = best.get(decision.reservation_id)
        if (
            kept is not None
            and _is_terminal(kept.status)
            and (
                kept.decided_at > decision.decided_at
                or (kept.decided_at == decision.decided_at and not _is_terminal(decision.status))
            )
        ):
            continue
        best[decision.reservation_id] = decision
    return list(best.values())


def _highest_ranks(work: Iterable[Work]) -> tuple[list[StoreTask], list[ShuttleLoad], list[DropshipOrder]]:
    # The same rule as the MERGE in publish step 7, except that within one batch an equal
    # rank replaces: the later record is the fold's newer word on it.
    tasks: dict[str, StoreTask] = {}
    loads: dict[str, ShuttleLoad] = {}
    orders: dict[str, DropshipOrder] = {}
    for item in work:
        if isinstance(item, StoreTask):
            kept_task = tasks.get(item.task_id)
            if kept_task is None or item.rank >= kept_task.rank:
                tasks[item.task_id] = item
        elif isinstance(item, ShuttleLoad):
            kept_load = loads.get(item.parcel_id)
            if kept_load is None or item.rank >= kept_load.rank:
                loads[item.parcel_id] = item
        else:
            kept_order = orders.get(item.order_ref)
            if kept_order is None or item.rank >= kept_order.rank:
                orders[item.order_ref] = item
    return list(tasks.values()), list(loads.values()), list(orders.values())


def _plan_json(item: Work) -> str:
    return json.dumps(fulfilment_to_record(item.plan), separators=(",", ":"))


def _position_rows(positions: Sequence[PositionChange]) -> dict[str, list[Any]]:
    return {
        "site_id": [c.site_id for c in positions],
        "sku": [c.sku for c in positions],
        "on_hand": [c.on_hand for c in positions],
        "reserved": [c.reserved for c in positions],
        "staged": [c.staged for c in positions],
        "inbound": [c.inbound_qty for c in positions],
        "safety_stock": [c.safety_stock for c in positions],
        "atp": [c.atp for c in positions],
        "negative": [c.negative for c in positions],
        "version": [c.version for c in positions],
        "updated_at": [c.updated_at for c in positions],
    }


def _inbound_rows(positions: Sequence[PositionChange]) -> dict[str, list[Any]]:
    lines = [(c.site_id, c.sku, line) for c in positions for line in c.inbound]
    return {
        "site_id": [site for site, _, _ in lines],
        "sku": [sku for _, sku, _ in lines],
        "ref": [line.ref for _, _, line in lines],
        "eta": [line.eta for _, _, line in lines],
        "qty": [line.qty for _, _, line in lines],
        "promised": [line.promised for _, _, line in lines],
    }


def _offer_rows(offers: Sequence[tuple[str, str, OfferTerms]]) -> dict[str, list[Any]]:
    return {
        "seller_id": [seller for seller, _, _ in offers],
        "sku": [sku for _, sku, _ in offers],
        "qty": [o.qty for _, _, o in offers],
        "price": [o.price for _, _, o in offers],
        "lead_time_days": [o.lead_time_days for _, _, o in offers],
        "updated_at": [o.updated_at for _, _, o in offers],
    }


def _reservation_rows(decisions: Sequence[ReservationDecision]) -> dict[str, list[Any]]:
    return {
        "reservation_id": [d.reservation_id for d in decisions],
        "site_id": [d.site_id for d in decisions],
        "sku": [d.sku for d in decisions],
        "qty": [d.qty for d in decisions],
        "status": [d.status.value for d in decisions],
        "expires_at": [d.expires_at for d in decisions],
        "decided_at": [d.decided_at for d in decisions],
    }


def _task_rows(tasks: Sequence[StoreTask]) -> dict[str, list[Any]]:
    return {
        "task_id": [t.task_id for t in tasks],
        "site_id": [t.site_id for t in tasks],
        "sku": [t.sku for t in tasks],
        "qty": [t.qty for t in tasks],
        "kind": [t.kind.value for t in tasks],
        "status": [t.status.value for t in tasks],
        "rank": [t.rank for t in tasks],
        "reservation_id": [t.reservation_id for t in tasks],
        "order_id": [t.plan.order_id for t in tasks],
        "customer": [t.plan.customer for t in tasks],
        "zone": [t.plan.zone for t in tasks],
        "parcel_id": [t.plan.parcel_id for t in tasks],
        "run_id": [t.plan.run_id for t in tasks],
        "deliver_to": [t.plan.deliver_to for t in tasks],
        "departs_at": [t.plan.departs_at for t in tasks],
        "due_at": [t.due_at for t in tasks],
        "appointment_at": [t.plan.appointment_at for t in tasks],
        "plan": [_plan_json(t) for t in tasks],
        "updated_at": [t.updated_at for t in tasks],
    }


def _load_rows(loads: Sequence[ShuttleLoad]) -> dict[str, list[Any]]:
    return {
        "parcel_id": [x.parcel_id for x in loads],
        "run_id": [x.run_id for x in loads],
        "origin": [x.origin for x in loads],
        "destination": [x.destination for x in loads],
        "sku": [x.sku for x in loads],
        "qty": [x.qty for x in loads],
        "departs_at": [x.departs_at for x in loads],
        "arrives_at": [x.arrives_at for x in loads],
        "status": [x.status.value for x in loads],
        "rank": [x.rank for x in loads],
        "reservation_id": [x.reservation_id for x in loads],
        "order_id": [x.plan.order_id for x in loads],
        "customer": [x.plan.customer for x in loads],
        "plan": [_plan_json(x) for x in loads],
        "updated_at": [x.updated_at for x in loads],
    }


def _order_rows(orders: Sequence[DropshipOrder]) -> dict[str, list[Any]]:
    return {
        "order_ref": [o.order_ref for o in orders],
        "supplier_id": [o.supplier_id for o in orders],
        "deliver_to": [o.deliver_to for o in orders],
        "sku": [o.sku for o in orders],
        "qty": [o.qty for o in orders],
        "due_at": [o.due_at for o in orders],
        "status": [o.status.value for o in orders],
        "rank": [o.rank for o in orders],
        "order_id": [o.plan.order_id for o in orders],
        "customer": [o.plan.customer for o in orders],
        "plan": [_plan_json(o) for o in orders],
        "updated_at": [o.updated_at for o in orders],
    }


# ----------------------------------------------------------------------------- reader


class SnapshotReader:
    """Read-only access to a store, from any process, without blocking the writer.

    Every call is one query, so it sees one committed snapshot: never half a publish.
    To read several tables at the same cut, pass them the same `as_of`
    (for example `reader.latest()["snapshot_id"]`). Calls may come from several threads:
    each runs on its own cursor (a DuckDB connection is not thread-safe; ~2 ms each).
    """

    def __init__(self, directory: Path, con: duckdb.DuckDBPyConnection, layout: StoreLayout | None = None) -> None:
        """Use `SnapshotReader.open`."""
        self._dir = directory
        self._con = con
        self._layout = layout or StoreLayout()

    @classmethod
    def open(cls, directory: Path, *, catalog: str | None = None) -> SnapshotReader:
        """Attach the store at `directory` read-only.

        The catalog is found in the directory (DIR/store.json, else DIR/catalog.sqlite);
        `catalog` overrides the PostgreSQL conninfo recorded there (another host name,
        say), keeping the writer count.
        """
        directory = Path(directory).resolve()
        layout = StoreLayout.of(directory)
        if layout is None:
            msg = f"no snapshot store at {directory}: run `omni-ledger run ... --snapshot-dir {directory}` first"
            raise SnapshotError(msg)
        if catalog is not None and catalog != layout.catalog:
            layout = StoreLayout(catalog, layout.writers)
        con = _connect(directory, layout)
        try:
            _attach(con, directory, layout, read_only=True)
        except SnapshotError:
            con.close()
            raise
        return cls(directory, con, layout)

    @property
    def layout(self) -> StoreLayout:
        """The store's catalog and writer count."""
        return self._layout

    def close(self) -> None:
        """Detach and close."""
        self._con.close()

    def __enter__(self) -> SnapshotReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- typed queries

    def positions(
        self, sku: str | None = None, site_id: str | None = None, as_of: int | None = None
    ) -> list[dict[str, object]]:
        """Positions, optionally of one sku and/or site, at snapshot `as_of` (default latest)."""
        return self._select("positions", {"sku": sku, "site_id": site_id}, as_of)

    def inbound(
        self, sku: str | None = None, site_id: str | None = None, as_of: int | None = None
    ) -> list[dict[str, object]]:
        """Inbound lines (ref, eta, qty) per (site, sku)."""
        return self._select("inbound", {"sku": sku, "site_id": site_id}, as_of)

    def reservations(
        self,
        sku: str | None = None,
        site_id: str | None = None,
        as_of: int | None = None,
        reservation_id: str | None = None,
    ) -> list[dict[str, object]]:
        """Reservations with their latest status."""
        filters = {"sku": sku, "site_id": site_id, "reservation_id": reservation_id}
        return self._select("reservations", filters, as_of)

    def offers(
        self, sku: str | None = None, seller_id: str | None = None, as_of: int | None = None
    ) -> list[dict[str, object]]:
        """Marketplace sellers' current offers."""
        return self._select("offers", {"sku": sku, "seller_id": seller_id}, as_of)

    def store_tasks(
        self, site_id: str | None = None, status: str | None = None, as_of: int | None = None
    ) -> list[dict[str, object]]:
        """Store tasks (latest status of each), optionally of one site and/or status; `plan` decoded."""
        return self._select("store_tasks", {"site_id": site_id, "status": status}, as_of)

    def transport_loads(self, run_id: str | None = None, as_of: int | None = None) -> list[dict[str, object]]:
        """Parcels on shuttle runs (latest status of each), optionally of one run; `plan` decoded."""
        return self._select("transport_loads", {"run_id": run_id}, as_of)

    def dropship_orders(self, supplier_id: str | None = None, as_of: int | None = None) -> list[dict[str, object]]:
        """Orders to suppliers and sellers (latest status of each), optionally of one; `plan` decoded."""
        return self._select("dropship_orders", {"supplier_id": supplier_id}, as_of)

    def snapshots(self) -> list[dict[str, object]]:
        """The published snapshots still readable with `as_of`, oldest first.

        snapshot_info keeps a row for every publish; those whose DuckLake snapshot was
        expired by maintenance are left out.
        """
        return self._query(
            "SELECT i.* FROM snapshot_info i "
            f"SEMI JOIN ducklake_snapshots('{LAKE}') s ON s.snapshot_id = i.snapshot_id "
            "ORDER BY i.snapshot_id",
            [],
        )

    def latest(self) -> dict[str, object] | None:
        """The newest snapshot_info row, or None before the first publish.

        With several writers: the newest publish's id and time, every writer's latest
        events_applied summed, the newest max_occurred_at.
        """
        if self._layout.sharded:
            # The same row as the view's newest, without its window over every row:
            # each writer's latest count, summed.
            rows = self._query(
                "SELECT max(snapshot_id) AS snapshot_id, max(created_at) AS created_at, "
                "sum(events_applied)::BIGINT AS events_applied, max(max_occurred_at) AS max_occurred_at "
                "FROM (SELECT max(snapshot_id) AS snapshot_id, max(created_at) AS created_at, "
                "arg_max(events_applied, snapshot_id) AS events_applied, max(max_occurred_at) AS max_occurred_at "
                f"FROM {SNAPSHOT_LOG} GROUP BY writer) HAVING count(*) > 0",
                [],
            )
        else:
            rows = self._query("SELECT * FROM snapshot_info ORDER BY snapshot_id DESC LIMIT 1", [])
        return rows[0] if rows else None

    def sql(self, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run any read-only query (the lake is the default schema); (columns, rows)."""
        try:
            with self._cursor() as cursor:
                cursor.execute(query)
                columns = [d[0] for d in cursor.description or ()]
                rows = [_to_utc(row) for row in cursor.fetchall()] if columns else []
        except duckdb.Error as exc:
            msg = f"query failed on the snapshot store {self._dir}: {exc}"
            raise SnapshotError(msg) from exc
        return columns, rows

    # -- internals

    @property
    def directory(self) -> Path:
        """The store's directory."""
        return self._dir

    def physical_tables(self, name: str) -> list[str]:
        """The tables behind public table `name`: itself, or each writer's table."""
        return [self._layout.table(name, writer) for writer in range(self._layout.writers)]

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor of this reader's DuckDB (the lake its default schema); close it when done.

        For readers of their own (see `adapters.snapshot_store.replica`): one per thread.
        """
        # A cursor shares the attached lake and settings but not the default schema.
        cursor = self._con.cursor()
        try:
            cursor.execute(f"USE {LAKE}")
        except BaseException:
            cursor.close()
            raise
        return cursor

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cursor = self.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def _select(self, table: str, filters: Mapping[str, str | None], as_of: int | None) -> list[dict[str, object]]:
        where = [(col, value) for col, value in filters.items() if value is not None]
        at = ""
        if as_of is not None:
            self._check_snapshot(int(as_of))
            at = f" AT (VERSION => {int(as_of)})"
        query = f"SELECT * FROM {table}{at}"
        if where:
            query += " WHERE " + " AND ".join(f"{col} = ?" for col, _ in where)
        query += f" ORDER BY {_ORDER[table]}"
        try:
            with self._cursor() as cursor:
                rows = _dicts(cursor.execute(query, [value for _, value in where]))
        except duckdb.Error as exc:
            if as_of is None:
                msg = f"cannot read {table} from the snapshot store {self._dir}: {exc}"
            else:
                msg = f"cannot read {table} at snapshot {as_of} from {self._dir}: {exc}; {self._available()}"
            raise SnapshotError(msg) from exc
        if table in _WITH_PLAN:
            for row in rows:
                plan = row["plan"]
                row["plan"] = json.loads(plan) if isinstance(plan, str) else plan
        return rows

    def _query(self, query: str, params: list[object]) -> list[dict[str, object]]:
        try:
            with self._cursor() as cursor:
                return _dicts(cursor.execute(query, params))
        except duckdb.Error as exc:
            msg = f"cannot read the snapshot store {self._dir}: {exc}"
            raise SnapshotError(msg) from exc

    def _available(self) -> str:
        """Which snapshot ids `as_of` accepts now, for error messages."""
        try:
            with self._cursor() as cursor:
                row = cursor.execute(
                    f"SELECT min(snapshot_id), max(snapshot_id) FROM ducklake_snapshots('{LAKE}')"
                ).fetchone()
        except duckdb.Error as exc:
            return f"the snapshot list cannot be read either ({exc})"
        if row is None or row[0] is None:
            return "the store has no snapshot yet"
        return f"readable snapshots are {row[0]}..{row[1]} (older ones were expired by maintenance)"

    def _check_snapshot(self, snapshot_id: int) -> None:
        try:
            with self._cursor() as cursor:
                found = cursor.execute(
                    f"SELECT count(*) FROM ducklake_snapshots('{LAKE}') WHERE snapshot_id = ?",
                    [snapshot_id],
                ).fetchone()
        except duckdb.Error as exc:
            msg = f"cannot list the snapshots of {self._dir}: {exc}"
            raise SnapshotError(msg) from exc
        if not found or not found[0]:
            msg = f"snapshot {snapshot_id} is unknown or expired in {self._dir}: {self._available()}"
            raise SnapshotError(msg)
