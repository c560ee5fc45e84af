"""The snapshot store: DuckLake tables of positions that other processes can query."""

from adapters.snapshot_store.writer import (
    POSITION_COLUMNS,
    MaintenanceReport,
    SnapshotReader,
    SnapshotWriter,
    StoreLayout,
    drop_store,
    read_heartbeat,
    store_exists,
)

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
