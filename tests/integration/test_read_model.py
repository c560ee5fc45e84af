"""The serving read model against the real snapshot store: each view holds exactly one snapshot, and stays so."""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.snapshot_store import SnapshotReader, SnapshotWriter, read_model
from adapters.snapshot_store.layout import LAKE
from adapters.snapshot_store.overlay import Overlay
from adapters.snapshot_store.read_model import ReadModel, ReadView, Refreshed
from adapters.snapshot_store.replica import snapshot_changes
from adapters.snapshot_store.serving import ServingStore
from ledger.answer import MAX_LIMIT, Stock
from ledger.errors import SnapshotError
from ledger.network import appointment_sku
from ledger.outputs import InboundLine, OfferTerms, PositionChange
from ledger.promise import promise
from omni_ledger import metrics
from tests.integration.test_snapshot_store import T0, change
from tests.unit.ledger.test_promise import HashedSlots, scenarios

pytestmark = pytest.mark.integration

FIGURES = ("site_id", "sku", "on_hand", "reserved", "staged", "inbound", "atp", "negative")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Path, SnapshotWriter, SnapshotReader]]:
    path = tmp_path / "snapshots"
    writer = SnapshotWriter.open(path)
    reader = SnapshotReader.open(path)
    yield path, writer, reader
    reader.close()
    writer.close()


def view_rows(view: ReadView) -> list[dict[str, object]]:
    """Every product position of the view, in the reader's order (sku, site)."""
    rows = [row for sku in view.skus for row in view.sku_rows(sku)]
    return sorted(({k: row[k] for k in FIGURES} for row in rows), key=lambda r: (str(r["site_id"]), str(r["sku"])))


def store_rows(reader: SnapshotReader, snapshot_id: int) -> list[dict[str, object]]:
    rows = [{k: row[k] for k in FIGURES} for row in reader.positions(as_of=snapshot_id)]
    products = [row for row in rows if not str(row["sku"]).startswith("appt:")]
    return sorted(products, key=lambda r: (str(r["site_id"]), str(r["sku"])))


def bases_count(path: Path, snapshot_id: int) -> int:
    """The rows of the store's bases at `snapshot_id`, counted (what a follower may carry instead)."""
    reader = SnapshotReader.open(path)
    try:
        _, rows = reader.sql(reader.position_count_parts(snapshot_id)[0])
    finally:
        reader.close()
    return int(rows[0][0])


def atp_of(view: ReadView, sku: str) -> tuple[tuple[str, ...], list[int]]:
    sites, atp = view.sku_atp(sku)
    # The column the bounded promise walks: the same sites, the same ATP.
    column_sites, column = view.sku_atp_column(sku)
    assert (tuple(column_sites), column.tolist()) == (tuple(sites), list(atp))
    return tuple(sites), list(atp)


def test_a_following_model_sees_every_publish_and_reads_an_idle_catalog_about_once_a_second(
    tmp_path: Path,
) -> None:
    """The follower skips a poll whose catalog files stat unchanged: no publish is missed, idle costs ~nothing."""
    path = tmp_path / "snapshots"
    with SnapshotWriter.open(path) as writer:
        writer.publish([change("S1", "A", 1, on_hand=5)], [], events_applied=1, now=T0)
        with ReadModel.open(path) as model:
            model.follow(every=0.01)
            for n in range(2, 12):
                sid = writer.publish([change("S1", "A", n, on_hand=n)], [], events_applied=n, now=T0 + n)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and (model.view is None or model.view.snapshot_id != sid):
                    time.sleep(0.005)
                view = model.view
                assert view is not None
                assert view.snapshot_id == sid, f"publish {n} not seen within 10 s"
                assert atp_of(view, "A") == (("S1",), [n])
            before = model.follower_refreshes
            time.sleep(2.0)  # ~200 polls of an idle catalog
            idle = model.follower_refreshes - before
            assert 1 <= idle <= 4, idle  # the once-a-second reading, not a refresh a poll


def test_a_refresh_reads_the_newest_snapshot_row_only_once_duck_lake_committed_again(
    store: tuple[Path, SnapshotWriter, SnapshotReader],
) -> None:
    """No commit since the view was found current: no ~20 ms read of snapshot_info; each publish still seen."""
    path, writer, _ = store
    writer.publish([change("S1", "A", 1, on_hand=5)], [], events_applied=1, now=T0)
    with ReadModel.open(path) as model:
        reads = model.snapshot_info_reads
        for _ in range(5):
            assert model.refresh() == 0
        assert model.snapshot_info_reads == reads
        for n in range(2, 5):
            sid = writer.publish([change("S1", "A", n, on_hand=n)], [], events_applied=n, now=T0 + n)
            assert model.refresh() == 1
            view = model.view
            assert view is not None
            assert view.snapshot_id == sid
            assert atp_of(view, "A") == (("S1",), [n])
            assert model.refresh() == 0
        assert model.snapshot_info_reads == reads + 3
        assert_whole(path, model)


def test_a_model_opened_before_the_store_exists_loads_it_once_it_does(tmp_path: Path) -> None:
    path = tmp_path / "snapshots"
    with ReadModel.open(path) as model:
        assert model.view is None
        with SnapshotWriter.open(path) as writer:
            sid = writer.publish([change("S1", "A", 1, on_hand=5)], [], events_applied=1, now=T0)
        assert model.refresh() == 1
        view = model.view
        assert view is not None
        assert view.snapshot_id == sid
        assert atp_of(view, "A") == (("S1",), [5])


def test_each_refresh_applies_the_changes_and_matches_the_store_at_that_snapshot(
    store: tuple[Path, SnapshotWriter, SnapshotReader],
) -> None:
    path, writer, reader = store
    first = writer.publish(
        [change(f"S{i % 3}", f"K{i:03d}", 1, on_hand=i) for i in range(60)], [], events_applied=60, now=T0
    )
    assert first is not None
    with ReadModel.open(path) as model:
        before = model.view
        assert before is not None
        assert view_rows(before) == store_rows(reader, first)
        writer.publish(
            [change("S0", "K000", 2, on_hand=99), change("S9", "NEW", 1, on_hand=7), change("S7", "K003", 1)],
            [],
            events_applied=63,
            now=T0 + 1,
        )
        last = writer.publish([change("S0", "K000", 3, on_hand=42)], [], events_applied=64, now=T0 + 2)
        assert last is not None
        # Two snapshots at once; K000 changed in both: the later one wins.
        assert model.refresh() == 3
        after = model.view
        assert after is not None
        assert after.snapshot_id == last
        assert view_rows(after) == store_rows(reader, last)
        assert after.positions == len(reader.positions(as_of=last))
        # The old view is untouched: a request still holding it answers from its snapshot whole.
        assert before.snapshot_id == first
        assert view_rows(before) == store_rows(reader, first)
        stock = before.stock_at("S0", "K000")
        assert stock is not None
        assert stock.atp == 0


def test_inbound_lines_offers_and_appointment_slots_follow_their_positions(
    store: tuple[Path, SnapshotWriter, SnapshotReader],
) -> None:
    path, writer, _ = store
    due = (InboundLine("PO-1", 4, T0 + 3_600_000), InboundLine("PO-2", 2, T0 + 7_200_000))
    offer = OfferTerms(qty=5, price=449.0, lead_time_days=3, updated_at=T0)
    slot = T0 + 86_400_000
    writer.publish(
        [
            change("S1", "A", 1, on_hand=0, inbound=due),
            change("M1", "A", 1, on_hand=5, offer=offer),
            change("S1", appointment_sku(slot), 1, on_hand=2),
        ],
        [],
        events_applied=3,
        now=T0,
    )
    with ReadModel.open(path) as model:
        view = model.view
        assert view is not None
        assert view.stock_at("S1", "A") == Stock("S1", "A", 0, due, None)
        assert view.stock_at("M1", "A") == Stock("M1", "A", 5, (), offer)
        assert view.free_slot_capacity("S1", slot) == 2
        assert atp_of(view, "A") == (("M1", "S1"), [5, 0])
        # The lines arrive and the slot fills: the next view has neither line, and no capacity.
        writer.publish(
            [change("S1", "A", 2, on_hand=6), change("S1", appointment_sku(slot), 2, on_hand=0)],
            [],
            events_applied=5,
            now=T0 + 1,
        )
        model.refresh()
        again = model.view
        assert again is not None
        assert again.stock_at("S1", "A") == Stock("S1", "A", 6, (), None)
        assert again.free_slot_capacity("S1", slot) == 0
        assert [line["ref"] for line in view.sku_rows("A")[1]["inbound_lines"]] == ["PO-1", "PO-2"]
        assert again.sku_rows("A")[1]["inbound_lines"] == []


def test_a_position_deleted_from_the_store_leaves_the_model(
    store: tuple[Path, SnapshotWriter, SnapshotReader],
) -> None:
    path, writer, reader = store
    writer.publish([change("S1", "A", 1, on_hand=5), change("S1", "B", 1, on_hand=6)], [], events_applied=2, now=T0)
    with ReadModel.open(path) as model:
        # The flow never deletes a position; an operator's repair may (SQL on the lake).
        # In layout 2 a position lives in the recent and the base table behind the view.
        writer._con.execute(
            "BEGIN; DELETE FROM lake.positions_recent WHERE sku = 'A'; "
            "DELETE FROM lake.positions_base WHERE sku = 'A'; COMMIT"
        )
        last = writer.publish([change("S1", "B", 2, on_hand=1)], [], events_applied=3, now=T0 + 1)
        assert last is not None
        model.refresh()
        view = model.view
        assert view is not None
        assert atp_of(view, "A") == ((), [])
        assert view_rows(view) == store_rows(reader, last)


@pytest.mark.parametrize("table", ["positions_base", "positions_recent"])
def test_a_position_deleted_while_the_bases_count_is_kept_still_leaves_the_model(
    tmp_path: Path, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bases' count (a scan of 20M rows once they carry delete files) is reused while no snapshot
    changed them, and carried across a writer's fold by the rows its commit says it added and across
    maintenance; a delete from a base or from the recent rows counts again."""
    path = tmp_path / "snapshots"
    # What each refresh asked for the bases: their count (a query) or the number it carried.
    asked: list[str] = []
    side_feed = read_model._side_feed

    def spied(*args, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(args[5][0])
        return side_feed(*args, **kwargs)

    monkeypatch.setattr(read_model, "_side_feed", spied)
    with SnapshotWriter.open(path, recent_limit=None) as writer:
        writer.publish([change("S1", sku, 1, on_hand=5) for sku in "ABCD"], [], events_applied=4, now=T0)
        writer.compact_recent()  # A-D in the base
        writer.publish([change("S1", "E", 1, on_hand=5)], [], events_applied=5, now=T0 + 1)  # E in the recent rows
        with ReadModel.open(path) as model:
            for step in range(2, 4):
                sid = writer.publish([change("S1", "B", step, on_hand=step)], [], events_applied=5, now=T0 + step)
                model.refresh()
                assert model._counted is not None
                assert model._counted[0] == sid  # counted (step 2), then kept (step 3)
            writer.compact_recent()  # a fold: E enters the base, which its commit says (+1 row)
            sid = writer.publish([change("S1", "B", 4, on_hand=1)], [], events_applied=6, now=T0 + 4)
            model.refresh()
            assert model._counted is not None
            assert model._counted[:2] == (sid, bases_count(path, sid))
            assert model._counted[1] == 5
            assert asked[-1] == "SELECT 5"  # carried, not counted
            assert_whole(path, model)
            # Maintenance (the base's files merged, its deletes rewritten): the same rows, carried too.
            writer.maintain(keep_snapshots_for=timedelta(days=7))
            before, sid = sid, writer.publish([change("S1", "B", 5, on_hand=2)], [], events_applied=7, now=T0 + 5)
            assert sid is not None
            with SnapshotReader.open(path) as reader:
                cursor = reader.cursor()
                made = snapshot_changes(cursor, before, sid)
                cursor.close()
            bases = model._counted[2]
            listed = [(m.moved_rows_only, {v for vs in m.changes.values() for v in vs}) for m in made.values()]
            assert any(moved and bases & tables for moved, tables in listed)  # a base's files were moved
            model.refresh()
            assert model._counted is not None
            assert model._counted[:2] == (sid, 5)
            assert asked[-1] == "SELECT 5"
            assert_whole(path, model)
            # F only in the recent rows (every key before it was folded into the base).
            sid = writer.publish(
                [change("S1", "C", 2, on_hand=1), change("S1", "F", 1, on_hand=5)], [], events_applied=8, now=T0 + 6
            )
            model.refresh()
            assert model._counted is not None
            assert model._counted[0] == sid
            # An operator's repair in one table only, then a publish that does not touch that key.
            gone = "F" if table == "positions_recent" else "A"
            writer._con.execute(f"DELETE FROM lake.{table} WHERE sku = '{gone}'")
            writer.publish([change("S1", "C", 3, on_hand=2)], [], events_applied=9, now=T0 + 7)
            model.refresh()
            view = model.view
            assert view is not None
            assert atp_of(view, gone) == ((), [])
            assert_whole(path, model)


# -- the promise over the read model -------------------------------------------------------


@dataclass(frozen=True)
class Slotted:
    """The read model's positions with the property's slot capacities."""

    view: ReadView
    slots: HashedSlots

    @property
    def snapshot_id(self) -> int:
        return self.view.snapshot_id

    def sku_atp(self, sku: str) -> tuple[Sequence[str], Sequence[int]]:
        return self.view.sku_atp(sku)

    def sku_atp_column(self, sku: str) -> tuple[Sequence[str], Any]:
        # The read model's numpy column, as the bounded promise reads it in the service.
        return self.view.sku_atp_column(sku)

    def stock_at(self, site_id: str, sku: str) -> Stock | None:
        return self.view.stock_at(site_id, sku)

    def free_slot_capacity(self, store_id: str, slot_start: int) -> int | None:
        return self.slots.free_slot_capacity(store_id, slot_start)


def read_view(rows: Sequence[Stock], snapshot_id: int, first: int) -> ReadView:
    """The rows as a read model builds them: a first load of some, then the rest (and the first again) as changes."""

    def changes(part: Sequence[Stock]) -> list[tuple[str, tuple[str, int, int, int, int, int, bool, int]]]:
        return [(r.sku, (r.site_id, r.atp, r.atp, 0, 0, 0, False, 0)) for r in part]

    def lines(part: Sequence[Stock]) -> dict[tuple[str, str], tuple[tuple[str, int, int, bool], ...]]:
        return {(r.site_id, r.sku): tuple((x.ref, x.qty, x.eta, False) for x in r.free_inbound) for r in part}

    def offers(part: Sequence[Stock]) -> dict[tuple[str, str], OfferTerms]:
        return {(r.site_id, r.sku): r.offer for r in part if r.offer is not None}

    head = rows[:first]
    # The head first with every ATP off by 3, then corrected: the merge path, not only the build path.
    wrong = [Stock(r.site_id, r.sku, r.atp + 3, r.free_inbound, r.offer) for r in head]
    view = ReadView(snapshot_id - 1).changed(snapshot_id - 1, changes(wrong), lines(wrong), offers(wrong))
    return view.changed(snapshot_id, changes(rows), lines(rows), offers(rows))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.data())
def test_a_promise_over_the_read_model_is_the_promise_over_its_snapshot(scenario, data) -> None:  # type: ignore[no-untyped-def]
    network, slots, request = scenario
    model = Slotted(read_view(slots.rows, slots.snapshot_id, data.draw(st.integers(0, len(slots.rows)))), slots)
    limit = data.draw(st.integers(1, MAX_LIMIT))
    atp = {(row.site_id, row.sku): row.atp for row in slots.rows}
    wanted = dict(request.items)
    for explain in (True, False):
        answer = promise(network, model, request, limit=limit, explain=explain)
        assert answer == promise(network, slots, request, limit=limit, explain=explain)
        assert answer.snapshot_id == slots.snapshot_id
        for option in [*answer.options, *(leg for plan in answer.together for leg in plan.legs)]:
            # Never more than the ATP of the snapshot the answer names.
            assert option.qty == wanted[option.sku] <= atp[(option.source_id, option.sku)]


# -- a refresh is a whole load, change by change --------------------------------------------

_SITES = ("S0", "S1", "S2", "S3", "M1", "Z9")  # Z9 sorts last; S10 and A0 are sites new to the model in between
_SKUS = ("A", "B", "C", "D", appointment_sku(T0 + 86_400_000), appointment_sku(T0 + 2 * 86_400_000))


def view_state(view: ReadView) -> dict[str, object]:
    """Everything a view answers from, as plain values (site sets and records included).

    An overlay is read afresh (`uncached`): the skus a view read before are copies, and would
    hide a base written under it."""
    skus = view.skus.uncached() if isinstance(view.skus, Overlay) else view.skus
    return {
        "snapshot_id": view.snapshot_id,
        "positions": view.positions,
        "skus": {sku: (c.sites, c.figures.tolist()) for sku, c in sorted(skus.items())},
        "slots": dict(sorted(view.slots.items())),
        "inbound": dict(sorted(view.inbound.items())),
        "offers": dict(sorted(view.offers.items())),
    }


@st.composite
def position_changes(draw: st.DrawFn, version: int) -> list[PositionChange]:
    sites = st.sampled_from((*_SITES, "S10", "A0"))
    # "E" and "0" are skus new to the model (one sorting first): read by name, then numbered again;
    # one holding the numbering's separator leaves the model reading by name.
    skus = st.sampled_from((*_SKUS, "E", "0", "X\x1fY"))
    keys = draw(st.lists(st.tuples(sites, skus), min_size=1, max_size=8, unique=True))
    found = []
    for site, sku in keys:
        # Now and then a count beyond int32: the model's records widen.
        on_hand = draw(st.integers(-2, 30) | st.just(3_000_000_000))
        lines = tuple(
            InboundLine(f"PO-{k}", draw(st.integers(1, 5)), T0 + 3_600_000 * (k + 1))
            for k in range(draw(st.integers(0, 2)))
        )
        offer = draw(st.none() | st.builds(OfferTerms, st.integers(0, 9), st.just(9.5), st.none(), st.just(T0)))
        found.append(change(site, sku, version, on_hand=on_hand, inbound=lines, offer=offer))
    return found


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_model_refreshed_after_random_publishes_and_compactions_equals_a_whole_load_of_each_snapshot(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Every refresh, by number or by name (a site or sku new to the model), over one publish or several,
    with compactions between (no change to a follower), leaves the view a whole load of its snapshot makes."""
    path = tmp_path_factory.mktemp("refresh") / "snapshots"
    with SnapshotWriter.open(path, recent_limit=None) as writer:
        first = [change(site, sku, 1, on_hand=i) for i, (site, sku) in enumerate(zip(_SITES, _SKUS * 2, strict=False))]
        writer.publish(first, [], events_applied=len(first), now=T0)
        with ReadModel.open(path, process=data.draw(st.booleans())) as model:
            for step in range(2, 2 + data.draw(st.integers(1, 6))):
                before = model.view
                assert before is not None
                kept = view_state(before)
                writer.publish(data.draw(position_changes(step)), [], events_applied=step, now=T0 + step)
                if data.draw(st.booleans()):
                    writer.compact_recent()
                if data.draw(st.booleans()):  # else two publishes (or more) in one refresh
                    model.refresh()
                    # Copy on write: the view a request may still hold is what it was.
                    assert view_state(before) == kept
                    assert_whole(path, model)
            model.refresh()
            assert_whole(path, model)


# One step of the side-feed property: a publish, a compaction of the recent positions, the
# writer's maintenance (files merged and rewritten, snapshots of moved rows only), or an edit
# of the lines or offers alone, with no position changed (another writer of those tables).
_EDITS = (
    "UPDATE {lake}.offers SET qty = qty + 1 WHERE seller_id = 'M1'",
    "DELETE FROM {lake}.offers WHERE sku = 'B'",
    "UPDATE {lake}.inbound SET promised = NOT coalesce(promised, false) WHERE ref = 'PO-0'",
    "DELETE FROM {lake}.inbound WHERE site_id = 'S1'",
    "INSERT INTO {lake}.inbound (site_id, sku, ref, qty, eta, promised) "
    "SELECT 'S2', 'C', 'PO-9', 4, to_timestamp(3600), false",
)
_side_steps = st.lists(
    st.sampled_from(("publish", "publish", "publish", "compact", "maintain", "edit", "refresh")),
    min_size=2,
    max_size=9,
)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_lines_and_offers_follow_their_own_changes_through_maintenance_and_edits_without_a_position(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """A refresh re-reads the lines and offers whose rows changed (their tables' change feeds), not
    those of the changed positions: after any publishes, compactions, maintenances (rows moved, no
    change) and edits of lines or offers alone, each refresh leaves the view a whole load makes."""
    path = tmp_path_factory.mktemp("side") / "snapshots"
    with SnapshotWriter.open(path, recent_limit=None) as writer:
        first = [
            change(site, sku, 1, on_hand=i, inbound=(InboundLine("PO-0", 2, T0 + 3_600_000),) if i % 2 else ())
            for i, (site, sku) in enumerate(zip(_SITES, _SKUS * 2, strict=False))
        ]
        first.append(change("M1", "B", 1, on_hand=4, offer=OfferTerms(3, 9.5, None, T0)))
        writer.publish(first, [], events_applied=len(first), now=T0)
        with ReadModel.open(path, process=data.draw(st.booleans())) as model:
            version = 1
            for step in data.draw(_side_steps):
                if step == "publish":
                    version += 1
                    writer.publish(data.draw(position_changes(version)), [], events_applied=version, now=T0 + version)
                elif step == "compact":
                    writer.compact_recent()
                elif step == "maintain":
                    writer.maintain(keep_snapshots_for=timedelta(days=7))
                elif step == "edit":
                    # Committed as a snapshot of its own, with no snapshot_info row: the next
                    # publish's refresh reads it in its range.
                    writer._con.execute(data.draw(st.sampled_from(_EDITS)).format(lake=LAKE))
                else:
                    model.refresh()
                    assert_whole(path, model)
            version += 1
            writer.publish([change("S0", "A", version, on_hand=1)], [], events_applied=version, now=T0 + version)
            model.refresh()
            assert_whole(path, model)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_with_two_writers_lines_and_offers_follow_each_writers_change_feed(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Two writers, each with its own lines and offers tables: a refresh reads both tables' feeds (a
    site's keys are one writer's), and leaves the view a whole load makes."""
    path = tmp_path_factory.mktemp("two") / "snapshots"
    writers = [SnapshotWriter.open(path, writers=2, writer=w, recent_limit=None) for w in range(2)]
    try:
        first = [change(site, sku, 1, on_hand=i) for i, (site, sku) in enumerate(zip(_SITES, _SKUS * 2, strict=False))]
        for w, writer in enumerate(writers):
            mine = [c for c in first if _SITES.index(c.site_id) % 2 == w]
            writer.publish(mine, [], events_applied=len(mine), now=T0)
        with ReadModel.open(path) as model:
            for version in range(2, 2 + data.draw(st.integers(1, 5))):
                w = data.draw(st.integers(0, 1))
                changes = [
                    c
                    for c in data.draw(position_changes(version))
                    if c.site_id in _SITES and _SITES.index(c.site_id) % 2 == w
                ]
                if changes:
                    writers[w].publish(changes, [], events_applied=version, now=T0 + version)
                if data.draw(st.booleans()):
                    model.refresh()
                    assert_whole(path, model)
            model.refresh()
            assert_whole(path, model)
    finally:
        for writer in writers:
            writer.close()


def test_a_cursor_process_that_ended_fails_one_refresh_and_the_next_starts_another(tmp_path: Path) -> None:
    """The refresh's statements in a child process (`process=True`): if it dies, that refresh fails
    (the view stays the last one), and the next opens a new child and catches up."""
    path = tmp_path / "snapshots"
    with SnapshotWriter.open(path) as writer:
        writer.publish([change("S0", "A", 1), change("S1", "A", 1)], [], events_applied=2, now=T0)
        with ReadModel.open(path, process=True) as model:
            before = model.view
            assert before is not None
            child = model._feed._process  # type: ignore[attr-defined]
            child.kill()
            child.join()
            writer.publish([change("S0", "A", 2, on_hand=3)], [], events_applied=3, now=T0 + 2)
            with pytest.raises(SnapshotError, match="cursor process"):
                model.refresh()
            assert model.view is before
            model.refresh()
            assert_whole(path, model)


def test_a_cursor_process_that_cannot_start_leaves_the_refreshes_in_process_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Fault injection: the child cannot be started (what `fork` says without processes or memory
    left). The model still loads and follows the store, in this process, and says so once."""

    class CannotStart:
        def __init__(self, directory: Path) -> None:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(read_model, "RemoteCursor", CannotStart)
    path = tmp_path / "snapshots"
    with SnapshotWriter.open(path) as writer:
        writer.publish([change("S0", "A", 1), change("S1", "A", 1)], [], events_applied=2, now=T0)
        with caplog.at_level("WARNING", logger="omni_ledger.read_model"), ReadModel.open(path, process=True) as model:
            assert model.cursor_process_resident is None
            for n in range(2, 4):
                writer.publish([change("S0", "A", n, on_hand=n)], [], events_applied=n + 1, now=T0 + n)
                assert model.refresh() == 1
            assert_whole(path, model)
    warnings = [r.getMessage() for r in caplog.records if r.name == "omni_ledger.read_model"]
    assert len(warnings) == 1, warnings
    assert "could not start" in warnings[0]
    assert "serve.refresh_process = false" in warnings[0]


def test_the_cursor_processs_memory_is_reported_apart_from_the_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `process=True` the child's DuckDB holds memory the server's own RSS does not show: the
    model reports the child's resident bytes (its /proc entry, not ours) and the API's metrics export
    them; without a child, nothing is reported."""
    serving = metrics.serving._SERVING
    monkeypatch.setattr(serving, "store", None)
    monkeypatch.setattr(serving, "model", None)
    name = "omni_ledger_read_model_cursor_process_resident_bytes"
    path = tmp_path / "snapshots"
    with SnapshotWriter.open(path) as writer:
        writer.publish([change("S0", "A", 1), change("S1", "A", 1)], [], events_applied=2, now=T0)
        with ReadModel.open(path) as alone:
            assert alone.cursor_process_resident is None
        with ReadModel.open(path, process=True) as model:
            child = model._feed._process  # type: ignore[attr-defined]
            with open(f"/proc/{child.pid}/statm", "rb") as statm:
                pages = int(statm.read().split()[1])
            resident = model.cursor_process_resident
            assert resident is not None
            # The child's pages, give or take what it touched since: a DuckDB instance, tens of MB.
            assert abs(resident - pages * os.sysconf("SC_PAGE_SIZE")) < 16 * 2**20
            assert resident > 20 * 2**20
            store = ServingStore(path)
            try:
                metrics.watch_serving_store(store, model)
                assert (metrics.REGISTRY.get_sample_value(name) or 0) > 20 * 2**20
                child.kill()
                child.join()
                assert model.cursor_process_resident == 0  # gone: nothing resident to count
            finally:
                store.close()


def test_each_refresh_that_swaps_a_view_is_recorded_with_its_publish_stamp_and_told_to_its_observer(
    tmp_path: Path,
) -> None:
    """What the API's metrics and /health report: one record per swap, whole loads told apart, a
    refresh that finds nothing new records nothing, and publish -> visible from the flow's stamp."""
    path = tmp_path / "snapshots"
    told: list[Refreshed] = []
    with SnapshotWriter.open(path) as writer:
        first = writer.publish([change("S1", "A", 1, on_hand=5)], [], events_applied=1, now=T0)
        with ReadModel.open(path) as model:
            model.on_refresh = told.append
            second = writer.publish([change("S1", "A", 2, on_hand=6)], [], events_applied=2, now=T0 + 1_000)
            before = time.time_ns() // 1_000_000
            model.refresh()
            model.refresh()  # nothing new: no swap, no record
            after = time.time_ns() // 1_000_000
    assert [(r.snapshot_id, r.whole) for r in model.refreshes] == [(first, True), (second, False)]
    assert told == [model.refreshes[1]]  # the observer was set after the first load
    done = model.refreshes[1]
    assert done.published_at == T0 + 1_000
    assert before <= done.swapped_at <= after
    assert done.visible_after_s == pytest.approx((done.swapped_at - (T0 + 1_000)) / 1000)
    assert 0 < done.cpu_s <= done.wall_s  # the refreshing thread's own CPU, within its wall time


def test_a_follower_refreshes_with_its_switch_interval_and_puts_the_processs_back_after(tmp_path: Path) -> None:
    """The shorter switch interval holds only while a refresh runs (it is process-wide)."""
    path = tmp_path / "snapshots"
    during: list[float] = []
    usual = sys.getswitchinterval()
    with SnapshotWriter.open(path) as writer:
        writer.publish([change("S1", "A", 1, on_hand=5)], [], events_applied=1, now=T0)
        with ReadModel.open(path) as model:
            model.on_refresh = lambda _: during.append(sys.getswitchinterval())
            model.follow(every=0.01, switch_interval=usual / 10)
            sid = writer.publish([change("S1", "A", 2, on_hand=6)], [], events_applied=2, now=T0 + 1)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (model.view is None or model.view.snapshot_id != sid):
                time.sleep(0.005)
            assert model.view is not None
            assert model.view.snapshot_id == sid
    assert during == [pytest.approx(usual / 10)]
    assert sys.getswitchinterval() == usual


def test_the_apis_metrics_say_how_far_the_read_model_is_behind_the_snapshot_it_sees_and_time_its_refreshes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that has not caught up with the store watch's newest snapshot is behind by their stamps' gap
    (an SRE's alert on a stuck follower); once refreshed, 0; each refresh lands in the histograms."""
    serving = metrics.serving._SERVING
    monkeypatch.setattr(serving, "store", None)
    monkeypatch.setattr(serving, "model", None)
    registry = metrics.REGISTRY
    path = tmp_path / "snapshots"
    with SnapshotWriter.open(path) as writer:
        writer.publish([change("S1", "A", 1, on_hand=5)], [], events_applied=1, now=T0)
        with ReadModel.open(path) as model:
            store = ServingStore(path)
            try:
                metrics.watch_serving_store(store, model)
                assert registry.get_sample_value("omni_ledger_read_model_behind_seconds") == 0
                refreshes = (
                    registry.get_sample_value(
                        "omni_ledger_read_model_refresh_duration_seconds_count", {"load": "changes"}
                    )
                    or 0.0
                )
                visible = registry.get_sample_value("omni_ledger_read_model_visible_delay_seconds_count") or 0.0
                cpu = registry.get_sample_value("omni_ledger_read_model_refresh_cpu_seconds_total") or 0.0
                writer.publish([change("S1", "A", 2, on_hand=6)], [], events_applied=2, now=T0 + 7_000)
                store.refresh()  # the watch sees it; the model has not refreshed yet
                assert registry.get_sample_value("omni_ledger_read_model_behind_seconds") == 7.0
                model.refresh()
                assert registry.get_sample_value("omni_ledger_read_model_behind_seconds") == 0
                assert (
                    registry.get_sample_value(
                        "omni_ledger_read_model_refresh_duration_seconds_count", {"load": "changes"}
                    )
                    == refreshes + 1
                )
                assert registry.get_sample_value("omni_ledger_read_model_visible_delay_seconds_count") == visible + 1
                assert registry.get_sample_value("omni_ledger_read_model_refresh_cpu_seconds_total") == pytest.approx(
                    cpu + model.refreshes[-1].cpu_s
                )
            finally:
                store.close()


def assert_whole(path: Path, model: ReadModel) -> None:
    refreshed = model.view
    assert refreshed is not None
    with ReadModel.open(path) as whole:
        assert whole.view is not None
        assert view_state(refreshed) == view_state(whole.view)
        assert refreshed.dtype == whole.view.dtype


# -- the overlay: a base written in place, a patch per view ----------------------------------


@st.composite
def existing_changes(draw: st.DrawFn, keys: Sequence[tuple[str, str]], version: int) -> list[PositionChange]:
    """Changes of positions the model holds (the refresh patches them), now and then one new to it."""
    found = []
    for site, sku in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=len(keys), unique=True)):
        lines = tuple(
            InboundLine(f"PO-{k}", draw(st.integers(1, 5)), T0 + 3_600_000 * (k + 1))
            for k in range(draw(st.integers(0, 1)))
        )
        found.append(change(site, sku, version, on_hand=draw(st.integers(-2, 30)), inbound=lines))
    if draw(st.integers(0, 5)) == 0:  # a site new to a sku: a new layout and base
        found.append(change(draw(st.sampled_from(_SITES)), "N", version, on_hand=draw(st.integers(0, 9))))
    return found


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_after_many_refreshes_catch_ups_and_rebases_the_model_equals_a_whole_load_and_held_views_stay(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Refreshes that patch the view, with views held by 'requests' and let go at random (the base catches up
    only past what no held view reads) and a patch limit small enough to rebase now and then: after each,
    the view is a whole load of its snapshot, and every view still held is what it was."""
    path = tmp_path_factory.mktemp("overlay") / "snapshots"
    keys = [(site, sku) for site in _SITES for sku in ("A", "B", "C", "D")]
    with SnapshotWriter.open(path) as writer:
        writer.publish([change(site, sku, 1, on_hand=3) for site, sku in keys], [], events_applied=1, now=T0)
        with ReadModel.open(path, patch_limit=data.draw(st.sampled_from([2, 6, None]))) as model:
            held: list[tuple[ReadView, dict[str, object]]] = []
            patched = 0
            for step in range(2, 2 + data.draw(st.integers(4, 12))):
                before = model.view
                assert before is not None
                if data.draw(st.booleans()):
                    held.append((before, view_state(before)))
                if held and data.draw(st.booleans()):
                    del held[data.draw(st.integers(0, len(held) - 1))]
                writer.publish(data.draw(existing_changes(keys, step)), [], events_applied=step, now=T0 + step)
                model.refresh()
                after = model.view
                assert after is not None
                patched += after.skus.base is before.skus.base  # type: ignore[attr-defined]
                del before, after
                for view, kept in held:
                    assert view_state(view) == kept
                assert_whole(path, model)
            assert patched, "no refresh patched the view: only the rebuilding path was tested"
