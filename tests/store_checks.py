"""Checks shared by the integration tests: feed the reference model, compare a snapshot store to it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.codec import decode_json
from adapters.snapshot_store import SnapshotReader
from ledger.contract import validate
from ledger.dead_letter import DeadLetter
from ledger.effects import split
from ledger.events import InventoryEvent
from ledger.policy import LedgerPolicy
from tests.reference import ReferenceLedger

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def difference(what: str, expected: Mapping[object, object], got: Mapping[object, object], shown: int = 5) -> str:
    """A short, readable difference of two mappings: counts, then the first few keys of each kind.

    pytest's own diff of two 16,000-item dicts is printed whole under CI (twice, with
    the explanation), which made a CI log of 4.5 MB: this says the same in a few lines.
    """
    missing = sorted((k for k in expected if k not in got), key=str)
    extra = sorted((k for k in got if k not in expected), key=str)
    differing = sorted((k for k in expected if k in got and expected[k] != got[k]), key=str)
    if not (missing or extra or differing):
        return ""
    lines = [f"{what}: {len(expected):,} expected, {len(got):,} found"]
    if missing:
        lines.append(f"  {len(missing):,} missing, first: " + ", ".join(f"{k}={expected[k]}" for k in missing[:shown]))
    if extra:
        lines.append(f"  {len(extra):,} unexpected, first: " + ", ".join(f"{k}={got[k]}" for k in extra[:shown]))
    if differing:
        firsts = ", ".join(f"{k}: expected {expected[k]}, found {got[k]}" for k in differing[:shown])
        lines.append(f"  {len(differing):,} differ, first: {firsts}")
    return "\n".join(lines)


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
    expected: dict[object, object] = {}
    for key, history in model.history.items():
        if not history:
            continue
        want = model.view(key, now)
        numbers = (want.on_hand, want.reserved, want.staged, want.atp, want.on_hand < 0)
        expected[key] = (numbers, sum(q for q, _ in want.inbound.values()), want.inbound)
    found = {
        key: (
            (got["on_hand"], got["reserved"], got["staged"], got["atp"], got["negative"]),
            got["inbound"],
            inbound.get(key, {}),
        )
        for key, got in positions.items()
    }
    problem = difference("positions (on_hand, reserved, staged, atp, negative), inbound, lines", expected, found)
    assert not problem, problem


def finish_while_progressing(
    process: subprocess.Popen[Any],
    progress: Callable[[], object],
    what: str,
    *,
    stall_s: float = 240,
    cap_s: float = 1800,
    poll_s: float = 2.0,
) -> tuple[Any, Any]:
    """Wait for `process` to end as long as `progress()` keeps changing; its (stdout, stderr).

    A fixed timeout for a whole replay failed beside other work (a 300 s cap was tight
    at load ~40 on 2 cores), yet a run that stopped moving must still fail: it fails when
    `progress()` (events applied, say) has not changed for `stall_s` seconds, and in any
    case after `cap_s`. Output is read as it comes, so a full pipe never blocks the child.
    """
    started = last_change = time.monotonic()
    seen = progress()
    while True:
        try:
            return process.communicate(timeout=poll_s)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        current = progress()
        if current != seen:
            seen, last_change = current, now
        if now - last_change > stall_s or now - started > cap_s:
            process.kill()
            _out, err = process.communicate()
            stuck = f"no progress for {now - last_change:.0f} s" if now - last_change > stall_s else f"{cap_s:.0f} s"
            msg = f"{what} did not finish ({stuck}; progress {seen!r}); its stderr:\n{err!r:.4000}"
            raise AssertionError(msg)


def events_applied(snapshot_dir: Path, *, attempts: int = 8) -> int:
    """`events_applied` of the latest snapshot; 0 while the writer has not created the store.

    A read of a store being written can fail for a moment (seen beside a CPU hog: right after
    a kill -9, while the surviving writer maintained the store, one read failed and the kill
    test took it for "nothing published yet"), so a failed read is tried again before it
    counts as "no store".
    """
    for attempt in range(attempts):
        try:
            with SnapshotReader.open(snapshot_dir) as reader:
                info = reader.latest()
        except Exception:  # the store may not exist yet, be half created, or be mid-publish
            if not (snapshot_dir / "store.json").exists() and not (snapshot_dir / "catalog.sqlite").exists():
                return 0  # not created yet: nothing to wait for
            time.sleep(0.1 * (attempt + 1))
            continue
        return int(info["events_applied"]) if info else 0  # type: ignore[call-overload]
    return 0
