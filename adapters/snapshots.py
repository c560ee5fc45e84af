"""The snapshot store: DuckLake tables of positions that other processes can query.

This module is the only one that imports duckdb. One `SnapshotWriter` (the flow's sink)
publishes what the fold emitted as DuckLake snapshots; any number of `SnapshotReader`s,
in any process, read committed snapshots, the latest or an older one (`as_of`).

Layout of a store directory `DIR`:

    DIR/catalog.sqlite        DuckLake catalog: a SQLite database in WAL mode
    DIR/data/                 Parquet data and delete files written by DuckLake
    DIR/.writer.lock          held (flock) by the one open SnapshotWriter

Why a SQLite catalog in WAL mode (measured with DuckDB 1.5.5, see the stack facts sheet):
a DuckDB-file catalog is locked by the process that attaches it, so no other process can
attach it, not even READ_ONLY. A SQLite catalog can be read by other processes while the
writer commits; in SQLite's default journal mode a reader polling every 50 ms cut the
writer from 52 to 5 commits/s, in WAL mode the writer kept 38 commits/s and the reader
saw every snapshot, with no errors. WAL is a property of the file, set once when the
store is created. Two writers on one catalog fail often ("database is locked"), hence
the lock file.

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

Integers are BIGINT, times TIMESTAMPTZ (UTC), `negative` and `promised` BOOLEAN, `price`
DOUBLE, `plan` VARCHAR (the fulfilment plan as JSON, times in epoch milliseconds; the
typed readers return it decoded). Every datetime this module returns is timezone-aware UTC.

A store written by an earlier version gets the tables and columns it lacks when a
writer opens it (one snapshot); rows written before a column existed hold its
`_ADDED_COLUMN_DEFAULTS` value, or NULL.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.resources
import json
import os
import shutil
import sqlite3
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

__all__ = ["MaintenanceReport", "SnapshotReader", "SnapshotWriter"]

CATALOG_FILE = "catalog.sqlite"
DATA_DIR = "data"
LOCK_FILE = ".writer.lock"
HEARTBEAT_FILE = "heartbeat.json"
LAKE = "lake"

# Extension name as LOAD knows it -> (PyPI package holding the file, file name in it).
# The sqlite file must be installed under the name `sqlite_scanner`: INSTALL does that,
# LOAD of the original file fails on its entrypoint name.
_EXTENSIONS = {
    "ducklake": ("duckdb_extension_ducklake", "ducklake.duckdb_extension"),
    "sqlite_scanner": ("duckdb_extension_sqlite", "sqlite.duckdb_extension"),
}

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


def _connect(directory: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with ducklake and sqlite_scanner loaded, never from the network.

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
        for name in _EXTENSIONS:
            con.execute(f"LOAD {_sql_literal(str(_loadable(name)))}")
    except duckdb.Error as exc:
        con.close()
        msg = f"cannot load the DuckDB extensions for the snapshot store at {directory}: {exc}"
        raise SnapshotError(msg) from exc
    except SnapshotError:
        con.close()
        raise
    return con


def _attach(con: duckdb.DuckDBPyConnection, directory: Path, *, read_only: bool) -> None:
    catalog = directory / CATALOG_FILE
    # DuckLake records the data path in the catalog and file paths relative to it. Passing
    # DIR/data with OVERRIDE_DATA_PATH (this session only; the catalog is not rewritten)
    # keeps a store readable and writable after it is copied or moved.
    data_path = _sql_literal(str(directory / DATA_DIR) + os.sep)
    options = f"DATA_PATH {data_path}, OVERRIDE_DATA_PATH true" + (", READ_ONLY" if read_only else "")
    try:
        con.execute(f"ATTACH {_sql_literal('ducklake:sqlite:' + str(catalog))} AS {LAKE} ({options})")
        con.execute(f"USE {LAKE}")
    except duckdb.Error as exc:
        msg = f"cannot attach the DuckLake catalog {catalog}: {exc}"
        raise SnapshotError(msg) from exc


def _set_wal(catalog: Path) -> None:
    """Create the SQLite catalog file if needed and put it in WAL mode (persists in the file)."""
    try:
        db = sqlite3.connect(catalog, timeout=10)
        try:
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
    """The single writer: publishes fold outputs as DuckLake snapshots.

    Open it with `SnapshotWriter.open(directory)`. One per store: a second writer,
    in this or another process, is refused (its commits would race for snapshot ids).
    """

    def __init__(
        self,
        directory: Path,
        con: duckdb.DuckDBPyConnection,
        lock: IO[bytes],
    ) -> None:
        """Use `SnapshotWriter.open`."""
        self._dir = directory
        self._con = con
        self._lock = lock
        self._last_info = self._read_last_info()

    # -- lifecycle

    @classmethod
    def open(cls, directory: Path) -> SnapshotWriter:
        """Open the store at `directory`, creating whatever is missing (idempotent)."""
        directory = Path(directory).resolve()
        try:
            (directory / DATA_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create the snapshot store directory {directory}: {exc}"
            raise SnapshotError(msg) from exc
        lock = cls._take_lock(directory)
        con: duckdb.DuckDBPyConnection | None = None
        try:
            # Extensions first: a reader that sees the catalog file can then load them.
            con = _connect(directory)
            _set_wal(directory / CATALOG_FILE)
            _attach(con, directory, read_only=False)
            cls._create_tables(con)
            return cls(directory, con, lock)
        except BaseException:
            if con is not None:
                con.close()
            lock.close()
            raise

    @staticmethod
    def _take_lock(directory: Path) -> IO[bytes]:
        path = directory / LOCK_FILE
        lock = path.open("ab")
        try:
            # Released by the OS when the process dies, so a crash never leaves it stale.
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            msg = (
                f"another SnapshotWriter has the snapshot store {directory} open "
                f"({path} is locked): the store takes one writer; stop the other one"
            )
            raise SnapshotError(msg) from exc
        return lock

    @staticmethod
    def _create_tables(con: duckdb.DuckDBPyConnection) -> None:
        """Create the missing tables and add the missing columns, in one snapshot.

        A store written by an earlier version lacks what was added since; nothing is
        dropped or retyped, so its readers keep working.
        """
        try:
            existing: dict[str, set[str]] = {}
            for table, column in con.execute(
                "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = ?", [LAKE]
            ).fetchall():
                existing.setdefault(table, set()).add(column)
            missing = [name for name in _TABLES if name not in existing]
            added = [
                (name, col, typ)
                for name, (columns, _) in _TABLES.items()
                if name in existing
                for col, typ in columns
                if col not in existing[name]
            ]
            if not missing and not added:
                return  # no empty snapshot for a re-open
            # One transaction, so the tables and columns appear in one snapshot.
            con.execute("BEGIN")
            for name in missing:
                columns, key = _TABLES[name]
                cols = ", ".join(
                    f"{col} {_storage_type(typ)}" + (" NOT NULL" if col in key else "") for col, typ in columns
                )
                con.execute(f"CREATE TABLE {LAKE}.{name} ({cols})")
            for name, col, typ in added:
                default = _ADDED_COLUMN_DEFAULTS.get((name, col))
                con.execute(
                    f"ALTER TABLE {LAKE}.{name} ADD COLUMN {col} {_storage_type(typ)}"
                    + (f" DEFAULT {default}" if default is not None else "")
                )
            con.execute("COMMIT")
        except duckdb.Error as exc:
            _rollback(con)
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
        3. BEGIN; read the current snapshot id: this commit will create id + 1.
        4. Pick the accepted positions: new keys, or a version above the stored one.
        5. Replace the inbound lines of the accepted keys (before 6, which changes the
           versions that 4 compared).
        6. MERGE the accepted positions (the version guard is repeated in the MERGE).
        7. MERGE offers (newer updated_at wins), reservations (last decision wins
           unless the stored one is terminal and newer) and work (store tasks, transport
           loads, dropship orders: a higher rank replaces, new keys are inserted; statuses
           only move forward, so a replayed or redelivered record changes nothing).
        8. INSERT the snapshot_info row (id, events_applied, max_occurred_at).
        9. COMMIT, then check DuckLake created the id written in 8; only now may the
           caller advance its input position.
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
                _stage(con, "stage_positions", _POSITIONS, _position_rows(positions))
            if has_inbound:
                _stage(con, "stage_inbound", _INBOUND, _inbound_rows(positions))
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
            # 3. Begin; predict the snapshot id (single writer: nobody else commits).
            con.execute("BEGIN")
            snapshot_id = _scalar(con, f"SELECT * FROM {LAKE}.current_snapshot()") + 1
            if positions:
                # 4. Accepted positions.
                con.execute(
                    "CREATE OR REPLACE TEMP TABLE accepted AS "
                    "SELECT s.* FROM stage_positions s "
                    f"LEFT JOIN {LAKE}.positions p ON p.site_id = s.site_id AND p.sku = s.sku "
                    # >=: after a crash the replayed epoch may re-derive a version with other
                    # content (live clock, partitions interleaving anew); the fold continues
                    # from the replay, so the replay's row is the true one.
                    "WHERE p.version IS NULL OR s.version >= p.version"
                )
                if _scalar(con, "SELECT count(*) FROM accepted"):
                    # 5. Inbound lines of accepted keys: delete, then insert the new ones.
                    con.execute(
                        f"DELETE FROM {LAKE}.inbound USING accepted a "
                        "WHERE inbound.site_id = a.site_id AND inbound.sku = a.sku"
                    )
                    if has_inbound:
                        # Columns by name: a store upgraded in place has them in another order.
                        inbound_columns = ", ".join(c for c, _ in _INBOUND)
                        con.execute(
                            f"INSERT INTO {LAKE}.inbound ({inbound_columns}) "
                            f"SELECT {inbound_columns} FROM stage_inbound i SEMI JOIN accepted a "
                            "ON i.site_id = a.site_id AND i.sku = a.sku"
                        )
                    # 6. Positions.
                    _merge(con, "positions", "accepted", "s.version >= t.version")
            # 7. Offers, reservations and work.
            if offers:
                _merge(con, "offers", "stage_offers", "s.updated_at > t.updated_at")
            if reservations:
                _merge(
                    con,
                    "reservations",
                    "stage_reservations",
                    # Replace unless the stored decision is terminal and newer; at the
                    # same instant a terminal status beats a non-terminal one.
                    f"NOT (t.status IN ({_TERMINAL_SQL}) AND (t.decided_at > s.decided_at "
                    f"OR (t.decided_at = s.decided_at AND s.status NOT IN ({_TERMINAL_SQL}))))",
                )
            for table, rows in (("store_tasks", tasks), ("transport_loads", loads), ("dropship_orders", orders)):
                if rows:
                    _merge(con, table, f"stage_{table}", "s.rank > t.rank")
            # 8. The snapshot_info row.
            con.execute(
                f"INSERT INTO {LAKE}.snapshot_info VALUES "
                f"(?, {_from_millis('?::BIGINT')}, ?, {_from_millis('?::BIGINT')})",
                [snapshot_id, now, events_applied, max_occurred],
            )
            # 9. Commit and check the id.
            con.execute("COMMIT")
            committed = _scalar(con, f"SELECT * FROM ducklake_last_committed_snapshot('{LAKE}')")
        except SnapshotError:
            _rollback(con)
            raise
        except duckdb.Error as exc:
            _rollback(con)
            msg = (
                f"cannot publish {len(positions)} positions, {len(reservations)} reservation "
                f"decisions, {len(tasks)} store tasks, {len(loads)} transport loads and "
                f"{len(orders)} dropship orders to the snapshot store {self._dir}: {exc}"
            )
            raise SnapshotError(msg) from exc
        if committed != snapshot_id:
            msg = (
                f"published DuckLake snapshot {committed} but recorded it as {snapshot_id} in "
                f"snapshot_info at {self._dir}: another process wrote to the catalog; "
                "the store takes one writer"
            )
            raise SnapshotError(msg)
        self._last_info = {
            "snapshot_id": snapshot_id,
            "created_at": _millis_to_datetime(now),
            "events_applied": events_applied,
            "max_occurred_at": None if max_occurred is None else _millis_to_datetime(max_occurred),
            "max_occurred_at_ms": max_occurred,
        }
        return snapshot_id

    def heartbeat(self, now: Millis) -> None:
        """Record that the newest snapshot is current as of `now` (DIR/heartbeat.json, replaced atomically).

        Readers take a snapshot's age from this, not from its creation: a ledger with
        nothing new to publish is not stale; one whose flow stopped is.
        """
        info = self._last_info
        record = {"at": now, "snapshot_id": info.get("snapshot_id") if info else None}
        target = self._dir / HEARTBEAT_FILE
        scratch = target.with_suffix(".tmp")
        try:
            scratch.write_text(json.dumps(record))
            os.replace(scratch, target)
        except OSError as exc:
            msg = f"cannot write the heartbeat {target}: {exc.strerror}"
            raise SnapshotError(msg) from exc

    def last_snapshot_info(self) -> dict[str, object] | None:
        """The snapshot_info row of the last publish (None for a store never published)."""
        if not self._last_info:
            return None
        return {k: v for k, v in self._last_info.items() if k != "max_occurred_at_ms"}

    def _read_last_info(self) -> dict[str, object]:
        # Read once at open and then kept in memory: the table grows by a row per publish
        # and publishing must not cost more as it grows.
        try:
            cursor = self._con.execute(
                f"SELECT *, epoch_ms(max_occurred_at) AS max_occurred_at_ms "
                f"FROM {LAKE}.snapshot_info ORDER BY snapshot_id DESC LIMIT 1"
            )
            rows = _dicts(cursor)
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
        3. merge adjacent small files; 4. expire old snapshots; 5. delete the files no
        snapshot uses any more; 6. delete orphaned files (from failed commits).
        """
        if keep_snapshots_for < timedelta(0):
            msg = f"keep_snapshots_for must not be negative, got {keep_snapshots_for}"
            raise SnapshotError(msg)
        started = time.perf_counter()
        files_before = _file_count(self._dir)
        cutoff = datetime.now(UTC) - keep_snapshots_for
        con = self._con
        try:
            # 1.
            flushed = len(con.execute(f"FROM ducklake_flush_inlined_data('{LAKE}')").fetchall())
            # 2.
            rewritten = con.execute(
                f"FROM ducklake_rewrite_data_files('{LAKE}', delete_threshold => ?)", [_REWRITE_DELETED_FRACTION]
            ).fetchall()
            # 3.
            merged = con.execute(f"FROM ducklake_merge_adjacent_files('{LAKE}')").fetchall()
            # 4.
            expired = con.execute(f"FROM ducklake_expire_snapshots('{LAKE}', older_than => ?)", [cutoff]).fetchall()
            # 5.
            deleted = con.execute(f"FROM ducklake_cleanup_old_files('{LAKE}', older_than => ?)", [cutoff]).fetchall()
            # 6.
            orphans = con.execute(
                f"FROM ducklake_delete_orphaned_files('{LAKE}', older_than => ?)", [cutoff]
            ).fetchall()
            oldest = _scalar(con, f"SELECT min(snapshot_id) FROM {LAKE}.snapshots()")
        except duckdb.Error as exc:
            msg = f"maintenance of the snapshot store {self._dir} failed: {exc}"
            raise SnapshotError(msg) from exc
        return MaintenanceReport(
            files_before=files_before,
            files_after=_file_count(self._dir),
            inlined_tables_flushed=flushed,
            files_merged=sum(int(r[2]) for r in (*rewritten, *merged)),
            snapshots_expired=len(expired),
            files_deleted=len(deleted) + len(orphans),
            oldest_snapshot_id=oldest,
            seconds=time.perf_counter() - started,
        )


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


def _merge(con: duckdb.DuckDBPyConnection, table: str, source: str, newer: str) -> None:
    """Upsert `source` into lake.`table` by its key; update only where `newer` holds."""
    columns, key = _TABLES[table]
    names = [c for c, _ in columns]
    on = " AND ".join(f"t.{k} = s.{k}" for k in key)
    sets = ", ".join(f"{c} = s.{c}" for c in names if c not in key)
    con.execute(
        f"MERGE INTO {LAKE}.{table} t USING {source} s ON {on} "
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

    def __init__(self, directory: Path, con: duckdb.DuckDBPyConnection) -> None:
        """Use `SnapshotReader.open`."""
        self._dir = directory
        self._con = con

    @classmethod
    def open(cls, directory: Path) -> SnapshotReader:
        """Attach the store at `directory` read-only."""
        directory = Path(directory).resolve()
        if not (directory / CATALOG_FILE).is_file():
            msg = f"no snapshot store at {directory}: run `omni-ledger run ... --snapshot-dir {directory}` first"
            raise SnapshotError(msg)
        con = _connect(directory)
        try:
            _attach(con, directory, read_only=True)
        except SnapshotError:
            con.close()
            raise
        return cls(directory, con)

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
        """The newest snapshot_info row, or None before the first publish."""
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

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        # A cursor shares the attached lake and settings but not the default schema.
        cursor = self._con.cursor()
        try:
            cursor.execute(f"USE {LAKE}")
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
