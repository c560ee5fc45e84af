"""A resumable Bytewax source over event files: JSON lines or Avro object container files.

The resume state is where the next read starts in each file (byte offset and line
number for JSON lines, records read for Avro), so a restarted flow neither skips nor
repeats a line beyond the last completed epoch. Files are a replay and test input;
parallel reading is what the Kafka source's partitions are for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from adapters.clock import Clock
from adapters.codec import RawInput, iter_avro_file
from adapters.shutdown import StopFlag
from ledger.errors import SourceError

__all__ = ["FilePosition", "FileSource"]

_AVRO_MAGIC = b"Obj\x01"
_POLL = timedelta(milliseconds=200)


@dataclass(frozen=True, slots=True)
class FilePosition:
    """Where to resume: byte offset and 1-based number of the next line (or records read, for Avro)."""

    offset: int = 0
    line: int = 1


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        msg = f"cannot read event file {path}: {exc.strerror}; check the path given to --source file:PATH"
        raise SourceError(msg) from exc


class _JsonLinesPartition(StatefulSourcePartition[RawInput, FilePosition]):
    def __init__(
        self, path: Path, resume: FilePosition | None, follow: bool, batch_size: int, stop: StopFlag | None = None
    ) -> None:
        self._stop = stop
        self._path = path
        self._file = _open(path)
        self._pos = resume or FilePosition()
        self._file.seek(self._pos.offset)
        self._follow = follow
        self._batch_size = batch_size
        self._awake: datetime | None = None

    def next_batch(self) -> list[RawInput]:
        batch: list[RawInput] = []
        offset, line = self._pos.offset, self._pos.line
        for _ in range(self._batch_size):
            raw = self._file.readline()
            if not raw:
                break
            if not raw.endswith(b"\n") and self._follow:
                # A writer is mid-line: read it whole on a later poll.
                self._file.seek(offset)
                break
            offset += len(raw)
            if raw.strip():
                batch.append(RawInput(f"{self._path.name}:{line}", raw.rstrip(b"\r\n")))
            line += 1
        self._pos = FilePosition(offset, line)
        if batch:
            self._awake = None
            return batch
        if not self._follow or (self._stop is not None and self._stop.is_set()):
            raise StopIteration
        self._awake = datetime.now(UTC) + _POLL
        return batch

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> FilePosition:
        return self._pos

    def close(self) -> None:
        self._file.close()


class _AvroPartition(StatefulSourcePartition[RawInput, FilePosition]):
    def __init__(self, path: Path, resume: FilePosition | None, batch_size: int) -> None:
        self._path = path
        self._file = _open(path)
        self._read = resume.offset if resume else 0
        self._records = iter_avro_file(self._file, path.name, skip=self._read)
        self._batch_size = batch_size

    def next_batch(self) -> list[RawInput]:
        batch: list[RawInput] = []
        for index, record in self._records:
            batch.append(RawInput(f"{self._path.name}#{index}", record))
            self._read = index + 1
            if len(batch) >= self._batch_size:
                break
        if not batch:
            raise StopIteration
        return batch

    def snapshot(self) -> FilePosition:
        return FilePosition(self._read, 0)

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True, slots=True)
class FilesResume:
    """Where each file ever read stands, and the replay clock's reading at that point."""

    positions: tuple[tuple[str, FilePosition], ...]
    clock: int | None


class _FilesPartition(StatefulSourcePartition[RawInput, FilesResume]):
    """Reads the files one after the other, remembering where each one stands."""

    def __init__(
        self,
        paths: Sequence[Path],
        resume: FilesResume | None,
        follow: bool,
        batch_size: int,
        stop: StopFlag | None,
        clock: Clock | None,
    ) -> None:
        self._stop = stop
        self._clock = clock
        self._positions = dict(resume.positions if resume else ())
        if resume is not None and resume.clock is not None and clock is not None:
            # An event-time clock restarts where the input stood, not at the dawn of time:
            # a request read after a restart is judged as it would have been without one.
            clock.observe(resume.clock)
        self._paths = list(paths)
        self._follow = follow
        self._batch_size = batch_size
        self._index = 0
        self._current: StatefulSourcePartition[RawInput, FilePosition] | None = None

    def _open_current(self) -> StatefulSourcePartition[RawInput, FilePosition]:
        path = self._paths[self._index]
        resume = self._positions.get(str(path.resolve()))
        with _open(path) as probe:
            is_avro = probe.read(4) == _AVRO_MAGIC
        if is_avro:
            return _AvroPartition(path, resume, self._batch_size)
        # Only the last file can grow: earlier ones are read to their end.
        follow = self._follow and self._index == len(self._paths) - 1
        return _JsonLinesPartition(path, resume, follow, self._batch_size, self._stop)

    def next_batch(self) -> list[RawInput]:
        while self._index < len(self._paths):
            if self._current is None:
                self._current = self._open_current()
            try:
                batch = list(self._current.next_batch())
            except StopIteration:
                self._remember()
                self._current.close()
                self._current = None
                self._index += 1
                continue
            self._remember()
            return batch
        if self._clock is not None:
            self._clock.reached_end("files")
        raise StopIteration

    def next_awake(self) -> datetime | None:
        return self._current.next_awake() if self._current is not None else None

    def _remember(self) -> None:
        if self._current is not None:
            self._positions[str(self._paths[self._index].resolve())] = self._current.snapshot()

    def snapshot(self) -> FilesResume:
        reading = self._clock.now() if self._clock is not None and not self._clock.live else None
        return FilesResume(tuple(sorted(self._positions.items())), reading)

    def close(self) -> None:
        if self._current is not None:
            self._current.close()


class FileSource(FixedPartitionedSource[RawInput, FilesResume]):
    """Events from files, read in the order given; `follow=True` keeps tailing the last one.

    One partition whatever the files: its resume state maps each file ever read to
    where it stands, so a later run may name other files on the same snapshot
    directory (the new ones start at their beginning, finished ones are not re-read).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        follow: bool = False,
        batch_size: int = 1000,
        stop: StopFlag | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._stop = stop
        self._clock = clock
        for path in paths:
            if not path.is_file():
                msg = f"event file {path} does not exist or is not a file; check --source file:PATH"
                raise SourceError(msg)
        self._paths = list(paths)
        self._follow = follow
        self._batch_size = batch_size

    def list_parts(self) -> list[str]:
        return ["files"]

    def build_part(self, step_id: str, for_part: str, resume_state: FilesResume | None) -> _FilesPartition:
        return _FilesPartition(self._paths, resume_state, self._follow, self._batch_size, self._stop, self._clock)
