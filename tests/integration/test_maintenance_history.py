"""Reads as of an older snapshot stay what they were across the writer's maintenance.

Found when the pinned-snapshot API test failed under load: a promise's source was missing
from the store as of the snapshot it named, read after the writer's maintenance ran. With
duckdb and ducklake 1.5.5, `ducklake_rewrite_data_files` (maintenance step 2) recomputes
the table's column statistics from the live rows, and DuckDB planned a query of an older
snapshot with them: on_hand 0..4 read back as 256..260 (an ORDER BY packed the values in
a byte, offset by the new minimum 5) and `WHERE on_hand = 0` found nothing. Readers now
plan without statistics propagation (`adapters.snapshot_store.connection._HISTORY_SAFE`);
these tests hold every snapshot's reads, ordered and filtered, through the product's
reader, equal before and after any number of maintenances between publishes.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.snapshot_store.reader import SnapshotReader
from adapters.snapshot_store.writer import SnapshotWriter
from tests.integration.test_snapshot_store import T0, change

pytestmark = pytest.mark.integration

_SITES = ("A", "B", "C", "D")
_SKUS = ("PIN", "NUT")


def _reads(reader: SnapshotReader, snapshot_id: int, on_hand: int) -> tuple[object, ...]:
    """What a snapshot answers: every position in reading order, and a filter on a value."""
    positions = reader.positions(as_of=snapshot_id)
    ordered = [(p["site_id"], p["sku"], p["on_hand"], p["atp"], p["version"]) for p in positions]
    _, filtered = reader.sql(
        f"SELECT site_id, sku FROM positions AT (VERSION => {int(snapshot_id)}) "
        f"WHERE on_hand = {int(on_hand)} ORDER BY site_id, sku"
    )
    return (ordered, filtered)


def test_maintenance_leaves_what_older_snapshots_read_unchanged(tmp_path: Path) -> None:
    writer = SnapshotWriter.open(tmp_path)
    try:
        ids = []
        for i in range(6):
            changes = [change(site, "PIN", i + 1, on_hand=i) for site in _SITES[: i + 1]]
            published = writer.publish(changes, [], events_applied=i, now=T0 + i)
            assert published is not None
            ids.append(published)
        with SnapshotReader.open(tmp_path) as reader:
            before = {x: _reads(reader, x, on_hand=n) for n, x in enumerate(ids)}
        writer.maintain(keep_snapshots_for=timedelta(days=7))
    finally:
        writer.close()
    with SnapshotReader.open(tmp_path) as reader:
        after = {x: _reads(reader, x, on_hand=n) for n, x in enumerate(ids)}
    assert after == before
    # The case that was wrong: the first snapshot's on_hand 0 is outside the newest data's range.
    assert after[ids[0]][0] == [("A", "PIN", 0, 0, 1)]
    assert after[ids[0]][1] == [("A", "PIN")]


# One step: publish these (site index, sku index, on_hand) changes, or (None) maintain.
_publish = st.lists(
    st.tuples(st.integers(0, len(_SITES) - 1), st.integers(0, len(_SKUS) - 1), st.integers(-3, 300)),
    min_size=1,
    max_size=6,
)
_steps = st.lists(st.one_of(_publish, st.none()), min_size=2, max_size=9).filter(
    lambda steps: any(s is None for s in steps) and any(s is not None for s in steps)
)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_steps)
def test_any_publishes_and_maintenances_leave_every_snapshot_reading_as_it_did(
    tmp_path_factory: pytest.TempPathFactory, steps: list[list[tuple[int, int, int]] | None]
) -> None:
    directory = tmp_path_factory.mktemp("lake")
    writer = SnapshotWriter.open(directory)
    versions: dict[tuple[str, str], int] = {}
    seen: dict[int, tuple[object, ...]] = {}
    probes: dict[int, int] = {}
    long_lived = None
    try:
        for n, step in enumerate(steps):
            if step is None:
                writer.maintain(keep_snapshots_for=timedelta(days=7))
                if long_lived is None:
                    # A reader attached before a later maintenance must read right too.
                    long_lived = SnapshotReader.open(directory)
            else:
                latest = {(_SITES[s], _SKUS[k]): on_hand for s, k, on_hand in step}
                changes = []
                for key, on_hand in latest.items():
                    versions[key] = versions.get(key, 0) + 1
                    changes.append(change(key[0], key[1], versions[key], on_hand=on_hand))
                published = writer.publish(changes, [], events_applied=n, now=T0 + n)
                assert published is not None
                probes[published] = min(latest.values())
                with SnapshotReader.open(directory) as reader:
                    seen[published] = _reads(reader, published, probes[published])
            for reader in [r for r in (long_lived,) if r is not None]:
                assert {x: _reads(reader, x, probes[x]) for x in seen} == seen
        with SnapshotReader.open(directory) as reader:
            assert {x: _reads(reader, x, probes[x]) for x in seen} == seen
    finally:
        writer.close()
        if long_lived is not None:
            long_lived.close()
