"""Runs a few child processes as one: started together, stopped together.

Process running only; which processes make a system is the caller's (see
`omni_ledger.embedded.live_retailer`). The rules:

1. Each part runs in its own session, so the terminal's Ctrl-C reaches the supervisor
   alone, which then asks every part once (SIGINT: the flow ends its input and
   publishes a last snapshot, the server drains) and waits for all of them.
2. A part that exits on its own (a `oneshot` part that fails, or any other part) stops
   the others: a half-running system (an API whose flow died) would only mislead.
   The supervisor returns its exit code and logs the end of its output.
3. A part still running `stop_timeout` seconds after it was asked is killed, with its
   process group, so Ctrl-C always ends everything in bounded time. A second Ctrl-C
   kills at once.

Each part's output lines are copied to the supervisor's stderr, prefixed with its name.

    code = Supervisor([Part("api", ("omni-ledger", "serve"))]).run()
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import IO

__all__ = ["Part", "Supervisor"]

_LOG = logging.getLogger("omni_ledger.supervisor")
_POLL_S = 0.2
_TAIL_LINES = 30


@dataclass(frozen=True, slots=True)
class Part:
    """One process of the system: its name (the log prefix), command line and extra environment.

    A `oneshot` part does a job and exits; exiting 0 is then normal and stops nothing.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    oneshot: bool = False


class _Running:
    def __init__(self, part: Part, process: subprocess.Popen[bytes], out: IO[str]) -> None:
        self.part = part
        self.process = process
        self.tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._copier = threading.Thread(target=self._copy, args=(out,), name=f"supervise-{part.name}", daemon=True)
        self._copier.start()

    def _copy(self, out: IO[str]) -> None:
        assert self.process.stdout is not None
        prefix = f"[{self.part.name}] "
        for raw in iter(self.process.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self.tail.append(line)
            with contextlib.suppress(ValueError, OSError):  # our stderr closed: keep draining the pipe
                out.write(prefix + line + "\n")
                out.flush()

    def finish_copy(self) -> None:
        self._copier.join(timeout=2.0)


class Supervisor:
    """Starts `parts` in order, then watches them until Ctrl-C/SIGTERM or until one exits."""

    def __init__(self, parts: Sequence[Part], *, stop_timeout: float = 25.0, out: IO[str] | None = None) -> None:
        if not parts:
            msg = "Supervisor: expected at least one part"
            raise ValueError(msg)
        names = [part.name for part in parts]
        if len(set(names)) != len(names):
            msg = f"Supervisor: part names must be distinct, got {names}"
            raise ValueError(msg)
        self._parts = tuple(parts)
        self._stop_timeout = stop_timeout
        self._out = out or sys.stderr
        self._asked = threading.Event()
        self._asked_twice = threading.Event()
        self.failed: str | None = None
        """The name of the part whose exit stopped the others, or None."""

    def run(self, ready: Callable[[], bool] | None = None, on_ready: Callable[[], None] | None = None) -> int:
        """Run until asked to stop (0) or until a part exits on its own (its code, 1 if it was 0).

        `ready` is polled while the parts run until it returns True; then `on_ready` is called once.
        """
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        running: list[_Running] = []
        try:
            for part in self._parts:
                running.append(self._start(part))
            code = self._watch(running, ready, on_ready)
        finally:
            self._stop_all(running)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._asked.is_set():
            self._asked_twice.set()
        self._asked.set()

    def _start(self, part: Part) -> _Running:
        try:
            process = subprocess.Popen(
                list(part.argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **part.env},
                # Its own session: the terminal's Ctrl-C is ours to forward, once, to each part.
                start_new_session=True,
            )
        except OSError as exc:
            msg = f"cannot start the {part.name} part ({' '.join(part.argv)}): {exc.strerror}"
            raise OSError(exc.errno, msg) from exc
        _LOG.info("started %s (pid %d)", part.name, process.pid, extra={"part": part.name, "pid": process.pid})
        return _Running(part, process, self._out)

    def _watch(
        self, running: list[_Running], ready: Callable[[], bool] | None, on_ready: Callable[[], None] | None
    ) -> int:
        waiting_ready = ready is not None
        while not self._asked.is_set():
            for child in running:
                code = child.process.poll()
                if code is None or (child.part.oneshot and code == 0):
                    continue
                child.finish_copy()
                self.failed = child.part.name
                tail = "\n".join(child.tail)
                _LOG.error(
                    "the %s part exited with code %d; stopping the others. Its last output:\n%s",
                    child.part.name,
                    code,
                    tail or "(none)",
                    extra={"part": child.part.name, "exit_code": code},
                )
                return code or 1
            if waiting_ready and ready is not None and ready():
                waiting_ready = False
                if on_ready is not None:
                    on_ready()
            time.sleep(_POLL_S)
        _LOG.info("stopping every part (Ctrl-C again kills them at once)")
        return 0

    def _stop_all(self, running: list[_Running]) -> None:
        """Ask each live part to stop (SIGINT), wait up to the timeout, then kill what is left."""
        for child in running:
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGINT)
        deadline = time.monotonic() + self._stop_timeout
        for child in running:
            while child.process.poll() is None and time.monotonic() < deadline and not self._asked_twice.is_set():
                time.sleep(0.05)
            if child.process.poll() is None:
                _LOG.warning("the %s part did not stop in time; killing it", child.part.name)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait(timeout=10)
            child.finish_copy()
            _LOG.info("%s stopped (exit code %s)", child.part.name, child.process.returncode)
