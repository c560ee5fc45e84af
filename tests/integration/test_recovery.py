"""Crash in the middle of a replay (kill -9), restart on the same directory: nothing lost or doubled."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from adapters.snapshot_store import SnapshotReader
from ledger.contract import event_to_json_bytes
from simulator import RetailerSimulator, SimConfig
from tests.conftest import start_cli
from tests.store_checks import events_applied, finish_while_progressing

pytestmark = pytest.mark.integration

FAST_EPOCHS = {"OMNI_LEDGER_RUNTIME_EPOCH_INTERVAL": "200ms", "OMNI_LEDGER_SNAPSHOTS_INTERVAL": "200ms"}


def write_day(path: Path, events: int) -> None:
    sim = RetailerSimulator(SimConfig(seed=3, stores=10, skus=100))
    now = 1_790_000_000_000
    with path.open("wb") as out:
        written = 0
        while written < events:
            now += 2_000
            batch = sim.next_events(now, 500)
            out.write(b"".join(event_to_json_bytes(e) + b"\n" for e in batch))
            written += len(batch)


def start(source: Path, out: Path) -> subprocess.Popen[bytes]:
    return start_cli(
        "run", "--source", f"file:{source}", "--snapshot-dir", str(out), "--quiet", "--json", env=FAST_EPOCHS
    )


def stable(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    # Versions count published changes, which depend on batch boundaries; the values must not.
    return [{k: v for k, v in r.items() if k not in {"version", "updated_at"}} for r in rows]


def test_kill_during_a_replay_then_restart_gives_the_positions_of_a_clean_run(tmp_path):
    source = tmp_path / "day.jsonl"
    write_day(source, 120_000)
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    first = start(source, clean)
    _stdout, stderr = finish_while_progressing(first, lambda: events_applied(clean), "the clean run")
    assert first.returncode == 0, stderr.decode()

    victim = start(source, crashed)
    # Killed once 20,000 events are applied: it may take a while on a busy machine, never forever.
    deadline = time.monotonic() + 900
    while events_applied(crashed) < 20_000 and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.1)
    assert victim.poll() is None, "the run ended before it could be killed; make the input larger"
    killed_at = events_applied(crashed)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert 0 < killed_at < 120_000

    restarted = start(source, crashed)
    _stdout, stderr = finish_while_progressing(restarted, lambda: events_applied(crashed), "the restarted run")
    assert restarted.returncode == 0, stderr.decode()

    with SnapshotReader.open(clean) as a, SnapshotReader.open(crashed) as b:
        assert stable(b.positions()) == stable(a.positions())
        assert b.inbound() == a.inbound()
        assert b.reservations() == a.reservations()
        assert b.latest()["events_applied"] == a.latest()["events_applied"]  # type: ignore[index]
    # The JSON-lines outputs are truncated back to the last completed epoch on restart: exactly once.
    assert contents(crashed / "decisions.jsonl") == contents(clean / "decisions.jsonl") != b""
    assert contents(crashed / "dead_letters.jsonl") == contents(clean / "dead_letters.jsonl")


def contents(path: Path) -> bytes:
    # Bytewax builds a sink partition on its first item: no dead letter, no file.
    return path.read_bytes() if path.exists() else b""
