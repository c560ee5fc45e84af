"""`omni-ledger up` (`make run`): the whole embedded system as one supervised command.

Real processes on loopback: the flow folding the simulator and the API's inbox, the
API and console, the simulated people. Ctrl-C (SIGINT to the command) must stop every
part; a part that fails must stop the others.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.up_stack import READY_TIMEOUT_S, TOKEN, Up, alive

pytestmark = pytest.mark.e2e


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    running = Up(tmp_path / "snapshots", "--customer-every", "2")
    try:
        yield running
    finally:
        running.kill()


def test_up_serves_the_console_decides_a_confirm_fills_the_boards_and_ctrl_c_stops_every_part(up: Up) -> None:
    up.wait_for("healthy API", lambda: up.call("GET", "/health")[0] == 200, READY_TIMEOUT_S)
    status, page = up.call("GET", "/console/")
    assert status == 200
    assert "<html" in page.lower()
    banner = "omni-ledger is up: console at " + up.base + "/console/"
    up.wait_for("the banner", lambda: banner in up.output(), 30)  # its probe runs once a second
    assert TOKEN not in up.output()  # the operator's token is theirs: never printed
    pids = up.pids()
    assert set(pids) == {"flow", "api", "people"}

    # A sku in stock at a store, promised with an appointment near that store: an in-store option with a slot.
    def in_store_with_slot() -> Any:
        status, sites = up.call("GET", "/v1/network/sites")
        stores = [s for s in sites["sites"] if s["kind"] == "STORE"] if status == 200 else []
        for store in stores[:8]:
            body = {
                "items": [{"sku": "SKU-00001", "qty": 1}],
                "lat": store["lat"],
                "lon": store["lon"],
                "appointment": True,
            }
            status, promise = up.call("POST", "/v1/promise", body)
            if status != 200:
                continue
            for option in promise["options"]:
                if option["mode"] == "RESERVE_IN_STORE" and option["appointment_at"]:
                    return body, option
        return None

    # A confirm may find its option gone (409): simulated customers book slots and move stock
    # while the test runs, and a slot's start moves with the clock. A client promises again.
    for _attempt in range(5):
        body, option = up.wait_for("in-store option with an appointment", in_store_with_slot, 60)
        status, decided = up.call(
            "POST", "/v1/confirm", {**body, "option_id": option["option_id"], "customer": "Mme Martin"}
        )
        if status != 409:
            break
        assert '"option_gone"' in decided, decided
    if status == 504:
        # Decided later than the API waits (a loaded machine, a snapshot maintenance run in the flow):
        # the answer names the reservation to ask about, as a client would.
        match = re.search(r"reservation (R-[0-9a-f]+)", decided)
        assert match is not None, decided
        decided = up.wait_for(
            "the fold's decision",
            lambda: (lambda got: got[1] if got[0] == 200 else None)(
                up.call("GET", f"/v1/reservations/{match.group(1)}")
            ),
            120,
        )
        assert decided["status"] == "ACCEPTED", decided
    else:
        assert status == 200, decided
        assert decided["status"] == "ACCEPTED"
        assert decided["appointment_status"] == "ACCEPTED"

    # Simulated customers reserve too: tasks at stores, parcels on the shuttle board.
    def boards() -> Any:
        status, loads = up.call("GET", "/v1/loads")
        return loads["loads"] if status == 200 and loads["loads"] else None

    loads = up.wait_for("shuttle parcel made by a simulated customer", boards, 150)
    assert any(load["reservation_id"] for load in loads)
    origin = loads[0]["origin"]
    status, tasks = up.call("GET", f"/v1/stores/{origin}/tasks")
    assert status == 200
    assert any(task["kind"] == "PICK_FOR_SHUTTLE" for task in tasks["tasks"])

    code = up.interrupt()

    assert code == 0, up.output()[-4000:]
    assert not [name for name, pid in pids.items() if alive(pid)]
    assert "every part stopped" in up.output()
    assert re.search(r"flow stopped \(exit code 0\)", up.output())


def test_a_part_failing_stops_the_others_with_its_error(tmp_path: Path) -> None:
    # The API's port is taken: the API part fails at start, and the flow it was started with must stop too.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = Up(tmp_path / "snapshots", "--no-people", port=port)
        try:
            code = up.process.wait(timeout=120)
            up._reader.join(timeout=5)
        finally:
            up.kill()

    assert code == 1
    output = up.output()
    assert "the api part exited with code" in output
    assert "address already in use" in output.lower()
    assert "stopped because the api part failed" in output
    assert not [name for name, pid in up.pids().items() if alive(pid)]
