"""The DuckLake snapshot store on real files: what the writer publishes, what readers see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.snapshot_store import MaintenanceReport, SnapshotReader, SnapshotWriter, tables
from adapters.snapshot_store.compaction import CompactionPolicy
from adapters.snapshot_store.layout import LAKE
from adapters.snapshot_store.sink import SnapshotSink
from ledger.contract import fulfilment_to_record
from ledger.errors import SnapshotError
from ledger.execution import (
    DropshipOrder,
    LoadStatus,
    OrderStatus,
    ShuttleLoad,
    StoreTask,
    TaskKind,
    TaskStatus,
)
from ledger.fulfilment import Fulfilment, FulfilmentMode, SourceKind
from ledger.outputs import (
    DecisionStatus,
    FoldTally,
    InboundLine,
    OfferTerms,
    PositionChange,
    ReservationDecision,
    SnapshotBatch,
)

REPO = Path(__file__).resolve().parents[2]
T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def change(
    site: str,
    sku: str,
    version: int,
    *,
    on_hand: int = 10,
    inbound: tuple[InboundLine, ...] = (),
    offer: OfferTerms | None = None,
    occurred: int | None = None,
) -> PositionChange:
    inbound_qty = sum(line.qty for line in inbound)
    return PositionChange(
        site_id=site,
        sku=sku,
        on_hand=on_hand,
        reserved=0,
        staged=0,
        inbound_qty=inbound_qty,
        safety_stock=0,
        atp=max(0, on_hand),
        negative=on_hand < 0,
        version=version,
        updated_at=T0 + version,
        max_occurred_at=T0 + version if occurred is None else occurred,
        inbound=inbound,
        offer=offer,
    )


def decision(rid: str, status: DecisionStatus, decided_at: int, qty: int = 2) -> ReservationDecision:
    return ReservationDecision(
        reservation_id=rid,
        site_id="S1",
        sku="A",
        qty=qty,
        status=status,
        reason="test",
        expires_at=decided_at + 60_000 if status is DecisionStatus.ACCEPTED else None,
        decided_at=decided_at,
        atp_before=10,
    )


def as_int(value: object) -> int:
    assert isinstance(value, int), value
    return value


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "snapshots"


@pytest.fixture
def writer(store: Path) -> Iterator[SnapshotWriter]:
    w = SnapshotWriter.open(store)
    yield w
    w.close()


@pytest.fixture
def reader(writer: SnapshotWriter, store: Path) -> Iterator[SnapshotReader]:
    r = SnapshotReader.open(store)
    yield r
    r.close()


def on_hand_by_key(reader: SnapshotReader, as_of: int | None = None) -> dict[tuple[object, object], object]:
    return {(p["site_id"], p["sku"]): p["on_hand"] for p in reader.positions(as_of=as_of)}


@pytest.mark.integration
def test_published_positions_inbound_offers_and_reservations_read_back(
    writer: SnapshotWriter, reader: SnapshotReader
) -> None:
    line = InboundLine(ref="shuttle-7", qty=5, eta=T0 + 3_600_000)
    offer = OfferTerms(qty=3, price=9.5, lead_time_days=2, updated_at=T0)
    snapshot_id = writer.publish(
        [change("S1", "A", 1, inbound=(line,)), change("M9", "A", 1, on_hand=0, offer=offer)],
        [decision("r1", DecisionStatus.ACCEPTED, T0)],
        events_applied=3,
        now=T0 + 10,
    )

    assert snapshot_id is not None
    assert reader.positions(sku="A", site_id="S1") == [
        {
            "site_id": "S1",
            "sku": "A",
            "on_hand": 10,
            "reserved": 0,
            "staged": 0,
            "inbound": 5,
            "safety_stock": 0,
            "atp": 10,
            "negative": False,
            "version": 1,
            "updated_at": at(T0 + 1),
        }
    ]
    assert reader.inbound(sku="A") == [
        {"site_id": "S1", "sku": "A", "ref": "shuttle-7", "eta": at(T0 + 3_600_000), "qty": 5, "promised": False}
    ]
    assert reader.offers(sku="A") == [
        {"seller_id": "M9", "sku": "A", "qty": 3, "price": 9.5, "lead_time_days": 2, "updated_at": at(T0)}
    ]
    [reservation] = reader.reservations(reservation_id="r1")
    assert reservation["status"] == "ACCEPTED"
    assert reservation["expires_at"] == at(T0 + 60_000)
    assert reader.latest() == {
        "snapshot_id": snapshot_id,
        "created_at": at(T0 + 10),
        "events_applied": 3,
        "max_occurred_at": at(T0 + 1),
    }
    assert writer.last_snapshot_info() == reader.latest()
    updated_at = reader.positions(site_id="S1")[0]["updated_at"]
    assert isinstance(updated_at, datetime)
    assert updated_at.tzinfo is UTC


@pytest.mark.integration
def test_publishing_nothing_writes_no_snapshot(writer: SnapshotWriter, reader: SnapshotReader) -> None:
    assert writer.publish([], [], events_applied=0, now=T0) is None
    assert reader.latest() is None
    assert reader.snapshots() == []


@pytest.mark.integration
def test_a_one_row_publish_lands_in_parquet_and_nothing_is_inlined_in_the_catalog(
    writer: SnapshotWriter, reader: SnapshotReader
) -> None:
    # Inlined rows are where DuckLake 1.5.5's flush crashed beside readers (connection._NO_INLINING).
    published = writer.publish([change("A", "PIN", 1)], [], events_applied=1, now=T0)
    assert published is not None
    _, rows = reader.sql(f"SELECT changes FROM {LAKE}.snapshots() WHERE snapshot_id = {int(published)}")
    (changes,) = rows[0]
    assert "tables_inserted_into" in changes
    assert not [kind for kind in changes if kind.startswith("inlined")]
    assert [p["site_id"] for p in reader.positions(sku="PIN")] == ["A"]


@pytest.mark.integration
def test_within_one_publish_the_highest_version_per_key_wins(writer: SnapshotWriter, reader: SnapshotReader) -> None:
    writer.publish(
        [change("S1", "A", 3, on_hand=30), change("S1", "A", 5, on_hand=50), change("S1", "A", 4, on_hand=40)],
        [],
        events_applied=3,
        now=T0,
    )

    assert on_hand_by_key(reader) == {("S1", "A"): 50}


@pytest.mark.integration
def test_a_replayed_older_version_changes_nothing_and_an_equal_one_replaces(
    writer: SnapshotWriter, reader: SnapshotReader
) -> None:
    current = InboundLine(ref="new", qty=4, eta=T0 + 1_000)
    writer.publish([change("S1", "A", 7, on_hand=70, inbound=(current,))], [], events_applied=7, now=T0)
    stale = InboundLine(ref="old", qty=9, eta=T0 + 2_000)

    # At-least-once delivery after a crash: versions 6 and 7 arrive again with other values.
    # The fold goes on from the replay, so its version 7 is the true one; 6 is stale.
    replayed = writer.publish(
        [change("S1", "A", 6, on_hand=60, inbound=(stale,)), change("S1", "A", 7, on_hand=71, inbound=(current,))],
        [],
        events_applied=9,
        now=T0 + 1,
    )

    assert replayed is not None
    [position] = reader.positions()
    assert (position["on_hand"], position["version"], position["inbound"]) == (71, 7, 4)
    assert [line["ref"] for line in reader.inbound()] == ["new"]
    assert reader.latest() == {
        "snapshot_id": replayed,
        "created_at": at(T0 + 1),
        "events_applied": 9,
        # max_occurred_at never goes back, even when a replay brings older events.
        "max_occurred_at": at(T0 + 7),
    }


@pytest.mark.integration
def test_inbound_lines_are_replaced_per_key_and_only_for_the_keys_published(
    writer: SnapshotWriter, reader: SnapshotReader
) -> None:
    a1, a2 = InboundLine("a1", 1, T0 + 10), InboundLine("a2", 2, T0 + 20)
    b1 = InboundLine("b1", 3, T0 + 30)
    writer.publish(
        [change("S1", "A", 1, inbound=(a1, a2)), change("S2", "A", 1, inbound=(b1,))], [], events_applied=2, now=T0
    )
    a3 = InboundLine("a3", 6, T0 + 40)

    writer.publish([change("S1", "A", 2, inbound=(a3,))], [], events_applied=3, now=T0 + 1)
    assert [(line["site_id"], line["ref"]) for line in reader.inbound()] == [("S1", "a3"), ("S2", "b1")]

    writer.publish([change("S1", "A", 3)], [], events_applied=4, now=T0 + 2)  # the shuttle arrived
    assert [(line["site_id"], line["ref"]) for line in reader.inbound()] == [("S2", "b1")]


@pytest.mark.integration
def test_the_newest_offer_per_seller_and_sku_wins(writer: SnapshotWriter, reader: SnapshotReader) -> None:
    first = OfferTerms(qty=5, price=10.0, lead_time_days=3, updated_at=T0 + 100)
    writer.publish([change("M1", "A", 1, offer=first)], [], events_applied=1, now=T0)

    newer = OfferTerms(qty=8, price=None, lead_time_days=None, updated_at=T0 + 200)
    writer.publish([change("M1", "A", 2, offer=newer)], [], events_applied=2, now=T0 + 1)
    older = OfferTerms(qty=1, price=1.0, lead_time_days=1, updated_at=T0 + 150)
    writer.publish([change("M1", "A", 3, offer=older), change("M2", "A", 1, offer=first)], [], events_applied=3, now=T0)

    assert [(o["seller_id"], o["qty"], o["price"], o["updated_at"]) for o in reader.offers(sku="A")] == [
        ("M1", 8, None, at(T0 + 200)),
        ("M2", 5, 10.0, at(T0 + 100)),
    ]
    assert [o["seller_id"] for o in reader.offers(seller_id="M2")] == ["M2"]


@pytest.mark.integration
def test_reservations_take_the_last_decision_unless_a_newer_terminal_one_is_stored(
    writer: SnapshotWriter, reader: SnapshotReader
) -> None:
    writer.publish([], [decision("r1", DecisionStatus.ACCEPTED, T0)], events_applied=1, now=T0)
    writer.publish([], [decision("r1", DecisionStatus.FULFILLED, T0 + 50)], events_applied=2, now=T0)

    # A replayed acceptance is older than the stored terminal status: ignored.
    writer.publish([], [decision("r1", DecisionStatus.ACCEPTED, T0)], events_applied=3, now=T0)
    assert [r["status"] for r in reader.reservations(reservation_id="r1")] == ["FULFILLED"]

    # Within one call the last decision wins; a non-terminal stored one is always replaced.
    writer.publish(
        [],
        [
            decision("r2", DecisionStatus.ACCEPTED, T0 + 10),
            decision("r2", DecisionStatus.RELEASED, T0 + 20),
            decision("r3", DecisionStatus.ACCEPTED, T0 + 10),
        ],
        events_applied=6,
        now=T0,
    )
    writer.publish([], [decision("r3", DecisionStatus.EXPIRED, T0 + 60_010)], events_applied=7, now=T0)

    assert {r["reservation_id"]: r["status"] for r in reader.reservations(sku="A")} == {
        "r1": "FULFILLED",
        "r2": "RELEASED",
        "r3": "EXPIRED",
    }


@pytest.mark.integration
def test_as_of_an_earlier_snapshot_returns_the_old_values(writer: SnapshotWriter, reader: SnapshotReader) -> None:
    line = InboundLine("a1", 4, T0 + 10)
    first = writer.publish([change("S1", "A", 1, on_hand=10, inbound=(line,))], [], events_applied=1, now=T0)
    second = writer.publish([change("S1", "A", 2, on_hand=20)], [], events_applied=2, now=T0 + 1)
    assert first is not None
    assert second is not None

    assert on_hand_by_key(reader, as_of=first) == {("S1", "A"): 10}
    assert [row["ref"] for row in reader.inbound(as_of=first)] == ["a1"]
    assert on_hand_by_key(reader, as_of=second) == {("S1", "A"): 20}
    assert on_hand_by_key(reader) == {("S1", "A"): 20}
    assert reader.inbound() == []


@pytest.mark.integration
def test_an_unknown_snapshot_is_refused_naming_the_readable_range(
    writer: SnapshotWriter, reader: SnapshotReader
) -> None:
    last = writer.publish([change("S1", "A", 1)], [], events_applied=1, now=T0)
    assert last is not None

    with pytest.raises(SnapshotError, match=rf"snapshot 999 is unknown or expired.*snapshots are 0\.\.{last}"):
        reader.positions(as_of=999)


@pytest.mark.integration
def test_snapshot_info_ids_are_the_ducklake_snapshot_ids_and_consecutive(
    writer: SnapshotWriter, reader: SnapshotReader
) -> None:
    returned = [
        writer.publish([change("S1", "A", v, on_hand=v)], [], events_applied=v, now=T0 + v) for v in range(1, 6)
    ]

    _, lake_rows = reader.sql("SELECT snapshot_id FROM ducklake_snapshots('lake') ORDER BY snapshot_id")
    lake_ids = [row[0] for row in lake_rows]
    info_ids = [as_int(row["snapshot_id"]) for row in reader.snapshots()]
    assert info_ids == returned
    assert info_ids == lake_ids[-5:]
    assert info_ids == list(range(info_ids[0], info_ids[0] + 5))
    # Each snapshot_info row is visible exactly from the snapshot it names.
    for snapshot_id in info_ids:
        _, rows = reader.sql(f"SELECT max(snapshot_id) FROM snapshot_info AT (VERSION => {snapshot_id})")
        assert rows == [(snapshot_id,)]


@pytest.mark.integration
def test_a_second_writer_is_refused(writer: SnapshotWriter, store: Path) -> None:
    with pytest.raises(SnapshotError, match="takes one writer"):
        SnapshotWriter.open(store)


@pytest.mark.integration
def test_reopening_the_store_keeps_the_data_and_the_last_snapshot_info(store: Path) -> None:
    with SnapshotWriter.open(store) as first:
        first.publish([change("S1", "A", 1)], [], events_applied=1, now=T0)
        info = first.last_snapshot_info()

    with SnapshotWriter.open(store) as again:
        assert again.last_snapshot_info() == info
        next_id = again.publish([change("S1", "A", 2)], [], events_applied=2, now=T0 + 1)

    assert info is not None
    assert next_id == as_int(info["snapshot_id"]) + 1


@pytest.mark.integration
def test_one_reader_serves_several_threads_at_once(writer: SnapshotWriter, reader: SnapshotReader) -> None:
    writer.publish([change(f"S{i}", "A", 1, on_hand=i) for i in range(50)], [], events_applied=50, now=T0)

    def read_many(_: int) -> set[int]:
        return {sum(as_int(p["on_hand"]) for p in reader.positions(sku="A")) for _ in range(20)}

    with ThreadPoolExecutor(max_workers=4) as pool:
        totals = set().union(*pool.map(read_many, range(4)))

    assert totals == {sum(range(50))}


_READER_LOOP = textwrap.dedent(
    """
    import json, sys, time
    from adapters.snapshot_store import SnapshotReader

    store, final_id, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
    seen = []
    with SnapshotReader.open(store) as reader:
        print("ready", flush=True)
        while time.monotonic() < deadline:
            # Pin one snapshot, then read every table at it: each must agree with that
            # snapshot's info row. (One statement over several tables without a pin was
            # seen mixing two snapshots under load: see the README.)
            _, [[pin]] = reader.sql("SELECT max(snapshot_id) FROM snapshot_info")
            at = f"AT (VERSION => {int(pin)})"
            _, [row] = reader.sql(
                f"SELECT (SELECT max(snapshot_id) FROM snapshot_info {at}), "
                f"(SELECT sum(on_hand) FROM positions {at}), (SELECT count(*) FROM positions {at}), "
                f"(SELECT sum(inbound) FROM positions {at}), (SELECT coalesce(sum(qty), 0) FROM inbound {at}), "
                f"(SELECT max(version) FROM positions {at})"
            )
            typed = reader.positions(sku="A", as_of=int(pin))
            seen.append([*(int(v) for v in row), sum(int(p["on_hand"]) for p in typed)])
            if row[0] >= final_id:
                break
    print(json.dumps(seen), flush=True)
    """
)


@pytest.mark.integration
def test_a_reader_in_another_process_sees_only_whole_snapshots_while_the_writer_publishes(
    writer: SnapshotWriter, store: Path
) -> None:
    sites = [f"S{i:02d}" for i in range(20)]
    total = 1_000

    def moves(version: int) -> list[PositionChange]:
        # Shift units between sites; the total on hand and inbound stay constant.
        changes = []
        for i, site in enumerate(sites):
            on_hand = total // len(sites) + ((i + version) % 5 - 2) * 3
            qty = (i + version) % 4 + 1
            lines = (InboundLine(f"in-{version}-{i}-a", qty, T0 + 10_000), InboundLine(f"in-{version}-{i}-b", qty, T0))
            changes.append(change(site, "A", version, on_hand=on_hand, inbound=lines))
        return changes

    def expected_inbound(version: int) -> int:
        return sum(2 * ((i + version) % 4 + 1) for i in range(len(sites)))

    # Version 0 makes every sum balance: 20 sites, offsets -6..+6 cancel over each 5 sites.
    first = writer.publish(moves(0), [], events_applied=20, now=T0)
    assert first is not None
    with SnapshotReader.open(store) as check:
        assert sum(as_int(p["on_hand"]) for p in check.positions()) == total
    publishes = 30
    final_id = first + publishes
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        # The reader stops when it sees the last publish; its deadline only bounds a broken
        # run (90 s was too short for 30 publishes beside other work, load ~50 on 2 cores).
        [sys.executable, "-c", _READER_LOOP, str(store), str(final_id), "900"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", child.stderr.read() if child.stderr else ""
        ids = [writer.publish(moves(v), [], events_applied=20 * (v + 1), now=T0 + v) for v in range(1, publishes + 1)]
        out, err = child.communicate(timeout=960)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    assert child.returncode == 0, err
    assert ids == list(range(first + 1, final_id + 1))
    seen = json.loads(out.strip().splitlines()[-1])
    for snapshot_id, on_hand, count, inbound_col, inbound_rows, version, typed_on_hand in seen:
        assert (on_hand, count, typed_on_hand) == (total, len(sites), total), snapshot_id
        assert inbound_col == inbound_rows == expected_inbound(version), snapshot_id
        assert version == snapshot_id - first  # positions belong to the snapshot the info row names
    observed = [row[0] for row in seen]
    assert observed == sorted(observed)
    assert observed[-1] == final_id
    assert len(set(observed)) > 1, "the reader never saw the snapshot id advance"


@pytest.mark.integration
def test_maintenance_keeps_reads_correct_and_reduces_the_file_count(
    writer: SnapshotWriter, reader: SnapshotReader
) -> None:
    # 25 rows per publish: above DuckLake's inlining limit (10), so every publish writes
    # Parquet files, and updates add delete files.
    skus = [f"K{i:03d}" for i in range(25)]
    for version in range(1, 41):
        writer.publish(
            [change("S1", sku, version, on_hand=version * 100 + i) for i, sku in enumerate(skus)],
            [],
            events_applied=version * 25,
            now=T0 + version,
        )
    before = reader.positions()
    latest_before = reader.latest()

    report = writer.maintain(keep_snapshots_for=timedelta(0))

    assert report.files_after < report.files_before
    assert report.snapshots_expired > 0
    assert reader.positions() == before
    assert [row["on_hand"] for row in reader.positions(site_id="S1")] == [4000 + i for i in range(25)]
    assert reader.latest() == latest_before
    # Expired snapshots are refused with the range that is left; publishing goes on.
    with pytest.raises(SnapshotError, match="unknown or expired"):
        reader.positions(as_of=3)
    after = writer.publish([change("S1", "K000", 41, on_hand=1)], [], events_applied=1_001, now=T0 + 41)
    assert after is not None
    assert reader.positions(sku="K000")[0]["on_hand"] == 1
    assert reader.snapshots()[-1]["snapshot_id"] == after


@pytest.mark.integration
def test_opening_a_missing_store_says_how_to_create_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    with pytest.raises(SnapshotError, match=r"no snapshot store at .*nowhere: run `omni-ledger run .* --snapshot-dir"):
        SnapshotReader.open(missing)


# ------------------------------------------------------------------------ work and upgrades

HOUR = 3_600_000


def plan(ref: str = "R1", mode: FulfilmentMode = FulfilmentMode.TRANSFER_TO_STORE) -> Fulfilment:
    transfer = mode is FulfilmentMode.TRANSFER_TO_STORE
    return Fulfilment(
        mode=mode,
        source_kind=SourceKind.STORE if transfer else SourceKind.SUPPLIER,
        order_id=f"O-{ref}",
        deliver_to="NEAR",
        ready_at=T0 + 12 * HOUR,
        hold_until=T0 + 72 * HOUR,
        zone="E-COM" if transfer else None,
        parcel_id=f"P-{ref}" if transfer else None,
        run_id="FAR-NEAR@07:00" if transfer else None,
        departs_at=T0 + 8 * HOUR if transfer else None,
        arrives_at=T0 + 10 * HOUR,
        appointment_at=T0 + 12 * HOUR if transfer else None,
        customer="Martin" if transfer else None,
        source_site="FAR" if transfer else "SUP-1",
    )


def task(status: TaskStatus, ref: str = "R1", site: str = "FAR", updated: int = 0) -> StoreTask:
    p = plan(ref)
    kind = TaskKind.PICK_FOR_SHUTTLE
    return StoreTask(f"{ref}/{kind.value}", site, "A", 1, kind, status, ref, T0 + 8 * HOUR, p, T0 + updated)


def load(status: LoadStatus, ref: str = "R1", updated: int = 0) -> ShuttleLoad:
    p = plan(ref)
    assert p.parcel_id is not None
    assert p.run_id is not None
    return ShuttleLoad(
        p.parcel_id, p.run_id, "FAR", "NEAR", "A", 1, T0 + 8 * HOUR, T0 + 10 * HOUR, status, ref, p, T0 + updated
    )


def order(status: OrderStatus, ref: str = "R3", supplier: str = "SUP-1", updated: int = 0) -> DropshipOrder:
    p = plan(ref, FulfilmentMode.DROPSHIP_TO_STORE)
    return DropshipOrder(ref, supplier, "NEAR", "B", 2, T0 + 10 * HOUR, status, p, T0 + updated)


def statuses(reader: SnapshotReader) -> dict[str, object]:
    out: dict[str, object] = {}
    out.update({str(r["task_id"]): r["status"] for r in reader.store_tasks()})
    out.update({str(r["parcel_id"]): r["status"] for r in reader.transport_loads()})
    out.update({str(r["order_ref"]): r["status"] for r in reader.dropship_orders()})
    return out


@pytest.mark.integration
def test_store_tasks_loads_and_orders_read_back_with_their_plan(writer: SnapshotWriter, reader: SnapshotReader) -> None:
    snapshot_id = writer.publish(
        [], [], [task(TaskStatus.OPEN), load(LoadStatus.PLANNED), order(OrderStatus.ORDERED)], events_applied=2, now=T0
    )

    assert snapshot_id is not None  # work alone is worth a snapshot
    assert reader.store_tasks() == [
        {
            "task_id": "R1/PICK_FOR_SHUTTLE",
            "site_id": "FAR",
            "sku": "A",
            "qty": 1,
            "kind": "PICK_FOR_SHUTTLE",
            "status": "OPEN",
            "rank": 1,
            "reservation_id": "R1",
            "order_id": "O-R1",
            "customer": "Martin",
            "zone": "E-COM",
            "parcel_id": "P-R1",
            "run_id": "FAR-NEAR@07:00",
            "deliver_to": "NEAR",
            "departs_at": at(T0 + 8 * HOUR),
            "due_at": at(T0 + 8 * HOUR),
            "appointment_at": at(T0 + 12 * HOUR),
            "plan": fulfilment_to_record(plan("R1")),
            "updated_at": at(T0),
        }
    ]
    assert reader.transport_loads() == [
        {
            "parcel_id": "P-R1",
            "run_id": "FAR-NEAR@07:00",
            "origin": "FAR",
            "destination": "NEAR",
            "sku": "A",
            "qty": 1,
            "departs_at": at(T0 + 8 * HOUR),
            "arrives_at": at(T0 + 10 * HOUR),
            "status": "PLANNED",
            "rank": 1,
            "reservation_id": "R1",
            "order_id": "O-R1",
            "customer": "Martin",
            "plan": fulfilment_to_record(plan("R1")),
            "updated_at": at(T0),
        }
    ]
    assert reader.dropship_orders() == [
        {
            "order_ref": "R3",
            "supplier_id": "SUP-1",
            "deliver_to": "NEAR",
            "sku": "B",
            "qty": 2,
            "due_at": at(T0 + 10 * HOUR),
            "status": "ORDERED",
            "rank": 1,
            "order_id": "O-R3",
            "customer": None,
            "plan": fulfilment_to_record(plan("R3", FulfilmentMode.DROPSHIP_TO_STORE)),
            "updated_at": at(T0),
        }
    ]


@pytest.mark.integration
def test_within_one_publish_the_highest_rank_per_work_key_wins_and_an_equal_rank_takes_the_later(
    writer: SnapshotWriter, reader: SnapshotReader
) -> None:
    writer.publish(
        [],
        [],
        [
            task(TaskStatus.DONE),
            task(TaskStatus.OPEN),  # done first: the pick and the request came out of order
            load(LoadStatus.ARRIVED),
            load(LoadStatus.LOADED),  # the destination's fold ran before the origin's
            order(OrderStatus.ORDERED),
            order(OrderStatus.SHIPPED),
            order(OrderStatus.RECEIVED),
            order(OrderStatus.CANCELLED),  # the same rank as RECEIVED, and later
        ],
        events_applied=7,
        now=T0,
    )

    assert statuses(reader) == {"R1/PICK_FOR_SHUTTLE": "DONE", "P-R1": "ARRIVED", "R3": "CANCELLED"}


@pytest.mark.integration
def test_a_stored_work_record_is_replaced_only_by_a_higher_rank(writer: SnapshotWriter, reader: SnapshotReader) -> None:
    writer.publish([], [], [task(TaskStatus.OPEN), load(LoadStatus.LOADED)], events_applied=1, now=T0)
    writer.publish([], [], [task(TaskStatus.DONE, updated=5), load(LoadStatus.PLANNED)], events_applied=2, now=T0 + 1)
    assert statuses(reader) == {"R1/PICK_FOR_SHUTTLE": "DONE", "P-R1": "LOADED"}
    done = reader.store_tasks()[0]

    # Redelivered and replayed records: the same rank with other content, lower ranks.
    replayed = writer.publish(
        [],
        [],
        [task(TaskStatus.DONE, updated=9), task(TaskStatus.OPEN), load(LoadStatus.LOADED, updated=9)],
        events_applied=2,
        now=T0 + 2,
    )

    assert replayed is not None
    assert reader.store_tasks() == [done]
    assert statuses(reader) == {"R1/PICK_FOR_SHUTTLE": "DONE", "P-R1": "LOADED"}
    writer.publish([], [], [load(LoadStatus.ARRIVED, updated=7)], events_applied=3, now=T0 + 3)
    [arrived] = reader.transport_loads()
    assert (arrived["status"], arrived["rank"], arrived["updated_at"]) == ("ARRIVED", 3, at(T0 + 7))
    # CANCELLED has ARRIVED's rank: the stored record stays.
    writer.publish([], [], [load(LoadStatus.CANCELLED, updated=8)], events_applied=4, now=T0 + 4)
    assert reader.transport_loads() == [arrived]


@pytest.mark.integration
def test_work_readers_filter_by_site_status_run_and_supplier_at_a_pinned_snapshot(
    writer: SnapshotWriter, reader: SnapshotReader
) -> None:
    first = writer.publish(
        [],
        [],
        [task(TaskStatus.OPEN, "R1"), task(TaskStatus.OPEN, "R2", site="OTHER"), order(OrderStatus.ORDERED)],
        events_applied=3,
        now=T0,
    )
    writer.publish(
        [],
        [],
        [task(TaskStatus.DONE, "R1"), load(LoadStatus.PLANNED), order(OrderStatus.ORDERED, "R4", "SEL-9")],
        events_applied=4,
        now=T0 + 1,
    )

    assert [r["task_id"] for r in reader.store_tasks(site_id="FAR")] == ["R1/PICK_FOR_SHUTTLE"]
    assert [r["task_id"] for r in reader.store_tasks(status="OPEN")] == ["R2/PICK_FOR_SHUTTLE"]
    assert [r["status"] for r in reader.store_tasks(site_id="FAR", as_of=first)] == ["OPEN"]
    assert [r["parcel_id"] for r in reader.transport_loads(run_id="FAR-NEAR@07:00")] == ["P-R1"]
    assert reader.transport_loads(run_id="elsewhere") == []
    assert reader.transport_loads(as_of=first) == []
    assert [r["order_ref"] for r in reader.dropship_orders(supplier_id="SEL-9")] == ["R4"]
    assert [r["order_ref"] for r in reader.dropship_orders(as_of=first)] == ["R3"]


@pytest.mark.integration
def test_promised_inbound_lines_read_back_flagged(writer: SnapshotWriter, reader: SnapshotReader) -> None:
    lines = (InboundLine("P-R1", 1, T0 + 10, promised=True), InboundLine("shuttle-8", 4, T0 + 20))
    writer.publish([change("NEAR", "A", 1, inbound=lines)], [], events_applied=1, now=T0)

    assert [(r["ref"], r["promised"]) for r in reader.inbound()] == [("P-R1", True), ("shuttle-8", False)]


# The column lists of the version before fulfilment plans: no work tables, no inbound.promised.
_PREVIOUS_TABLES = {
    name: replace(table, columns=tuple(c for c in table.columns if (name, c.name) != ("inbound", "promised")))
    for name, table in tables.TABLES.items()
    if name not in {"store_tasks", "transport_loads", "dropship_orders"}
}


@pytest.mark.integration
def test_a_store_from_the_previous_version_gains_the_new_tables_and_columns_in_one_snapshot(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(tables, "TABLES", _PREVIOUS_TABLES)
        old = SnapshotWriter.open(store)
        # What the previous version's publish left: a position with an inbound line.
        old._con.execute(
            "INSERT INTO lake.inbound VALUES ('NEAR', 'A', 'shuttle-7', TIMESTAMPTZ '2025-11-24 17:00:00+00', 5)"
        )
        old.close()
    with SnapshotReader.open(store) as before:
        assert "promised" not in before.inbound()[0]
        snapshots_before = len(before.sql("FROM ducklake_snapshots('lake')")[1])

    with SnapshotWriter.open(store) as upgraded:
        upgraded.publish(
            [change("FAR", "A", 1, inbound=(InboundLine("P-R1", 1, T0, promised=True),))],
            [],
            [task(TaskStatus.OPEN), load(LoadStatus.PLANNED), order(OrderStatus.ORDERED)],
            events_applied=1,
            now=T0,
        )
    with SnapshotWriter.open(store):
        pass  # a re-open of an up-to-date store changes nothing

    with SnapshotReader.open(store) as reader:
        # One snapshot for the upgrade, one for the publish.
        assert len(reader.sql("FROM ducklake_snapshots('lake')")[1]) == snapshots_before + 2
        assert [(r["site_id"], r["ref"], r["promised"]) for r in reader.inbound()] == [
            ("FAR", "P-R1", True),
            ("NEAR", "shuttle-7", False),  # written before the column existed: never promised
        ]
        assert statuses(reader) == {"R1/PICK_FOR_SHUTTLE": "OPEN", "P-R1": "PLANNED", "R3": "ORDERED"}


@pytest.mark.integration
def test_a_column_declared_once_reaches_an_existing_store_its_publishes_and_its_readers(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SnapshotWriter.open(store) as before:
        before.publish([], [], [order(OrderStatus.ORDERED, ref="R3")], events_applied=1, now=T0)
    # A new column is one line in its table's declaration: here, who carries a dropship order.
    declared = tables.TABLES["dropship_orders"]
    carrier: tables.Column[DropshipOrder] = tables.Column(
        "carrier", "VARCHAR", "Who carries the order.", lambda o: f"courier of {o.order_ref}"
    )
    monkeypatch.setitem(tables.TABLES, "dropship_orders", replace(declared, columns=(*declared.columns, carrier)))

    with SnapshotWriter.open(store) as upgraded:
        upgraded.publish([], [], [order(OrderStatus.ORDERED, ref="R4")], events_applied=2, now=T0)

    with SnapshotReader.open(store) as reader:
        carried = {r["order_ref"]: r["carrier"] for r in reader.dropship_orders()}
    assert carried == {"R3": None, "R4": "courier of R4"}  # R3 was written before the column existed
    assert "| `carrier` | VARCHAR | Who carries the order. |" in tables.markdown()


def test_the_snapshot_tables_page_is_made_from_the_declarations() -> None:
    page = Path(__file__).resolve().parents[2] / "docs" / "snapshot-tables.md"
    assert page.read_text() == tables.markdown(), (
        "docs/snapshot-tables.md is out of date: python -m adapters.snapshot_store --markdown > docs/snapshot-tables.md"
    )


# ------------------------------------------------------------- the sink's writer thread


class _GatedPublish:
    """Wraps SnapshotWriter.publish: each call waits for `gate` (tests hold the publish back)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> None:
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)
        self.threads: list[str] = []
        original = SnapshotWriter.publish

        def publish(writer: SnapshotWriter, *args: object, **kwargs: object) -> int | None:
            self.threads.append(threading.current_thread().name)
            self.started.release()
            self.gate.wait(timeout=60)
            if fail:
                msg = "the catalog went away"
                raise SnapshotError(msg)
            return original(writer, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(SnapshotWriter, "publish", publish)


def interval(version: int, applied: int) -> list[SnapshotBatch]:
    tally = FoldTally(applied=applied, duplicates=0, too_late=0)
    return [SnapshotBatch((change("S1", "A", version, on_hand=version),), tally=tally)]


@pytest.mark.integration
def test_the_sink_publishes_off_the_worker_thread_and_an_epoch_keeps_what_has_not_landed(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gated = _GatedPublish(monkeypatch)
    published: list[tuple[int | None, int, int]] = []
    part = SnapshotSink(
        store, on_publish=lambda sid, applied, rows, _s: published.append((sid, applied, rows))
    ).build_part("snapshots", "snapshots", None)
    try:
        part.write_batch(interval(1, 5))  # returns while the publish is held back
        assert gated.started.acquire(timeout=30)
        assert gated.threads == ["snapshot-writer-0"]
        # The epoch does not wait for the held-back publish: its state carries the job.
        applied, pending, _ = part.snapshot()
        assert applied == 5
        assert len(pending) == 1
        gated.gate.set()
        part.close()  # a clean end publishes everything
        with SnapshotReader.open(store) as reader:
            assert on_hand_by_key(reader) == {("S1", "A"): 1}
            assert reader.latest()["events_applied"] == 5  # type: ignore[index]
        # The callback ran on the worker thread.
        assert [(applied, rows) for _, applied, rows in published] == [(5, 1)]
    finally:
        gated.gate.set()
        part.close()


@pytest.mark.integration
def test_a_job_pending_when_the_process_died_is_published_by_the_resumed_partition(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gated = _GatedPublish(monkeypatch)
    part = SnapshotSink(store).build_part("snapshots", "snapshots", None)
    part.write_batch(interval(1, 5))
    assert gated.started.acquire(timeout=30)
    saved = part.snapshot()  # the epoch's state, taken while the publish is still held back
    # The process dies here: the held-back publish never lands.
    monkeypatch.undo()
    part.opened().close()  # release the store as a dead process would
    resumed = SnapshotSink(store).build_part("snapshots", "snapshots", saved)
    try:
        resumed.close()  # publishes the pending job first, then ends cleanly
    finally:
        gated.gate.set()  # the dead process's held-back call fails on its closed writer
    with SnapshotReader.open(store) as reader:
        assert on_hand_by_key(reader) == {("S1", "A"): 1}
        assert reader.latest()["events_applied"] == 5  # type: ignore[index]


@pytest.mark.integration
def test_a_job_that_landed_after_its_epoch_closed_is_not_published_again_on_resume(store: Path) -> None:
    part = SnapshotSink(store).build_part("snapshots", "snapshots", None)
    part.write_batch(interval(1, 5))
    saved = part.snapshot()  # may still list the job: it was handed over just now
    part.close()  # ... and it lands
    with SnapshotReader.open(store) as reader:
        landed = reader.latest()["snapshot_id"]  # type: ignore[index]
    resumed = SnapshotSink(store).build_part("snapshots", "snapshots", saved)
    resumed.close()
    with SnapshotReader.open(store) as reader:
        assert reader.latest()["snapshot_id"] == landed  # type: ignore[index]  # no empty snapshot


@pytest.mark.integration
def test_a_failed_background_publish_is_raised_on_the_worker_thread(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gated = _GatedPublish(monkeypatch, fail=True)
    gated.gate.set()
    part = SnapshotSink(store).build_part("snapshots", "snapshots", None)
    part.write_batch(interval(1, 5))
    for _ in range(600):  # the writer thread fails as soon as it takes the job
        if part._failure is not None:
            break
        time.sleep(0.05)
    with pytest.raises(SnapshotError, match="the catalog went away"):
        part.snapshot()
    # And again: the epoch never commits past the lost outputs.
    with pytest.raises(SnapshotError, match="writer thread failed"):
        part.write_batch(interval(2, 5))
    with pytest.raises(SnapshotError):
        part.close()


def _until_published(part: object, seconds: float = 120.0) -> None:
    """Wait until the sink partition's writer has nothing in flight and nothing waiting."""
    deadline = time.monotonic() + seconds
    while getattr(part, "_waiting", None) is not None or getattr(part, "_in_flight", None) is not None:
        assert time.monotonic() < deadline, "the writer thread did not publish in time"
        time.sleep(0.02)


class _EveryThirdPublish(CompactionPolicy):
    """Due after every third publish: the sink's wiring, without timing (the rule has its unit tests)."""

    def due(self) -> bool:
        return self._publishes >= 3


class _Maintenance:
    def __init__(self) -> None:
        self.runs: list[tuple[str, MaintenanceReport]] = []

    def published(self, *args: object) -> None:
        pass

    def maintained(self, report: MaintenanceReport, reason: str) -> None:
        self.runs.append((reason, report))


@pytest.mark.integration
def test_the_sink_runs_maintenance_when_its_compaction_policy_says_publishes_have_slowed(store: Path) -> None:
    seen = _Maintenance()
    part = SnapshotSink(store, observer=seen, compaction=_EveryThirdPublish).build_part("snapshots", "snapshots", None)
    try:
        for version in range(1, 8):
            # Enough rows per publish to be written as files, not inlined in the catalog.
            rows = [change("S1", f"K{i:03d}", version, on_hand=version) for i in range(300)]
            part.write_batch([SnapshotBatch(tuple(rows), tally=FoldTally(applied=300, duplicates=0, too_late=0))])
            # One publish each: intervals handed over while one is published would merge.
            _until_published(part)
    finally:
        part.close()
    assert [reason for reason, _ in seen.runs] == ["publishes", "publishes"]
    assert all(report.files_merged or report.files_after != report.files_before for _, report in seen.runs)
    with SnapshotReader.open(store) as reader:
        assert set(on_hand_by_key(reader).values()) == {7}
        assert len(reader.positions()) == 300
        assert reader.latest()["events_applied"] == 7 * 300  # type: ignore[index]


# Any text a position or an inbound line can carry but a NUL: quotes, commas, line ends, non-ASCII, spaces at the ends.
_ANY_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=12
)


@pytest.mark.integration
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    keys=st.lists(st.tuples(_ANY_TEXT, _ANY_TEXT), min_size=1, max_size=6, unique=True),
    ref=_ANY_TEXT,
    on_hand=st.integers(-(2**63), 2**63 - 1),
)
def test_positions_and_inbound_lines_read_back_exactly_whatever_their_text_and_numbers(
    tmp_path_factory: pytest.TempPathFactory, keys: list[tuple[str, str]], ref: str, on_hand: int
) -> None:
    # Staged from numpy columns (staging.stage_columns): fixed-width text, int64 counts.
    store = tmp_path_factory.mktemp("texts") / "snapshots"
    line = InboundLine(ref=ref, qty=2, eta=T0)
    writer = SnapshotWriter.open(store)
    try:
        published = writer.publish(
            [change(site, sku, 1, on_hand=on_hand, inbound=(line,)) for site, sku in keys], [], events_applied=1, now=T0
        )
    finally:
        writer.close()
    reader = SnapshotReader.open(store)
    try:
        assert published is not None
        assert {(p["site_id"], p["sku"]): p["on_hand"] for p in reader.positions()} == dict.fromkeys(keys, on_hand)
        assert sorted((i["site_id"], i["sku"], i["ref"], i["qty"]) for i in reader.inbound()) == sorted(
            (site, sku, ref, 2) for site, sku in keys
        )
    finally:
        reader.close()


@pytest.mark.integration
def test_a_count_beyond_64_bits_is_refused_and_nothing_is_published(
    writer: SnapshotWriter, reader: SnapshotReader
) -> None:
    with pytest.raises(SnapshotError, match=r"positions: column on_hand holds a value that is not a BIGINT"):
        writer.publish([change("S1", "A", 1, on_hand=2**63)], [], events_applied=1, now=T0)
    assert reader.latest() is None
    assert writer.publish([change("S1", "A", 1)], [], events_applied=1, now=T0) is not None


@pytest.mark.integration
def test_text_holding_a_nul_is_refused_by_name_and_nothing_is_published(
    writer: SnapshotWriter, reader: SnapshotReader
) -> None:
    # numpy's fixed-width text would drop a trailing NUL, and DuckLake's file pruning fails on one in a key.
    with pytest.raises(SnapshotError, match=r"positions: column sku holds a NUL character: 'A\\x00'"):
        writer.publish([change("S1", "A\x00", 1)], [], events_applied=1, now=T0)
    assert reader.latest() is None
