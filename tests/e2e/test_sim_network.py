"""The simulator and `serve` on one network: `sim-network`, `[simulator] network`, as a user runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from adapters.network_file import load_network
from adapters.snapshots import SnapshotReader
from tests.conftest import EXAMPLES, REPO, run_cli

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_simulator(snapshot_dir: Path, env: dict[str, str] | None = None) -> None:
    done = run_cli(
        "run", "--source", "sim", "--rate", "20000", "--limit", "20000", "--snapshot-dir", str(snapshot_dir), "--quiet",
        env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def test_serve_promises_over_the_very_sites_the_simulator_moves_stock_in(tmp_path: Path) -> None:
    """What `make run` and `make serve` do: the simulator's network written out, then served."""
    network_file = tmp_path / "sim-network.toml"
    written = run_cli("sim-network", "--out", str(network_file))
    assert written.returncode == 0, written.stderr
    network = load_network(network_file)
    snapshot_dir = tmp_path / "snapshots"
    run_simulator(snapshot_dir)
    with SnapshotReader.open(snapshot_dir) as reader:
        assert {str(p["site_id"]) for p in reader.positions()} <= {site.id for site in network.sites}

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "omni_ledger", "serve", "--snapshot-dir", str(snapshot_dir), "--port", str(port),
         "--network", str(network_file)],
        cwd=REPO, env={**os.environ, "OMNI_LEDGER_SERVE_MAX_SNAPSHOT_AGE": "1h"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"{base}/health", timeout=2).status_code == 200
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "serve did not start listening"
                time.sleep(0.2)
        store = network.site("ST-001")
        where = {"lat": store.lat, "lon": store.lon}
        availability = httpx.get(f"{base}/v1/skus/SKU-00000/availability", params=where, timeout=10).json()
        # Every mode, not only the best ten (in-store options rank first near a store).
        body = {"items": [{"sku": "SKU-00000", "qty": 1}], "lat": store.lat, "lon": store.lon, "limit": 100}
        promised = httpx.post(f"{base}/v1/promise", json=body, timeout=10)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=20)

    # Every site holding the sku is a site of the network: named, placed, of its kind.
    assert availability["sites"]
    assert all(site["kind"] is not None and site["distance_km"] is not None for site in availability["sites"])
    assert promised.status_code == 200, promised.text
    options = promised.json()["options"]
    assert {option["source_id"] for option in options} <= {site.id for site in network.sites}
    assert {"RESERVE_IN_STORE", "TRANSFER_TO_STORE", "DROPSHIP_TO_STORE", "HOME_DELIVERY"} <= {
        option["mode"] for option in options
    }


def test_the_simulator_moves_stock_in_the_network_file_the_settings_name(tmp_path: Path) -> None:
    env = {"OMNI_LEDGER_SIMULATOR_NETWORK": str(EXAMPLES / "network.toml")}
    run_simulator(tmp_path / "snapshots", env)
    written = run_cli("sim-network", env=env)

    with SnapshotReader.open(tmp_path / "snapshots") as reader:
        sites = {str(p["site_id"]) for p in reader.positions()}
    demo = load_network(EXAMPLES / "network.toml")
    assert sites == {site.id for site in demo.sites}  # a seller's offers are positions too
    assert written.returncode == 0, written.stderr
    (tmp_path / "written.toml").write_text(written.stdout)
    assert load_network(tmp_path / "written.toml") == demo


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read the network file"),
        ('[[sites]]\nid = "X"\nkind = "DC"\nlat = 1\nlon = 2\ntz = "Europe/Lyon"\n', "sites[0].tz"),
        ('[[sites]]\nid = "X"\nkind = "DC"\nlat = 1\nlon = 2\ntz = "UTC"\n', "at least one DC and one STORE"),
    ],
)
def test_a_missing_or_unusable_simulator_network_stops_the_command_naming_the_key(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "network.toml"
    if content is not None:
        path.write_text(content)
    config = tmp_path / "omni-ledger.toml"
    config.write_text(f'[simulator]\nnetwork = "{path}"\n')

    done = run_cli("--config", str(config), "run", "--source", "sim", "--limit", "10", "--snapshot-dir", str(tmp_path))

    assert done.returncode == 2
    assert f"simulator.network (file {config})" in done.stderr
    assert expected in done.stderr
