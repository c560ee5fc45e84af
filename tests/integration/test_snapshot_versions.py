"""The writer's kept versions (`StoredVersions`) decide what a publish accepts: the tables the lake join gave.

Publish sequences with replays, older and equal versions, new keys among stored ones,
inbound lines, reopened writers (a crash: the versions are read again from the lake) and
maintenance between publishes, against a reference model of the rule: a key's row is
replaced by a version at least the stored one, its inbound lines with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.snapshot_store import SnapshotReader, SnapshotWriter
from adapters.snapshot_store.stored_versions import StoredVersions
from ledger.errors import SnapshotError
from ledger.outputs import InboundLine, PositionChange
from tests.integration.test_snapshot_store import T0
from tests.integration.test_snapshot_store import change as store_change

SITES = ("S1", "S2", "S10")
SKUS = ("A", "B", "A ", "é")  # a trailing space and non-ASCII text are keys of their own


def change(site: str, sku: str, version: int, on_hand: int, lines: int) -> PositionChange:
    inbound = tuple(InboundLine(ref=f"r{version}-{on_hand}-{i}", qty=i + 1, eta=T0 + i) for i in range(lines))
    return store_change(site, sku, version, on_hand=on_hand, inbound=inbound)


@dataclass
class Reference:
    """The rule as the lake join applied it: per key, the row of the highest version seen, ties to the later."""

    rows: dict[tuple[str, str], PositionChange] = field(default_factory=dict)

    def publish(self, changes: list[PositionChange]) -> None:
        batch: dict[tuple[str, str], PositionChange] = {}
        for c in changes:  # within a publish: the highest version, ties to the later (latest_versions)
            kept = batch.get((c.site_id, c.sku))
            if kept is None or c.version >= kept.version:
                batch[(c.site_id, c.sku)] = c
        for key, c in batch.items():
            stored = self.rows.get(key)
            if stored is None or c.version >= stored.version:
                self.rows[key] = c


_CHANGE = st.builds(
    change,
    st.sampled_from(SITES),
    st.sampled_from(SKUS),
    st.integers(1, 6),
    st.integers(-5, 50),
    st.integers(0, 2),
)
_STEP = st.one_of(
    st.tuples(st.just("publish"), st.lists(_CHANGE, min_size=1, max_size=8)),
    st.tuples(st.just("reopen"), st.none()),
    st.tuples(st.just("maintain"), st.none()),
)


@pytest.mark.integration
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_STEP, min_size=1, max_size=10))
def test_publishes_with_replays_reopens_and_maintenance_leave_what_the_lake_join_rule_leaves(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, list[PositionChange] | None]]
) -> None:
    store = tmp_path_factory.mktemp("versions") / "snapshots"
    reference = Reference()
    writer = SnapshotWriter.open(store)
    applied = 0
    try:
        for kind, changes in steps:
            if kind == "publish":
                assert changes is not None
                applied += len(changes)
                writer.publish(changes, [], events_applied=applied, now=T0 + applied)
                reference.publish(changes)
            elif kind == "reopen":
                writer.close()
                writer = SnapshotWriter.open(store)
            else:
                writer.maintain(keep_snapshots_for=timedelta(0))
    finally:
        writer.close()
    if not reference.rows:
        return
    with SnapshotReader.open(store) as reader:
        positions = {
            (p["site_id"], p["sku"]): (p["on_hand"], p["version"], p["inbound"], p["atp"]) for p in reader.positions()
        }
        inbound = sorted((i["site_id"], i["sku"], i["ref"], i["qty"]) for i in reader.inbound())
    assert positions == {key: (c.on_hand, c.version, c.inbound_qty, c.atp) for key, c in reference.rows.items()}
    assert inbound == sorted(
        (c.site_id, c.sku, line.ref, line.qty) for c in reference.rows.values() for line in c.inbound
    )


@pytest.mark.integration
def test_the_kept_versions_equal_the_stored_ones_after_publishes_and_a_reload(tmp_path: Path) -> None:
    store = tmp_path / "snapshots"
    with SnapshotWriter.open(store) as writer:
        writer.publish([change("S1", "A", 3, 1, 0), change("S2", "A", 1, 1, 0)], [], events_applied=2, now=T0)
        writer.publish([change("S1", "A", 2, 9, 0), change("S1", "B", 4, 1, 0)], [], events_applied=4, now=T0 + 1)
        kept = writer._stored_versions()
        loaded = StoredVersions.load(writer._con, "positions")
        for site, sku, version in (("S1", "A", 3), ("S2", "A", 1), ("S1", "B", 4), ("S2", "B", None)):
            assert kept.version(site, sku) == version
            assert loaded.version(site, sku) == version
        assert len(kept) == len(loaded) == 3


@pytest.mark.integration
def test_a_failed_commit_drops_the_kept_versions_and_the_next_publish_reads_them_again(tmp_path: Path) -> None:
    store = tmp_path / "snapshots"
    with SnapshotWriter.open(store) as writer:
        writer.publish([change("S1", "A", 1, 1, 0)], [], events_applied=1, now=T0)
        # The data directory replaced by a file: the publish's INSERT cannot write its
        # Parquet file (a real I/O failure, not a lost race) and fails inside its transaction.
        (store / "data").rename(store / "away")
        (store / "data").write_bytes(b"")
        with pytest.raises(SnapshotError, match="cannot publish 1 positions"):
            writer.publish([change("S1", "A", 2, 2, 0)], [], events_applied=2, now=T0 + 1)
        assert writer._versions is None
        (store / "data").unlink()
        (store / "away").rename(store / "data")
        # Had the failed version 2 been kept, this version 1 would be refused.
        writer.publish([change("S1", "A", 1, 7, 0), change("S1", "B", 1, 1, 0)], [], events_applied=3, now=T0 + 2)
    with SnapshotReader.open(store) as reader:
        assert {(p["site_id"], p["sku"]): (p["on_hand"], p["version"]) for p in reader.positions()} == {
            ("S1", "A"): (7, 1),
            ("S1", "B"): (1, 1),
        }


@given(
    stored=st.dictionaries(st.tuples(st.integers(0, 5), st.integers(0, 5)), st.integers(0, 9), max_size=20),
    batches=st.lists(
        st.dictionaries(st.tuples(st.integers(0, 7), st.integers(0, 7)), st.integers(0, 9), max_size=12), max_size=5
    ),
)
def test_judging_and_committing_follow_a_dictionary_of_versions(
    stored: dict[tuple[int, int], int], batches: list[dict[tuple[int, int], int]]
) -> None:
    index = StoredVersions()
    model: dict[tuple[int, int], int] = {}
    for batch in [stored, *batches]:
        positions = [change(f"S{site}", f"K{sku}", version, 0, 0) for (site, sku), version in batch.items()]
        verdicts = index.judge(positions)
        expected = [key not in model or version >= model[key] for key, version in batch.items()]
        assert verdicts.accepted.tolist() == expected
        assert verdicts.new.tolist() == [key not in model for key in batch]
        index.committed(verdicts)
        for (key, version), accepted in zip(batch.items(), expected, strict=True):
            if accepted:
                model[key] = version
        assert len(index) == len(model)
        for (site, sku), version in model.items():
            assert index.version(f"S{site}", f"K{sku}") == version
        assert bool(np.all(np.diff(index._keys) > 0))


@pytest.mark.integration
def test_a_position_inserted_by_hand_while_the_writer_is_open_is_not_inserted_twice(tmp_path: Path) -> None:
    store = tmp_path / "snapshots"
    with SnapshotWriter.open(store) as writer:
        writer.publish([change("S1", "A", 1, 1, 0)], [], events_applied=1, now=T0)
        # An operator's repair in SQL on the lake, not through publish: a snapshot the
        # writer did not make, so it reads the versions again before its next publish.
        writer._con.execute(
            "INSERT INTO lake.positions_base SELECT 'S1' AS site_id, 'B' AS sku, * EXCLUDE (site_id, sku) "
            "FROM lake.positions WHERE sku = 'A'"
        )
        writer.publish([change("S1", "B", 2, 5, 0)], [], events_applied=2, now=T0 + 1)
    with SnapshotReader.open(store) as reader:
        rows = [(p["site_id"], p["sku"], p["on_hand"], p["version"]) for p in reader.positions()]
    assert rows == [("S1", "A", 1, 1), ("S1", "B", 5, 2)]
