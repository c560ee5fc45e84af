"""The read model's overlay (a base written in place, a patch per view) against a dict of positions per snapshot."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.snapshot_store.columns import NARROW, SiteTable, SkuColumns, raw
from adapters.snapshot_store.overlay import Layered, Overlay, catch_up, packed

pytestmark = pytest.mark.component

SITES = SiteTable([f"S{n}" for n in range(8)])
Figures = tuple[int, int, int, int, int, bool, int]
State = dict[tuple[str, str], Figures]
"""(sku, site) -> the record's figures: the reference a view is held to."""

figures = st.tuples(
    st.integers(-5, 50), st.integers(0, 60), st.integers(0, 9), st.integers(0, 9), st.integers(0, 9),
    st.booleans(), st.integers(0, 2**40),
)  # fmt: skip


def records(values: list[Figures]) -> np.ndarray:
    return np.array(values, dtype=NARROW).view(raw(NARROW))


@st.composite
def models(draw: st.DrawFn) -> State:
    state: State = {}
    for k in range(draw(st.integers(1, 6))):
        # Some skus share a site set (a national range), some have their own.
        held = draw(st.sampled_from([(0, 1, 2, 3, 4, 5, 6, 7), (0, 2, 5)]) | st.sets(st.integers(0, 7), min_size=1))
        for c in sorted(held):
            state[(f"K{k}", SITES.names[c])] = draw(figures)
    return state


def read(overlay: Overlay) -> State:
    """Everything the overlay answers, sku by sku as a request reads it (from the base, not skus read before)."""
    overlay = overlay.uncached()
    return {
        (sku, site): tuple(row)
        for sku in overlay
        for site, row in zip(overlay[sku].sites, overlay[sku].figures.tolist(), strict=True)
    }


def build(state: State, snapshot_id: int) -> Overlay:
    skus: dict[str, SkuColumns] = {}
    for sku in sorted({sku for sku, _ in state}):
        sites = sorted(site for s, site in state if s == sku)
        codes = np.array([SITES.code[site] for site in sites], dtype=np.int32)
        skus[sku] = SkuColumns(SITES.site_set(codes), records([state[(sku, site)] for site in sites]))
    return packed(snapshot_id, skus, NARROW)


def apply(overlay: Overlay, snapshot_id: int, changes: State) -> Overlay:
    """The changes located in the layout and laid over the patch, as a refresh does."""
    keys = sorted(changes, key=lambda key: (overlay.layout.code[key[0]], SITES.code[key[1]]))
    skus = np.array([overlay.layout.code[sku] for sku, _ in keys], dtype=np.int64)
    sites = np.array([SITES.code[site] for _, site in keys], dtype=np.int32)
    addresses = overlay.layout.locate(skus, sites)
    assert addresses is not None
    return overlay.changed(snapshot_id, addresses, records([changes[key] for key in keys]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models(), st.data())
def test_every_overlay_held_reads_its_own_snapshot_whatever_the_base_catches_up_with(
    first: State, data: st.DataObject
) -> None:
    """Views are made, held, let go, the base caught up in place and rebased, in any order: each held view
    reads exactly the positions of its snapshot, and the base never passes the oldest view still held."""
    newest = build(first, 1)
    held: list[tuple[Overlay, State]] = [(newest, dict(first))]
    state = dict(first)
    keys = sorted(first)
    for snapshot_id in range(2, 2 + data.draw(st.integers(1, 12))):
        step = data.draw(st.sampled_from(["change", "change", "change", "let go", "catch up", "rebase"]))
        if step == "change":
            changed = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=len(keys), unique=True))
            changes = {key: data.draw(figures) for key in changed}
            state |= changes
            newest = apply(newest, snapshot_id, changes)
            held.append((newest, dict(state)))
        elif step == "let go" and len(held) > 1:
            # Any view but the newest (the model keeps that one); freed at once by reference counting.
            del held[data.draw(st.integers(0, len(held) - 2))]
        elif step == "catch up":
            catch_up(newest)
            # Never past the oldest view still reading this base (a rebased one reads its own).
            assert newest.base.snapshot_id <= min(o.snapshot_id for o, _ in held if o.base is newest.base)
        elif step == "rebase":
            newest = newest.rebased()
            held.append((newest, dict(state)))
        for overlay, expected in held:
            assert read(overlay) == expected


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models(), st.data())
def test_once_older_views_are_let_go_the_patch_is_the_last_refresh_s_changes_alone(
    first: State, data: st.DataObject
) -> None:
    """The base catches up with the newest view once it is the only one alive: a refresh's cost is its changes."""
    newest = build(first, 1)
    keys = sorted(first)
    state = dict(first)
    for snapshot_id in range(2, 2 + data.draw(st.integers(1, 8))):
        changed = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=len(keys), unique=True))
        changes = {key: data.draw(figures) for key in changed}
        state |= changes
        gc.collect()  # nothing but `newest` holds an overlay now
        written = catch_up(newest)
        assert newest.base.snapshot_id == newest.snapshot_id
        assert written <= len(newest.patch)
        newest = apply(newest, snapshot_id, changes)
        assert len(newest.patch) == len(changes)
        assert read(newest) == state


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.integers(0, 20), st.integers()),
    st.lists(st.tuples(st.sets(st.integers(0, 25)), st.dictionaries(st.integers(0, 25), st.integers()))),
    st.integers(0, 8),
)
def test_a_layered_mapping_is_its_dict_after_every_update_and_the_ones_before_stay(
    first: dict[int, int], updates: list[tuple[set[int], dict[int, int]]], limit: int
) -> None:
    """Inbound lines and offers layered over a shared base (folded anew past `limit`) are the dict they stand for."""
    layers = [(Layered.of(first), dict(first))]
    for dropped, put in updates:
        expected = {k: v for k, v in layers[-1][1].items() if k not in dropped} | put
        layers.append((layers[-1][0].updated(dropped, put, limit=limit), expected))
        for layer, wanted in layers:
            assert dict(layer.items()) == wanted
            assert len(layer) == len(wanted)
            assert all(layer.get(k) == wanted.get(k) and (k in layer) == (k in wanted) for k in range(-1, 27))
