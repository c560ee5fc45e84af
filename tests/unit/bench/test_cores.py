"""`bench.cores`: the machine's cores split among named processes (with their descendants), the rest, idle."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.cores import CoreWatch, cpu_seconds, describe, listening_pid

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux /proc")


def _cpu(found: dict[str, Any]) -> dict[str, float]:
    cpu = found["cpu_seconds"]
    assert isinstance(cpu, dict)
    return cpu


def _shares(found: dict[str, Any]) -> dict[str, float]:
    cores = found["cores"]
    assert isinstance(cores, dict)
    return cores


def _spin(seconds: float) -> None:
    began = time.process_time()
    while time.process_time() - began < seconds:
        pass


def test_this_process_is_charged_the_cpu_it_used_in_the_window() -> None:
    watch = CoreWatch({}, include_self="bench")
    watch.start()
    began = time.process_time()
    _spin(0.3)
    used = time.process_time() - began
    found = watch.stop()
    charged = _cpu(found)["bench"]
    # The same counters read two ways (clock ticks of 10 ms in /proc): equal within a few ticks.
    assert abs(charged - used) < 0.05
    assert set(_shares(found)) == {"bench", "other", "idle"}


def test_a_process_is_charged_with_its_descendants() -> None:
    # A parent that starts a spinning child and waits: the child's CPU is the parent's name's.
    # The child spins far longer than the window, so it is alive at both readings (one that ended is not charged).
    spinner = "import time\nt=time.process_time()\nwhile time.process_time()-t<30: pass"
    parent_code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {spinner!r}], check=True)"
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    try:
        _charged_with_child(parent)
    finally:
        for pid in _children(parent.pid):
            os.kill(pid, signal.SIGKILL)
        parent.kill()
        parent.wait(timeout=30)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _charged_with_child(parent: subprocess.Popen[bytes]) -> None:
    watch = CoreWatch({"job": parent.pid})
    watch.start()
    children: list[int] = []
    deadline = time.monotonic() + 20
    while not children and time.monotonic() < deadline:
        children = _children(parent.pid)
        time.sleep(0.01)
    assert children, "the parent started no child within 20 s"
    child = children[0]
    while cpu_seconds(child) is not None and (cpu_seconds(child) or 0) < 0.3 and time.monotonic() < deadline:
        time.sleep(0.02)
    child_cpu = cpu_seconds(child) or 0.0
    found = watch.stop()
    assert _cpu(found)["job"] >= child_cpu - 0.05


def test_listening_pid_names_the_process_behind_a_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert listening_pid(port) == os.getpid()
    assert listening_pid(port) is None


def test_describe_lists_every_share_and_the_machine() -> None:
    line = describe({"seconds": 30.04, "cores": {"flow": 0.93, "idle": 0.05}, "machine_cores": 2})
    assert line == "flow 0.93, idle 0.05 of 2 cores over 30.0 s"
    assert describe({}) == "cores not measured"
