"""A resumable Bytewax source over event files: JSON lines or Avro object container files.

One partition per file, so several files are read in parallel by different workers.
The resume state is where the next read starts (byte offset and line number for JSON
lines, records read for Avro), so a restarted flow neither skips nor repeats a line
beyond the last completed epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from adapters.codec import RawInput, iter_avro_file
from ledger.errors import SourceError

__all__ = ["FileSource", "FilePosition"]

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
    def __init__(self, path: Path, resume: FilePosition | None, follow: bool, batch_size: int) -> None:
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
        if not self._follow:
            raise StopIteration
        self._awake = datetime.now(timezone.utc) + _POLL
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


class FileSource(FixedPartitionedSource[RawInput, FilePosition]):
    """Events from files; `follow=True` keeps tailing JSON-lines files for appended lines."""

    def __init__(self, paths: Sequence[Path], *, follow: bool = False, batch_size: int = 1000) -> None:
        for path in paths:
            if not path.is_file():
                msg = f"event file {path} does not exist or is not a file; check --source file:PATH"
                raise SourceError(msg)
        self._paths = {str(p.resolve()): p for p in paths}
        self._follow = follow
        self._batch_size = batch_size

    def list_parts(self) -> list[str]:
        return sorted(self._paths)

    def build_part(
        self, step_id: str, for_part: str, resume_state: FilePosition | None
    ) -> StatefulSourcePartition[RawInput, FilePosition]:
        path = self._paths[for_part]
        with _open(path) as probe:
            is_avro = probe.read(4) == _AVRO_MAGIC
        if is_avro:
            return _AvroPartition(path, resume_state, self._batch_size)
        return _JsonLinesPartition(path, resume_state, self._follow, self._batch_size)
