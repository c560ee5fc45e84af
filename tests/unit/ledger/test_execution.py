"""A confirmed promise through the fold: its work is emitted only on acceptance, and follows the unit."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.contract import event_to_record, fulfilment_to_record, require_event
from ledger.execution import DropshipOrder, LoadStatus, OrderStatus, ShuttleLoad, StoreTask, TaskKind, TaskStatus
from ledger.fulfilment import Fulfilment, FulfilmentMode, SourceKind
from ledger.outputs import DecisionStatus, ReservationDecision
from tests.unit.ledger.test_fold import MIN, T0, Ledger, ev

pytestmark = pytest.mark.unit

HOUR = 60 * MIN
FAR, NEAR, SUP = "STORE-FAR", "STORE-NEAR", "SUP-1"


def transfer_plan(ref: str = "R1") -> Fulfilment:
    return Fulfilment(
        mode=FulfilmentMode.TRANSFER_TO_STORE,
        source_kind=SourceKind.STORE,
        order_id="O1",
        deliver_to=NEAR,
        ready_at=T0 + 12 * HOUR,
        hold_until=T0 + 72 * HOUR,
        zone="E-COM",
        parcel_id=f"P-{ref}",
        run_id="FAR-NEAR@2026-11-25T07:00",
        departs_at=T0 + 8 * HOUR,
        arrives_at=T0 + 10 * HOUR,
        appointment_at=T0 + 12 * HOUR,
        customer="Martin",
        source_site=FAR,
    )


def dropship_plan() -> Fulfilment:
    return Fulfilment(
        mode=FulfilmentMode.DROPSHIP_TO_STORE,
        source_kind=SourceKind.SUPPLIER,
        order_id="O2",
        deliver_to=NEAR,
        ready_at=T0 + 24 * HOUR,
        hold_until=T0 + 96 * HOUR,
        arrives_at=T0 + 24 * HOUR,
        source_site=SUP,
    )


def plan_record(plan: Fulfilment) -> dict[str, object]:
    return {k: v for k, v in fulfilment_to_record(plan).items() if v is not None}


def request(site: str, ref: str, plan: Fulfilment, at: int = 0, expires_in: int = 8 * HOUR) -> dict[str, object]:
    return {
        "type": "RESERVATION_REQUESTED",
        "site": site,
        "at": at,
        "ref": ref,
        "expires_at": T0 + at + expires_in,
        "fulfilment": plan_record(plan),
    }


def work(ledger: Ledger) -> list[StoreTask | ShuttleLoad | DropshipOrder]:
    return [o for o in ledger.out if isinstance(o, StoreTask | ShuttleLoad | DropshipOrder)]


def latest(ledger: Ledger) -> dict[str, str]:
    """The current status of each piece of work, as a consumer keeping the highest rank sees it."""
    best: dict[str, StoreTask | ShuttleLoad | DropshipOrder] = {}
    for item in work(ledger):
        key = (
            item.task_id
            if isinstance(item, StoreTask)
            else item.parcel_id
            if isinstance(item, ShuttleLoad)
            else item.order_ref
        )
        if key not in best or item.rank > best[key].rank:
            best[key] = item
    return {key: item.status.value for key, item in best.items()}


def e(spec: dict[str, object]) -> object:
    spec = dict(spec)
    return ev(str(spec.pop("type")), site=str(spec.pop("site")), at=int(spec.pop("at")), **spec)


def transfer_story(plan: Fulfilment) -> list[object]:
    """Stock at the far store, the confirmed request, then pick, load, arrival and pickup."""
    return [
        ev("RECEIVED", site=FAR, qty=1, at=-HOUR),
        e(request(FAR, "R1", plan)),
        ev("TRANSFER_PICKED", site=FAR, at=HOUR, ref="R1", to_site_id=NEAR),
        ev(
            "SHUTTLE_LOADED",
            site=FAR,
            at=8 * HOUR,
            ref="R1",
            to_site_id=NEAR,
            eta=T0 + 10 * HOUR,
            fulfilment=plan_record(plan),
        ),
        ev("SHUTTLE_ARRIVED", site=NEAR, at=10 * HOUR, ref="R1"),
        ev("RESERVATION_FULFILLED", site=NEAR, at=12 * HOUR, ref="R1"),
    ]


def test_an_accepted_transfer_opens_a_pick_task_and_plans_the_parcel_on_its_shuttle_run():
    plan = transfer_plan()
    ledger = Ledger().apply(*transfer_story(plan)[:2])
    task, load = work(ledger)
    assert isinstance(task, StoreTask)
    assert (task.site_id, task.kind, task.status, task.qty) == (FAR, TaskKind.PICK_FOR_SHUTTLE, TaskStatus.OPEN, 1)
    assert (task.plan.zone, task.plan.parcel_id, task.due_at) == ("E-COM", "P-R1", plan.departs_at)
    assert isinstance(load, ShuttleLoad)
    assert (load.parcel_id, load.run_id, load.origin, load.destination) == ("P-R1", plan.run_id, FAR, NEAR)
    assert (load.status, load.departs_at, load.arrives_at) == (LoadStatus.PLANNED, plan.departs_at, plan.arrives_at)
    assert ledger.at(FAR).reserved == 1


def test_the_unit_moves_from_hold_to_parcel_to_shuttle_to_a_hold_for_the_customer_at_the_pickup_store():
    story = transfer_story(transfer_plan())
    ledger = Ledger().apply(*story[:3])
    far = ledger.at(FAR)
    assert (far.on_hand, far.reserved, far.staged, far.atp) == (1, 0, 1, 0)  # picked: staged, no longer held
    ledger.apply(story[3])
    far, near = ledger.at(FAR), ledger.at(NEAR)
    assert (far.on_hand, far.reserved, far.staged) == (0, 0, 0)
    assert [(i.ref, i.qty, i.promised) for i in near.inbound] == [("R1", 1, True)]
    ledger.apply(story[4])
    near = ledger.at(NEAR)
    assert (near.on_hand, near.reserved, near.atp, near.inbound) == (1, 1, 0, ())  # arrived for her, not for sale
    arrived = [o for o in ledger.out if isinstance(o, ReservationDecision) and o.site_id == NEAR]
    assert [(d.status, d.reason) for d in arrived] == [(DecisionStatus.ACCEPTED, "arrived_for_customer")]
    ledger.apply(story[5])
    assert (ledger.at(NEAR).on_hand, ledger.at(NEAR).reserved) == (0, 0)
    assert latest(ledger) == {
        "R1/PICK_FOR_SHUTTLE": "DONE",
        "P-R1": "ARRIVED",
        "R1/PREPARE_PICKUP": "DONE",
    }


def test_a_rejected_request_creates_no_work_and_the_last_unit_goes_to_the_first_request():
    plan = transfer_plan()
    ledger = Ledger().apply(ev("RECEIVED", site=FAR, qty=1, at=-HOUR), e(request(FAR, "R1", plan)))
    ledger.apply(e(request(FAR, "R2", transfer_plan("R2"), at=1)))
    decisions = [(o.reservation_id, o.status) for o in ledger.out if isinstance(o, ReservationDecision)]
    assert decisions == [("R1", DecisionStatus.ACCEPTED), ("R2", DecisionStatus.REJECTED)]
    assert {w.reservation_id for w in work(ledger) if not isinstance(w, DropshipOrder)} == {"R1"}


def test_a_released_transfer_cancels_its_pick_task_and_its_load():
    ledger = Ledger().apply(*transfer_story(transfer_plan())[:2])
    ledger.apply(ev("RESERVATION_RELEASED", site=FAR, at=MIN, ref="R1"))
    assert latest(ledger) == {"R1/PICK_FOR_SHUTTLE": "CANCELLED", "P-R1": "CANCELLED"}
    assert ledger.at(FAR).atp == 1


def test_an_expired_transfer_hold_cancels_its_work_when_the_clock_passes_it():
    ledger = Ledger().apply(*transfer_story(transfer_plan())[:2])
    ledger.apply(ev("SOLD", site=FAR, qty=0 + 1, at=9 * HOUR))  # any later event at the position moves time on
    assert latest(ledger) == {"R1/PICK_FOR_SHUTTLE": "CANCELLED", "P-R1": "CANCELLED"}


def test_a_dropship_orders_from_the_supplier_and_holds_the_unit_for_the_customer_on_receipt():
    plan = dropship_plan()
    ledger = Ledger().apply(ev("COUNTED", site=SUP, qty=5, at=-HOUR), e(request(SUP, "R3", plan, expires_in=30 * HOUR)))
    (order,) = work(ledger)
    assert isinstance(order, DropshipOrder)
    assert (order.supplier_id, order.deliver_to, order.status, order.due_at) == (
        SUP,
        NEAR,
        OrderStatus.ORDERED,
        plan.arrives_at,
    )
    ledger.apply(
        ev(
            "DROPSHIP_SHIPPED",
            site=SUP,
            at=2 * HOUR,
            ref="R3",
            to_site_id=NEAR,
            eta=T0 + 24 * HOUR,
            fulfilment=plan_record(plan),
        )
    )
    sup = ledger.at(SUP)
    assert (sup.on_hand, sup.reserved, sup.atp) == (4, 0, 4)
    ledger.apply(ev("DROPSHIP_RECEIVED", site=NEAR, at=20 * HOUR, ref="R3"))
    near = ledger.at(NEAR)
    assert (near.on_hand, near.reserved, near.atp) == (1, 1, 0)
    assert latest(ledger) == {"R3": "RECEIVED", "R3/PREPARE_PICKUP": "OPEN"}


def test_a_plan_survives_the_contract_round_trip():
    plan = transfer_plan()
    event = e(request(FAR, "R1", plan))
    assert event.fulfilment == plan
    assert require_event(event_to_record(event)) == event


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_no_unit_is_lost_or_doubled_whatever_order_and_duplicates_the_transfer_story_arrives_in(data):
    story = transfer_story(transfer_plan())
    stock, rest = story[0], story[1:]
    order = data.draw(st.permutations(rest))
    order = order + data.draw(st.lists(st.sampled_from(rest), max_size=4))
    ledger = Ledger().apply(stock, *order)
    far, near = ledger.at(FAR), ledger.at(NEAR)
    # One unit left the far store and left the near store with the customer: nothing else.
    assert (far.on_hand, far.reserved, far.staged) == (0, 0, 0)
    assert (near.on_hand, near.reserved, near.staged, near.inbound) == (0, 0, 0, ())
    assert far.atp + near.atp == 0
    # Work is never left open at the far store once its unit is gone.
    assert all(status != "OPEN" or key.endswith("PREPARE_PICKUP") for key, status in latest(ledger).items())


def test_a_done_task_and_a_cancelled_task_have_the_same_rank_and_a_cancelled_load_outranks_a_loaded_one():
    plan = transfer_plan()
    done = StoreTask("t", FAR, "A", 1, TaskKind.PICK_FOR_SHUTTLE, TaskStatus.DONE, "R1", 0, plan, 0)
    cancelled = StoreTask("t", FAR, "A", 1, TaskKind.PICK_FOR_SHUTTLE, TaskStatus.CANCELLED, "R1", 0, plan, 0)
    assert done.rank == cancelled.rank == 2
    loaded = ShuttleLoad("p", "r", FAR, NEAR, "A", 1, 0, 0, LoadStatus.LOADED, "R1", plan, 0)
    assert loaded.rank == 2
    assert replace(loaded, status=LoadStatus.CANCELLED).rank == 3
