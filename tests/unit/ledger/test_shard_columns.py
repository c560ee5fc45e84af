"""The compact shard: plain positions packed into columns come back exactly, whatever moves them."""

from __future__ import annotations

from array import array
from unittest.mock import patch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import memory
from ledger import shard as shard_module
from ledger.effects import split
from ledger.events import EventType, InventoryEvent
from ledger.fold import fold
from ledger.policy import LedgerPolicy
from ledger.position import Position
from ledger.position_columns import NUMBERS, numbers_of, position_of, tail_of
from ledger.shard import Shard, ShardImage, position_key
from tests.stories import deliveries, stories
from tests.unit.ledger.test_fold_properties import NARROW, SETTINGS, WIDE, replay_clock, run_fold
from tests.unit.ledger.test_shard import fold_through_shards

pytestmark = pytest.mark.unit

FIELDS = Position.__dataclass_fields__


def assert_same(got: Position, want: Position) -> None:
    """Equal field by field, the window's memory included (chunk by chunk, id by id)."""
    for name in FIELDS:
        assert getattr(got, name) == getattr(want, name), name
    assert dict(got.seen.open) == dict(want.seen.open)
    assert [(c.newest, c.ids) for c in got.seen.sealed] == [(c.newest, c.ids) for c in want.seen.sealed]
    assert got.deltas.open == want.deltas.open
    assert got.deltas.sealed == want.deltas.sealed
    assert got.count == want.count


@SETTINGS
@given(data=st.data(), policy=st.sampled_from([WIDE, NARROW]), chunk=st.sampled_from([2, 3, 64]))
def test_a_plain_position_packed_into_columns_comes_back_equal_field_by_field(data, policy, chunk):
    order = data.draw(deliveries(data.draw(stories())))
    with patch.object(memory, "CHUNK", chunk):
        positions, _, _ = run_fold(order, policy)
    for p in positions.values():
        tail = tail_of(p)
        if tail is not None:
            assert len(numbers_of(p)) == len(NUMBERS)
            assert_same(position_of(p.site_id, p.sku, numbers_of(p), tail), p)


def fold_in_shards(order, policy, shards, sizes, packs):
    """Fold reads through `shards` shards, packing what changed back into columns after the reads in `packs`."""
    by_index = fold_through_shards(order, policy, shards, sizes, packs)
    found = {}
    for shard in by_index:
        shard.take_changed()
        for position in shard.positions().values():
            found[(position.site_id, position.sku)] = position
    return found, by_index


@SETTINGS
@given(
    data=st.data(),
    policy=st.sampled_from([WIDE, NARROW]),
    shards=st.sampled_from([1, 2, 5]),
    packs=st.sets(st.integers(0, 60)),
)
def test_positions_moved_between_columns_and_objects_end_as_the_per_position_fold(data, policy, shards, packs):
    order = data.draw(deliveries(data.draw(stories())))
    sizes = data.draw(st.lists(st.integers(1, 8), max_size=len(order) + 1))
    per_position, _, _ = run_fold(order, policy, batch_sizes=sizes)
    found, by_index = fold_in_shards(order, policy, shards, sizes, packs)
    assert found.keys() == per_position.keys()
    for key, want in per_position.items():
        assert_same(found[key], want)
    for shard in by_index:
        assert shard.census() == (len(shard), sum(p.on_hand < 0 for p in shard.positions().values()))


@SETTINGS
@given(data=st.data(), policy=st.sampled_from([WIDE, NARROW]), packs=st.sets(st.integers(0, 60)))
def test_a_shard_image_restored_into_a_new_shard_equals_the_live_shard(data, policy, packs):
    order = data.draw(deliveries(data.draw(stories())))
    _, (live,) = fold_in_shards(order, policy, 1, [], packs)
    whole = Shard()
    whole.restore([live.image()])
    assert dict(whole.positions()) == dict(live.positions())
    # The same rows as a delta merged into a shard that already holds some of them.
    items = list(live.positions().items())
    half = Shard()
    for key, position in items[::2]:
        half.fold(key, [(0, _receipt(position.site_id, position.sku))], LedgerPolicy())
    everything = Shard()
    everything.restore([half.image(), _changed_image(live)])
    assert dict(everything.positions()) == dict(live.positions())


@SETTINGS
@given(
    data=st.data(),
    policy=st.sampled_from([WIDE, NARROW]),
    closes=st.sets(st.integers(0, 60)),
    hot=st.sampled_from([0, 1, 3, 4096]),
)
def test_the_deltas_of_every_close_restore_the_live_shard_whatever_rows_they_hold_as_objects_or_packed(
    data, policy, closes, hot
):
    # A delta's rows are imaged one by one as what they are: objects (plain or not, folded since
    # the last close) and rows packed back into columns by the close itself (`hot` small: more
    # than `_HOT` rows folded in an interval are all packed before the delta is imaged).
    order = data.draw(deliveries(data.draw(stories())))
    items = [(now, effect) for now, event in zip(replay_clock(order), order, strict=True) for effect in split(event)]
    live, images = Shard(), []
    with patch.object(shard_module, "_HOT", hot):
        for n, (now, effect) in enumerate(items):
            live.fold(position_key(effect.site_id, effect.sku), [(now, effect)], policy)
            if n in closes:
                images.append(live.take_changed().image())
        live.expire_all(replay_clock(order)[-1] if order else 0, policy)
        images.append(live.take_changed().image())
    restored = Shard()
    restored.restore(images)
    assert dict(restored.positions()) == dict(live.positions())
    assert restored.census() == live.census()


def _receipt(site: str, sku: str):
    return split(InventoryEvent("seed", EventType.RECEIVED, 1, site, sku, 3))[0]


def _changed_image(shard: Shard):
    # Every row of `shard` as a delta: mark each one changed by re-putting it unchanged.
    copy = Shard()
    copy.restore([shard.image()])
    for row in range(len(copy)):
        copy._put(row, copy._position(row))
    return copy.take_changed().image()


def test_a_position_with_a_hold_stays_an_object_and_a_plain_one_is_packed():
    policy = LedgerPolicy()
    shard = Shard()
    receipt = InventoryEvent("r", EventType.RECEIVED, 1_000, "ST-1", "A", 5)
    request = InventoryEvent("q", EventType.RESERVATION_REQUESTED, 1_000, "ST-1", "A", 1, ref="R", expires_at=9_000)
    shard.fold("ST-1|A", [(1_000, e) for event in (receipt, request) for e in split(event)], policy)
    shard.fold(
        "ST-1|B", [(1_000, e) for e in split(InventoryEvent("s", EventType.RECEIVED, 1_000, "ST-1", "B", 2))], policy
    )
    held, plain = shard.get("ST-1|A"), shard.get("ST-1|B")
    changed = shard.take_changed()
    assert set(changed) == {"ST-1|A", "ST-1|B"}
    assert shard._objects == {0: held, 1: plain}  # folded in this interval: kept as objects
    assert len(shard.take_changed()) == 0
    assert shard._objects == {0: held}  # not folded for an interval: the plain one went back to columns
    assert shard.get("ST-1|B") == plain
    assert shard.get("ST-1|A") is held
    assert shard.next_due() == 9_000


def test_an_event_id_holding_the_separator_keeps_its_position_an_object():
    # The contract refuses control characters, but an event built by a tool may hold one.
    policy = LedgerPolicy()
    position = None
    for n, event_id in enumerate(["plain", "odd\x1fid"]):
        event = InventoryEvent(event_id, EventType.RECEIVED, 1000 + n, "S", "K", 1)
        position, _ = fold(position, "S", "K", [(1000 + n, effect) for effect in split(event)], policy)
    assert position is not None
    assert tail_of(position) is None
    shard = Shard()
    shard.restore([Shard().image()])
    shard.fold(
        "S|K", [(1000, e) for e in split(InventoryEvent("odd\x1fid", EventType.RECEIVED, 1000, "S", "K", 1))], policy
    )
    shard.take_changed()
    got = shard.get("S|K")
    assert got is not None
    assert "odd\x1fid" in got.seen


def test_changed_rows_read_after_the_shard_changed_again_are_refused():
    policy = LedgerPolicy()
    shard = Shard()
    shard.fold("S|K", [(1, _receipt("S", "K"))], policy)
    changed = shard.take_changed()
    shard.fold("S|K", [(2, _receipt("S", "K"))], policy)
    with pytest.raises(RuntimeError, match="changed again"):
        changed.image()


@SETTINGS
@given(data=st.data(), policy=st.sampled_from([WIDE, NARROW]), packs=st.sets(st.integers(0, 60)))
def test_a_base_image_keeps_the_shard_as_it_was_when_taken_whatever_the_shard_does_after(data, policy, packs):
    # The compactor thread pickles a base while the fold goes on changing the shard.
    order = data.draw(deliveries(data.draw(stories())))
    _, (live,) = fold_in_shards(order, policy, 1, [], packs)
    then = dict(live.positions())
    image = live.image()
    for n, (key, position) in enumerate(then.items()):
        at = position.max_at + 1
        receipt = split(InventoryEvent(f"after-{n}", EventType.RECEIVED, at, position.site_id, position.sku, 3))[0]
        live.fold(key, [(at, receipt)], policy)
    assert not then or dict(live.positions()) != then
    live.take_changed()
    live.take_changed()  # packs the folded rows back: columns and tails rewritten in place
    restored = Shard()
    restored.restore([image])
    assert dict(restored.positions()) == then


def test_a_base_built_from_rows_restores_the_positions_they_hold():
    live = Shard()
    for n in range(3_000):  # past the index's first size (1,024 slots): it must be sized as a shard grows it
        site, sku = f"ST-{n % 7}", f"SKU-{n}"
        live.fold(f"{site}|{sku}", [(n, _receipt(site, sku))], LedgerPolicy())
    live.take_changed()
    live.take_changed()
    whole = live.image()
    assert not whole.objects  # every position plain: all of it is in the columns
    keys = array("q")
    keys.frombytes(whole.keys)
    built = ShardImage.of_rows(
        whole.sites, whole.skus, keys, whole.numbers, (whole.tail_at, whole.tail_len, whole.tails)
    )
    assert built.index == whole.index
    restored = Shard()
    restored.restore([built])
    assert dict(restored.positions()) == dict(live.positions())
    assert restored.get("ST-0|SKU-2999") is None
    assert restored.get("ST-3|SKU-3") == live.get("ST-3|SKU-3")
