"""How long the flow takes to come back after its Kafka broker restarts.

    python -m bench.broker_restart [--rate 1000] [--warm 20] [--down 4] [--after 40] [--json]

A private broker (infra/kafka/broker.py), a flow (`omni-ledger run --source kafka`) on a
2-partition topic, and a producer in this process sending simulated events at `--rate`
per second for the whole run (its client queues them while the broker is away). After
`--warm` seconds the broker is stopped for `--down` seconds and started again on the
same ports. Every quarter second the events applied by the newest snapshot are read.

Figures: the steady rate and lag before the outage; the time from the broker accepting
connections again to the flow's lag being back at its steady level ("caught up"); the
catch-up rate; and whether every event was applied in the end. The machine is shared:
read the figures beside the load average printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from adapters.avro_wire import WireCodec
from adapters.kafka_io import EventProducer
from adapters.snapshot_store import SnapshotReader
from bench.common import REPO, RESULTS, machine, machine_line, say, utc_stamp
from simulator import RetailerSimulator, SimConfig

BROKER_SCRIPT = REPO / "infra" / "kafka" / "broker.py"


def _broker(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BROKER_SCRIPT), *args], capture_output=True, text=True, timeout=720, check=False
    )
    if done.returncode != 0:
        msg = f"broker.py {' '.join(args)} failed:\n{done.stderr[-2000:]}"
        raise RuntimeError(msg)
    return json.loads(done.stdout.strip().splitlines()[-1]) if "--json" in args else {}


class _Producer(threading.Thread):
    """Simulated events at a steady rate, stamped now (the flow runs on the wall clock)."""

    def __init__(self, bootstrap: str, rate: int) -> None:
        super().__init__(daemon=True)
        self._out = EventProducer({"bootstrap.servers": bootstrap, "message.timeout.ms": "600000"}, "inventory.events")
        self._sim = RetailerSimulator(SimConfig(seed=7, stores=8, skus=60, expected_rate=rate))
        self._codec = WireCodec()
        self._rate = rate
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - started) * self._rate) - self.sent
            if due > 0:
                for event in self._sim.next_events(time.time_ns() // 1_000_000, due)[:due]:
                    self._out.send(f"{event.site_id}|{event.sku}".encode(), self._codec.encode(event))
                    self.sent += 1
            time.sleep(0.05)
        self._out.flush(120)


def _applied(snapdir: Path) -> int:
    try:
        with SnapshotReader.open(snapdir) as reader:
            info = reader.latest()
    except Exception:  # the store does not exist yet, or is being created
        return 0
    return int(info["events_applied"]) if info else 0  # type: ignore[call-overload]


def measure(rate: int, warm: float, down: float, after: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="omni-restart-"))
    home = work / "broker"
    say("starting a private Kafka broker...")
    up = _broker("up", "--free-ports", "--dir", str(home), "--json")
    ports = [str(up[k]).rsplit(":", 1)[1] for k in ("bootstrap", "sasl_bootstrap", "controller")]
    flow: subprocess.Popen[bytes] | None = None
    producer: _Producer | None = None
    try:
        env = {
            **os.environ,
            "OMNI_LEDGER_KAFKA_BOOTSTRAP": up["bootstrap"],
            "OMNI_LEDGER_KAFKA_PARTITIONS": "2",
            "OMNI_LEDGER_SNAPSHOTS_INTERVAL": "300ms",
        }
        subprocess.run(
            [sys.executable, "-m", "omni_ledger", "topics", "create"],
            env=env,
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        snapdir = work / "snap"
        log = (work / "flow.log").open("wb")
        flow = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "omni_ledger",
                "run",
                "--source",
                "kafka",
                "--quiet",
                "--snapshot-dir",
                str(snapdir),
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        producer = _Producer(up["bootstrap"], rate)
        producer.start()
        samples: list[tuple[float, int, int]] = []  # (seconds since start, sent, applied)
        t0 = time.monotonic()

        def sample_until(end: float) -> None:
            while time.monotonic() - t0 < end:
                assert producer is not None
                samples.append((time.monotonic() - t0, producer.sent, _applied(snapdir)))
                time.sleep(0.25)

        say(f"producing {rate:,} events/s; warming up {warm:.0f} s")
        sample_until(warm)
        t_down = time.monotonic() - t0
        say("stopping the broker")
        _broker("down", "--dir", str(home))
        sample_until(t_down + down)
        say("starting the broker again")
        _broker("up", "--dir", str(home), "--port", ports[0], "--sasl-port", ports[1], "--controller-port", ports[2])
        t_up = time.monotonic() - t0
        sample_until(t_up + after)
        producer.stop.set()
        producer.join(timeout=150)
        total = producer.sent
        drain_until = time.monotonic() + 60
        while _applied(snapdir) < total and time.monotonic() < drain_until:
            time.sleep(0.5)
        final = _applied(snapdir)
        reconnects = (work / "flow.log").read_text(errors="replace").count("none came for")
    finally:
        if producer is not None:
            producer.stop.set()
        if flow is not None:
            flow.send_signal(signal.SIGINT)
            try:
                flow.wait(timeout=120)
            except subprocess.TimeoutExpired:
                flow.kill()
        subprocess.run(
            [sys.executable, str(BROKER_SCRIPT), "down", "--dir", str(home)],
            capture_output=True,
            timeout=60,
            check=False,
        )

    steady = [s for s in samples if t_down - 10 <= s[0] <= t_down]
    steady_rate = (steady[-1][2] - steady[0][2]) / (steady[-1][0] - steady[0][0]) if len(steady) > 1 else None
    steady_lag = max((sent - applied for _, sent, applied in steady), default=0)
    caught = next((t for t, sent, applied in samples if t > t_up and sent - applied <= steady_lag), None)
    behind_at_up = next((sent - applied for t, sent, applied in samples if t >= t_up), None)
    catch_up = caught - t_up if caught is not None else None
    catch_rate = None
    if caught is not None:
        window = [s for s in samples if t_up <= s[0] <= caught]
        if len(window) > 1 and window[-1][0] > window[0][0]:
            catch_rate = (window[-1][2] - window[0][2]) / (window[-1][0] - window[0][0])
    return {
        "rate": rate,
        "broker_down_s": round(t_up - t_down, 1),
        "steady_events_per_s": round(steady_rate, 1) if steady_rate is not None else None,
        "steady_lag_events": steady_lag,
        "behind_at_broker_up_events": behind_at_up,
        "broker_up_to_caught_up_s": round(catch_up, 1) if catch_up is not None else None,
        "catch_up_events_per_s": round(catch_rate, 1) if catch_rate is not None else None,
        "events_sent": total,
        "events_applied": final,
        "source_reconnects": reconnects,
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="events a second the producer sends (default 1000)")
    parser.add_argument("--warm", type=float, default=20.0, help="seconds before the broker stops (default 20)")
    parser.add_argument("--down", type=float, default=4.0, help="seconds the broker stays down (default 4)")
    parser.add_argument("--after", type=float, default=40.0, help="seconds observed after it is back (default 40)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    result = measure(args.rate, args.warm, args.down, args.after)
    result["machine"] = machine()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"broker-restart-{utc_stamp()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
        return
    print(machine_line(result["machine"]))
    width = max(len(k) for k in result if k != "machine")
    for key, value in result.items():
        if key != "machine":
            print(f"  {key:<{width}}  {value if value is not None else 'not reached'}")
    print(f"  written to {path.relative_to(REPO)}")
    if result["events_applied"] != result["events_sent"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
