"""A crashed execution's saved state of an unfinished epoch never comes back after a later crash.

The reproduction of the 500 reservation decisions missing after kill -9s (issue 13):
execution 1 is killed while its sink waits for the acknowledgement of epoch 6 (the
deduplicating step already saved its state of that epoch); execution 2 resumes at epoch
6, its first read is empty (as a Kafka consumer's first poll), it completes epoch 6 and
is killed waiting for epoch 7's acknowledgement; execution 3 resumes at epoch 7. Bytewax
then loads execution 1's state of epoch 6, which has seen item 5, so item 5 is a
duplicate and its output is never delivered. Discarding the uncommitted state before
each execution delivers every item.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from bytewax.recovery import init_db_dir

from adapters.recovery import discard_uncommitted, resume_epoch
from tests.conftest import REPO
from tests.integration.leftover_flow import ITEMS

pytestmark = pytest.mark.integration


def _saved_epochs(recovery: Path, key: str) -> set[int]:
    with closing(sqlite3.connect(recovery / "part-0.sqlite3", timeout=30)) as db:
        return {epoch for (epoch,) in db.execute("SELECT snap_epoch FROM snaps WHERE state_key = ?", (key,))}


def _start(recovery: Path, out: Path, *flags: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tests.integration.leftover_flow", str(recovery), str(out), *flags]
    return subprocess.Popen(command, cwd=REPO, env=os.environ.copy(), stderr=subprocess.PIPE)


def _kill_once_saved(proc: subprocess.Popen[bytes], recovery: Path, key: str, epoch: int) -> None:
    """kill -9 as soon as the dedup step's state of `key` at `epoch` is saved (the sink then waits)."""
    deadline = time.monotonic() + 60
    while epoch not in _saved_epochs(recovery, key):
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, f"the state of {key} at epoch {epoch} was never saved"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _three_executions(tmp_path: Path, *, discard: bool) -> list[int]:
    recovery, out = tmp_path / "recovery", tmp_path / "out.txt"
    recovery.mkdir()
    init_db_dir(recovery, 1)  # type: ignore[no-untyped-call]
    extra = ("--discard",) if discard else ()
    # Item i is read in epoch i + 1: item 5 in epoch 6.
    _kill_once_saved(_start(recovery, out, "--block-at", "5", *extra), recovery, "k5", 6)
    assert resume_epoch(recovery) == 6
    _kill_once_saved(_start(recovery, out, "--block-at", "5", "--first-read-empty", *extra), recovery, "k5", 7)
    assert resume_epoch(recovery) == 7
    final = _start(recovery, out, *extra)
    assert final.wait(timeout=120) == 0, final.stderr.read().decode() if final.stderr else ""
    return sorted(int(line) for line in out.read_text().split())


def test_without_the_discard_bytewax_loads_a_crashed_executions_state_and_an_output_is_lost(tmp_path):
    # Bytewax's own behaviour, kept as a test so that a Bytewax that fixes it is noticed.
    delivered = _three_executions(tmp_path, discard=False)
    assert 5 not in delivered
    assert set(delivered) == set(range(ITEMS)) - {5}


def test_discarding_the_uncommitted_state_before_each_execution_delivers_every_output(tmp_path):
    delivered = _three_executions(tmp_path, discard=True)
    assert set(delivered) == set(range(ITEMS))


def test_the_resume_epoch_is_bytewaxs_own(tmp_path):
    recovery, out = tmp_path / "recovery", tmp_path / "out.txt"
    recovery.mkdir()
    init_db_dir(recovery, 2)  # type: ignore[no-untyped-call]
    assert resume_epoch(recovery) == 1  # nothing saved yet
    assert discard_uncommitted(recovery).rows == 0
    _kill_once_saved(_start(recovery, out, "--block-at", "3"), recovery, "k3", 4)
    # Epochs 1-3 completed; epoch 4's state was saved but its outputs never acknowledged.
    assert resume_epoch(recovery) == 4
    discarded = discard_uncommitted(recovery)
    assert discarded.resume_epoch == 4
    assert discarded.rows >= 1
    assert _saved_epochs(recovery, "k3") == set()
    assert _saved_epochs(recovery, "k2") == {3}
