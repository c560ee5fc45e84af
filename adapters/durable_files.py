"""Files that are either absent or whole after a crash: what the shard checkpoints and the sink's pending jobs write."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["TEMP_PREFIX", "fsync_dir", "pickle_durably", "write_durably"]

TEMP_PREFIX = ".tmp-"
"""A file being written; a resume deletes whatever still carries it (a write cut short by a crash)."""


@contextmanager
def _replacing(directory: Path, name: str) -> Iterator[BinaryIO]:
    """A temp file to write `name` into; on leaving: fsync, rename over `name`, fsync the directory.

    After a crash `name` is either absent (or its older self) or whole. A write cut short
    leaves the temp file, which a resume deletes (`TEMP_PREFIX`).
    """
    tmp = directory / f"{TEMP_PREFIX}{name}"
    with tmp.open("wb") as out:
        yield out
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, directory / name)
    fsync_dir(directory)


def write_durably(directory: Path, name: str, blob: bytes) -> None:
    """Write `name` so that after a crash it is either absent or whole: temp file, fsync, rename, dir fsync.

    Plain system calls (open, write, fsync, close, rename; then the directory's open, fsync,
    close), with no buffered file object around them: each call releases the GIL and must
    take it back, and a file object's open and flush add several such round trips, which
    in a busy process cost a wait each (docs/scaling.md, "Tenth pass").
    """
    tmp = directory / f"{TEMP_PREFIX}{name}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(blob)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / name)
    fsync_dir(directory)


def pickle_durably(directory: Path, name: str, value: object) -> None:
    """`write_durably` of `value` pickled (highest protocol), streamed into the file.

    Bytes as `pickle.dumps` gives them, without building them in memory first: a large
    bytes field (a shard base's columns, ~180 MB at 1.25M rows) goes from the object to the
    file in one write that releases the GIL, where `dumps` copied it while holding it.
    """
    with _replacing(directory, name) as out:
        pickle.dump(value, out, protocol=pickle.HIGHEST_PROTOCOL)


def fsync_dir(directory: Path) -> None:
    """Make the directory's entries (a rename, an unlink) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
