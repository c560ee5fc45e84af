"""`omni-ledger demo`: Mme Martin's visit, end to end through the real fold.

The flow runs embedded (a child process following `DIR/inbox.jsonl`, on event time),
and every step goes through the same service the HTTP API uses: promises are made on
the snapshot of the moment, confirms are decided by the fold, and the clerk's, the
driver's and the supplier's actions are events like any other. The story is set two
days back, so every event is in the past of the wall clock (the ledger refuses events
from the future).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from adapters.network_file import load_network
from ledger.answer import Option, Promise
from ledger.confirm import open_slots_events
from ledger.contract import fulfilment_to_record
from ledger.events import EventType, InventoryEvent, Millis
from ledger.fulfilment import Fulfilment
from ledger.network import Network
from omni_ledger.config import ServeSettings, Settings, SnapshotSettings
from omni_ledger.embedded import EmbeddedFlow, embedded_flow
from omni_ledger.service import ConfirmResult, LedgerService
from omni_ledger.serving import open_service
from omni_ledger.table import render_table

__all__ = ["run_demo"]

PARIS = ZoneInfo("Europe/Paris")
HOME_STORE = "STORE-LYON-PART-DIEU"
FAR_STORE = "STORE-VIENNE"
SUPPLIER = "SUP-ACME"
SELLER = "SELLER-PHONEHUB"
A, B, C = "PHONE-A", "PHONE-B", "PHONE-C"
MARTIN = (45.8750, 4.7500)  # Dommartin, north-west of Lyon, geolocated by the web site: Vienne is 40 km away


def story_day(today: date) -> date:
    """The latest Monday..Thursday at least two days back: her visit and the next day are weekdays."""
    day = today - timedelta(days=2)
    while day.weekday() > 3:
        day -= timedelta(days=1)
    return day


def _at(day: date, hh: int, mm: int = 0) -> Millis:
    return int(datetime.combine(day, time(hh, mm), PARIS).timestamp() * 1000)


def _local(ms: Millis | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, PARIS).strftime("%a %d %b %H:%M")


@dataclass
class Story:
    """The demo's state: the service, the flow, the story clock and what was printed."""

    service: LedgerService
    flow: EmbeddedFlow
    network: Network
    out: TextIO
    as_json: bool
    sent: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)

    def say(self, title: str, text: str = "", **record: Any) -> None:
        self.steps.append({"step": title, **record})
        if not self.as_json:
            print(f"\n== {title}", file=self.out)
            if text:
                print(text, file=self.out)

    def emit(self, *events: InventoryEvent) -> None:
        self.service.emit(events)
        self.sent += len(events)
        self.settle()

    def settle(self) -> None:
        """Wait until the fold has applied everything sent and a snapshot shows it."""
        self.flow.wait_applied(self.sent)
        self.service.store.refresh()

    def confirm(self, option: Option, ref: str, now: Millis, offered: Promise, book: bool = True) -> ConfirmResult:
        result = self.service.reserve(
            option, reservation_id=ref, customer="Martin", now=now, alternatives=offered, book_appointment=book
        )
        self.sent += len(result.events)
        if result.appointment_status == "RELEASED":
            self.sent += 1
        self.settle()
        return result


def _event(kind: EventType, at: Millis, site: str, sku: str, qty: int, **extra: Any) -> InventoryEvent:
    ref = extra.get("ref")
    return InventoryEvent(
        event_id=f"demo:{kind.value}:{site}:{sku}:{ref or at}",
        type=kind,
        occurred_at=at,
        site_id=site,
        sku=sku,
        qty=qty,
        source="DEMO",
        **extra,
    )


def _options_table(options: Sequence[Option], network: Network) -> str:
    rows = [
        (
            o.sku,
            o.mode.value,
            network.site(o.source_id).name,
            o.deliver_to if o.deliver_to == "HOME" else network.site(o.deliver_to).name,
            _local(o.available_at),
            _local(o.appointment_at),
            o.distance_km,
            o.price,
            o.run_id,
        )
        for o in options
    ]
    columns = ("sku", "option", "from", "to", "available", "appointment", "km", "price", "shuttle run")
    return render_table(columns, rows)


def _work_tables(story: Story) -> str:
    service = story.service
    tasks = service.tasks(FAR_STORE)["tasks"] + service.tasks(HOME_STORE)["tasks"]
    task_rows = [
        (t["site_id"], t["kind"], t["sku"], t["qty"], t["zone"], t["parcel_id"], t["run_id"], t["status"])
        for t in tasks
    ]
    loads = service.runs()["loads"]
    load_rows = [(x["run_id"], x["parcel_id"], x["origin"], x["destination"], x["sku"], x["status"]) for x in loads]
    orders = service.orders()["orders"]
    order_rows = [(o["order_ref"], o["supplier_id"], o["deliver_to"], o["sku"], o["status"]) for o in orders]
    task_columns = ("site", "task", "sku", "qty", "zone", "parcel", "shuttle run", "status")
    parts = ["store tasks:\n" + render_table(task_columns, task_rows)]
    if load_rows:
        parts.append("shuttle load plan:\n" + render_table(("run", "parcel", "from", "to", "sku", "status"), load_rows))
    if order_rows:
        order_columns = ("order", "supplier", "deliver to", "sku", "status")
        parts.append("dropship orders:\n" + render_table(order_columns, order_rows))
    return "\n\n".join(parts)


def _position(story: Story, site: str, sku: str) -> str:
    rows = [r for r in story.service.positions(site)["positions"] if r["sku"] == sku]
    return render_table(
        ("site", "sku", "on hand", "reserved", "staged", "inbound", "atp"),
        [(site, sku, r["on_hand"], r["reserved"], r["staged"], r["inbound"], r["atp"]) for r in rows],
    )


def _plan(result: ConfirmResult) -> Fulfilment:
    plan = result.events[0].fulfilment
    assert plan is not None
    return plan


def _decision_line(result: ConfirmResult) -> str:
    o = result.option
    slot = f", appointment {result.appointment_status}" if result.appointment_status else ""
    decided = f"{result.status} ({result.reason}){slot}"
    return f"{o.sku} {o.mode.value} from {o.source_id}: {decided} -> {result.reservation_id}"


def play(story: Story, day: date) -> None:
    """The visit, step by step."""
    service, network = story.service, story.network
    lat, lon = MARTIN
    evening = _at(day, 17, 30)

    # 0. The shelves: what the ledger knows before she arrives.
    seed_at = _at(day, 8, 0)
    story.emit(
        _event(EventType.COUNTED, seed_at, HOME_STORE, A, 1),
        _event(EventType.COUNTED, seed_at, FAR_STORE, B, 1),
        _event(EventType.COUNTED, seed_at, SUPPLIER, C, 6),
        _event(EventType.OFFER_UPDATED, seed_at, SELLER, A, 5, price=429.0, lead_time_days=3),
        *open_slots_events(network, _at(day, 0), _at(day + timedelta(days=3), 0), seed_at),
    )
    story.say(
        f"{_local(seed_at)}  the ledger's view of phones A, B and C",
        render_table(
            ("site", "sku", "atp"),
            [(s["site_id"], sku, s["atp"]) for sku in (A, B, C) for s in service.availability(sku)["sites"]],
        ),
    )

    # 1. She browses A, B and C at 17:30, geolocated.
    offered = service.promise({A: 1, B: 1, C: 1}, lat=lat, lon=lon, appointment=True, now=evening)
    best = {sku: next(o for o in offered.options if o.sku == sku) for sku in (A, B, C)}
    together = offered.together[0]
    story.say(
        f"{_local(evening)}  Mme Martin looks at phones A, B and C (snapshot {offered.snapshot_id})",
        "best option per phone:\n"
        + _options_table(list(best.values()), network)
        + f"\n\nall three side by side: {network.site(together.store_id).name}, from {_local(together.ready_at)}, "
        f"appointment {_local(together.appointment_at)}\n"
        + _options_table(together.legs, network)
        + f"\n\nexcluded sources: {len(offered.excluded)} (e.g. {offered.excluded[0].site_id}: "
        f"{offered.excluded[0].reason.value})",
        options=[o.option_id for o in offered.options],
        together=together.store_id,
    )

    # 2. She confirms the together plan: one reservation per phone, the appointment booked once.
    results = [
        story.confirm(leg, f"R-MARTIN-{leg.sku}", evening, offered, book=(i == 0))
        for i, leg in enumerate(together.legs)
    ]
    by_sku = {r.option.sku: r for r in results}
    story.say(
        f"{_local(evening)}  she confirms: the fold decides each reservation",
        "\n".join(_decision_line(r) for r in results) + "\n\n" + _work_tables(story),
        decisions={r.option.sku: r.status for r in results},
    )

    # 3. 18:40 at Vienne: the clerk isolates B in its parcel.
    b = by_sku[B]
    b_plan = _plan(b)
    picked = _at(day, 18, 40)
    story.emit(_event(EventType.TRANSFER_PICKED, picked, FAR_STORE, B, 1, ref=b.reservation_id, to_site_id=HOME_STORE))
    story.say(
        f"{_local(picked)}  clerk at {network.site(FAR_STORE).name}: B isolated in zone {b_plan.zone}, "
        f"parcel {b_plan.parcel_id} labelled for run {b_plan.run_id}",
        _position(story, FAR_STORE, B) + "\n\n" + _work_tables(story),
    )

    # 4. The supplier ships C to her store.
    c = by_sku[C]
    c_plan = _plan(c)
    shipped = _at(day, 20, 0)
    c_eta = c_plan.arrives_at or c_plan.ready_at
    story.emit(
        _event(
            EventType.DROPSHIP_SHIPPED, shipped, SUPPLIER, C, 1, ref=c.reservation_id, to_site_id=HOME_STORE,
            eta=c_eta, fulfilment=c_plan,
        )
    )  # fmt: skip
    story.say(f"{_local(shipped)}  {network.site(SUPPLIER).name} ships C to the store, due {_local(c_eta)}",
              _work_tables(story))  # fmt: skip

    # 5. Next morning: the shuttle leaves Vienne with the parcel and arrives at Part-Dieu.
    departs = b_plan.departs_at or _at(day + timedelta(days=1), 7)
    arrives = b_plan.arrives_at or departs
    story.emit(
        _event(
            EventType.SHUTTLE_LOADED, departs, FAR_STORE, B, 1, ref=b.reservation_id, to_site_id=HOME_STORE,
            eta=arrives, fulfilment=b_plan,
        )
    )  # fmt: skip
    story.say(f"{_local(departs)}  driver scans parcel {b_plan.parcel_id} loaded on {b_plan.run_id}",
              _position(story, HOME_STORE, B) + "\n\n" + _work_tables(story))  # fmt: skip
    story.emit(_event(EventType.SHUTTLE_ARRIVED, arrives, HOME_STORE, B, 1, ref=b.reservation_id))
    story.say(
        f"{_local(arrives)}  the shuttle arrives: B is on hand at {network.site(HOME_STORE).name}, held for her",
        _position(story, HOME_STORE, B) + "\n\n" + _work_tables(story),
    )

    # 6. C arrives from the supplier.
    story.emit(_event(EventType.DROPSHIP_RECEIVED, c_eta, HOME_STORE, C, 1, ref=c.reservation_id))
    story.say(f"{_local(c_eta)}  C received from the supplier, held for her", _position(story, HOME_STORE, C))

    # 7. The appointment: the clerk finds A cheaper at a marketplace seller, delivered home.
    appointment = together.appointment_at or _at(day + timedelta(days=1), 18)
    home = service.promise({A: 1}, lat=lat, lon=lon, now=appointment)
    seller = next(o for o in home.options if o.source_id == SELLER)
    a_home = story.confirm(seller, "R-MARTIN-A-HOME", appointment, home)
    story.say(
        f"{_local(appointment)}  at the appointment: A is {seller.price:.2f} at {network.site(SELLER).name}, "
        f"home on {_local(seller.available_at)}",
        _options_table([o for o in home.options if o.sku == A][:4], network) + "\n\n" + _decision_line(a_home),
    )

    # 8. She takes B and C, lets the reserved A go, and the appointment is done.
    done = appointment + 40 * 60_000
    story.emit(
        _event(EventType.RESERVATION_FULFILLED, done, HOME_STORE, B, 1, ref=b.reservation_id),
        _event(EventType.RESERVATION_FULFILLED, done, HOME_STORE, C, 1, ref=c.reservation_id),
        _event(EventType.RESERVATION_RELEASED, done, HOME_STORE, A, 1, ref=by_sku[A].reservation_id),
    )
    story.say(
        f"{_local(done)}  she leaves with B and C; A comes home from the seller",
        "\n\n".join(_position(story, HOME_STORE, sku) for sku in (A, B, C)) + "\n\n" + _work_tables(story),
        final={"tasks": story.service.tasks(HOME_STORE)["tasks"] + story.service.tasks(FAR_STORE)["tasks"]},
    )


def run_demo(directory: Path, network_path: Path, *, as_json: bool = False, out: TextIO = sys.stdout,
             today: Callable[[], date] = lambda: datetime.now(PARIS).date()) -> list[dict[str, Any]]:  # fmt: skip
    """Play the story into a fresh store at `directory`; returns the steps (printed as it goes)."""
    if directory.exists():
        shutil.rmtree(directory)
    network = load_network(network_path)
    day = story_day(today())
    settings = Settings(snapshots=SnapshotSettings(dir=directory), serve=ServeSettings(network=network_path))
    with embedded_flow(directory, clock="event") as flow, open_service(settings, network) as service:
        story = Story(service, flow, network, out, as_json)
        play(story, day)
    if as_json:
        print(json.dumps(story.steps, default=_jsonable, indent=2), file=out)
    return story.steps


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Fulfilment):
        return fulfilment_to_record(value)
    return str(value)
