"""Step 2 of a publish and the MERGE of step 6-7: fold outputs into temp tables, temp tables into the lake.

A table's staged columns, types and values all come from its declaration in
`adapters.snapshot_store.tables`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np

from adapters.snapshot_store.connection import from_millis, sql_literal
from adapters.snapshot_store.layout import LAKE
from adapters.snapshot_store.tables import TABLES, Table
from ledger.errors import SnapshotError

__all__ = ["merge", "stage", "stage_columns"]


def stage(con: duckdb.DuckDBPyConnection, table: Table[Any], items: Sequence[Any]) -> None:
    """(Re)create the temp table `stage_<table>` holding `items` as the table's rows.

    The values travel as one JSON string parameter: binding Python lists (executemany,
    unnest of list parameters, multi-row VALUES) cost about 50 us per value on this
    duckdb build, 5.7 s for 10,000 positions; JSON costs 25 ms.
    """
    shape = json.dumps({c.name: [c.staged] for c in table.columns})
    unnested = ", ".join(f"unnest(j.{name}) AS {name}" for name in table.names)
    try:
        payload = json.dumps(table.rows(items), allow_nan=False)
    except ValueError as exc:
        msg = f"cannot publish to {table.name}: a number is NaN or infinite (JSON has neither)"
        raise SnapshotError(msg) from exc
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE stage_{table.name} AS "
        f"WITH p AS (SELECT from_json(?, {sql_literal(shape)}) AS j), "
        f"u AS (SELECT {unnested} FROM p) "
        f"SELECT {_converted(table)} FROM u",
        [payload],
    )


def stage_columns(con: duckdb.DuckDBPyConnection, table: Table[Any], items: Sequence[Any], name: str = "") -> None:
    """`stage` from numpy columns, for the big tables whose values are never NULL (positions, inbound lines).

    `name`: the temp table to (re)create, `stage_<table>` by default.

    DuckDB scans a dict of numpy arrays in place (found by name, see below): 100,000
    positions staged in 0.22-0.33 s of CPU when it was registered, against 0.72-0.86 s
    through a CSV file written with Python's csv module (the way before; side by side in
    one process, docs/snapshots.md), most of which
    held the GIL the fold needs. Text travels as fixed-width unicode arrays, which would
    drop a trailing NUL character: text holding a NUL is refused instead (DuckLake cannot
    keep one in a key either: its file pruning fails on it; the contract admits none).
    """
    rows = table.rows(items)
    columns: dict[str, np.ndarray[Any, Any]] = {}
    for column in table.columns:
        values = rows[column.name]
        try:
            if column.staged == "VARCHAR":
                if "\x00" in "".join(values):
                    nul = next(value for value in values if "\x00" in value)
                    msg = f"cannot publish to {table.name}: column {column.name} holds a NUL character: {nul!r}"
                    raise SnapshotError(msg)
                columns[column.name] = np.array(values, dtype=np.str_)
            else:
                columns[column.name] = np.array(values, dtype=_NUMPY[column.staged])
        except (OverflowError, TypeError, ValueError) as exc:
            msg = (
                f"cannot publish to {table.name}: column {column.name} holds a value that is not "
                f"a {column.staged}: {exc}"
            )
            raise SnapshotError(msg) from exc
    # Scanned by name from this frame (DuckDB's replacement scan of a Python local), not
    # `register`ed: registering the dict ran numpy's unique over each text column first,
    # 0.28-0.32 s of CPU for 100,000 keys' two text columns, against 0.11-0.15 s for the
    # whole scan (side by side, docs/snapshots.md).
    staged_columns = columns  # noqa: F841 - read by DuckDB by name
    target = name or f"stage_{table.name}"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {target} AS SELECT {_converted(table)} FROM staged_columns")


_NUMPY: dict[str, type[np.generic]] = {"BIGINT": np.int64, "BOOLEAN": np.bool_, "DOUBLE": np.float64}
"""The numpy type of each staged SQL type but text."""


def _converted(table: Table[Any]) -> str:
    """The staged columns as stored: times from epoch milliseconds."""
    return ", ".join(f"{from_millis(c.name)} AS {c.name}" if c.sql == "MILLIS" else c.name for c in table.columns)


def merge(con: duckdb.DuckDBPyConnection, table: str, target: str, source: str, newer: str) -> None:
    """Upsert `source` into lake.`target` (public table `table`'s columns and key); update only where `newer` holds."""
    names, key = TABLES[table].names, TABLES[table].key
    on = " AND ".join(f"t.{k} = s.{k}" for k in key)
    sets = ", ".join(f"{c} = s.{c}" for c in names if c not in key)
    con.execute(
        f"MERGE INTO {LAKE}.{target} t USING {source} s ON {on} "
        f"WHEN MATCHED AND {newer} THEN UPDATE SET {sets} "
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}) "
        f"VALUES ({', '.join('s.' + c for c in names)})"
    )
