"""Shared fixtures: run the real CLI in a subprocess, read the snapshots it wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from ledger.events import InventoryEvent
from simulator import RetailerSimulator, SimConfig

# The `kafka` and `topic_factory` fixtures: a real broker for the session (see the module).
pytest_plugins = ["tests.kafka_broker"]

# No timing in tests: Hypothesis's 200 ms deadline per example and its "generation is slow"
# health check are timing assertions, and they failed property tests (test_promise at 288 ms,
# test_compaction's generation) on a loaded machine while the properties held. Performance is
# measured by `make bench`. Loaded before any test module builds its own `@settings`, which
# inherit from it.
settings.register_profile("omni-ledger", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("omni-ledger")

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`omni-ledger ARGS` in a fresh interpreter, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "omni_ledger", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        check=False,
    )


def start_cli(*args: str, env: dict[str, str] | None = None, text: bool = False) -> subprocess.Popen[Any]:
    """`omni-ledger ARGS` started in a fresh interpreter, its output piped: a run the test stops itself."""
    return subprocess.Popen(
        [sys.executable, "-m", "omni_ledger", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=text,
    )


def interrupt(proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    """Stop a process as a user's Ctrl-C does; kill it if it has not ended within `timeout` seconds."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


@pytest.fixture
def snapshot_dir(tmp_path: Path) -> Path:
    return tmp_path / "snapshots"


def recent_simulated_events(count: int) -> list[InventoryEvent]:
    """Simulated events of the last minutes (a wall clock admits them), reservations included."""
    sim = RetailerSimulator(SimConfig(seed=5, stores=8, skus=60, expected_rate=2000))
    now = time.time_ns() // 1_000_000 - 120_000
    events: list[InventoryEvent] = []
    while len(events) < count:
        now += 100
        events.extend(sim.next_events(now, 200))
    return events[:count]


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Keep each phase's report on the test item, so fixtures can act on a failure (screenshots)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
