"""A DuckDB cursor on the snapshot store, run in a process of its own (the read model's refresh).

DuckDB's Python client takes the GIL after every task of a query, to check for signals
(`DuckDBPyConnection::CompletePendingQuery`): in a process whose request threads keep the
GIL busy, a refresh's statements wait up to a switch interval (5 ms) at each task. A refresh
of 100,000 changes at 20M positions, ~0.3 s alone, took 2.4 s in the server, and 1.8-2.3 s in
process beside two threads spinning in Python (docs/serving.md, the ninth pass). Here the
statements run in a child process with a GIL of its own; the caller waits on a pipe (the GIL
released while it waits) and unpickles the results.

Only what the read model's refresh calls: `execute(query, parameters) -> self`, then one of
`fetchall`, `fetchone`, `fetchnumpy`; `close`. A DuckDB error in the child is raised here as a
`duckdb.Error` with its message (`duckdb.ConversionException` kept as such); a child that
ended is a `duckdb.Error` too, so the read model's refresh treats both as a failed refresh and
opens a new cursor next time.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import duckdb

__all__ = ["RemoteCursor"]


class RemoteCursor:
    """A cursor of `SnapshotReader.open(directory)` in a child process, called like a DuckDB cursor."""

    def __init__(self, directory: Path) -> None:
        context = multiprocessing.get_context("spawn")  # not fork: the caller has threads and DuckDB open
        self._pipe, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, str(directory)), name="read-model-cursor", daemon=True
        )
        self._process.start()
        child.close()
        try:
            self._call("ready")
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int | None:
        """The child's process id (None once it could not start)."""
        return self._process.pid

    def execute(self, query: str, parameters: object = None) -> RemoteCursor:
        self._call("execute", query, parameters)
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._call("fetchall")
        return rows

    def fetchone(self) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._call("fetchone")
        return row

    def fetchnumpy(self) -> dict[str, Any]:
        columns: dict[str, Any] = self._call("fetchnumpy")
        return columns

    def close(self) -> None:
        """End the child (it closes its store) and wait for it."""
        with contextlib.suppress(OSError, ValueError):
            self._pipe.send(("close",))
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=10)
        self._pipe.close()

    def _call(self, *message: object) -> Any:
        try:
            self._pipe.send(message)
            ok, value = self._pipe.recv()
        except (EOFError, OSError, ValueError) as exc:
            msg = f"the read model's cursor process (pid {self._process.pid}) ended: {exc!r}"
            raise duckdb.Error(msg) from exc
        if not ok:
            kind, text = value
            raise (duckdb.ConversionException if kind == "ConversionException" else duckdb.Error)(text)
        return value


def _serve(pipe: Connection, directory: str) -> None:
    """The child: open the store, then answer calls until "close" or the pipe ends."""
    from adapters.snapshot_store.reader import SnapshotReader  # in the child only

    reader = SnapshotReader.open(Path(directory))
    cursor = reader.cursor()
    try:
        while True:
            try:
                message = pipe.recv()
            except (EOFError, OSError):
                return
            kind = message[0]
            if kind == "close":
                return
            try:
                if kind == "ready":
                    value: Any = None
                elif kind == "execute":
                    query, parameters = message[1], message[2]
                    cursor.execute(query, parameters) if parameters is not None else cursor.execute(query)
                    value = None
                elif kind in ("fetchall", "fetchone", "fetchnumpy"):
                    value = getattr(cursor, kind)()
                else:
                    value = None
            except duckdb.Error as exc:
                pipe.send((False, (type(exc).__name__, str(exc))))
                continue
            pipe.send((True, value))
    finally:
        with contextlib.suppress(duckdb.Error):
            cursor.close()
        reader.close()
