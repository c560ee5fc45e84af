"""Reading a snapshot store from any process, without blocking its writers.

`SnapshotReader` attaches the store read-only. Its table reads return rows as dicts (the
CLI, `omni-ledger sql`, scripts); its pinned reads (`stock`, `slots`, `rows`) take a
snapshot id the caller already holds and return typed rows, for the HTTP API's
`ServingStore`. The tables are declared in `adapters.snapshot_store.tables`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import duckdb

from adapters.snapshot_store.connection import Closing, attach, connect, dicts, to_utc
from adapters.snapshot_store.layout import CATALOG_FILE, LAKE, SNAPSHOT_LOG, StoreLayout
from adapters.snapshot_store.tables import TABLES
from ledger.answer import Stock
from ledger.errors import SnapshotError
from ledger.events import Millis
from ledger.network import appointment_slot
from ledger.outputs import InboundLine, OfferTerms

__all__ = ["SnapshotReader", "SnapshotStamp"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SnapshotStamp(NamedTuple):
    """A snapshot_info row, typed: which snapshot, when, and how far the flow had got."""

    snapshot_id: int
    created_at: Millis
    events_applied: int
    max_occurred_at: Millis | None


def _ms(value: object) -> Millis | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        msg = f"expected a time from the snapshot store, got {value!r}"
        raise SnapshotError(msg)
    return (value - _EPOCH) // timedelta(milliseconds=1)


def _placeholders(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


class SnapshotReader(Closing):
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
            layout = StoreLayout(catalog, layout.writers, layout.version)
        con = connect(directory, layout)
        try:
            attach(con, directory, layout, read_only=True)
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

    def latest(self, cursor: duckdb.DuckDBPyConnection | None = None) -> dict[str, object] | None:
        """The newest snapshot_info row, or None before the first publish.

        With several writers: the newest publish's id and time, every writer's latest
        events_applied summed, the newest max_occurred_at. `cursor`: one of this reader's
        (`cursor()`) to run it on, rather than a new one (a cursor and its `USE` cost as
        much as the query in a busy process: a follower keeps one).
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
                cursor,
            )
        else:
            rows = self._query("SELECT * FROM snapshot_info ORDER BY snapshot_id DESC LIMIT 1", [], cursor)
        return rows[0] if rows else None

    def sql(self, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run any read-only query (the lake is the default schema); (columns, rows)."""
        try:
            with self._cursor() as cursor:
                cursor.execute(query)
                columns = [d[0] for d in cursor.description or ()]
                rows = [to_utc(row) for row in cursor.fetchall()] if columns else []
        except duckdb.Error as exc:
            msg = f"query failed on the snapshot store {self._dir}: {exc}"
            raise SnapshotError(msg) from exc
        return columns, rows

    # -- pinned reads: the caller holds a snapshot id (from `newest`) and reads everything at it

    def newest(self, cursor: duckdb.DuckDBPyConnection | None = None) -> SnapshotStamp | None:
        """`latest`, typed (times in epoch milliseconds); None before the first publish."""
        row = self.latest(cursor)
        if row is None:
            return None
        snapshot_id, events_applied = row["snapshot_id"], row["events_applied"]
        if not isinstance(snapshot_id, int) or not isinstance(events_applied, int):
            msg = f"snapshot_info of {self._dir} holds a row without ids or counts: {row}"
            raise SnapshotError(msg)
        return SnapshotStamp(snapshot_id, _ms(row["created_at"]) or 0, events_applied, _ms(row["max_occurred_at"]))

    def stock(self, skus: Sequence[str], snapshot_id: int) -> list[Stock]:
        """Every position of these skus at `snapshot_id`, with its unpromised inbound lines and its offer."""
        if not skus:
            return []
        at = f"AT (VERSION => {int(snapshot_id)})"
        inbound: dict[tuple[str, str], list[InboundLine]] = {}
        for site_id, sku, ref, qty, eta in self._tuples(
            f"SELECT site_id, sku, ref, qty, epoch_ms(eta) FROM inbound {at} "
            f"WHERE sku IN ({_placeholders(skus)}) AND NOT coalesce(promised, false) ORDER BY eta, ref",
            [*skus],
        ):
            inbound.setdefault((site_id, sku), []).append(InboundLine(ref, qty, eta))
        offers: dict[tuple[str, str], OfferTerms] = {}
        for seller_id, sku, qty, price, lead_time_days, updated_at in self._tuples(
            f"SELECT seller_id, sku, qty, price, lead_time_days, epoch_ms(updated_at) "
            f"FROM offers {at} WHERE sku IN ({_placeholders(skus)})",
            [*skus],
        ):
            offers[(seller_id, sku)] = OfferTerms(qty, price, lead_time_days, updated_at)
        return [
            Stock(site_id, sku, atp, tuple(inbound.get((site_id, sku), ())), offers.get((site_id, sku)))
            for site_id, sku, atp in self._tuples(
                f"SELECT site_id, sku, atp FROM positions {at} WHERE sku IN ({_placeholders(skus)})", [*skus]
            )
        ]

    def slots(self, stores: Iterable[str], snapshot_id: int) -> dict[tuple[str, Millis], int]:
        """Free appointment capacity at `snapshot_id` by (store, slot start): the ATP of each opened slot."""
        ids = sorted(set(stores))
        if not ids:
            return {}
        free: dict[tuple[str, Millis], int] = {}
        for site_id, sku, atp in self._tuples(
            f"SELECT site_id, sku, atp FROM positions AT (VERSION => {int(snapshot_id)}) "
            # A range on sku, not starts_with: Parquet min/max statistics can prune it.
            f"WHERE site_id IN ({_placeholders(ids)}) AND sku >= 'appt:' AND sku < 'appt;'",
            [*ids],
        ):
            slot = appointment_slot(sku)
            if slot is not None:
                free[(site_id, slot)] = atp
        return free

    def rows(
        self, table: str, filters: Mapping[str, str | None], snapshot_id: int, order: str | None = None
    ) -> list[dict[str, Any]]:
        """Rows of public table `table` at `snapshot_id` whose columns equal the filters that are not None.

        Ordered by `order` (default: the table's reading order); `plan` stays JSON text.
        """
        if table not in TABLES:
            msg = f"{table!r} is not a table of the snapshot store; the tables are {', '.join(TABLES)}"
            raise SnapshotError(msg)
        where = [(col, value) for col, value in filters.items() if value is not None]
        unknown = [col for col, _ in where if col not in TABLES[table].names]
        if unknown:
            msg = f"{table} has no column {', '.join(unknown)}"
            raise SnapshotError(msg)
        query = f"SELECT * FROM {table} AT (VERSION => {int(snapshot_id)})"
        if where:
            query += " WHERE " + " AND ".join(f"{col} = ?" for col, _ in where)
        return self._query(f"{query} ORDER BY {order or TABLES[table].order}", [value for _, value in where])

    # -- internals

    @property
    def directory(self) -> Path:
        """The store's directory."""
        return self._dir

    def lake_snapshot(self, cursor: duckdb.DuckDBPyConnection) -> tuple[object, int] | None:
        """(the catalog file's inode where it has one, DuckLake's current snapshot id); None where there is none.

        Every publish is a DuckLake commit, so a new current snapshot, which DuckDB reads from
        the catalog alone (~2 ms, against ~20 ms for the newest snapshot_info row: its table's
        files). Read on `cursor` (one of `cursor()`) before that row, the row is as new as this
        snapshot or newer: while it is unchanged, there is no new row to read.
        """
        row = cursor.execute(f"SELECT id FROM ducklake_current_snapshot('{LAKE}')").fetchone()
        if row is None or row[0] is None:
            return None
        stat = self.catalog_stat()
        # A catalog made anew at the same place is another file: its ids start again.
        file = stat[0][0] if isinstance(stat, tuple) and stat and isinstance(stat[0], tuple) else None
        return file, int(row[0])

    def catalog_stat(self) -> object:
        """The SQLite catalog's files as stat sees them (inode, size, mtime of the file and its WAL).

        Equal before and after a poll: nothing was committed in between (a catalog in WAL
        mode changes its files at every commit), except a write of the same size within the
        clock's tick: a poller reads the catalog anyway now and then. None where a stat
        cannot tell (a PostgreSQL catalog).
        """
        if self._layout.postgres:
            return None
        marks: list[tuple[int, int, int] | None] = []
        for name in (CATALOG_FILE, f"{CATALOG_FILE}-wal"):
            try:
                found = os.stat(self._dir / name)
            except FileNotFoundError:
                marks.append(None)
                continue
            marks.append((found.st_ino, found.st_size, found.st_mtime_ns))
        return tuple(marks)

    def physical_tables(self, name: str) -> list[str]:
        """The tables (or, for positions in layout 2, views) behind public table `name`: itself, or each writer's."""
        return [self._layout.table(name, writer) for writer in range(self._layout.writers)]

    def refresh_layout(self) -> bool:
        """Read DIR/store.json again; True when a writer has migrated the store to another layout since.

        A follower then loads the whole table again: its change feed's tables changed names.
        """
        try:
            found = StoreLayout.of(self._dir)
        except SnapshotError:
            return False  # a manifest being replaced: the next refresh reads it
        if found is None or found.version == self._layout.version:
            return False
        self._layout = StoreLayout(self._layout.catalog, self._layout.writers, found.version)
        return True

    def position_feed_tables(self) -> list[str]:
        """The tables whose `ducklake_table_insertions` are the positions' changes, one per writer.

        Layout 2: the recent tables. A publish inserts every changed position there, and a
        compaction only deletes from them (its MERGE into the base moves rows that are
        already in the feed, with the same versions): a follower of these sees every
        publish and no compaction. Layout 1: the positions tables themselves.
        """
        if self._layout.version < 2:
            return self.physical_tables("positions")
        return [self._layout.positions_recent(writer) for writer in range(self._layout.writers)]

    def position_count_sql(self, snapshot_id: int) -> str:
        """A query of the number of positions at `snapshot_id`, without the view's join.

        Layout 2: each writer's base count plus its recent rows that were a key's first
        (`new_key`); the same as `count(*) FROM positions`, which would join every base
        row against the recent ones.
        """
        base, recent = self.position_count_parts(snapshot_id)
        return f"SELECT ({base}) + ({recent})"

    def position_count_parts(self, snapshot_id: int) -> tuple[str, str]:
        """`position_count_sql` in two queries: the count in `counted_tables()`, and the rest.

        Layout 2: the bases' rows, then the recent rows that were a key's first. The first
        scans 20M rows once the bases carry delete files (DuckLake then cannot count from
        its metadata): a follower reuses it while no snapshot changed those tables.
        Layout 1: the whole count, then 0.
        """
        at = f"AT (VERSION => {int(snapshot_id)})"
        if self._layout.version < 2:
            return f"SELECT count(*) FROM {LAKE}.positions {at}", "SELECT 0"
        writers = range(self._layout.writers)
        base = " + ".join(f"(SELECT count(*) FROM {LAKE}.{self._layout.positions_base(w)} {at})" for w in writers)
        recent = " + ".join(
            f"(SELECT count(*) FROM {LAKE}.{self._layout.positions_recent(w)} {at} WHERE new_key)" for w in writers
        )
        return f"SELECT {base}", f"SELECT {recent}"

    def counted_tables(self) -> list[str]:
        """The tables the first query of `position_count_parts` counts: the bases (layout 2), else the positions."""
        if self._layout.version < 2:
            return self.physical_tables("positions")
        return [self._layout.positions_base(w) for w in range(self._layout.writers)]

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
        query += f" ORDER BY {TABLES[table].order}"
        try:
            with self._cursor() as cursor:
                rows = dicts(cursor.execute(query, [value for _, value in where]))
        except duckdb.Error as exc:
            if as_of is None:
                msg = f"cannot read {table} from the snapshot store {self._dir}: {exc}"
            else:
                msg = f"cannot read {table} at snapshot {as_of} from {self._dir}: {exc}; {self._available()}"
            raise SnapshotError(msg) from exc
        if "plan" in TABLES[table].names:
            for row in rows:
                plan = row["plan"]
                row["plan"] = json.loads(plan) if isinstance(plan, str) else plan
        return rows

    def _query(
        self, query: str, params: list[object], cursor: duckdb.DuckDBPyConnection | None = None
    ) -> list[dict[str, object]]:
        try:
            if cursor is not None:
                return dicts(cursor.execute(query, params))
            with self._cursor() as own:
                return dicts(own.execute(query, params))
        except duckdb.Error as exc:
            msg = f"cannot read the snapshot store {self._dir}: {exc}"
            raise SnapshotError(msg) from exc

    def _tuples(self, query: str, params: list[object], failing: str = "") -> list[tuple[Any, ...]]:
        try:
            with self._cursor() as cursor:
                return cursor.execute(query, params).fetchall()
        except duckdb.Error as exc:
            msg = f"{failing or f'cannot read the snapshot store {self._dir}'}: {exc}"
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
        found = self._tuples(
            f"SELECT count(*) FROM ducklake_snapshots('{LAKE}') WHERE snapshot_id = ?",
            [snapshot_id],
            failing=f"cannot list the snapshots of {self._dir}",
        )
        if not found or not found[0][0]:
            msg = f"snapshot {snapshot_id} is unknown or expired in {self._dir}: {self._available()}"
            raise SnapshotError(msg)
