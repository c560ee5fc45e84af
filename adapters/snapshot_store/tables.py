"""One declaration per table of the snapshot store: each column's name, SQL type, value and meaning.

Everything else about a table is made from its declaration here: the DDL and the upgrade
of a store written by an earlier version (`create_missing`), the rows a publish stages
(`Table.rows`), the columns the CLI shows (`Table.shown`), and docs/snapshot-tables.md
(`markdown`: `python -m adapters.snapshot_store --markdown > docs/snapshot-tables.md`;
a test keeps the checked-in page equal to it).

Adding a column to a public table is one `Column(...)` line in its declaration (and its
name in `shown` if the CLI should show it): a writer opening an existing store adds the
column in one snapshot, rows written before hold the column's `added` literal, or NULL.
Nothing is ever dropped or retyped, so readers of an older store keep working.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Generic, NamedTuple, TypeVar

import duckdb

from adapters.snapshot_store.layout import LAKE, SNAPSHOT_LOG, StoreLayout
from ledger.contract import fulfilment_to_record
from ledger.events import Millis
from ledger.execution import DropshipOrder, ShuttleLoad, StoreTask, Work
from ledger.outputs import InboundLine, OfferTerms, PositionChange, ReservationDecision

__all__ = [
    "POSITIONS_RECENT",
    "POSITION_COLUMNS",
    "SNAPSHOT_LOG_TABLE",
    "TABLES",
    "Column",
    "PublishRecord",
    "SellerOffer",
    "SiteLine",
    "Table",
    "create_missing",
    "markdown",
    "positions_view_sql",
]

T = TypeVar("T")

_SQL_TYPES = ("VARCHAR", "BIGINT", "BOOLEAN", "DOUBLE", "MILLIS")


@dataclass(frozen=True, slots=True)
class Column(Generic[T]):
    """One column: its name, SQL type, where its value comes from, and what it means.

    `sql` "MILLIS" is a time: it travels as epoch milliseconds and is stored as
    TIMESTAMPTZ (UTC). `source` is the attribute path on the row object (default: the
    column's name) or a function of it. `added` is what rows written before the column
    existed hold (a SQL literal: DuckLake adds columns with literal defaults only); None
    leaves them NULL.
    """

    name: str
    sql: str
    doc: str
    source: str | Callable[[T], object] = ""
    added: str | None = None
    value: Callable[[T], object] = field(init=False, repr=False, compare=False)
    """The column's value for one row object."""

    def __post_init__(self) -> None:
        if self.sql not in _SQL_TYPES:
            msg = f"column {self.name!r} has SQL type {self.sql!r}; use one of {', '.join(_SQL_TYPES)}"
            raise ValueError(msg)
        source = self.source or self.name
        object.__setattr__(self, "value", attrgetter(source) if isinstance(source, str) else source)

    @property
    def stored(self) -> str:
        """The type the lake stores."""
        return "TIMESTAMPTZ" if self.sql == "MILLIS" else self.sql

    @property
    def staged(self) -> str:
        """The type a publish stages it as (times as epoch milliseconds)."""
        return "BIGINT" if self.sql == "MILLIS" else self.sql


@dataclass(frozen=True, slots=True)
class Table(Generic[T]):
    """A table: its columns (made from row objects of type T), key, reading order and CLI columns."""

    name: str
    doc: str
    key: tuple[str, ...]
    """Key columns, declared NOT NULL; a publish MERGEs on them."""
    order: str
    """The ORDER BY of what readers return."""
    columns: tuple[Column[T], ...]
    shown: tuple[str, ...] = ()
    """The columns `omni-ledger` shows in its table output, in that order."""

    def __post_init__(self) -> None:
        unknown = [name for name in (*self.key, *self.shown) if name not in self.names]
        if unknown:
            msg = f"table {self.name!r} names columns it does not declare: {', '.join(unknown)}"
            raise ValueError(msg)

    @property
    def names(self) -> tuple[str, ...]:
        """The column names, in order."""
        return tuple(column.name for column in self.columns)

    def rows(self, items: Sequence[T]) -> dict[str, list[Any]]:
        """The items as columns (name -> values), for staging."""
        # map over attrgetter runs in C: 100,000 positions cost what a list comprehension did.
        return {column.name: list(map(column.value, items)) for column in self.columns}

    def values(self, item: T) -> list[object]:
        """One item's values, in column order."""
        return [column.value(item) for column in self.columns]


class SiteLine(NamedTuple):
    """An inbound line of one (site, sku) position: a row of `inbound`."""

    site_id: str
    sku: str
    line: InboundLine


class SellerOffer(NamedTuple):
    """A marketplace seller's offer for one sku: a row of `offers`."""

    seller_id: str
    sku: str
    offer: OfferTerms


class PublishRecord(NamedTuple):
    """What one publish records about itself: a row of `snapshot_info` (or of `snapshot_log`)."""

    snapshot_id: int | None
    """None with several writers: DuckLake records the id as it commits."""
    writer: int
    created_at: Millis
    events_applied: int
    max_occurred_at: Millis | None


def _plan_json(item: Work) -> str:
    return json.dumps(fulfilment_to_record(item.plan), separators=(",", ":"))


_PLAN_DOC = "The fulfilment plan as JSON (times in epoch milliseconds); the typed readers return it decoded."

POSITIONS: Table[PositionChange] = Table(
    "positions",
    "One row per (site, sku) that has seen an event: its visible state after the latest change.",
    key=("site_id", "sku"),
    order="site_id, sku",
    columns=(
        Column("site_id", "VARCHAR", "The site: a store, a DC, or a marketplace seller."),
        Column("sku", "VARCHAR", "The item (appointment slots are skus `appt:...`)."),
        Column("on_hand", "BIGINT", "Units physically at the site."),
        Column("reserved", "BIGINT", "Units held for accepted reservations."),
        Column("staged", "BIGINT", "Units set aside for a shuttle or a carrier, not yet gone."),
        Column("inbound", "BIGINT", "Units due on the inbound lines (see `inbound`).", "inbound_qty"),
        Column("safety_stock", "BIGINT", "Units never promised."),
        Column("atp", "BIGINT", "Available to promise: max(0, on_hand - reserved - staged - safety_stock)."),
        Column("negative", "BOOLEAN", "on_hand went below zero (a count will correct it)."),
        Column("version", "BIGINT", "Rises with each change of the position; a publish keeps the highest."),
        Column("updated_at", "MILLIS", "When the ledger clock last changed the position."),
    ),
    shown=(
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
    ),
)
POSITION_COLUMNS: tuple[str, ...] = POSITIONS.names
"""The positions table's columns, in order."""

POSITIONS_RECENT: Table[PositionChange] = Table(
    "positions_recent",
    "Layout 2: a writer's positions published since its last compaction, one row per accepted version, "
    "inserted only; `positions` is the newest of these per key, else the base row.",
    key=("site_id", "sku"),
    order="site_id, sku, version",
    columns=(
        *POSITIONS.columns,
        Column(
            "new_key",
            "BOOLEAN",
            "The key's first row in the store: neither base nor recent held it when published "
            "(so `count(*)` of `positions` is base's count plus these, without a join).",
            lambda _: False,  # set by the publish's INSERT, never staged
        ),
    ),
)
"""Declared apart from `TABLES`: not a public table (docs/snapshots.md: the recent table and the change feed)."""

INBOUND: Table[SiteLine] = Table(
    "inbound",
    "What is on a shuttle or a supplier's truck to a site, due when; replaced with its position.",
    key=("site_id", "sku"),
    order="site_id, sku, eta, ref",
    columns=(
        Column("site_id", "VARCHAR", "The receiving site."),
        Column("sku", "VARCHAR", "The item."),
        Column("ref", "VARCHAR", "The parcel, shuttle or shipment the units travel on.", "line.ref"),
        Column("eta", "MILLIS", "When the units are due at the site.", "line.eta"),
        Column("qty", "BIGINT", "Units on the line.", "line.qty"),
        Column(
            "promised",
            "BOOLEAN",
            "Already promised to a customer (a confirmed transfer or dropship): not for sale.",
            "line.promised",
            added="'false'",  # stores from before fulfilment plans had no promised lines
        ),
    ),
    shown=("site_id", "ref", "eta", "qty"),
)

RESERVATIONS: Table[ReservationDecision] = Table(
    "reservations",
    "The latest status of each reservation.",
    key=("reservation_id",),
    order="reservation_id",
    columns=(
        Column("reservation_id", "VARCHAR", "The reservation, as the request named it."),
        Column("site_id", "VARCHAR", "The site holding the units."),
        Column("sku", "VARCHAR", "The item."),
        Column("qty", "BIGINT", "Units held."),
        Column("status", "VARCHAR", "ACCEPTED, REJECTED, RELEASED, FULFILLED or EXPIRED.", "status.value"),
        Column("expires_at", "MILLIS", "When an accepted hold ends unless fulfilled or released."),
        Column("decided_at", "MILLIS", "When the ledger took this decision."),
    ),
    shown=("reservation_id", "site_id", "sku", "qty", "status", "expires_at", "decided_at"),
)

OFFERS: Table[SellerOffer] = Table(
    "offers",
    "Marketplace sellers' current offers (the newest by updated_at).",
    key=("seller_id", "sku"),
    order="sku, seller_id",
    columns=(
        Column("seller_id", "VARCHAR", "The seller (a site of kind seller)."),
        Column("sku", "VARCHAR", "The item."),
        Column("qty", "BIGINT", "Units offered.", "offer.qty"),
        Column("price", "DOUBLE", "Price per unit, if given.", "offer.price"),
        Column("lead_time_days", "BIGINT", "Days from order to shipment, if given.", "offer.lead_time_days"),
        Column("updated_at", "MILLIS", "When the seller last changed the offer.", "offer.updated_at"),
    ),
)

STORE_TASKS: Table[StoreTask] = Table(
    "store_tasks",
    "The latest status of each store task (`task_id` = `reservation_id/kind`); a higher rank replaces.",
    key=("task_id",),
    order="site_id, due_at, task_id",
    columns=(
        Column("task_id", "VARCHAR", "`reservation_id/kind`."),
        Column("site_id", "VARCHAR", "The site whose staff does it."),
        Column("sku", "VARCHAR", "The item."),
        Column("qty", "BIGINT", "Units."),
        Column("kind", "VARCHAR", "PICK_FOR_SHUTTLE, PREPARE_PICKUP or PICK_FOR_CARRIER.", "kind.value"),
        Column("status", "VARCHAR", "OPEN, DONE or CANCELLED.", "status.value"),
        Column("rank", "BIGINT", "How far the status has moved on; only a higher one replaces the row."),
        Column("reservation_id", "VARCHAR", "The reservation the task serves."),
        Column("order_id", "VARCHAR", "The customer's order.", "plan.order_id"),
        Column("customer", "VARCHAR", "A name for the parcel label and the clerk.", "plan.customer"),
        Column("zone", "VARCHAR", "Stock-room zone where the clerk isolates the units.", "plan.zone"),
        Column("parcel_id", "VARCHAR", "The label on the parcel (transfers).", "plan.parcel_id"),
        Column("run_id", "VARCHAR", "The shuttle run that carries the parcel (transfers).", "plan.run_id"),
        Column("deliver_to", "VARCHAR", "The store where the customer collects it, or HOME.", "plan.deliver_to"),
        Column("departs_at", "MILLIS", "The shuttle's departure (transfers).", "plan.departs_at"),
        Column("due_at", "MILLIS", "Done by then: the shuttle's departure, the appointment, or the pickup date."),
        Column("appointment_at", "MILLIS", "Start of the appointment slot, if booked.", "plan.appointment_at"),
        Column("plan", "VARCHAR", _PLAN_DOC, _plan_json),
        Column("updated_at", "MILLIS", "When the ledger last changed the task."),
    ),
    shown=("task_id", "site_id", "sku", "qty", "kind", "status", "due_at", "zone", "parcel_id", "customer"),
)

TRANSPORT_LOADS: Table[ShuttleLoad] = Table(
    "transport_loads",
    "The latest status of each parcel on a shuttle run; a higher rank replaces.",
    key=("parcel_id",),
    order="departs_at, run_id, parcel_id",
    columns=(
        Column("parcel_id", "VARCHAR", "The label on the parcel."),
        Column("run_id", "VARCHAR", "The shuttle run."),
        Column("origin", "VARCHAR", "The site the parcel leaves."),
        Column("destination", "VARCHAR", "The site the parcel goes to."),
        Column("sku", "VARCHAR", "The item."),
        Column("qty", "BIGINT", "Units."),
        Column("departs_at", "MILLIS", "The run's departure."),
        Column("arrives_at", "MILLIS", "The run's arrival."),
        Column("status", "VARCHAR", "PLANNED, LOADED, ARRIVED or CANCELLED.", "status.value"),
        Column("rank", "BIGINT", "How far the status has moved on; only a higher one replaces the row."),
        Column("reservation_id", "VARCHAR", "The reservation the parcel serves."),
        Column("order_id", "VARCHAR", "The customer's order.", "plan.order_id"),
        Column("customer", "VARCHAR", "A name for the parcel label.", "plan.customer"),
        Column("plan", "VARCHAR", _PLAN_DOC, _plan_json),
        Column("updated_at", "MILLIS", "When the ledger last changed the load."),
    ),
    shown=("parcel_id", "run_id", "origin", "destination", "sku", "qty", "departs_at", "arrives_at", "status"),
)

DROPSHIP_ORDERS: Table[DropshipOrder] = Table(
    "dropship_orders",
    "The latest status of each order to a supplier or seller (`order_ref` = reservation id); higher rank replaces.",
    key=("order_ref",),
    order="supplier_id, due_at, order_ref",
    columns=(
        Column("order_ref", "VARCHAR", "The reservation id: one order per reservation."),
        Column("supplier_id", "VARCHAR", "The supplier or marketplace seller that ships."),
        Column("deliver_to", "VARCHAR", "The store it ships to, or HOME."),
        Column("sku", "VARCHAR", "The item."),
        Column("qty", "BIGINT", "Units."),
        Column("due_at", "MILLIS", "When it must arrive."),
        Column("status", "VARCHAR", "ORDERED, SHIPPED, RECEIVED or CANCELLED.", "status.value"),
        Column("rank", "BIGINT", "How far the status has moved on; only a higher one replaces the row."),
        Column("order_id", "VARCHAR", "The customer's order.", "plan.order_id"),
        Column("customer", "VARCHAR", "A name for the delivery.", "plan.customer"),
        Column("plan", "VARCHAR", _PLAN_DOC, _plan_json),
        Column("updated_at", "MILLIS", "When the ledger last changed the order."),
    ),
    shown=("order_ref", "supplier_id", "deliver_to", "sku", "qty", "due_at", "status", "order_id"),
)

_CREATED_AT = "When the flow handed the publish's outputs to the writer."
_MAX_OCCURRED = "The newest event time the store has applied so far."

SNAPSHOT_INFO: Table[PublishRecord] = Table(
    "snapshot_info",
    "One row per publish. With several writers a view over `snapshot_log` that adds a `writer` column.",
    key=("snapshot_id",),
    order="snapshot_id",
    columns=(
        Column("snapshot_id", "BIGINT", "The DuckLake snapshot the publish created: what `as_of` takes."),
        Column("created_at", "MILLIS", _CREATED_AT),
        Column("events_applied", "BIGINT", "Events the flow had applied by then (all writers' latest, summed)."),
        Column("max_occurred_at", "MILLIS", _MAX_OCCURRED),
    ),
    shown=("snapshot_id", "created_at", "events_applied", "max_occurred_at"),
)

SNAPSHOT_LOG_TABLE: Table[PublishRecord] = Table(
    SNAPSHOT_LOG,
    "With several writers, the one table all of them insert into, one row per publish; `snapshot_info` is a view "
    "over it whose snapshot_id is DuckLake's `snapshot_id` virtual column (the snapshot that inserted the row), "
    "exact even when DuckLake renumbered a commit that lost the race for the next id.",
    key=(),
    order="snapshot_id",
    columns=(
        Column("writer", "BIGINT", "The writer's index."),
        Column("created_at", "MILLIS", _CREATED_AT),
        Column("events_applied", "BIGINT", "Events this writer had applied by then."),
        Column("max_occurred_at", "MILLIS", _MAX_OCCURRED),
    ),
)

TABLES: dict[str, Table[Any]] = {
    table.name: table
    for table in (
        POSITIONS,
        INBOUND,
        RESERVATIONS,
        OFFERS,
        STORE_TASKS,
        TRANSPORT_LOADS,
        DROPSHIP_ORDERS,
        SNAPSHOT_INFO,
    )
}
"""The public tables, a contract for other processes; `omni-ledger`'s readers rely on it."""


# ------------------------------------------------------------------ DDL and upgrade


def _physical_tables(layout: StoreLayout) -> dict[str, tuple[str, Table[Any]]]:
    """Physical table -> (public name, declaration); each writer's positions are a base and a recent table."""
    tables: dict[str, tuple[str, Table[Any]]] = {}
    for name, table in TABLES.items():
        if name == "snapshot_info" and layout.sharded:
            tables[SNAPSHOT_LOG] = ("snapshot_info", SNAPSHOT_LOG_TABLE)
            continue
        for writer in range(layout.writers):
            if name == "positions":
                tables[layout.positions_base(writer)] = (name, table)
                tables[layout.positions_recent(writer)] = (name, POSITIONS_RECENT)
            else:
                tables[layout.table(name, writer)] = (name, table)
    return tables


def positions_view_sql(layout: StoreLayout, writer: int) -> str:
    """A writer's positions (the view `positions`, or `positions_w{i}`): per key the newest recent row, else base.

    Recent holds only versions the writer accepted (at least the stored one), so a recent
    row always wins over the base row; among a key's recent rows the highest version wins
    and, at equal versions (a replay after a crash), the later publish (DuckLake's
    `snapshot_id` virtual column: the snapshot that inserted the row).
    """
    columns = ", ".join(TABLES["positions"].names)
    base, recent = layout.positions_base(writer), layout.positions_recent(writer)
    return (
        f"SELECT {columns} FROM {recent} "
        "QUALIFY row_number() OVER (PARTITION BY site_id, sku ORDER BY version DESC, snapshot_id DESC) = 1 "
        f"UNION ALL SELECT {', '.join('b.' + c for c in TABLES['positions'].names)} FROM {base} b "
        f"ANTI JOIN {recent} r ON b.site_id = r.site_id AND b.sku = r.sku"
    )


def _views(layout: StoreLayout) -> dict[str, str]:
    """Every view the store has, by name: each writer's positions, and (several writers) the public names."""
    views = {layout.table("positions", writer): positions_view_sql(layout, writer) for writer in range(layout.writers)}
    if layout.sharded:
        views.update({name: _view_sql(name, layout) for name in TABLES})
    return views


def _view_sql(name: str, layout: StoreLayout) -> str:
    """The public view `name` over the writers' tables or views (several writers only)."""
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
    columns = ", ".join(TABLES[name].names)
    return " UNION ALL ".join(f"SELECT {columns} FROM {layout.table(name, writer)}" for writer in range(layout.writers))


def create_missing(con: duckdb.DuckDBPyConnection, layout: StoreLayout) -> None:
    """Create the declared tables (and views) a store lacks and add the columns it lacks; raises duckdb.Error.

    The caller retries a lost race (another writer creating the same table first).
    """
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
    # Layout 1 -> 2 (see `layout.LAYOUT_VERSION`): a writer's positions table becomes its
    # base, under a new name, in the same snapshot that creates its recent table and the
    # view taking the old name. A DuckLake rename keeps the table's history, and a read
    # `AT (VERSION => n)` resolves names as of n: the old snapshots still read the table.
    renamed: list[str] = []
    for writer in range(layout.writers):
        old, base = layout.table("positions", writer), layout.positions_base(writer)
        if old in tables and base not in tables:
            con.execute(f"ALTER TABLE {LAKE}.{old} RENAME TO {base}")
            tables = (tables - {old}) | {base}
            existing[base] = existing.pop(old, set())
            renamed.append(old)
    missing = [name for name in wanted if name not in tables]
    added = [
        (name, column)
        for name, (_, declared) in wanted.items()
        if name in tables
        for column in declared.columns
        if column.name not in existing.get(name, set())
    ]
    stale_views = [name for name in _views(layout) if name not in views or missing or added or renamed]
    if not missing and not added and not stale_views:
        con.execute("ROLLBACK")  # no empty snapshot for a re-open
        return
    for name in missing:
        declared = wanted[name][1]
        cols = ", ".join(
            f"{c.name} {c.stored}" + (" NOT NULL" if c.name in declared.key else "") for c in declared.columns
        )
        con.execute(f"CREATE TABLE {LAKE}.{name} ({cols})")
    for name, column in added:
        default = f" DEFAULT {column.added}" if column.added is not None else ""
        con.execute(f"ALTER TABLE {LAKE}.{name} ADD COLUMN {column.name} {column.stored}{default}")
    sqls = _views(layout)
    for name in stale_views:
        con.execute(f"CREATE OR REPLACE VIEW {LAKE}.{name} AS {sqls[name]}")
    con.execute("COMMIT")


# ------------------------------------------------------------------ the reference page


_PREAMBLE = """\
# Snapshot tables

<!-- Generated from adapters/snapshot_store/tables.py: edit the declarations there, then run
     python -m adapters.snapshot_store --markdown > docs/snapshot-tables.md -->

The snapshot store's public tables are a contract for other processes: `omni-ledger`'s own
readers (the CLI, the HTTP API, `SnapshotReader`) rely on them, and so may yours. Query them
with `omni-ledger sql`, with `SnapshotReader`, or from any DuckDB with the DuckLake extension;
add `AT (VERSION => n)` to read snapshot `n` (an id from `snapshot_info`).

Times (`TIMESTAMPTZ` below) are stored in UTC; a publish receives them as epoch
milliseconds. `plan` is the fulfilment plan as JSON text, its times in epoch milliseconds.
A work row (store task, transport load, dropship order) is replaced only by a higher
`rank`, a position only by a higher `version`, so replays and redeliveries change nothing.

With several writers (`writers` > 1) each writer has tables of its own (`positions_w0`,
`positions_w1`, ...) and these names are views over their `UNION ALL`, with the same
columns; `snapshot_info` then has one row per publish of any writer plus a `writer`
column, and its `events_applied` is the store's total at that snapshot.

A store written by an earlier version gains the tables and columns it lacks when a writer
opens it, in one snapshot; rows written before a column existed hold the value listed
under "older rows", or NULL. Nothing is dropped or retyped.

**`positions` is a view** (store layout 2, `"layout": 2` in `DIR/store.json`). A publish
only appends the changed positions to a writer's recent table (`positions_recent`, with
several writers `positions_w{i}_recent`); now and then the writer folds the rows published
up to some snapshot into its base table (`positions_base`, `positions_w{i}_base`) and
deletes them from the recent table, in one transaction, while later publishes go on
appending. `positions` gives per (site, sku) the newest recent row (highest `version`,
then the later snapshot), else the base row: the same rows, `AT (VERSION => n)` included,
as when each publish updated one table in place. Query `positions`, not the tables
behind it. A store of layout 1 (one positions table per writer) is migrated when a writer
of layout 2 opens it: in one snapshot the table is renamed to the base, the recent table
and the view are created; snapshots from before the migration still read the old table.
Readers of layout 1 cannot read a migrated store: upgrade them with the writer.

**Following the positions' changes.** A view has no change feed. Every publish's changes
are the insertions of the recent tables:
`ducklake_table_insertions('lake', 'main', 'positions_recent', first, last)` lists each
new version of a position with the columns above plus `new_key` (the key's first row) and
`snapshot_id`; take the newest per key. A fold shows there as deletions only (and as
deletions and insertions of the base table, with the same versions): skip the deletions
of the recent table, and do not follow the base table. `ducklake_table_changes` of the recent table
gives no pre-images: a position's value before a change is `positions AT (VERSION =>
snapshot_id - 1)`. This is what `omni-ledger`'s own followers (`ReadModel`,
`PositionReplica`) read.
"""


def markdown() -> str:
    """docs/snapshot-tables.md: every public table's declaration as a reference page."""
    parts = [_PREAMBLE]
    for table in TABLES.values():
        parts.append(f"\n## `{table.name}`\n\n{table.doc}\n")
        key = ", ".join(table.key)
        parts.append(f"\nKeyed by `{key}`; readers return rows ordered by `{table.order}`.\n\n")
        olders = any(column.added is not None for column in table.columns)
        parts.append("| column | type | meaning |" + (" older rows |" if olders else "") + "\n")
        parts.append("|---|---|---|" + ("---|" if olders else "") + "\n")
        for column in table.columns:
            row = f"| `{column.name}` | {column.stored} | {column.doc} |"
            if olders:
                row += f" {column.added or ''} |"
            parts.append(row + "\n")
    return "".join(parts)
