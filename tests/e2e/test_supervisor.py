"""The supervisor on real child processes: one exiting stops the others, a stop asks each once."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from omni_ledger.supervisor import Part, Supervisor

pytestmark = pytest.mark.e2e

# A part that runs until SIGINT, then writes a line and exits 0 (as the flow and the API do).
POLITE = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGINT, lambda *a: (print('asked to stop', flush=True), sys.exit(0)))\n"
    "print('running', flush=True)\n"
    "while True: time.sleep(0.05)\n"
)
# A part that ignores SIGINT: only the kill after the timeout ends it.
STUBBORN = (
    "import signal, time\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "print('running', flush=True)\n"
    "while True: time.sleep(0.05)\n"
)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split(") ", 1)[1][0] == "Z"


def test_a_part_that_exits_stops_the_others_and_its_code_and_last_lines_are_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="omni_ledger.supervisor")
    out = io.StringIO()
    parts = [
        Part("steady", python(POLITE)),
        Part("broken", python("import sys; print('cannot open the store', flush=True); sys.exit(3)")),
    ]
    supervisor = Supervisor(parts, stop_timeout=20, out=out)

    code = supervisor.run()

    assert code == 3
    assert supervisor.failed == "broken"
    assert "[broken] cannot open the store" in out.getvalue()
    assert "[steady] asked to stop" in out.getvalue()  # the other part was asked, and stopped cleanly
    assert "the broken part exited with code 3" in caplog.text
    assert "cannot open the store" in caplog.text


def test_a_oneshot_part_that_succeeds_stops_nothing_until_asked() -> None:
    out = io.StringIO()
    parts = [Part("slots", python("print('opened', flush=True)"), oneshot=True), Part("steady", python(POLITE))]
    supervisor = Supervisor(parts, stop_timeout=20, out=out)
    seen_ready = threading.Event()

    def ready() -> bool:
        # Ready once the oneshot has finished and the steady part runs: then ask for a stop, as Ctrl-C would.
        return "[slots] opened" in out.getvalue() and "[steady] running" in out.getvalue()

    def on_ready() -> None:
        seen_ready.set()
        os.kill(os.getpid(), signal.SIGINT)

    code = supervisor.run(ready=ready, on_ready=on_ready)

    assert seen_ready.is_set()
    assert code == 0
    assert supervisor.failed is None
    assert "[steady] asked to stop" in out.getvalue()


def test_a_part_that_ignores_the_stop_is_killed_after_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="omni_ledger.supervisor")
    out = io.StringIO()
    pids: list[int] = []
    supervisor = Supervisor([Part("stubborn", python(STUBBORN))], stop_timeout=1.0, out=out)

    def on_ready() -> None:
        pids.extend(
            int(line.split("pid ")[1].rstrip(")")) for line in caplog.text.splitlines() if "started stubborn" in line
        )
        os.kill(os.getpid(), signal.SIGTERM)

    code = supervisor.run(ready=lambda: "[stubborn] running" in out.getvalue(), on_ready=on_ready)

    assert code == 0
    assert "did not stop in time; killing it" in caplog.text
    assert pids
    assert gone(pids[0])


def test_parts_need_distinct_names() -> None:
    with pytest.raises(ValueError, match="distinct"):
        Supervisor([Part("a", python("pass")), Part("a", python("pass"))])
