"""In a live run, a hold ends at its expiry by a timer, even when no other event reaches its position."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from adapters.clock import WallClock
from adapters.codec import RawInput
from flows.atp import Wiring, build_flow
from ledger.contract import require_event
from ledger.dead_letter import DeadLetter
from ledger.outputs import DecisionStatus, ReservationDecision, SnapshotBatch
from ledger.policy import LedgerPolicy

pytestmark = pytest.mark.integration


def test_a_live_hold_expires_by_timer_and_its_units_return_to_atp():
    now = time.time_ns() // 1_000_000
    receipt = require_event(
        {"event_id": "r1", "type": "RECEIVED", "occurred_at": now, "site_id": "ST-1", "sku": "A", "qty": 1}
    )
    request = require_event(
        {
            "event_id": "q1",
            "type": "RESERVATION_REQUESTED",
            "occurred_at": now,
            "site_id": "ST-1",
            "sku": "A",
            "qty": 1,
            "ref": "R1",
            "expires_at": now + 1_000,
        }
    )
    elsewhere = require_event(
        {"event_id": "x1", "type": "RECEIVED", "occurred_at": now, "site_id": "ST-2", "sku": "B", "qty": 1}
    )
    # The input pauses past the expiry, and nothing more reaches ST-1|A: only a timer can end the hold.
    source = TestingSource(
        [
            RawInput("t", receipt),
            RawInput("t", request),
            TestingSource.PAUSE(timedelta(seconds=2.5)),
            RawInput("t", elsewhere),
        ]
    )
    snapshots: list[tuple[str, SnapshotBatch]] = []
    decisions: list[tuple[str, ReservationDecision]] = []
    dead: list[tuple[str, DeadLetter]] = []
    wiring = Wiring(
        source=source,
        source_kind="test",
        snapshots=TestingSink(snapshots),
        decisions=TestingSink(decisions),
        dead_letters=TestingSink(dead),
        clock=WallClock(),
        policy=LedgerPolicy(),
        snapshot_interval=timedelta(milliseconds=200),
    )
    run_main(build_flow(wiring))

    statuses = [(d.reservation_id, d.status) for _, d in decisions]
    assert statuses == [("R1", DecisionStatus.ACCEPTED), ("R1", DecisionStatus.EXPIRED)]
    expired = decisions[-1][1]
    assert expired.decided_at >= now + 1_000
    changes = [c for _, batch in snapshots for c in batch.changes if c.site_id == "ST-1"]
    assert [(c.reserved, c.atp) for c in changes][-1] == (0, 1)
    assert sum(batch.tally.applied for _, batch in snapshots) == 3
    assert dead == []
