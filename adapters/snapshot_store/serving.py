"""The serving side of the snapshot store: which snapshot is current, and the reads a promise needs.

A `ServingStore` polls the store's newest `snapshot_info` row in a background thread
and swaps one immutable `SnapshotMeta` reference when it changes: a request reads that
reference once and pins every query to its `snapshot_id` (`AT (VERSION => n)`), so it
sees one snapshot from start to end (a multi-table read without the pin can mix two),
and a publish never waits for a reader nor a reader for a publish (SQLite WAL, or a
PostgreSQL catalog; several writers' tables are read through the same view names).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.snapshot_store import SnapshotReader, read_heartbeat, store_exists
from ledger.errors import SnapshotError
from ledger.events import Millis
from ledger.network import appointment_slot
from ledger.outputs import InboundLine, OfferTerms
from ledger.promise import Stock

__all__ = ["ServingStore", "SnapshotMeta"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """The snapshot a request is answered from."""

    snapshot_id: int
    created_at: Millis
    events_applied: int
    max_occurred_at: Millis | None
    current_at: Millis = 0
    """When the flow last confirmed this is its newest snapshot (its heartbeat): the age counts from here."""


def _ms(value: object) -> Millis | None:
    if value is None:
        return None
    assert isinstance(value, datetime)
    return (value - _EPOCH) // timedelta(milliseconds=1)


def _in(values: Sequence[str]) -> str:
    return ", ".join("?" for _ in values)


class ServingStore:
    """Read-only, pinned access to the newest snapshot, for the HTTP API and the demo."""

    def __init__(self, directory: Path, poll_interval: float = 0.2) -> None:
        self._directory = directory
        # Opened once the flow has created the store: the API may start first.
        self._reader: SnapshotReader | None = None
        self._poll = poll_interval
        self._current: SnapshotMeta | None = None
        self._stop = threading.Event()
        self.refresh()
        self._thread = threading.Thread(target=self._follow, name="snapshot-watch", daemon=True)
        self._thread.start()

    @property
    def current(self) -> SnapshotMeta | None:
        """The newest snapshot seen (None before the first publish); swapped atomically."""
        return self._current

    def refresh(self) -> SnapshotMeta | None:
        """Look for a newer snapshot now."""
        if self._reader is None:
            if not store_exists(Path(self._directory)):
                return None
            self._reader = SnapshotReader.open(self._directory)
        row = self._reader.latest()
        if row is not None:
            meta = SnapshotMeta(
                int(row["snapshot_id"]),  # type: ignore[call-overload]
                _ms(row["created_at"]) or 0,
                int(row["events_applied"]),  # type: ignore[call-overload]
                _ms(row["max_occurred_at"]),
            )
            current = self._current
            if current is not None and meta.snapshot_id < current.snapshot_id:
                meta = current
            beat = self._heartbeat()
            # A heartbeat naming an older snapshot than ours says nothing about ours.
            alive = beat[0] if beat is not None and beat[1] in (None, meta.snapshot_id) else meta.created_at
            # One new immutable object, swapped in one assignment: a request sees it whole.
            self._current = replace(meta, current_at=max(alive, meta.created_at))
        return self._current

    def _heartbeat(self) -> tuple[Millis, int | None] | None:
        # Several writers: the oldest of their heartbeats, naming no snapshot (see read_heartbeat).
        return read_heartbeat(Path(self._directory))

    def _follow(self) -> None:
        while not self._stop.wait(self._poll):
            try:
                self.refresh()
            except SnapshotError:
                # A transient catalog read failure: keep serving the last snapshot; health shows its age.
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        if self._reader is not None:
            self._reader.close()

    # -- reads, each pinned to one snapshot

    def _rows(self, query: str, params: list[object]) -> list[dict[str, object]]:
        if self._reader is None:
            msg = f"no snapshot store at {self._directory} yet: is the flow (`omni-ledger run`) running?"
            raise SnapshotError(msg)
        return self._reader._query(query, params)

    def stock(self, skus: Sequence[str], snapshot_id: int) -> list[Stock]:
        """Every position of these skus, with its unpromised inbound lines and its offer."""
        if not skus:
            return []
        at = f"AT (VERSION => {int(snapshot_id)})"
        positions = self._rows(f"SELECT site_id, sku, atp FROM positions {at} WHERE sku IN ({_in(skus)})", [*skus])
        inbound: dict[tuple[str, str], list[InboundLine]] = {}
        for row in self._rows(
            f"SELECT site_id, sku, ref, qty, epoch_ms(eta) AS eta FROM inbound {at} "
            f"WHERE sku IN ({_in(skus)}) AND NOT coalesce(promised, false) ORDER BY eta, ref",
            [*skus],
        ):
            key = (str(row["site_id"]), str(row["sku"]))
            inbound.setdefault(key, []).append(InboundLine(str(row["ref"]), int(row["qty"]), int(row["eta"])))  # type: ignore[call-overload]
        offers: dict[tuple[str, str], OfferTerms] = {}
        for row in self._rows(
            f"SELECT seller_id, sku, qty, price, lead_time_days, epoch_ms(updated_at) AS updated_at "
            f"FROM offers {at} WHERE sku IN ({_in(skus)})",
            [*skus],
        ):
            offers[(str(row["seller_id"]), str(row["sku"]))] = OfferTerms(
                int(row["qty"]),  # type: ignore[call-overload]
                None if row["price"] is None else float(row["price"]),  # type: ignore[arg-type]
                None if row["lead_time_days"] is None else int(row["lead_time_days"]),  # type: ignore[call-overload]
                int(row["updated_at"]),  # type: ignore[call-overload]
            )
        stocks = []
        for row in positions:
            key = (str(row["site_id"]), str(row["sku"]))
            stocks.append(Stock(key[0], key[1], int(row["atp"]), tuple(inbound.get(key, ())), offers.get(key)))  # type: ignore[call-overload]
        return stocks

    def slots(self, stores: Iterable[str], snapshot_id: int) -> dict[tuple[str, Millis], int]:
        """Free appointment capacity by (store, slot start): the ATP of each opened slot."""
        ids = sorted(set(stores))
        if not ids:
            return {}
        rows = self._rows(
            f"SELECT site_id, sku, atp FROM positions AT (VERSION => {int(snapshot_id)}) "
            # A range on sku, not starts_with: Parquet min/max statistics can prune it.
            f"WHERE site_id IN ({_in(ids)}) AND sku >= 'appt:' AND sku < 'appt;'",
            [*ids],
        )
        free: dict[tuple[str, Millis], int] = {}
        for row in rows:
            slot = appointment_slot(str(row["sku"]))
            if slot is not None:
                free[(str(row["site_id"]), slot)] = int(row["atp"])  # type: ignore[call-overload]
        return free

    def positions(self, site_id: str, snapshot_id: int) -> list[dict[str, Any]]:
        """The positions of one site (appointment slots included, their sku says so)."""
        return self._rows(
            f"SELECT * FROM positions AT (VERSION => {int(snapshot_id)}) WHERE site_id = ? ORDER BY sku", [site_id]
        )

    def sku_positions(self, sku: str, snapshot_id: int) -> list[dict[str, Any]]:
        """Every site's position of one sku, with its inbound lines (promised or not)."""
        at = f"AT (VERSION => {int(snapshot_id)})"
        rows = self._rows(f"SELECT * FROM positions {at} WHERE sku = ? ORDER BY site_id", [sku])
        lines: dict[str, list[dict[str, Any]]] = {}
        for line in self._rows(f"SELECT * FROM inbound {at} WHERE sku = ? ORDER BY eta, ref", [sku]):
            lines.setdefault(str(line["site_id"]), []).append(line)
        for row in rows:
            row["inbound_lines"] = lines.get(str(row["site_id"]), [])
        return rows

    def table(self, name: str, filters: dict[str, str | None], snapshot_id: int, order: str) -> list[dict[str, Any]]:
        """Rows of an output table (store_tasks, transport_loads, dropship_orders, reservations)."""
        where = [(col, value) for col, value in filters.items() if value is not None]
        query = f"SELECT * FROM {name} AT (VERSION => {int(snapshot_id)})"
        if where:
            query += " WHERE " + " AND ".join(f"{col} = ?" for col, _ in where)
        return self._rows(query + f" ORDER BY {order}", [value for _, value in where])
