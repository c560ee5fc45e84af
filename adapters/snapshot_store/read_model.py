"""The serving process's read model: one immutable view of one snapshot, in memory, swapped whole.

Every promise used to read DuckLake two or three times (10-20 ms each: the catalog,
then every data and delete file of the table). `ReadModel` loads what a promise and
an availability read need once, and then follows the snapshots' change feed the way
`PositionReplica` does (`ducklake_table_insertions` over the new snapshots only):

    skus      sku -> `SkuColumns`: the sites holding the sku, ascending (a `SiteSet`
              shared by every sku held by the same sites), and one numpy record per
              site (ATP and the other figures), so a promise walks one sku's sites in
              one contiguous block and makes no object per site; an `Overlay` (the
              base every view shares and this view's patch, adapters/snapshot_store/
              overlay.py) that makes a sku's block when a request reads it
    slots     (store, slot start) -> free appointment capacity (the `appt:` positions)
    inbound   (site, sku) -> its inbound lines
    offers    (seller, sku) -> its offer terms

Columnar and bulk, both ways in and out of DuckDB: a whole load reads the positions as
numpy columns (`fetchnumpy`), sites and skus numbered by DuckDB, sorted by (sku, site),
and keeps them as one block, the overlay's base; a refresh reads the changed positions
the same way, each with its sku's and its site's number in the view
(`ReadModel._numbering`), sorted by those, locates them in the base one site set at a
time (`Layout.locate`) and merges them into the new view's patch.
No Python object is made per position on either path, nor per changed position on a
refresh (a tuple per row through `fetchall` and a bisect per change made a refresh of
20,000 changes cost 6-10 s; the changes' site ids and skus as strings, a third of one).

A refresh builds a new `ReadView` from the old one, copying nothing of the model: the
changes go into its patch, and the base is written in place only where no live view
reads it (`overlay.catch_up`), so a request still reading the old view sees one snapshot.
A position new to the layout, or a count past int32, rebuilds the skus (copy on write
per changed sku, `ReadView._applied`) and packs them into a new base. The new view is
swapped in by one assignment. A request reads `model.view`
once and answers from it alone: its `snapshot_id` names every figure it used.

Inbound lines and offers are re-read for the (site, sku) keys whose lines or offer
changed, found in those tables' own change feeds over the new snapshots (`_side_feed`;
until serve10, for every key whose position changed, by semi-joins of the whole tables).
They are kept `Layered` (a dict shared by views and this view's keys put and dropped),
not copied each refresh.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import duckdb
import numpy as np
import numpy.typing as npt

from adapters.snapshot_store.columns import (
    _COUNTS,
    _FIELDS,
    _INT32,
    NARROW,
    NO_SITES,
    WIDE,
    Codes,
    InboundRow,
    PositionRow,
    Records,
    SiteSet,
    SiteTable,
    SkuColumns,
    raw,
)
from adapters.snapshot_store.layout import LAKE, store_exists
from adapters.snapshot_store.overlay import Base, Layered, Layout, Overlay, Patch, catch_up, packed
from adapters.snapshot_store.reader import SnapshotReader
from adapters.snapshot_store.recent import base_growth
from adapters.snapshot_store.remote_cursor import RemoteCursor
from adapters.snapshot_store.replica import (
    SnapshotChanges,
    data_ranges,
    insertions_sql,
    lower_priority,
    snapshot_changes,
    snapshot_range,
)
from ledger.answer import Stock
from ledger.errors import SnapshotError
from ledger.events import Millis
from ledger.network import appointment_slot
from ledger.outputs import InboundLine, OfferTerms

__all__ = ["NARROW", "WIDE", "InboundRow", "ReadModel", "ReadView", "Refreshed", "SiteSet", "SkuColumns", "raw"]


_LOG = logging.getLogger("omni_ledger.read_model")

_APPT = "sku >= 'appt:' AND sku < 'appt;'"  # a range, not starts_with: Parquet min/max statistics can prune it
_FEED_COLUMNS = ("site_id", "sku", "atp", "on_hand", "reserved", "staged", "inbound", "negative", "updated_at")
_FIGURES_SQL = (
    "atp, on_hand, reserved, staged, inbound, coalesce(negative, false) AS negative, epoch_ms(updated_at) AS updated_at"
)


@dataclass(frozen=True, slots=True)
class _Changes:
    """Changed product positions as columns, sorted by (sku, site), one row per key."""

    skus: list[str]
    """The changed skus, in order; sku g's rows are `bounds[g]:bounds[g + 1]`."""
    bounds: list[int]
    columns: Mapping[str, npt.NDArray[Any]]
    """Each of `_FIELDS` as a numpy column, and `site_id`/`sku` as object columns when read by name."""
    codes: Codes | None = None
    """Each row's site number in the table of the view the changes apply to, when read by number
    (`of_codes`): then no site id is made as a Python string."""
    sku_codes: npt.NDArray[np.int64] | None = None
    """Each row's sku number in the numbering read by (`of_codes`): the overlay's layout's, for a view of one."""

    @property
    def size(self) -> int:
        return self.bounds[-1]

    @property
    def sites(self) -> list[str]:
        """The site id of each row (read by name only)."""
        sites: list[str] = self.columns["site_id"].tolist()
        return sites

    def keys(self) -> set[tuple[str, str]]:
        """Every changed (site, sku) (read by name only)."""
        return set(zip(self.columns["site_id"].tolist(), self.columns["sku"].tolist(), strict=True))

    @classmethod
    def of_columns(cls, columns: Mapping[str, npt.NDArray[Any]]) -> _Changes:
        """From DuckDB's `fetchnumpy()` of rows sorted by (sku, site_id, snapshot): sku and site_id object columns."""
        columns, starts = _newest_per_key(columns, "sku", "site_id")
        return cls(columns["sku"][starts].tolist(), [*starts.tolist(), len(columns["sku"])], columns)

    @classmethod
    def of_codes(cls, columns: Mapping[str, npt.NDArray[Any]], sku_names: Sequence[str]) -> _Changes:
        """From `fetchnumpy()` of rows sorted by (sku code, site code, snapshot), as `of_columns`.

        `sku` holds each row's number in `sku_names`, `site` its site's number in the view's
        table: integer comparisons, and no string made per row (reading 100,000 site ids
        and skus as Python strings, then sorting and comparing them, was a third of a refresh).
        """
        columns, starts = _newest_per_key(columns, "sku", "site")
        names = [sku_names[k] for k in columns["sku"][starts].tolist()]
        return cls(
            names,
            [*starts.tolist(), len(columns["sku"])],
            columns,
            columns["site"].astype(np.int32),
            columns["sku"].astype(np.int64),
        )

    @classmethod
    def of_rows(cls, rows: Iterable[tuple[str, PositionRow]]) -> _Changes:
        """From (sku, row) pairs in any order; the last of a key wins."""
        latest = {(sku, row[0]): row for sku, row in rows}
        ordered = [(sku, site, latest[(sku, site)]) for sku, site in sorted(latest)]
        columns: dict[str, npt.NDArray[Any]] = {
            "sku": np.array([sku for sku, _, _ in ordered], dtype=object),
            "site_id": np.array([site for _, site, _ in ordered], dtype=object),
        }
        for k, name in enumerate(_FIELDS, start=1):
            kind = bool if name == "negative" else np.int64
            columns[name] = np.array([row[k] for _, _, row in ordered], dtype=kind)
        return cls.of_columns(columns)

    def fits(self, dtype: np.dtype[np.void]) -> bool:
        """Whether every count fits the record type."""
        if dtype == WIDE or not self.size:
            return True
        return all(_INT32.min <= self.columns[c].min() and self.columns[c].max() <= _INT32.max for c in _COUNTS)

    def records(self, dtype: np.dtype[np.void]) -> Records:
        return _to_records(self.columns, dtype) if self.size else np.empty(0, dtype=dtype)


def _newest_per_key(
    columns: Mapping[str, npt.NDArray[Any]], sku: str, site: str
) -> tuple[Mapping[str, npt.NDArray[Any]], npt.NDArray[np.intp]]:
    """The last row of each (sku, site) run of columns sorted by (sku, site, snapshot), and where each sku starts.

    A key changed in several of the snapshots read has a row for each, oldest first: the
    last is kept by one comparison of neighbours over the columns (a window over the feed
    in DuckDB cost as much as the rest of the reading).
    """
    skus, sites = columns[sku], columns[site]
    if len(skus) == 0:
        return columns, np.empty(0, dtype=np.intp)
    last = np.ones(len(skus), dtype=bool)
    last[:-1] = (skus[1:] != skus[:-1]) | (sites[1:] != sites[:-1])
    if not last.all():
        columns = {name: column[last] for name, column in columns.items()}
        skus = columns[sku]
    return columns, np.concatenate(([0], np.flatnonzero(skus[1:] != skus[:-1]) + 1))


def _to_records(columns: Mapping[str, npt.NDArray[Any]], dtype: np.dtype[np.void]) -> Records:
    n = len(columns["atp"])
    records = np.empty(n, dtype=dtype)
    for name in _FIELDS:
        records[name] = columns[name]
    return records


_EMPTY: tuple[Sequence[str], Sequence[int]] = ((), ())
_EMPTY_COLUMN: tuple[Sequence[str], npt.NDArray[np.integer[Any]]] = ((), np.zeros(0, dtype=np.int64))


@dataclass(frozen=True, slots=True, weakref_slot=True)
class ReadView:
    """Everything a promise and an availability read need from one snapshot; a `SnapshotView`.

    Weakly referable: a promise keeps what it worked out of one view (the first free slots,
    `ledger.promise`) for as long as the view lives, without keeping it (and its overlay) alive.
    """

    snapshot_id: int
    skus: Mapping[str, SkuColumns] = field(default_factory=dict)
    slots: Mapping[tuple[str, Millis], int] = field(default_factory=dict)
    inbound: Mapping[tuple[str, str], tuple[InboundRow, ...]] = field(default_factory=dict)
    offers: Mapping[tuple[str, str], OfferTerms] = field(default_factory=dict)
    positions: int = 0
    """Positions of the snapshot, appointment slots included (checked against the store's count)."""
    site_table: SiteTable = NO_SITES
    dtype: np.dtype[np.void] = NARROW
    """The record type of every sku's columns."""

    # -- SnapshotView

    def sku_atp(self, sku: str) -> tuple[Sequence[str], Sequence[int]]:
        """The sites holding the sku, ascending, and their ATP."""
        columns = self.skus.get(sku)
        return _EMPTY if columns is None else (columns.held.names, columns.atp())

    def sku_atp_column(self, sku: str) -> tuple[Sequence[str], npt.NDArray[np.integer[Any]]]:
        """`sku_atp` with the ATP as the sku's numpy column (not copied): the bounded promise's walk
        masks it whole, and the list `sku_atp` makes (then an array again) was ~40 us a sku."""
        columns = self.skus.get(sku)
        return _EMPTY_COLUMN if columns is None else (columns.held.names, columns.figures["atp"])

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
        return Stock(site_id, sku, int(columns.figures["atp"][i]), lines, self.offers.get((site_id, sku)))

    def free_slot_capacity(self, store_id: str, slot_start: Millis) -> int | None:
        """The free capacity of a slot, None when it was never opened."""
        return self.slots.get((store_id, slot_start))

    # -- availability

    @property
    def site_ids(self) -> tuple[str, ...]:
        """Every site of the view by its number (`SiteSet.codes` index it); a new tuple only when a
        site new to the model appears, so what is computed per site can be kept per tuple."""
        return self.site_table.names

    def sku_sites(self, sku: str) -> Sequence[str]:
        """The sites holding a position of the sku, ascending."""
        columns = self.skus.get(sku)
        return () if columns is None else columns.held.names

    def sku_rows(self, sku: str, sites: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Every site's position of the sku (or only these sites' ones) with all its inbound lines,
        as the availability read shows it, in site order."""
        columns = self.skus.get(sku)
        if columns is None:
            return []
        names = columns.held.names
        if sites is None:
            at: list[int] = list(range(len(names)))
            records = columns.figures.tolist()
        else:
            at = sorted(i for i in map(columns.index, set(sites)) if i is not None)
            records = columns.figures[at].tolist()
        rows = []
        for i, (atp, on_hand, reserved, staged, inbound, negative, updated_at) in zip(at, records, strict=True):
            site = names[i]
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
        if isinstance(self.skus, Overlay):
            return self.skus.nbytes()  # not sku by sku: each would be read (copied) first
        per_sku = 112 + 56  # a numpy array's header and the dataclass, roughly (sys.getsizeof)
        seen: set[int] = set()
        total = 0
        for columns in self.skus.values():
            # A site set shared by several skus is counted once.
            shared = id(columns.held) in seen
            seen.add(id(columns.held))
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

        A changed key with no entry in `inbound` (or `offers`) has none any more. Row by
        row, for tests and small changes; a refresh hands `_applied` columns.
        """
        products: list[tuple[str, PositionRow]] = []
        slots: list[tuple[str, str, int]] = []
        for sku, row in rows:
            if sku.startswith("appt:"):
                slots.append((row[0], sku, row[1]))
            else:
                products.append((sku, row))
        return self._applied(snapshot_id, _Changes.of_rows(products), slots, inbound, offers)

    def _applied(
        self,
        snapshot_id: int,
        changes: _Changes,
        slot_rows: Iterable[tuple[str, str, int]],
        inbound: Mapping[tuple[str, str], tuple[InboundRow, ...]],
        offers: Mapping[tuple[str, str], OfferTerms],
        had: tuple[Iterable[tuple[str, str]], Iterable[tuple[str, str]]] | None = None,
    ) -> ReadView:
        """The view with these changes applied: only the changed skus' columns are copied.

        `slot_rows`: changed `appt:` positions as (site, sku, atp), oldest first: the last of a key wins.
        `had`: keys that may have had inbound lines, and offers, in this view and may have none
        now (a refresh: the keys whose rows changed in those tables, `_side_feed`); a key of
        them absent from `inbound` (`offers`) is dropped. None: found here from the changed
        keys (a set of every changed key: ~0.05 s of a refresh's GIL at 100,000 changes).
        """
        slots, lines, terms, added = _side_tables(self, changes, slot_rows, inbound, offers, had)
        table, skus, dtype = self.site_table, dict(self.skus), self.dtype
        if changes.codes is not None:
            # Numbered in this view's table by the reader: every site is known to it.
            codes = changes.codes
        else:
            sites = changes.sites
            numbers = list(map(table.code.get, sites))
            if None in numbers:
                # A site new to the model: a new table, every sku's site numbers moved along.
                table, remap = table.extended(site for site, n in zip(sites, numbers, strict=True) if n is None)
                skus = {sku: SkuColumns(table.site_set(remap[c.held.codes]), c.records) for sku, c in skus.items()}
                numbers = list(map(table.code.get, sites))
            codes = np.array(numbers, dtype=np.int32)
        if not changes.fits(dtype):
            # A count beyond int32: every sku's records widened (once; the store's columns are BIGINT).
            dtype = WIDE
            skus = {sku: SkuColumns(c.held, c.figures.astype(WIDE).view(raw(WIDE))) for sku, c in skus.items()}
        records = changes.records(dtype).view(raw(dtype))
        bounds = changes.bounds
        for g, sku in enumerate(changes.skus):
            first, end = bounds[g], bounds[g + 1]
            new_codes = codes[first:end]  # ascending, as the sku's own
            old = skus.get(sku)
            if old is None:
                skus[sku] = SkuColumns(table.site_set(new_codes), records[first:end].copy())
                added += end - first
                continue
            # Located in the sku's own site numbers: one `searchsorted` a changed sku. (In bulk, over
            # every changed sku's numbers laid end to end, it built an array the size of the model
            # whenever most skus changed: 0.03-0.09 s at 2,000,000 positions, against ~0.01 s.)
            old_codes = old.held.codes
            at = old_codes.searchsorted(new_codes)
            if at[-1] < len(old_codes) and (old_codes[at] == new_codes).all():
                # The common case: every changed site already held the sku. A copy of its
                # records (memcpy), the changed rows written over theirs.
                copy = old.records.copy()
                copy[at] = records[first:end]
                skus[sku] = SkuColumns(old.held, copy)
            else:
                # A site new to the sku (rare: the fold keeps positions): both merged in site order.
                merged = np.union1d(old_codes, new_codes).astype(np.int32)
                copy = np.empty(len(merged), dtype=raw(dtype))
                copy[np.searchsorted(merged, old_codes)] = old.records
                copy[np.searchsorted(merged, new_codes)] = records[first:end]
                added += len(merged) - len(old_codes)
                skus[sku] = SkuColumns(table.site_set(merged), copy)
        return ReadView(snapshot_id, skus, slots, lines, terms, self.positions + added, table, dtype)


def _side_tables(
    view: ReadView,
    changes: _Changes,
    slot_rows: Iterable[tuple[str, str, int]],
    inbound: Mapping[tuple[str, str], tuple[InboundRow, ...]],
    offers: Mapping[tuple[str, str], OfferTerms],
    had: tuple[Iterable[tuple[str, str]], Iterable[tuple[str, str]]] | None,
) -> tuple[
    Mapping[tuple[str, Millis], int],
    Mapping[tuple[str, str], tuple[InboundRow, ...]],
    Mapping[tuple[str, str], OfferTerms],
    int,
]:
    """The view's slots, inbound lines and offers with the changes, and how many slots were opened.

    See `ReadView._applied` for `slot_rows` and `had`.
    """
    added = 0
    slot_rows = list(slot_rows)
    # Mappings are shared with the old view when nothing in them changed (neither view alters
    # them): a copy of the 137,656 slots of the bench's store was ~5 ms a refresh.
    slots = view.slots
    if slot_rows:
        opened = dict(slots)
        for site, sku, atp in slot_rows:
            slot = appointment_slot(sku)
            if slot is not None:
                added += (site, slot) not in opened
                opened[(sys.intern(site), slot)] = int(atp)
        slots = opened
    # The changed keys' lines and offers: the new ones put, the old ones of a key that has
    # none any more dropped.
    if had is None:
        keys = changes.keys()
        keys.update((site, sku) for site, sku, _ in slot_rows)
        had = (view.inbound.keys() & keys, view.offers.keys() & keys)
    # Layered over the old view's (`Layered`): a copy of both dicts was 0.16 s a refresh at 20M.
    lines = Layered.of(view.inbound).updated(set(had[0]) - inbound.keys(), inbound)
    terms = Layered.of(view.offers).updated(set(had[1]) - offers.keys(), offers)
    return slots, lines, terms, added


def _beyond_int32(cursor: duckdb.DuckDBPyConnection, snapshot_id: int) -> bool:
    """Whether a product position of the snapshot has a count beyond int32."""
    beyond = " OR ".join(f"{c} NOT BETWEEN {_INT32.min} AND {_INT32.max}" for c in _COUNTS)
    row = cursor.execute(
        f"SELECT count(*) FROM positions AT (VERSION => {int(snapshot_id)}) WHERE NOT ({_APPT}) AND ({beyond})"
    ).fetchone()
    return row is None or int(row[0]) > 0


def _narrowed(view: ReadView) -> ReadView:
    """The view's records as `NARROW` (every count fits), in a new base."""
    skus = {sku: SkuColumns(c.held, c.figures.astype(NARROW).view(raw(NARROW))) for sku, c in view.skus.items()}
    return _packed(replace(view, skus=skus, dtype=NARROW))


def _packed(view: ReadView) -> ReadView:
    """The view with its skus in one new base (`overlay.packed`), so that later refreshes patch it."""
    return replace(view, skus=packed(view.snapshot_id, view.skus, view.dtype))


def _patched(
    view: ReadView,
    snapshot_id: int,
    changes: _Changes,
    slot_rows: Iterable[tuple[str, str, int]],
    inbound: Mapping[tuple[str, str], tuple[InboundRow, ...]],
    offers: Mapping[tuple[str, str], OfferTerms],
    had: tuple[Iterable[tuple[str, str]], Iterable[tuple[str, str]]] | None,
) -> ReadView | None:
    """The view with the changes over its overlay's patch; None when they need a new layout.

    The common case: every changed position already in the view, read by number, counts
    within the record type. Its cost is the changes' (located one site set at a time,
    merged into the patch), not the model's.
    """
    skus = view.skus
    if (
        not isinstance(skus, Overlay)
        or had is None
        or changes.codes is None
        or changes.sku_codes is None
        or not changes.fits(view.dtype)
    ):
        return None
    addresses = skus.layout.locate(changes.sku_codes, changes.codes)
    if addresses is None:
        return None  # a site new to a sku
    slots, lines, terms, added = _side_tables(view, changes, slot_rows, inbound, offers, had)
    overlay = skus.changed(snapshot_id, addresses, changes.records(view.dtype).view(raw(view.dtype)))
    return ReadView(snapshot_id, overlay, slots, lines, terms, view.positions + added, view.site_table, view.dtype)


_SEPARATOR = chr(31)
"""Between the names handed to DuckDB in one string (`ReadModel._numbering`)."""

_RECHECK_S = 1.0
"""The follower reads the catalog at least this often, whatever its files' stat says."""


@dataclass(frozen=True, slots=True)
class Refreshed:
    """One refresh that swapped in a new view: what it cost and how far behind the flow it was."""

    snapshot_id: int
    published_at: Millis | None
    """The snapshot's `created_at` as the flow stamped it (when its publish began)."""
    swapped_at: Millis
    """Wall clock when the view was swapped in: from here requests name `snapshot_id`."""
    wall_s: float
    cpu_s: float
    """CPU of the refreshing thread (DuckDB runs a refresh's statements on it: threads = 1).
    Far below `wall_s`, the refresh waited: for a core, or for the GIL behind request threads."""
    whole: bool
    """A whole load (the first, or after a migration or an expiry), not a refresh of changes."""

    @property
    def visible_after_s(self) -> float | None:
        """Publish (its stamp) to visible, in seconds; None when the snapshot has no stamp."""
        return None if self.published_at is None else max(0.0, (self.swapped_at - self.published_at) / 1000)


_KEPT_REFRESHES = 512
"""Refreshes `ReadModel.refreshes` keeps for /health (a few minutes of publishes at one a second)."""


class ReadModel:
    """The newest `ReadView` of a snapshot store, kept current by `refresh()` or `follow()`."""

    def __init__(
        self, directory: Path, *, threads: int = 1, patch_limit: int | None = None, process: bool = False
    ) -> None:
        """Follow the store at `directory`; it may not exist yet (the API may start before the flow).

        `patch_limit`: the changes a view's patch may hold before its base is copied
        (`Overlay.oversized`; None: its default). `process`: a refresh's statements run in a
        process of its own (`RemoteCursor`: DuckDB's client takes the GIL after every task of
        a query, and in a server the request threads hold it); a whole load stays here.
        """
        self._directory = Path(directory)
        self._threads = threads
        self._patch_limit = patch_limit
        self._process = process
        self._reader: SnapshotReader | None = None
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._feed: duckdb.DuckDBPyConnection | None = None
        """The cursor a refresh's statements run on: `_cursor`, or a `RemoteCursor` (duck-typed)."""
        self._numbered: tuple[SiteTable, list[str], Layout | None] | None = None
        """The site table and the skus that `read_model_site_codes` and `read_model_sku_codes` number
        (and the overlay's layout whose order the skus are in)."""
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
        self.snapshot_info_reads = 0
        """Reads of the newest snapshot_info row through DuckDB (~20 ms each; `_refresh` skips them while
        DuckLake committed nothing)."""
        self.follower_refreshes = 0
        """Refreshes the follower ran (a poll that found the catalog unchanged runs none)."""
        self.refreshes: deque[Refreshed] = deque(maxlen=_KEPT_REFRESHES)
        """The last refreshes that swapped a view in, oldest first."""
        self.on_refresh: Callable[[Refreshed], None] | None = None
        """Called on the refreshing thread after each swap (the API's metrics); must not raise."""
        self._cpu_started = 0.0
        self._published_at: Millis | None = None
        self._lake_seen: tuple[object, int] | None = None
        """`_lake_snapshot` read before the last refresh that left the view current."""
        self._counted: tuple[int, int, frozenset[str]] | None = None
        """(snapshot id, the rows of `reader.counted_tables()` then, their DuckLake table ids): carried
        to the next refresh across snapshots that left those tables alone, moved their rows (maintenance)
        or folded into them with a label saying by how many rows (`_bases_growth`)."""

    @classmethod
    def open(
        cls, directory: Path, *, threads: int = 1, patch_limit: int | None = None, process: bool = False
    ) -> ReadModel:
        """A model loaded with the store's newest snapshot, if the store has one yet."""
        model = cls(directory, threads=threads, patch_limit=patch_limit, process=process)
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
            try:
                if self._cursor is None:
                    # One cursor for every refresh: it keeps the numbering's tables (`_numbering`),
                    # and a new cursor's `USE lake` was a fixed cost per refresh.
                    self._cursor = self._reader.cursor()
                    self._numbered = None
                    self._cursor.execute(f"SET threads = {int(self._threads)}")
                    self._feed = self._cursor
                    if self._process:
                        self._feed = self._start_cursor_process()
                assert self._feed is not None
                return self._refresh(self._reader, self._cursor, self._feed)
            except BaseException as exc:
                # A refresh that failed part way leaves its cursor's tables in doubt: the next one starts anew.
                self._close_cursor()
                if isinstance(exc, duckdb.Error):
                    msg = f"cannot refresh the read model from {self._directory}: {exc}"
                    raise SnapshotError(msg) from exc
                raise

    def _start_cursor_process(self) -> duckdb.DuckDBPyConnection:
        """A `RemoteCursor` for the refreshes' statements; this process's cursor if none can start.

        A child that cannot start (no processes or memory left, a sandbox without the
        semaphores multiprocessing needs) costs publish -> visible, not answers: the
        refreshes run here instead, said once in the log, until the model is opened again.
        A child that started and later died is another matter: that refresh fails and the
        next starts a new child (`refresh`).
        """
        assert self._cursor is not None
        try:
            # Duck-typed: the calls a refresh makes (execute, fetch*), in a child process.
            feed = cast(duckdb.DuckDBPyConnection, RemoteCursor(self._directory))
            feed.execute(f"SET threads = {int(self._threads)}")
        except (OSError, duckdb.Error) as exc:
            self._process = False
            _LOG.warning(
                "the read model's cursor process could not start (%s): refreshing in the serving process "
                "instead; publishes may take longer to show under load. Set serve.refresh_process = false "
                "to choose this without the warning.",
                exc,
            )
            return self._cursor
        return feed

    def _close_cursor(self) -> None:
        cursor, feed, self._cursor, self._feed, self._numbered = self._cursor, self._feed, None, None, None
        for each in (feed, cursor) if feed is not cursor else (cursor,):
            if each is not None:
                with contextlib.suppress(duckdb.Error):
                    each.close()

    def _numbering(self, cursor: duckdb.DuckDBPyConnection, view: ReadView) -> list[str]:
        """The view's skus in order, numbered as in `read_model_sku_codes`; its sites are in `read_model_site_codes`.

        Made again only when the view has a site or a sku the last numbering lacked (a new
        site makes a new site table; skus are only ever added between two whole loads, each
        of which makes a new site table too).
        """
        numbered = self._numbered
        layout = view.skus.layout if isinstance(view.skus, Overlay) else None
        if (
            numbered is not None
            and numbered[0] is view.site_table
            and numbered[2] is layout
            and len(numbered[1]) == len(view.skus)
        ):
            return numbered[1]
        # An overlay's skus in its layout's order: a change's sku number is then its layout's.
        skus = list(view.skus) if isinstance(view.skus, Overlay) else sorted(view.skus)
        for name, names in (("sku", skus), ("site", view.site_table.names)):
            # One string split in DuckDB: a list of 2,000 names as a query parameter cost 0.3 s
            # to convert (20,000: 2 s), a numpy column through a replacement scan 0.1 s.
            text = _SEPARATOR.join(names)
            usable = bool(names) and text.count(_SEPARATOR) == len(names) - 1
            # A name holding the separator (never seen): an empty numbering, every refresh by name.
            cursor.execute(
                f"CREATE OR REPLACE TEMP TABLE read_model_{name}_codes AS "
                "SELECT unnest(names) AS name, unnest(range(len(names)))::INTEGER AS code "
                "FROM (SELECT string_split($text, chr(31)) AS names) WHERE $usable",
                {"text": text, "usable": usable},
            )
        self._numbered = (view.site_table, skus, layout)
        return skus

    def _refresh(
        self, reader: SnapshotReader, cursor: duckdb.DuckDBPyConnection, feed: duckdb.DuckDBPyConnection
    ) -> int:
        """`_refresh_from`, unless DuckLake committed nothing since the view was last found current.

        Reading the newest snapshot_info row through DuckDB costs ~20 ms of CPU (its table's
        files), and a publish changes the catalog's files several times (the follower's stat
        marker): ~2.5 times a second for ~0.35 publishes in the bench (from a profile). Every
        publish is a DuckLake commit, so a new current snapshot, which DuckDB tells from the
        catalog alone (`ducklake_current_snapshot`, ~2 ms): while it is the one read before
        the refresh that left the view current, there is no new row to read. Read on the same
        cursor as the row, before it: the row is then as new as that snapshot, or newer. A
        server following 100,000 changes a second with no request: 1.14-1.66x less CPU
        (docs/serving.md, the fifteenth pass).
        """
        lake = self._lake_snapshot(reader, cursor)
        if lake is not None and lake == self._lake_seen and self._view is not None:
            return 0
        changed = self._refresh_from(reader, cursor, feed)
        self._lake_seen = lake
        return changed

    def _lake_snapshot(self, reader: SnapshotReader, cursor: duckdb.DuckDBPyConnection) -> tuple[object, int] | None:
        """`SnapshotReader.lake_snapshot` (the store watch gates its reads on it too)."""
        return reader.lake_snapshot(cursor)

    def _refresh_from(
        self, reader: SnapshotReader, cursor: duckdb.DuckDBPyConnection, feed: duckdb.DuckDBPyConnection
    ) -> int:
        """`cursor` for a whole load; `feed` for a refresh's statements (the same cursor, or one in a child process)."""
        started, self._cpu_started = time.perf_counter(), time.thread_time()
        # The newest snapshot the flow published (its snapshot_info row), not DuckLake's
        # newest: the store's first snapshots hold no tables yet, and maintenance adds
        # snapshots that change nothing.
        self.snapshot_info_reads += 1
        latest = reader.latest(cursor)
        newest = None if latest is None else int(latest["snapshot_id"])  # type: ignore[call-overload]
        self._published_at = None if latest is None else _millis(latest.get("created_at"))
        view = self._view
        if newest is None or (view is not None and newest == view.snapshot_id):
            return 0
        oldest, _ = snapshot_range(feed)
        since = None if view is None else view.snapshot_id
        migrated = reader.refresh_layout()
        if migrated or view is None or since is None or oldest is None or oldest > since or newest < since:
            # First load; a writer migrated the store to another layout (the change feed's
            # tables changed); the snapshots after the view's, which the change feeds read,
            # were expired; or the store was made anew.
            before = _resident_bytes()
            if view is None:
                self.resident_before = before
            loaded = _load(cursor, newest)
            self._counted = None
            self._swap(loaded, started, whole=True)
            del view
            _release_free_memory()
            self.resident_growth = max(0, _resident_bytes() - before)
            return loaded.positions
        made = snapshot_changes(feed, since, newest)
        ranges = data_ranges(feed, since, newest, made)
        counted = self._counted
        counted_rows = growth = None
        if counted is not None and counted[0] == since:
            growth = _bases_growth(made, since, newest, counted[2], reader)
        if counted is not None and growth is not None:
            counted_rows = counted[1] + growth
            self._counted = (newest, counted_rows, counted[2])
        else:
            self._counted = None
        if not ranges:  # only maintenance since: the same rows in other files
            self._swap(replace(view, snapshot_id=newest), started)
            return 0
        # 1. The product positions inserted over the new snapshots, each with its sku's and
        #    its site's number in this view (-1 for one new to it), as numpy columns sorted by
        #    (sku, site, snapshot), in one statement: the newest row per key kept by comparing
        #    neighbours (`_Changes.of_codes`; a QUALIFY window over the feed into another table
        #    cost ~0.1 s of CPU per 100,000 changes, and over a DuckLake scan DuckDB 1.5.5 kept
        #    duplicates: see PositionReplica._apply_changes), grouped by sku and located in bulk
        #    (a tuple per row through fetchall, then a bisect per row, was a refresh's whole
        #    cost). By number, unless a sku or a site is new to the view (rare: then read again
        #    by name, and the numbering is made again at the next refresh). Until serve10 the
        #    feed was copied into a temporary table first, then read (and counted) from there.
        inserted = insertions_sql(reader.position_feed_tables(), ranges, _FEED_COLUMNS)
        products = f"FROM ({inserted}) WHERE NOT ({_APPT})"
        sku_names = self._numbering(feed, view)
        by_number = feed.execute(
            f"SELECT coalesce(k.code, -1) AS sku_code, coalesce(s.code, -1) AS site_code, {_FIGURES_SQL} "
            f"FROM (SELECT * {products}) f LEFT JOIN read_model_sku_codes k ON k.name = f.sku "
            "LEFT JOIN read_model_site_codes s ON s.name = f.site_id ORDER BY 1, 2, f.snapshot_id"
        ).fetchnumpy()
        by_number["sku"], by_number["site"] = by_number.pop("sku_code"), by_number.pop("site_code")
        if not len(by_number["sku"]) or min(by_number["sku"].min(), by_number["site"].min()) >= 0:
            changes = _Changes.of_codes(by_number, sku_names)
        else:
            changes = _Changes.of_columns(
                feed.execute(
                    f"SELECT sku, site_id, {_FIGURES_SQL} {products} ORDER BY sku, site_id, snapshot_id"
                ).fetchnumpy()
            )
        del by_number
        # 2. The inbound lines and offers whose rows changed over the new snapshots, as of the
        #    new snapshot; the few appointment slots of the feed, oldest first (the newest wins
        #    in `_applied`); and the positions' count (step 3): one statement (`_side_feed`).
        base_sql, rest_sql = reader.position_count_parts(newest)
        inbound, offers, had, slot_rows, (base_rows, rest_rows) = _side_feed(
            feed,
            reader,
            ranges,
            newest,
            f"SELECT site_id, sku, atp, snapshot_id FROM ({inserted}) WHERE {_APPT}",
            (base_sql if counted_rows is None else f"SELECT {int(counted_rows)}", rest_sql),
        )
        count = base_rows + rest_rows
        if counted_rows is None:
            self._counted = (newest, base_rows, _table_ids(feed, reader.counted_tables()))
        if isinstance(view.skus, Overlay):
            # The base catches up, in place, with the oldest view still alive (`catch_up`): by
            # now the view before this one has usually been let go by its last request, so the
            # base reaches this one and the new view's patch is this refresh's changes alone.
            # A scatter of the last refresh's changes (a few ms at 100,000).
            catch_up(view.skus)
            if view.skus.oversized(self._patch_limit):
                # Views held for long kept the base behind: a base of its own for this one.
                view = replace(view, skus=view.skus.rebased())
        new = _patched(view, newest, changes, slot_rows, inbound, offers, had)
        if new is None:
            # A position new to the layout (or to the model), or a count past int32: the whole
            # view rebuilt sku by sku and packed in a new base (rare: the fold keeps positions).
            new = _packed(view._applied(newest, changes, slot_rows, inbound, offers, had))
        # 3. The flow never deletes a position: if the counts differ, something did, and
        #    the view is loaded whole rather than answering with a key the store dropped.
        whole = False
        if count != new.positions:
            new, whole = _load(cursor, newest), True
            self._counted = None  # kept or not, the count is not to be trusted further
        elif new.dtype == WIDE and changes.fits(NARROW) and not _beyond_int32(feed, newest):
            # 4. The count that widened the records is gone: narrowed again, as a whole load
            #    would read them (a scan of the store, paid only while the records are wide).
            new = _narrowed(new)
        self._swap(new, started, whole=whole)
        return changes.size + len({(site, sku) for site, sku, _ in slot_rows})

    def _swap(self, view: ReadView, started: float, *, whole: bool = False) -> None:
        # One assignment: a request holding the old view keeps it whole.
        self._view = view
        # CPU read first: its span then lies within the wall time's (it also began after it).
        cpu = time.thread_time() - self._cpu_started
        self.last_refresh_s = time.perf_counter() - started
        done = Refreshed(
            view.snapshot_id, self._published_at, Millis(time.time_ns() // 1_000_000), self.last_refresh_s, cpu, whole
        )
        self.refreshes.append(done)
        if self.on_refresh is not None:
            self.on_refresh(done)

    def follow(self, every: float = 0.05, *, nice: int = 0, switch_interval: float | None = None) -> None:
        """Refresh in a background thread, `every` seconds after the last refresh ended, until `close()`.

        Not niced by default, unlike `PositionReplica.follow`: under load (4 clients, 2
        cores shared with other work) a niced refresh never caught up with publishes of
        20,000 positions a second, and every answer named a snapshot minutes old.

        `switch_interval`: the interpreter's (`sys.setswitchinterval`, process-wide) while a
        refresh runs, the previous one restored after it. DuckDB's client takes the GIL
        back after every task of a query; behind a request thread that keeps it, each
        take waits up to the interval (5 ms by default), which made a 0.3 s refresh take
        seconds in a busy server (docs/serving.md, "Publish to visible, ninth pass").

        While refreshes fail `view` raises the error: a model that no longer follows the
        store must not answer as if it did; the thread keeps trying.
        """
        if self._follower is not None:
            return
        self._follower = threading.Thread(
            target=self._follow, args=(every, nice, switch_interval), name="read-model", daemon=True
        )
        self._follower.start()

    def _follow(self, every: float, nice: int, switch_interval: float | None) -> None:
        # Below the requests' priority (Linux: per thread): a refresh yields the CPU to them.
        lower_priority(nice)
        seen: object = None
        checked = 0.0
        while not self._stop.is_set():
            # A refresh that finds nothing new still cost ~22 ms of CPU (reading the newest
            # snapshot_info row through DuckDB): every 50 ms, a quarter of a core of an idle
            # server. A SQLite catalog in WAL mode changes its files at every commit, so an
            # unchanged stat means nothing was published; it is taken before the refresh, so a
            # commit during one changes it again. Once a second the catalog is read anyway,
            # in case a write kept the same size within the clock's tick.
            marker = self._catalog_marker()
            now = time.monotonic()
            if marker is not None and marker == seen and now - checked < _RECHECK_S:
                self._stop.wait(every)
                continue
            interval = sys.getswitchinterval()
            try:
                self.follower_refreshes += 1
                if switch_interval is not None:
                    sys.setswitchinterval(switch_interval)
                try:
                    self.refresh()
                finally:
                    sys.setswitchinterval(interval)
                self._failure = None
                seen, checked = marker, now
            except SnapshotError as exc:
                # Before the first view the store is still being created (tables appear
                # with the flow's first publish): nothing to answer from, so nothing to
                # fail. After it, requests get the error (503) until a refresh succeeds,
                # rather than answers from a view that stopped following.
                if self._view is not None:
                    self._failure = exc
            self._stop.wait(every)

    def _catalog_marker(self) -> object:
        """The SQLite catalog's files as stat sees them (None: cannot tell, e.g. PostgreSQL or no store yet)."""
        reader = self._reader
        return None if reader is None else reader.catalog_stat()

    @property
    def cursor_process_resident(self) -> int | None:
        """The resident bytes of the refreshes' child process (`process=True`), None without one.

        Counted apart from this process's: an SRE adding up the API's memory needs both."""
        feed = self._feed
        if not isinstance(feed, RemoteCursor) or feed.pid is None:
            return None
        return _resident_bytes(feed.pid)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No refresh runs within the block (one in flight ends first): the view stays still.

        For a test (or an operator's diagnosis) of what readers see while the model is behind
        the store; the follower catches up after the block.
        """
        with self._refreshing:
            yield

    def close(self) -> None:
        """Stop following and detach."""
        self._stop.set()
        if self._follower is not None:
            # A refresh in progress ends first: closing DuckDB under it could abort the process.
            self._follower.join(timeout=60)
        if self._refreshing.acquire(timeout=60):
            try:
                self._close_cursor()
            finally:
                self._refreshing.release()
        if self._reader is not None:
            self._reader.close()

    def __enter__(self) -> ReadModel:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _millis(stamp: object) -> Millis | None:
    """A snapshot_info `created_at` (TIMESTAMPTZ: an aware datetime; naive would be UTC) as epoch millis."""
    if not isinstance(stamp, datetime):
        return None
    return Millis(round((stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)).timestamp() * 1000))


def _resident_bytes(pid: int | None = None) -> int:
    """The resident memory of this process (or of `pid`) now (Linux /proc), 0 where unknown."""
    try:
        with open(f"/proc/{'self' if pid is None else int(pid)}/statm", "rb") as statm:
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


_Keys = set[tuple[str, str]]


def _side_feed(
    cursor: duckdb.DuckDBPyConnection,
    reader: SnapshotReader,
    ranges: Sequence[tuple[int, int]],
    snapshot_id: int,
    slots_sql: str,
    count_sql: tuple[str, str],
) -> tuple[
    dict[tuple[str, str], tuple[InboundRow, ...]],
    dict[tuple[str, str], OfferTerms],
    tuple[_Keys, _Keys],
    list[tuple[str, str, int]],
    tuple[int, int],
]:
    """What changed in the inbound lines and offers over `ranges`, the slots, and the positions' count: one statement.

    Returns the lines and the offer, as of `snapshot_id`, of every key whose lines or offer
    changed; those keys (lines, offers: a key among them with none any more is dropped
    from the view); the rows of `slots_sql` (site, sku, atp, snapshot), as (site, sku, atp)
    oldest first; and the two counts of `count_sql` (`SnapshotReader.position_count_parts`:
    their sum is the number of positions at `snapshot_id`).

    Found from the two tables' own change feeds: a key's lines (or offer) differ between
    the view's snapshot and this one only if a row of it was inserted or deleted in
    between (DuckLake lists an update as both; the snapshots `data_ranges` leaves out
    only moved rows), so these keys, a few thousand a publish, are all that can need
    reading, and they hold every key that had lines or an offer and has none now. Until
    serve10 the whole tables were semi-joined with the 100,000 changed positions, at the
    new snapshot and at the view's (four statements, ~0.2 s of a ~0.37 s refresh at 20M),
    which also assumed that a line or an offer changes only with its position.
    """

    def touched(table: str, site: str) -> str:
        feeds = " UNION ALL ".join(
            f"SELECT {site} AS site_id, sku FROM ducklake_table_{kind}('{LAKE}', 'main', '{physical}', {first}, {last})"
            for physical in reader.physical_tables(table)
            for kind in ("insertions", "deletions")
            for first, last in ranges
        )
        return f"SELECT DISTINCT site_id, sku FROM ({feeds})"

    at = f"AT (VERSION => {int(snapshot_id)})"
    rows = cursor.execute(
        f"WITH li AS MATERIALIZED ({touched('inbound', 'site_id')}), "
        f"lo AS MATERIALIZED ({touched('offers', 'seller_id')}) "
        "SELECT 0 AS part, i.site_id, i.sku, i.ref, i.qty, epoch_ms(i.eta) AS at_ms, "
        "coalesce(i.promised, false) AS promised, NULL::DOUBLE AS price, NULL::BIGINT AS lead "
        f"FROM (SELECT * FROM inbound {at}) i SEMI JOIN li ON i.site_id = li.site_id AND i.sku = li.sku "
        "UNION ALL SELECT 1, site_id, sku, NULL, NULL, NULL, NULL, NULL, NULL FROM li "
        "UNION ALL SELECT 2, o.seller_id, o.sku, NULL, o.qty, epoch_ms(o.updated_at), NULL, o.price, o.lead_time_days "
        f"FROM (SELECT * FROM offers {at}) o SEMI JOIN lo ON o.seller_id = lo.site_id AND o.sku = lo.sku "
        "UNION ALL SELECT 3, site_id, sku, NULL, NULL, NULL, NULL, NULL, NULL FROM lo "
        f"UNION ALL SELECT 4, NULL, NULL, NULL, ({count_sql[0]}), NULL, NULL, NULL, NULL "
        f"UNION ALL SELECT 6, NULL, NULL, NULL, ({count_sql[1]}), NULL, NULL, NULL, NULL "
        f"UNION ALL SELECT 5, site_id, sku, NULL, atp, snapshot_id, NULL, NULL, NULL FROM ({slots_sql}) "
        # Lines in the order a whole load reads them (eta, then ref); slots oldest first.
        "ORDER BY part, at_ms, ref"
    ).fetchall()
    lines: dict[tuple[str, str], list[InboundRow]] = {}
    offers: dict[tuple[str, str], OfferTerms] = {}
    had: tuple[_Keys, _Keys] = (set(), set())
    slots: list[tuple[str, str, int]] = []
    counts = [-1, -1]
    for part, site, sku, ref, qty, at_ms, promised, price, lead in rows:
        if part == 0:
            lines.setdefault((str(site), str(sku)), []).append((str(ref), int(qty), int(at_ms), bool(promised)))
        elif part == 2:
            offers[(str(site), str(sku))] = OfferTerms(
                int(qty), None if price is None else float(price), None if lead is None else int(lead), int(at_ms)
            )
        elif part in (1, 3):
            had[part // 2].add((str(site), str(sku)))
        elif part in (4, 6):
            counts[part == 6] = int(qty)
        else:
            slots.append((str(site), str(sku), int(qty)))
    return {key: tuple(found) for key, found in lines.items()}, offers, had, slots, (counts[0], counts[1])


def _table_ids(cursor: duckdb.DuckDBPyConnection, tables: Sequence[str]) -> frozenset[str]:
    """DuckLake's ids of `tables` now, as `ducklake_snapshots` lists them in a snapshot's changes."""
    names = ", ".join(f"'{name}'" for name in tables)
    rows = cursor.execute(f"SELECT table_id FROM ducklake_table_info('{LAKE}') WHERE table_name IN ({names})")
    return frozenset(str(row[0]) for row in rows.fetchall())


def _bases_growth(
    made: SnapshotChanges, since: int, until: int, ids: frozenset[str], reader: SnapshotReader
) -> int | None:
    """The rows the snapshots in (since, until] added to the tables `ids` (the bases), or None if not known.

    A table's rows change only in a snapshot whose changes list it (`tables_inserted_into`,
    `tables_deleted_from`, a maintenance rewrite: by id; created, dropped, altered: by name).
    Of those, DuckLake's maintenance moves rows without changing them (as `data_ranges`, which
    skips them, relies on too), and a writer's fold says by how many rows it changed its base
    (`recent.base_growth`); any other (an operator's repair, a writer of before the label), or
    a snapshot DuckLake no longer lists, cannot be vouched for: None, and the bases are counted again.
    """
    names = frozenset(reader.counted_tables())
    growth = 0
    for snapshot_id in range(since + 1, until + 1):
        listed = made.get(snapshot_id)
        if listed is None:
            return None
        if listed.moved_rows_only:
            continue  # maintenance (files merged or rewritten): the same rows in other files
        if any(
            value in ids or value.rsplit(".", 1)[-1].strip('"') in names
            for values in listed.changes.values()
            for value in values
        ):
            folded = base_growth(listed.message, listed.extra_info, names)
            if folded is None:
                return None
            growth += folded
    return growth


def _load(cursor: duckdb.DuckDBPyConnection, snapshot_id: int) -> ReadView:
    """The whole snapshot, as numpy columns sorted by (sku, site) cut into one block per sku.

    DuckDB numbers the sites (ascending ids) and the skus, and hands every column over
    as one numpy array (`fetchnumpy`): no Python object per position. The counts come
    as int32 when they all fit (29 bytes a position), else as int64.
    """
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
    for site, sku, atp in cursor.execute(f"SELECT site_id, sku, atp FROM positions {at} WHERE {_APPT}").fetchall():
        count += 1
        slot = appointment_slot(sku)
        if slot is not None:
            slots[(sys.intern(site), slot)] = int(atp)
    products = f"(SELECT * FROM positions {at} WHERE NOT ({_APPT}))"
    for name, column in (("sites", "site_id"), ("skus", "sku")):
        cursor.execute(
            f"CREATE OR REPLACE TEMP TABLE read_model_{name} AS SELECT {column} AS name, "
            f"(row_number() OVER (ORDER BY {column}) - 1)::INTEGER AS code "
            f"FROM (SELECT DISTINCT {column} FROM {products})"
        )
    table = SiteTable(
        [name for (name,) in cursor.execute("SELECT name FROM read_model_sites ORDER BY code").fetchall()]
    )
    sku_names = [name for (name,) in cursor.execute("SELECT name FROM read_model_skus ORDER BY code").fetchall()]
    dtype = NARROW
    columns: dict[str, npt.NDArray[Any]] = {}
    for kind, count_sql in ((NARROW, "INTEGER"), (WIDE, "BIGINT")):
        dtype = kind
        figures = ", ".join(f"p.{c}::{count_sql} AS {c}" for c in _COUNTS)
        try:
            columns = cursor.execute(
                f"SELECT k.code AS sku, s.code AS site, {figures}, coalesce(p.negative, false) AS negative, "
                f"epoch_ms(p.updated_at) AS updated_at FROM {products} p "
                "JOIN read_model_skus k ON k.name = p.sku JOIN read_model_sites s ON s.name = p.site_id "
                "ORDER BY k.code, s.code"
            ).fetchnumpy()
            break
        except duckdb.ConversionException:
            continue  # a count beyond int32: the wide records
    sku_codes: npt.NDArray[np.int32] = columns.pop("sku")
    site_codes: Codes = columns.pop("site")
    records = _to_records(columns, dtype).view(raw(dtype))
    del columns
    bounds = np.searchsorted(sku_codes, np.arange(len(sku_names) + 1)).tolist()
    del sku_codes
    held = [table.site_set(site_codes[bounds[k] : bounds[k + 1]]) for k in range(len(sku_names))]
    count += len(records)
    # One block for every position (no copy per sku): an overlay's base, written in place by
    # later refreshes where no live view reads it (adapters/snapshot_store/overlay.py).
    overlay = Overlay(Base(records, snapshot_id), Layout.of(sku_names, held), Patch.empty(dtype), dtype, snapshot_id)
    return ReadView(snapshot_id, overlay, slots, inbound, offers, count, table, dtype)
