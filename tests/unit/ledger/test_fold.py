"""The fold's rules, one behaviour per test."""

from __future__ import annotations

import copy

import pytest

from ledger import memory
from ledger.contract import require_event
from ledger.dead_letter import DeadLetter, Reason
from ledger.effects import split
from ledger.events import InventoryEvent
from ledger.fold import Output, expire, fold, next_expiry
from ledger.outputs import DecisionStatus, FoldTally, PositionChange, ReservationDecision
from ledger.policy import HOUR_MS, LedgerPolicy, SafetyStock
from ledger.position import Position

pytestmark = pytest.mark.unit

T0 = 1_790_000_000_000
MIN = 60_000
POLICY = LedgerPolicy(lateness_window_ms=2 * HOUR_MS)
_ids = iter(range(1_000_000))


def ev(type_: str, site: str = "ST-1", qty: int = 1, at: int = 0, **extra: object) -> InventoryEvent:
    fields = {
        "event_id": extra.pop("event_id", f"e{next(_ids)}"),
        "type": type_,
        "occurred_at": T0 + at,
        "site_id": site,
        "sku": "A",
        "qty": qty,
        **extra,
    }
    return require_event(fields)


class Ledger:
    """A tiny driver: folds events one by one on the replay clock, keeps every output."""

    def __init__(self, policy: LedgerPolicy = POLICY) -> None:
        self.positions: dict[str, Position] = {}
        self.out: list[Output] = []
        self.policy = policy
        self.now = 0

    def apply(self, *events: InventoryEvent) -> Ledger:
        for event in events:
            self.now = max(self.now, event.occurred_at)
            for effect in split(event):
                old = self.positions.get(effect.site_id)
                self.positions[effect.site_id], out = fold(old, effect.site_id, "A", [(self.now, effect)], self.policy)
                self.out.extend(out)
        return self

    def at(self, site: str) -> PositionChange:
        return self.positions[site].view()

    def decisions(self) -> list[tuple[str, DecisionStatus, str]]:
        return [(d.reservation_id, d.status, d.reason) for d in self.out if isinstance(d, ReservationDecision)]

    def dead(self) -> list[DeadLetter]:
        return [d for d in self.out if isinstance(d, DeadLetter)]


def test_a_duplicate_event_leaves_the_position_unchanged():
    sale = ev("SOLD", qty=2, at=MIN)
    ledger = Ledger().apply(ev("RECEIVED", qty=5), sale)
    before = ledger.positions["ST-1"]
    ledger.apply(sale)
    assert ledger.positions["ST-1"] == before
    assert ledger.out[-1] == FoldTally(applied=0, duplicates=1, too_late=0)


def test_a_sale_beyond_on_hand_makes_it_negative_and_atp_clamps_at_zero():
    view = Ledger().apply(ev("RECEIVED", qty=1), ev("SOLD", qty=3, at=MIN)).at("ST-1")
    assert (view.on_hand, view.atp, view.negative) == (-2, 0, True)


def test_a_negative_site_never_hides_stock_at_another():
    ledger = Ledger().apply(ev("SOLD", "ST-1", qty=3), ev("RECEIVED", "ST-2", qty=4))
    assert (ledger.at("ST-1").atp, ledger.at("ST-2").atp) == (0, 4)


def test_a_late_count_rebases_on_hand_to_the_count_plus_the_deltas_after_it():
    ledger = Ledger().apply(
        ev("RECEIVED", qty=10, at=0),
        ev("SOLD", qty=2, at=10 * MIN),
        ev("SOLD", qty=1, at=30 * MIN),
        ev("COUNTED", qty=6, at=20 * MIN),  # counted 6 at :20, after the first sale, before the second
    )
    assert ledger.at("ST-1").on_hand == 5


def test_an_older_count_than_the_latest_changes_nothing():
    ledger = Ledger().apply(ev("COUNTED", qty=6, at=20 * MIN), ev("COUNTED", qty=9, at=10 * MIN))
    assert ledger.at("ST-1").on_hand == 6


def test_an_event_older_than_the_lateness_window_goes_to_the_dead_letters_as_too_late():
    ledger = Ledger().apply(ev("RECEIVED", qty=4, at=3 * HOUR_MS))
    ledger.apply(ev("COUNTED", qty=50, at=0, event_id="late-count"))
    (letter,) = ledger.dead()
    assert (letter.reason, letter.event_id) == (Reason.TOO_LATE, "late-count")
    assert b'"late-count"' in letter.raw
    assert "lateness window" in letter.detail
    assert ledger.at("ST-1").on_hand == 4


def test_a_transfer_stages_then_moves_units_to_the_destination_with_their_eta():
    ledger = Ledger().apply(ev("RECEIVED", "ST-FAR", qty=3))
    ledger.apply(ev("TRANSFER_PICKED", "ST-FAR", qty=1, at=MIN, ref="T1", to_site_id="ST-NEAR"))
    assert (ledger.at("ST-FAR").staged, ledger.at("ST-FAR").atp) == (1, 2)
    eta = T0 + 20 * HOUR_MS
    ledger.apply(ev("SHUTTLE_LOADED", "ST-FAR", qty=1, at=2 * MIN, ref="T1", to_site_id="ST-NEAR", eta=eta))
    far, near = ledger.at("ST-FAR"), ledger.at("ST-NEAR")
    assert (far.on_hand, far.staged, far.atp) == (2, 0, 2)
    assert (near.on_hand, near.inbound_qty, [(i.ref, i.eta) for i in near.inbound]) == (0, 1, [("T1", eta)])
    ledger.apply(ev("SHUTTLE_ARRIVED", "ST-NEAR", qty=1, at=3 * MIN, ref="T1"))
    near = ledger.at("ST-NEAR")
    assert (near.on_hand, near.inbound_qty, near.atp) == (1, 0, 1)


def test_an_arrival_seen_before_its_load_leaves_no_phantom_inbound():
    ledger = Ledger().apply(
        ev("SHUTTLE_ARRIVED", "ST-NEAR", qty=1, at=3 * MIN, ref="T1"),
        ev("SHUTTLE_LOADED", "ST-FAR", qty=1, at=2 * MIN, ref="T1", to_site_id="ST-NEAR", eta=T0 + HOUR_MS),
    )
    assert (ledger.at("ST-NEAR").on_hand, ledger.at("ST-NEAR").inbound_qty) == (1, 0)


def test_a_load_seen_before_its_pick_leaves_nothing_staged():
    ledger = Ledger().apply(
        ev("RECEIVED", "ST-FAR", qty=2),
        ev("SHUTTLE_LOADED", "ST-FAR", qty=1, at=2 * MIN, ref="T1", to_site_id="ST-NEAR", eta=T0 + HOUR_MS),
        ev("TRANSFER_PICKED", "ST-FAR", qty=1, at=MIN, ref="T1", to_site_id="ST-NEAR"),
    )
    assert (ledger.at("ST-FAR").on_hand, ledger.at("ST-FAR").staged) == (1, 0)


def test_a_dropship_moves_supplier_stock_to_the_store_inbound_then_on_hand():
    ledger = Ledger().apply(ev("RECEIVED", "SUP-1", qty=10))
    ledger.apply(ev("DROPSHIP_SHIPPED", "SUP-1", qty=2, at=MIN, ref="D1", to_site_id="ST-1", eta=T0 + 48 * HOUR_MS))
    assert (ledger.at("SUP-1").on_hand, ledger.at("ST-1").inbound_qty) == (8, 2)
    ledger.apply(ev("DROPSHIP_RECEIVED", "ST-1", qty=2, at=HOUR_MS, ref="D1"))
    assert (ledger.at("ST-1").on_hand, ledger.at("ST-1").inbound_qty) == (2, 0)


def test_two_requests_racing_for_the_last_unit_accept_exactly_the_first():
    ledger = Ledger().apply(ev("RECEIVED", qty=1))
    expiry = T0 + HOUR_MS
    ledger.apply(
        ev("RESERVATION_REQUESTED", at=MIN, ref="R1", expires_at=expiry),
        ev("RESERVATION_REQUESTED", at=MIN, ref="R2", expires_at=expiry),
    )
    assert ledger.decisions() == [
        ("R1", DecisionStatus.ACCEPTED, "atp_sufficient"),
        ("R2", DecisionStatus.REJECTED, "insufficient_atp"),
    ]
    assert (ledger.at("ST-1").reserved, ledger.at("ST-1").atp) == (1, 0)


def test_an_expired_reservation_returns_its_units_to_atp():
    ledger = Ledger().apply(
        ev("RECEIVED", qty=2), ev("RESERVATION_REQUESTED", at=MIN, ref="R1", expires_at=T0 + 10 * MIN)
    )
    position = ledger.positions["ST-1"]
    assert next_expiry(position) == T0 + 10 * MIN
    assert expire(position, T0 + 9 * MIN, POLICY) == (position, [])
    after, out = expire(position, T0 + 10 * MIN, POLICY)
    assert after.view().atp == 2
    assert after.view().reserved == 0
    assert [(d.reservation_id, d.status) for d in out if isinstance(d, ReservationDecision)] == [
        ("R1", DecisionStatus.EXPIRED)
    ]
    assert next_expiry(after) is None


def test_fulfilling_a_reservation_removes_the_hold_and_the_units():
    ledger = Ledger().apply(
        ev("RECEIVED", qty=2),
        ev("RESERVATION_REQUESTED", at=MIN, ref="R1", expires_at=T0 + HOUR_MS),
        ev("RESERVATION_FULFILLED", at=2 * MIN, ref="R1"),
    )
    view = ledger.at("ST-1")
    assert (view.on_hand, view.reserved, view.atp) == (1, 0, 1)
    assert ledger.decisions()[-1][:2] == ("R1", DecisionStatus.FULFILLED)


def test_a_release_seen_before_its_request_ends_the_reservation_without_a_hold():
    ledger = Ledger().apply(
        ev("RECEIVED", qty=2),
        ev("RESERVATION_RELEASED", at=2 * MIN, ref="R1"),
        ev("RESERVATION_REQUESTED", at=MIN, ref="R1", expires_at=T0 + HOUR_MS),
    )
    assert ledger.at("ST-1").reserved == 0
    assert ledger.decisions() == [("R1", DecisionStatus.RELEASED, "ended_before_request_arrived")]


def test_a_request_already_expired_when_it_arrives_is_rejected():
    ledger = Ledger().apply(
        ev("RECEIVED", qty=2, at=2 * HOUR_MS), ev("RESERVATION_REQUESTED", at=MIN, ref="R1", expires_at=T0 + HOUR_MS)
    )
    assert ledger.decisions() == [("R1", DecisionStatus.REJECTED, "expired_on_arrival")]


def test_safety_stock_holds_units_back_and_the_most_specific_rule_wins():
    safety = SafetyStock(
        default=1,
        by_kind={"STORE": 2},
        by_site={"ST-2": 3},
        by_sku={"B": 0},
        site_kinds={"ST-1": "STORE", "ST-2": "STORE"},
    )
    assert [safety.for_position(s, k) for s, k in (("ST-1", "A"), ("ST-2", "A"), ("ST-2", "B"), ("DC", "A"))] == [
        2,
        3,
        0,
        1,
    ]
    ledger = Ledger(LedgerPolicy(safety_stock=safety)).apply(ev("RECEIVED", "ST-1", qty=5))
    assert (ledger.at("ST-1").safety_stock, ledger.at("ST-1").atp) == (2, 3)


def test_the_latest_offer_by_time_wins_and_sets_the_sellers_stock():
    ledger = Ledger().apply(
        ev("OFFER_UPDATED", "SEL-1", qty=12, at=5 * MIN, price=649.0, lead_time_days=3),
        ev("OFFER_UPDATED", "SEL-1", qty=20, at=0, price=699.0, lead_time_days=4),
    )
    view = ledger.at("SEL-1")
    assert view.on_hand == 12
    assert view.offer is not None
    assert (view.offer.price, view.offer.lead_time_days, view.offer.qty) == (649.0, 3, 12)


def test_versions_rise_only_when_the_visible_position_changes():
    ledger = Ledger().apply(ev("RECEIVED", qty=2))
    assert ledger.at("ST-1").version == 1
    ledger.apply(ev("RESERVATION_REQUESTED", at=MIN, qty=5, ref="R1", expires_at=T0 + HOUR_MS))  # rejected
    assert ledger.at("ST-1").version == 1
    ledger.apply(ev("SOLD", at=2 * MIN))
    changes = [o for o in ledger.out if isinstance(o, PositionChange)]
    assert [c.version for c in changes] == [1, 2]


@pytest.mark.parametrize("chunk", [4, 256])
def test_memory_of_event_ids_and_deltas_is_bounded_by_the_lateness_window(chunk, monkeypatch):
    monkeypatch.setattr(memory, "CHUNK", chunk)
    ledger = Ledger()
    for i in range(300):
        ledger.apply(ev("RECEIVED", at=i * 10 * MIN))
    position = ledger.positions["ST-1"]
    # Forgetting lags the horizon by an eighth of the window, and goes by whole chunks.
    bound = (POLICY.lateness_window_ms * 9 // 8) // (10 * MIN) + 2 * chunk
    assert len(position.seen) <= bound
    assert len(position.deltas) <= bound
    assert position.on_hand == 300
    assert position.settled + position.deltas.total() == 300


def test_a_late_count_rebases_across_sealed_chunks_of_deltas(monkeypatch):
    monkeypatch.setattr(memory, "CHUNK", 3)
    ledger = Ledger().apply(*(ev("RECEIVED", at=i * MIN) for i in range(10)))
    ledger.apply(ev("COUNTED", qty=100, at=4 * MIN + 30_000))  # after the 5th receipt, before the 6th
    assert ledger.at("ST-1").on_hand == 105


def test_the_fold_never_mutates_the_position_it_was_given():
    ledger = Ledger().apply(
        ev("RECEIVED", qty=3), ev("RESERVATION_REQUESTED", at=MIN, ref="R1", expires_at=T0 + HOUR_MS)
    )
    position = ledger.positions["ST-1"]
    frozen = copy.deepcopy(position)
    for effect in split(ev("SOLD", at=2 * MIN)) + split(ev("RESERVATION_RELEASED", at=3 * MIN, ref="R1")):
        fold(position, "ST-1", "A", [(T0 + 3 * MIN, effect)], POLICY)
    expire(position, T0 + 2 * HOUR_MS, POLICY)
    assert position == frozen


def test_a_timer_set_for_a_hold_released_early_fires_once_then_waits_for_the_next_hold():
    ledger = Ledger().apply(
        ev("RECEIVED", qty=2),
        ev("RESERVATION_REQUESTED", at=MIN, ref="R1", expires_at=T0 + 10 * MIN),
        ev("RESERVATION_REQUESTED", at=MIN, ref="R2", expires_at=T0 + 30 * MIN),
        ev("RESERVATION_RELEASED", at=2 * MIN, ref="R1"),
    )
    position = ledger.positions["ST-1"]
    # The floor may still be R1's expiry: a timer then, which changes nothing visible...
    early = next_expiry(position)
    assert early is not None
    assert early <= T0 + 30 * MIN
    after, out = expire(position, early, POLICY)
    assert out == []
    assert after.view() == position.view()
    # ...and the next timer is R2's own expiry, not the same instant again.
    assert next_expiry(after) == T0 + 30 * MIN
