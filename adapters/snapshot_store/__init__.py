"""The snapshot store: DuckLake tables of positions, reservations and work that other processes can query.

The flow's `SnapshotSink` (`sink`) hands each snapshot interval's fold outputs to a
`SnapshotWriter` (`writer`), which publishes them as one DuckLake snapshot in the numbered
commit order written there; any number of `SnapshotReader`s (`reader`), in any process,
read committed snapshots, the latest or an older one. The tables are declared once, in
`tables` (reference: docs/snapshot-tables.md); a publish runs `coalesce` (step 1) and
`staging` (step 2, the MERGE). The rest of the package: `layout` (the
store directory and its manifest), `connection` (DuckDB, its extensions, lost races
tried again), `maintenance` (compaction, expiry, `drop_store`), `compaction` (when to
compact), `serving` (the HTTP API's pinned reads), `read_model` and `replica` (in-memory
copies of the positions).

Of the service's packages (ledger, flows, adapters, omni_ledger) this is the only one that
imports duckdb; within it, `connection` owns the connection.
"""

from adapters.snapshot_store.layout import StoreLayout, read_heartbeat, store_exists
from adapters.snapshot_store.maintenance import MaintenanceReport, drop_store
from adapters.snapshot_store.reader import SnapshotReader
from adapters.snapshot_store.tables import POSITION_COLUMNS, TABLES
from adapters.snapshot_store.writer import SnapshotWriter

__all__ = [
    "POSITION_COLUMNS",
    "TABLES",
    "MaintenanceReport",
    "SnapshotReader",
    "SnapshotWriter",
    "StoreLayout",
    "drop_store",
    "read_heartbeat",
    "store_exists",
]
