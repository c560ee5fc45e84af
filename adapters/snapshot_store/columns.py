"""The read model's columns: position records, the sites holding a sku, and one sku's block.

Shared by the read model's views (`read_model`) and the overlay they are built from
(`overlay`): a record type of 29 bytes (`NARROW`) or 45 (`WIDE`), kept as raw bytes of
that size so that copies and scatters are memcpy; the sites of a view numbered in id
order (`_SiteTable`), the site sets made of them shared by every sku held by the same
sites (`SiteSet`), and one sku's sites with their records (`SkuColumns`).
"""

from __future__ import annotations

import sys
import threading
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ledger.events import Millis

__all__ = [
    "NARROW", "WIDE", "Codes", "InboundRow", "PositionRow", "Records", "SiteSet", "SiteTable", "SkuColumns", "raw",
]  # fmt: skip

# (site_id, atp, on_hand, reserved, staged, inbound, negative, updated_at ms)
PositionRow = tuple[str, int, int, int, int, int, bool, int]
InboundRow = tuple[str, int, Millis, bool]
"""(ref, qty, eta, promised) of one inbound line."""

Codes = npt.NDArray[np.int32]
Records = npt.NDArray[np.void]

_COUNTS = ("atp", "on_hand", "reserved", "staged", "inbound")
_FIELDS = (*_COUNTS, "negative", "updated_at")


def _records(count: str) -> np.dtype[np.void]:
    return np.dtype([*((name, count) for name in _COUNTS), ("negative", "?"), ("updated_at", "<i8")])


NARROW = _records("<i4")
"""A position's figures in 29 bytes: the counts as int32, whenever every count of the snapshot fits."""
WIDE = _records("<i8")
"""The same as int64, for a snapshot holding a count beyond int32 (the store's columns are BIGINT)."""
_INT32 = np.iinfo(np.int32)


def raw(dtype: np.dtype[np.void]) -> np.dtype[np.void]:
    """The record type as plain bytes of its size: what `SkuColumns` stores."""
    return np.dtype(f"V{dtype.itemsize}")


@dataclass(frozen=True, slots=True, weakref_slot=True, eq=False)
class SiteSet:
    """The sites holding a sku, ascending: their ids and their numbers in the view's site table.

    Shared by every sku held by the same sites (a national range is held everywhere):
    the ids are stored once, and what is computed per site set is computed once.
    """

    names: tuple[str, ...]
    codes: Codes
    """The sites' numbers (`SiteTable`), ascending as the ids are."""


@dataclass(frozen=True, slots=True)
class SkuColumns:
    """One sku's positions, site by site in ascending order; never changed once built."""

    held: SiteSet
    records: Records
    """One record per site as raw bytes (`raw(NARROW)` or `raw(WIDE)`): copied and written by a
    refresh at memcpy speed (a copy field by field cost twice as much); read through `figures`."""

    @property
    def sites(self) -> tuple[str, ...]:
        return self.held.names

    @property
    def figures(self) -> Records:
        """The records with their fields: atp, on_hand, reserved, staged, inbound, negative, updated_at."""
        return self.records.view(NARROW if self.records.dtype.itemsize == NARROW.itemsize else WIDE)

    def atp(self) -> list[int]:
        """The ATP column as Python ints (one C call: a promise iterates it)."""
        values: list[int] = self.figures["atp"].tolist()
        return values

    def index(self, site_id: str) -> int | None:
        """Where the site is in the columns, None when it holds no position of the sku."""
        sites = self.held.names
        i = bisect_left(sites, site_id)
        return i if i < len(sites) and sites[i] == site_id else None

    def row(self, i: int) -> PositionRow:
        atp, on_hand, reserved, staged, inbound, negative, updated_at = self.figures[i].item()
        return (self.held.names[i], atp, on_hand, reserved, staged, inbound, bool(negative), updated_at)

    def nbytes(self, *, with_sites: bool = True) -> int:
        """Bytes held by the records (and the site set's numbers and id references, unless shared)."""
        return int(self.records.nbytes) + with_sites * (len(self.held.names) * 8 + int(self.held.codes.nbytes))


class SiteTable:
    """Every site of a view numbered in ascending id order, and the site sets made of them.

    Numbers in id order let a sku's sites be located by number (`searchsorted`) and
    still come out in id order. Never changed once a view holds it, but for its intern
    table of site sets (weak: a set no view holds any more is dropped). A site new to
    the model makes a new table (`extended`), every number after it moving up.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(map(sys.intern, names))
        self.code = {name: i for i, name in enumerate(self.names)}
        self._sets: weakref.WeakValueDictionary[bytes, SiteSet] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def site_set(self, codes: Codes) -> SiteSet:
        """The shared site set of these numbers (ascending)."""
        key = codes.tobytes()
        with self._lock:
            found = self._sets.get(key)
            if found is None:
                own = np.array(codes, dtype=np.int32)  # its own memory, not a view into a load's block
                own.flags.writeable = False
                names = self.names
                found = SiteSet(tuple([names[c] for c in own.tolist()]), own)
                self._sets[key] = found
            return found

    def extended(self, new: Iterable[str]) -> tuple[SiteTable, npt.NDArray[np.int32]]:
        """A table with these sites too, and each old number's new one."""
        table = SiteTable(sorted(set(self.names).union(new)))
        remap = np.array([table.code[name] for name in self.names], dtype=np.int32)
        return table, remap


NO_SITES = SiteTable(())
