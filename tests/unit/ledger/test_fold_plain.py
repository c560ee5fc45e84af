"""The fold's plain path (sales, receipts, counts, offers; no hold due) gives what the general path gives."""

from __future__ import annotations

from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import memory
from ledger.effects import EffectKind, split
from ledger.events import EventType, InventoryEvent
from ledger.fold import _fold_general, _fold_plain, fold
from ledger.outputs import FoldTally
from ledger.policy import HOUR_MS, LedgerPolicy, SafetyStock
from ledger.position import Position, empty
from tests.stories import MIN, deliveries, stories
from tests.unit.ledger.test_fold_properties import replay_clock

pytestmark = pytest.mark.unit

WIDE = LedgerPolicy(lateness_window_ms=48 * HOUR_MS)
NARROW = LedgerPolicy(lateness_window_ms=40 * MIN, safety_stock=SafetyStock(by_site={"ST-B": 1}))
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def general(position: Position | None, site: str, sku: str, batch, policy: LedgerPolicy):
    """The fold through its general path alone (the rules as `_apply` and `_finish` write them)."""
    safety_stock = policy.safety_stock.for_position(site, sku)
    base = position if position is not None else empty(site, sku, safety_stock)
    return _fold_general(base, batch, policy, safety_stock)


def batches(order, sizes):
    """The stamped effects of `order`, cut into batches of `sizes` and grouped by key as a shard's call is."""
    items = [(now, effect) for now, event in zip(replay_clock(order), order, strict=True) for effect in split(event)]
    sizes = iter(sizes)
    i = 0
    while i < len(items):
        size = next(sizes, 1)
        by_key: dict[tuple[str, str], list] = {}
        for now, effect in items[i : i + size]:
            by_key.setdefault((effect.site_id, effect.sku), []).append((now, effect))
        i += size
        yield from by_key.items()


@SETTINGS
@given(data=st.data(), policy=st.sampled_from([WIDE, NARROW]), chunk=st.sampled_from([2, 3, 256]))
def test_every_batch_folds_to_the_same_position_and_outputs_as_through_the_general_path(data, policy, chunk):
    events = data.draw(stories())
    order = data.draw(deliveries(events))
    sizes = data.draw(st.lists(st.integers(1, 12), max_size=len(order) + 1))
    positions: dict[tuple[str, str], Position] = {}
    with patch.object(memory, "CHUNK", chunk):  # small chunks: sealing, splitting and settling all happen
        for key, batch in batches(order, sizes):
            before = positions.get(key)
            expected = general(before, key[0], key[1], batch, policy)
            got = fold(before, key[0], key[1], batch, policy)
            assert got == expected, (key, batch)
            positions[key] = got[0]


def _sale(n: int, at: int, qty: int = 1) -> InventoryEvent:
    return InventoryEvent(f"e{n}", EventType.SOLD, at, "ST-1", "A", qty)


def test_sales_receipts_counts_and_offers_take_the_plain_path():
    policy = LedgerPolicy(lateness_window_ms=10 * MIN)
    events = [
        InventoryEvent("r1", EventType.RECEIVED, 1 * MIN, "ST-1", "A", 5),
        _sale(2, 2 * MIN),
        InventoryEvent("c3", EventType.COUNTED, 3 * MIN, "ST-1", "A", 7),
        _sale(2, 2 * MIN),  # a duplicate
        _sale(4, 90 * 1000, qty=2),  # before the count: inside it already
        InventoryEvent("o5", EventType.OFFER_UPDATED, 3 * MIN + 1, "ST-1", "A", 9, price=4.5, lead_time_days=2),
    ]
    batch = [(3 * MIN, effect) for event in events for effect in split(event)]
    assert all(effect.kind in (EffectKind.DELTA, EffectKind.COUNT, EffectKind.OFFER) for _, effect in batch)
    plain = _fold_plain(empty("ST-1", "A"), batch, policy, 0)
    assert plain is not None
    assert plain == general(None, "ST-1", "A", batch, policy)
    assert plain[0].on_hand == 9
    assert plain[0].offer is not None
    assert plain[0].offer.price == 4.5
    assert plain[1][-1] == FoldTally(5, 1, 0)


def test_a_sale_beside_a_hold_takes_the_plain_path_until_the_hold_is_due():
    policy = LedgerPolicy(lateness_window_ms=60 * MIN)
    received = InventoryEvent("r1", EventType.RECEIVED, 1 * MIN, "ST-1", "A", 5)
    request = InventoryEvent(
        "q2", EventType.RESERVATION_REQUESTED, 2 * MIN, "ST-1", "A", 2, ref="R-1", expires_at=10 * MIN
    )
    held, _ = fold(None, "ST-1", "A", [(2 * MIN, e) for event in (received, request) for e in split(event)], policy)
    assert held.reserved == 2
    before_due = [(5 * MIN, e) for e in split(_sale(3, 5 * MIN))]
    plain = _fold_plain(held, before_due, policy, 0)
    assert plain is not None
    assert plain == general(held, "ST-1", "A", before_due, policy)
    assert plain[0].holds == held.holds
    due = [(10 * MIN, e) for e in split(_sale(4, 10 * MIN))]
    assert _fold_plain(held, due, policy, 0) is None
    after, out = fold(held, "ST-1", "A", due, policy)
    assert (after, out) == general(held, "ST-1", "A", due, policy)
    assert after.reserved == 0  # the general path expired the hold


def test_a_batch_with_a_too_late_sale_takes_the_general_path_and_dead_letters_it():
    policy = LedgerPolicy(lateness_window_ms=10 * MIN)
    now = 100 * MIN
    position, _ = fold(None, "ST-1", "A", [(now, e) for e in split(_sale(1, now))], policy)
    late = [(now, e) for e in split(_sale(2, now - 20 * MIN))]
    assert _fold_plain(position, late, policy, 0) is None
    assert fold(position, "ST-1", "A", late, policy) == general(position, "ST-1", "A", late, policy)


def test_a_batch_that_must_forget_takes_the_general_path_which_forgets():
    policy = LedgerPolicy(lateness_window_ms=10 * MIN)
    position, _ = fold(None, "ST-1", "A", [(0, e) for e in split(_sale(1, 0))], policy)
    later = [(60 * MIN, e) for e in split(_sale(2, 60 * MIN))]
    assert _fold_plain(position, later, policy, 0) is None
    after, _ = fold(position, "ST-1", "A", later, policy)
    assert "e1" not in after.seen  # forgotten: an hour past a 10-minute window
    assert (after, _) == general(position, "ST-1", "A", later, policy)


def _request(n: int, at: int, qty: int, ref: str, expires_at: int) -> InventoryEvent:
    return InventoryEvent(
        f"q{n}", EventType.RESERVATION_REQUESTED, at, "ST-1", "A", qty, ref=ref, expires_at=expires_at
    )


def test_new_reservation_requests_take_the_plain_path_accepted_rejected_or_expired_as_the_general_path_decides():
    policy = LedgerPolicy(lateness_window_ms=60 * MIN)
    events = [
        InventoryEvent("r1", EventType.RECEIVED, 1 * MIN, "ST-1", "A", 5),
        _request(2, 2 * MIN, 3, "R-1", 30 * MIN),  # accepted: ATP 5
        _request(3, 2 * MIN, 3, "R-2", 30 * MIN),  # rejected: ATP 2 left
        _request(4, 1 * MIN, 1, "R-3", 2 * MIN),  # expired on arrival (now is 2 min)
        _sale(5, 2 * MIN),
        _request(2, 2 * MIN, 3, "R-1", 30 * MIN),  # a duplicate: no second decision
    ]
    batch = [(2 * MIN, effect) for event in events for effect in split(event)]
    plain = _fold_plain(empty("ST-1", "A"), batch, policy, 1)
    assert plain is not None
    assert plain == general(
        None, "ST-1", "A", batch, LedgerPolicy(lateness_window_ms=60 * MIN, safety_stock=SafetyStock(default=1))
    )
    position, out = plain
    assert [(d.reservation_id, d.status.value, d.reason, d.atp_before) for d in out[:3]] == [
        ("R-1", "ACCEPTED", "atp_sufficient", 4),
        ("R-2", "REJECTED", "insufficient_atp", 1),
        ("R-3", "REJECTED", "expired_on_arrival", 1),
    ]
    assert (position.reserved, position.expiry_floor, position.on_hand) == (3, 30 * MIN, 4)
    assert out[-1] == FoldTally(5, 1, 0)


def test_a_request_for_a_reservation_the_position_already_holds_takes_the_general_path():
    policy = LedgerPolicy(lateness_window_ms=60 * MIN)
    received = InventoryEvent("r1", EventType.RECEIVED, 1 * MIN, "ST-1", "A", 5)
    first = [(2 * MIN, e) for ev in (received, _request(2, 2 * MIN, 2, "R-1", 30 * MIN)) for e in split(ev)]
    held, _ = fold(None, "ST-1", "A", first, policy)
    again = [(3 * MIN, e) for e in split(_request(3, 3 * MIN, 2, "R-1", 30 * MIN))]  # already held
    assert _fold_plain(held, again, policy, 0) is None
    after, out = fold(held, "ST-1", "A", again, policy)
    assert (after, out) == general(held, "ST-1", "A", again, policy)
    assert (out[0].reason, after.reserved) == ("already_held", 2)
