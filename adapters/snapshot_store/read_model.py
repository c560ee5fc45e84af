"""The serving process's read model: one immutable view of one snapshot, in memory, swapped whole.

Every promise used to read DuckLake two or three times (10-20 ms each: the catalog,
then every data and delete file of the table). `ReadModel` loads what a promise and
an availability read need once, and then follows the snapshots' change feed the way
`PositionReplica` does (`ducklake_table_insertions` over the new snapshots only):

    skus      sku -> `SkuColumns`: the sites holding the sku, ascending, and their
              figures as flat integer arrays, so a promise walks one sku's sites in
              one contiguous block and makes no object per site
    slots     (store, slot start) -> free appointment capacity (the `appt:` positions)
    inbound   (site, sku) -> its inbound lines
    offers    (seller, sku) -> its offer terms

A refresh builds a new `ReadView` from the old one, copying only the skus that changed
(copy on write: the old view is never altered, so a request still reading it sees one
snapshot), then swaps the reference in one assignment. A request reads `model.view`
once and answers from it alone: its `snapshot_id` names every figure it used.

Inbound lines and offers are re-read for the (site, sku) keys whose position changed:
the fold republishes a position with every event applied to it (its `version` moves),
and an inbound line or an offer changes only by such an event.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys
import threading
import time
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import duckdb

from adapters.snapshot_store.layout import store_exists
from adapters.snapshot_store.reader import SnapshotReader
from adapters.snapshot_store.replica import data_ranges, insertions_sql, lower_priority, snapshot_range
from ledger.answer import Stock
from ledger.errors import SnapshotError
from ledger.events import Millis
from ledger.network import appointment_slot
from ledger.outputs import InboundLine, OfferTerms

__all__ = ["InboundRow", "ReadModel", "ReadView", "SkuColumns"]

# (site_id, atp, on_hand, reserved, staged, inbound, negative, updated_at ms)
PositionRow = tuple[str, int, int, int, int, int, bool, int]
InboundRow = tuple[str, int, Millis, bool]
"""(ref, qty, eta, promised) of one inbound line."""

_FIGURES = 5  # on_hand, reserved, staged, inbound, updated_at per site in SkuColumns.figures
_POSITION_SELECT = (
    "sku, site_id, atp, on_hand, reserved, staged, inbound, coalesce(negative, false), epoch_ms(updated_at)"
)
_FEED_COLUMNS = ("site_id", "sku", "atp", "on_hand", "reserved", "staged", "inbound", "negative", "updated_at")


@dataclass(frozen=True, slots=True)
class SkuColumns:
    """One sku's positions, site by site in ascending order; never changed once built."""

    sites: tuple[str, ...]
    atp: array[int]
    figures: array[int]
    """`_FIGURES` integers per site: on_hand, reserved, staged, inbound, updated_at (ms)."""
    negative: bytes

    @classmethod
    def of(cls, rows: Sequence[PositionRow]) -> SkuColumns:
        """Columns from rows sorted by site."""
        figures = array("q")
        for row in rows:
            figures.extend((row[2], row[3], row[4], row[5], row[7]))
        return cls(
            tuple(row[0] for row in rows),
            array("q", [row[1] for row in rows]),
            figures,
            bytes(1 if row[6] else 0 for row in rows),
        )

    @classmethod
    def of_lists(
        cls,
        sites: list[str],
        atp: list[int],
        figures: Sequence[list[int]],
        negative: list[bool],
        site_sets: dict[tuple[str, ...], tuple[str, ...]] | None = None,
    ) -> SkuColumns:
        """Columns from one list per column, sites ascending (as DuckDB's `list()` hands them over).

        Each column is copied in C (array from a list, an extended-slice assignment): no
        Python bytecode runs per position, which made a first load 5x slower. Skus held
        by the same sites share one tuple of them through `site_sets` (a national range
        is held everywhere): 8 bytes a position saved, and what is computed per site set
        (the sites a network does not know) is computed once.
        """
        interleaved = array("q", bytes(8 * _FIGURES * len(sites)))
        for k, column in enumerate(figures):
            interleaved[k::_FIGURES] = array("q", column)
        held = tuple(map(sys.intern, sites))
        if site_sets is not None:
            held = site_sets.setdefault(held, held)
        return cls(held, array("q", atp), interleaved, bytes(negative))

    def index(self, site_id: str) -> int | None:
        """Where the site is in the columns, None when it holds no position of the sku."""
        i = bisect_left(self.sites, site_id)
        return i if i < len(self.sites) and self.sites[i] == site_id else None

    def row(self, i: int) -> PositionRow:
        f = self.figures[i * _FIGURES : (i + 1) * _FIGURES]
        return (self.sites[i], self.atp[i], f[0], f[1], f[2], f[3], bool(self.negative[i]), f[4])

    def merged(self, changes: Sequence[PositionRow]) -> tuple[SkuColumns, int]:
        """New columns with `changes` applied (a copy: these stay as they are) and how many sites are new."""
        at = [self.index(row[0]) for row in changes]
        if None not in at:
            atp, figures, negative = array("q", self.atp), array("q", self.figures), bytearray(self.negative)
            for i, row in zip(at, changes, strict=True):
                assert i is not None
                atp[i] = row[1]
                figures[i * _FIGURES : (i + 1) * _FIGURES] = array("q", (row[2], row[3], row[4], row[5], row[7]))
                negative[i] = 1 if row[6] else 0
            return SkuColumns(self.sites, atp, figures, bytes(negative)), 0
        # A site new to the sku: rebuilt in site order (rare: the fold keeps positions).
        rows = {site: self.row(i) for i, site in enumerate(self.sites)}
        before = len(rows)
        rows.update((row[0], row) for row in changes)
        return SkuColumns.of([rows[site] for site in sorted(rows)]), len(rows) - before

    def nbytes(self, *, with_sites: bool = True) -> int:
        """Bytes held by the columns (the site strings are shared by every sku, not counted)."""
        return (
            len(self.sites) * 8 * with_sites
            + self.atp.buffer_info()[1] * self.atp.itemsize
            + self.figures.buffer_info()[1] * self.figures.itemsize
            + len(self.negative)
        )


_EMPTY: tuple[Sequence[str], Sequence[int]] = ((), ())


@dataclass(frozen=True, slots=True)
class ReadView:
    """Everything a promise and an availability read need from one snapshot; a `SnapshotView`."""

    snapshot_id: int
    skus: Mapping[str, SkuColumns] = field(default_factory=dict)
    slots: Mapping[tuple[str, Millis], int] = field(default_factory=dict)
    inbound: Mapping[tuple[str, str], tuple[InboundRow, ...]] = field(default_factory=dict)
    offers: Mapping[tuple[str, str], OfferTerms] = field(default_factory=dict)
    positions: int = 0
    """Positions of the snapshot, appointment slots included (checked against the store's count)."""

    # -- SnapshotView

    def sku_atp(self, sku: str) -> tuple[Sequence[str], Sequence[int]]:
        """The sites holding the sku, ascending, and their ATP."""
        columns = self.skus.get(sku)
        return _EMPTY if columns is None else (columns.sites, columns.atp)

    def stock_at(self, site_id: str, sku: str) -> Stock | None:
        """The position of the sku at the site with its unpromised inbound lines and offer."""
        columns = self.skus.get(sku)
        i = None if columns is None else columns.index(site_id)
        if columns is None or i is None:
            return None
        lines = tuple(
            InboundLine(ref, qty, eta)
            for ref, qty, eta, promised in self.inbound.get((site_id, sku), ())
            if not promised
        )
        return Stock(site_id, sku, columns.atp[i], lines, self.offers.get((site_id, sku)))

    def free_slot_capacity(self, store_id: str, slot_start: Millis) -> int | None:
        """The free capacity of a slot, None when it was never opened."""
        return self.slots.get((store_id, slot_start))

    # -- availability

    def sku_sites(self, sku: str) -> Sequence[str]:
        """The sites holding a position of the sku, ascending."""
        columns = self.skus.get(sku)
        return () if columns is None else columns.sites

    def sku_rows(self, sku: str, sites: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Every site's position of the sku (or only these sites' ones) with all its inbound lines,
        as the availability read shows it, in site order."""
        columns = self.skus.get(sku)
        if columns is None:
            return []
        if sites is None:
            at: Iterable[int] = range(len(columns.sites))
        else:
            at = sorted(i for i in map(columns.index, set(sites)) if i is not None)
        rows = []
        for i in at:
            site = columns.sites[i]
            _, atp, on_hand, reserved, staged, inbound, negative, updated_at = columns.row(i)
            lines = [
                {"ref": ref, "qty": qty, "eta": eta, "promised": promised}
                for ref, qty, eta, promised in self.inbound.get((site, sku), ())
            ]
            rows.append(
                {
                    "site_id": site, "sku": sku, "on_hand": on_hand, "reserved": reserved, "staged": staged,
                    "inbound": inbound, "atp": atp, "negative": negative, "updated_at": updated_at,
                    "inbound_lines": lines,
                }
            )  # fmt: skip
        return rows

    def nbytes(self) -> int:
        """Approximate bytes of the position columns and the per-sku objects (the lines and offers apart)."""
        per_sku = 3 * 64 + 100  # three array headers and the dataclass, roughly (sys.getsizeof)
        seen: set[int] = set()
        total = 0
        for columns in self.skus.values():
            # A tuple of sites shared by several skus is counted once.
            shared = id(columns.sites) in seen
            seen.add(id(columns.sites))
            total += columns.nbytes(with_sites=not shared) + per_sku
        return total

    # -- building

    def changed(
        self,
        snapshot_id: int,
        rows: Iterable[tuple[str, PositionRow]],
        inbound: Mapping[tuple[str, str], tuple[InboundRow, ...]],
        offers: Mapping[tuple[str, str], OfferTerms],
    ) -> ReadView:
        """A new view with the changed positions (sku, row) and, for their keys, these inbound lines and offers.

        A changed key with no entry in `inbound` (or `offers`) has none any more.
        """
        by_sku: dict[str, list[PositionRow]] = {}
        slots = dict(self.slots)
        keys: list[tuple[str, str]] = []
        added = 0
        for sku, row in rows:
            slot = appointment_slot(sku) if sku.startswith("appt:") else None
            if slot is not None:
                added += (row[0], slot) not in slots
                slots[(row[0], slot)] = row[1]
            else:
                by_sku.setdefault(sku, []).append(row)
                keys.append((row[0], sku))
        skus = dict(self.skus)
        for sku, changes in by_sku.items():
            old = skus.get(sku)
            if old is None:
                skus[sku] = SkuColumns.of(sorted(changes))
                added += len(changes)
            else:
                skus[sku], new = old.merged(changes)
                added += new
        lines, terms = dict(self.inbound), dict(self.offers)
        for key in keys:
            _put(lines, key, inbound.get(key))
            _put(terms, key, offers.get(key))
        return ReadView(snapshot_id, skus, slots, lines, terms, self.positions + added)


def _put(mapping: dict[tuple[str, str], Any], key: tuple[str, str], value: object) -> None:
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value


class ReadModel:
    """The newest `ReadView` of a snapshot store, kept current by `refresh()` or `follow()`."""

    def __init__(self, directory: Path, *, threads: int = 1) -> None:
        """Follow the store at `directory`; it may not exist yet (the API may start before the flow)."""
        self._directory = Path(directory)
        self._threads = threads
        self._reader: SnapshotReader | None = None
        self._view: ReadView | None = None
        self._refreshing = threading.Lock()
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self._failure: BaseException | None = None
        self.last_refresh_s = 0.0
        """Seconds the last refresh that changed the view took (read by the bench)."""
        self.resident_before = 0
        """The process's resident bytes just before its first whole load (Linux; 0 elsewhere): its
        resident memory now less this is the model as the machine holds it (allocator, DuckDB's
        buffers and the copies a refresh makes included), measured rather than estimated."""
        self.resident_growth = 0
        """Bytes the resident memory grew by over the last whole load, right after it."""

    @classmethod
    def open(cls, directory: Path, *, threads: int = 1) -> ReadModel:
        """A model loaded with the store's newest snapshot, if the store has one yet."""
        model = cls(directory, threads=threads)
        try:
            model.refresh()
        except SnapshotError:
            # A store still being created (no tables yet): `follow()` loads it once it is.
            pass
        except BaseException:
            model.close()
            raise
        return model

    @property
    def view(self) -> ReadView | None:
        """The newest view loaded (None before the first snapshot); one reference, swapped whole."""
        if self._failure is not None:
            msg = f"the read model stopped following {self._directory}: {self._failure}"
            raise SnapshotError(msg) from self._failure
        return self._view

    def refresh(self) -> int:
        """Catch up with the newest snapshot; return how many positions were loaded or changed."""
        with self._refreshing:
            if self._reader is None:
                if not store_exists(self._directory):
                    return 0
                self._reader = SnapshotReader.open(self._directory)
            with contextlib.closing(self._reader.cursor()) as cursor:
                try:
                    cursor.execute(f"SET threads = {int(self._threads)}")
                    return self._refresh(self._reader, cursor)
                except duckdb.Error as exc:
                    msg = f"cannot refresh the read model from {self._directory}: {exc}"
                    raise SnapshotError(msg) from exc

    def _refresh(self, reader: SnapshotReader, cursor: duckdb.DuckDBPyConnection) -> int:
        started = time.perf_counter()
        # The newest snapshot the flow published (its snapshot_info row), not DuckLake's
        # newest: the store's first snapshots hold no tables yet, and maintenance adds
        # snapshots that change nothing.
        latest = reader.latest()
        newest = None if latest is None else int(latest["snapshot_id"])  # type: ignore[call-overload]
        view = self._view
        if newest is None or (view is not None and newest == view.snapshot_id):
            return 0
        oldest, _ = snapshot_range(cursor)
        since = None if view is None else view.snapshot_id
        if view is None or since is None or oldest is None or oldest > since + 1 or newest < since:
            # First load; the snapshots the change feed needs were expired; or the store was made anew.
            before = _resident_bytes()
            if view is None:
                self.resident_before = before
            loaded = _load(cursor, newest)
            self._swap(loaded, started)
            del view
            _release_free_memory()
            self.resident_growth = max(0, _resident_bytes() - before)
            return loaded.positions
        ranges = data_ranges(cursor, since, newest)
        if not ranges:  # only maintenance since: the same rows in other files
            self._swap(ReadView(newest, view.skus, view.slots, view.inbound, view.offers, view.positions), started)
            return 0
        # 1. The newest inserted row per key over the new snapshots (into a table first:
        #    see PositionReplica._apply_changes on QUALIFY over a DuckLake scan).
        feed = insertions_sql(reader.physical_tables("positions"), ranges, _FEED_COLUMNS)
        cursor.execute(f"CREATE OR REPLACE TEMP TABLE read_model_feed AS {feed}")
        cursor.execute(
            "CREATE OR REPLACE TEMP TABLE read_model_changed AS SELECT * FROM read_model_feed "
            "QUALIFY row_number() OVER (PARTITION BY site_id, sku ORDER BY snapshot_id DESC) = 1"
        )
        cursor.execute(f"SELECT {_POSITION_SELECT} FROM read_model_changed")
        # DuckDB hands back Python ints, strs and bools already: a slice, not a conversion per field
        # (converting was a quarter of the serving process's samples under publishes, py-spy).
        rows = [(r[0], cast(PositionRow, r[1:])) for r in cursor.fetchall()]
        # 2. The inbound lines and offers of those keys as of the new snapshot.
        at = f"AT (VERSION => {int(newest)})"
        inbound = _inbound(
            cursor,
            "SELECT i.site_id, i.sku, i.ref, i.qty, epoch_ms(i.eta), coalesce(i.promised, false) "
            f"FROM (SELECT * FROM inbound {at}) i "
            "SEMI JOIN read_model_changed c ON i.site_id = c.site_id AND i.sku = c.sku ORDER BY i.eta, i.ref",
        )
        offers = _offers(
            cursor,
            "SELECT o.seller_id, o.sku, o.qty, o.price, o.lead_time_days, epoch_ms(o.updated_at) "
            f"FROM (SELECT * FROM offers {at}) o "
            "SEMI JOIN read_model_changed c ON o.seller_id = c.site_id AND o.sku = c.sku",
        )
        new = view.changed(newest, rows, inbound, offers)
        # 3. The flow never deletes a position: if the counts differ, something did, and
        #    the view is loaded whole rather than answering with a key the store dropped.
        row = cursor.execute(f"SELECT count(*) FROM positions {at}").fetchone()
        if row is None or int(row[0]) != new.positions:
            new = _load(cursor, newest)
        self._swap(new, started)
        return len(rows)

    def _swap(self, view: ReadView, started: float) -> None:
        # One assignment: a request holding the old view keeps it whole.
        self._view = view
        self.last_refresh_s = time.perf_counter() - started

    def follow(self, every: float = 0.05, *, nice: int = 0) -> None:
        """Refresh in a background thread, `every` seconds after the last refresh ended, until `close()`.

        Not niced by default, unlike `PositionReplica.follow`: under load (4 clients, 2
        cores shared with other work) a niced refresh never caught up with publishes of
        20,000 positions a second, and every answer named a snapshot minutes old.

        While refreshes fail `view` raises the error: a model that no longer follows the
        store must not answer as if it did; the thread keeps trying.
        """
        if self._follower is not None:
            return
        self._follower = threading.Thread(target=self._follow, args=(every, nice), name="read-model", daemon=True)
        self._follower.start()

    def _follow(self, every: float, nice: int) -> None:
        # Below the requests' priority (Linux: per thread): a refresh yields the CPU to them.
        lower_priority(nice)
        while not self._stop.is_set():
            try:
                self.refresh()
                self._failure = None
            except SnapshotError as exc:
                # Before the first view the store is still being created (tables appear
                # with the flow's first publish): nothing to answer from, so nothing to
                # fail. After it, requests get the error (503) until a refresh succeeds,
                # rather than answers from a view that stopped following.
                if self._view is not None:
                    self._failure = exc
            self._stop.wait(every)

    def close(self) -> None:
        """Stop following and detach."""
        self._stop.set()
        if self._follower is not None:
            # A refresh in progress ends first: closing DuckDB under it could abort the process.
            self._follower.join(timeout=60)
        if self._reader is not None:
            self._reader.close()

    def __enter__(self) -> ReadModel:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _resident_bytes() -> int:
    """The process's resident memory now (Linux /proc), 0 where unknown."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _release_free_memory() -> None:
    """Hand the heap a load freed back to the system (glibc keeps it otherwise; a no-op elsewhere).

    A whole load goes through DuckDB's lists and a Python list per column per sku, all
    freed once the arrays are built: without this the process kept that high-water mark
    resident for good.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _inbound(cursor: duckdb.DuckDBPyConnection, query: str) -> dict[tuple[str, str], tuple[InboundRow, ...]]:
    lines: dict[tuple[str, str], list[InboundRow]] = {}
    for site, sku, ref, qty, eta, promised in cursor.execute(query).fetchall():
        lines.setdefault((str(site), str(sku)), []).append((str(ref), int(qty), int(eta), bool(promised)))
    return {key: tuple(found) for key, found in lines.items()}


def _offers(cursor: duckdb.DuckDBPyConnection, query: str) -> dict[tuple[str, str], OfferTerms]:
    return {
        (str(seller), str(sku)): OfferTerms(
            int(qty), None if price is None else float(price), None if lead is None else int(lead), int(updated)
        )
        for seller, sku, qty, price, lead, updated in cursor.execute(query).fetchall()
    }


def _load(cursor: duckdb.DuckDBPyConnection, snapshot_id: int) -> ReadView:
    """The whole snapshot: one row per sku, each column a list in site order."""
    at = f"AT (VERSION => {int(snapshot_id)})"
    inbound = _inbound(
        cursor,
        f"SELECT site_id, sku, ref, qty, epoch_ms(eta), coalesce(promised, false) FROM inbound {at} ORDER BY eta, ref",
    )
    offers = _offers(
        cursor, f"SELECT seller_id, sku, qty, price, lead_time_days, epoch_ms(updated_at) FROM offers {at}"
    )
    slots: dict[tuple[str, Millis], int] = {}
    count = 0
    # A range on sku, not starts_with: Parquet min/max statistics can prune it.
    for site, sku, atp in cursor.execute(
        f"SELECT site_id, sku, atp FROM positions {at} WHERE sku >= 'appt:' AND sku < 'appt;'"
    ).fetchall():
        count += 1
        slot = appointment_slot(sku)
        if slot is not None:
            slots[(sys.intern(site), slot)] = int(atp)
    by = "ORDER BY site_id"
    cursor.execute(
        f"SELECT sku, list(site_id {by}), list(atp {by}), list(on_hand {by}), list(reserved {by}), "
        f"list(staged {by}), list(inbound {by}), list(epoch_ms(updated_at) {by}), "
        f"list(coalesce(negative, false) {by}) FROM positions {at} WHERE NOT (sku >= 'appt:' AND sku < 'appt;') "
        "GROUP BY sku"
    )
    skus: dict[str, SkuColumns] = {}
    site_sets: dict[tuple[str, ...], tuple[str, ...]] = {}
    while batch := cursor.fetchmany(256):
        for sku, sites, atp, on_hand, reserved, staged, inbound_qty, updated, negative in batch:
            figures = (on_hand, reserved, staged, inbound_qty, updated)
            skus[sku] = SkuColumns.of_lists(sites, atp, figures, negative, site_sets)
            count += len(sites)
    return ReadView(snapshot_id, skus, slots, inbound, offers, count)
