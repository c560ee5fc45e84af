"""Log lines: one JSON object each for machines, one readable line each for a terminal."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from ledger.errors import ConfigError
from omni_ledger import logs
from omni_ledger.config import load_settings

pytestmark = pytest.mark.component


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_root_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logs._context.clear()


def test_json_lines_carry_the_context_the_worker_and_the_call_fields():
    stream = io.StringIO()
    assert logs.configure("json", "INFO", stream) == "json"
    logs.set_context(command="run", flow="omni_ledger_atp")

    def worker_thread() -> None:
        logs.worker()
        logging.getLogger("omni_ledger.test").warning(
            "dead letter: %s", "bad JSON", extra={"step": "dead_letters", "event_id": "e-1", "origin": "f.jsonl:3"}
        )

    thread = threading.Thread(target=worker_thread)
    thread.start()
    thread.join()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "WARNING"
    assert record["logger"] == "omni_ledger.test"
    assert record["msg"] == "dead letter: bad JSON"
    assert record["ts"].endswith("Z")
    assert (record["command"], record["flow"], record["step"]) == ("run", "omni_ledger_atp", "dead_letters")
    assert (record["event_id"], record["origin"]) == ("e-1", "f.jsonl:3")
    assert record["worker"].isdigit()


def test_a_traceback_stays_inside_its_one_json_line():
    stream = io.StringIO()
    logs.configure("json", "INFO", stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("omni_ledger.test").exception("it failed")
    (line,) = stream.getvalue().splitlines()
    assert "ValueError: boom" in json.loads(line)["exc"]


def test_text_lines_are_readable_with_their_fields_at_the_end():
    stream = io.StringIO()
    assert logs.configure("text", "DEBUG", stream) == "text"
    logging.getLogger("omni_ledger.cli").info("reading %s", "the simulator", extra={"source": "sim"})
    (line,) = stream.getvalue().splitlines()
    assert " INFO  omni_ledger.cli: reading the simulator  " in line
    assert line.endswith("source=sim")


def test_auto_is_text_on_a_terminal_and_json_otherwise():
    assert logs.resolve_format("auto", Tty()) == "text"
    assert logs.resolve_format("auto", io.StringIO()) == "json"
    assert logs.resolve_format("json", Tty()) == "json"


def test_logging_and_metrics_settings_come_from_the_environment_and_are_checked():
    settings = load_settings(
        environ={
            "OMNI_LEDGER_LOGGING_FORMAT": "json",
            "OMNI_LEDGER_LOGGING_LEVEL": "debug",
            "OMNI_LEDGER_METRICS_PORT": "9610",
        }
    )
    assert (settings.logging.format, settings.logging.level, settings.metrics.port) == ("json", "debug", 9610)
    assert load_settings(environ={}).metrics.port == 0  # off unless asked
    with pytest.raises(ConfigError, match=r"logging\.format \(environment\)"):
        load_settings(environ={"OMNI_LEDGER_LOGGING_FORMAT": "xml"})
    with pytest.raises(ConfigError, match=r"metrics\.port"):
        load_settings(environ={"OMNI_LEDGER_METRICS_PORT": "70000"})


def test_a_burst_of_like_kafka_lines_becomes_one_line_with_how_many_were_held_back(monkeypatch):
    stream = io.StringIO()
    logs.configure("json", "INFO", stream)
    clock = [100.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    kafka = logging.getLogger("omni_ledger.kafka")
    for attempt in range(150):
        kafka.error("FAIL [rdkafka#consumer-4]: Connect to 127.0.0.1:37305 failed (after %dms)", attempt)
    kafka.warning("GETPID: Coordinator load in progress: retrying")  # another kind of line gets through
    clock[0] += 11
    kafka.error("FAIL [rdkafka#consumer-4]: Connect to 127.0.0.1:37305 failed (after 3ms)")
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["level"] for r in records] == ["ERROR", "WARNING", "ERROR"]
    assert "suppressed" not in records[0]
    assert records[2]["suppressed"] == 149
