"""Exactly-once JSON-lines output files (dead letters, reservation decisions, work).

A single-partition `FixedPartitionedSink` whose resume state is the file length after
the last completed epoch: on restart it truncates what a crashed epoch wrote, so each
line appears once even though Bytewax replays the epoch.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from ledger.contract import fulfilment_to_record
from ledger.dead_letter import DeadLetter
from ledger.errors import SourceError
from ledger.execution import WORK_TIMES, Work, work_fields
from ledger.fulfilment import Fulfilment
from ledger.outputs import ReservationDecision, decision_fields

__all__ = [
    "JsonLinesSink",
    "dead_letter_record",
    "decision_record",
    "work_record",
]

_PLAN_TIMES = ("ready_at", "hold_until", "departs_at", "arrives_at", "appointment_at")


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dead_letter_record(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as JSON: the raw input as text when it is UTF-8, else base64."""
    try:
        raw: dict[str, str] = {"raw": letter.raw.decode()}
    except UnicodeDecodeError:
        raw = {"raw_base64": base64.b64encode(letter.raw).decode()}
    return {
        "origin": letter.origin,
        "reason": letter.reason,
        "detail": letter.detail,
        "event_id": letter.event_id,
        **raw,
    }


def decision_record(decision: ReservationDecision) -> dict[str, Any]:
    """A reservation decision as JSON, times in ISO-8601 UTC."""
    fields = decision_fields(decision)
    return {**fields, "expires_at": _iso(decision.expires_at), "decided_at": _iso(decision.decided_at)}


def _plan_record(plan: Fulfilment) -> dict[str, Any]:
    record = fulfilment_to_record(plan)
    for name in _PLAN_TIMES:
        value = record[name]
        record[name] = _iso(value if isinstance(value, int) else None)
    return record


def work_record(item: Work) -> dict[str, Any]:
    """A store task, shuttle load or dropship order as JSON (its topic's record), times in ISO-8601 UTC."""
    record: dict[str, Any] = work_fields(item)
    for name in WORK_TIMES:
        if name in record:
            record[name] = _iso(record[name])
    record["plan"] = _plan_record(item.plan)
    return record


class _Partition(StatefulSinkPartition[Any, int]):
    def __init__(self, path: Path, render: Callable[[Any], dict[str, Any]], resume: int | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._file = path.open("r+b" if path.exists() else "w+b")
        except OSError as exc:
            msg = f"cannot write {path}: {exc.strerror}"
            raise SourceError(msg) from exc
        # Drop what an epoch that never completed wrote; Bytewax replays it. With no resume
        # state the flow starts from nothing (a directory is never reused without its
        # recovery state), so whatever the file holds is from a crash before the first epoch.
        self._file.truncate(resume or 0)
        self._file.seek(0, 2)
        self._render = render

    def write_batch(self, values: list[Any]) -> None:
        lines = b"".join(json.dumps(self._render(v), separators=(",", ":")).encode() + b"\n" for v in values)
        self._file.write(lines)
        self._file.flush()

    def snapshot(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


class JsonLinesSink(FixedPartitionedSink[Any, int]):
    """Write each item as one JSON line; items must arrive as `(key, value)` with any key."""

    def __init__(self, path: Path, render: Callable[[Any], dict[str, Any]]) -> None:
        self._path = path
        self._render = render

    def list_parts(self) -> list[str]:
        return [self._path.name]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Partition:
        return _Partition(self._path, self._render, resume_state)
