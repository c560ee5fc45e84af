"""Checks shared by the integration tests: feed the reference model, compare a snapshot store to it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.codec import decode_json
from adapters.snapshots import SnapshotReader
from ledger.contract import validate
from ledger.dead_letter import DeadLetter
from ledger.effects import split
from ledger.events import InventoryEvent
from ledger.policy import LedgerPolicy
from tests.reference import ReferenceLedger

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def reference_for(path: Path, policy: LedgerPolicy | None = None) -> tuple[ReferenceLedger, int]:
    """The model fed a file's valid events in file order on the replay clock; and the clock's end."""
    model = ReferenceLedger(policy or LedgerPolicy())
    now = -(2**62)
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        record = decode_json(line, f"{path.name}:{number}")
        event = record if isinstance(record, DeadLetter) else validate(record, origin="", raw=line)
        if isinstance(event, DeadLetter):
            continue
        now = max(now, event.occurred_at)
        for effect in split(event):
            model.feed(now, effect)
    return model, now


def reference_live(events: Iterable[InventoryEvent], now: int) -> ReferenceLedger:
    """The model fed events in the given order, all at one wall-clock reading (a live run)."""
    model = ReferenceLedger(LedgerPolicy())
    for event in events:
        for effect in split(event):
            model.feed(now, effect)
    return model


def assert_store_matches(snapshot_dir: Path, model: ReferenceLedger, now: int) -> None:
    """Every position and inbound line of the latest snapshot equals the model's at `now`."""
    with SnapshotReader.open(snapshot_dir) as reader:
        positions = {(p["site_id"], p["sku"]): p for p in reader.positions()}
        inbound: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
        for line in reader.inbound():
            eta = (line["eta"] - _EPOCH) // timedelta(milliseconds=1)  # type: ignore[operator]
            inbound.setdefault((line["site_id"], line["sku"]), {})[line["ref"]] = (line["qty"], eta)  # type: ignore[index]
    expected_keys = {key for key, history in model.history.items() if history}
    assert set(positions) == expected_keys
    for key in expected_keys:
        want = model.view(key, now)
        got = positions[key]
        assert (got["on_hand"], got["reserved"], got["staged"], got["atp"], got["negative"]) == (
            want.on_hand,
            want.reserved,
            want.staged,
            want.atp,
            want.on_hand < 0,
        ), key
        assert got["inbound"] == sum(q for q, _ in want.inbound.values()), key
        assert inbound.get(key, {}) == want.inbound, key


def events_applied(snapshot_dir: Path) -> int:
    """`events_applied` of the latest snapshot; 0 while the writer has not created the store."""
    try:
        with SnapshotReader.open(snapshot_dir) as reader:
            info = reader.latest()
    except Exception:  # the store may not exist yet, or be half created
        return 0
    return int(info["events_applied"]) if info else 0  # type: ignore[call-overload]
