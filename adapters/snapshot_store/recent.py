"""Folding a writer's recent positions into its base in two phases, so that publishes keep landing meanwhile.

Layout 2 (see `layout.LAYOUT_VERSION`): a publish appends every accepted position to the
writer's recent table; the view `positions` takes per key the newest recent row, else
the base row. Folding the recent rows into the base used to be one MERGE transaction on
the writer's thread: 9-11 s of wall time at 20,000,000 positions, every publish behind
it waiting.

Why not one long transaction on a second connection beside the publishes: on a SQLite
catalog (the default) a DuckLake write transaction cannot overlap another commit at
all. Measured with DuckDB 1.5.5 / DuckLake 1.0, one process, two connections, the
compaction's tables disjoint from the publishes': its COMMIT failed "Failed to flush
changes into DuckLake: database is locked" whenever a publish had committed since its
first read, even with the COMMITs taking turns on a lock (SQLite in WAL mode cannot turn
a read transaction into a write one once another connection has written since, and
DuckLake retries only errors naming a conflict, a unique key or concurrent access). So
the expensive part runs as a read, which SQLite lets overlap anything, and the write
is a short transaction of its own, between two publishes:

1. Read (`read_recent`, off the publish path, in one read-only transaction pinned to the
   newest snapshot S): the newest recent row per key into a temp table; the DuckLake
   `rowid`s of the base rows those keys replace into another (the join of the recent
   keys against every base key: most of what the MERGE cost). Nothing in the lake is
   written, so a kill here leaves the store as it was.
2. Commit (`commit_fold`, in one transaction that publishes wait for): DELETE the base
   rows by `rowid`; INSERT the newest rows; DELETE the recent rows published at S or
   before (`snapshot_id <= S`: the rows published since stay, and keep winning over the
   base); COMMIT. The base is written by nobody but this writer's folds, so the rows
   found at S are still the ones to replace; the counts of both DELETEs are checked
   against what phase 1 saw, and a difference (someone repaired the store by hand
   meanwhile) rolls back. Killed anywhere, the store is in the state before or after.

`positions` is the same before and after (at every snapshot): the rows published after S
are untouched and still win; the others now come from the base with the same content.
The followers' change feed (the recent table's insertions) shows nothing new, and
`position_count_sql` (base rows + recent `new_key` rows) is unchanged: every key whose
first row leaves the recent table enters the base in the same transaction.

The fold's snapshot carries a commit message (`FOLD_MESSAGE`) whose extra info says which base
it changed and by how many rows (`fold_label`). A follower keeps its count of the bases across
it from that (`base_growth`) rather than counting 20,000,000 rows again: that count, redone after
every fold, was a follower's slowest refreshes. A snapshot that changed a base without the
label (a repair by hand, a writer of before) is counted again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb

from adapters.snapshot_store.connection import rollback, scalar, sql_literal
from adapters.snapshot_store.layout import LAKE
from adapters.snapshot_store.tables import TABLES
from ledger.errors import SnapshotError

__all__ = ["FOLD_MESSAGE", "FoldReport", "RecentRead", "base_growth", "commit_fold", "drop_staged", "read_recent"]

FOLD_MESSAGE = "omni-ledger: fold recent positions into the base"
"""The commit message of a fold's snapshot; its extra info is `fold_label`'s JSON."""


@dataclass(frozen=True, slots=True)
class RecentRead:
    """What phase 1 found: the snapshot it read and what phase 2 must see again."""

    as_of: int
    """The snapshot S read; phase 2 removes the recent rows published at S or before."""
    rows: int
    """Recent rows at S (every accepted version since the last fold)."""
    keys: int
    """Distinct keys among them: the rows phase 2 inserts into the base."""
    replaced: int
    """Base rows those keys replace: the rows phase 2 deletes from the base."""


@dataclass(frozen=True, slots=True)
class FoldReport:
    """One fold of the recent positions into the base, for logs and metrics."""

    snapshot_id: int
    """The snapshot the fold committed (it changes no position)."""
    as_of: int
    rows: int
    """Recent rows folded."""
    keys: int
    """Keys written to the base."""
    read_seconds: float
    """Phase 1 (wall): off the publish path."""
    commit_seconds: float
    """Phase 2 (wall), including the wait for the publish before it: publishes wait this long at most."""
    background: bool
    """Run beside the publishes (True), or on the caller's thread (`SnapshotWriter.compact_recent`)."""


_NEWEST = "fold_newest"
_REPLACED = "fold_replaced"


def read_recent(cur: duckdb.DuckDBPyConnection, base: str, recent: str) -> RecentRead | None:
    """Phase 1: stage the newest recent row per key and the base rows they replace; None when recent is empty.

    `cur` is a connection of its own (its temp tables are its own); raises duckdb.Error.
    """
    columns = ", ".join(TABLES["positions"].names)
    keys = " AND ".join(f"b.{k} = n.{k}" for k in TABLES["positions"].key)
    # One transaction: every read below sees the same snapshot. It writes only temp
    # tables (another database than the lake), so its COMMIT writes nothing to the catalog.
    cur.execute("BEGIN")
    try:
        as_of = scalar(cur, f"SELECT * FROM {LAKE}.current_snapshot()")
        rows = scalar(cur, f"SELECT count(*) FROM {LAKE}.{recent}")
        if rows == 0:
            cur.execute("COMMIT")
            return None
        # Highest version, then the later publish: the rule of the view `positions`.
        cur.execute(
            f"CREATE OR REPLACE TEMP TABLE {_NEWEST} AS SELECT {columns} FROM {LAKE}.{recent} "
            "QUALIFY row_number() OVER (PARTITION BY site_id, sku ORDER BY version DESC, snapshot_id DESC) = 1"
        )
        # By `rowid`, not by key: phase 2 then deletes without reading the keys of the base again.
        cur.execute(
            f"CREATE OR REPLACE TEMP TABLE {_REPLACED} AS "
            f"SELECT b.rowid AS row_id FROM {LAKE}.{base} b SEMI JOIN {_NEWEST} n ON {keys}"
        )
        found = RecentRead(
            as_of,
            rows,
            scalar(cur, f"SELECT count(*) FROM {_NEWEST}"),
            scalar(cur, f"SELECT count(*) FROM {_REPLACED}"),
        )
        cur.execute("COMMIT")
    except BaseException:
        rollback(cur)
        raise
    return found


def commit_fold(cur: duckdb.DuckDBPyConnection, base: str, recent: str, read: RecentRead) -> int:
    """Phase 2: replace the base rows, insert the newest, drop the folded recent rows; return the snapshot id.

    The caller holds the writer's commit lock and, with several writers, the
    commit turn. Raises duckdb.Error (rolled back by the caller), or SnapshotError when
    the tables changed since phase 1.
    """
    columns = ", ".join(TABLES["positions"].names)
    cur.execute("BEGIN")
    replaced = scalar(cur, f"DELETE FROM {LAKE}.{base} WHERE rowid IN (SELECT row_id FROM {_REPLACED})")
    inserted = scalar(cur, f"INSERT INTO {LAKE}.{base} ({columns}) SELECT {columns} FROM {_NEWEST}")
    folded = scalar(cur, f"DELETE FROM {LAKE}.{recent} WHERE snapshot_id <= {int(read.as_of)}")
    if (replaced, folded, inserted) != (read.replaced, read.rows, read.keys):
        cur.execute("ROLLBACK")
        msg = (
            f"cannot fold {recent} into {base}: at snapshot {read.as_of} they held {read.rows} recent rows and "
            f"{read.replaced} base rows to replace, at the fold's commit {folded} and {replaced}: another "
            "process changed them meanwhile (repair a store with its writers stopped); nothing was changed"
        )
        raise SnapshotError(msg)
    # The same transaction as the rows: a fold's snapshot always says what it did to its base.
    cur.execute(
        f"CALL {LAKE}.set_commit_message('omni-ledger', {sql_literal(FOLD_MESSAGE)}, "
        f"extra_info => {sql_literal(fold_label(base, inserted - replaced))})"
    )
    cur.execute("COMMIT")
    return scalar(cur, f"SELECT * FROM ducklake_last_committed_snapshot('{LAKE}')")


def fold_label(base: str, growth: int) -> str:
    """A fold's commit extra info: the base it changed and its rows after minus before."""
    return json.dumps({"base": base, "growth": growth}, sort_keys=True)


def base_growth(message: str | None, extra_info: str | None, bases: frozenset[str]) -> int | None:
    """The rows a snapshot's fold added to one of `bases`, or None when its commit is not a fold of one of them.

    None too for a label that cannot be read: the caller then counts the bases again.
    """
    if message != FOLD_MESSAGE or extra_info is None:
        return None
    try:
        label = json.loads(extra_info)
    except ValueError:
        return None
    if not isinstance(label, dict) or label.get("base") not in bases or type(label.get("growth")) is not int:
        return None
    return int(label["growth"])


def drop_staged(cur: duckdb.DuckDBPyConnection) -> None:
    """Drop phase 1's temp tables (they hold a copy of up to the whole recent table)."""
    cur.execute(f"DROP TABLE IF EXISTS {_NEWEST}; DROP TABLE IF EXISTS {_REPLACED}")
