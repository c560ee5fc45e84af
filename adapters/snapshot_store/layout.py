"""Where a snapshot store keeps its files, and which catalog and how many writers it has.

Layout of a store directory `DIR`:

    DIR/catalog.sqlite        DuckLake catalog: a SQLite database in WAL mode (the default)
    DIR/store.json            which catalog, how many writers and which layout version
                              (`LAYOUT_VERSION`): readers find the catalog here; a store
                              without one is a SQLite store of one writer, layout 1
    DIR/data/                 Parquet data and delete files written by DuckLake
    DIR/.writer.lock          held (flock) by the open SnapshotWriter (writer i of several:
                              DIR/.writer-{i}.lock)
    DIR/.commit.lock          several writers on a SQLite catalog take turns on it
    DIR/heartbeat.json        the newest snapshot is current as of ... (several writers:
                              DIR/heartbeat-{i}.json each)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ledger.errors import SnapshotError
from ledger.events import Millis

__all__ = [
    "CATALOG_FILE",
    "COMMIT_LOCK_FILE",
    "DATA_DIR",
    "HEARTBEAT_FILE",
    "LAKE",
    "LAYOUT_VERSION",
    "LOCK_FILE",
    "MANIFEST_FILE",
    "POSTGRES_PREFIX",
    "SNAPSHOT_LOG",
    "StoreLayout",
    "heartbeat_file",
    "mask_password",
    "read_heartbeat",
    "store_exists",
]

CATALOG_FILE = "catalog.sqlite"
MANIFEST_FILE = "store.json"
DATA_DIR = "data"
LOCK_FILE = ".writer.lock"
COMMIT_LOCK_FILE = ".commit.lock"
HEARTBEAT_FILE = "heartbeat.json"
LAKE = "lake"
POSTGRES_PREFIX = "postgres:"
# With several writers: the one table all of them insert into, one row per publish.
SNAPSHOT_LOG = "snapshot_log"
# The store's layout version (DIR/store.json "layout"):
# 1: each writer's positions are one table (`positions`, or `positions_w{i}`), updated
#    in place by a MERGE at every publish.
# 2: each writer's positions are a view (the same name) over an append-only recent table
#    (`..._recent`, a publish only inserts) and a base table (`..._base`) that the writer
#    folds the recent rows into now and then (see `SnapshotWriter.compact_recent`).
# A writer opening a layout-1 store migrates it in one snapshot (`tables.create_missing`).
LAYOUT_VERSION = 2


_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\\\]|\\\\.)*'|\S+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class StoreLayout:
    """Where a store's DuckLake catalog lives and how many writers share it (DIR/store.json).

    `catalog` "" is SQLite at DIR/catalog.sqlite; "postgres:<libpq conninfo>" is a
    PostgreSQL database (put a password in a passfile, not here: the manifest holds the
    conninfo). `writers` > 1 gives each writer its own tables behind views.
    """

    catalog: str = ""
    writers: int = 1
    version: int = field(default=LAYOUT_VERSION, compare=False)
    """The on-disk layout (`LAYOUT_VERSION`); not compared: a writer migrates an older one."""

    def __post_init__(self) -> None:
        if self.catalog and not self.catalog.startswith(POSTGRES_PREFIX):
            msg = (
                f'snapshot catalog {self.described()!r} is not understood: use "" for SQLite in the store '
                f'directory, or "postgres:<libpq conninfo>" (for example "postgres:host=db dbname=ledger")'
            )
            raise SnapshotError(msg)
        if self.writers < 1:
            msg = f"a snapshot store needs at least one writer, got writers={self.writers}"
            raise SnapshotError(msg)

    @property
    def postgres(self) -> bool:
        return bool(self.catalog)

    @property
    def sharded(self) -> bool:
        """Several writers: per-writer tables behind views."""
        return self.writers > 1

    @property
    def default(self) -> bool:
        return not self.postgres and not self.sharded

    def target(self, directory: Path) -> str:
        """What ATTACH takes."""
        if self.postgres:
            return "ducklake:" + self.catalog
        return "ducklake:sqlite:" + str(directory / CATALOG_FILE)

    def table(self, name: str, writer: int) -> str:
        """The physical table a writer writes for public table `name`."""
        if name == "snapshot_info" and self.sharded:
            return SNAPSHOT_LOG
        return f"{name}_w{writer}" if self.sharded else name

    def positions_base(self, writer: int) -> str:
        """Layout 2: the table a writer folds its recent positions into (`positions_base`, `positions_w{i}_base`)."""
        return f"{self.table('positions', writer)}_base"

    def positions_recent(self, writer: int) -> str:
        """Layout 2: the append-only table a writer's publishes insert positions into."""
        return f"{self.table('positions', writer)}_recent"

    def described(self) -> str:
        """The catalog for messages, password masked."""
        if not self.catalog:
            return "SQLite (catalog.sqlite)"
        return mask_password(self.catalog)

    @classmethod
    def of(cls, directory: Path) -> StoreLayout | None:
        """The layout of the store at `directory`, None when there is none yet."""
        manifest = directory / MANIFEST_FILE
        if manifest.is_file():
            try:
                record = json.loads(manifest.read_text())
                return cls(str(record.get("catalog", "")), int(record.get("writers", 1)), int(record.get("layout", 1)))
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                msg = f"cannot read the store manifest {manifest}: {exc}"
                raise SnapshotError(msg) from exc
        if (directory / CATALOG_FILE).is_file():
            return cls(version=1)  # written before the manifest recorded the layout
        return None

    def save(self, directory: Path) -> None:
        """Write DIR/store.json, atomically, owner-only."""
        target = directory / MANIFEST_FILE
        scratch = target.with_name(f".{MANIFEST_FILE}.{os.getpid()}")
        try:
            fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"catalog": self.catalog, "writers": self.writers, "layout": self.version}, out)
            os.replace(scratch, target)
        except OSError as exc:
            msg = f"cannot write the store manifest {target}: {exc.strerror}"
            raise SnapshotError(msg) from exc


def store_exists(directory: Path) -> bool:
    """Whether a writer has created a store at `directory` (any catalog)."""
    directory = Path(directory)
    return (directory / MANIFEST_FILE).is_file() or (directory / CATALOG_FILE).is_file()


def mask_password(text: str) -> str:
    """`text` (a conninfo, or an error quoting one) with any password replaced by ***."""
    return _PASSWORD.sub(r"\1***", text)


def heartbeat_file(directory: Path, layout: StoreLayout, writer: int) -> Path:
    """Where writer `writer` records that its newest snapshot is current."""
    return directory / (f"heartbeat-{writer}.json" if layout.sharded else HEARTBEAT_FILE)


def read_heartbeat(directory: Path) -> tuple[Millis, int | None] | None:
    """When the flow last confirmed its newest snapshot is current, and which snapshot that was.

    With several writers: the oldest of their heartbeats (the store is current only as of
    the slowest writer) and None for the snapshot (each writer knows only its own); None
    while a writer has not beaten yet.
    """
    directory = Path(directory)
    try:
        layout = StoreLayout.of(directory) or StoreLayout()
    except SnapshotError:
        return None
    beats: list[tuple[Millis, int | None]] = []
    for writer in range(layout.writers):
        try:
            record = json.loads(heartbeat_file(directory, layout, writer).read_text())
            beats.append((int(record["at"]), record.get("snapshot_id")))
        except (OSError, ValueError, KeyError, TypeError):
            return None
    if len(beats) == 1:
        return beats[0]
    return min(at for at, _ in beats), None
