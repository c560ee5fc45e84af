"""The snapshot sink's pending jobs, kept in files beside the shard checkpoints, with only their names in Bytewax.

A job handed to the writer thread but not yet published when an epoch closes belongs to
that epoch's state (`adapters.snapshot_store.sink`, step 3). Kept inline, it lands in
Bytewax's recovery DB as one pickled blob per epoch, and a merged job can hold hundreds of
thousands of position changes (tens of MB): Bytewax's SQLite files would grow to the
largest one ever saved. So the jobs go to files here and Bytewax keeps only their numbers:

    recovery/sink/<partition>/job-000000000042   a pickled saved `_Job`

The same discipline as the shard checkpoints (`adapters.shard_checkpoints`, whose
docstring and docs/scaling.md give the invariant: when a snapshot is taken at the close of
epoch e, the previous one is final, the new one may still be rolled back):

1. `save` writes each job not written before (temp name, fsync, rename, directory fsync)
   before its number is returned for Bytewax to keep: whenever Bytewax holds a number,
   its file exists. A job already written (by `token`) is not written again: a job being
   published for several epochs costs one write.
2. In the same call, every file named neither by this snapshot nor by the previous one
   (now final) is deleted: files never pile up.
3. `resume(names)` reads the named files, then deletes every other job file and temp file
   (writes of an epoch Bytewax never committed), and refuses to start when a named file is
   missing: those outputs would be lost.
"""

from __future__ import annotations

import contextlib
import pickle
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from adapters.durable_files import TEMP_PREFIX, fsync_dir, write_durably
from ledger.errors import RecoveryError

__all__ = ["SINK_DIR", "PendingJobs"]

SINK_DIR = "sink"
"""The pending jobs' directory, inside the recovery directory (one subdirectory per sink partition)."""

_FORMAT = 1
_NAME = re.compile(r"^job-(\d{12})$")
_TMP = TEMP_PREFIX


class PendingJobs:
    """The job files of one sink partition: save the pending jobs, collect old files, resume."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._next = 1
        self._written: dict[int, int] = {}
        """A job's token -> the number of the file holding it, for jobs written by this process."""
        self._previous: tuple[int, ...] = ()
        self._current: tuple[int, ...] = ()

    def save(self, jobs: Iterable[tuple[int, Callable[[], tuple[Any, ...]]]]) -> tuple[int, ...]:
        """Steps 1-2: the numbers of files holding `jobs` (`(token, saved)` pairs), each durable first."""
        numbers: list[int] = []
        for token, saved in jobs:
            number = self._written.get(token)
            if number is None:
                number = self._next
                self._next += 1
                self.directory.mkdir(parents=True, exist_ok=True)
                blob = pickle.dumps((_FORMAT, number, saved()), protocol=pickle.HIGHEST_PROTOCOL)
                write_durably(self.directory, _file(number), blob)
                self._written[token] = number
            numbers.append(number)
        self._previous, self._current = self._current, tuple(numbers)
        # 2. The previous snapshot is final: anything else is no longer reachable by a resume.
        keep = set(self._previous) | set(self._current)
        for token, number in list(self._written.items()):
            if number not in keep:
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / _file(number)).unlink()
                del self._written[token]
        return self._current

    def resume(self, names: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Step 3: the saved jobs `names` stand for (file numbers, or jobs saved inline by an older sink)."""
        numbers = [name for name in names if isinstance(name, int)]
        jobs: list[tuple[Any, ...]] = []
        for name in names:
            if isinstance(name, int):
                jobs.append(self._read(name))
            else:
                jobs.append(name)  # a job an older sink kept in Bytewax's state
        if self.directory.is_dir():
            for path in self.directory.iterdir():
                match = _NAME.match(path.name)
                if match is not None:
                    # New files get numbers past every file seen, kept or not: no name is reused.
                    self._next = max(self._next, int(match[1]) + 1)
                if match is None or int(match[1]) not in numbers:
                    path.unlink()
            fsync_dir(self.directory)
        # The named files stay until the next snapshot is final; they are not this process's
        # jobs (those get new tokens), so the next `save` writes its own and keeps these one more time.
        self._current = tuple(numbers)
        self._written = {-number: number for number in numbers}
        return jobs

    def _read(self, number: int) -> tuple[Any, ...]:
        path = self.directory / _file(number)
        try:
            fmt, saved_number, job = pickle.loads(path.read_bytes())
        except FileNotFoundError as exc:
            msg = (
                f"the snapshot sink's recovery state names the pending job {path}, which is missing: the outputs it "
                "held would never be published. Restore the recovery directory (with its sink/ directory) from one "
                "backup, or run with --reset and replay the input"
            )
            raise RecoveryError(msg) from exc
        except (OSError, pickle.UnpicklingError, ValueError, EOFError, TypeError) as exc:
            msg = f"{path} cannot be read ({exc}); restore the recovery directory from a backup, or run with --reset"
            raise RecoveryError(msg) from exc
        if fmt != _FORMAT or saved_number != number:
            msg = f"{path} holds format {fmt}, job {saved_number}; expected format {_FORMAT}, job {number}"
            raise RecoveryError(msg)
        if not isinstance(job, tuple):
            msg = f"{path} holds a {type(job).__name__}, not a saved job"
            raise RecoveryError(msg)
        return job


def _file(number: int) -> str:
    return f"job-{number:012d}"
