"""The fold against the naive reference model, under shuffles, duplicates, late events and crashes."""

from __future__ import annotations

import pickle
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import memory
from ledger.dead_letter import DeadLetter, Reason
from ledger.effects import split
from ledger.events import EventType, InventoryEvent
from ledger.fold import expire, fold
from ledger.outputs import PositionChange, ReservationDecision
from ledger.policy import HOUR_MS, LedgerPolicy, SafetyStock
from ledger.position import Position
from ledger.position_state import position_from_state, position_state
from tests.reference import ReferenceLedger
from tests.stories import MIN, deliveries, stories

pytestmark = pytest.mark.unit

WIDE = LedgerPolicy(lateness_window_ms=48 * HOUR_MS)
NARROW = LedgerPolicy(lateness_window_ms=40 * MIN, safety_stock=SafetyStock(by_site={"ST-B": 1}))
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def replay_clock(order):
    """The replay clock: the newest occurred_at read so far from the input."""
    now, out = -(2**62), []
    for event in order:
        now = max(now, event.occurred_at)
        out.append(now)
    return out


def run_fold(order, policy, *, batch_sizes=None):
    """Fold an arrival order one item (or one batch per key) at a time; return positions and outputs."""
    positions: dict[tuple[str, str], Position] = {}
    outputs = []
    items = [(now, effect) for now, event in zip(replay_clock(order), order, strict=True) for effect in split(event)]
    i = 0
    sizes = iter(batch_sizes or [])
    while i < len(items):
        size = next(sizes, 1)
        chunk = items[i : i + size]
        i += size
        by_key: dict[tuple[str, str], list] = {}
        for now, effect in chunk:
            by_key.setdefault((effect.site_id, effect.sku), []).append((now, effect))
        for key, batch in by_key.items():
            positions[key], out = fold(positions.get(key), key[0], key[1], batch, policy)
            outputs.extend(out)
    final_now = replay_clock(order)[-1] if order else 0
    for key, position in positions.items():
        positions[key], out = expire(position, final_now, policy)
        outputs.extend(out)
    return positions, outputs, final_now


def run_reference(order, policy):
    model = ReferenceLedger(policy)
    for now, event in zip(replay_clock(order), order, strict=True):
        for effect in split(event):
            model.feed(now, effect)
    return model


def summary(position: Position):
    view = position.view()
    return (
        view.on_hand,
        view.reserved,
        view.staged,
        {line.ref: (line.qty, line.eta) for line in view.inbound},
        view.atp,
        view.negative,
    )


def reference_summary(model, key, final_now):
    v = model.view(key, final_now)
    return (v.on_hand, v.reserved, v.staged, v.inbound, v.atp, v.on_hand < 0)


def request_decisions(outputs):
    return [
        (o.reservation_id, o.status.value)
        for o in outputs
        if isinstance(o, ReservationDecision)
        and o.reason in {"atp_sufficient", "insufficient_atp", "expired_on_arrival", "ended_before_request_arrived"}
    ]


def per_key(outputs, key):
    return [
        (o.reservation_id, o.status.value)
        for o in outputs
        if isinstance(o, ReservationDecision) and (o.site_id, o.sku) == key
    ]


@SETTINGS
@given(data=st.data(), policy=st.sampled_from([WIDE, NARROW]), chunk=st.sampled_from([2, 3, 256]))
def test_fold_matches_reference_model_under_shuffles_duplicates_and_lateness(data, policy, chunk):
    events = data.draw(stories())
    order = data.draw(deliveries(events))
    with patch.object(memory, "CHUNK", chunk):  # small chunks: sealing, splitting and settling all happen
        positions, outputs, final_now = run_fold(order, policy)
    model = run_reference(order, policy)
    assert set(positions) == {k for k, h in model.history.items() if h}
    for key, position in positions.items():
        assert summary(position) == reference_summary(model, key, final_now), key
    assert request_decisions(outputs) == model.request_decisions
    too_late = [(d.event_id, d.reason) for d in outputs if isinstance(d, DeadLetter)]
    assert sorted(too_late) == sorted((eid, Reason.TOO_LATE) for _, eid in model.too_late)


@SETTINGS
@given(data=st.data())
def test_final_positions_do_not_depend_on_arrival_order_without_requests(data):
    events = data.draw(stories(with_requests=False))
    in_order, _, now_a = run_fold(events, WIDE)
    shuffled, _, now_b = run_fold(data.draw(deliveries(events)), WIDE)
    assert now_a == now_b
    assert {k: summary(p) for k, p in in_order.items()} == {k: summary(p) for k, p in shuffled.items()}


@SETTINGS
@given(data=st.data(), policy=st.sampled_from([WIDE, NARROW]))
def test_batching_changes_nothing_but_the_number_of_position_changes(data, policy):
    events = data.draw(stories())
    order = data.draw(deliveries(events))
    sizes = data.draw(st.lists(st.integers(1, 8), max_size=len(order) + 1))
    one, out_one, _ = run_fold(order, policy)
    batched, out_batched, _ = run_fold(order, policy, batch_sizes=sizes)
    assert {k: summary(p) for k, p in one.items()} == {k: summary(p) for k, p in batched.items()}
    # A batch folds key by key, so only the order within one key is kept.
    assert sorted(request_decisions(out_one)) == sorted(request_decisions(out_batched))
    for key in one:
        assert per_key(out_one, key) == per_key(out_batched, key)


@SETTINGS
@given(data=st.data(), policy=st.sampled_from([WIDE, NARROW]))
def test_crash_and_replay_from_last_snapshot_converges_to_the_same_view(data, policy):
    """Crash after item k, restore the state saved after item j <= k, replay from j: at-least-once.

    Downstream keeps the highest version per key; that view must equal an uninterrupted run.
    """
    events = data.draw(stories())
    order = data.draw(deliveries(events))
    clock = replay_clock(order)
    items = [(now, effect) for now, event in zip(clock, order, strict=True) for effect in split(event)]
    k = data.draw(st.integers(0, len(items)))
    j = data.draw(st.integers(0, k))

    def consume(state, from_, to, sink):
        for now, effect in items[from_:to]:
            key = (effect.site_id, effect.sku)
            state[key], out = fold(state.get(key), key[0], key[1], [(now, effect)], policy)
            for o in out:
                if isinstance(o, PositionChange) and o.version > sink.get(key, (0, None))[0]:
                    sink[key] = (o.version, o)

    clean_state, clean_sink = {}, {}
    consume(clean_state, 0, len(items), clean_sink)
    state, sink = {}, {}
    consume(state, 0, j, sink)
    # The snapshot the runtime took after item j, as it saves it: pickled plain state.
    saved = {key: pickle.dumps(position_state(p)) for key, p in state.items()}
    consume(state, j, k, sink)  # work done after the snapshot, then a crash
    restored = {key: position_from_state(pickle.loads(blob)) for key, blob in saved.items()}
    consume(restored, j, len(items), sink)  # replay from the snapshot's input offset
    assert {k: v[1] for k, v in sink.items()} == {k: v[1] for k, v in clean_sink.items()}


@SETTINGS
@given(data=st.data())
def test_no_unit_is_lost_or_doubled_by_moves_between_sites(data):
    """Transfers and dropships only move units: network on hand + inbound + staged is conserved."""
    events = [
        e
        for e in data.draw(stories(with_requests=False))
        if e.type.value not in {"RECEIVED", "SOLD", "RETURNED", "ADJUSTED", "COUNTED", "OFFER_UPDATED"}
    ]
    positions, _, _ = run_fold(data.draw(deliveries(events)), WIDE)
    shipped = sum(e.qty for e in events if e.type.value in {"SHUTTLE_LOADED", "DROPSHIP_SHIPPED"})
    arrived = sum(e.qty for e in events if e.type.value in {"SHUTTLE_ARRIVED", "DROPSHIP_RECEIVED"})
    on_hand = sum(p.on_hand for p in positions.values())
    inbound = sum(p.view().inbound_qty for p in positions.values())
    assert on_hand == arrived - shipped
    assert inbound == shipped - arrived


@SETTINGS
@given(data=st.data(), policy=st.sampled_from([WIDE, NARROW]), chunk=st.sampled_from([2, 3, 256]))
def test_a_position_saved_as_plain_state_comes_back_equal(data, policy, chunk):
    events = data.draw(stories())
    order = data.draw(deliveries(events))
    with patch.object(memory, "CHUNK", chunk):
        positions, _, _ = run_fold(order, policy)
    for position in positions.values():
        assert position_from_state(pickle.loads(pickle.dumps(position_state(position)))) == position
        # A state saved before the plain form existed (the position itself) still reads.
        assert position_from_state(position) is position


def test_event_ids_holding_the_state_separator_survive_a_save():
    # The contract refuses control characters, but an event built by a tool may hold one.
    policy = LedgerPolicy()
    position = None
    for n, event_id in enumerate(["plain", "odd\x1fid", "last"]):
        event = InventoryEvent(event_id, EventType.RECEIVED, 1000 + n, "S", "K", 1)
        position, _ = fold(position, "S", "K", [(1000 + n, effect) for effect in split(event)], policy)
    assert position is not None
    restored = position_from_state(pickle.loads(pickle.dumps(position_state(position))))
    assert restored == position
    assert "odd\x1fid" in restored.seen
