"""DuckDB for the snapshot store: an in-memory connection with the DuckLake extensions, the catalog attached, retries.

This module owns the package's DuckDB connection: extensions loaded from the installed
PyPI packages (never from the network), the catalog attached, SQLite's WAL mode, and
what counts as a lost race worth trying again.

Why a SQLite catalog in WAL mode (measured with DuckDB 1.5.5, see the stack facts sheet):
a DuckDB-file catalog is locked by the process that attaches it, so no other process can
attach it, not even READ_ONLY. A SQLite catalog can be read by other processes while the
writer commits; in SQLite's default journal mode a reader polling every 50 ms cut the
writer from 52 to 5 commits/s, in WAL mode the writer kept 38 commits/s and the reader
saw every snapshot, with no errors. WAL is a property of the file, set once when the
store is created.

Every datetime this package returns is timezone-aware UTC.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.resources
import os
import random
import shutil
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import duckdb

from adapters.snapshot_store.layout import COMMIT_LOCK_FILE, DATA_DIR, LAKE, StoreLayout, mask_password
from ledger.errors import SnapshotError
from ledger.events import Millis

__all__ = [
    "COMMIT_ATTEMPTS",
    "Closing",
    "attach",
    "commit_turn",
    "connect",
    "dicts",
    "from_millis",
    "is_transient",
    "lost_creation_race",
    "millis_to_datetime",
    "pause",
    "rollback",
    "scalar",
    "set_wal",
    "sql_literal",
    "taking_turns",
    "to_utc",
]

_T = TypeVar("_T")

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
COMMIT_ATTEMPTS = 8
_TRANSIENT = ("database is locked", "transaction conflict", "could not serialize", "deadlock detected", "duplicate key")


def sql_literal(text: str) -> str:
    """A SQL string literal; ATTACH and INSTALL take no parameters."""
    return "'" + text.replace("'", "''") + "'"


def from_millis(expr: str) -> str:
    # timezone('UTC', TIMESTAMP) does not depend on the session's TimeZone setting.
    return f"timezone('UTC', epoch_ms({expr}))"


def to_utc(row: Iterable[Any]) -> tuple[Any, ...]:
    """The row with every datetime as an aware datetime in `datetime.UTC`."""
    return tuple(v.astimezone(UTC) if isinstance(v, datetime) else v for v in row)


def millis_to_datetime(ms: Millis) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


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


def connect(directory: Path, layout: StoreLayout | None = None) -> duckdb.DuckDBPyConnection:
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
        # No progress bar: DuckDB draws one on stdout for any query over 2 s, even without a
        # terminal, and stdout belongs to the caller (`--json` output, a child's handshake).
        con.execute("SET enable_progress_bar = false")
        for name in (*_ALWAYS, "postgres_scanner") if layout is not None and layout.postgres else _ALWAYS:
            con.execute(f"LOAD {sql_literal(str(_loadable(name)))}")
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


# Readers plan without DuckDB's statistics propagation. DuckLake 1.5.5 keeps one set of
# column statistics per table, for the newest data: `ducklake_rewrite_data_files`
# recomputes them from the live rows (before, they only ever widened). A query `AT
# (VERSION => n)` of an older snapshot is planned with them, so rows outside the newest
# min/max came back wrong: an ORDER BY packed on_hand 0 as (0 - 5) in a byte and read
# back 256 (compressed materialization, which needs propagated statistics), and
# `WHERE on_hand = 0` was pruned to nothing. Every read of ours may be as of an older
# snapshot (pinned API answers, the read model's change feed, `--as-of`), and a
# maintenance can land between a snapshot and its read, so no reader uses them
# (tests/integration/test_maintenance_history.py). The writer reads only the newest
# snapshot, whose statistics are right, and keeps them for its MERGE. Measured on a
# 200,000-position store after maintenance, the same queries with and without: within
# the machine's noise (0.67-1.22x, both directions). DuckDB's setting is per database
# instance, so a reader's cursors inherit it.
_HISTORY_SAFE = "SET disabled_optimizers = 'statistics_propagation'"


# Writers never inline rows in the catalog: every publish writes Parquet files. With
# DuckLake 1.5.5 inlined data is where its defects with concurrent readers live: our
# writer aborted the process (glibc "double free") inside `ducklake_flush_inlined_data`
# in 2 of 5 runs of 40 publishes and 10 maintenances beside two reader processes, and
# upstream reports a reader failing for good after a concurrent flush (duckdb/ducklake
# #1413) and flushes after a rewrite corrupting time travel (#1406). The cost is a small
# file per table a publish touches (snapshot_info included), which maintenance merges
# (step 3); small publishes were no slower (1-500 rows, median of 10: 307-409 ms without
# inlining, 433-544 ms with, load ~25). A store written with inlining keeps its inlined
# rows readable; the next maintenance's step 1 flushes them once.
_NO_INLINING = ", DATA_INLINING_ROW_LIMIT 0"


def attach(con: duckdb.DuckDBPyConnection, directory: Path, layout: StoreLayout, *, read_only: bool) -> None:
    # DuckLake records the data path in the catalog and file paths relative to it. Passing
    # DIR/data with OVERRIDE_DATA_PATH (this session only; the catalog is not rewritten)
    # keeps a store readable and writable after it is copied or moved.
    data_path = sql_literal(str(directory / DATA_DIR) + os.sep)
    options = f"DATA_PATH {data_path}, OVERRIDE_DATA_PATH true" + (", READ_ONLY" if read_only else _NO_INLINING)
    try:
        con.execute(f"ATTACH {sql_literal(layout.target(directory))} AS {LAKE} ({options})")
        con.execute(f"USE {LAKE}")
        if read_only:
            con.execute(_HISTORY_SAFE)
    except duckdb.Error as exc:
        detail = mask_password(str(exc))
        msg = f"cannot attach the DuckLake catalog of {directory} ({layout.described()}): {detail}"
        raise SnapshotError(msg) from exc


def set_wal(catalog: Path) -> None:
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


def dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, object]]:
    names = [d[0] for d in cursor.description or ()]
    return [dict(zip(names, to_utc(row), strict=True)) for row in cursor.fetchall()]


def is_transient(exc: BaseException) -> bool:
    """A lost race with another writer (worth trying again), not a fault."""
    text = str(exc).lower()
    return any(marker in text for marker in _TRANSIENT)


def lost_creation_race(exc: BaseException) -> bool:
    """A lost race, or another writer creating the same table or catalog first."""
    return is_transient(exc) or "already exists" in str(exc).lower()


def pause(attempt: int) -> None:
    # 20, 40, 80 ... ms with jitter, so two losers do not collide again in step.
    time.sleep(0.02 * (2**attempt) * (0.5 + random.random()))


@contextlib.contextmanager
def commit_turn(directory: Path, layout: StoreLayout) -> Iterator[None]:
    """With several writers, one lake transaction at a time, BEGIN to COMMIT (DIR/.commit.lock).

    SQLite refuses a second writer ("database is locked", no busy timeout in DuckDB's
    sqlite scanner), even when only the COMMITs are taken in turn (measured: 10 of 80
    commits failed). PostgreSQL takes both, but DuckLake (1.5.5, `d8a1881e`) stamps a
    second delete on a data file with the snapshot after the one its transaction started
    from (`DuckLakeDelete::FlushDeleteWithSnapshots`), not the one it commits as: when
    another writer commits in between, `AT (VERSION => that commit)` already misses the
    deleted rows (a fold's base rows, a publish's replaced inbound lines). Taking turns
    leaves no commit in between. docs/snapshots.md, "Several writers take commit turns".
    """
    if not layout.sharded:
        yield
        return
    with (directory / COMMIT_LOCK_FILE).open("ab") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def taking_turns(
    con: duckdb.DuckDBPyConnection,
    directory: Path,
    layout: StoreLayout,
    action: Callable[[], _T],
    lost_race: Callable[[BaseException], bool] = is_transient,
) -> _T:
    """`action()` in the commit turn; rolled back and tried again, up to `COMMIT_ATTEMPTS` times, when it lost a race.

    Raises the last duckdb.Error when the race is lost every time or the error is not a race.
    """
    attempt = 0
    while True:
        try:
            with commit_turn(directory, layout):
                return action()
        except duckdb.Error as exc:
            rollback(con)
            attempt += 1
            if attempt < COMMIT_ATTEMPTS and lost_race(exc):
                pause(attempt - 1)
                continue
            raise


class Closing(ABC):
    """Usable in a `with` block, which calls `close()` on the way out."""

    @abstractmethod
    def close(self) -> None:
        """Release what the object holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    # Fails only when no transaction is open: then there is nothing to undo.
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")


def scalar(con: duckdb.DuckDBPyConnection, query: str) -> int:
    row = con.execute(query).fetchone()
    if row is None or row[0] is None:
        msg = f"the snapshot store returned no value for: {query}"
        raise SnapshotError(msg)
    return int(row[0])
