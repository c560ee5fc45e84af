"""`omni-ledger run --source file:...` end to end: positions equal the reference model's."""

from __future__ import annotations

import random

import pytest

from adapters.codec import decode_json, write_avro_file
from adapters.snapshot_store import SnapshotReader
from ledger.contract import event_to_json_bytes, validate
from ledger.dead_letter import DeadLetter
from ledger.events import InventoryEvent
from simulator import RetailerSimulator, SimConfig
from tests.conftest import EXAMPLES, read_jsonl
from tests.store_checks import assert_store_matches, reference_for

pytestmark = pytest.mark.integration

STORY = EXAMPLES / "story.jsonl"


def test_story_replay_yields_the_reference_models_positions(cli, snapshot_dir):
    result = cli("run", "--source", f"file:{STORY}", "--snapshot-dir", str(snapshot_dir), "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    assert_store_matches(snapshot_dir, *reference_for(STORY))


def test_exactly_one_of_two_requests_racing_for_the_last_unit_is_accepted(cli, snapshot_dir):
    assert cli("run", "--source", f"file:{STORY}", "--snapshot-dir", str(snapshot_dir), "--quiet").returncode == 0
    decisions = read_jsonl(snapshot_dir / "decisions.jsonl")
    racing = {
        d["reservation_id"]: d
        for d in decisions
        if d["reservation_id"] in {"R-DUPONT-A", "R-LEROY-A"} and d["status"] in {"ACCEPTED", "REJECTED"}
    }
    assert sorted(d["status"] for d in racing.values()) == ["ACCEPTED", "REJECTED"]
    assert racing["R-LEROY-A"]["reason"] == "insufficient_atp"
    # The accepted hold was short; it expired on the replay clock, and the table says so.
    with SnapshotReader.open(snapshot_dir) as reader:
        status = {r["reservation_id"]: r["status"] for r in reader.reservations(sku="PHONE-A")}
    assert status == {"R-MARTIN-A": "FULFILLED", "R-DUPONT-A": "EXPIRED", "R-LEROY-A": "REJECTED"}


def test_bad_lines_become_dead_letters_and_the_rest_of_the_file_still_applies(cli, snapshot_dir):
    result = cli("run", "--source", f"file:{STORY}", "--snapshot-dir", str(snapshot_dir), "--quiet")
    assert result.returncode == 0, result.stderr
    letters = {d["origin"]: d for d in read_jsonl(snapshot_dir / "dead_letters.jsonl")}
    assert {origin: d["reason"] for origin, d in letters.items()} == {
        "story.jsonl:15": "malformed",
        "story.jsonl:16": "unknown_type",
        "story.jsonl:17": "qty_out_of_range",
        "story.jsonl:20": "too_late",
    }
    assert letters["story.jsonl:15"]["raw"] == "this is not json"
    assert "TELEPORTED" in letters["story.jsonl:16"]["detail"]
    with SnapshotReader.open(snapshot_dir) as reader:
        meaux = reader.positions(sku="PHONE-B", site_id="ST-MEAUX")[0]
        info = reader.latest()
    # The late count (12:30) rebased on hand under the sale after it (13:00); the load took one out.
    assert meaux["on_hand"] == 0
    assert info is not None
    assert info["events_applied"] == 17


def test_an_avro_file_yields_the_same_positions_as_json_lines(cli, tmp_path):
    events = [e for e in _story_events()]
    avro = tmp_path / "story.avro"
    write_avro_file(avro, events)
    jsonl = tmp_path / "story.jsonl"
    jsonl.write_bytes(b"".join(event_to_json_bytes(e) + b"\n" for e in events))
    for source, out in ((avro, tmp_path / "a"), (jsonl, tmp_path / "j")):
        assert cli("run", "--source", f"file:{source}", "--snapshot-dir", str(out), "--quiet").returncode == 0
    with SnapshotReader.open(tmp_path / "a") as a, SnapshotReader.open(tmp_path / "j") as j:
        strip = lambda rows: [{k: v for k, v in r.items() if k != "updated_at"} for r in rows]  # noqa: E731
        assert strip(a.positions()) == strip(j.positions())
        assert len(a.positions()) == 6


def test_a_shuffled_simulated_day_with_duplicates_matches_the_reference_model(cli, tmp_path):
    sim = RetailerSimulator(SimConfig(seed=11, stores=4, skus=12, dcs=1, suppliers=1, sellers=2))
    events: list[InventoryEvent] = []
    now = 1_790_000_000_000
    for _ in range(60):
        now += 60_000
        events.extend(sim.next_events(now, 50))
    rng = random.Random(5)
    # Local disorder (up to 10 minutes) and 5% redeliveries.
    order = sorted(events, key=lambda e: e.occurred_at + rng.randint(0, 600_000))
    for event in rng.sample(events, len(events) // 20):
        order.insert(rng.randrange(len(order)), event)
    path = tmp_path / "day.jsonl"
    path.write_bytes(b"".join(event_to_json_bytes(e) + b"\n" for e in order))
    out = tmp_path / "out"
    result = cli("run", "--source", f"file:{path}", "--snapshot-dir", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert_store_matches(out, *reference_for(path))


def _story_events() -> list[InventoryEvent]:
    out = []
    for line in STORY.read_bytes().splitlines():
        record = decode_json(line, "story")
        if not isinstance(record, DeadLetter):
            event = validate(record, origin="story", raw=line)
            if isinstance(event, InventoryEvent):
                out.append(event)
    return out
