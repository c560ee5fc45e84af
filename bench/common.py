"""What the benchmarks share: the machine, a Kafka broker, the CLI as a subprocess, figures as rows.

Everything here drives the public surface (`python -m omni_ledger ...`, the Kafka topics, the
snapshot store's public tables), never the flow's internals: the flow can change under it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

__all__ = [
    "REPO",
    "RESULTS",
    "Broker",
    "Row",
    "flow_env",
    "free_port",
    "last_json",
    "machine",
    "machine_line",
    "omni",
    "percentile",
    "rss_bytes",
    "say",
    "spawn_omni",
    "stop_process",
    "tail",
    "topic_span",
    "topic_watermarks",
    "utc_stamp",
]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
BROKER_SCRIPT = REPO / "infra" / "kafka" / "broker.py"


def say(text: str) -> None:
    """Progress on stderr (the table and the JSON go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@dataclass
class Row:
    """One figure of the suite's table.

    `target` is the issue's target as text ("≥ 100,000"); `met` is None where there is none
    or the figure could not be measured; `vs_ceiling` is the ratio to the raw ceiling.
    """

    section: str
    figure: str
    value: float | int | str | None
    unit: str = ""
    target: str = ""
    met: bool | None = None
    vs_ceiling: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def not_run(cls, section: str, figure: str, why: str, target: str = "") -> Row:
        return cls(section, figure, "not run", target=target, note=why)


def _dist(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "-"


def _mem_total() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def machine() -> dict[str, Any]:
    """Cores, CPU, memory, Python and the versions that shape the figures."""
    import confluent_kafka

    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_bytes": _mem_total(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "bytewax": _dist("bytewax"),
        "confluent_kafka": _dist("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "fastavro": _dist("fastavro"),
        "duckdb": _dist("duckdb"),
        "py_spy": _dist("py-spy"),
    }


def machine_line(m: dict[str, Any]) -> str:
    """`machine()` in one line for a terminal."""
    mem = f", {m['memory_bytes'] / 2**30:.0f} GiB" if m.get("memory_bytes") else ""
    return (
        f"machine: {m['cores']} cores, {m['cpu']}{mem}; Python {m['python']}; bytewax {m['bytewax']}, "
        f"confluent-kafka {m['confluent_kafka']} (librdkafka {m['librdkafka']}), fastavro {m['fastavro']}, "
        f"duckdb {m['duckdb']}, py-spy {m['py_spy']}"
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) of sorted `values` (nearest rank), None when empty."""
    if not values:
        return None
    return float(values[min(len(values) - 1, int(len(values) * q))])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a live process in bytes, from /proc/PID/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(rest.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


class Broker:
    """A Kafka broker: KAFKA_BOOTSTRAP_SERVERS when set, else a private one started on first use."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._home: Path | None = None
        self._bootstrap: str | None = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None

    @property
    def bootstrap(self) -> str:
        if self._bootstrap is None:
            self._home = self._workdir / "broker"
            say("starting a private Kafka broker (infra/kafka/broker.py)...")
            out = subprocess.run(
                [sys.executable, str(BROKER_SCRIPT), "up", "--free-ports", "--dir", str(self._home), "--json"],
                capture_output=True,
                text=True,
                timeout=720,
                check=False,
            )
            if out.returncode != 0:
                msg = f"cannot start a Kafka broker (needs Java 17+ and Maven):\n{out.stderr[-2000:]}"
                raise RuntimeError(msg)
            self._bootstrap = str(json.loads(out.stdout.strip().splitlines()[-1])["bootstrap"])
        return self._bootstrap

    def close(self) -> None:
        if self._home is not None:
            subprocess.run(
                [sys.executable, str(BROKER_SCRIPT), "down", "--dir", str(self._home)],
                capture_output=True,
                timeout=60,
                check=False,
            )
            self._home = None


def flow_env(bootstrap: str, prefix: str, partitions: int, **settings: str) -> dict[str, str]:
    """The environment of an `omni-ledger` subprocess on topics `prefix*` (OMNI_LEDGER_* settings)."""
    env = {
        **os.environ,
        "OMNI_LEDGER_KAFKA_BOOTSTRAP": bootstrap,
        "OMNI_LEDGER_KAFKA_TOPIC_PREFIX": prefix,
        "OMNI_LEDGER_KAFKA_PARTITIONS": str(partitions),
    }
    env.update({f"OMNI_LEDGER_{k.upper()}": v for k, v in settings.items()})
    return env


def omni(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m omni_ledger ARGS` to its end, killed (whole process group) after `timeout` seconds."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "omni_ledger", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\n(killed after {timeout:.0f} s)"
        return subprocess.CompletedProcess(proc.args, -9, out, err)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def spawn_omni(
    env: dict[str, str], args: Sequence[str], log: Path, *, wrapper: Sequence[str] = (), module: str = "omni_ledger"
) -> subprocess.Popen[bytes]:
    """Start `[WRAPPER...] python -m MODULE ARGS` (the CLI by default) in its own process group.

    stdout goes to `log` (the `--json` summary is its last line), stderr to `log` + ".err".
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out, log.with_name(log.name + ".err").open("ab") as err:
        return subprocess.Popen(
            [*wrapper, sys.executable, "-m", module, *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )


def last_json(path: Path) -> dict[str, Any] | None:
    """The last line of `path` that is a JSON object (a `--json` summary), or None."""
    with contextlib.suppress(OSError):
        for line in reversed(path.read_text(errors="replace").splitlines()):
            line = line.strip()
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    value = json.loads(line)
                    if isinstance(value, dict):
                        return value
    return None


def stop_process(proc: subprocess.Popen[Any], grace: float = 60.0, sig: int = signal.SIGINT) -> int:
    """Send `sig` (Ctrl-C: the flow publishes a last snapshot and exits), kill the group after `grace` s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def tail(path: Path, chars: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{os.getpid()}-{time.monotonic_ns()}",
            "enable.auto.commit": False,
        }
    )


def topic_watermarks(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    """{partition: (low, high)} offsets of `topic`."""
    consumer = _consumer(bootstrap)
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                meta = consumer.list_topics(topic, timeout=10).topics[topic]
                return {
                    p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in meta.partitions
                }
            except KafkaException:
                # A topic just created has no partition leader for a moment (NOT_LEADER_FOR_PARTITION).
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()


def _timestamp_at(consumer: Consumer, topic: str, partition: int, offset: int) -> int | None:
    consumer.assign([TopicPartition(topic, partition, offset)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            return int(message.timestamp()[1])
    return None


def topic_span(bootstrap: str, topic: str, before: dict[int, tuple[int, int]]) -> tuple[int, int, int] | None:
    """(first ms, last ms, messages) of what was appended to `topic` since the watermarks `before`.

    Reads two messages a partition: the first new one and the last one (the producer's
    CreateTime, which librdkafka stamps when the flow hands the message over).
    """
    after = topic_watermarks(bootstrap, topic)
    consumer = _consumer(bootstrap)
    firsts: list[int] = []
    lasts: list[int] = []
    count = 0
    try:
        for part, (_, high) in after.items():
            start = before.get(part, (0, 0))[1]
            if high <= start:
                continue
            count += high - start
            for offset, into in ((start, firsts), (high - 1, lasts)):
                stamp = _timestamp_at(consumer, topic, part, offset)
                if stamp is not None:
                    into.append(stamp)
    finally:
        consumer.close()
    if not firsts or not lasts:
        return None
    return min(firsts), max(lasts), count


def utc_stamp() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"


def write_result(kind: str, result: dict[str, Any]) -> Path:
    """A run's figures written as RESULTS/<kind>-<UTC stamp>.json; that file's path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{kind}-{utc_stamp()}.json"
    path.write_text(json.dumps(result, indent=2))
    return path
