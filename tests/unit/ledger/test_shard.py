"""A shard of positions folds each position exactly as the per-position fold does, whatever the shard count."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.effects import split
from ledger.events import EventType, InventoryEvent
from ledger.memory import NEVER
from ledger.outputs import DecisionStatus, ReservationDecision
from ledger.policy import LedgerPolicy, SafetyStock
from ledger.shard import Shard, position_key, shard_of
from tests.stories import deliveries, stories
from tests.unit.ledger.test_fold_properties import NARROW, SETTINGS, WIDE, replay_clock, run_fold

pytestmark = pytest.mark.unit


def fold_through_shards(order, policy, shards, batch_sizes=(), packs=()):
    """Fold an arrival order through `shards` shards, read by read as the flow does; expire at the end.

    After each read whose number is in `packs`, every shard packs what changed back into columns.
    """
    items = [(now, effect) for now, event in zip(replay_clock(order), order, strict=True) for effect in split(event)]
    by_index = [Shard() for _ in range(shards)]
    sizes, i, read = iter(batch_sizes), 0, 0
    while i < len(items):
        size = next(sizes, 1)
        chunk, i = items[i : i + size], i + size
        groups: dict[str, list] = {}
        for now, effect in chunk:
            groups.setdefault(position_key(effect.site_id, effect.sku), []).append((now, effect))
        for key, effects in groups.items():
            by_index[shard_of(key, shards)].fold(key, effects, policy)
        if read in packs:
            for shard in by_index:
                shard.take_changed()
        read += 1
    final_now = replay_clock(order)[-1] if order else 0
    for shard in by_index:
        shard.expire_all(final_now, policy)
    return by_index


def fold_in_shards(order, policy, shards, batch_sizes=()):
    """The positions of `fold_through_shards`, each checked to sit in the shard its key names."""
    by_index = fold_through_shards(order, policy, shards, batch_sizes)
    positions = {}
    for index, shard in enumerate(by_index):
        for key, position in shard.positions().items():
            positions[(position.site_id, position.sku)] = position
            assert shard_of(key, shards) == index
    return positions


@SETTINGS
@given(data=st.data(), policy=st.sampled_from([WIDE, NARROW]), shards=st.sampled_from([1, 2, 3, 64]))
def test_the_same_final_positions_whatever_the_shard_count(data, policy, shards):
    events = data.draw(stories())
    order = data.draw(deliveries(events))
    sizes = data.draw(st.lists(st.integers(1, 8), max_size=len(order) + 1))
    per_position, _, _ = run_fold(order, policy, batch_sizes=sizes)
    assert fold_in_shards(order, policy, shards, sizes) == per_position


def test_a_position_always_maps_to_the_same_shard_in_every_process():
    # crc32, not Python's salted hash: the same value in any process and any run.
    assert shard_of("ST-1|A", 64) == 65736009 % 64 == 9
    assert shard_of("ST-1|A", 1) == 0


def _request(event_id, site, sku, ref, at, expires_at):
    return InventoryEvent(event_id, EventType.RESERVATION_REQUESTED, at, site, sku, 1, ref=ref, expires_at=expires_at)


def test_a_timer_expires_only_the_due_positions_and_then_wakes_for_the_next_expiry():
    policy = LedgerPolicy()
    shard = Shard()
    for site, expires in (("ST-1", 5_000), ("ST-2", 9_000), ("ST-3", 7_000)):
        receipt = InventoryEvent(f"r-{site}", EventType.RECEIVED, 1_000, site, "A", 1)
        request = _request(f"q-{site}", site, "A", f"R-{site}", 1_000, expires)
        key = position_key(site, "A")
        shard.fold(key, [(1_000, e) for event in (receipt, request) for e in split(event)], policy)
    assert shard.next_due() == 5_000
    shard.take_changed()

    expired = shard.expire_due(7_000, policy)

    decisions = [(key, o.status) for key, out in expired for o in out if isinstance(o, ReservationDecision)]
    assert sorted(decisions) == [("ST-1|A", DecisionStatus.EXPIRED), ("ST-3|A", DecisionStatus.EXPIRED)]
    assert set(shard.take_changed()) == {"ST-1|A", "ST-3|A"}
    assert shard.next_due() == 9_000


def test_a_hold_released_early_leaves_no_timer_behind():
    policy = LedgerPolicy()
    shard = Shard()
    receipt = InventoryEvent("r", EventType.RECEIVED, 1_000, "ST-1", "A", 1)
    request = _request("q", "ST-1", "A", "R1", 1_000, 5_000)
    release = InventoryEvent("x", EventType.RESERVATION_RELEASED, 2_000, "ST-1", "A", 1, ref="R1")
    shard.fold("ST-1|A", [(1_000, e) for event in (receipt, request) for e in split(event)], policy)
    shard.fold("ST-1|A", [(2_000, e) for e in split(release)], policy)
    assert shard.next_due() is None
    assert shard.expire_due(10_000, policy) == []


def _expire_all_row_by_row(shard: Shard, now, policy):
    # The reference: every row visited in turn (how expire_all walked before 2026-12-03).
    rule, visit = policy.safety_stock.for_position, []
    for row in range(len(shard)):
        p = shard._objects.get(row)
        if p is None:
            key = shard._keys[row]
            if rule(shard._sites[key >> 32], shard._skus[key & 0xFFFFFFFF]) != shard._numbers[9 * row]:
                visit.append(row)
        elif p.holds or p.expiry_floor < NEVER or rule(p.site_id, p.sku) != p.safety_stock:
            visit.append(row)
    for row in visit:
        shard._armed.pop(row, None)
    return shard._expire(visit, now, policy)


@SETTINGS
@given(data=st.data(), policy=st.sampled_from([WIDE, NARROW]), packs=st.sets(st.integers(0, 60)))
def test_the_end_of_a_replay_under_a_new_safety_stock_visits_what_a_walk_over_every_row_visits(data, policy, packs):
    order = data.draw(deliveries(data.draw(stories())))
    (shard,) = fold_through_shards(order, policy, 1, packs=packs)
    shard.take_changed()
    shard.take_changed()  # most rows compact: their safety stock is only a column
    sites = sorted({p.site_id for p in shard.positions().values()}) or ["ST-1"]
    skus = sorted({p.sku for p in shard.positions().values()}) or ["A"]
    units = st.integers(0, 3)
    safety = SafetyStock(
        default=data.draw(units),
        by_sku=data.draw(st.dictionaries(st.sampled_from(skus), units, max_size=2)),
        by_site=data.draw(st.dictionaries(st.sampled_from(sites), units, max_size=2)),
    )
    later = dataclasses.replace(policy, safety_stock=safety)
    now = (replay_clock(order)[-1] if order else 0) + data.draw(st.integers(0, 10**9))
    twin = Shard()
    twin.restore([shard.image()])
    assert shard.expire_all(now, later) == _expire_all_row_by_row(twin, now, later)
    assert dict(shard.positions()) == dict(twin.positions())
