"""An embedded ledger: the real flow in a child process, following an events file.

The demo and the tests use it to run the promise story end to end without a broker:
events are appended to `DIR/inbox.jsonl`, `omni-ledger run --source file:... --follow`
folds them, decisions land in `DIR/decisions.jsonl` and snapshots in DIR.

`live_retailer` composes the whole embedded system `omni-ledger up` (`make run`) runs:
the flow folding the simulator and the API's inbox, the API and console, and the
simulated people who use them; `omni_ledger.supervisor` runs the parts.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from adapters.inbox import JsonLinesInbox
from adapters.snapshot_store import SnapshotReader
from ledger.errors import OmniLedgerError, SnapshotError
from omni_ledger.config import Settings
from omni_ledger.supervisor import Part

__all__ = ["EmbeddedFlow", "LiveRetailer", "embedded_flow", "http_ok", "live_retailer", "prepare_live_retailer"]


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


# -- the living retailer: which parts `omni-ledger up` (`make run`) runs -------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveRetailer:
    """The parts of the embedded system and where a person reaches it."""

    parts: tuple[Part, ...]
    console_url: str
    health_url: str
    token: str | None
    """The write token made for this session, to print; None when OMNI_LEDGER_SERVE_WRITE_TOKENS gives them."""
    metrics_urls: tuple[str, ...]


def live_retailer(
    settings: Settings,
    *,
    network_file: Path,
    config_file: Path | None = None,
    people: bool = True,
    python: str = sys.executable,
    environ: Mapping[str, str] | None = None,
    flow_metrics_port: int = 9610,
    api_metrics_port: int = 9611,
    log_format: str | None = None,
    customer_every: float = 15.0,
) -> LiveRetailer:
    """The parts: the flow (the simulator and the API's inbox), the API with the console, and the people.

    Composition only; `omni_ledger.supervisor` runs them. The API listens on
    `settings.serve.host:port`, each process serves Prometheus metrics on its own port
    (0: none). The people (simulated customers, clerks and drivers, `omni-ledger people`)
    use the API as a person would, with the session's write token.
    """
    environ = os.environ if environ is None else environ
    directory = str(settings.snapshot_dir)
    common = [python, "-m", "omni_ledger"] + (["--config", str(config_file)] if config_file else [])
    if log_format is not None:
        common += ["--log-format", log_format]
    given = environ.get("OMNI_LEDGER_SERVE_WRITE_TOKENS", "").strip()
    # A token for this session only, unless the operator gives them: writes are never open.
    token = None if given else f"local-{secrets.token_hex(12)}"
    tokens = {"OMNI_LEDGER_SERVE_WRITE_TOKENS": given or str(token)}
    # The fold decides a confirm at its next epoch; beside the simulator, on a busy machine, or
    # while it maintains its snapshot store, that can take longer than serve's default 5 s.
    tokens["OMNI_LEDGER_SERVE_CONFIRM_TIMEOUT"] = environ.get("OMNI_LEDGER_SERVE_CONFIRM_TIMEOUT", "20s")
    host, port = settings.serve.host, settings.serve.port
    base = f"http://{host}:{port}"
    flow = Part(
        "flow",
        [*common, "run", "--source", "sim", "--follow", "--quiet", "--snapshot-dir", directory,
         "--rate", str(settings.simulator.rate),
         "--metrics-port", str(flow_metrics_port)],
    )  # fmt: skip
    api = Part(
        "api",
        [*common, "serve", "--snapshot-dir", directory, "--network", str(network_file), "--bus", "file",
         "--host", host, "--port", str(port), "--metrics-port", str(api_metrics_port),
         # Warnings and errors only: a request log line per click and per simulated person drowns the rest.
         "--log-level", "WARNING"],
        env=tokens,
    )  # fmt: skip
    parts = [flow, api]
    if people:
        # The first write token: the people act with the rights a clerk has.
        first = (given or str(token)).split(",")[0].strip()
        parts.append(
            Part(
                "people",
                [
                    *common,
                    "people",
                    "--url",
                    base,
                    "--network",
                    str(network_file),
                    "--snapshot-dir",
                    directory,
                    "--customer-every",
                    str(customer_every),
                ],
                env={"OMNI_LEDGER_PEOPLE_TOKEN": first},
            )
        )
    metrics_host = settings.metrics.host
    metrics = tuple(f"http://{metrics_host}:{p}/metrics" for p in (flow_metrics_port, api_metrics_port) if p)
    return LiveRetailer(tuple(parts), f"{base}/console/", f"{base}/health", token, metrics)


def prepare_live_retailer(settings: Settings, network_file: Path, *, reset: bool, slot_days: int | None = None) -> int:
    """Before the parts start: the simulator's network as a file, the store cleared if asked, slots opened.

    Opening appointment capacity goes through the inbox like any other event, for
    `slot_days` ahead (default: the network's promise horizon, at most 60 days), idempotent:
    the same ids for the same slots. Returns the events sent.
    """
    from ledger.confirm import open_slots_events
    from ledger.network import DAY_MS
    from omni_ledger.bootstrap import reset_store
    from simulator.network import network_toml, simulated_network

    network = simulated_network(settings.simulator.sim_config())
    network_file.parent.mkdir(parents=True, exist_ok=True)
    network_file.write_text(network_toml(network, title="The simulator's network, written by `omni-ledger up`."))
    inbox = settings.snapshot_dir / "inbox.jsonl"
    if reset:
        reset_store(settings.snapshot_dir)
        # The inbox's events were folded into what was just removed; a new run starts without them.
        inbox.unlink(missing_ok=True)
    now = time.time_ns() // 1_000_000
    days = slot_days if slot_days is not None else max(1, min(60, int(network.horizon_days)))
    events = open_slots_events(network, now, now + days * DAY_MS, now)
    sink = JsonLinesInbox(inbox)
    try:
        sink.send(events)
    finally:
        sink.close()
    return len(events)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether GET `url` answers 200 (False on any error: the server may not listen yet)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False
