"""Admission at the edge: the clock a replay restarts with, and events dated in the future."""

from __future__ import annotations

import json
import time

import pytest

from adapters.clock import ReplayClock
from adapters.codec import RawInput
from adapters.file_source import FilePosition, FileSource, FilesResume
from flows.admission import admit
from ledger.dead_letter import DeadLetter, Reason

pytestmark = pytest.mark.component

LINE = {"event_id": "e1", "type": "SOLD", "site_id": "ST-1", "sku": "A", "qty": 1}


def test_a_replay_refuses_an_event_dated_beyond_the_wall_clock():
    far = time.time_ns() // 1_000_000 + 3_600_000
    item = RawInput("f.jsonl:1", json.dumps({**LINE, "occurred_at": far}).encode())
    clock = ReplayClock()
    result = admit(item, clock, max_skew_ms=300_000)
    assert isinstance(result, DeadLetter)
    assert result.reason == Reason.FUTURE_EVENT
    assert clock.now() < far  # the clock did not jump


def test_a_replay_clock_restarts_where_the_input_stood(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({**LINE, "occurred_at": 1_790_000_000_000}) + "\n")
    clock = ReplayClock()
    saved = FilesResume(((str(path.resolve()), FilePosition(0, 1)),), 1_790_000_500_000)
    FileSource([path], clock=clock).build_part("input", "files", saved)
    assert clock.now() == 1_790_000_500_000
