"""The simulated people keep the schedule: picks before the cut-off, loads at departure, arrivals at ETA.

A fake API of our own (the answers `People` reads, the actions it posts) and a clock the
test moves; the HTTP side is exercised end to end in tests/e2e/test_up.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from ledger.network import Network
from omni_ledger.people import People, PeopleConfig
from simulator import SimConfig
from simulator.network import simulated_network

pytestmark = pytest.mark.component

NETWORK: Network = simulated_network(SimConfig(stores=8, dcs=1))
T0 = datetime(2026, 12, 2, 1, 0, tzinfo=UTC).timestamp()


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


class FakeApi(People):
    """People whose API is a dict of answers; the actions it takes are recorded."""

    def __init__(self, now: list[float], tasks: dict[str, list[dict[str, Any]]], loads: list[dict[str, Any]]) -> None:
        super().__init__(PeopleConfig(url="http://fake", token="t" * 16, leave_every=4), NETWORK, clock=lambda: now[0])
        self.tasks, self.loads, self.posted = tasks, loads, []

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if method == "POST":
            self.posted.append(path)
            return {}
        if path == "/v1/loads":
            return {"loads": self.loads}
        site, _, query = path.removeprefix("/v1/stores/").partition("/tasks?status=")
        return {"tasks": [t for t in self.tasks.get(site, []) if t["status"] == query]}


def task(site: str, parcel: str, due: float, status: str = "OPEN") -> dict[str, Any]:
    return {"task_id": f"{parcel}/PICK_FOR_SHUTTLE", "kind": "PICK_FOR_SHUTTLE", "site_id": site,
            "parcel_id": parcel, "due_at": iso(due), "status": status}  # fmt: skip


def load(parcel: str, origin: str, destination: str, departs: float, arrives: float, status: str) -> dict[str, Any]:
    return {"parcel_id": parcel, "origin": origin, "destination": destination, "status": status,
            "departs_at": iso(departs), "arrives_at": iso(arrives)}  # fmt: skip


def test_a_clerk_picks_each_task_before_its_cut_off_and_leaves_the_stores_kept_for_people() -> None:
    now = [T0]
    due = T0 + 3600
    tasks = {"ST-002": [task("ST-002", "P-1", due)], "ST-001": [task("ST-001", "P-2", due)]}
    loads = [
        load("P-1", "ST-002", "ST-003", due, due + 3600, "PLANNED"),
        load("P-2", "ST-001", "ST-003", due, due, "PLANNED"),
    ]
    people = FakeApi(now, tasks, loads)
    assert people.left_to_people == {"ST-001", "ST-005"}

    picked_at = None
    while now[0] < due:
        people.clerks()
        if people.posted and picked_at is None:
            picked_at = now[0]
        now[0] += 30

    # Once, though the task still shows OPEN; ST-001's task (P-2) waits for a person.
    assert people.posted == ["/v1/tasks/P-1/PICK_FOR_SHUTTLE/picked"]
    assert picked_at is not None
    assert picked_at <= due - 60


def test_a_driver_loads_a_picked_parcel_as_its_shuttle_leaves_and_scans_it_in_at_its_arrival() -> None:
    departs, arrives = T0 + 3600, T0 + 3 * 3600
    now = [T0]
    loads = [
        load("P-1", "ST-002", "ST-003", departs, arrives, "PLANNED"),
        load("P-2", "ST-002", "ST-003", departs, arrives, "PLANNED"),  # never picked: not loaded
        load("P-3", "ST-002", "ST-005", departs, arrives, "PLANNED"),  # to a store kept for people
    ]
    tasks = {"ST-002": [task("ST-002", "P-1", departs - 3600, "DONE"), task("ST-002", "P-3", departs - 3600, "DONE")]}
    people = FakeApi(now, tasks, loads)

    people.drivers()
    assert people.posted == []  # an hour before departure: nothing to load yet

    now[0] = departs - 10 * 60
    people.drivers()
    assert people.posted == ["/v1/loads/P-1/loaded"]

    loads[0]["status"] = "LOADED"
    now[0] = arrives - 60
    people.drivers()
    assert people.posted == ["/v1/loads/P-1/loaded"]  # still on the road

    now[0] = arrives
    people.drivers()
    assert people.posted == ["/v1/loads/P-1/loaded", "/v1/loads/P-1/arrived"]
