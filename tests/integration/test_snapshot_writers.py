"""Several snapshot writers sharing one DuckLake catalog: SQLite (one host) and PostgreSQL (a cluster).

Each writer runs in its own process and owns disjoint (site, sku) keys, as the flow routes
them; they publish at the same time. Every row must land, every commit must be there
(the snapshot ids each writer was given are the ones snapshot_info lists), and readers
(SnapshotReader, the serving store) see the union under the usual table names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.snapshot_store import SnapshotReader, SnapshotWriter, drop_store, read_heartbeat, store_exists
from adapters.snapshot_store.serving import ServingStore
from adapters.snapshot_store.sink import SnapshotSink
from ledger.errors import SnapshotError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SERVER = REPO / "infra" / "postgres" / "server.py"
INSTALL = REPO / "infra" / "postgres" / "install.sh"
ROUNDS = 12
KEYS = 150  # per writer, per round: above DuckLake's inlining limit, so Parquet files and deletes

# One writer process: open as writer i of 2, wait for the go file, publish ROUNDS rounds
# of its own sites' positions (version r, on_hand r), print the snapshot ids it got.
_WRITER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from adapters.snapshot_store import SnapshotWriter
    from ledger.outputs import PositionChange

    store, catalog, index, rounds, keys, go = sys.argv[1:7]
    index, rounds, keys = int(index), int(rounds), int(keys)
    T0 = 1_764_000_000_000

    def change(site, sku, version):
        return PositionChange(
            site_id=site, sku=sku, on_hand=version, reserved=0, staged=0, inbound_qty=0,
            safety_stock=0, atp=version, negative=False, version=version, updated_at=T0 + version,
            max_occurred_at=T0 + version, inbound=(), offer=None,
        )

    writer = SnapshotWriter.open(Path(store), catalog=catalog, writers=2, writer=index)
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.01)
    ids = []
    for r in range(1, rounds + 1):
        changes = [change(f"W{index}-S{k % 5}", f"SKU-{k:04d}", r) for k in range(keys)]
        ids.append(writer.publish(changes, [], events_applied=r * 10, now=T0 + r))
        writer.heartbeat(T0 + r)
    writer.close()
    print(json.dumps(ids), flush=True)
    """
)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A throwaway PostgreSQL server for this module (installed first when missing, as root)."""
    installed = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, check=False)
    if installed.returncode == 3 and os.environ.get("CI") != "true":
        pytest.skip(installed.stderr.strip())
    assert installed.returncode == 0, installed.stderr
    home = tmp_path_factory.mktemp("postgres")
    started = subprocess.run(
        [sys.executable, str(SERVER), "up", "--dir", str(home)], capture_output=True, text=True, check=False
    )
    assert started.returncode == 0, started.stderr
    try:
        yield home
    finally:
        subprocess.run([sys.executable, str(SERVER), "down", "--dir", str(home)], capture_output=True, check=False)


def new_database(server: Path) -> str:
    name = f"lake_{uuid.uuid4().hex[:12]}"
    made = subprocess.run(
        [sys.executable, str(SERVER), "createdb", "--dir", str(server), name],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    return "postgres:" + made.stdout.strip()


@pytest.fixture(params=["sqlite", "postgres"])
def catalog(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return ""
    return new_database(request.getfixturevalue("postgres"))


def publish_from_two_processes(store: Path, catalog: str, tmp_path: Path) -> list[list[int]]:
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(store), catalog, str(i), str(ROUNDS), str(KEYS), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        for i in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline().strip()
            assert line == "ready", child.stderr.read() if child.stderr else ""
        go.touch()  # both open: now they publish at the same time
        results = []
        for child in children:
            out, err = child.communicate(timeout=240)
            assert child.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    return results


def test_two_writer_processes_publishing_disjoint_keys_at_once_lose_no_row_and_no_commit(
    catalog: str, tmp_path: Path
) -> None:
    store = tmp_path / "snapshots"
    ids = publish_from_two_processes(store, catalog, tmp_path)

    # Every publish committed its own snapshot.
    assert all(len(mine) == ROUNDS and None not in mine for mine in ids)
    assert len({i for mine in ids for i in mine}) == 2 * ROUNDS
    assert all(mine == sorted(mine) for mine in ids)
    with SnapshotReader.open(store) as reader:
        assert reader.layout.writers == 2
        positions = reader.positions()
        # Every row landed, at the last round's values, each key once.
        assert len(positions) == 2 * KEYS
        assert {(p["version"], p["on_hand"]) for p in positions} == {(ROUNDS, ROUNDS)}
        assert len({(p["site_id"], p["sku"]) for p in positions}) == 2 * KEYS
        # snapshot_info lists exactly the commits the writers were told about, with the
        # store's running total of events applied (each writer's latest count, summed).
        _, rows = reader.sql("SELECT snapshot_id, writer, events_applied FROM snapshot_info ORDER BY snapshot_id")
        assert sorted(r[0] for r in rows) == sorted(i for mine in ids for i in mine)
        assert {r[0]: r[1] for r in rows} == {i: w for w, mine in enumerate(ids) for i in mine}
        latest_by_writer = {0: 0, 1: 0}
        for snapshot_id, writer, events_applied in rows:
            latest_by_writer[writer] = ids[writer].index(snapshot_id) * 10 + 10
            assert events_applied == sum(latest_by_writer.values())
        latest = reader.latest()
        assert latest is not None
        assert latest["snapshot_id"] == max(max(mine) for mine in ids)
        assert latest["events_applied"] == 2 * ROUNDS * 10
        # A writer's own snapshot shows its round; the other writer's keys are as they were then.
        for writer, mine in enumerate(ids):
            for round_, snapshot_id in enumerate(mine, start=1):
                if round_ % 4:
                    continue
                _, [[on_hand_sum, count]] = reader.sql(
                    f"SELECT sum(on_hand), count(*) FROM positions AT (VERSION => {snapshot_id}) "
                    f"WHERE site_id LIKE 'W{writer}-%'"
                )
                assert (on_hand_sum, count) == (round_ * KEYS, KEYS)
    assert read_heartbeat(store) == (1_764_000_000_000 + ROUNDS, None)

    serving = ServingStore(store, poll_interval=60)
    try:
        meta = serving.current
        assert meta is not None
        assert meta.events_applied == 2 * ROUNDS * 10
        assert len(serving.positions("W0-S1", meta.snapshot_id)) == KEYS // 5
        assert len(serving.positions("W1-S1", meta.snapshot_id)) == KEYS // 5
    finally:
        serving.close()

    drop_store(store)
    assert not store_exists(store)


def test_a_store_keeps_its_catalog_and_writer_count(catalog: str, tmp_path: Path) -> None:
    store = tmp_path / "snapshots"
    with (
        SnapshotWriter.open(store, catalog=catalog, writers=2, writer=1),
        pytest.raises(SnapshotError, match="writer 1"),
    ):
        SnapshotWriter.open(store, catalog=catalog, writers=2, writer=1)
    with pytest.raises(SnapshotError, match="cannot be opened with"):
        SnapshotWriter.open(store, catalog=catalog, writers=3, writer=0)
    with pytest.raises(SnapshotError, match="cannot be opened with"):
        SnapshotWriter.open(store, catalog="postgres:host=elsewhere" if not catalog else "", writers=2)
    drop_store(store)


def test_the_sink_has_one_part_per_writer_and_routes_keys_by_their_suffix(tmp_path: Path) -> None:
    one = SnapshotSink(tmp_path)
    assert one.list_parts() == ["snapshots"]
    assert one.part_fn("snapshot") == 0
    twelve = SnapshotSink(tmp_path, writers=12)
    parts = twelve.list_parts()
    # Bytewax indexes part_fn's value into the parts sorted by name.
    assert sorted(parts) == parts
    assert len(parts) == 12
    assert [sorted(parts)[twelve.part_fn(f"snapshot-{i}")] for i in range(12)] == parts
    assert twelve.part_fn("snapshot") == 0
    with pytest.raises(SnapshotError, match="names writer 12"):
        twelve.part_fn("snapshot-12")


_OPENER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from adapters.snapshot_store import SnapshotWriter

    store, catalog, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[5])
    index, writers = int(sys.argv[3]), int(sys.argv[4])
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    SnapshotWriter.open(store, catalog=catalog, writers=writers, writer=index).close()
    print("opened", flush=True)
    """
)


@pytest.mark.parametrize("attempt", range(3))
def test_writer_processes_creating_one_new_store_at_the_same_instant_all_open_it(
    catalog: str, tmp_path: Path, attempt: int
) -> None:
    # The races CI found: two writers creating DuckLake's own tables in a new PostgreSQL
    # catalog, or the store's tables, or switching the SQLite catalog to WAL, at once.
    store, go, writers = tmp_path / "snapshots", tmp_path / "go", 4
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, str(store), catalog, str(i), str(writers), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        for i in range(writers)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        go.touch()
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            assert out.strip().splitlines()[-1] == "opened"
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    with SnapshotReader.open(store) as reader:
        assert reader.layout.writers == writers
        assert reader.positions() == []
