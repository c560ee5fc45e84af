"""Layout 2: a publish appends positions to a recent table, a fold (compaction) moves them into the base.

Readers see no difference: `positions` (and `AT (VERSION => n)`, at every snapshot, the
folds' included) equals what the old MERGE per publish gave, whether the fold runs inline
or beside the publishes; the followers see every publish and no fold as a change; a
store of layout 1 is migrated when a writer opens it; and a writer killed inside a fold,
inline or in the background, leaves one of the committed states and a store the next
writer continues.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.snapshot_store import SnapshotReader, SnapshotWriter, StoreLayout
from adapters.snapshot_store.connection import attach, commit_turn, connect, scalar
from adapters.snapshot_store.layout import LAKE
from adapters.snapshot_store.read_model import ReadModel
from adapters.snapshot_store.recent import FOLD_MESSAGE, base_growth, commit_fold, read_recent
from adapters.snapshot_store.replica import PositionReplica
from adapters.snapshot_store.tables import TABLES
from ledger.errors import SnapshotError
from tests.integration.test_snapshot_store import T0, change
from tests.integration.test_snapshot_writers import new_database, postgres  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration

Key = tuple[str, str]
Model = dict[Key, tuple[int, int]]
"""(site, sku) -> (version, on_hand): what the old MERGE per publish left."""


def merged(model: Model, batch: dict[Key, tuple[int, int]]) -> Model:
    """The old semantics: a position is replaced by a version at least the stored one."""
    after = dict(model)
    for key, (version, on_hand) in batch.items():
        if key not in after or version >= after[key][0]:
            after[key] = (version, on_hand)
    return after


def positions(reader: SnapshotReader, as_of: int | None = None) -> Model:
    return {(str(p["site_id"]), str(p["sku"])): (p["version"], p["on_hand"]) for p in reader.positions(as_of=as_of)}  # type: ignore[misc]


def count(reader: SnapshotReader, snapshot_id: int) -> int:
    _, rows = reader.sql(reader.position_count_sql(snapshot_id))
    return int(rows[0][0])


batches = st.lists(
    st.tuples(
        st.dictionaries(
            st.tuples(st.sampled_from(["S1", "S2", "S3"]), st.sampled_from(["A", "B", "C"])),
            st.tuples(st.integers(0, 6), st.integers(-3, 50)),
            min_size=1,
            max_size=6,
        ),
        st.booleans(),  # compact inline after this publish
    ),
    min_size=1,
    max_size=7,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=batches, writers=st.sampled_from([1, 2]), limit=st.sampled_from([None, 2, 5]))
def test_the_view_equals_the_old_merge_on_any_publishes_and_compactions(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[tuple[dict[Key, tuple[int, int]], bool]],
    writers: int,
    limit: int | None,
) -> None:
    # `limit`: folds start in the background past that many recent rows and run while the
    # next publishes land (wherever the threads interleave, every snapshot must hold).
    publish_and_check(tmp_path_factory.mktemp("recent") / "snapshots", "", steps, writers, limit)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=batches, limit=st.sampled_from([2, 5]))
def test_on_a_postgresql_catalog_background_folds_beside_two_writers_keep_every_snapshot(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: Path,  # noqa: F811 (the fixture imported above)
    steps: list[tuple[dict[Key, tuple[int, int]], bool]],
    limit: int,
) -> None:
    # The fold's two phases were designed against SQLite's single-writer catalog; a cluster
    # runs on PostgreSQL, where two writers' folds run beside each other's publishes. Found by
    # this test (2026-12-03) before the writers took commit turns on PostgreSQL too: the count
    # AT (VERSION => a publish's snapshot) missed base rows a fold racing it deleted in the
    # next snapshot (4 runs in 10 of one example). The test below shows why.
    store = tmp_path_factory.mktemp("recent-pg") / "snapshots"
    publish_and_check(store, new_database(postgres), steps, 2, limit)


def test_on_a_postgresql_catalog_no_snapshot_sees_a_delete_another_writer_commits_after_it(
    tmp_path: Path,
    postgres: Path,  # noqa: F811 (the fixture imported above)
) -> None:
    # DuckLake dates a second delete on a data file from the snapshot its transaction began
    # at, not the one it commits as (docs/snapshots.md, "Several writers take commit turns"):
    # a commit landing in between would already miss the row. The writers' commit turn keeps
    # the other commit out of that window, so the delete's snapshot is the one after it began.
    store = tmp_path / "snapshots"
    catalog = new_database(postgres)
    layout = StoreLayout(catalog, 2)
    SnapshotWriter.open(store, catalog=catalog, writers=2, writer=0).close()
    deleting, other = connect(store, layout), connect(store, layout)
    for con in (deleting, other):
        attach(con, store, layout, read_only=False)
    deleting.execute("CREATE TABLE probe (i INTEGER); CREATE TABLE probe_other (i INTEGER)")
    deleting.execute("INSERT INTO probe SELECT * FROM range(10)")
    deleting.execute("DELETE FROM probe WHERE i = 0")  # the data file has a delete file: the next one merges into it
    before = scalar(deleting, f"SELECT * FROM ducklake_last_committed_snapshot('{LAKE}')")
    began = threading.Event()
    committed: list[int] = []

    def delete_in_turn() -> None:
        with commit_turn(store, layout):
            deleting.execute("BEGIN")
            deleting.execute("DELETE FROM probe WHERE i = 1")
            began.set()
            time.sleep(0.5)  # room for the other commit to land here, were it not for the turn
            deleting.execute("COMMIT")
            committed.append(scalar(deleting, f"SELECT * FROM ducklake_last_committed_snapshot('{LAKE}')"))

    thread = threading.Thread(target=delete_in_turn)
    thread.start()
    try:
        assert began.wait(timeout=60)
        with commit_turn(store, layout):
            other.execute("INSERT INTO probe_other VALUES (1)")
    finally:
        thread.join(timeout=60)
    (deleted_at,) = committed
    after = scalar(other, f"SELECT * FROM ducklake_last_committed_snapshot('{LAKE}')")
    for snapshot_id in range(before, after + 1):
        (rows,) = other.execute(f"SELECT count(*) FROM probe AT (VERSION => {snapshot_id})").fetchone() or (None,)
        assert rows == (9 if snapshot_id < deleted_at else 8), snapshot_id
    assert deleted_at == before + 1  # nothing committed inside the delete's transaction
    for con in (deleting, other):
        con.close()


def publish_and_check(
    store: Path,
    catalog: str,
    steps: list[tuple[dict[Key, tuple[int, int]], bool]],
    writers: int,
    limit: int | None,
) -> None:
    """Publish `steps` through `writers` writers; the store's every snapshot must equal the old MERGE's."""
    model: Model = {}
    states: dict[int, Model] = {}
    opened = [
        SnapshotWriter.open(store, catalog=catalog, writers=writers, writer=w, recent_limit=limit)
        for w in range(writers)
    ]
    try:
        for n, (batch, compact) in enumerate(steps):
            # Each writer publishes its own keys (the flow routes a key to one writer).
            for w, writer in enumerate(opened):
                own = {key: value for key, value in batch.items() if hash_share(key, writers) == w}
                if not own:
                    continue
                snapshot_id = writer.publish(
                    [change(site, sku, version, on_hand=on_hand) for (site, sku), (version, on_hand) in own.items()],
                    [],
                    events_applied=n + 1,
                    now=T0 + n,
                )
                model = merged(model, own)
                assert snapshot_id is not None
                states[snapshot_id] = model
                if compact:
                    writer.compact_recent()
                    assert writer.recent_rows == 0
        for writer in opened:
            writer.wait_for_fold()
        with SnapshotReader.open(store) as reader:
            assert positions(reader) == model
            newest = reader.newest()
            assert newest is not None
            # Every snapshot, the folds' too: a fold's equals the publish before it.
            _, ((last,),) = reader.sql("SELECT max(snapshot_id) FROM ducklake_snapshots('lake')")
            assert count(reader, last) == len(model)
            assert count(reader, newest.snapshot_id) == len(model)
            state: Model = {}
            for snapshot_id in range(min(states), last + 1):
                state = states.get(snapshot_id, state)
                assert positions(reader, snapshot_id) == state
                assert count(reader, snapshot_id) == len(state)
            assert_folds_labelled(reader, min(states), last)
    finally:
        for writer in opened:
            writer.close()


def assert_folds_labelled(reader: SnapshotReader, first: int, last: int) -> None:
    """Every snapshot in [first, last] that changed a base's rows is a fold whose commit says by how many."""
    bases = reader.counted_tables()

    def rows(base: str, snapshot_id: int) -> int:
        return int(reader.sql(f"SELECT count(*) FROM {base} AT (VERSION => {snapshot_id})")[1][0][0])

    _, commits = reader.sql(
        "SELECT snapshot_id, commit_message, commit_extra_info FROM ducklake_snapshots('lake') "
        f"WHERE snapshot_id > {int(first)} AND snapshot_id <= {int(last)}"
    )
    for snapshot_id, message, extra_info in commits:
        grew = {base: rows(base, snapshot_id) - rows(base, snapshot_id - 1) for base in bases}
        if message == FOLD_MESSAGE:
            label = json.loads(extra_info)
            assert base_growth(message, extra_info, frozenset(bases)) == grew[label["base"]] == label["growth"]
            assert all(grew[base] == 0 for base in bases if base != label["base"])
        else:
            assert set(grew.values()) == {0}, (snapshot_id, grew)


def hash_share(key: Key, writers: int) -> int:
    # Any fixed split will do for the store: it only needs each key to have one writer.
    return (ord(key[0][-1]) + ord(key[1])) % writers


def test_a_publish_only_inserts_and_a_compaction_empties_the_recent_table(tmp_path: Path) -> None:
    store = tmp_path / "snapshots"
    with SnapshotWriter.open(store, recent_limit=None) as writer:
        writer.publish([change("S1", "A", 1, on_hand=5), change("S1", "B", 1)], [], events_applied=2, now=T0)
        writer.publish([change("S1", "A", 2, on_hand=7)], [], events_applied=3, now=T0 + 1)
        assert writer.recent_rows == 3
        assert writer.compact_recent() == 2
    with SnapshotReader.open(store) as reader:
        _, recent = reader.sql("SELECT count(*) FROM positions_recent")
        _, base = reader.sql("SELECT site_id, sku, version, on_hand FROM positions_base ORDER BY ALL")
        _, ((last,),) = reader.sql("SELECT max(snapshot_id) FROM ducklake_snapshots('lake')")
        _, feed = reader.sql(
            f"SELECT count(*) FROM ducklake_table_changes('lake', 'main', 'positions_base', 0, {last}) "
            "WHERE change_type != 'insert'"
        )
    assert recent == [(0,)]
    assert base == [("S1", "A", 2, 7), ("S1", "B", 1, 10)]
    assert feed == [(0,)]  # new keys go into the base by INSERT: nothing read, nothing deleted


def test_a_publish_past_the_limit_compacts_the_recent_table(tmp_path: Path) -> None:
    store = tmp_path / "snapshots"
    with SnapshotWriter.open(store, recent_limit=3) as writer:
        writer.publish([change("S1", "A", 1), change("S1", "B", 1)], [], events_applied=2, now=T0)
        assert writer.recent_rows == 2
        writer.publish([change("S1", "A", 2, on_hand=4)], [], events_applied=3, now=T0 + 1)
        writer.wait_for_fold()  # it runs beside the publishes
        assert writer.recent_rows == 0
        (fold,) = writer.take_folds()
        assert (fold.rows, fold.keys, fold.background) == (3, 2, True)
    with SnapshotReader.open(store) as reader:
        assert positions(reader) == {("S1", "A"): (2, 4), ("S1", "B"): (1, 10)}


def test_publishes_landing_between_a_folds_read_and_its_commit_stay_in_the_recent_table(tmp_path: Path) -> None:
    # The two phases of a fold driven by hand from a connection of their own, with
    # publishes in between: what a background fold does, at a chosen interleaving.
    store = tmp_path / "snapshots"
    with SnapshotWriter.open(store, recent_limit=None) as writer:
        writer.publish([change("S1", "A", 1, on_hand=1), change("S1", "B", 1, on_hand=1)], [], events_applied=1, now=T0)
        writer.publish([change("S1", "A", 2, on_hand=2)], [], events_applied=2, now=T0 + 1)
        writer.compact_recent()
        writer.publish(
            [change("S1", "B", 2, on_hand=2), change("S2", "A", 1, on_hand=1)], [], events_applied=3, now=T0 + 2
        )
        con = connect(store)
        replica, model = PositionReplica.open(store), ReadModel.open(store)
        try:
            attach(con, store, StoreLayout(), read_only=False)
            read = read_recent(con, "positions_base", "positions_recent")
            assert read is not None
            # Publishes after the fold's read: a newer version of a folded key, a new key.
            writer.publish(
                [change("S1", "B", 3, on_hand=3), change("S3", "A", 1, on_hand=1)], [], events_applied=4, now=T0 + 3
            )
            folded = commit_fold(con, "positions_base", "positions_recent", read)
            # The followers see the publish's two keys, and the fold as no change.
            assert replica.refresh() == model.refresh() == 2
            # The next publish sees a snapshot it did not make, reads the versions again, and goes on.
            last = writer.publish([change("S2", "A", 2, on_hand=2)], [], events_applied=5, now=T0 + 4)
            assert replica.refresh() == model.refresh() == 1
            assert replica.position("S2", "A")["on_hand"] == 2  # type: ignore[index]
            assert replica.position("S1", "B")["on_hand"] == 3  # type: ignore[index]
            assert replica.count() == 4
        finally:
            con.close()
            replica.close()
            model.close()
    assert last is not None
    with SnapshotReader.open(store) as reader:
        expected = {("S1", "A"): (2, 2), ("S1", "B"): (3, 3), ("S2", "A"): (1, 1), ("S3", "A"): (1, 1)}
        assert positions(reader, folded) == positions(reader, folded - 1) == expected
        assert count(reader, folded) == count(reader, folded - 1) == 4
        assert positions(reader)[("S2", "A")] == (2, 2)
        _, recent = reader.sql(
            f"SELECT site_id, sku, version FROM positions_recent AT (VERSION => {folded}) ORDER BY ALL"
        )
        assert recent == [("S1", "B", 3), ("S3", "A", 1)]  # published after the read: not folded


def test_a_fold_whose_tables_changed_since_its_read_changes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "snapshots"
    with SnapshotWriter.open(store, recent_limit=None) as writer:
        writer.publish([change("S1", "A", 1), change("S1", "B", 1)], [], events_applied=1, now=T0)
        writer.compact_recent()
        writer.publish([change("S1", "A", 2, on_hand=4)], [], events_applied=2, now=T0 + 1)
    con = connect(store)
    try:
        attach(con, store, StoreLayout(), read_only=False)
        read = read_recent(con, "positions_base", "positions_recent")
        assert read is not None
        con.execute(f"DELETE FROM {LAKE}.positions_base WHERE sku = 'A'")  # a repair by hand meanwhile
        with pytest.raises(SnapshotError, match="another process changed them meanwhile"):
            commit_fold(con, "positions_base", "positions_recent", read)
        (recent,) = con.execute(f"SELECT count(*) FROM {LAKE}.positions_recent").fetchone() or (None,)
    finally:
        con.close()
    assert recent == 1


def test_followers_see_every_publish_and_no_compaction_as_a_change(tmp_path: Path) -> None:
    store = tmp_path / "snapshots"
    with SnapshotWriter.open(store, recent_limit=None) as writer:
        writer.publish([change("S1", "A", 1), change("S2", "A", 1)], [], events_applied=2, now=T0)
        with PositionReplica.open(store) as replica, ReadModel.open(store) as model:
            # A publish, a compaction and another publish between two refreshes: both
            # publishes' changes arrive, the compaction's moves do not.
            writer.publish([change("S1", "A", 2, on_hand=3)], [], events_applied=3, now=T0 + 1)
            writer.compact_recent()
            writer.publish([change("S2", "A", 2, on_hand=4)], [], events_applied=4, now=T0 + 2)
            assert replica.refresh() == 2
            assert model.refresh() == 2
            assert replica.position("S1", "A")["on_hand"] == 3  # type: ignore[index]
            assert replica.position("S2", "A")["on_hand"] == 4  # type: ignore[index]
            # A compaction alone: nothing changed.
            writer.compact_recent()
            assert replica.refresh() == 0
            view = model.view
            assert view is not None
            assert view.skus["A"].atp() == [3, 4]
            with SnapshotReader.open(store) as reader:
                newest = reader.newest()
                assert newest is not None
                assert replica.snapshot_id is not None
                assert replica.count() == count(reader, replica.snapshot_id) == 2


def layout_one_store(directory: Path) -> None:
    """A store as the writers before layout 2 made it: each public table one table, no manifest."""
    (directory / "data").mkdir(parents=True)
    con = connect(directory)
    try:
        attach(con, directory, StoreLayout(), read_only=False)
        for name, table in TABLES.items():
            columns = ", ".join(f"{c.name} {c.stored}" for c in table.columns)
            con.execute(f"CREATE TABLE {LAKE}.{name} ({columns})")
        con.execute(
            f"INSERT INTO {LAKE}.positions (site_id, sku, on_hand, reserved, staged, inbound, safety_stock, atp, "
            "negative, version, updated_at) VALUES ('S1', 'A', 5, 0, 0, 0, 0, 5, false, 3, now()), "
            "('S2', 'A', 6, 0, 0, 0, 0, 6, false, 1, now())"
        )
        con.execute(
            f"INSERT INTO {LAKE}.snapshot_info VALUES ((SELECT * FROM {LAKE}.current_snapshot()) + 1, now(), 2, now())"
        )
    finally:
        con.close()


def test_a_writer_migrates_a_store_of_layout_one_and_its_history_stays_readable(tmp_path: Path) -> None:
    store = tmp_path / "snapshots"
    layout_one_store(store)
    with SnapshotReader.open(store) as reader:
        assert reader.layout.version == 1
        before = reader.newest()
        assert before is not None
        old = positions(reader)
    with SnapshotWriter.open(store, recent_limit=None) as writer:
        # A version below the stored 3 is refused, as before: the kept versions read the view.
        writer.publish([change("S1", "A", 2, on_hand=0), change("S1", "B", 1)], [], events_applied=4, now=T0)
    assert json.loads((store / "store.json").read_text())["layout"] == 2
    with SnapshotReader.open(store) as reader:
        assert reader.layout.version == 2
        assert positions(reader, before.snapshot_id) == old
        assert positions(reader) == {**old, ("S1", "B"): (1, 10)}
        newest = reader.newest()
        assert newest is not None
        assert count(reader, newest.snapshot_id) == 3
    with SnapshotWriter.open(store, recent_limit=None) as writer:  # a second open changes nothing
        assert writer.recent_rows == 1


_CHILD = """
import sys
from pathlib import Path
from adapters.snapshot_store import SnapshotWriter
from tests.integration.test_snapshot_recent import batch_for
store, marker = Path(sys.argv[1]), Path(sys.argv[2])
with SnapshotWriter.open(store, recent_limit=None) as writer:
    n = (writer.last_snapshot_info() or {}).get("events_applied", 0)
    while True:
        n += 1
        writer.publish(batch_for(n), [], events_applied=n, now=1_700_000_000_000 + n)
        marker.write_text(str(n))  # compacting after publish n
        writer.compact_recent()
"""


def batch_for(n: int) -> list:  # type: ignore[type-arg]
    """Publish n of the killed writer: 300 keys, a third of them new, version n."""
    return [change(f"S{(n * 7 + i) % 40}", f"K{i % 30}", n, on_hand=n + i) for i in range(300)]


def model_after(n: int) -> Model:
    model: Model = {}
    for k in range(1, n + 1):
        model = merged(model, {(c.site_id, c.sku): (c.version, c.on_hand) for c in batch_for(k)})
    return model


def test_a_writer_killed_inside_a_compaction_leaves_a_committed_state(tmp_path: Path) -> None:
    store, marker = tmp_path / "snapshots", tmp_path / "compacting"
    root = Path(__file__).resolve().parents[2]
    for round_ in range(3):
        # At different points of the compaction.
        kill_after_marker(_CHILD, store, marker, root, 0.02 * round_)


def kill_after_marker(child_code: str, store: Path, marker: Path, root: Path, delay: float) -> int:
    """Run a writer child until it writes `marker`, SIGKILL it `delay` s later; check the store; return its events."""
    marker.unlink(missing_ok=True)
    child = subprocess.Popen([sys.executable, "-c", child_code, str(store), str(marker)], cwd=root)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert marker.exists(), "the writer never reached a fold"
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    with SnapshotReader.open(store) as reader:
        newest = reader.newest()
        assert newest is not None
        published = newest.events_applied
        assert positions(reader) == model_after(published)
        assert count(reader, newest.snapshot_id) == len(model_after(published))
    return published


_BACKGROUND_CHILD = """
import sys
from pathlib import Path
from adapters.snapshot_store import SnapshotWriter
from tests.integration.test_snapshot_recent import batch_for
store, marker = Path(sys.argv[1]), Path(sys.argv[2])
with SnapshotWriter.open(store, recent_limit=900) as writer:
    n = (writer.last_snapshot_info() or {}).get("events_applied", 0)
    while True:
        n += 1
        writer.publish(batch_for(n), [], events_applied=n, now=1_700_000_000_000 + n)
        if writer.recent_rows >= 900:
            marker.write_text(str(n))  # a fold runs beside the next publishes
"""


def test_a_writer_killed_inside_a_background_fold_leaves_a_committed_state(tmp_path: Path) -> None:
    store, marker = tmp_path / "snapshots", tmp_path / "folding"
    root = Path(__file__).resolve().parents[2]
    # After the fold started: in its read, in its commit, or in a publish beside it.
    published = 0
    for delay in (0.0, 0.01, 0.03, 0.06, 0.1):
        published = kill_after_marker(_BACKGROUND_CHILD, store, marker, root, delay)
    # The next writer opens the store, publishes and folds.
    with SnapshotWriter.open(store, recent_limit=None) as writer:
        writer.publish(batch_for(published + 1), [], events_applied=published + 1, now=T0)
        writer.compact_recent()
    with SnapshotReader.open(store) as reader:
        assert positions(reader) == model_after(published + 1)


def test_followers_opened_before_a_migration_load_the_migrated_store_and_follow_it(tmp_path: Path) -> None:
    store = tmp_path / "snapshots"
    layout_one_store(store)
    with PositionReplica.open(store) as replica, ReadModel.open(store) as model:
        with SnapshotWriter.open(store, recent_limit=None) as writer:
            writer.publish([change("S1", "A", 4, on_hand=9)], [], events_applied=3, now=T0)
        replica.refresh()
        model.refresh()
        assert replica.position("S1", "A")["on_hand"] == 9  # type: ignore[index]
        view = model.view
        assert view is not None
        assert view.skus["A"].atp() == [9, 6]
        with SnapshotWriter.open(store, recent_limit=None) as writer:
            writer.publish([change("S2", "A", 2, on_hand=1)], [], events_applied=4, now=T0 + 1)
        assert replica.refresh() == 1
        assert model.refresh() == 1
        assert replica.position("S2", "A")["on_hand"] == 1  # type: ignore[index]
