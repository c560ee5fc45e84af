"""The store watch (`ServingStore`): it follows every publish and reads an idle catalog about once a second."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from adapters.snapshot_store import SnapshotWriter
from adapters.snapshot_store.serving import ServingStore
from tests.integration.test_snapshot_store import T0, change


def wait_for(store: ServingStore, snapshot_id: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        current = store.current
        if current is not None and current.snapshot_id == snapshot_id:
            return
        time.sleep(0.005)
    raise AssertionError(f"snapshot {snapshot_id} not seen within 10 s")


def test_the_watch_sees_every_publish_and_reads_an_idle_catalog_about_once_a_second(tmp_path: Path) -> None:
    """A poll whose catalog files stat unchanged skips the catalog but still reads the heartbeat."""
    path = tmp_path / "snapshots"
    with SnapshotWriter.open(path) as writer:
        writer.publish([change("S1", "A", 1, on_hand=5)], [], events_applied=1, now=T0)
        store = ServingStore(path, poll_interval=0.01)
        try:
            for n in range(2, 12):
                sid = writer.publish([change("S1", "A", n, on_hand=n)], [], events_applied=n, now=T0 + n)
                assert sid is not None
                wait_for(store, sid)
                current = store.current
                assert current is not None
                assert current.events_applied == n
            before = store.catalog_reads
            time.sleep(2.0)  # ~200 polls of an idle catalog
            idle = store.catalog_reads - before
            assert 1 <= idle <= 4, idle  # the once-a-second reading, not one a poll
            # The heartbeat is read at every poll, skipped or not: the snapshot's age moves on.
            writer.heartbeat(T0 + 1_000_000)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                current = store.current
                assert current is not None
                if current.current_at == T0 + 1_000_000:
                    break
                time.sleep(0.005)
            assert current.current_at == T0 + 1_000_000
        finally:
            store.close()


def test_a_refresh_reads_the_newest_snapshot_row_only_once_duck_lake_committed_again(tmp_path: Path) -> None:
    """Nothing committed since the last read: no ~20 ms read of snapshot_info; each publish still seen."""
    path = tmp_path / "snapshots"
    with SnapshotWriter.open(path) as writer:
        writer.publish([change("S1", "A", 1, on_hand=5)], [], events_applied=1, now=T0)
        store = ServingStore(path, poll_interval=3600)  # no poll of its own: only these refreshes
        try:
            reads, catalog = store.snapshot_info_reads, store.catalog_reads
            for _ in range(5):
                current = store.refresh()
                assert current is not None
                assert current.events_applied == 1
            assert store.snapshot_info_reads == reads
            assert store.catalog_reads == catalog + 5  # the catalog is still read: its snapshot id
            for n in range(2, 5):
                sid = writer.publish([change("S1", "A", n, on_hand=n)], [], events_applied=n, now=T0 + n)
                current = store.refresh()
                assert current is not None
                assert (current.snapshot_id, current.events_applied) == (sid, n)
                assert store.refresh() == current
            assert store.snapshot_info_reads == reads + 3
            # The heartbeat is still read by a gated refresh: the age moves on.
            writer.heartbeat(T0 + 1_000_000)
            current = store.refresh()
            assert current is not None
            assert current.current_at == T0 + 1_000_000
            assert store.snapshot_info_reads == reads + 3
        finally:
            store.close()


def test_refreshes_from_several_threads_during_publishes_all_end_at_the_newest_snapshot(tmp_path: Path) -> None:
    """The watch and `service.store.refresh()`'s callers share one cursor: one refresh at a time."""
    path = tmp_path / "snapshots"
    with SnapshotWriter.open(path) as writer:
        writer.publish([change("S1", "A", 1, on_hand=5)], [], events_applied=1, now=T0)
        store = ServingStore(path, poll_interval=0.001)
        failures: list[BaseException] = []
        done = threading.Event()

        def hammer() -> None:
            try:
                while not done.is_set():
                    store.refresh()
            except BaseException as exc:  # handed to the test's thread
                failures.append(exc)

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        try:
            for thread in threads:
                thread.start()
            sid = None
            for n in range(2, 8):
                sid = writer.publish([change("S1", "A", n, on_hand=n)], [], events_applied=n, now=T0 + n)
            done.set()
            for thread in threads:
                thread.join()
            assert failures == []
            assert sid is not None
            current = store.refresh()
            assert current is not None
            assert (current.snapshot_id, current.events_applied) == (sid, 7)
        finally:
            done.set()
            store.close()
