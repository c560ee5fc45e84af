"""Step 4 of a publish without reading the lake: the version of every position a writer's table holds, in memory.

A publish keeps a staged position only if the key is new or its version is at least the
stored one. Asking the lake (a LEFT JOIN of the staged rows against the positions table)
read the whole table: with random keys every data file holds some of them, so the join
cost grew with the store, not with the change (0.45-0.62 s of CPU for 100,000 changes into
2,000,000 positions, docs/snapshots.md). But a writer is the only one that writes its
tables (several writers each own theirs), so it can know the stored versions itself: it
reads them once, then applies what each of its commits wrote. Judging a publish is then
a binary search per staged key (O(change x log store)), and the same answer also says
which accepted keys are new, which go in with a plain INSERT instead of the MERGE.

The keys are exact, not hashed: a (site, sku) key is a pair of small integer codes (the
sites and the skus, interned once each: a retailer has thousands of sites and tens of
thousands of skus, not millions), packed into one int64; the index is two sorted numpy
arrays, codes and versions: 16 bytes per position (320 MB at 20,000,000 positions)
plus the two code dictionaries.

The index is only as good as the writer's knowledge of its commits: the writer drops it
whenever a commit fails or its outcome is unknown, and reads it again from the lake
before the next publish (`SnapshotWriter.publish`). It does not see SQL run on its
tables by anyone else while it is open (an operator's repair): a position deleted by
hand comes back with the fold's next, higher version (its MERGE inserts a missing key),
but a position inserted by hand would be inserted again by the next publish that finds
it new. Repair with the writer stopped; it reads the versions afresh when it starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np

from adapters.snapshot_store.layout import LAKE
from ledger.outputs import PositionChange

__all__ = ["StoredVersions", "Verdicts"]

_SITE_SHIFT = 32
"""A key is (site code << 32) | sku code: both codes stay below 2**31."""


@dataclass(frozen=True, slots=True)
class Verdicts:
    """What the stored versions say about staged positions, one entry per position in the order given."""

    keys: np.ndarray[Any, np.dtype[np.int64]]
    versions: np.ndarray[Any, np.dtype[np.int64]]
    accepted: np.ndarray[Any, np.dtype[np.bool_]]
    """New, or a version at least the stored one (>=: see the comment in `SnapshotWriter._commit`)."""
    new: np.ndarray[Any, np.dtype[np.bool_]]
    """Not stored yet (always accepted)."""
    at: np.ndarray[Any, np.dtype[np.int64]]
    """Where each key is, or would be inserted, in the sorted keys judged against."""
    size: int
    """How many keys were stored when judged."""


class StoredVersions:
    """The stored version of every (site, sku) of one positions table, as sorted arrays."""

    def __init__(self) -> None:
        self._sites: dict[str, int] = {}
        self._skus: dict[str, int] = {}
        self._keys: np.ndarray[Any, np.dtype[np.int64]] = np.empty(0, np.int64)
        self._versions: np.ndarray[Any, np.dtype[np.int64]] = np.empty(0, np.int64)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def nbytes(self) -> int:
        """The arrays' bytes (the code dictionaries not counted)."""
        return int(self._keys.nbytes + self._versions.nbytes)

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection, table: str) -> StoredVersions:
        """Read the versions of lake.`table` (its newest snapshot); raises duckdb.Error.

        The codes are made in DuckDB (two small lists, then one join), so the positions
        never become Python objects: 1.05-1.36 s of CPU at 2,000,000 positions, 5.7-7.4 s at
        20,000,000 (against 9.3-10.0 s sorted by SQL, side by side).
        """
        index = cls()
        sites = [str(s) for (s,) in con.execute(f"SELECT DISTINCT site_id FROM {LAKE}.{table}").fetchall()]
        skus = [str(s) for (s,) in con.execute(f"SELECT DISTINCT sku FROM {LAKE}.{table}").fetchall()]
        index._sites = {site: code for code, site in enumerate(sites)}
        index._skus = {sku: code for code, sku in enumerate(skus)}
        if not sites:
            return index
        # The code lists (thousands of rows, not millions) travel as registered numpy columns.
        site_codes = {"site_id": np.array(sites, dtype=np.str_), "code": np.arange(len(sites), dtype=np.int64)}
        sku_codes = {"sku": np.array(skus, dtype=np.str_), "code": np.arange(len(skus), dtype=np.int64)}
        con.register("stored_versions_sites", site_codes)
        con.register("stored_versions_skus", sku_codes)
        try:
            columns = con.execute(
                f"SELECT (s.code << {_SITE_SHIFT}) | k.code AS key, p.version "
                f"FROM {LAKE}.{table} p JOIN stored_versions_sites s USING (site_id) "
                "JOIN stored_versions_skus k USING (sku)"
            ).fetchnumpy()
        finally:
            con.unregister("stored_versions_sites")
            con.unregister("stored_versions_skus")
        # Sorted here, not by an ORDER BY: at 20,000,000 positions the join took 4.1-5.3 s
        # of CPU and numpy's sort 1.4-1.7 s, the join with ORDER BY 9.45 s (casting the
        # text to ENUMs instead of the joins: 7.1 s).
        keys = np.asarray(columns["key"], dtype=np.int64)
        order = np.argsort(keys)
        index._keys = np.ascontiguousarray(keys[order])
        index._versions = np.ascontiguousarray(np.asarray(columns["version"], dtype=np.int64)[order])
        return index

    def judge(self, positions: Sequence[PositionChange]) -> Verdicts:
        """The verdict on each of `positions` (one per key, as `latest_versions` leaves them)."""
        keys = self._codes(positions)
        versions = np.fromiter((p.version for p in positions), np.int64, len(positions))
        # Searched in key order: random probes into a large sorted array miss the cache
        # (the search was 11% of a publish's CPU at 2,000,000 positions, unsorted).
        order = np.argsort(keys)
        at = np.empty(len(keys), np.int64)
        at[order] = np.searchsorted(self._keys, keys[order])
        inside = at < len(self._keys)
        found = np.zeros(len(keys), np.bool_)
        found[inside] = self._keys[at[inside]] == keys[inside]
        accepted = ~found
        accepted[found] = versions[found] >= self._versions[at[found]]
        return Verdicts(keys, versions, accepted, ~found, at, len(self._keys))

    def committed(self, verdicts: Verdicts) -> None:
        """The accepted positions of `verdicts`, the last ones judged, are now stored: take their versions."""
        if verdicts.size != len(self._keys):
            msg = "stored versions changed between judging a publish and its commit"
            raise ValueError(msg)
        stored = verdicts.accepted & ~verdicts.new
        self._versions[verdicts.at[stored]] = verdicts.versions[stored]
        new = verdicts.new  # always accepted
        if new.any():
            order = np.argsort(verdicts.keys[new])
            self._keys = np.insert(self._keys, verdicts.at[new][order], verdicts.keys[new][order])
            self._versions = np.insert(self._versions, verdicts.at[new][order], verdicts.versions[new][order])

    def version(self, site_id: str, sku: str) -> int | None:
        """The stored version of one key, None if it is not stored (for tests and checks)."""
        site, sku_code = self._sites.get(site_id), self._skus.get(sku)
        if site is None or sku_code is None:
            return None
        key = (site << _SITE_SHIFT) | sku_code
        at = int(np.searchsorted(self._keys, key))
        if at < len(self._keys) and int(self._keys[at]) == key:
            return int(self._versions[at])
        return None

    def _codes(self, positions: Sequence[PositionChange]) -> np.ndarray[Any, np.dtype[np.int64]]:
        # A site or sku seen for the first time gets the next code; a code whose key is
        # never committed costs one dictionary entry and nothing else.
        sites, skus = self._sites, self._skus
        site_codes = np.fromiter((sites.setdefault(p.site_id, len(sites)) for p in positions), np.int64, len(positions))
        sku_codes = np.fromiter((skus.setdefault(p.sku, len(skus)) for p in positions), np.int64, len(positions))
        return (site_codes << _SITE_SHIFT) | sku_codes
