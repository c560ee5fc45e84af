"""`position_state` with chunk references (`ChunkRefs`) and `resolved`: the pieces of checkpoint format 4."""

from __future__ import annotations

import pytest

from ledger.effects import split
from ledger.events import EventType, InventoryEvent
from ledger.memory import chunk_serial
from ledger.position_state import (
    BASE_REFS,
    ChunkRefs,
    delta_chunk_of,
    id_chunk_of,
    position_from_state,
    position_state,
    resolved,
)
from ledger.shard import Shard, position_key
from tests.unit.ledger.test_fold_properties import WIDE


def busy_position(events: int = 300):
    shard = Shard()
    for n in range(events):
        event = InventoryEvent(f"e{n}", EventType.RECEIVED if n % 2 else EventType.SOLD, 1_000 + n, "ST-1", "A", 1)
        for effect in split(event):
            shard.fold(position_key("ST-1", "A"), [(1_000 + n, effect)], WIDE)
    (p,) = shard.positions().values()
    return p


def test_a_state_with_references_resolved_from_the_tables_gives_the_position_back():
    p = busy_position()
    assert len(p.seen.sealed) == 4
    assert len(p.deltas.sealed) == 4
    refs = ChunkRefs({}, 7)
    state = position_state(p, refs)
    assert all(type(ref) is int for ref in (*state[7], *state[13]))
    assert len(refs.ids) == 4
    assert len(refs.deltas) == 4
    assert [ref >> 32 for ref in (*state[7], *state[13])] == [7] * 8
    ids = {row[0]: id_chunk_of(row) for row in refs.ids}
    deltas = {row[0]: delta_chunk_of(row) for row in refs.deltas}
    assert position_from_state(resolved(state, ids, deltas)) == p
    assert position_from_state(position_state(p)) == p  # inline, as every format before


def test_known_chunks_are_referred_to_without_a_table_row_and_a_base_writes_them_under_their_reference():
    p = busy_position()
    first = ChunkRefs({}, 1)
    state = position_state(p, first)
    known = first.written
    assert set(known) == {chunk_serial(c) for c in (*p.seen.sealed, *p.deltas.sealed)}
    later = ChunkRefs(known, 2)
    assert position_state(p, later) == state
    assert (later.ids, later.deltas, later.written) == ([], [], {})
    base = ChunkRefs(known, 3, whole=True, first=BASE_REFS)
    assert position_state(p, base) == state
    assert [row[0] for row in base.ids] == list(state[13])
    assert base.written == known


def test_a_reference_missing_from_the_tables_is_a_key_error_naming_it():
    p = busy_position()
    refs = ChunkRefs({}, 1)
    state = position_state(p, refs)
    with pytest.raises(KeyError) as missing:
        resolved(state, {}, {row[0]: delta_chunk_of(row) for row in refs.deltas})
    assert missing.value.args[0] == state[13][0]
