"""An embedded ledger: the real flow in a child process, following an events file.

The demo and the tests use it to run the promise story end to end without a broker:
events are appended to `DIR/inbox.jsonl`, `omni-ledger run --source file:... --follow`
folds them, decisions land in `DIR/decisions.jsonl` and snapshots in DIR.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from adapters.snapshots import SnapshotReader
from ledger.errors import OmniLedgerError, SnapshotError

__all__ = ["EmbeddedFlow", "embedded_flow"]


class EmbeddedFlow:
    """A running flow and the means to wait for it."""

    def __init__(self, process: subprocess.Popen[bytes], directory: Path, log: Path) -> None:
        self.process = process
        self.directory = directory
        self.log = log

    def check(self) -> None:
        """Raise if the flow has stopped, with the end of its log."""
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            msg = f"the embedded flow exited with code {self.process.returncode}:\n{tail}"
            raise OmniLedgerError(msg)

    def wait_applied(self, count: int, timeout: float = 60.0) -> int:
        """Wait until a published snapshot has applied at least `count` events; its id."""
        deadline = time.monotonic() + timeout
        reader: SnapshotReader | None = None
        try:
            while time.monotonic() < deadline:
                self.check()
                if reader is None:
                    with contextlib.suppress(SnapshotError):
                        reader = SnapshotReader.open(self.directory)
                if reader is not None:
                    try:
                        latest = reader.latest()
                    except SnapshotError:
                        latest = None  # attached before the flow created its tables
                    if latest is not None:
                        applied, snapshot_id = latest["events_applied"], latest["snapshot_id"]
                        assert isinstance(applied, int)
                        assert isinstance(snapshot_id, int)
                        if applied >= count:
                            return snapshot_id
                time.sleep(0.05)
        finally:
            if reader is not None:
                reader.close()
        msg = f"the embedded flow did not publish {count} applied events within {timeout:.0f} s (log: {self.log})"
        raise OmniLedgerError(msg)


@contextlib.contextmanager
def embedded_flow(
    directory: Path,
    *,
    clock: str = "wall",
    snapshot_interval: str = "200ms",
    extra_config: str = "",
) -> Iterator[EmbeddedFlow]:
    """Run the flow on `directory/inbox.jsonl` (followed) until the block ends, then stop it cleanly."""
    directory.mkdir(parents=True, exist_ok=True)
    inbox = directory / "inbox.jsonl"
    inbox.touch()
    config = directory / "embedded.toml"
    config.write_text(
        f'[ledger]\nclock = "{clock}"\n\n[snapshots]\ndir = "{directory}"\ninterval = "{snapshot_interval}"\n\n'
        f'[runtime]\nepoch_interval = "{snapshot_interval}"\n\n{extra_config}'
    )
    log = directory / "flow.log"
    command = [
        sys.executable, "-m", "omni_ledger", "run", "--config", str(config),
        "--source", f"file:{inbox}", "--follow", "--quiet",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    flow = EmbeddedFlow(process, directory, log)
    try:
        yield flow
    finally:
        if process.poll() is None:
            # Ctrl-C: the flow ends its input, publishes a last snapshot and exits.
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
