"""Shard checkpoints on disk: round trip, rollback of a checkpoint Bytewax never committed, gaps refused.

"Epochs" here are chunks of an arrival order; a checkpoint is taken after each, as
`ShardLogic.snapshot` does at each epoch close. Small compaction thresholds make bases,
deltas and their collection all happen within a short story.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import pickle
import sqlite3
import tempfile
import threading
import time
from array import array
from datetime import timedelta
from pathlib import Path

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given
from hypothesis import strategies as st

from adapters.clock import ReplayClock
from adapters.codec import RawInput
from adapters.durable_files import TEMP_PREFIX
from adapters.shard_checkpoints import (
    SHARDS_DIR,
    Compactor,
    ShardCheckpoints,
    check_pointer,
    save_together,
    write_layout,
)
from flows.atp import Wiring, build_flow
from flows.logic import EpochClose, ShardLogic
from ledger.contract import event_to_json_bytes
from ledger.effects import split
from ledger.errors import RecoveryError
from ledger.events import EventType, InventoryEvent
from ledger.outputs import SnapshotBatch
from ledger.position_state import position_state
from ledger.shard import Shard, position_key
from omni_ledger.bootstrap import _recorded_shards, reset_store
from simulator import RetailerSimulator, SimConfig
from tests.stories import deliveries, stories
from tests.unit.ledger.test_fold_properties import NARROW, SETTINGS, WIDE, replay_clock

pytestmark = pytest.mark.integration

SMALL = {"compact_ratio": 0.5, "max_deltas": 3, "min_compact_rows": 2}


def epochs_of(order, cuts):
    """The (now, position key, effects) reads of an arrival order, cut into epochs at `cuts`."""
    items = [(now, effect) for now, event in zip(replay_clock(order), order, strict=True) for effect in split(event)]
    bounds = sorted({0, len(items), *(c % (len(items) + 1) for c in cuts)})
    return [items[a:b] for a, b in itertools.pairwise(bounds)]


def fold_epoch(shard, epoch, policy):
    for now, effect in epoch:
        shard.fold(position_key(effect.site_id, effect.sku), [(now, effect)], policy)


def checkpointed_run(root, epochs, policy, *, stop_after=None, settle_each=False, **options):
    """Fold epochs into one shard, checkpointing after each; returns the shard, its store and each pointer."""
    shard, store, pointers = Shard(), ShardCheckpoints(root, 0, 1, **SMALL, **options), []
    store.start_empty()
    for epoch in epochs[:stop_after]:
        fold_epoch(shard, epoch, policy)
        pointers.append(store.save(shard.take_changed(), shard))
        if settle_each:
            store.settle()
    return shard, store, pointers


def resumed_from(root, pointers, k):
    """The shard and its checkpoints as a resume finds them when Bytewax committed epochs before k only."""
    committed = pointers[k - 1] if k else None
    shard = Shard()
    store = ShardCheckpoints(root, 0, 1, **SMALL)
    if committed is None:
        store.start_empty()
    else:
        shard.restore(store.resume(committed[2]))
    return shard, store


def fold_on(shard, store, epochs, policy):
    """The epochs a resumed run replays, each checkpointed as at an epoch close."""
    for epoch in epochs:
        fold_epoch(shard, epoch, policy)
        store.save(shard.take_changed(), shard)


def restored(root, pointer):
    shard = Shard()
    shard.restore(ShardCheckpoints(root, 0, 1, **SMALL).resume(check_pointer(pointer, 1)[2]))
    return shard


@SETTINGS
@given(
    data=st.data(),
    policy=st.sampled_from([WIDE, NARROW]),
    cuts=st.lists(st.integers(0, 400), max_size=12),
)
def test_a_checkpoint_restored_equals_the_live_state_it_was_taken_from(data, policy, cuts):
    order = data.draw(deliveries(data.draw(stories())))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        epochs = epochs_of(order, cuts)
        shard, _, pointers = checkpointed_run(root / "thread", epochs, policy)
        assert dict(restored(root / "thread", pointers[-1]).positions()) == dict(shard.positions())
        # Old checkpoints are collected as new ones become final: files never pile up. Inline,
        # the bound is exact; with the compactor, a checkpoint taken while a base is in flight
        # adds a delta (in a flow a base takes ~1.5 s at 20M positions, an epoch 10 s), so the
        # bound is checked with each base landing before the next close, plus its own delta-c.
        _, inline, _ = checkpointed_run(root / "inline", epochs, policy, compactor=None)
        assert len(inline.files()) <= SMALL["max_deltas"] + 2
        _, landed, _ = checkpointed_run(root / "landed", epochs, policy, settle_each=True)
        assert len(landed.files()) <= SMALL["max_deltas"] + 3


@SETTINGS
@given(
    data=st.data(),
    policy=st.sampled_from([WIDE, NARROW]),
    cuts=st.lists(st.integers(0, 400), min_size=1, max_size=12),
    crash=st.integers(0, 20),
)
def test_a_crash_after_a_checkpoint_write_but_before_bytewax_commits_it_changes_nothing(data, policy, cuts, crash):
    """Fault injection: checkpoint k+1 is on disk, Bytewax resumes from pointer k and replays epoch k+1 on."""
    order = data.draw(deliveries(data.draw(stories())))
    epochs = epochs_of(order, cuts)
    k = crash % len(epochs)
    with tempfile.TemporaryDirectory() as clean_dir, tempfile.TemporaryDirectory() as crash_dir:
        clean, _, _ = checkpointed_run(Path(clean_dir), epochs, policy)
        # The run that crashes writes checkpoint k+1 (epoch k+1 folded) before Bytewax commits it.
        _, _, pointers = checkpointed_run(Path(crash_dir), epochs, policy, stop_after=k + 1)
        resumed, again = resumed_from(Path(crash_dir), pointers, k)
        assert all(int(name.rsplit("-", 1)[1]) <= again.last for name in again.files())
        fold_on(resumed, again, epochs[k:], policy)
        assert dict(resumed.positions()) == dict(clean.positions())
        assert dict(restored(Path(crash_dir), again.pointer()).positions()) == dict(clean.positions())


@SETTINGS
@given(
    data=st.data(),
    policy=st.sampled_from([WIDE, NARROW]),
    cuts=st.lists(st.integers(0, 400), min_size=1, max_size=12),
    crash=st.integers(0, 20),
    torn=st.floats(0, 1),
)
def test_a_kill_inside_a_checkpoint_write_leaves_a_torn_temp_file_that_the_resume_discards(
    data, policy, cuts, crash, torn
):
    """Fault injection: killed while writing checkpoint k+1, after some of its bytes and before the rename."""
    order = data.draw(deliveries(data.draw(stories())))
    epochs = epochs_of(order, cuts)
    k = crash % len(epochs)
    with tempfile.TemporaryDirectory() as clean_dir, tempfile.TemporaryDirectory() as crash_dir:
        clean, _, _ = checkpointed_run(Path(clean_dir), epochs, policy)
        _, store, pointers = checkpointed_run(Path(crash_dir), epochs, policy, stop_after=k + 1)
        store.settle()
        # Turn checkpoint k+1 back into what a kill -9 inside its write leaves: a prefix of its
        # bytes under the temp name, never renamed (the write is temp, fsync, rename). Its
        # delta and, when one was due, its base (written by the compactor thread) are both torn.
        for newest in [name for name in store.files() if int(name.rsplit("-", 1)[1]) == k + 1]:
            written = store.directory / newest
            blob = written.read_bytes()
            written.unlink()
            (store.directory / f"{TEMP_PREFIX}{newest}").write_bytes(blob[: int(len(blob) * torn)])
        resumed, again = resumed_from(Path(crash_dir), pointers, k)
        assert not [name for name in again.files() if name.startswith(TEMP_PREFIX)], again.files()
        fold_on(resumed, again, epochs[k:], policy)
        assert dict(resumed.positions()) == dict(clean.positions())
        assert dict(restored(Path(crash_dir), again.pointer()).positions()) == dict(clean.positions())


@SETTINGS
@given(data=st.data(), cuts=st.lists(st.integers(0, 400), min_size=3, max_size=12))
def test_a_checkpoint_chain_with_a_missing_delta_is_refused(data, cuts):
    order = data.draw(deliveries(data.draw(stories())))
    epochs = epochs_of(order, cuts)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _, store, pointers = checkpointed_run(root, epochs, WIDE)
        store.settle()  # the newest base may still be in the compactor's hands
        base = max((int(n[5:]) for n in store.files() if n.startswith("base-")), default=0)
        needed = [n for n in store.files() if n.startswith("delta-") and int(n[6:]) > base]
        if not needed:
            return  # the last checkpoint is a base: no chain to break in this example
        (store.directory / needed[0]).unlink()
        with pytest.raises(RecoveryError, match="gap"):
            restored(root, pointers[-1])


def test_a_pointer_of_the_per_position_layout_is_refused_with_how_to_rebuild():
    with pytest.raises(RecoveryError, match="--reset"):
        check_pointer((2, "ST-1", "A", 0), 64)
    with pytest.raises(RecoveryError, match="shard count is fixed"):
        check_pointer((3, 16, 7), 64)


def test_a_recovery_directory_of_the_per_position_ledger_is_refused_with_how_to_rebuild(tmp_path):
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    with pytest.raises(RecoveryError, match="--reset, then replay the input from Kafka"):
        _recorded_shards(recovery)
    write_layout(recovery / SHARDS_DIR, 16)
    assert _recorded_shards(recovery) == 16


def simulated_reads(events: int) -> list[RawInput]:
    sim = RetailerSimulator(SimConfig(seed=5, stores=20, skus=200))
    now, reads = 1_790_000_000_000, []
    while len(reads) < events:
        now += 2_000
        reads.extend(RawInput("day", event_to_json_bytes(e)) for e in sim.next_events(now, 500))
    return reads


def test_bytewax_recovery_store_holds_one_row_per_shard_not_per_position(tmp_path):
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    write_layout(recovery / SHARDS_DIR, 8)
    snapshots: list[tuple[str, SnapshotBatch]] = []
    wiring = Wiring(
        source=TestingSource(simulated_reads(20_000), batch_size=500),
        source_kind="test",
        snapshots=TestingSink(snapshots),
        decisions=TestingSink([]),
        dead_letters=TestingSink([]),
        clock=ReplayClock(),
        policy=WIDE,
        shards=8,
        shard_checkpoints=recovery / SHARDS_DIR,
    )
    run_main(
        build_flow(wiring),
        epoch_interval=timedelta(milliseconds=50),
        recovery_config=RecoveryConfig(str(recovery)),  # type: ignore[no-untyped-call]
    )
    positions = {(c.site_id, c.sku) for _, batch in snapshots for c in batch.changes}
    with sqlite3.connect(recovery / "part-0.sqlite3") as db:
        keys = [k for (k,) in db.execute("SELECT DISTINCT state_key FROM snaps WHERE step_id LIKE '%fold%'")]
    assert len(positions) > 1_000
    assert sorted(keys) == sorted(f"shard-{i}" for i in range(8))
    # Each shard's pointer leads to checkpoint files holding every position.
    total = 0
    for i in range(8):
        store = ShardCheckpoints(recovery / SHARDS_DIR, i, 8)
        shard = Shard()
        shard.restore(store.resume(_last_checkpoint(recovery, i)))
        total += len(shard)
    assert total == len(positions)


def _last_checkpoint(recovery: Path, shard: int) -> int:
    with sqlite3.connect(recovery / "part-0.sqlite3") as db:
        (blob,) = db.execute(
            "SELECT ser_change FROM snaps WHERE step_id LIKE '%fold%' AND state_key = ? "
            "ORDER BY snap_epoch DESC LIMIT 1",
            (f"shard-{shard}",),
        ).fetchone()
    return check_pointer(pickle.loads(blob), 8)[2]


def test_a_flow_without_the_checkpoint_directory_refuses_to_resume_a_shard_pointer():
    with pytest.raises(RecoveryError, match="shard checkpoint directory"):
        ShardLogic((3, 16, 7), WIDE, ReplayClock(), None, 16)


def test_reset_removes_the_shard_checkpoints_with_the_recovery_state(tmp_path):
    store = ShardCheckpoints(tmp_path / "recovery" / SHARDS_DIR, 0, 1)
    store.start_empty()
    empty = Shard()
    store.save(empty.take_changed(), empty)
    assert store.files() == ["delta-000000000001"]
    reset_store(tmp_path)
    assert not (tmp_path / "recovery").exists()


def _write_checkpoint_file(root: Path, name: str, payload) -> None:
    (root / "000").mkdir(parents=True, exist_ok=True)
    (root / "000" / name).write_bytes(pickle.dumps(payload))


def test_a_checkpoint_of_the_first_format_is_read_and_packed_into_columns(tmp_path):
    # Format 1 (the shards before columns): a `position_state` tuple per position.
    policy = WIDE
    shard = Shard()
    for n, site in enumerate(("ST-1", "ST-2", "ST-3")):
        fold_epoch(shard, [(1_000 + n, e) for e in split(_received(f"e{n}", site, 1_000 + n))], policy)
    live = dict(shard.positions())
    _write_checkpoint_file(tmp_path, "base-000000000001", (1, 0, 1, 1, [position_state(p) for p in live.values()]))
    store = ShardCheckpoints(tmp_path, 0, 1)
    resumed = Shard()
    resumed.restore(store.resume(1))
    assert dict(resumed.positions()) == live
    assert not resumed._objects  # plain positions went to columns
    store.save(resumed.take_changed(), resumed)
    again = Shard()
    again.restore(ShardCheckpoints(tmp_path, 0, 1).resume(2))
    assert dict(again.positions()) == live


def test_a_checkpoint_of_the_second_format_with_its_numbers_column_by_column_is_read(tmp_path):
    # Format 2 (2026-12-02): a ShardImage's fields with the nine numbers as nine columns.
    policy = WIDE
    shard = Shard()
    for n, site in enumerate(("ST-1", "ST-2", "ST-3")):
        fold_epoch(shard, [(1_000 + n, e) for e in split(_received(f"e{n}", site, 1_000 + n))], policy)
    hold = InventoryEvent("r1", EventType.RESERVATION_REQUESTED, 1_010, "ST-1", "A", 1, ref="R1", expires_at=9_000)
    fold_epoch(shard, [(1_010, e) for e in split(hold)], policy)  # ST-1 keeps a hold: an object row
    shard.take_changed()
    shard.take_changed()
    base = shard.image()
    sale = InventoryEvent("s1", EventType.SOLD, 1_020, "ST-2", "A", 1)
    fold_epoch(shard, [(1_020, e) for e in split(sale)], policy)
    delta = shard.take_changed().image()
    assert len(delta) == 1
    live = dict(shard.positions())
    for name, image in (("base-000000000001", base), ("delta-000000000002", delta)):
        numbers = array("q", bytes(image.numbers))
        columns = tuple(numbers[i::9].tobytes() for i in range(9))
        fields = (image.whole, image.sites, image.skus, bytes(image.keys), columns, bytes(image.tail_at))
        fields += (bytes(image.tail_len), bytes(image.tails), bytes(image.index), image.objects)
        _write_checkpoint_file(tmp_path, name, (2, 0, 1, int(name[-12:]), fields))
    resumed = Shard()
    resumed.restore(ShardCheckpoints(tmp_path, 0, 1).resume(2))
    assert dict(resumed.positions()) == live
    assert len(resumed._objects) == 1  # the row with a hold stays an object, the others are packed


def test_a_checkpoint_of_an_unknown_format_is_refused(tmp_path):
    _write_checkpoint_file(tmp_path, "base-000000000001", (5, 0, 1, 1, ()))
    with pytest.raises(RecoveryError, match="expected format 1 to 4"):
        Shard().restore(ShardCheckpoints(tmp_path, 0, 1).resume(1))


def _received(event_id, site, at):
    return InventoryEvent(event_id, EventType.RECEIVED, at, site, "A", 4)


# -- bases written by the compactor thread (step 3)


class GatedCompactor(Compactor):
    """The real compactor, whose writes wait until the test opens the gate: a base held "in flight"."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.fail = fail

    def start(self, write):
        def gated():
            self.gate.wait(30)
            if self.fail:
                msg = "No space left on device"
                raise OSError(28, msg)
            write()

        return super().start(gated)


@SETTINGS
@given(
    data=st.data(),
    policy=st.sampled_from([WIDE, NARROW]),
    cuts=st.lists(st.integers(0, 400), max_size=12),
)
def test_bases_written_by_the_compactor_thread_restore_what_bases_written_inline_restore(data, policy, cuts):
    order = data.draw(deliveries(data.draw(stories())))
    epochs = epochs_of(order, cuts)
    with tempfile.TemporaryDirectory() as inline_dir, tempfile.TemporaryDirectory() as thread_dir:
        live, _, inline = checkpointed_run(Path(inline_dir), epochs, policy, compactor=None)
        _, store, threaded = checkpointed_run(Path(thread_dir), epochs, policy)
        assert inline == threaded  # the same pointers: a base never delays a checkpoint
        store.settle()
        assert dict(restored(Path(thread_dir), threaded[-1]).positions()) == dict(live.positions())
        assert dict(restored(Path(inline_dir), inline[-1]).positions()) == dict(live.positions())


def _due_story(shard, store, policy, epochs, first=0):
    """Checkpoint `epochs` epochs of fresh receipts (one new position each): SMALL makes a base due at once."""
    pointers = []
    for n in range(first, first + epochs):
        fold_epoch(shard, [(1_000 + n, e) for e in split(_received(f"e{n}", f"ST-{n}", 1_000 + n))], policy)
        pointers.append(store.save(shard.take_changed(), shard))
    return pointers


def test_a_checkpoint_returns_while_its_base_is_still_being_written_and_the_base_counts_once_written(tmp_path):
    compactor = GatedCompactor()
    shard, store = Shard(), ShardCheckpoints(tmp_path, 0, 1, **SMALL, compactor=compactor)
    store.start_empty()
    _due_story(shard, store, WIDE, 3)
    # Every checkpoint is its delta, durable; the base the first one started waits at the gate.
    assert [n for n in store.files() if not n.startswith(TEMP_PREFIX)] == [
        "delta-000000000001",
        "delta-000000000002",
        "delta-000000000003",
    ]
    compactor.gate.set()
    store.settle()
    assert "base-000000000002" in store.files()  # the second checkpoint made the base due
    pointers = _due_story(shard, store, WIDE, 2, first=3)
    # Once the base counts and is final, the deltas it holds are collected.
    names = store.files()
    assert not [n for n in names if n.startswith("delta-") and int(n[6:]) <= 2], names
    assert dict(restored(tmp_path, pointers[-1]).positions()) == dict(shard.positions())


def test_one_base_at_a_time_a_shard_whose_turn_has_not_come_writes_deltas_and_asks_again(tmp_path):
    compactor = GatedCompactor()
    shards = {i: (Shard(), ShardCheckpoints(tmp_path, i, 2, **SMALL, compactor=compactor)) for i in (0, 1)}
    for _, store in shards.values():
        store.start_empty()
    for i, (shard, store) in shards.items():
        _due_story(shard, store, WIDE, 2, first=10 * i)
    # Shard 0 holds the compactor: shard 1 has only deltas, and nothing of its own in flight.
    assert all(n.startswith("delta-") for n in shards[1][1].files()), shards[1][1].files()
    compactor.gate.set()
    shards[0][1].settle()
    shard, store = shards[1]
    _due_story(shard, store, WIDE, 1, first=20)  # its turn: this checkpoint starts its base
    store.settle()
    assert any(n.startswith("base-") for n in store.files()), store.files()
    assert dict(restored_of(tmp_path, 1, 2, store.pointer()).positions()) == dict(shard.positions())


def restored_of(root, index, count, pointer):
    shard = Shard()
    shard.restore(ShardCheckpoints(root, index, count, **SMALL).resume(check_pointer(pointer, count)[2]))
    return shard


def test_a_resume_waits_for_a_base_still_in_flight_so_none_lands_after_it_read_the_directory(tmp_path):
    """A flow run again in the same process after an error: the old flow's base must not land behind the resume."""
    compactor = GatedCompactor()
    shard, store = Shard(), ShardCheckpoints(tmp_path, 0, 1, **SMALL, compactor=compactor)
    store.start_empty()
    pointers = _due_story(shard, store, WIDE, 3)
    opener = threading.Timer(0.2, compactor.gate.set)
    opener.start()
    resumed = Shard()
    again = ShardCheckpoints(tmp_path, 0, 1, **SMALL, compactor=compactor)
    resumed.restore(again.resume(pointers[0][2]))  # Bytewax committed the first epoch only
    opener.join()
    assert compactor.gate.is_set()
    assert all(int(n.rsplit("-", 1)[1]) <= 1 for n in again.files()), again.files()
    assert [p.sku for p in resumed.positions().values()] == ["A"]


def test_a_base_the_compactor_fails_to_write_is_reported_and_the_deltas_keep_the_state(tmp_path, caplog):
    compactor = GatedCompactor(fail=True)
    compactor.gate.set()
    shard, store = Shard(), ShardCheckpoints(tmp_path, 0, 1, **SMALL, compactor=compactor)
    store.start_empty()
    with caplog.at_level(logging.WARNING, logger="omni_ledger.recovery"):
        _due_story(shard, store, WIDE, 2)
        store.settle()
    assert "No space left on device" in caplog.text
    assert not [n for n in store.files() if not n.startswith("delta-")], store.files()
    compactor.fail = False
    pointers = _due_story(shard, store, WIDE, 1, first=2)  # the next checkpoint tries again
    store.settle()
    assert any(n.startswith("base-") for n in store.files()), store.files()
    assert dict(restored(tmp_path, pointers[-1]).positions()) == dict(shard.positions())


# -- a worker's shards checkpointed together at an epoch close (flows.logic.EpochClose)


def _shard_batch(index: int, site: str, at: int):
    """One read of shard `index`: a receipt at `site`, as admission groups it."""
    effects = [(at, effect) for effect in split(_received(f"r-{site}-{at}", site, at))]
    return (index, tuple((effect.key, ((now, effect),)) for now, effect in effects))


def test_the_first_snapshot_of_an_epoch_close_makes_every_changed_shard_of_its_worker_durable(tmp_path):
    write_layout(tmp_path, 4)
    close = EpochClose()
    logics = [ShardLogic(None, WIDE, ReplayClock(), tmp_path, 4, close=close) for _ in range(3)]
    for index, logic in enumerate(logics):
        logic.on_batch([_shard_batch(index, f"ST-{index}", 1_000)])
    first = logics[0].snapshot()
    # Written for the shards not asked yet too, before Bytewax asks them.
    assert [ShardCheckpoints(tmp_path, i, 4).files() for i in range(3)] == [["delta-000000000001"]] * 3
    assert [first, logics[1].snapshot(), logics[2].snapshot()] == [(0, 4, 1), (1, 4, 1), (2, 4, 1)]
    # The next close: only shard 2 changed, whichever shard is asked first.
    logics[2].on_batch([_shard_batch(2, "ST-9", 2_000)])
    assert [logics[0].snapshot(), logics[2].snapshot()] == [(0, 4, 1), (2, 4, 2)]
    assert ShardCheckpoints(tmp_path, 0, 4).files() == ["delta-000000000001"]
    for index, logic in enumerate(logics):
        resumed = Shard()
        resumed.restore(ShardCheckpoints(tmp_path, index, 4).resume(2 if index == 2 else 1))
        assert dict(resumed.positions()) == dict(logic.shard.positions())


def test_a_shard_saved_at_a_close_but_not_asked_hands_over_a_newer_checkpoint_at_its_next_close(tmp_path):
    write_layout(tmp_path, 2)
    close = EpochClose()
    woken, asleep = (ShardLogic(None, WIDE, ReplayClock(), tmp_path, 2, close=close) for _ in range(2))
    woken.on_batch([_shard_batch(0, "ST-0", 1_000)])
    asleep.on_batch([_shard_batch(1, "ST-1", 1_000)])
    assert (woken.snapshot(), asleep.snapshot()) == ((0, 2, 1), (1, 2, 1))
    asleep.on_batch([_shard_batch(1, "ST-1", 2_000)])
    woken.on_batch([_shard_batch(0, "ST-0", 2_000)])
    assert woken.snapshot() == (0, 2, 2)  # shard 1's checkpoint 2 is written with it, never asked for
    asleep.on_batch([_shard_batch(1, "ST-1", 3_000)])
    assert asleep.snapshot() == (1, 2, 3)  # its next close: a newer one, covering both folds
    resumed = Shard()
    resumed.restore(ShardCheckpoints(tmp_path, 1, 2).resume(3))
    assert dict(resumed.positions()) == dict(asleep.shard.positions())


@SETTINGS
@given(
    data=st.data(),
    policy=st.sampled_from([WIDE, NARROW]),
    cuts=st.lists(st.integers(0, 400), min_size=1, max_size=12),
    held=st.integers(0, 20),
)
def test_checkpoints_never_handed_to_bytewax_free_nothing_the_one_it_holds_needs(data, policy, cuts, held):
    # A shard saved at a close whose pointer Bytewax never asked for: Bytewax still holds
    # the older checkpoint, so a base written since must not collect what that one needs.
    order = data.draw(deliveries(data.draw(stories())))
    epochs = epochs_of(order, cuts)
    k = held % (len(epochs) + 1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shard, store = Shard(), ShardCheckpoints(root, 0, 1, **SMALL, compactor=None)
        store.start_empty()
        states = []
        for n, epoch in enumerate(epochs):
            fold_epoch(shard, epoch, policy)
            store.save(shard.take_changed(), shard, handed=n < k)
            states.append(dict(shard.positions()))
        resumed = Shard()
        resumed.restore(ShardCheckpoints(root, 0, 1, **SMALL).resume(k))
        assert dict(resumed.positions()) == (states[k - 1] if k else {})


class _CountedShard(Shard):
    """A shard that counts the whole images taken of it (each one a base's copy of its columns)."""

    def __init__(self) -> None:
        super().__init__()
        self.images = 0

    def image(self, refs=None):
        self.images += 1
        time.sleep(0.05)  # as a large shard's copy takes time: other shards ask the compactor meanwhile
        return super().image(refs)


def test_shards_saved_together_with_their_bases_due_take_one_image_for_the_one_compactor(tmp_path):
    compactor = GatedCompactor()  # the first base stays in flight until the gate opens
    saves = []
    for index in range(6):
        shard, store = _CountedShard(), ShardCheckpoints(tmp_path, index, 6, **SMALL, compactor=compactor)
        store.start_empty()
        fold_epoch(
            shard, [(1_000 + n, e) for n in range(3) for e in split(_received(f"e{index}-{n}", f"ST-{n}", 1_000))], WIDE
        )
        saves.append((store, shard.take_changed(), shard))
    pointers = [pointer for pointer, _ in save_together(saves)]
    assert pointers == [(index, 6, 1) for index in range(6)]
    assert sum(shard.images for _, _, shard in saves) == 1  # the others wait for a later close
    compactor.gate.set()
    for store, _, shard in saves:
        store.settle()
        resumed = Shard()
        resumed.restore(ShardCheckpoints(tmp_path, store.shard, 6, **SMALL).resume(1))
        assert dict(resumed.positions()) == dict(shard.positions())


# -- durability of what a close hands over (adapters.shard_checkpoints.save_together's three steps)


def _path_of(target) -> str:
    """The path a file descriptor (open file or directory) or a path argument names."""
    return os.readlink(f"/proc/self/fd/{target}") if isinstance(target, int) else str(target)


def test_a_pointer_handed_over_names_a_file_fsynced_renamed_and_its_directory_fsynced_before(tmp_path, monkeypatch):
    write_layout(tmp_path, 4)
    close = EpochClose()
    logics = [ShardLogic(None, WIDE, ReplayClock(), tmp_path, 4, close=close) for _ in range(3)]
    for index, logic in enumerate(logics):
        logic.on_batch([_shard_batch(index, f"ST-{index}", 1_000)])
    # Every fsync and rename, in the order they returned (the writes run in threads).
    calls: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def recorded_fsync(fd):
        fsync(fd)
        calls.append(("fsync", _path_of(fd)))

    def recorded_replace(src, dst, **kwargs):
        replace(src, dst, **kwargs)
        calls.append(("rename", _path_of(src)))

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(os, "replace", recorded_replace)
    for index, logic in enumerate(logics):
        assert logic.snapshot() == (index, 4, 1)
        calls.append(("handed", str(index)))
    for index in range(3):
        directory = tmp_path / f"{index:03d}"
        temp = str(directory / f"{TEMP_PREFIX}delta-000000000001")
        steps = [("fsync", temp), ("rename", temp), ("fsync", str(directory)), ("handed", str(index))]
        assert all(step in calls for step in steps), (steps, calls)
        assert [calls.index(step) for step in steps] == sorted(calls.index(step) for step in steps), calls


@pytest.mark.parametrize("failing", ["write", "fsync", "rename"])
def test_a_close_whose_checkpoint_of_one_shard_fails_raises_and_that_shard_hands_over_no_pointer_then_or_later(
    tmp_path, monkeypatch, failing
):
    write_layout(tmp_path, 4)
    close = EpochClose()
    logics = [ShardLogic(None, WIDE, ReplayClock(), tmp_path, 4, close=close) for _ in range(3)]
    for index, logic in enumerate(logics):
        logic.on_batch([_shard_batch(index, f"ST-{index}", 1_000)])
    assert [logic.snapshot() for logic in logics] == [(index, 4, 1) for index in range(3)]
    held = [dict(logic.shard.positions()) for logic in logics]  # what Bytewax's pointers name
    for index, logic in enumerate(logics):
        logic.on_batch([_shard_batch(index, f"ST-{index}", 2_000)])
    # Shard 1's checkpoint 2 fails at one step of its write, as a full or failing disk would.
    broken = str(tmp_path / "001")
    name = {"write": "write", "fsync": "fsync", "rename": "replace"}[failing]
    real = getattr(os, name)

    def failing_call(target, *args, **kwargs):
        if _path_of(target).startswith(broken):
            raise OSError(errno.EIO, f"injected: {failing} failed")
        return real(target, *args, **kwargs)

    monkeypatch.setattr(os, name, failing_call)
    with pytest.raises(OSError, match=f"injected: {failing}"):
        logics[0].snapshot()
    monkeypatch.setattr(os, name, real)
    # Its changed rows were taken for the failed checkpoint: a pointer "unchanged since 1"
    # would name a checkpoint without them. It refuses, and so does every later close of
    # its worker, whichever shard is asked first.
    with pytest.raises(RecoveryError, match="failed at an earlier epoch close"):
        logics[1].snapshot()
    logics[0].on_batch([_shard_batch(0, "ST-0", 3_000)])
    with pytest.raises(RecoveryError, match="failed at an earlier epoch close"):
        logics[0].snapshot()
    # A restart resumes every shard from the pointer Bytewax holds: what the failed close
    # left (checkpoints 2 of shards 0 and 2, shard 1's temp file) is discarded.
    for index in range(3):
        store = ShardCheckpoints(tmp_path, index, 4)
        resumed = Shard()
        resumed.restore(store.resume(1))
        assert dict(resumed.positions()) == held[index]
        assert store.files() == ["delta-000000000001"]
