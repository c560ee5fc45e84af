"""Checkpoint format 4: each sealed chunk written once a chain, later checkpoints referring to it.

Busy positions (more than `MAX_CHUNKS` sealed chunks, kept as objects) fold epoch after
epoch: chunks are sealed, counts cut them, the narrow lateness window expires them. A
checkpoint is taken after each epoch, with the real store on a temporary directory,
compacting often (inline, or by the compactor thread) or never.
"""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.shard_checkpoints import Compactor, ShardCheckpoints
from ledger.effects import split
from ledger.errors import RecoveryError
from ledger.events import EventType, InventoryEvent
from ledger.policy import LedgerPolicy
from ledger.shard import Shard, position_key
from tests.unit.ledger.test_fold_properties import NARROW

PROPERTIES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = {"compact_ratio": 0.5, "max_deltas": 3, "min_compact_rows": 2}
NEVER = {"compact_ratio": 1e9, "max_deltas": 10**9}
MINUTE = 60_000
SITES = ("ST-1", "ST-2", "ST-3")

# An epoch: (events, minutes the clock moves on after it, whether a count lands in it, whether a hold does).
epoch_specs = st.lists(
    st.tuples(st.integers(0, 260), st.integers(0, 30), st.booleans(), st.booleans()), min_size=1, max_size=9
)


def epochs_of(specs):
    """Each epoch's (now, effect) reads: receipts and sales at SITES, a count or a hold now and then."""
    at, serial, epochs = 1_790_000_000_000, 0, []
    for events, minutes, count, hold in specs:
        reads = []
        for n in range(events):
            serial += 1
            at += 50
            kind = EventType.RECEIVED if n % 3 else EventType.SOLD
            reads.append(InventoryEvent(f"e{serial}", kind, at, SITES[n % len(SITES)], "A", 1 + n % 4))
        if count:
            serial += 1
            reads.append(InventoryEvent(f"c{serial}", EventType.COUNTED, at - 3 * MINUTE, SITES[0], "A", 40))
        if hold:
            serial += 1
            reads.append(
                InventoryEvent(
                    f"h{serial}",
                    EventType.RESERVATION_REQUESTED,
                    at,
                    SITES[1],
                    "A",
                    1,
                    ref=f"R{serial}",
                    expires_at=at + 20 * MINUTE,
                )
            )
        epochs.append([(at, effect) for event in reads for effect in split(event)])
        at += minutes * MINUTE
    return epochs


def fold_epoch(shard: Shard, epoch, policy: LedgerPolicy) -> None:
    for now, effect in epoch:
        shard.fold(position_key(effect.site_id, effect.sku), [(now, effect)], policy)
    if epoch:
        shard.expire_due(epoch[-1][0], policy)


def run(root: Path, epochs, *, compactor: Compactor | None = None, **options):
    """Fold and checkpoint each epoch; (shard, store, pointers, the positions live at each checkpoint)."""
    shard, store = Shard(), ShardCheckpoints(root, 0, 1, compactor=compactor, **options)
    store.start_empty()
    pointers, states = [], []
    for epoch in epochs:
        fold_epoch(shard, epoch, NARROW)
        pointers.append(store.save(shard.take_changed(), shard))
        states.append(dict(shard.positions()))
    store.settle()
    return shard, store, pointers, states


def restored(root: Path, checkpoint: int, **options) -> tuple[Shard, ShardCheckpoints]:
    store = ShardCheckpoints(root, 0, 1, compactor=None, **options)
    shard = Shard()
    shard.restore(store.resume(checkpoint))
    return shard, store


def sealed_chunks(shard: Shard) -> int:
    return sum(len(p.seen.sealed) + len(p.deltas.sealed) for p in shard.positions().values())


def tables(path: Path):
    fmt, _, _, _, (_, ids, deltas) = pickle.loads(path.read_bytes())
    assert fmt == 4
    return ids, deltas


@PROPERTIES
@given(specs=epoch_specs, inline=st.booleans())
def test_restoring_the_newest_checkpoint_of_a_chain_gives_the_positions_live_when_it_was_taken(
    tmp_path_factory, specs, inline
):
    root = tmp_path_factory.mktemp("chain")
    compactor = None if inline else Compactor()
    _, _, pointers, states = run(root, epochs_of(specs), compactor=compactor, **SMALL)
    shard, _ = restored(root, pointers[-1][2], **SMALL)
    assert dict(shard.positions()) == states[-1]


@PROPERTIES
@given(
    specs=epoch_specs, compact=st.sampled_from(["inline", "compactor", "never"]), back=st.integers(0, 8), data=st.data()
)
def test_a_resume_from_an_earlier_checkpoint_equals_that_checkpoint_and_folding_on_from_it_equals_the_straight_run(
    tmp_path_factory, specs, compact, back, data
):
    epochs = epochs_of(specs)
    straight = tmp_path_factory.mktemp("straight")
    _, _, _, states = run(straight, epochs, **NEVER)
    root = tmp_path_factory.mktemp("chain")
    options = NEVER if compact == "never" else SMALL
    _, _, pointers, _ = run(root, epochs, compactor=Compactor() if compact == "compactor" else None, **options)
    # Bytewax resumes from the newest checkpoint or the one before (never committed: rolled back);
    # a chain that was never compacted still holds every checkpoint, and any can be resumed from.
    k = max(1, len(epochs) - (back if compact == "never" else back % 2))
    shard, store = restored(root, pointers[k - 1][2], **options)
    assert dict(shard.positions()) == states[k - 1]
    for epoch in epochs[k:]:
        fold_epoch(shard, epoch, NARROW)
        store.save(shard.take_changed(), shard)
    assert dict(shard.positions()) == states[-1]
    # Resumed again, from the end or (no compaction) any checkpoint since k: what was written after
    # the first resume resolves against the files it loaded.
    j = data.draw(st.integers(k, store.last)) if compact == "never" else store.last
    again, _ = restored(root, j, **options)
    assert dict(again.positions()) == states[j - 1]


@PROPERTIES
@given(specs=epoch_specs)
def test_compacting_in_between_restores_the_same_positions_as_a_chain_of_deltas_only(tmp_path_factory, specs):
    epochs = epochs_of(specs)
    compacted = tmp_path_factory.mktemp("compacted")
    _, _, _pointers, _ = run(compacted, epochs, compactor=Compactor(), **SMALL)
    deltas = tmp_path_factory.mktemp("deltas")
    _, store, _, states = run(deltas, epochs, **NEVER)
    assert not [name for name in store.files() if name.startswith("base-")]
    for root in (compacted, deltas):
        shard, _ = restored(root, len(epochs), **SMALL)
        assert dict(shard.positions()) == states[-1]


def test_a_delta_writes_only_the_chunks_sealed_since_the_chain_last_wrote_its_positions(tmp_path):
    epochs = epochs_of([(900, 0, False, True), (30, 0, False, True), (300, 0, False, False)])
    shard, _store, _, _ = run(tmp_path, epochs, **NEVER)
    assert sealed_chunks(shard) > 3 * 4  # busy positions: objects with sealed chunks
    first, second, third = (tables(tmp_path / "000" / f"delta-{c:012d}") for c in (1, 2, 3))
    # 900 events over 3 positions: each seals its ids, and its deltas, every 64.
    assert len(first[0]) == 3 * (300 // 64)
    assert first[1]
    assert second == ([], [])  # 10 events more each: nothing sealed, nothing written again
    assert len(third[0]) == 3 * (400 // 64 - 300 // 64)  # only the chunks sealed in the third epoch
    refs = [row[0] for table in (first, second, third) for rows in table for row in rows]
    assert len(refs) == len(set(refs))
    shard_again, _ = restored(tmp_path, 3)
    assert dict(shard_again.positions()) == dict(shard.positions())


def test_a_resumed_store_knows_the_chunks_it_loaded_so_its_next_delta_writes_none_of_them_again(tmp_path):
    run(tmp_path, epochs_of([(900, 0, False, True), (30, 0, False, True)]), **NEVER)
    shard, store = restored(tmp_path, 2)
    assert sealed_chunks(shard) > 12
    fold_epoch(shard, epochs_of([(30, 0, False, True)])[0], NARROW)
    store.save(shard.take_changed(), shard)
    assert tables(tmp_path / "000" / "delta-000000000003") == ([], [])


def test_a_base_stands_alone_and_the_deltas_after_it_resolve_against_it(tmp_path):
    epochs = epochs_of([(900, 0, False, True), (30, 0, False, True), (200, 0, False, True), (30, 0, False, True)])
    _shard, store, _, states = run(tmp_path, epochs, **SMALL)
    bases = [name for name in store.files() if name.startswith("base-")]
    assert bases
    base = tmp_path / "000" / bases[-1]
    ids, _deltas = tables(base)
    assert len(ids) >= 3 * (900 // 3 // 64)
    # The base alone restores its checkpoint: no file before it is read.
    c = int(bases[-1][-12:])
    lone = tmp_path / "lone"
    (lone / "000").mkdir(parents=True)
    (lone / "000" / bases[-1]).write_bytes(base.read_bytes())
    alone = Shard()
    alone.restore(ShardCheckpoints(lone, 0, 1).resume(c))
    assert dict(alone.positions()) == states[c - 1]


def test_a_base_the_compactor_fails_to_write_leaves_deltas_that_resolve_without_it(tmp_path):
    class Failing(Compactor):
        def __init__(self) -> None:
            super().__init__()
            self.gate = threading.Event()

        def start(self, write):
            def failing():
                self.gate.wait(30)
                raise OSError(28, "No space left on device")

            return super().start(failing)

    compactor = Failing()
    epochs = epochs_of([(900, 0, False, True), (200, 0, False, True), (200, 0, False, True), (30, 0, False, True)])
    shard, store = Shard(), ShardCheckpoints(tmp_path, 0, 1, compactor=compactor, **SMALL)
    store.start_empty()
    for epoch in epochs:
        fold_epoch(shard, epoch, NARROW)
        store.save(shard.take_changed(), shard)
    compactor.gate.set()
    store.settle()
    for epoch in epochs_of([(300, 0, False, True)]):
        fold_epoch(shard, epoch, NARROW)
        store.save(shard.take_changed(), shard)
    assert not [name for name in store.files() if name.startswith("base-")]
    again, _ = restored(tmp_path, store.last)
    assert dict(again.positions()) == dict(shard.positions())


def test_a_reference_no_file_of_the_chain_defines_is_refused_with_a_recovery_error(tmp_path):
    run(tmp_path, epochs_of([(900, 0, False, True), (200, 0, False, True)]), **NEVER)
    first = tmp_path / "000" / "delta-000000000001"
    fmt, shard, shards, c, (fields_, ids, deltas) = pickle.loads(first.read_bytes())
    first.write_bytes(pickle.dumps((fmt, shard, shards, c, (fields_, ids[:1], deltas))))
    with pytest.raises(RecoveryError, match=r"refers to sealed chunk \d+ of checkpoint 1, which neither"):
        Shard().restore(ShardCheckpoints(tmp_path, 0, 1).resume(2))


def test_a_chain_written_in_format_3_restores_and_a_format_4_chain_continues_it(tmp_path):
    """Format 3 as main wrote it before this change: the image's fields, every sealed chunk inline."""
    epochs = epochs_of([(900, 0, False, True), (60, 5, True, True), (200, 0, False, False), (90, 0, False, True)])
    shard, directory = Shard(), tmp_path / "000"
    directory.mkdir()
    states = []
    for c, epoch in enumerate(epochs[:3], start=1):
        fold_epoch(shard, epoch, NARROW)
        image = shard.image() if c == 1 else shard.take_changed().image()
        if c == 1:
            shard.take_changed()
        fields_ = (image.whole, image.sites, image.skus, bytes(image.keys), bytes(image.numbers))
        fields_ += (bytes(image.tail_at), bytes(image.tail_len), bytes(image.tails), bytes(image.index), image.objects)
        name = f"{'base' if c == 1 else 'delta'}-{c:012d}"
        (directory / name).write_bytes(pickle.dumps((3, 0, 1, c, fields_)))
        states.append(dict(shard.positions()))
    assert sealed_chunks(shard) > 12
    resumed, store = restored(tmp_path, 3, **NEVER)
    assert dict(resumed.positions()) == states[-1]
    fold_epoch(resumed, epochs[3], NARROW)
    store.save(resumed.take_changed(), resumed)
    # The old files' chunks are known to none: the first format-4 delta writes the ones it needs.
    assert tables(directory / "delta-000000000004")[0]
    again, _ = restored(tmp_path, 4, **NEVER)
    assert dict(again.positions()) == dict(resumed.positions())


@pytest.mark.parametrize("compactor", [None, "thread"])
def test_chunks_of_a_row_a_base_packs_into_columns_are_written_again_by_the_deltas_after_it(tmp_path, compactor):
    # A position with four sealed chunks, then two more, is an object: deltas 1 and 2 write its chunks.
    # The window forgets the first four (3), so the base (4) packs it into columns, without its two
    # newer chunks, while the shard keeps it an object (folded in both intervals). When it seals more
    # (5), delta 5 must write those two again: the files that held them are gone with the base.
    t0 = 1_790_000_000_000

    def receipts(prefix, at, n, site="ST-1"):
        return [
            (at + k, e)
            for k in range(n)
            for e in split(InventoryEvent(f"{prefix}{k}", EventType.RECEIVED, at + k, site, "A", 1))
        ]

    epochs = [
        receipts("a", t0, 130),
        receipts("b", t0 + 30 * MINUTE, 70),
        receipts("c", t0 + 50 * MINUTE, 1),
        receipts("d", t0 + 50 * MINUTE + 5, 1),
        receipts("e", t0 + 51 * MINUTE, 130),
    ]
    options = {"compact_ratio": 1.0, "max_deltas": 100, "min_compact_rows": 3}
    shard = Shard()
    store = ShardCheckpoints(tmp_path, 0, 1, compactor=Compactor() if compactor else None, **options)
    store.start_empty()
    chunks = []
    for epoch in epochs:
        fold_epoch(shard, epoch, NARROW)
        store.save(shard.take_changed(), shard)
        store.settle()
        p = shard.positions()[position_key("ST-1", "A")]
        chunks.append(len(p.seen.sealed) + len(p.deltas.sealed))
    assert chunks == [4, 6, 2, 2, 6]
    assert store.files() == ["base-000000000004", "delta-000000000005"]
    again, _ = restored(tmp_path, 5, **options)
    assert dict(again.positions()) == dict(shard.positions())
