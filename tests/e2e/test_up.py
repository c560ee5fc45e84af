"""`omni-ledger up` (`make run`): the whole embedded system as one supervised command.

Real processes on loopback: the flow folding the simulator and the API's inbox, the
API and console, the simulated people. Ctrl-C (SIGINT to the command) must stop every
part; a part that fails must stop the others.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e

TOKEN = "up-test-write-token"
READY_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Up:
    """A running `omni-ledger up` and everything it printed."""

    def __init__(self, directory: Path, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "omni_ledger", "up", "--log-format", "json", "--snapshot-dir", str(directory),
            "--port", str(self.port), "--flow-metrics-port", str(free_port()),
            "--api-metrics-port", str(free_port()), "--rate", "200", *extra,
        ]  # fmt: skip
        env = {**os.environ, "OMNI_LEDGER_SERVE_WRITE_TOKENS": TOKEN, "OMNI_LEDGER_SNAPSHOTS_INTERVAL": "500ms"}
        self.process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def pids(self) -> dict[str, int]:
        """The parts' process ids, from the supervisor's 'started' lines."""
        found = {}
        for line in self.lines:
            match = re.search(r"started (\w+) \(pid (\d+)\)", line)
            if match:
                found[match.group(1)] = int(match.group(2))
        return found

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {TOKEN}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                kind = response.headers.get("content-type", "")
                return response.status, json.loads(raw) if "json" in kind else raw.decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError as exc:
            return 0, str(exc)

    def wait_for(self, what: str, check: Any, timeout: float) -> Any:
        """Poll `check()` until it returns something truthy, the command exits, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"omni-ledger up exited ({self.process.returncode}) waiting for {what}:\n{self.output()[-4000:]}"
                )
            found = check()
            if found:
                return found
            time.sleep(0.5)
        pytest.fail(f"no {what} within {timeout:.0f} s:\n{self.output()[-4000:]}")

    def interrupt(self, timeout: float = 60.0) -> int:
        """Ctrl-C, as a terminal sends it; the command's exit code."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._reader.join(timeout=5)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        for pid in self.pids().values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not running: only its parent has not reaped it yet.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


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
    assert "omni-ledger is up: console at " + up.base + "/console/" in up.output()
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

    body, option = up.wait_for("in-store option with an appointment", in_store_with_slot, 60)
    status, decided = up.call(
        "POST", "/v1/confirm", {**body, "option_id": option["option_id"], "customer": "Mme Martin"}
    )
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
