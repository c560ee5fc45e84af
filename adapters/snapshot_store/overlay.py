"""The read model's product positions: one base written in place, and an immutable patch per view.

Why not copy on write per sku, as before: 100,000 random changes at 20,000,000 positions
(1,000 sites x 20,000 skus) touch all but e^-5 of the skus, so every refresh copied
every sku's block, ~580 MB (cProfile of a refresh at 20M: 0.83 s of 2.35 s in 19,863
`ndarray.copy`, 0.46 s the Python loop over the changed skus, 0.30 s their checks).
Here a refresh costs what the changes cost:

    Layout   sku k's sites (`held[k]`) and where its records are, `starts[k]:starts[k + 1]`,
             in one contiguous block of every product position sorted by (sku, site).
             Never changed: a position new to the layout makes a new base and layout.
    Base     that block of records. Each address holds its value as of `Base.snapshot_id`.
    Patch    per view: every address changed since the base's snapshot when the view was
             made, sorted, with its record and the snapshot that changed it last.
    Overlay  a view's `skus` mapping: base and patch read together, one sku at a time
             (its base block copied, its patch entries written over the copy).

A refresh merges its changes into the newest view's patch (sorted arrays: O(patch)),
and the base catches up in place (`catch_up`) so the patch stays the size of a
refresh's changes. Writing the base in place is safe where every live overlay's patch
covers what is written: an overlay's patch covers every address changed between the
base's snapshot at its making and its own snapshot, so writing the changes up to
snapshot d is safe once no live overlay is older than d. Overlays are tracked weakly
(a request holds its view, the view its overlay; a view no request holds is freed at
once by reference counting). A reader copying a base block while it is written may
copy a torn record, but only at an address its patch overwrites.

If old overlays stay alive (a request holding a view for long) the base cannot catch
up and the patch grows; past `_PATCH_LIMIT` the refresh copies the base whole
(`Overlay.rebased`), as copy on write did every refresh.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from adapters.snapshot_store.columns import Codes, Records, SiteSet, SkuColumns, raw

__all__ = ["Base", "Layered", "Layout", "Overlay", "Patch", "catch_up", "packed"]

Addresses = npt.NDArray[np.int64]

_CACHED_SKUS = 256
"""Skus an overlay keeps read (a promise reads its sku's ATP, then a seller's position or
a few): ~7 MB at 1,000 sites a sku, dropped with the view."""
_PATCH_MIN = 1_000_000
"""A patch grows to this many entries, or an eighth of the positions, before the base is copied."""


@dataclass(frozen=True, slots=True, eq=False)
class Layout:
    """Where each sku's records are in its base, and the sites holding it; never changed."""

    sku_names: tuple[str, ...]
    code: dict[str, int]
    starts: npt.NDArray[np.int64]
    """Sku k's records are `starts[k]:starts[k + 1]` of the base."""
    held: tuple[SiteSet, ...]
    set_of: npt.NDArray[np.intp]
    """Sku k's site set is `sets[set_of[k]]`: the changes are located one site set at a time."""
    sets: tuple[SiteSet, ...]

    @classmethod
    def of(cls, sku_names: Sequence[str], held: Sequence[SiteSet]) -> Layout:
        starts = np.zeros(len(held) + 1, dtype=np.int64)
        np.cumsum([len(h.names) for h in held], out=starts[1:])
        index: dict[int, int] = {}
        sets: list[SiteSet] = []
        set_of = np.empty(len(held), dtype=np.intp)
        for k, h in enumerate(held):
            i = index.get(id(h))
            if i is None:
                i = index[id(h)] = len(sets)
                sets.append(h)
            set_of[k] = i
        names = tuple(sku_names)
        return cls(names, {sku: k for k, sku in enumerate(names)}, starts, tuple(held), set_of, tuple(sets))

    def locate(self, skus: npt.NDArray[np.int64], sites: Codes) -> Addresses | None:
        """Each (sku code, site code)'s address in the base; None if a site does not hold its sku here."""
        addresses = self.starts[skus]
        set_ids = self.set_of[skus]
        # One searchsorted per site set among the changed skus (a national range is one set),
        # not one per changed sku (20,000 calls at 20M positions).
        order = np.argsort(set_ids, kind="stable")
        ordered = set_ids[order]
        cuts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
        for group in np.split(order, cuts) if len(order) else ():
            codes = self.sets[int(set_ids[group[0]])].codes
            wanted = sites[group]
            at = codes.searchsorted(wanted)
            if (at >= len(codes)).any() or (codes[np.minimum(at, len(codes) - 1)] != wanted).any():
                return None
            addresses[group] += at
        return addresses


class Base:
    """Every product position of a layout in one block; each address holds its value as of `snapshot_id`."""

    def __init__(self, records: Records, snapshot_id: int) -> None:
        self.records = records
        self.snapshot_id = snapshot_id
        self.overlays: weakref.WeakSet[Overlay] = weakref.WeakSet()
        """Every overlay reading this base that is still alive: what decides how far it may catch up."""
        self.lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Patch:
    """Addresses changed since a base's snapshot (ascending), their records, and the snapshot of each change."""

    addresses: Addresses
    records: Records
    changed_at: npt.NDArray[np.int64]

    @classmethod
    def empty(cls, dtype: np.dtype[np.void]) -> Patch:
        return cls(np.empty(0, dtype=np.int64), np.empty(0, dtype=raw(dtype)), np.empty(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.addresses)

    def since(self, snapshot_id: int) -> Patch:
        """Only the entries changed after this snapshot (those before it the base holds already)."""
        keep = self.changed_at > snapshot_id
        if keep.all():
            return self
        return Patch(self.addresses[keep], self.records[keep], self.changed_at[keep])

    def merged(self, addresses: Addresses, records: Records, snapshot_id: int) -> Patch:
        """This patch with these changes (ascending addresses, one each) over it, changed at `snapshot_id`."""
        at = np.full(len(addresses), snapshot_id, dtype=np.int64)
        if not len(self.addresses):
            return Patch(addresses, records, at)
        # The old entries a change replaces dropped, then both sorted together (stable: no
        # address is in both any more).
        found = addresses.searchsorted(self.addresses)
        replaced = found < len(addresses)
        replaced[replaced] = addresses[found[replaced]] == self.addresses[replaced]
        kept = ~replaced
        merged_addresses = np.concatenate((self.addresses[kept], addresses))
        order = np.argsort(merged_addresses, kind="stable")
        return Patch(
            merged_addresses[order],
            np.concatenate((self.records[kept], records))[order],
            np.concatenate((self.changed_at[kept], at))[order],
        )

    def nbytes(self) -> int:
        return int(self.addresses.nbytes + self.records.nbytes + self.changed_at.nbytes)


class Overlay(Mapping[str, SkuColumns]):
    """A view's skus: its base read with its patch over it, one sku at a time; never changes what it answers."""

    __slots__ = ("__weakref__", "_cache", "base", "dtype", "layout", "patch", "snapshot_id")

    def __init__(self, base: Base, layout: Layout, patch: Patch, dtype: np.dtype[np.void], snapshot_id: int) -> None:
        self.base = base
        self.layout = layout
        self.patch = patch
        self.dtype = dtype
        self.snapshot_id = snapshot_id
        """The snapshot this overlay answers: the base may catch up to it once no older overlay is alive."""
        self._cache: dict[str, SkuColumns] = {}
        with base.lock:
            base.overlays.add(self)

    # -- Mapping

    def get(self, sku: str, default: SkuColumns | None = None) -> SkuColumns | None:  # type: ignore[override]
        found = self._cache.get(sku)
        if found is not None:
            return found
        k = self.layout.code.get(sku)
        if k is None:
            return default
        start, end = int(self.layout.starts[k]), int(self.layout.starts[k + 1])
        # A copy (memcpy of one sku's block), then the patch's entries in it written over:
        # the base may be written after this returns, the copy never.
        block = self.base.records[start:end].copy()
        patch = self.patch
        lo, hi = patch.addresses.searchsorted((start, end)).tolist()
        if hi > lo:
            block[patch.addresses[lo:hi] - start] = patch.records[lo:hi]
        block.flags.writeable = False
        found = SkuColumns(self.layout.held[k], block)
        if len(self._cache) >= _CACHED_SKUS:
            self._cache.clear()
        self._cache[sku] = found
        return found

    def __getitem__(self, sku: str) -> SkuColumns:
        found = self.get(sku)
        if found is None:
            raise KeyError(sku)
        return found

    def __contains__(self, sku: object) -> bool:
        return sku in self.layout.code

    def __iter__(self) -> Iterator[str]:
        return iter(self.layout.sku_names)

    def __len__(self) -> int:
        return len(self.layout.sku_names)

    # By identity: the base's set of live overlays holds them (a Mapping's equality would read every sku).
    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def uncached(self) -> Overlay:
        """The same overlay without the skus this one has read: every read copies from the base again.

        What a test reads through, so that a base written under a view cannot hide behind the
        copies the view made before.
        """
        return Overlay(self.base, self.layout, self.patch, self.dtype, self.snapshot_id)

    # -- building

    def changed(self, snapshot_id: int, addresses: Addresses, records: Records) -> Overlay:
        """The overlay of a newer snapshot: these changes (at located addresses) over this patch."""
        if len(addresses) > 1 and not (addresses[1:] > addresses[:-1]).all():
            order = np.argsort(addresses, kind="stable")
            addresses, records = addresses[order], records[order]
        # Entries the base caught up with are dropped: the patch stays one refresh's changes.
        patch = self.patch.since(self.base.snapshot_id).merged(addresses, records, snapshot_id)
        return Overlay(self.base, self.layout, patch, self.dtype, snapshot_id)

    def rebased(self) -> Overlay:
        """The same positions over a new base of their own (a copy of the whole block) and an empty patch."""
        records = self.base.records.copy()
        records[self.patch.addresses] = self.patch.records
        base = Base(records, self.snapshot_id)
        return Overlay(base, self.layout, Patch.empty(self.dtype), self.dtype, self.snapshot_id)

    def oversized(self, limit: int | None = None) -> bool:
        """Whether the patch has outgrown what a refresh should merge (the base could not catch up).

        `limit`: entries; by default `_PATCH_MIN` or an eighth of the positions, the larger.
        """
        return len(self.patch) > (max(_PATCH_MIN, len(self.base.records) // 8) if limit is None else limit)

    def nbytes(self) -> int:
        """Bytes of the base's records, the patch, the site sets (each once) and the layout's arrays."""
        sites = sum(len(s.names) * 8 + int(s.codes.nbytes) for s in self.layout.sets)
        per_sku = 8 + 8 + 8  # its start, its site set's index, its reference in `held`
        return int(self.base.records.nbytes) + self.patch.nbytes() + sites + per_sku * len(self.layout.sku_names)


def packed(snapshot_id: int, skus: Mapping[str, SkuColumns], dtype: np.dtype[np.void]) -> Overlay:
    """These skus' columns in a new base (one block, in sku order) and layout, with an empty patch."""
    names = sorted(skus)
    columns = [skus[name] for name in names]
    records = (np.concatenate([c.records for c in columns]) if columns else np.empty(0, dtype=raw(dtype))).view(
        raw(dtype)
    )
    layout = Layout.of(names, [c.held for c in columns])
    return Overlay(Base(records, snapshot_id), layout, Patch.empty(dtype), dtype, snapshot_id)


def catch_up(overlay: Overlay) -> int:
    """Write into the base, in place, what every live overlay of it has in its patch; return how many entries.

    The oldest live overlay's patch since the base's snapshot is P(base -> oldest): every
    other live overlay is as new or newer, so its patch covers those addresses, and no
    overlay reads the base there. Afterwards the base holds the oldest's snapshot.
    """
    base = overlay.base
    with base.lock:
        oldest = min(base.overlays, key=lambda o: o.snapshot_id, default=None)
        if oldest is None or oldest.snapshot_id <= base.snapshot_id:
            return 0
        patch = oldest.patch.since(base.snapshot_id)
        base.records[patch.addresses] = patch.records
        base.snapshot_id = oldest.snapshot_id
        return len(patch)


K = TypeVar("K")
V = TypeVar("V")
_ABSENT: Any = object()

_LAYER_MIN = 50_000
"""A layer's changes grow to this many keys, or an eighth of its base's, before they are folded into a new base."""


class Layered(Mapping[K, V]):
    """A mapping shared by views (never changed) and one view's changes over it: keys put and keys dropped.

    The inbound lines (370,743 keys in the 20M bench store) and offers (79,727) of a view:
    copying both dicts each refresh to change the few keys a publish touched was 0.16 s
    of a 0.45 s refresh at 20M (cProfile). Now a refresh copies the changes since the
    base (bounded), and folds them into a new base now and then.
    """

    __slots__ = ("_base", "_dropped", "_put")

    def __init__(self, base: Mapping[K, V], put: dict[K, V] | None = None, dropped: frozenset[K] = frozenset()) -> None:
        self._base = base
        self._put: dict[K, V] = {} if put is None else put
        self._dropped = dropped
        """Keys of the base this view no longer has (never also in `_put`)."""

    @classmethod
    def of(cls, mapping: Mapping[K, V]) -> Layered[K, V]:
        return mapping if isinstance(mapping, Layered) else cls(mapping)

    def get(self, key: K, default: Any = None) -> Any:
        found = self._put.get(key, _ABSENT)
        if found is not _ABSENT:
            return found
        if key in self._dropped:
            return default
        return self._base.get(key, default)

    def __getitem__(self, key: K) -> V:
        found = self.get(key, _ABSENT)
        if found is _ABSENT:
            raise KeyError(key)
        return found  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        return self.get(key, _ABSENT) is not _ABSENT  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[K]:
        put, dropped = self._put, self._dropped
        yield from (key for key in self._base if key not in put and key not in dropped)
        yield from put

    def __len__(self) -> int:
        put, base = self._put, self._base
        return len(base) - len(self._dropped) + sum(1 for key in put if key not in base)

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def updated(self, dropped: Iterable[K], put: Mapping[K, V], *, limit: int | None = None) -> Layered[K, V]:
        """These keys dropped, then these put; folded into a new base once the changes outgrow `limit`
        (by default `_LAYER_MIN` or an eighth of the base, the larger)."""
        base = self._base
        new_put = dict(self._put)
        new_dropped = set(self._dropped)
        for key in dropped:
            new_put.pop(key, None)
            if key in base:
                new_dropped.add(key)
        new_put.update(put)
        new_dropped.difference_update(put)
        if len(new_put) + len(new_dropped) > (max(_LAYER_MIN, len(base) // 8) if limit is None else limit):
            folded = {key: value for key, value in base.items() if key not in new_dropped}
            folded.update(new_put)
            return Layered(folded)
        return Layered(base, new_put, frozenset(new_dropped))
