"""The in-memory position replica against the real snapshot store: it must hold exactly what a reader sees."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.snapshot_store import SnapshotReader, SnapshotWriter
from adapters.snapshot_store.replica import PositionReplica
from ledger.errors import SnapshotError
from tests.integration.test_snapshot_store import T0, change

pytestmark = pytest.mark.integration


def replica_rows(replica: PositionReplica, reader: SnapshotReader) -> list[dict[str, object]]:
    """Every position the replica holds, looked up one by one, in the reader's order."""
    keys = [(str(p["site_id"]), str(p["sku"])) for p in reader.positions(as_of=replica.snapshot_id)]
    return [row for site, sku in keys if (row := replica.position(site, sku)) is not None]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Path, SnapshotWriter, SnapshotReader]]:
    path = tmp_path / "snapshots"
    writer = SnapshotWriter.open(path)
    reader = SnapshotReader.open(path)
    yield path, writer, reader
    reader.close()
    writer.close()


def test_a_replica_of_a_store_without_publishes_is_empty_and_fills_on_refresh(
    store: tuple[Path, SnapshotWriter, SnapshotReader],
) -> None:
    path, writer, _ = store
    with PositionReplica.open(path) as replica:
        assert replica.count() == 0
        assert replica.position("S1", "A") is None
        sid = writer.publish([change("S1", "A", 1, on_hand=5)], [], events_applied=1, now=T0)
        assert replica.refresh() == 1
        assert replica.snapshot_id == sid
        assert replica.position("S1", "A") is not None
        assert replica.refresh() == 0  # nothing new


def test_refresh_applies_only_the_changes_and_matches_the_reader_at_the_same_snapshot(
    store: tuple[Path, SnapshotWriter, SnapshotReader],
) -> None:
    path, writer, reader = store
    writer.publish([change(f"S{i % 3}", f"K{i:03d}", 1, on_hand=i) for i in range(60)], [], events_applied=60, now=T0)
    with PositionReplica.open(path) as replica:
        assert replica.count() == 60
        writer.publish(
            [change("S0", "K000", 2, on_hand=99), change("S9", "NEW", 1, on_hand=7)], [], events_applied=62, now=T0 + 1
        )
        writer.publish([change("S0", "K000", 3, on_hand=42)], [], events_applied=63, now=T0 + 2)
        # Two snapshots at once; K000 changed in both: the later one wins.
        assert replica.refresh() == 2
        assert replica.position("S0", "K000") == reader.positions(sku="K000", site_id="S0")[0]
        assert replica.position("S0", "K000")["on_hand"] == 42  # type: ignore[index]
        assert replica.position("S9", "NEW")["on_hand"] == 7  # type: ignore[index]
        assert replica.count() == 61
        assert replica_rows(replica, reader) == reader.positions()


def test_a_position_deleted_from_the_store_leaves_the_replica(
    store: tuple[Path, SnapshotWriter, SnapshotReader],
) -> None:
    path, writer, reader = store
    writer.publish([change("S1", "A", 1, on_hand=5), change("S1", "B", 1, on_hand=6)], [], events_applied=2, now=T0)
    with PositionReplica.open(path) as replica:
        # The flow never deletes a position; an operator's repair may (SQL on the lake).
        # In layout 2 a position lives in the recent and the base table behind the view.
        writer._con.execute(
            "BEGIN; DELETE FROM lake.positions_recent WHERE sku = 'A'; "
            "DELETE FROM lake.positions_base WHERE sku = 'A'; COMMIT"
        )
        assert replica.refresh() == 1
        assert replica.position("S1", "A") is None
        assert replica_rows(replica, reader) == reader.positions()


def test_after_maintenance_expired_its_snapshots_the_replica_loads_the_store_again(
    store: tuple[Path, SnapshotWriter, SnapshotReader],
) -> None:
    path, writer, reader = store
    writer.publish([change("S1", "A", 1, on_hand=5)], [], events_applied=1, now=T0)
    with PositionReplica.open(path) as replica:
        for version in range(2, 6):
            writer.publish(
                [change("S1", "A", version, on_hand=version), change("S2", f"B{version}", 1, on_hand=version)],
                [],
                events_applied=version,
                now=T0 + version,
            )
        report = writer.maintain(keep_snapshots_for=timedelta(0))
        assert report.snapshots_expired > 0
        assert replica.refresh() == 5  # the whole table, not a change feed
        assert replica_rows(replica, reader) == reader.positions()
        assert replica.position("S1", "A")["on_hand"] == 5  # type: ignore[index]


def test_maintenance_between_refreshes_moves_rows_without_the_replica_reading_them_again(
    store: tuple[Path, SnapshotWriter, SnapshotReader],
) -> None:
    path, writer, reader = store
    # Enough rows to be written as files, so the maintenance rewrites and merges them.
    writer.publish([change("S1", f"K{i:03d}", 1, on_hand=i) for i in range(300)], [], events_applied=300, now=T0)
    with PositionReplica.open(path) as replica:
        writer.publish(
            [change("S1", f"K{i:03d}", 2, on_hand=-i) for i in range(100)], [], events_applied=400, now=T0 + 1
        )
        report = writer.maintain(keep_snapshots_for=timedelta(days=7))
        assert report.files_merged or report.inlined_tables_flushed
        writer.publish([change("S1", "K299", 3, on_hand=7)], [], events_applied=401, now=T0 + 2)
        # The 100 + 1 changed positions, not the 300 rows the maintenance moved.
        assert replica.refresh() == 101
        assert replica_rows(replica, reader) == reader.positions()


def test_a_replica_of_a_store_with_two_writers_follows_both_writers_tables(tmp_path: Path) -> None:
    path = tmp_path / "snapshots"
    writers = [SnapshotWriter.open(path, writers=2, writer=i) for i in range(2)]
    try:
        writers[0].publish([change("S1", "A", 1, on_hand=1)], [], events_applied=1, now=T0)
        with PositionReplica.open(path) as replica, SnapshotReader.open(path) as reader:
            writers[1].publish([change("S2", "B", 1, on_hand=2)], [], events_applied=1, now=T0 + 1)
            writers[0].publish([change("S1", "A", 2, on_hand=3)], [], events_applied=2, now=T0 + 2)
            assert replica.refresh() == 2
            assert replica_rows(replica, reader) == reader.positions()
            assert [r["on_hand"] for r in reader.positions()] == [3, 2]
    finally:
        for writer in writers:
            writer.close()


def test_lookups_from_other_threads_go_on_while_a_refresh_runs(
    store: tuple[Path, SnapshotWriter, SnapshotReader],
) -> None:
    path, writer, reader = store
    writer.publish([change("S1", f"K{i:04d}", 1, on_hand=i) for i in range(2_000)], [], events_applied=1, now=T0)
    with PositionReplica.open(path) as replica:
        seen: list[object] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def look() -> None:
            try:
                while not stop.is_set():
                    row = replica.position("S1", "K0007")
                    assert row is not None
                    seen.append(row["on_hand"])
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=look) for _ in range(2)]
        for thread in threads:
            thread.start()
        for version in range(2, 6):
            writer.publish(
                [change("S1", "K0007", version, on_hand=1_000 + version)], [], events_applied=version, now=T0
            )
            replica.refresh()
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        assert not errors
        # Every lookup saw one committed state: the first or a later refresh's.
        assert set(seen) <= {7, 1_002, 1_003, 1_004, 1_005}
        assert replica.position("S1", "K0007") == reader.positions(sku="K0007", site_id="S1")[0]


def test_a_following_replica_catches_up_by_itself(store: tuple[Path, SnapshotWriter, SnapshotReader]) -> None:
    path, writer, reader = store
    writer.publish([change("S1", "A", 1, on_hand=5)], [], events_applied=1, now=T0)
    with PositionReplica.open(path) as replica:
        replica.follow(every=0.01)
        sid = writer.publish(
            [change("S1", "A", 2, on_hand=6), change("S2", "B", 1, on_hand=1)], [], events_applied=3, now=T0 + 1
        )
        deadline = time.monotonic() + 20
        while replica.snapshot_id != sid and time.monotonic() < deadline:
            time.sleep(0.01)
        assert replica.snapshot_id == sid
        assert replica.refreshed_at is not None
        assert replica_rows(replica, reader) == reader.positions()


def test_when_following_fails_lookups_raise_the_error_instead_of_answering_stale(
    store: tuple[Path, SnapshotWriter, SnapshotReader], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, writer, _ = store
    writer.publish([change("S1", "A", 1, on_hand=5)], [], events_applied=1, now=T0)
    with PositionReplica.open(path) as replica:

        def broken() -> int:
            raise SnapshotError("catalog unreachable")

        monkeypatch.setattr(replica, "refresh", broken)
        replica.follow(every=0.01)
        deadline = time.monotonic() + 20
        while replica._failure is None and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(SnapshotError, match=r"stopped following .*: catalog unreachable"):
            replica.position("S1", "A")


def test_a_replica_that_no_longer_matches_the_store_loads_it_again(
    store: tuple[Path, SnapshotWriter, SnapshotReader],
) -> None:
    path, writer, reader = store
    writer.publish([change("S1", "A", 1, on_hand=5), change("S1", "B", 1, on_hand=6)], [], events_applied=2, now=T0)
    with PositionReplica.open(path) as replica:
        # Damage the copy: the counts no longer agree after the next catch-up.
        replica._cursor().execute("DELETE FROM memory.main.position_replica WHERE sku = 'B'")
        writer.publish([change("S1", "A", 2, on_hand=7)], [], events_applied=3, now=T0 + 1)
        replica.refresh()
        assert replica_rows(replica, reader) == reader.positions()
        assert replica.count() == 2


def test_two_keys_with_one_hash_are_merged_on_the_strings_instead(
    store: tuple[Path, SnapshotWriter, SnapshotReader],
) -> None:
    path, writer, reader = store
    writer.publish([change("S1", "A", 1, on_hand=5), change("S1", "B", 1, on_hand=6)], [], events_applied=2, now=T0)
    with PositionReplica.open(path) as replica:
        # A 64-bit collision cannot be found for a test: give B the hash of A instead.
        cursor = replica._cursor()
        cursor.execute(
            "UPDATE memory.main.position_replica SET key_hash = hash('S1'::VARCHAR, 'A'::VARCHAR) WHERE sku = 'B'"
        )
        writer.publish(
            [change("S1", "A", 2, on_hand=7), change("S1", "B", 2, on_hand=8)], [], events_applied=4, now=T0 + 1
        )
        assert replica.refresh() == 2
        stored = {(p["sku"], p["on_hand"], p["version"]) for p in reader.positions()}
        held = set(cursor.execute("SELECT sku, on_hand, version FROM memory.main.position_replica").fetchall())
        assert held == stored == {("A", 7, 2), ("B", 8, 2)}
        assert replica.position("S1", "A") == reader.positions(sku="A")[0]


# Publishes of versions for a few keys (each a new version, some older ones replayed),
# refreshes between some of them: the replica always equals the reader at its snapshot.
_key_version = st.tuples(st.sampled_from(["S1", "S2"]), st.sampled_from(["A", "B", "C"]), st.integers(1, 9))
_steps = st.lists(
    st.tuples(st.lists(_key_version, max_size=4), st.booleans()),
    min_size=1,
    max_size=6,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_steps)
def test_after_any_publishes_and_refreshes_the_replica_equals_the_reader(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[list[tuple[str, str, int]], bool]]
) -> None:
    path = tmp_path_factory.mktemp("replica") / "snapshots"
    with (
        SnapshotWriter.open(path) as writer,
        SnapshotReader.open(path) as reader,
        PositionReplica.open(path) as replica,
    ):
        for n, (changes, refresh) in enumerate(steps):
            writer.publish(
                [change(site, sku, version, on_hand=version * 10 + n) for site, sku, version in changes],
                [],
                events_applied=n,
                now=T0 + n,
            )
            if refresh:
                replica.refresh()
                assert replica_rows(replica, reader) == reader.positions(as_of=replica.snapshot_id)
        replica.refresh()
        assert replica_rows(replica, reader) == reader.positions()
        assert replica.count() == len(reader.positions())
