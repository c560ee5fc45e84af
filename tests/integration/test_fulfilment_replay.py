"""Confirmed promises through `omni-ledger run --source file:...`: their work reaches the tables and files.

The story: a transfer from a far store to the pickup store (confirmed with a plan, picked,
loaded, arrived, collected), a dropship from a supplier, and a second transfer released
before its pick. It is read in two parts on one snapshot directory, to look at the store
mid-story, then read again from a copy: every event a duplicate, nothing changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.snapshot_store import SnapshotReader
from ledger.contract import fulfilment_to_record
from omni_ledger.bootstrap import reset_store
from tests.conftest import read_jsonl
from tests.integration.fulfilment_story import (
    CASE,
    FAR,
    FINAL_STATUSES,
    NEAR,
    PART_1,
    PART_2,
    PHONE,
    R1,
    RUN,
    SUP,
    json_lines,
)

pytestmark = pytest.mark.integration

WORK_FILES = (
    ("store_tasks.jsonl", "task_id"),
    ("transport_loads.jsonl", "parcel_id"),
    ("dropship_orders.jsonl", "order_ref"),
)
OUTPUTS = (*(name for name, _ in WORK_FILES), "decisions.jsonl")


def run(cli, snapshot_dir: Path, *files: Path) -> None:
    sources = ",".join(str(f) for f in files)
    result = cli("run", "--source", f"file:{sources}", "--snapshot-dir", str(snapshot_dir), "--quiet")
    assert result.returncode == 0, result.stderr


def work_statuses(reader: SnapshotReader) -> dict[str, object]:
    out: dict[str, object] = {}
    out.update({str(r["task_id"]): r["status"] for r in reader.store_tasks()})
    out.update({str(r["parcel_id"]): r["status"] for r in reader.transport_loads()})
    out.update({str(r["order_ref"]): r["status"] for r in reader.dropship_orders()})
    return out


def highest_ranks(snapshot_dir: Path) -> dict[str, object]:
    """What a consumer of the JSON-lines files keeps: the highest rank per key."""
    best: dict[str, dict[str, object]] = {}
    for name, key in WORK_FILES:
        for record in read_jsonl(snapshot_dir / name):
            kept = best.get(str(record[key]))
            if kept is None or int(str(record["rank"])) > int(str(kept["rank"])):
                best[str(record[key])] = record
    return {key: record["status"] for key, record in best.items()}


def everything(reader: SnapshotReader) -> dict[str, object]:
    return {
        "positions": reader.positions(),
        "inbound": reader.inbound(),
        "reservations": reader.reservations(),
        "store_tasks": reader.store_tasks(),
        "transport_loads": reader.transport_loads(),
        "dropship_orders": reader.dropship_orders(),
        "latest": reader.latest(),
    }


def test_a_confirmed_transfer_a_dropship_and_a_release_reach_the_work_tables_and_files(cli, tmp_path):
    part_1, part_2 = tmp_path / "part-1.jsonl", tmp_path / "part-2.jsonl"
    part_1.write_bytes(json_lines(PART_1))
    part_2.write_bytes(json_lines(PART_2))
    out = tmp_path / "snapshots"

    # Mid-story: the parcel and the dropship are on their way, promised; the released transfer is cancelled.
    run(cli, out, part_1)
    with SnapshotReader.open(out) as reader:
        inbound = {(r["sku"], r["ref"]): r["promised"] for r in reader.inbound(site_id=NEAR)}
        assert inbound == {(PHONE, "R1"): True, (PHONE, "T9"): False, (CASE, "R3"): True}
        assert work_statuses(reader) == {
            "R1/PICK_FOR_SHUTTLE": "DONE",
            "R2/PICK_FOR_SHUTTLE": "CANCELLED",
            "P-R1": "LOADED",
            "P-R2": "CANCELLED",
            "R3": "SHIPPED",
        }

    run(cli, out, part_1, part_2)
    with SnapshotReader.open(out) as reader:
        tasks = {r["task_id"]: r for r in reader.store_tasks()}
        loads = {r["parcel_id"]: r for r in reader.transport_loads()}
        orders = {r["order_ref"]: r for r in reader.dropship_orders()}
        near_phone = reader.positions(sku=PHONE, site_id=NEAR)[0]
        near_case = reader.positions(sku=CASE, site_id=NEAR)[0]
        assert reader.inbound(site_id=NEAR) == []
        assert work_statuses(reader) == FINAL_STATUSES
        final = everything(reader)
    assert {k: (t["site_id"], t["kind"], t["status"]) for k, t in tasks.items()} == {
        "R1/PICK_FOR_SHUTTLE": (FAR, "PICK_FOR_SHUTTLE", "DONE"),
        "R1/PREPARE_PICKUP": (NEAR, "PREPARE_PICKUP", "DONE"),
        "R2/PICK_FOR_SHUTTLE": (FAR, "PICK_FOR_SHUTTLE", "CANCELLED"),
        "R3/PREPARE_PICKUP": (NEAR, "PREPARE_PICKUP", "OPEN"),
    }
    pick = tasks["R1/PICK_FOR_SHUTTLE"]
    assert (pick["zone"], pick["parcel_id"], pick["run_id"], pick["customer"]) == ("E-COM", "P-R1", RUN, "Martin")
    assert pick["plan"] == fulfilment_to_record(R1)
    assert {k: (x["origin"], x["destination"], x["run_id"], x["status"]) for k, x in loads.items()} == {
        "P-R1": (FAR, NEAR, RUN, "ARRIVED"),
        "P-R2": (FAR, NEAR, RUN, "CANCELLED"),
    }
    assert {k: (o["supplier_id"], o["deliver_to"], o["status"], o["order_id"]) for k, o in orders.items()} == {
        "R3": (SUP, NEAR, "RECEIVED", "O-R3"),
    }
    # The transfer left with Martin; the replenishment is for sale; the case is held for Dupont.
    assert (near_phone["on_hand"], near_phone["reserved"], near_phone["atp"]) == (1, 0, 1)
    assert (near_case["on_hand"], near_case["reserved"], near_case["atp"]) == (1, 1, 0)

    # The files say the same, to a consumer keeping the highest rank per key; each state once.
    assert highest_ranks(out) == FINAL_STATUSES
    for name, key in WORK_FILES:
        states = [(r[key], r["status"]) for r in read_jsonl(out / name)]
        assert len(states) == len(set(states)), name
    [shipped, received] = sorted(read_jsonl(out / "dropship_orders.jsonl"), key=lambda r: int(str(r["rank"])))[1:]
    assert (shipped["status"], received["status"]) == ("SHIPPED", "RECEIVED")
    assert received["plan"]["ready_at"] == "2026-11-21T08:00:00.000Z"
    assert received["updated_at"] == "2026-11-21T04:00:00.000Z"

    # Every event again, from a copy: all duplicates, nothing changes anywhere.
    before = {name: (out / name).read_bytes() for name in OUTPUTS}
    again = tmp_path / "again.jsonl"
    again.write_bytes(json_lines(PART_1 + PART_2))
    run(cli, out, part_1, part_2, again)
    with SnapshotReader.open(out) as reader:
        assert everything(reader) == final
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == before


def test_the_work_commands_print_tables_and_json(cli, tmp_path):
    story = tmp_path / "story.jsonl"
    story.write_bytes(json_lines(PART_1))
    out = tmp_path / "snapshots"
    run(cli, out, story)
    store = ("--snapshot-dir", str(out))

    tasks = cli("tasks", "--site", FAR, "--status", "cancelled", *store)
    assert tasks.returncode == 0, tasks.stderr
    header, rule, *rows = tasks.stdout.splitlines()
    assert header.split()[:6] == ["task_id", "site_id", "sku", "qty", "kind", "status"]
    assert set(rule) <= {"-", " "}
    assert [row.split()[0] for row in rows] == ["R2/PICK_FOR_SHUTTLE"]

    loads = json.loads(cli("loads", "--run", RUN, "--json", *store).stdout)
    assert [(x["parcel_id"], x["status"]) for x in loads] == [("P-R1", "LOADED"), ("P-R2", "CANCELLED")]
    assert loads[0]["departs_at"] == "2026-11-20T16:00:00Z"
    assert loads[0]["plan"]["parcel_id"] == "P-R1"

    orders = cli("orders", "--supplier", SUP, *store)
    assert orders.returncode == 0, orders.stderr
    assert "R3" in orders.stdout
    assert "SHIPPED" in orders.stdout
    assert json.loads(cli("orders", "--supplier", "nobody", "--json", *store).stdout) == []
    assert cli("tasks", "--status", "LOST", *store).returncode == 2

    # --reset starts the directory over: the work files too.
    assert all((out / name).exists() for name in OUTPUTS)
    reset_store(out)
    assert [name for name in OUTPUTS if (out / name).exists()] == []
