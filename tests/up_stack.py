"""`omni-ledger up` run as a user runs it, for the tests: its output, its parts, its API."""

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
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

__all__ = ["READY_TIMEOUT_S", "TOKEN", "Up", "alive", "free_port"]

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
