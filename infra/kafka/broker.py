#!/usr/bin/env python3
"""A local Apache Kafka broker for development, tests and CI, from Maven Central.

    python3 infra/kafka/broker.py up [--dir DIR] [--port N --sasl-port N --controller-port N | --free-ports] [--json]
    python3 infra/kafka/broker.py status [--dir DIR] [--json]
    python3 infra/kafka/broker.py env [--dir DIR] [--export]
    python3 infra/kafka/broker.py down [--dir DIR]

One KRaft node (broker and controller in one JVM) on 127.0.0.1 only, with three listeners:
PLAINTEXT (clients and inter-broker traffic), SASL_PLAINTEXT with SCRAM-SHA-256 and
SCRAM-SHA-512 (a user created when the storage is formatted), and CONTROLLER. It needs
Java 17+ and Maven, nothing else: the jars come from Maven Central through pom.xml beside
this file and are kept in a cache between runs. Stdlib only, so any python3 runs it.

Exit codes: 0 done, 1 the broker failed (the message says why), 2 a tool is missing or an
argument is wrong, 3 `status`: no broker is running.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
REPO = HERE.parents[1]
DEFAULT_DIR = REPO / "var" / "kafka"
DEFAULT_PORT, DEFAULT_SASL_PORT, DEFAULT_CONTROLLER_PORT = 19092, 19093, 19094
DEFAULT_USER, DEFAULT_PASSWORD = "omni", "omni-secret"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
STARTED = "Kafka Server started"  # logged by kafka.server.KafkaBroker once every listener serves
MIN_JAVA = 17
MVN_TIMEOUT_S = 600  # a cold ~/.m2 fetches ~45 MB: seconds on a good link, minutes on a bad one
STOP_TIMEOUT_S = 30  # a controlled shutdown of one node takes a few seconds
SAFE_CREDENTIAL = re.compile(r"^[A-Za-z0-9._~@+-]{1,64}$")  # nothing the --add-scram syntax would misread


class BrokerError(Exception):
    """A failure with its message for the user and the exit code to leave with."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 1) -> NoReturn:
    """Stop with `message` (printed as `kafka: error: ...`) and exit code `code`."""
    raise BrokerError(message, code)


@dataclass(frozen=True)
class State:
    """What `up` decided for a data directory; `status`, `env` and `down` read it back."""

    port: int
    sasl_port: int
    controller_port: int
    user: str
    password: str
    version: str
    cluster_id: str

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"


class Paths:
    """The files of one data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"  # log.dirs: the topics and the KRaft metadata log
        self.properties = root / "server.properties"
        self.log4j = root / "log4j2.properties"
        self.log = root / "server.log"
        self.pid = root / "kafka.pid"
        self.state = root / "broker.json"
        self.lock = root / "broker.lock"

    @property
    def formatted(self) -> bool:
        return (self.data / "meta.properties").exists()


def say(message: str) -> None:
    """Progress goes to stderr, so that stdout carries only the result (env lines or JSON)."""
    print(f"kafka: {message}", file=sys.stderr, flush=True)


# --- tools -------------------------------------------------------------------------------


def find_java() -> str:
    """`$JAVA_HOME/bin/java` (what mvn uses too), else `java` on PATH; Java 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home, "bin", "java") if java_home else None
    java = str(candidate) if candidate and candidate.exists() else shutil.which("java")
    if java is None:
        fail(
            f"java not found: the Kafka broker needs Java {MIN_JAVA} or newer. Install a JRE "
            "(Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`; macOS: `brew install openjdk@17`) "
            "or set JAVA_HOME.",
            2,
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    # `openjdk version "17.0.15" 2025-04-15`, or `"1.8.0_392"` for Java 8.
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not found:
        fail(f"could not read the version of {java}: {(out.stderr or out.stdout).strip()}", 2)
    major = int(found.group(2)) if found.group(1) == "1" else int(found.group(1))
    if major < MIN_JAVA:
        fail(
            f"{java} is Java {major}; Kafka 4 needs Java {MIN_JAVA} or newer. Install one "
            "(Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`) and put it first on PATH or set JAVA_HOME.",
            2,
        )
    return java


def find_mvn() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        fail(
            "mvn not found: Maven fetches the Kafka jars from Maven Central once. Install Maven 3.6+ "
            "(Debian/Ubuntu: `apt-get install maven`; macOS: `brew install maven`).",
            2,
        )
    return mvn


def kafka_version() -> str:
    found = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", POM.read_text())
    if not found:
        fail(f"{POM} has no <kafka.version> property", 2)
    return found.group(1)


def cache_dir(version: str) -> Path:
    override = os.environ.get("OMNI_LEDGER_KAFKA_CACHE")
    if override:
        return Path(override).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "omni-ledger" / f"kafka-{version}"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path`, held until the block ends (or the process dies)."""
    import fcntl  # Unix only, like the rest of this script (signals, process groups)

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch_jars(version: str) -> Path:
    """The broker's class path directory, fetched with Maven unless the cache already has it."""
    cache = cache_dir(version)
    libs, stamp = cache / "libs", cache / "complete"
    # The stamp names the POM it came from: a changed POM (say, another log4j) fetches again.
    pom_digest = hashlib.sha256(POM.read_bytes()).hexdigest()

    def ready() -> bool:
        return stamp.exists() and stamp.read_text().strip() == pom_digest and any(libs.glob("kafka_2.13-*.jar"))

    if ready():
        return libs
    mvn = find_mvn()
    with locked(cache / "lock"):  # two `up`s at once (make and a test run) fetch the jars once
        if ready():  # another process fetched them while we waited for the lock
            return libs
        say(f"fetching the Kafka {version} jars from Maven Central into {libs} (once; later runs reuse them)")
        started = time.monotonic()
        partial = cache / f"libs.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        command = [
            mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={partial}",
        ]  # fmt: skip
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=MVN_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            shutil.rmtree(partial, ignore_errors=True)
            fail(f"mvn did not finish within {MVN_TIMEOUT_S} s; check the network to Maven Central")
        if out.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-30:])
            fail(
                f"mvn could not fetch the Kafka jars (exit {out.returncode}):\n{tail}\n"
                "Check that Maven Central is reachable (or the mirror in ~/.m2/settings.xml), then run `up` again."
            )
        # Swap in whole: a run killed halfway leaves a partial directory, never a half-filled libs/.
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        stamp.write_text(pom_digest + "\n")
        size = sum(p.stat().st_size for p in libs.iterdir()) / 2**20
        say(f"fetched {len(list(libs.iterdir()))} jars ({size:.0f} MiB) in {time.monotonic() - started:.1f} s")
    return libs


# --- configuration -----------------------------------------------------------------------


def server_properties(paths: Paths, state: State) -> str:
    host = "127.0.0.1"
    jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return f"""\
# Written by infra/kafka/broker.py on every `up`: edit that script, not this file.
# One KRaft node that is both broker and controller, for development and tests.
process.roles=broker,controller
node.id=1
# A static quorum of this one node (no --standalone at format time: the two do not mix).
controller.quorum.voters=1@{host}:{state.controller_port}
controller.listener.names=CONTROLLER

# Every listener on loopback only: nothing here is meant to be reachable from the network.
listeners=PLAINTEXT://{host}:{state.port},SASL_PLAINTEXT://{host}:{state.sasl_port},CONTROLLER://{host}:{state.controller_port}
advertised.listeners=PLAINTEXT://{host}:{state.port},SASL_PLAINTEXT://{host}:{state.sasl_port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT

# SCRAM on the SASL listener; the user's credentials were written at format time
# (kafka-storage format --add-scram), so they exist before the first client connects.
sasl.enabled.mechanisms={",".join(SCRAM_MECHANISMS)}
listener.name.sasl_plaintext.sasl.enabled.mechanisms={",".join(SCRAM_MECHANISMS)}
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config={jaas}
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={jaas}

log.dirs={paths.data}
num.partitions=1
# One node: internal topics cannot have three replicas.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests create a consumer group each: do not make every first join wait 3 s.
group.initial.rebalance.delay.ms=0
"""


LOG4J2 = """\
# Written by infra/kafka/broker.py: Kafka 4's jars carry no logging configuration.
# Everything goes to stdout, which broker.py sends to server.log beside this file.
status = warn
# Kafka stops in its own shutdown hook: keep logging until the JVM exits, so that the log
# shows the whole shutdown (log4j would otherwise stop in a concurrent hook of its own).
shutdownHook = disable
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
# One line per request otherwise, as in Kafka's own config/log4j2.yaml.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.channel.name = kafka.network.RequestChannel$
logger.channel.level = WARN
"""


def read_state(paths: Paths) -> State | None:
    try:
        return State(**json.loads(paths.state.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_state(paths: Paths, state: State) -> None:
    paths.state.write_text(json.dumps(asdict(state), indent=2) + "\n")
    paths.state.chmod(0o600)  # it holds the SCRAM password


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now: held open together, so that they differ from each other."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def check_port_free(port: int, option: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            fail(
                f"port {port} on 127.0.0.1 ({option}) is taken ({exc.strerror}): another broker? See "
                "`make kafka-status`, pick other ports with --port/--sasl-port/--controller-port, or use --free-ports."
            )


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# --- processes ---------------------------------------------------------------------------


def process_alive(pid: int) -> bool:
    """Whether pid runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def command_line(pid: int) -> str:
    proc = Path(f"/proc/{pid}/cmdline")
    if proc.exists():
        with contextlib.suppress(OSError):
            return proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return out.stdout


def running_pid(paths: Paths) -> int | None:
    """The pid of this directory's broker if it runs. A pid file whose process is gone, or
    whose pid now belongs to another program, is stale: it is removed, nothing is signalled."""
    try:
        pid = int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    if process_alive(pid) and "kafka.Kafka" in command_line(pid) and str(paths.properties) in command_line(pid):
        return pid
    paths.pid.unlink(missing_ok=True)
    return None


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


def stop(pid: int, timeout: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM (Kafka shuts down cleanly), then SIGKILL past the timeout. True if it was killed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return False
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process_alive(pid):
        time.sleep(0.1)
    return True


def storage_tool(java: str, libs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [java, "-Xmx256m", "-cp", f"{libs}/*", "kafka.tools.StorageTool", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def format_storage(java: str, libs: Path, paths: Paths, state: State) -> None:
    """Format log.dirs once, with the SCRAM user for both mechanisms."""
    command = ["format", "-t", state.cluster_id, "-c", str(paths.properties)]
    for mechanism in SCRAM_MECHANISMS:
        command += ["--add-scram", f"{mechanism}=[name={state.user},password={state.password}]"]
    out = storage_tool(java, libs, *command)
    if out.returncode != 0:
        fail(f"formatting {paths.data} failed:\n{(out.stdout + out.stderr).strip()}")


def new_cluster_id(java: str, libs: Path) -> str:
    out = storage_tool(java, libs, "random-uuid")
    cluster_id = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if out.returncode != 0 or not re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id):
        fail(f"kafka-storage random-uuid failed:\n{(out.stdout + out.stderr).strip()}")
    return cluster_id


# --- commands ----------------------------------------------------------------------------


def result(paths: Paths, state: State, pid: int | None) -> dict[str, object]:
    return {
        "running": pid is not None,
        "bootstrap": state.bootstrap,
        "sasl_bootstrap": state.sasl_bootstrap,
        "user": state.user,
        "password": state.password,
        "dir": str(paths.root),
        "pid": pid,
        "version": state.version,
        "controller": f"127.0.0.1:{state.controller_port}",
        "log": str(paths.log),
    }


def env_lines(state: State, export: bool = False) -> str:
    prefix = "export " if export else ""
    return "\n".join(
        f"{prefix}{key}={value}"
        for key, value in (
            ("KAFKA_BOOTSTRAP_SERVERS", state.bootstrap),
            ("KAFKA_SASL_BOOTSTRAP_SERVERS", state.sasl_bootstrap),
            ("KAFKA_SASL_USER", state.user),
            ("KAFKA_SASL_PASSWORD", state.password),
        )
    )


def report(paths: Paths, state: State, pid: int | None, as_json: bool) -> None:
    print(json.dumps(result(paths, state, pid)) if as_json else env_lines(state), flush=True)


def choose_ports(args: argparse.Namespace) -> tuple[int, int, int]:
    if args.free_ports:
        if any(p is not None for p in (args.port, args.sasl_port, args.controller_port)):
            fail("--free-ports picks every port: give it alone, or give the ports", 2)
        port, sasl_port, controller_port = free_ports(3)
        return port, sasl_port, controller_port
    ports = (
        args.port or DEFAULT_PORT,
        args.sasl_port or DEFAULT_SASL_PORT,
        args.controller_port or DEFAULT_CONTROLLER_PORT,
    )
    if len(set(ports)) != 3:
        fail(f"--port, --sasl-port and --controller-port must differ (got {ports})", 2)
    for port, option in zip(ports, ("--port", "--sasl-port", "--controller-port"), strict=True):
        check_port_free(port, option)
    return ports


def credentials(args: argparse.Namespace, previous: State | None, paths: Paths) -> tuple[str, str]:
    """The SCRAM user. Once the storage is formatted its user is fixed: asking for another warns."""
    if previous is not None and paths.formatted:
        if (args.user and args.user != previous.user) or (args.password and args.password != previous.password):
            say(
                f"{paths.root} was formatted with user {previous.user!r} and its password; they stay. "
                "Run `down`, delete the directory, then `up` to change them."
            )
        return previous.user, previous.password
    user, password = args.user or DEFAULT_USER, args.password or DEFAULT_PASSWORD
    for name, value in (("--user", user), ("--password", password)):
        if not SAFE_CREDENTIAL.match(value):
            fail(f"{name} may hold only letters, digits and . _ ~ @ + - (1 to 64 of them)", 2)
    return user, password


def cmd_up(args: argparse.Namespace) -> int:
    """Start the broker unless it runs; print its addresses once it serves."""
    paths = Paths(args.dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    # One `up` or `down` at a time per directory: two `up`s racing would both start a JVM
    # and the loser, cleaning up, would take the winner's pid file with it.
    with locked(paths.lock):
        return start(args, paths)


def start(args: argparse.Namespace, paths: Paths) -> int:
    previous = read_state(paths)
    pid = running_pid(paths)
    if pid is not None and previous is not None:
        say(f"already running (pid {pid}) in {paths.root}")
        report(paths, previous, pid, args.json)
        return 0

    java = find_java()
    version = kafka_version()
    libs = fetch_jars(version)
    if not paths.formatted:
        previous = None  # a directory never formatted (or emptied by hand) starts over
    user, password = credentials(args, previous, paths)
    port, sasl_port, controller_port = choose_ports(args)
    cluster_id = previous.cluster_id if previous else new_cluster_id(java, libs)
    if previous and previous.version != version:
        say(f"{paths.root} was formatted by Kafka {previous.version}; starting it with Kafka {version}")
    state = State(port, sasl_port, controller_port, user, password, version, cluster_id)

    paths.properties.write_text(server_properties(paths, state))
    paths.log4j.write_text(LOG4J2)
    if paths.formatted:
        say(f"storage in {paths.data} already formatted")
    else:
        say(f"formatting {paths.data} (cluster {cluster_id}, SCRAM user {user!r})")
        format_storage(java, libs, paths, state)
    write_state(paths, state)

    if paths.log.exists():  # keep the previous run's log for a post-mortem, one generation
        paths.log.replace(paths.log.with_name("server.log.1"))
    command = [
        java, f"-Xmx{args.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={paths.log4j}",
        "-cp", f"{libs}/*", "kafka.Kafka", str(paths.properties),
    ]  # fmt: skip
    say(f"starting Kafka {version} (log: {paths.log})")
    with paths.log.open("ab") as log:
        # A session of its own: the broker outlives this script and a Ctrl-C in the shell that ran it.
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=paths.root,
            start_new_session=True,
        )  # fmt: skip
    paths.pid.write_text(f"{process.pid}\n")

    try:
        wait_until_serving(process, paths, state, args.timeout)
    except BaseException:
        # Leave nothing half-started behind: the next `up` starts clean.
        stop(process.pid, timeout=10)
        paths.pid.unlink(missing_ok=True)
        raise
    if args.stop_with_pid:
        start_watchdog(paths, args.stop_with_pid)
    report(paths, state, process.pid, args.json)
    return 0


def wait_until_serving(process: subprocess.Popen[bytes], paths: Paths, state: State, timeout: float) -> None:
    started = time.monotonic()
    next_note = started + 5
    while True:
        elapsed = time.monotonic() - started
        if process.poll() is not None:
            fail(
                f"the broker exited with code {process.returncode} after {elapsed:.1f} s; "
                f"the last lines of {paths.log}:\n{tail(paths.log)}"
            )
        if STARTED in paths.log.read_text(errors="replace") and accepts(state.port) and accepts(state.sasl_port):
            say(f"serving after {elapsed:.1f} s (pid {process.pid})")
            return
        if elapsed > timeout:
            fail(
                f"the broker did not log {STARTED!r} within {timeout:g} s; stopped it. "
                f"The last lines of {paths.log}:\n{tail(paths.log)}"
            )
        if time.monotonic() >= next_note:
            say(f"waiting for the broker to serve ({elapsed:.0f} s of at most {timeout:g} s)")
            next_note += 5
        time.sleep(0.25)


def start_watchdog(paths: Paths, watched: int) -> None:
    """A small detached process that runs `down` when `watched` ends: a test run killed with
    SIGKILL (no fixture teardown) does not leave a 512 MB JVM behind."""
    subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "_watch", "--dir", str(paths.root), "--pid", str(watched)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def cmd_watch(args: argparse.Namespace) -> int:
    paths = Paths(args.dir)
    while True:
        pid = running_pid(paths)
        if pid is None:
            return 0
        if not process_alive(args.pid):
            stop(pid)
            paths.pid.unlink(missing_ok=True)
            return 0
        time.sleep(1)


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the broker if it runs; already stopped is fine."""
    paths = Paths(args.dir)
    if not paths.root.is_dir():
        say(f"not running ({paths.root} does not exist)")
        return 0
    with locked(paths.lock):
        pid = running_pid(paths)
        if pid is None:
            say(f"not running ({paths.root})")
            return 0
        say(f"stopping pid {pid}")
        started = time.monotonic()
        killed = stop(pid, args.timeout)
        paths.pid.unlink(missing_ok=True)
    how = f"killed after {args.timeout:.0f} s without stopping" if killed else "stopped"
    say(f"{how} in {time.monotonic() - started:.1f} s")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    paths = Paths(args.dir)
    pid = running_pid(paths)
    state = read_state(paths)
    if args.json:
        payload = result(paths, state, pid) if state else {"running": False, "dir": str(paths.root), "pid": None}
        print(json.dumps(payload))
    elif pid is None or state is None:
        print(f"not running ({paths.root}); start it with `make kafka-up`")
    else:
        print(
            f"running (pid {pid}), Kafka {state.version}, data in {paths.root}\n"
            f"  PLAINTEXT      {state.bootstrap}\n"
            f"  SASL_PLAINTEXT {state.sasl_bootstrap}  (SCRAM-SHA-256/512, user {state.user!r})\n"
            f"  CONTROLLER     127.0.0.1:{state.controller_port}\n"
            f"  log            {paths.log}"
        )
    return 0 if pid is not None else 3


def cmd_env(args: argparse.Namespace) -> int:
    paths = Paths(args.dir)
    state = read_state(paths)
    if running_pid(paths) is None or state is None:
        fail(f"no broker runs in {paths.root}; start one with `make kafka-up`")
    print(env_lines(state, export=args.export))
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="broker.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="{up,down,status,env}")

    def directory(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--dir", type=lambda p: Path(p).expanduser().resolve(), default=DEFAULT_DIR,
            help=f"data directory: storage, server.properties, server.log, kafka.pid (default {DEFAULT_DIR})",
        )  # fmt: skip

    up = commands.add_parser("up", help="start the broker (fetching the jars on first use) and wait until it serves")
    directory(up)
    up.add_argument("--port", type=int, help=f"PLAINTEXT client listener (default {DEFAULT_PORT})")
    up.add_argument("--sasl-port", type=int, help=f"SASL_PLAINTEXT SCRAM listener (default {DEFAULT_SASL_PORT})")
    up.add_argument("--controller-port", type=int, help=f"KRaft controller (default {DEFAULT_CONTROLLER_PORT})")
    up.add_argument("--free-ports", action="store_true", help="pick three free loopback ports instead")
    up.add_argument("--user", help=f"SCRAM user created at format time (default {DEFAULT_USER})")
    up.add_argument("--password", help=f"its password (default {DEFAULT_PASSWORD})")
    up.add_argument("--heap", default="512m", help="JVM -Xmx (default 512m)")
    up.add_argument("--timeout", type=float, default=90, help="seconds to wait for the broker (default 90)")
    up.add_argument("--json", action="store_true", help="print one JSON object instead of env lines")
    up.add_argument("--stop-with-pid", type=int, metavar="PID", help="stop the broker when process PID ends")

    down = commands.add_parser("down", help="stop the broker (SIGTERM, then SIGKILL)")
    directory(down)
    down.add_argument("--timeout", type=float, default=STOP_TIMEOUT_S, help="seconds before SIGKILL")

    status = commands.add_parser("status", help="running or not, and where (exit 3 when not running)")
    directory(status)
    status.add_argument("--json", action="store_true")

    env = commands.add_parser("env", help="KAFKA_* lines for a running broker")
    directory(env)
    env.add_argument("--export", action="store_true", help="prefix each line with `export `")

    watch = commands.add_parser("_watch")  # internal: see start_watchdog
    directory(watch)
    watch.add_argument("--pid", type=int, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    handler = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "env": cmd_env, "_watch": cmd_watch}
    try:
        return handler[args.command](args)
    except BrokerError as exc:
        print(f"kafka: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
