"""The serving side of the snapshot store: which snapshot is current, and the reads a promise needs.

A `ServingStore` polls the store's newest `snapshot_info` row in a background thread
and swaps one immutable `SnapshotMeta` reference when it changes: a request reads that
reference once and pins every query to its `snapshot_id` (`AT (VERSION => n)`), so it
sees one snapshot from start to end (a multi-table read without the pin can mix two),
and a publish never waits for a reader nor a reader for a publish (SQLite WAL, or a
PostgreSQL catalog; several writers' tables are read through the same view names).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb

from adapters.snapshot_store.layout import read_heartbeat, store_exists
from adapters.snapshot_store.reader import SnapshotReader
from ledger.answer import Stock
from ledger.errors import SnapshotError
from ledger.events import Millis

__all__ = ["ServingStore", "SnapshotMeta"]

_RECHECK_S = 1.0
"""The store watch reads the catalog at least this often, whatever its files' stat says."""


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """The snapshot a request is answered from."""

    snapshot_id: int
    created_at: Millis
    events_applied: int
    max_occurred_at: Millis | None
    current_at: Millis = 0
    """When the flow last confirmed this is its newest snapshot (its heartbeat): the age counts from here."""


class ServingStore:
    """Read-only, pinned access to the newest snapshot, for the HTTP API and the demo."""

    def __init__(self, directory: Path, poll_interval: float = 0.2) -> None:
        self._directory = directory
        # Opened once the flow has created the store: the API may start first.
        self._reader: SnapshotReader | None = None
        self._poll = poll_interval
        self._current: SnapshotMeta | None = None
        self._stop = threading.Event()
        self._refreshing = threading.Lock()
        """One refresh at a time: the watch thread and `service.store.refresh()`'s callers share the cursor."""
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._lake_seen: tuple[object, int] | None = None
        """`SnapshotReader.lake_snapshot` read before the last snapshot_info read."""
        self.catalog_reads = 0
        """Times the catalog was read (a poll that found its files unchanged reads none)."""
        self.snapshot_info_reads = 0
        """Reads of the newest snapshot_info row (~20 ms each): only after DuckLake committed again."""
        self.refresh()
        self._thread = threading.Thread(target=self._follow, name="snapshot-watch", daemon=True)
        self._thread.start()

    @property
    def current(self) -> SnapshotMeta | None:
        """The newest snapshot seen (None before the first publish); swapped atomically."""
        return self._current

    def refresh(self) -> SnapshotMeta | None:
        """Look for a newer snapshot now."""
        with self._refreshing:
            if self._reader is None:
                if not store_exists(Path(self._directory)):
                    return None
                self._reader = SnapshotReader.open(self._directory)
            try:
                return self._refresh(self._reader)
            except BaseException as exc:
                # A cursor whose read failed part way is not trusted again: the next refresh opens another.
                self._close_cursor()
                if isinstance(exc, duckdb.Error):
                    msg = f"cannot read the newest snapshot of {self._directory}: {exc}"
                    raise SnapshotError(msg) from exc
                raise

    def _refresh(self, reader: SnapshotReader) -> SnapshotMeta | None:
        # The newest snapshot_info row costs ~20 ms of CPU (its table's files), and a publish
        # changes the catalog's files several times (the watch's stat marker) while landing
        # one row: the read is gated on DuckLake's current snapshot (~2 ms, the catalog alone),
        # as the read model's refresh is. Read on the same cursor before the row, so the row
        # is as new as that snapshot or newer; a cursor kept, as its `USE` costs as much.
        if self._cursor is None:
            self._cursor = reader.cursor()
        self.catalog_reads += 1
        lake = reader.lake_snapshot(self._cursor)
        current = self._current
        if lake is not None and lake == self._lake_seen and current is not None:
            self._confirm(current)
            return self._current
        self.snapshot_info_reads += 1
        stamp = reader.newest(self._cursor)
        if stamp is not None:
            meta = SnapshotMeta(*stamp)
            if current is not None and meta.snapshot_id < current.snapshot_id:
                meta = current
            self._confirm(meta)
        self._lake_seen = lake
        return self._current

    def _close_cursor(self) -> None:
        cursor, self._cursor, self._lake_seen = self._cursor, None, None
        if cursor is not None:
            with contextlib.suppress(duckdb.Error):
                cursor.close()

    def _confirm(self, meta: SnapshotMeta) -> None:
        """Swap in `meta`, its age counted from the flow's heartbeat when that names it (or no snapshot)."""
        beat = self._heartbeat()
        # A heartbeat naming an older snapshot than ours says nothing about ours.
        alive = beat[0] if beat is not None and beat[1] in (None, meta.snapshot_id) else meta.created_at
        # One new immutable object, swapped in one assignment: a request sees it whole.
        self._current = replace(meta, current_at=max(alive, meta.created_at))

    def _heartbeat(self) -> tuple[Millis, int | None] | None:
        # Several writers: the oldest of their heartbeats, naming no snapshot (see read_heartbeat).
        return read_heartbeat(Path(self._directory))

    def _follow(self) -> None:
        # Reading the newest snapshot_info row costs ~20 ms of CPU (a cursor, the catalog, the
        # table's files): every 0.2 s that was a tenth of a core of an idle server, and more while
        # publishes land. A poll whose catalog files stat as they did at the last read skips it
        # (nothing was committed since) and reads only the heartbeat file, so the age still moves;
        # once a second the catalog is read anyway (see `SnapshotReader.catalog_stat`).
        seen: object = None
        checked = 0.0
        while not self._stop.wait(self._poll):
            reader, current = self._reader, self._current
            marker = None if reader is None else reader.catalog_stat()
            now = time.monotonic()
            if marker is not None and marker == seen and current is not None and now - checked < _RECHECK_S:
                self._confirm(current)
                continue
            try:
                self.refresh()
                seen, checked = marker, now
            except SnapshotError:
                # A transient catalog read failure: keep serving the last snapshot; health shows its age.
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        with self._refreshing:
            self._close_cursor()
            if self._reader is not None:
                self._reader.close()

    # -- reads, each pinned to one snapshot

    def _pinned(self) -> SnapshotReader:
        if self._reader is None:
            msg = f"no snapshot store at {self._directory} yet: is the flow (`omni-ledger run`) running?"
            raise SnapshotError(msg)
        return self._reader

    def stock(self, skus: Sequence[str], snapshot_id: int) -> list[Stock]:
        """Every position of these skus, with its unpromised inbound lines and its offer."""
        if not skus:
            return []
        return self._pinned().stock(skus, snapshot_id)

    def slots(self, stores: Iterable[str], snapshot_id: int) -> dict[tuple[str, Millis], int]:
        """Free appointment capacity by (store, slot start): the ATP of each opened slot."""
        ids = sorted(set(stores))
        if not ids:
            return {}
        return self._pinned().slots(ids, snapshot_id)

    def positions(self, site_id: str, snapshot_id: int) -> list[dict[str, Any]]:
        """The positions of one site (appointment slots included, their sku says so)."""
        return self._pinned().rows("positions", {"site_id": site_id}, snapshot_id, "sku")

    def sku_positions(self, sku: str, snapshot_id: int) -> list[dict[str, Any]]:
        """Every site's position of one sku, with its inbound lines (promised or not)."""
        reader = self._pinned()
        rows = reader.rows("positions", {"sku": sku}, snapshot_id, "site_id")
        lines: dict[str, list[dict[str, Any]]] = {}
        for line in reader.rows("inbound", {"sku": sku}, snapshot_id, "eta, ref"):
            lines.setdefault(str(line["site_id"]), []).append(line)
        for row in rows:
            row["inbound_lines"] = lines.get(str(row["site_id"]), [])
        return rows

    def table(self, name: str, filters: dict[str, str | None], snapshot_id: int, order: str) -> list[dict[str, Any]]:
        """Rows of an output table (store_tasks, transport_loads, dropship_orders, reservations)."""
        return self._pinned().rows(name, filters, snapshot_id, order)
