"""Logging for omni-ledger: one JSON object a line for machines, a readable line for people.

Everything goes through the stdlib `logging` to stderr. `configure(fmt, level)` installs
one handler on the root logger, so library loggers (uvicorn, librdkafka through
`omni_ledger.kafka`) come out in the same format:

- `json`: one object a line, `{"ts", "level", "logger", "msg", ...}`, then the process
  context (`command`, `flow`), the worker thread (`worker`, when the record comes from a
  Bytewax worker) and whatever the call passed in `extra` (`step`, `snapshot_id`,
  `event_id`, `origin`, `reservation_id`, ...). A traceback is one string field, `exc`.
- `text`: `12:04:05.123 INFO  omni_ledger.cli: message  key=value ...` for a terminal.
- `auto` (the default): `text` when stderr is a terminal, else `json`.

Example:

    configure("json", "INFO")
    set_context(command="run", flow="omni_ledger_atp")
    logging.getLogger("omni_ledger.flow").info("snapshot published", extra={"step": "snapshots", "snapshot_id": 42})
    # {"ts": "2026-11-25T10:15:53.123Z", "level": "INFO", "logger": "omni_ledger.flow",
    #  "msg": "snapshot published", "command": "run", "flow": "omni_ledger_atp", "step": "snapshots", "snapshot_id": 42}
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

__all__ = [
    "FORMATS",
    "LEVELS",
    "JsonFormatter",
    "LogFormat",
    "RepeatFilter",
    "TextFormatter",
    "active_format",
    "configure",
    "current_worker",
    "resolve_format",
    "set_context",
    "worker",
]

LogFormat = Literal["auto", "json", "text"]
FORMATS: tuple[LogFormat, ...] = ("auto", "json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# The attributes every LogRecord has: anything else on a record came from `extra`.
# uvicorn adds `color_message`, the same message with terminal colours: not a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
_context: dict[str, Any] = {}
# By OS thread id, not threading.local: Bytewax's worker threads are Rust threads whose
# Python thread state (and so their threading.local) may be new at every call into Python.
_workers: dict[int, str] = {}
_workers_lock = threading.Lock()
_ordinals = itertools.count()
_active: list[Literal["json", "text"]] = ["text"]


def set_context(**fields: Any) -> None:
    """Fields every record of this process carries from now on (e.g. `command`, `flow`)."""
    _context.update({k: v for k, v in fields.items() if v is not None})


def worker() -> str:
    """This OS thread's worker label: "0", "1", ... in the order threads first ask (stable for the thread).

    Bytewax does not tell a step which worker runs it; the fold's threads are numbered
    here, so the label is bounded by the workers of this process. It is not Bytewax's
    own `worker_index`, only the same set of threads.
    """
    ident = threading.get_ident()
    label = _workers.get(ident)
    if label is None:
        with _workers_lock:
            label = _workers.setdefault(ident, str(next(_ordinals)))
    return label


def current_worker() -> str | None:
    """This thread's worker label if it has one (only Bytewax worker threads do)."""
    return _workers.get(threading.get_ident())


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out = dict(_context)
    label = current_worker()
    if label is not None:
        out["worker"] = label
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        body: dict[str, Any] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            body.setdefault(key, value)
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str, separators=(", ", ": "))


class TextFormatter(logging.Formatter):
    """`12:04:05.123 INFO  logger: message  key=value ...`, for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        clock = datetime.fromtimestamp(record.created, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
        fields = _fields(record)
        fields.pop("command", None)  # the person typed it
        extra = "  " + " ".join(f"{k}={v}" for k, v in fields.items()) if fields else ""
        line = f"{clock} {record.levelname:<5} {record.name}: {record.getMessage()}{extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class RepeatFilter(logging.Filter):
    """Lets the first of a run of like records through, then one per `window` seconds.

    Like: same logger, level and message once its numbers are blanked. The record that
    ends a quiet spell carries `suppressed`, how many were held back. librdkafka repeats
    "Connect ... failed" for every client every few hundred milliseconds while a broker
    is away: a broker restart must not flood the log (nor fill a pipe nobody reads).
    """

    _NUMBERS = re.compile(r"\d+")
    _MAX_KEYS = 1000

    def __init__(self, window: float = 10.0) -> None:
        super().__init__()
        self._window = window
        self._seen: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}|{record.levelno}|{self._NUMBERS.sub('#', record.getMessage())}"
        now = time.monotonic()
        with self._lock:
            since, held = self._seen.get(key, (-self._window, 0))
            if now - since < self._window:
                self._seen[key] = (since, held + 1)
                return False
            if len(self._seen) >= self._MAX_KEYS:
                self._seen.clear()
            self._seen[key] = (now, 0)
        if held:
            record.suppressed = held
        return True


# Loggers whose records repeat in bursts (librdkafka's, through adapters.kafka_io).
_REPEATING = ("omni_ledger.kafka",)


def resolve_format(fmt: LogFormat, stream: TextIO) -> Literal["json", "text"]:
    """`auto` becomes `text` on a terminal and `json` otherwise."""
    if fmt != "auto":
        return fmt
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def configure(fmt: LogFormat = "auto", level: str = "INFO", stream: TextIO | None = None) -> Literal["json", "text"]:
    """Send every log record to `stream` (stderr) in `fmt`; returns the format chosen."""
    out = stream if stream is not None else sys.stderr
    chosen = resolve_format(fmt, out)
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _REPEATING:
        logger = logging.getLogger(name)
        for old_filter in [f for f in logger.filters if isinstance(f, RepeatFilter)]:
            logger.removeFilter(old_filter)
        logger.addFilter(RepeatFilter())
    _active[0] = chosen
    return chosen


def active_format() -> Literal["json", "text"]:
    """The format `configure` chose last."""
    return _active[0]
