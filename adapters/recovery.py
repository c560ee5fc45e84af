"""Bytewax's recovery partitions: what a crashed execution saved past its last completed epoch is discarded.

Bytewax 0.21.1 saves each stateful step's state at every epoch close (`snaps`, one row
per step, key and epoch) and resumes an execution from the cluster's frontier: it loads,
per key, the newest row *older* than the resume epoch. It never deletes the rows a
crashed execution wrote at or after that epoch (its only DELETE is the garbage
collection of rows older than a committed epoch, `src/recovery.rs:946-984`). Such a row
is state of an epoch that never completed: its outputs may never have reached the broker
(a kill -9 while a sink was still flushing that epoch). It is invisible to the next
execution, which resumes before it, but if that execution is killed in turn before it
saves the same key again, the one after resumes past it and loads it: the key's state is
then ahead of its input, the replayed events are duplicates to it, and what they would
have decided is lost. Seen in CI: 500 reservation decisions missing from
`reservation.decisions` after a run of kill -9s, the positions themselves right.

So before an execution starts, `discard_uncommitted` computes the resume epoch as Bytewax
will (the same query over the union of the partitions' progress) and deletes every saved
state at or after it. Then what Bytewax loads is exactly the state of the epochs whose
outputs were acknowledged. In a cluster every process does it before it joins the others;
none writes before all have joined, and the deletes are the same in each.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from ledger.errors import SourceError

__all__ = ["Discarded", "discard_uncommitted", "resume_epoch"]

_LOG = logging.getLogger("omni_ledger.recovery")

# Bytewax's own resume query (`RecoveryPart::resume_from`, src/recovery.rs:1211-1233 at
# v0.21.1), run over the progress rows of every partition: the latest execution's
# workers each resume from their newest frontier (or the execution's resume epoch when
# they wrote none), and the cluster from the smallest of those. Its `generate_series` is
# spelled as a recursive CTE: Python's SQLite may lack the series extension.
_RESUME = """
WITH RECURSIVE max_ex AS (
    SELECT ex_num, worker_count, resume_epoch FROM exs WHERE ex_num = (SELECT MAX(ex_num) FROM exs)
),
workers(value) AS (
    SELECT 0 WHERE EXISTS (SELECT 1 FROM max_ex)
    UNION ALL SELECT value + 1 FROM workers WHERE value + 1 < (SELECT worker_count FROM max_ex)
),
default_progress AS (
    SELECT ex_num, value AS worker_index, resume_epoch AS worker_frontier FROM workers CROSS JOIN max_ex
),
explicit_progress AS (
    SELECT ex_num, worker_index, worker_frontier FROM fronts WHERE ex_num = (SELECT MAX(ex_num) FROM exs)
),
max_progress AS (
    SELECT ex_num, worker_index, MAX(worker_frontier) AS worker_frontier
    FROM (SELECT * FROM explicit_progress UNION SELECT * FROM default_progress)
    GROUP BY ex_num, worker_index
)
SELECT MIN(worker_frontier) FROM max_progress
"""
_FIRST_EPOCH = 1
"""Bytewax's resume epoch when nothing was saved yet (`ResumeFrom::default`)."""


@dataclass(frozen=True, slots=True)
class Discarded:
    """What `discard_uncommitted` found and did."""

    resume_epoch: int
    rows: int
    """Saved states dropped: written at or after the resume epoch by a crashed execution."""


def _partitions(recovery_dir: Path) -> list[Path]:
    return sorted(recovery_dir.glob("part-*.sqlite3"))


def _connect(path: Path) -> sqlite3.Connection:
    # Bytewax keeps its partitions in WAL mode; a busy timeout rides out a checkpoint.
    return sqlite3.connect(path, timeout=30.0, isolation_level=None)


def resume_epoch(recovery_dir: Path) -> int:
    """The epoch Bytewax will resume from on `recovery_dir` (1 when nothing completed yet)."""
    parts = _partitions(recovery_dir)
    with closing(sqlite3.connect(":memory:")) as progress:
        progress.executescript(
            "CREATE TABLE exs (ex_num INTEGER, worker_count INTEGER, resume_epoch INTEGER);"
            "CREATE TABLE fronts (ex_num INTEGER, worker_index INTEGER, worker_frontier INTEGER);"
        )
        for part in parts:
            try:
                with closing(_connect(part)) as source:
                    exs = source.execute("SELECT ex_num, worker_count, resume_epoch FROM exs").fetchall()
                    fronts = source.execute("SELECT ex_num, worker_index, worker_frontier FROM fronts").fetchall()
            except sqlite3.Error as exc:
                msg = (
                    f"cannot read the recovery partition {part}: {exc}. It is not a Bytewax 0.21 recovery "
                    f"partition or it is damaged: restart with --reset (the flow reads its input again)"
                )
                raise SourceError(msg) from exc
            progress.executemany("INSERT INTO exs VALUES (?, ?, ?)", exs)
            progress.executemany("INSERT INTO fronts VALUES (?, ?, ?)", fronts)
        (epoch,) = progress.execute(_RESUME).fetchone()
    return _FIRST_EPOCH if epoch is None else int(epoch)


def discard_uncommitted(recovery_dir: Path) -> Discarded:
    """Delete every state saved at or after the epoch the next execution resumes from."""
    epoch = resume_epoch(recovery_dir)
    dropped = 0
    for part in _partitions(recovery_dir):
        with closing(_connect(part)) as connection:
            try:
                dropped += connection.execute("DELETE FROM snaps WHERE snap_epoch >= ?", (epoch,)).rowcount
            except sqlite3.Error as exc:
                msg = f"cannot discard the uncommitted state in {part}: {exc}; restart with --reset"
                raise SourceError(msg) from exc
    if dropped:
        _LOG.info(
            "discarded %d saved states of epochs from %d on: a crashed run wrote them, its outputs unconfirmed",
            dropped,
            epoch,
            extra={"resume_epoch": epoch, "discarded": dropped},
        )
    return Discarded(epoch, dropped)
