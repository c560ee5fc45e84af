#!/usr/bin/env python3
"""A throwaway PostgreSQL server on loopback, for tests and benchmarks of a shared DuckLake catalog.

    python3 infra/postgres/server.py up --dir DIR [--port N] [--durable] [--json]
    python3 infra/postgres/server.py createdb --dir DIR NAME [--json]
    python3 infra/postgres/server.py down --dir DIR

`up` makes a new cluster (initdb) in a fresh temporary directory, starts it on
127.0.0.1 (a free port unless --port) and creates the database `ledger`; it prints the
libpq conninfo (`host=127.0.0.1 port=N user=postgres dbname=ledger`; with --json, the
state record), to be used as the snapshot catalog `postgres:<conninfo>`. DIR keeps the
state (DIR/server.json); `down` stops the server and deletes its cluster. Trust
authentication on loopback only. Unless --durable, fsync and synchronous commit are off:
a crash may lose it, which is fine for a throwaway server and said so in benchmark output.

PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user
(made by Debian's package; else `nobody`) and every server program runs through
`runuser -u <user> --`. The cluster lives in its own temporary directory because DIR may
be under a root-only path (pytest's tmp_path is mode 0700).

The programs come from PATH or Debian's /usr/lib/postgresql/<version>/bin; run
infra/postgres/install.sh first to install them. Stdlib only.

Exit codes: 0 done, 1 the server failed (the message says why), 2 a program is missing
or an argument is wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STATE = "server.json"
DATABASE = "ledger"
SUPERUSER = "postgres"


class ServerError(Exception):
    """The server could not be started, used or stopped."""


def bin_dir() -> Path:
    """Where initdb and pg_ctl are: PATH first, else the newest Debian version directory."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    msg = "PostgreSQL's initdb/pg_ctl are not installed: run infra/postgres/install.sh (Debian's postgresql package)"
    raise ServerError(msg)


def _run_as() -> str | None:
    """The user the server runs as when we are root (PostgreSQL refuses root), else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    msg = "running as root and there is neither a `postgres` nor a `nobody` user to run PostgreSQL as"
    raise ServerError(msg)


def _command(user: str | None, program: Path, *args: str) -> list[str]:
    if user is None:
        return [str(program), *args]
    runuser = shutil.which("runuser")
    if runuser is None:
        msg = "running as root needs `runuser` (util-linux) to start PostgreSQL as another user"
        raise ServerError(msg)
    return [runuser, "-u", user, "--", str(program), *args]


def _check(cmd: list[str], what: str, timeout: float = 120) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        msg = f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}"
        raise ServerError(msg)
    return done.stdout


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _conninfo(port: int, dbname: str) -> str:
    return f"host=127.0.0.1 port={port} user={SUPERUSER} dbname={dbname}"


def up(directory: Path, *, port: int | None = None, durable: bool = False) -> dict[str, object]:
    """Start a new server; its state record (also written to DIR/server.json)."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / STATE).exists():
        msg = f"{directory / STATE} exists: a server is already up for this directory (run `down` first)"
        raise ServerError(msg)
    programs = bin_dir()
    user = _run_as()
    home = Path(tempfile.mkdtemp(prefix="omni-ledger-pg-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    data = home / "data"
    log = home / "server.log"
    port = port or _free_port()
    state: dict[str, object] = {
        "home": str(home),
        "data": str(data),
        "log": str(log),
        "port": port,
        "user": user,
        "bin": str(programs),
        "durable": durable,
        "conninfo": _conninfo(port, DATABASE),
    }
    try:
        _check(
            _command(
                user, programs / "initdb", "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync"
            ),
            "initdb",
        )
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-c port={port}",
            f"-c unix_socket_directories={home}",
            "-c max_connections=200",
        ]
        if not durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        _check(
            _command(
                user,
                programs / "pg_ctl",
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                " ".join(options),
                "start",
            ),
            "pg_ctl start",
        )
        (directory / STATE).write_text(json.dumps(state, indent=2))
        createdb(directory, DATABASE)
    except BaseException:
        with contextlib.suppress(ServerError, OSError, subprocess.SubprocessError):
            _stop(state)
        (directory / STATE).unlink(missing_ok=True)
        shutil.rmtree(home, ignore_errors=True)
        raise
    return state


def _load(directory: Path) -> dict[str, object]:
    try:
        return dict(json.loads((directory / STATE).read_text()))
    except (OSError, ValueError) as exc:
        msg = f"no server is up for {directory} ({directory / STATE}: {exc})"
        raise ServerError(msg) from exc


def createdb(directory: Path, name: str) -> str:
    """Create database `name` on the server of `directory`; its conninfo."""
    state = _load(directory)
    programs = Path(str(state["bin"]))
    user = state["user"]
    port = int(str(state["port"]))
    cmd = _command(
        None if user is None else str(user),
        programs / "createdb",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        SUPERUSER,
        name,
    )
    _check(cmd, f"createdb {name}")
    return _conninfo(port, name)


def _stop(state: dict[str, object]) -> None:
    user = state.get("user")
    cmd = _command(
        None if user is None else str(user),
        Path(str(state["bin"])) / "pg_ctl",
        "-D",
        str(state["data"]),
        "-m",
        "fast",
        "-w",
        "-t",
        "60",
        "stop",
    )
    subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def down(directory: Path) -> None:
    """Stop the server of `directory` and delete its cluster (nothing to do if none is up)."""
    if not (directory / STATE).exists():
        return
    state = _load(directory)
    _stop(state)
    shutil.rmtree(str(state["home"]), ignore_errors=True)
    (directory / STATE).unlink(missing_ok=True)


def wait_ready(conninfo: str, timeout: float = 30) -> None:
    """Wait until the server accepts TCP connections (pg_ctl -w already does; for callers of `up` elsewhere)."""
    fields = dict(part.split("=", 1) for part in conninfo.split())
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((fields["host"], int(fields["port"])), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start a throwaway server")
    start.add_argument("--dir", type=Path, required=True)
    start.add_argument("--port", type=int)
    start.add_argument("--durable", action="store_true", help="keep fsync and synchronous commit on")
    start.add_argument("--json", action="store_true")
    make = commands.add_parser("createdb", help="create another database")
    make.add_argument("--dir", type=Path, required=True)
    make.add_argument("name")
    make.add_argument("--json", action="store_true")
    stop = commands.add_parser("down", help="stop the server and delete it")
    stop.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            state = up(args.dir, port=args.port, durable=args.durable)
            print(json.dumps(state) if args.json else state["conninfo"])
        elif args.command == "createdb":
            conninfo = createdb(args.dir, args.name)
            print(json.dumps({"conninfo": conninfo}) if args.json else conninfo)
        else:
            down(args.dir)
    except ServerError as exc:
        print(f"infra/postgres/server.py: {exc}", file=sys.stderr)
        return 2 if "not installed" in str(exc) or "needs `runuser`" in str(exc) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
