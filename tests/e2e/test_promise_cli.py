"""`omni-ledger demo`, `serve` and `open-slots` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, read_jsonl, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, object]]]:
    directory = tmp_path_factory.mktemp("demo") / "store"
    done = run_cli("demo", "--dir", str(directory), "--json", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return directory, json.loads(done.stdout)


def test_the_demo_walks_mme_martins_visit_through_the_fold(demo) -> None:
    _, steps = demo
    titles = [str(s["step"]) for s in steps]
    assert any("looks at phones A, B and C" in t for t in titles)
    confirmed = next(s for s in steps if "she confirms" in str(s["step"]))
    assert confirmed["decisions"] == {"PHONE-A": "ACCEPTED", "PHONE-B": "ACCEPTED", "PHONE-C": "ACCEPTED"}
    final = {(t["site_id"], t["kind"], t["sku"]): t["status"] for t in steps[-1]["final"]["tasks"]}  # type: ignore[index]
    assert final == {
        ("STORE-VIENNE", "PICK_FOR_SHUTTLE", "PHONE-B"): "DONE",
        ("STORE-LYON-PART-DIEU", "PREPARE_PICKUP", "PHONE-A"): "CANCELLED",
        ("STORE-LYON-PART-DIEU", "PREPARE_PICKUP", "PHONE-B"): "DONE",
        ("STORE-LYON-PART-DIEU", "PREPARE_PICKUP", "PHONE-C"): "DONE",
    }


def test_the_demo_leaves_its_work_in_the_outputs_and_the_marketplace_order(demo) -> None:
    directory, _ = demo
    orders = {o["order_ref"]: o for o in read_jsonl(directory / "dropship_orders.jsonl")}
    assert orders["R-MARTIN-A-HOME"]["deliver_to"] == "HOME"
    assert orders["R-MARTIN-A-HOME"]["supplier_id"] == "SELLER-PHONEHUB"
    loads = read_jsonl(directory / "transport_loads.jsonl")
    assert [x["status"] for x in loads] == ["PLANNED", "LOADED", "ARRIVED"]
    assert not (directory / "dead_letters.jsonl").exists() or not read_jsonl(directory / "dead_letters.jsonl")


def test_the_demo_prints_readable_steps(tmp_path: Path) -> None:
    done = run_cli("demo", "--dir", str(tmp_path / "store"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "== " in done.stdout
    assert "shuttle load plan:" in done.stdout
    assert "PICK_FOR_SHUTTLE" in done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_over_http_and_stops_cleanly_on_ctrl_c(demo, tmp_path: Path) -> None:
    directory, _ = demo
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "omni_ledger", "serve", "--snapshot-dir", str(directory), "--port", str(port)],
        cwd=REPO, env={**os.environ, "OMNI_LEDGER_SERVE_MAX_SNAPSHOT_AGE": "1h"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "serve did not start listening"
                time.sleep(0.2)
        assert health.status_code == 200, health.text
        spec = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=5).json()
        assert "/v1/promise" in spec["paths"]
        tasks = httpx.get(f"http://127.0.0.1:{port}/v1/stores/STORE-VIENNE/tasks", timeout=5).json()
        assert [t["status"] for t in tasks["tasks"]] == ["DONE"]
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=20)
    assert server.returncode == 0


def test_open_slots_appends_capacity_events_for_the_flow(tmp_path: Path) -> None:
    done = run_cli("open-slots", "--days", "2", "--snapshot-dir", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)[0]
    lines = read_jsonl(tmp_path / "inbox.jsonl")
    assert report["events"] == len(lines) > 0
    assert {line["type"] for line in lines} == {"COUNTED"}
    assert all(str(line["sku"]).startswith("appt:") for line in lines)
    again = run_cli("open-slots", "--days", "0", "--snapshot-dir", str(tmp_path))
    assert again.returncode == 2
    assert "--days" in again.stderr
