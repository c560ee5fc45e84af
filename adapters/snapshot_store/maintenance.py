"""Keeping a snapshot store fast over weeks (compact files, expire old snapshots), and deleting one.

`SnapshotWriter.maintain` runs `maintain` on the writer's own connection, between
publishes; `adapters.snapshot_store.compaction` says when. `drop_store` is for `--reset`.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from adapters.snapshot_store.connection import (
    connect,
    scalar,
    sql_literal,
    taking_turns,
)
from adapters.snapshot_store.layout import (
    CATALOG_FILE,
    COMMIT_LOCK_FILE,
    DATA_DIR,
    LAKE,
    MANIFEST_FILE,
    POSTGRES_PREFIX,
    SNAPSHOT_LOG,
    StoreLayout,
)
from adapters.snapshot_store.tables import TABLES
from ledger.errors import SnapshotError

__all__ = ["MaintenanceReport", "drop_store", "maintain"]

# maintain() rewrites every data file that has deleted rows (threshold 0). Positions are
# updated in place, so most files carry delete files, and merge_adjacent_files skips
# those: with DuckLake's default threshold (0.95), 2,000 small publishes into 1M
# positions left 227 files (216 with deletes) and reads 2x slower than after a full
# rewrite, which took 0.4 s for 1M positions and left one file. The price: each run
# rewrites the files touched since the last one, up to the whole table.
_REWRITE_DELETED_FRACTION = 0.0


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


def maintain(
    con: duckdb.DuckDBPyConnection,
    directory: Path,
    layout: StoreLayout,
    writer: int,
    *,
    keep_snapshots_for: timedelta,
) -> MaintenanceReport:
    """Compact files and expire old snapshots of the store at `directory`, as writer `writer`.

    Snapshots older than `keep_snapshots_for` stop being readable with `as_of` and the
    files only they used are deleted. A query reads the snapshot that was current when
    it started, so keep it longer than any reader's query (0 is for tests). Creates
    snapshots of its own (no snapshot_info row), so publish ids after it jump.

    Order: 1. flush inlined rows to Parquet (only stores written before writers stopped
       inlining small commits in the catalog, see `connection._NO_INLINING`, have any);
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
    files_before = _file_count(directory)
    cutoff = datetime.now(UTC) - keep_snapshots_for
    if layout.sharded:
        # A writer's positions are a view over its base and recent tables: those are compacted.
        tables: list[str | None] = [
            table
            for name in TABLES
            if name != "snapshot_info"
            for table in (
                (layout.positions_base(writer), layout.positions_recent(writer))
                if name == "positions"
                else (layout.table(name, writer),)
            )
        ]
        if writer == 0:
            tables.append(SNAPSHOT_LOG)
        orphan_cutoff = min(cutoff, datetime.now(UTC) - timedelta(hours=1))
    else:
        tables = [None]  # the whole lake in one call
        orphan_cutoff = cutoff
    owns_lake = writer == 0

    def table_args(table: str | None) -> str:
        return "" if table is None else f", {sql_literal(table)}"

    flushed: list[tuple[Any, ...]] = []
    rewritten: list[tuple[Any, ...]] = []
    merged: list[tuple[Any, ...]] = []
    expired: list[tuple[Any, ...]] = []
    deleted: list[tuple[Any, ...]] = []
    orphans: list[tuple[Any, ...]] = []
    for table in tables:
        # 1.
        flush_args = "" if table is None else f", table_name => {sql_literal(table)}"
        flushed += _step(con, directory, layout, f"FROM ducklake_flush_inlined_data('{LAKE}'{flush_args})", [])
        # 2.
        rewritten += _step(
            con,
            directory,
            layout,
            f"FROM ducklake_rewrite_data_files('{LAKE}'{table_args(table)}, delete_threshold => ?)",
            [_REWRITE_DELETED_FRACTION],
        )
        # 3.
        merged += _step(con, directory, layout, f"FROM ducklake_merge_adjacent_files('{LAKE}'{table_args(table)})", [])
    if owns_lake:
        # 4. By id: with a SQLite catalog, `older_than` expired every snapshot but the
        # newest, however recent (DuckLake compares the catalog's text timestamps;
        # measured with DuckLake 1.0: `now() - INTERVAL 1 HOUR` expired 4 of 5 snapshots
        # made a second earlier). The newest is never expired.
        try:
            versions = [
                int(row[0])
                for row in con.execute(
                    f"SELECT snapshot_id FROM {LAKE}.snapshots() WHERE snapshot_time < ? "
                    f"AND snapshot_id < (SELECT max(snapshot_id) FROM {LAKE}.snapshots())",
                    [cutoff],
                ).fetchall()
            ]
        except duckdb.Error as exc:
            msg = f"maintenance of the snapshot store {directory} failed listing snapshots: {exc}"
            raise SnapshotError(msg) from exc
        if versions:
            expired = _step(
                con,
                directory,
                layout,
                f"FROM ducklake_expire_snapshots('{LAKE}', versions => ?::UBIGINT[])",
                [versions],
            )
        # 5.
        deleted = _step(con, directory, layout, f"FROM ducklake_cleanup_old_files('{LAKE}', older_than => ?)", [cutoff])
        # 6.
        orphans = _step(
            con, directory, layout, f"FROM ducklake_delete_orphaned_files('{LAKE}', older_than => ?)", [orphan_cutoff]
        )
    try:
        oldest = scalar(con, f"SELECT min(snapshot_id) FROM {LAKE}.snapshots()")
    except duckdb.Error as exc:
        msg = f"maintenance of the snapshot store {directory} failed: {exc}"
        raise SnapshotError(msg) from exc
    return MaintenanceReport(
        files_before=files_before,
        files_after=_file_count(directory),
        inlined_tables_flushed=len(flushed),
        files_merged=sum(int(r[2]) for r in (*rewritten, *merged)),
        snapshots_expired=len(expired),
        files_deleted=len(deleted) + len(orphans),
        oldest_snapshot_id=oldest,
        seconds=time.perf_counter() - started,
    )


def _step(
    con: duckdb.DuckDBPyConnection, directory: Path, layout: StoreLayout, query: str, params: list[object]
) -> list[tuple[Any, ...]]:
    """One maintenance call, in the commit turn, tried again when it lost a race."""
    try:
        return taking_turns(con, directory, layout, lambda: con.execute(query, params).fetchall())
    except duckdb.Error as exc:
        msg = f"maintenance of the snapshot store {directory} failed: {exc}"
        raise SnapshotError(msg) from exc


def _file_count(directory: Path) -> int:
    return sum(1 for _ in (directory / DATA_DIR).rglob("*.parquet"))


def drop_store(directory: Path) -> None:
    """Delete the store at `directory`: its catalog (a PostgreSQL catalog's DuckLake tables too), data and heartbeats.

    For `--reset`; nothing else in the directory is touched. No writer may have it open.
    """
    directory = Path(directory).resolve()
    layout = StoreLayout.of(directory)
    if layout is not None and layout.postgres:
        con = connect(directory, layout)
        try:
            conninfo = layout.catalog[len(POSTGRES_PREFIX) :]
            con.execute(f"ATTACH {sql_literal(conninfo)} AS catalog_db (TYPE postgres)")
            # DuckLake's tables (ducklake_*, inlined data included) in the connection's schema.
            drop = (
                "DO $drop$ DECLARE t record; BEGIN "
                "FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename LIKE 'ducklake\\_%' LOOP "
                "EXECUTE format('DROP TABLE IF EXISTS %I CASCADE', t.tablename); END LOOP; END $drop$"
            )
            con.execute(f"CALL postgres_execute('catalog_db', {sql_literal(drop)})")
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
