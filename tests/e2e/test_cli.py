"""The `omni-ledger` command as a user runs it: simulator, tables, JSON, SQL, errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from adapters.snapshot_store import SnapshotReader
from tests.conftest import EXAMPLES, REPO, start_cli

pytestmark = pytest.mark.e2e


def test_the_simulator_run_publishes_snapshots_that_advance(snapshot_dir):
    """What `make run` does, interrupted like a user's Ctrl-C after a few snapshots."""
    proc = start_cli(
        "run",
        "--source",
        "sim",
        "--rate",
        "3000",
        "--snapshot-dir",
        str(snapshot_dir),
        env={"OMNI_LEDGER_SNAPSHOTS_INTERVAL": "300ms"},
        text=True,
    )
    seen: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while len(set(seen)) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            if (snapshot_dir / "catalog.sqlite").exists():
                try:
                    with SnapshotReader.open(snapshot_dir) as reader:
                        info = reader.latest()
                except Exception:  # the writer may be creating the store
                    continue
                if info:
                    seen.append(int(info["snapshot_id"]))  # type: ignore[call-overload]
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert len(set(seen)) >= 3, stderr
    assert seen == sorted(seen)
    assert "events applied" in stderr  # the progress line
    assert proc.returncode == 0, stderr  # Ctrl-C ends the input; the flow drains and exits cleanly
    assert "panicked" not in stderr
    with SnapshotReader.open(snapshot_dir) as reader:
        positions = reader.positions()
        assert positions
        assert all(p["atp"] >= 0 for p in positions)
        assert reader.latest()["events_applied"] > 0  # type: ignore[index]


def test_atp_prints_a_table_and_json_for_a_sku(cli, snapshot_dir):
    assert (
        cli(
            "run", "--source", f"file:{EXAMPLES / 'story.jsonl'}", "--snapshot-dir", str(snapshot_dir), "--quiet"
        ).returncode
        == 0
    )
    table = cli("atp", "--sku", "PHONE-C", "--snapshot-dir", str(snapshot_dir))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("PHONE-C: snapshot ")
    assert lines[1].split()[:7] == ["site_id", "on_hand", "reserved", "staged", "inbound", "safety_stock", "atp"]
    assert any(line.split()[:2] == ["SUP-ACME", "49"] for line in lines)
    as_json = json.loads(cli("atp", "--sku", "PHONE-C", "--json", "--snapshot-dir", str(snapshot_dir)).stdout)
    assert {p["site_id"]: p["atp"] for p in as_json["positions"]} == {"ST-PARIS-11": 1, "SUP-ACME": 49}


def test_atp_as_of_an_earlier_snapshot_shows_the_view_then(cli, tmp_path):
    first = tmp_path / "first.jsonl"
    second = tmp_path / "second.jsonl"
    first.write_text(
        '{"event_id":"a","type":"RECEIVED","occurred_at":1790000000000,"site_id":"S1","sku":"K","qty":5}\n'
    )
    second.write_text('{"event_id":"b","type":"SOLD","occurred_at":1790000060000,"site_id":"S1","sku":"K","qty":2}\n')
    out = tmp_path / "snap"
    assert cli("run", "--source", f"file:{first}", "--snapshot-dir", str(out), "--quiet").returncode == 0
    assert cli("run", "--source", f"file:{second}", "--snapshot-dir", str(out), "--quiet").returncode == 0
    snaps = json.loads(cli("snapshots", "--json", "--snapshot-dir", str(out)).stdout)
    assert len(snaps) == 2
    old = json.loads(
        cli("atp", "--sku", "K", "--as-of", str(snaps[0]["snapshot_id"]), "--json", "--snapshot-dir", str(out)).stdout
    )
    new = json.loads(cli("atp", "--sku", "K", "--json", "--snapshot-dir", str(out)).stdout)
    assert [p["on_hand"] for p in old["positions"]] == [5]
    assert [p["on_hand"] for p in new["positions"]] == [3]


def test_sql_runs_a_query_on_the_snapshot_tables(cli, snapshot_dir):
    cli("run", "--source", f"file:{EXAMPLES / 'story.jsonl'}", "--snapshot-dir", str(snapshot_dir), "--quiet")
    result = cli(
        "sql",
        "-c",
        "SELECT sku, sum(on_hand) AS units FROM positions GROUP BY sku ORDER BY sku",
        "--json",
        "--snapshot-dir",
        str(snapshot_dir),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"sku": "PHONE-A", "units": 13},
        {"sku": "PHONE-B", "units": 1},
        {"sku": "PHONE-C", "units": 50},
    ]


def test_interactive_sql_prompt_answers_statements_until_quit(snapshot_dir, cli):
    cli("run", "--source", f"file:{EXAMPLES / 'story.jsonl'}", "--snapshot-dir", str(snapshot_dir), "--quiet")
    proc = subprocess.run(
        [sys.executable, "-m", "omni_ledger", "sql", "--snapshot-dir", str(snapshot_dir)],
        input="SELECT count(*) AS n\nFROM positions;\n\\q\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:3] == ["n", "-", "6"]


def test_reading_a_missing_store_says_how_to_create_it(cli, tmp_path):
    result = cli("atp", "--sku", "X", "--snapshot-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "no snapshot store" in result.stderr
    assert "omni-ledger run" in result.stderr


def test_a_bad_setting_names_the_key_and_exits_2(cli, snapshot_dir):
    result = cli(
        "run",
        "--source",
        "sim",
        "--snapshot-dir",
        str(snapshot_dir),
        env={"OMNI_LEDGER_LEDGER_LATENESS_WINDOW": "soon"},
    )
    assert result.returncode == 2
    assert "ledger.lateness_window (environment)" in result.stderr


def test_reusing_a_store_without_its_recovery_state_is_refused(cli, snapshot_dir):
    story = f"file:{EXAMPLES / 'story.jsonl'}"
    assert cli("run", "--source", story, "--snapshot-dir", str(snapshot_dir), "--quiet").returncode == 0
    result = cli("run", "--source", story, "--snapshot-dir", str(snapshot_dir), "--no-recovery", "--quiet")
    assert result.returncode == 2
    assert "--reset" in result.stderr
    assert cli("run", "--source", story, "--snapshot-dir", str(snapshot_dir), "--reset", "--quiet").returncode == 0


def test_follow_picks_up_appended_lines_until_interrupted(tmp_path):
    source = tmp_path / "live.jsonl"
    source.write_text(
        '{"event_id":"a","type":"RECEIVED","occurred_at":1790000000000,"site_id":"S1","sku":"K","qty":5}\n'
    )
    out = tmp_path / "snap"
    proc = start_cli(
        "run",
        "--source",
        f"file:{source}",
        "--follow",
        "--quiet",
        "--snapshot-dir",
        str(out),
        env={"OMNI_LEDGER_SNAPSHOTS_INTERVAL": "200ms"},
        text=True,
    )
    try:
        assert _wait_for_on_hand(out, 5), "the first line was not published"
        with source.open("a") as live:
            live.write('{"event_id":"b","type":"SOLD","occurred_at":1790000060000,"site_id":"S1",')
            live.flush()
            time.sleep(0.5)  # half a line: the source must wait for the rest
            live.write('"sku":"K","qty":2}\n')
        assert _wait_for_on_hand(out, 3), "the appended line was not published"
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert not (out / "dead_letters.jsonl").exists()


def _wait_for_on_hand(out, units: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            with SnapshotReader.open(out) as reader:
                rows = reader.positions(sku="K")
        except Exception:  # the writer may be creating the store
            continue
        if rows and rows[0]["on_hand"] == units:
            return True
    return False
