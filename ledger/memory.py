"""What a position remembers inside the lateness window, in chunks, so a batch costs O(chunk).

A position folds each batch into a *new* value (the runtime may still hold the old one
as a recovery snapshot). Copying every remembered event id and on-hand delta per batch
would cost O(events in the window) per batch, which for a busy distribution-centre
position is thousands. Instead, recent entries sit in a small open chunk that is copied,
and full chunks are sealed into immutable values that new positions share.

Forgetting is by whole chunks and lags the horizon a little; remembering an id or a
delta a while longer is always safe (the `too_late` check comes first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import count

from ledger._frozen import fast_init
from ledger._pickle import positional_reduce
from ledger.events import Millis

__all__ = [
    "CHUNK",
    "DeltaChunk",
    "DeltaLog",
    "DeltaLogDraft",
    "EventIds",
    "EventIdsDraft",
    "IdChunk",
    "chunk_serial",
    "sealed_holds",
    "sealed_with",
]

CHUNK = 64
"""Entries in an open chunk before it is sealed: the most a batch copies; a position with
N entries in its window scans N / CHUNK sealed chunks per lookup."""

NEVER: Millis = 2**62

_SERIALS = count(1)
"""Serial numbers of sealed chunks, unique in the process (see `chunk_serial`)."""


@fast_init
@dataclass(frozen=True, slots=True)
class IdChunk:
    """A sealed set of event ids and the newest occurred_at among them."""

    newest: Millis
    ids: frozenset[str]
    _packed: object = field(default=None, init=False, compare=False, repr=False)
    _serial: int = field(default=0, init=False, compare=False, repr=False)

    def __reduce__(self) -> tuple[type[IdChunk], tuple[Millis, frozenset[str]]]:
        return IdChunk, (self.newest, self.ids)

    def packed(self, pack: Callable[[frozenset[str]], object]) -> object:
        """`pack(ids)`, computed once: a sealed chunk never changes, and the runtime saves
        every position it touched at every epoch, its sealed chunks included."""
        if self._packed is None:
            object.__setattr__(self, "_packed", pack(self.ids))
        return self._packed


@fast_init
@dataclass(frozen=True, slots=True)
class EventIds:
    """Event ids seen inside the window (sealed chunks, then the open chunk with times)."""

    __reduce__ = positional_reduce

    sealed: tuple[IdChunk, ...] = ()
    open: Mapping[str, Millis] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(c.ids) for c in self.sealed) + len(self.open)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.open or any(event_id in c.ids for c in self.sealed)


def chunk_serial(chunk: IdChunk | DeltaChunk) -> int:
    """The chunk's serial number, given at the first call: unique among the process's chunks, never reused.

    A sealed chunk never changes, and the fold keeps the same chunk objects from one
    position value to the next (`sealed_with` appends), so the serial names the chunk for
    as long as a position remembers it: a shard's checkpoints write a chunk once per
    chain and refer to it after (`adapters.shard_checkpoints`). Not pickled: a chunk
    read back gets a new one.
    """
    serial = chunk._serial
    if not serial:
        serial = next(_SERIALS)
        object.__setattr__(chunk, "_serial", serial)
    return serial


def sealed_holds(sealed: tuple[IdChunk, ...], event_id: str) -> bool:
    """Whether a sealed chunk of `sealed` holds `event_id` (a loop, not `any` over a generator: every event of a
    position with sealed chunks asks)."""
    for chunk in sealed:  # noqa: SIM110 (a loop, as said: no generator frame)
        if event_id in chunk.ids:
            return True
    return False


def sealed_with(sealed: tuple[IdChunk, ...], ids: Mapping[str, Millis]) -> tuple[IdChunk, ...]:
    """`sealed` with the open ids `ids` sealed after them as one more chunk."""
    return (*sealed, IdChunk(max(ids.values()), frozenset(ids)))


class EventIdsDraft:
    """A working copy of `EventIds` for one batch.

    `open` is the batch's own dict (a copy of the position's, which stays untouched). The
    fold's plain path does the same work over local variables (`sealed_holds`, `sealed_with`).
    """

    __slots__ = ("open", "sealed")

    def __init__(self, ids: EventIds) -> None:
        self.sealed = ids.sealed
        # `dict.copy` of a dict clones its table: ~40% cheaper than `dict(...)`, once a batch.
        self.open: dict[str, Millis] = ids.open.copy() if type(ids.open) is dict else dict(ids.open)

    def __contains__(self, event_id: str) -> bool:
        if event_id in self.open:
            return True
        return bool(self.sealed) and sealed_holds(self.sealed, event_id)

    def add(self, event_id: str, at: Millis) -> None:
        self.open[event_id] = at
        if len(self.open) >= CHUNK:
            self.sealed, self.open = sealed_with(self.sealed, self.open), {}

    def forget_before(self, horizon: Millis) -> None:
        self.sealed = tuple(c for c in self.sealed if c.newest >= horizon)
        self.open = {eid: at for eid, at in self.open.items() if at >= horizon}

    def forget_at(self) -> Millis:
        """The earliest horizon past which something here could be forgotten."""
        return min(min((c.newest for c in self.sealed), default=NEVER), min(self.open.values(), default=NEVER))

    def freeze(self) -> EventIds:
        return EventIds(self.sealed, self.open)


@fast_init
@dataclass(frozen=True, slots=True)
class DeltaChunk:
    """Sealed on-hand deltas: (occurred_at, qty) with their time range and sum."""

    oldest: Millis
    newest: Millis
    total: int
    items: tuple[tuple[Millis, int], ...]
    _packed: object = field(default=None, init=False, compare=False, repr=False)
    _serial: int = field(default=0, init=False, compare=False, repr=False)

    def __reduce__(self) -> tuple[type[DeltaChunk], tuple[Millis, Millis, int, tuple[tuple[Millis, int], ...]]]:
        return DeltaChunk, (self.oldest, self.newest, self.total, self.items)

    def packed(self, pack: Callable[[tuple[tuple[Millis, int], ...]], object]) -> object:
        """`pack(items)`, computed once (see `IdChunk.packed`)."""
        if self._packed is None:
            object.__setattr__(self, "_packed", pack(self.items))
        return self._packed


def _chunk(items: Iterable[tuple[Millis, int]]) -> DeltaChunk | None:
    kept = tuple(items)
    if not kept:
        return None
    times = [at for at, _ in kept]
    return DeltaChunk(min(times), max(times), sum(q for _, q in kept), kept)


@fast_init
@dataclass(frozen=True, slots=True)
class DeltaLog:
    """On-hand deltas after the latest count and not yet settled."""

    __reduce__ = positional_reduce

    sealed: tuple[DeltaChunk, ...] = ()
    open: tuple[tuple[Millis, int], ...] = ()

    def __len__(self) -> int:
        return sum(len(c.items) for c in self.sealed) + len(self.open)

    def total(self) -> int:
        """Sum of the deltas."""
        return sum(c.total for c in self.sealed) + sum(q for _, q in self.open)


class DeltaLogDraft:
    """A working copy of `DeltaLog` for one batch.

    The open deltas are the log's own tuple (`shared`, never written) followed by what this
    batch added (`added`): a batch that only appends copies nothing of the log's, and
    `freeze` joins the two once (a batch that adds nothing gives the log itself back).
    Copying the open deltas into a list and back into a tuple each batch was ~3% of a
    plain fold's samples (docs/scaling.md, "Twelfth pass").
    """

    __slots__ = ("added", "log", "sealed", "shared")

    def __init__(self, log: DeltaLog) -> None:
        self.log = log
        self.sealed = log.sealed
        self.shared = log.open
        self.added: list[tuple[Millis, int]] = []

    @property
    def open(self) -> tuple[tuple[Millis, int], ...]:
        """The open deltas, oldest added first."""
        return (*self.shared, *self.added) if self.added else self.shared

    def add(self, at: Millis, qty: int) -> None:
        added = self.added
        added.append((at, qty))
        if len(self.shared) + len(added) >= CHUNK:
            chunk = _chunk((*self.shared, *added))
            assert chunk is not None
            self.sealed = (*self.sealed, chunk)
            self.shared, self.added = (), []

    def drop_through(self, at: Millis) -> int:
        """Forget every delta dated at or before `at` (a count absorbed them); the sum left."""
        total = 0
        if self.sealed:
            kept: list[DeltaChunk] = []
            for c in self.sealed:
                if c.oldest > at:
                    kept.append(c)
                elif c.newest > at:
                    part = _chunk(item for item in c.items if item[0] > at)
                    if part is not None:
                        kept.append(part)
            self.sealed = tuple(kept)
            total = sum([c.total for c in kept])
        items = self.open
        if items:
            items = tuple([item for item in items if item[0] > at])
            total += sum([q for _, q in items])
        self.shared, self.added = items, []
        return total

    def settle_before(self, horizon: Millis) -> int:
        """Drop whole chunks (and open deltas) older than `horizon`; returns their sum."""
        settled = sum(c.total for c in self.sealed if c.newest < horizon)
        self.sealed = tuple(c for c in self.sealed if c.newest >= horizon)
        items = self.open
        settled += sum(q for at, q in items if at < horizon)
        self.shared, self.added = tuple([item for item in items if item[0] >= horizon]), []
        return settled

    def forget_at(self) -> Millis:
        """The earliest horizon past which something here could be settled."""
        return min(min((c.newest for c in self.sealed), default=NEVER), min((a for a, _ in self.open), default=NEVER))

    def freeze(self) -> DeltaLog:
        log = self.log
        if self.sealed is log.sealed and self.shared is log.open and not self.added:
            return log  # unchanged: positions share their values
        return DeltaLog(self.sealed, (*self.shared, *self.added) if self.added else self.shared)
