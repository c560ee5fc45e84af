"""Incremental checkpoints of one shard's positions, aligned with Bytewax's epochs.

Layout, under the run's recovery directory:

    recovery/shards/layout.json     {"format": 1, "shards": S}: S is fixed for the store's life
    recovery/shards/007/delta-000000000012
                                    the positions shard 7 changed in its checkpoint 12
    recovery/shards/007/base-000000000010
                                    every position of shard 7 as of its checkpoint 10 (compaction)

A checkpoint file is a pickled `(format, shard, S, c, payload)`. Format 4, written now:
the payload is `(fields, id chunks, delta chunks)`: a `ledger.shard.ShardImage`'s fields,
its arrays as bytes (the numbers row-major, as the shard keeps them), so a base is written
and restored by copying bytes, not by building an object per position; and the tables of
the sealed chunks (`ledger.position_state.ChunkRefs`) its object rows refer to.

Sealed chunks are written once a chain (docs/scaling.md, "Fifteenth pass"). A position kept
as an object remembers its lateness window in sealed chunks that never change once sealed
(`ledger.memory`); a delta refers to the chunks the chain already holds (a reference: the
checkpoint that first wrote the chunk, and its place there) and writes only the new ones in
its tables. The store keeps `_known`, the chunks (by serial, `ledger.memory.chunk_serial`)
that the files a resume of its newest checkpoint would load define, so a reference always
resolves:

- a delta's new chunks join it once the delta is durable (`commit`);
- a base writes every chunk its rows refer to (it stands alone), under the reference the
  chain knows it by, so deltas after it resolve against it. When its image is taken,
  `_known` keeps only the chunks in it (the deltas before it go once it lands; a chunk
  that lived in a row the base packs into columns is not in it), and the chunks new to
  the chain the base names join once the base is written (step 3);
- a resume (4) resolves each file's references from the base and the deltas it loaded
  before that file, refuses one it cannot resolve (RecoveryError, like a gap) and makes
  `_known` the chunks those files define, so a rolled-back delta's chunks are gone with
  it; `start_empty` and `replace_with_base` start it empty.

Still read, and rewritten by the next base: format 3 (the same fields with every sealed
chunk inline, no tables), format 2 (the same with the numbers column by column:
interleaved on reading) and format 1 (the first shards, a `position_state` tuple per
position). A chain may mix them: the chunks of an older file are inline, known to none.

Bytewax keeps, per shard, only a pointer `(shard, S, c)`: the snapshot of the stateful
step is "checkpoint c of shard i", never the positions themselves, so its recovery
store holds one small row per shard and its per-epoch garbage collection stays cheap.

Why this is safe (invariant I, docs/scaling.md): a worker's input can start epoch e only
after every worker has committed epoch e-1, so when `save` runs at the close of epoch e,
the shard's previous checkpoint c-1 is final (no resume can go back before it), while c
itself may still be rolled back by a crash before Bytewax commits e. Hence:

1. `save` makes checkpoint c durable (temp name, fsync, rename, directory fsync) before the
   pointer to it is returned to Bytewax: whenever Bytewax holds c, its file exists. The
   shards a worker closes an epoch with are saved at once (`save_together`, called by
   `flows.logic.EpochClose`), so their fsyncs can overlap.
2. In the same call, files made useless by the checkpoint Bytewax holds (`handed_over` at
   an earlier close, so final: usually c-1) are deleted: bases older than the newest base
   <= it, and every delta <= that base. A checkpoint written but never handed over (a
   shard saved with its worker's others but not asked for its pointer) is not final and
   frees nothing.
3. When the deltas since the last base hold more rows than `compact_ratio` x the base (or
   there are more than `max_deltas` of them), c is also written as a new base, so restore
   time and disk use stay proportional to the shard's size. The delta c is written in the
   call as always (1 holds); the base is the shard's image taken in the call and written
   by the process's `Compactor` thread, one base at a time: at 1.25M rows a base is
   ~180 MB, about a second of writing and fsyncs that an epoch close would otherwise stall
   on, and all the shards of a uniform key space want their base in the same epoch. A
   shard whose turn has not come writes deltas and asks again at its next checkpoint.
   `base-c` beside `delta-c` holds the same state, so whether it landed before a crash
   changes nothing: a resume from c or later loads it, one from before c deletes it (4).
   It counts as a base (2, the chain's start) once a later `save` saw it written.
4. `resume(c)` first waits for a base still being written in this process, then deletes
   every file newer than c and any temp file (writes of an epoch Bytewax never committed:
   the store was ahead), then loads the newest base <= c and the
   deltas after it up to c, refusing a chain with a gap.
5. `start_empty` (the shard has no pointer yet) deletes whatever its directory holds: the
   leftovers of a first checkpoint whose epoch was never committed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import fields, replace
from pathlib import Path

from adapters.durable_files import TEMP_PREFIX, fsync_dir, pickle_durably, write_durably
from ledger.errors import RecoveryError
from ledger.memory import DeltaChunk, IdChunk, chunk_serial
from ledger.position_state import (
    BASE_REFS,
    ChunkRefs,
    DeltaRow,
    IdRow,
    delta_chunk_of,
    id_chunk_of,
    position_from_state,
    resolved,
)
from ledger.shard import DEFAULT_SHARDS, ChangedRows, Shard, ShardImage

__all__ = [
    "COMPACTOR",
    "LAYOUT",
    "SHARDS_DIR",
    "Compactor",
    "PreparedCheckpoint",
    "ShardCheckpoints",
    "ShardPointer",
    "check_pointer",
    "read_layout",
    "save_together",
    "write_layout",
]

SHARDS_DIR = "shards"
"""The shard checkpoints' directory, inside the recovery directory."""
LAYOUT = "layout.json"
_LAYOUT_FORMAT = 1
_FIRST_FORMAT = 1
"""A checkpoint file of the first shards: pickled `position_state` rows. Still read."""
_COLUMNS_FORMAT = 2
_ROWS_FORMAT = 3
"""A `ShardImage`'s fields, every sealed chunk inline. Still read."""
_CHECKPOINT_FORMAT = 4
"""A checkpoint file holding a `ShardImage`'s fields (columns as bytes) and the tables of the sealed chunks it names."""
_LOG = logging.getLogger("omni_ledger.recovery")
_NAME = re.compile(r"^(base|delta)-(\d{12})$")
_TMP = TEMP_PREFIX

ShardPointer = tuple[int, int, int]
"""What Bytewax saves for a shard: (shard index, shard count S, checkpoint number c)."""


class Compactor:
    """Writes checkpoint bases in a thread of its own, one at a time (step 3).

    One per process (`COMPACTOR`): one base in flight bounds the memory its image holds
    (one shard's columns, not all of them when every shard wants a base in one epoch) and
    keeps the bases' writes from competing for the disk with each other.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-compaction")
        self._lock = threading.Lock()
        self._current: Future[None] | None = None
        self._claimed = False

    def claim(self) -> bool:
        """Reserve the thread for one base when idle (True); then `start` it or `release` the claim.

        Shards saved at once (`save_together`) ask together: only the one that claims takes
        its image (~0.3 s and ~180 MB at 1.25M rows), not every shard whose base is due.
        """
        with self._lock:
            if self._claimed or (self._current is not None and not self._current.done()):
                return False
            self._claimed = True
            return True

    def release(self) -> None:
        """Drop a claim that will not be started."""
        with self._lock:
            self._claimed = False

    def start(self, write: Callable[[], None]) -> Future[None] | None:
        """Run `write` in the thread: the claimed base, or any when idle (busy: None)."""
        with self._lock:
            if not self._claimed and self._current is not None and not self._current.done():
                return None
            self._claimed = False
            self._current = self._pool.submit(write)
            return self._current

    def wait(self) -> None:
        """Until the base in flight, if any, is written (or failed: its shard reports it)."""
        with self._lock:
            current = self._current
        if current is not None:
            with contextlib.suppress(Exception):
                current.result()


COMPACTOR = Compactor()
"""The process's compactor (`ShardCheckpoints`' default)."""


def write_layout(root: Path, shards: int) -> None:
    """Record the shard count of a new store in `root` (the shards directory), durably."""
    root.mkdir(parents=True, exist_ok=True)
    write_durably(root, LAYOUT, json.dumps({"format": _LAYOUT_FORMAT, "shards": shards}).encode())


def read_layout(root: Path) -> int | None:
    """The shard count recorded in `root`, or None if no layout was ever written there."""
    path = root / LAYOUT
    try:
        layout = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        msg = f"{path} cannot be read ({exc}); restore the recovery directory from a backup, or run with --reset"
        raise RecoveryError(msg) from exc
    if layout.get("format") != _LAYOUT_FORMAT or not isinstance(layout.get("shards"), int):
        msg = f"{path} holds {layout!r}; this ledger reads format {_LAYOUT_FORMAT} with an integer shard count"
        raise RecoveryError(msg)
    shards: int = layout["shards"]
    return shards


def check_pointer(resume: object, shards: int) -> ShardPointer:
    """`resume` as a shard pointer of a store of `shards` shards, or a RecoveryError saying what to do."""
    if (
        isinstance(resume, tuple)
        and len(resume) == 3
        and all(isinstance(part, int) for part in resume)
        and 0 <= resume[0] < resume[1]
    ):
        index, saved_shards, checkpoint = resume
        if saved_shards != shards:
            msg = (
                f"the recovery state has shard {index} of {saved_shards}, but this run uses {shards} shards; "
                "the shard count is fixed for the life of a store: keep the recorded count, or run with --reset "
                "and replay the input"
            )
            raise RecoveryError(msg)
        return index, saved_shards, checkpoint
    msg = (
        f"the recovery directory holds fold state of the per-position layout ({type(resume).__name__}), "
        "written by a ledger before shards; this ledger keeps the fold's state in shards. Run with --reset, "
        "then replay the input from Kafka (from the earliest offset still retained) or from the event files"
    )
    raise RecoveryError(msg)


class ShardCheckpoints:
    """The checkpoint files of one shard: write a checkpoint, collect old ones, resume from one."""

    def __init__(
        self,
        root: Path,
        shard: int,
        shards: int,
        *,
        compact_ratio: float = 1.0,
        max_deltas: int = 200,
        min_compact_rows: int = 10_000,
        compactor: Compactor | None = COMPACTOR,
    ) -> None:
        self.shard = shard
        self.shards = shards
        self.directory = root / f"{shard:03d}"
        self.last = 0
        """The newest checkpoint written (or resumed from)."""
        self.held = 0
        """The newest checkpoint whose pointer Bytewax was given (or resumed from): final at the next close."""
        self._compact_ratio = compact_ratio
        self._max_deltas = max_deltas
        # A small shard's deltas are cheap to replay: compact it by file count, not by rows.
        self._min_compact_rows = min_compact_rows
        self._bases: list[int] = []
        self._deltas: list[int] = []
        self._base_rows = 0
        self._delta_rows = 0
        # None: bases are written inline, in `save` (tools, and the benches' comparison).
        self._compactor = compactor
        self._pending: tuple[int, int, Future[None]] | None = None
        """The base being written: (checkpoint, rows, its future)."""
        self._rows_since_pending = 0
        self._directory_made = False
        self._known: dict[int, int] = {}
        """Serial -> reference of the sealed chunks the chain's files define (the module's docstring)."""
        self._base_chunks: dict[int, int] = {}
        """The chunks new to the chain that the base in flight names: known once it is written."""

    def pointer(self) -> ShardPointer:
        """What Bytewax keeps for the newest checkpoint."""
        return self.shard, self.shards, self.last

    def start_empty(self) -> None:
        """Step 5: a shard with no pointer yet; anything in its directory was never committed."""
        self._settle_writes()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._directory_made = True
        for path in self.directory.iterdir():
            path.unlink()
        fsync_dir(self.directory)
        self.last = self.held = 0
        self._known = {}

    def resume(self, checkpoint: int) -> Iterator[ShardImage]:
        """Step 4: the shard's images as of `checkpoint` (`Shard.restore` them), after deleting every newer file.

        A generator: the files are checked and deleted as it starts, so iterate it to the end.
        """
        directory = self.directory
        if checkpoint == 0:
            self.start_empty()
            return
        # A base of this directory still being written by an earlier flow in this process
        # (a flow run again after an error) would land after the listing below: wait.
        self._settle_writes()
        found: dict[str, list[int]] = {"base": [], "delta": []}
        for path in list(directory.iterdir()) if directory.is_dir() else ():
            match = _NAME.match(path.name)
            if match is None or int(match[2]) > checkpoint:
                # A temp file or a checkpoint of an epoch Bytewax never committed.
                path.unlink()
                continue
            found[match[1]].append(int(match[2]))
        if directory.is_dir():
            fsync_dir(directory)
        bases = sorted(found["base"])
        base = bases[-1] if bases else 0
        wanted = range(base + 1, checkpoint + 1)
        have = set(found["delta"])
        missing = [c for c in wanted if c not in have]
        if missing:
            msg = (
                f"the checkpoints of shard {self.shard} in {directory} have a gap: Bytewax resumes from checkpoint "
                f"{checkpoint}, built on base {base or 'none'}, but deltas {_ranges(missing)} are missing (files "
                "lost, or the recovery directory restored apart from its shards/ directory). Restore both from "
                "one backup, or run with --reset and replay the input"
            )
            raise RecoveryError(msg)
        # Bytewax never resumes from before a checkpoint it resumed from once: what only
        # served older checkpoints (a collection cut short by a crash) can go too.
        for b in found["base"]:
            if b < base:
                self._unlink("base", b)
        for d in found["delta"]:
            if d <= base:
                self._unlink("delta", d)
        self._bases = [base] if base else []
        self._deltas = list(wanted)
        self.last = self.held = checkpoint
        self._base_rows = self._delta_rows = 0
        self._known = {}
        # The chunks the files read so far define, by reference: a file resolves against them and its own.
        id_chunks: dict[int, IdChunk] = {}
        delta_chunks: dict[int, DeltaChunk] = {}
        for kind, c in [("base", base)] * bool(base) + [("delta", c) for c in wanted]:
            image = self._read(kind, c, id_chunks, delta_chunks)
            if kind == "base":
                self._base_rows = len(image)
            else:
                self._delta_rows += len(image)
            yield image
        known = {chunk_serial(chunk): ref for ref, chunk in id_chunks.items()}
        known.update((chunk_serial(chunk), ref) for ref, chunk in delta_chunks.items())
        self._known = known

    def save(self, changed: ChangedRows, shard: Shard, *, handed: bool = True) -> ShardPointer:
        """Steps 1-3: make checkpoint last+1 durable (a delta of `changed`), and start a base of `shard` when due.

        `changed` is what `shard.take_changed()` just returned: both are read as they are now.
        `handed`: the pointer goes to Bytewax now (False: when `handed_over` says so).
        `prepare`, `PreparedCheckpoint.write` and `commit` in a row (`save_together` runs the
        writes of several shards at once).
        """
        prepared = self.prepare(changed, shard)
        prepared.write()
        return self.commit(prepared, shard, handed=handed)

    def prepare(self, changed: ChangedRows, shard: Shard) -> PreparedCheckpoint:
        """Checkpoint last+1 as bytes, and what it frees (step 2): the CPU part of `save`; nothing is written.

        Read `changed` and `shard` here, before the shard changes; then `write` it (any thread),
        then `commit` it. Until `commit` the store is as it was: a failed write leaves it so.
        """
        c = self.last + 1
        if not self._directory_made:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._directory_made = True
        self._adopt_written_base()
        rows = len(changed)
        compact = self._pending is None and (
            self._delta_rows + rows > self._compact_ratio * max(self._base_rows, self._min_compact_rows)
            or len(self._deltas) >= self._max_deltas
        )
        # 2. What Bytewax holds is final (an earlier close's, committed before this one began:
        # invariant I): what only served checkpoints before the newest final base can go,
        # once checkpoint c is durable. c itself is newer than what Bytewax holds, so it
        # never changes this.
        final_bases = [b for b in self._bases if b <= self.held]
        newest = final_bases[-1] if final_bases else 0
        freed = [f"base-{b:012d}" for b in self._bases if b < newest]
        freed += [f"delta-{d:012d}" for d in self._deltas if d <= newest]
        if compact and self._compactor is None:
            # A base written inline (tools, the benches' comparison): streamed, not built in memory.
            refs = ChunkRefs(self._known, c, whole=True)
            image = shard.image(refs)
            return PreparedCheckpoint(
                self.directory, "base", c, rows, len(image), False, None, self._payload(c, image, refs), newest,
                freed, refs.written,
            )  # fmt: skip
        refs = ChunkRefs(self._known, c)
        blob = pickle.dumps(self._payload(c, changed.image(refs), refs), protocol=pickle.HIGHEST_PROTOCOL)
        return PreparedCheckpoint(self.directory, "delta", c, rows, 0, compact, blob, None, newest, freed, refs.written)

    def commit(self, prepared: PreparedCheckpoint, shard: Shard, *, handed: bool = True) -> ShardPointer:
        """After `prepared.write()` returned: count checkpoint c as the newest; start a base of `shard` when due.

        On the thread that folds the shard, before it changes: the base's image is taken here.
        """
        c = prepared.c
        if c != self.last + 1:
            msg = f"checkpoint {c} of shard {self.shard} was prepared after checkpoint {self.last}: commit each in turn"
            raise RecoveryError(msg)
        compactor = self._compactor
        if prepared.kind == "base":
            self._bases.append(c)
            self._base_rows, self._delta_rows = prepared.shard_rows, 0
            # The chain's files needed from now on: this base and what follows it.
            self._known = prepared.chunks
            self._base_chunks = {}
        else:
            self._known.update(prepared.chunks)
            self._deltas.append(c)
            self._delta_rows += prepared.rows
            self._rows_since_pending += prepared.rows
            if prepared.compact and compactor is not None and compactor.claim():
                # Only then the image: taking it (~0.3 s at 1.25M rows) for a base that must
                # wait its turn would stall every shard's close for nothing.
                try:
                    self._start_base(c, shard)
                except BaseException:
                    compactor.release()
                    raise
        self.last = c
        newest = prepared.newest_final_base
        if newest:
            self._bases = [b for b in self._bases if b >= newest]
            self._deltas = [d for d in self._deltas if d > newest]
        if handed:
            self.held = c
        return self.pointer()

    def handed_over(self, pointer: ShardPointer) -> ShardPointer:
        """Record that Bytewax was given `pointer` (this shard's newest checkpoint); returns it."""
        self.held = pointer[2]
        return pointer

    def settle(self) -> None:
        """Wait for this shard's base in flight and count it (tests, tools; a flow never needs to)."""
        if self._pending is not None:
            self._pending[2].exception()
        self._adopt_written_base()

    def _start_base(self, c: int, shard: Shard) -> None:
        """Step 3 in the background: the image now (the shard changes after this call), written by the compactor."""
        assert self._compactor is not None
        # Chunks new to the chain get references of their own (from BASE_REFS): delta c numbered its own from 0.
        refs = ChunkRefs(self._known, c, whole=True, first=BASE_REFS)
        image = shard.image(refs)
        directory, name, payload = self.directory, f"base-{c:012d}", self._payload(c, image, refs)
        started = self._compactor.start(lambda: pickle_durably(directory, name, payload))
        if started is not None:
            self._pending = (c, len(image), started)
            self._rows_since_pending = 0
            # From now on, refer only to chunks both this base and the chain before it define: the
            # deltas after c resolve whether the base lands or not. The base's new chunks count once it has.
            known = self._known
            self._known = {serial: ref for serial, ref in refs.written.items() if known.get(serial) == ref}
            self._base_chunks = {serial: ref for serial, ref in refs.written.items() if serial not in self._known}

    def _adopt_written_base(self) -> None:
        """A base the compactor finished becomes the chain's start (step 2 collects what it replaced)."""
        if self._pending is None or not self._pending[2].done():
            return
        c, rows, done = self._pending
        self._pending = None
        error = done.exception()
        if error is not None:
            # The deltas are whole: the chain stands without this base, and the next
            # checkpoint tries again. A full disk fails the next delta too, loudly.
            _LOG.warning(
                "shard %d: writing base %d in %s failed (%s); its deltas keep the state, the next checkpoint "
                "tries again",
                self.shard,
                c,
                self.directory,
                error,
            )
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{_TMP}base-{c:012d}").unlink()
            self._base_chunks = {}
            return
        self._bases.append(c)
        self._base_rows, self._delta_rows = rows, self._rows_since_pending
        known = self._known
        for serial, ref in self._base_chunks.items():
            known.setdefault(serial, ref)  # a delta since may have written it too: either resolves
        self._base_chunks = {}

    def _settle_writes(self) -> None:
        if self._compactor is not None:
            self._compactor.wait()
        self._pending = None
        self._base_chunks = {}

    def replace_with_base(self, checkpoint: int, image: ShardImage) -> None:
        """Make `image` (whole) the shard's only file, as its base at `checkpoint`; never while a flow runs on it.

        For tools that build a state offline (the benches' synthetic 20M-position stores):
        Bytewax's pointer must already name `checkpoint`, or a resume deletes the base as
        newer than the pointer (step 4) or finds a gap.
        """
        if not image.whole:
            msg = f"a base of shard {self.shard} must be a whole image (Shard.image()), not a delta"
            raise RecoveryError(msg)
        self._settle_writes()
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in self.directory.iterdir():
            path.unlink()
        self._write("base", checkpoint, image)
        self.last = self.held = checkpoint
        self._bases, self._deltas = [checkpoint], []
        self._base_rows, self._delta_rows = len(image), 0
        self._known = {}  # its chunks, if any, are inline

    def files(self) -> list[str]:
        """The checkpoint files on disk, oldest first (for tests and operators)."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir())

    def _write(self, kind: str, c: int, image: ShardImage) -> None:
        pickle_durably(self.directory, f"{kind}-{c:012d}", self._payload(c, image))

    def _payload(self, c: int, image: ShardImage, refs: ChunkRefs | None = None) -> tuple[object, ...]:
        # The image's fields are bytes and a few small tuples: pickling them is a copy, not a walk.
        fields_ = tuple(getattr(image, field.name) for field in fields(ShardImage))
        tables: tuple[list[IdRow], list[DeltaRow]] = ([], []) if refs is None else (refs.ids, refs.deltas)
        return (_CHECKPOINT_FORMAT, self.shard, self.shards, c, (fields_, *tables))

    def _read(
        self, kind: str, c: int, id_chunks: dict[int, IdChunk], delta_chunks: dict[int, DeltaChunk]
    ) -> ShardImage:
        """The image of file `kind`-`c`, its chunk references resolved; adds the chunks it defines to the tables."""
        path = self.directory / f"{kind}-{c:012d}"
        id_rows: list[IdRow] = []
        delta_rows: list[DeltaRow] = []
        try:
            fmt, shard, shards, checkpoint, payload = pickle.loads(path.read_bytes())
            if fmt == _CHECKPOINT_FORMAT:
                fields_, id_rows, delta_rows = payload
                image = ShardImage(*fields_)
            elif fmt == _ROWS_FORMAT:
                image = ShardImage(*payload)
            elif fmt == _COLUMNS_FORMAT:
                image = ShardImage.of_column_fields(*payload)
            elif fmt == _FIRST_FORMAT:
                # A list of `position_state` rows, one per position (the shard before columns): read
                # as objects, which the restoring shard packs into columns; the next base is columns.
                image = ShardImage.of_positions(position_from_state(row) for row in payload)
            else:
                image = None
        except (OSError, pickle.UnpicklingError, ValueError, EOFError, TypeError) as exc:
            msg = f"{path} cannot be read ({exc}); restore the recovery directory from a backup, or run with --reset"
            raise RecoveryError(msg) from exc
        if image is None or (shard, shards, checkpoint) != (self.shard, self.shards, c):
            msg = (
                f"{path} belongs to format {fmt}, shard {shard} of {shards}, checkpoint {checkpoint}; expected "
                f"format {_FIRST_FORMAT} to {_CHECKPOINT_FORMAT}, shard {self.shard} of {self.shards}, checkpoint "
                f"{c}. The directory was mixed with another store's, or written by a newer ledger: restore it "
                "from one backup, or run with --reset"
            )
            raise RecoveryError(msg)
        for id_row in id_rows:
            id_chunks[id_row[0]] = id_chunk_of(id_row)
        for delta_row in delta_rows:
            delta_chunks[delta_row[0]] = delta_chunk_of(delta_row)
        if fmt != _CHECKPOINT_FORMAT or not image.objects:
            return image
        try:
            objects = tuple([(r, resolved(state, id_chunks, delta_chunks)) for r, state in image.objects])
        except KeyError as exc:
            ref = exc.args[0]
            msg = (
                f"{path} refers to sealed chunk {ref & 0xFFFFFFFF} of checkpoint {ref >> 32}, which neither the base "
                f"nor the deltas of shard {self.shard} loaded before it define (files lost or mixed with another "
                "store's). Restore the recovery directory from one backup, or run with --reset and replay the input"
            )
            raise RecoveryError(msg) from exc
        return replace(image, objects=objects)

    def _unlink(self, kind: str, c: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / f"{kind}-{c:012d}").unlink()


class PreparedCheckpoint:
    """One shard's checkpoint as `ShardCheckpoints.prepare` left it: bytes to make durable, files it frees.

    `write` touches only the file system and this object, never the store or the shard, so
    the writes of several shards run in threads at once (`save_together`).
    """

    __slots__ = (
        "blob",
        "c",
        "chunks",
        "compact",
        "directory",
        "freed",
        "kind",
        "newest_final_base",
        "payload",
        "rows",
        "shard_rows",
    )

    def __init__(
        self,
        directory: Path,
        kind: str,
        c: int,
        rows: int,
        shard_rows: int,
        compact: bool,
        blob: bytes | None,
        payload: tuple[object, ...] | None,
        newest_final_base: int,
        freed: list[str],
        chunks: dict[int, int],
    ) -> None:
        self.directory = directory
        self.kind = kind
        """"delta", or "base" (written inline: a store without a compactor)."""
        self.c = c
        self.rows = rows
        """The changed rows it holds."""
        self.shard_rows = shard_rows
        """The shard's rows (an inline base)."""
        self.compact = compact
        """A base is due: `commit` asks the compactor for one."""
        self.blob = blob
        """The file's bytes, pickled by `prepare` (a delta)."""
        self.payload = payload
        """What to pickle into the file as it is written (an inline base: too large to build in memory first)."""
        self.newest_final_base = newest_final_base
        self.freed = freed
        """Files of this shard that checkpoint c makes useless (step 2), deleted once it is durable."""
        self.chunks = chunks
        """Serial -> reference of the sealed chunks the file's tables define: known to the store at `commit`."""

    def write(self) -> None:
        """Step 1 (the file durable: data, rename, directory entry), then step 2 (the freed files deleted).

        A delta is only system calls (`write_durably`): each releases the GIL, and the
        Python between them is a few lines, so the threads of `save_together` wait for the
        disk, not for each other's pickling. Raises what the file system raised: the store
        is then as before `prepare`, plus a temp file that a resume deletes.
        """
        name = f"{self.kind}-{self.c:012d}"
        if self.blob is not None:
            write_durably(self.directory, name, self.blob)
        else:
            pickle_durably(self.directory, name, self.payload)
        for freed in self.freed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / freed)


_SAVERS = ThreadPoolExecutor(max_workers=DEFAULT_SHARDS, thread_name_prefix="shard-checkpoint")
"""Threads for `save_together`: a write's fsyncs release the GIL, so several overlap."""


def save_together(saves: Sequence[tuple[ShardCheckpoints, ChangedRows, Shard]]) -> list[tuple[ShardPointer, float]]:
    """`ShardCheckpoints.save` of several shards at once: (pointer, seconds) each, all durable when it returns.

    None is handed over yet: the caller says which with `ShardCheckpoints.handed_over`.

    In three steps, so the threads hold the GIL only between system calls:

    1. `prepare` each shard on the calling thread (the CPU part: changed rows to bytes,
       pickled). When the saving threads did this work themselves, each took the GIL back
       ~10 times a file behind the others' pickling: 87% of their samples in a tailing flow
       were waits for the GIL (docs/scaling.md, "Tenth pass").
    2. `PreparedCheckpoint.write` of each shard in a thread as soon as it is prepared (temp
       file, write, fsync, rename, directory fsync), so the disk works while the next shards
       are prepared and the fsyncs overlap (one journal commit serves several). Waits for
       every write to end, so no write outlives the call.
    3. `commit` each written shard on the calling thread (its base is started there).

    Raises the first failure after step 3: a shard whose write failed is not committed (its
    store stays at its previous checkpoint), and nothing is handed over. A `prepare` that
    raises does so once the writes already started have ended.

    A durable write is ~3-12 ms of fsyncs on this machine's disk whatever its size; 16 in
    a row took 121-155 ms, 16 at once 6-20 ms. In a tailing flow the writes now end 2-11 ms
    after the last `prepare`, and a close is the prepares' CPU (39-124 ms for ~5,000 rows)
    plus waits for a core (docs/scaling.md, "Tenth pass").
    """
    # 1 and 2. Prepared here, each shard's CPU seconds noted for its own figure; each written
    # in a thread meanwhile (one alone: here, after its prepare, with no thread to wake).
    alone = len(saves) <= 1
    prepared: list[tuple[PreparedCheckpoint, float]] = []
    futures: list[Future[tuple[BaseException | None, float]]] = []
    try:
        for store, changed, shard in saves:
            began = time.perf_counter()
            checkpoint = store.prepare(changed, shard)
            prepared.append((checkpoint, time.perf_counter() - began))
            if not alone:
                futures.append(_SAVERS.submit(_timed_write, checkpoint))
    finally:
        wait(futures)  # one wake-up for all of them, not one per future
    outcomes = [future.result() for future in futures] if not alone else [_timed_write(c) for c, _ in prepared]
    # 3. Committed here, where the shards are folded.
    done: list[tuple[ShardPointer, float]] = []
    failure: BaseException | None = None
    for (store, _, shard), (checkpoint, cpu), (error, written) in zip(saves, prepared, outcomes, strict=True):
        if error is not None:
            failure = failure or error
            continue
        began = time.perf_counter()
        pointer = store.commit(checkpoint, shard, handed=False)
        done.append((pointer, cpu + written + time.perf_counter() - began))
    if failure is not None:
        raise failure
    return done


def _timed_write(checkpoint: PreparedCheckpoint) -> tuple[BaseException | None, float]:
    """`checkpoint.write()`: (its failure, if any; its wall seconds). A failure is returned, raised by the caller."""
    began = time.perf_counter()
    try:
        checkpoint.write()
    except Exception as exc:  # handed to save_together, which raises it once the others have ended
        return exc, time.perf_counter() - began
    return None, time.perf_counter() - began


def _ranges(numbers: list[int]) -> str:
    if len(numbers) <= 4:
        return ", ".join(map(str, numbers))
    return f"{numbers[0]}, {numbers[1]}, ... {numbers[-1]} ({len(numbers)} in all)"
