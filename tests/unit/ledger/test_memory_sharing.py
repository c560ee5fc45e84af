"""A batch's working copies share what they do not change, and what they build equals the plain constructors'.

`DeltaLogDraft` keeps the log's open deltas as its own tuple plus what the batch added;
`EventIdsDraft` works on a copy of the open ids; `built` makes a frozen dataclass from a
mutable twin. Each is held here to the plain version it replaces: a list of every open
delta, the ids as a set, the class's own constructor.
"""

from __future__ import annotations

import dataclasses
import pickle
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import memory
from ledger._frozen import built
from ledger.memory import DeltaChunk, DeltaLog, DeltaLogDraft, EventIds, EventIdsDraft, IdChunk
from ledger.outputs import FoldTally, InboundLine, OfferTerms, PositionChange
from ledger.position import Count, Hold, Position, new_change, new_position

pytestmark = pytest.mark.unit

times = st.integers(0, 40)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), times, st.integers(-3, 3)),
        st.tuples(st.just("drop_through"), times),
        st.tuples(st.just("settle_before"), times),
        st.tuples(st.just("freeze")),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(steps=steps, chunk=st.sampled_from([2, 3, 5, 64]))
def test_a_delta_draft_gives_what_a_list_of_every_open_delta_gives_and_never_changes_the_log_it_came_from(steps, chunk):
    with patch.object(memory, "CHUNK", chunk):
        log = DeltaLog()
        model: list[tuple[int, int]] = []  # every delta the log holds, oldest added first
        draft = DeltaLogDraft(log)
        for step in steps:
            if step[0] == "add":
                draft.add(step[1], step[2])
                model.append((step[1], step[2]))
            elif step[0] == "drop_through":
                model = [item for item in model if item[0] > step[1]]
                assert draft.drop_through(step[1]) == sum(q for _, q in model)
            elif step[0] == "settle_before":
                # Whole sealed chunks older than the horizon and open deltas older than it settle.
                settled = sum(c.total for c in draft.sealed if c.newest < step[1])
                settled += sum(q for at, q in draft.open if at < step[1])
                kept = [item for c in draft.sealed if c.newest >= step[1] for item in c.items]
                kept += [item for item in draft.open if item[0] >= step[1]]
                assert draft.settle_before(step[1]) == settled
                model = kept
            else:
                frozen_before = (log.sealed, log.open)
                new = draft.freeze()
                assert (log.sealed, log.open) == frozen_before  # the old log is a value: untouched
                assert [item for c in new.sealed for item in c.items] + list(new.open) == model
                assert new.total() == sum(q for _, q in model)
                assert len(new.open) < chunk
                for c in new.sealed:
                    assert (c.oldest, c.newest, c.total) == (
                        min(at for at, _ in c.items),
                        max(at for at, _ in c.items),
                        sum(q for _, q in c.items),
                    )
                log, draft = new, DeltaLogDraft(new)
            assert [item for c in draft.sealed for item in c.items] + list(draft.open) == model


def test_a_delta_draft_that_adds_nothing_gives_back_the_log_itself():
    log = DeltaLog((), ((1, 2), (3, -1)))
    assert DeltaLogDraft(log).freeze() is log
    draft = DeltaLogDraft(log)
    draft.add(4, 1)
    assert draft.freeze() == DeltaLog((), ((1, 2), (3, -1), (4, 1)))
    assert log.open == ((1, 2), (3, -1))


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.text("abc", min_size=1, max_size=3), max_size=30), chunk=st.sampled_from([2, 3, 64]))
def test_an_id_draft_remembers_every_id_added_and_leaves_the_ids_it_came_from_unchanged(ids, chunk):
    with patch.object(memory, "CHUNK", chunk):
        old = EventIds((IdChunk(0, frozenset({"sealed"})),), {"open": 1})
        draft = EventIdsDraft(old)
        for at, event_id in enumerate(ids):
            if event_id not in draft:  # as the fold does: an id seen is a duplicate, not added again
                draft.add(event_id, at)
        new = draft.freeze()
    assert old == EventIds((IdChunk(0, frozenset({"sealed"})),), {"open": 1})
    assert all(event_id in new for event_id in [*ids, "sealed", "open"])
    assert len(new) == len({*ids, "sealed", "open"})
    assert "zzz" not in new


positions = st.builds(
    Position,
    site_id=st.sampled_from(["ST-1", "DC-2"]),
    sku=st.sampled_from(["A", "B"]),
    safety_stock=st.integers(0, 3),
    on_hand=st.integers(-5, 50),
    count=st.none() | st.builds(Count, st.integers(0, 99), st.integers(0, 9), st.text("xy", max_size=3)),
    settled=st.integers(-5, 5),
    deltas=st.builds(DeltaLog, st.just(()), st.lists(st.tuples(times, st.integers(-3, 3)), max_size=3).map(tuple)),
    holds=st.dictionaries(st.text("r", min_size=1, max_size=3), st.builds(Hold, st.integers(1, 3), times, times)),
    inbound=st.dictionaries(st.text("ij", min_size=1, max_size=2), st.tuples(st.integers(1, 3), st.integers(0, 3))).map(
        lambda lines: {ref: InboundLine(ref, qty, eta, False) for ref, (qty, eta) in lines.items()}
    ),
    seen=st.builds(EventIds, st.just(()), st.dictionaries(st.text("e", min_size=1, max_size=3), times)),
    max_at=times,
    offer=st.none() | st.builds(OfferTerms, st.integers(0, 9), st.none(), st.none(), times),
    version=st.integers(0, 9),
    held_total=st.integers(-1, 9),
    expiry_floor_at=st.integers(-1, 99),
)


@settings(max_examples=200, deadline=None)
@given(position=positions)
def test_a_position_built_from_its_twin_is_the_position_its_constructor_builds(position):
    fields = [getattr(position, f.name) for f in dataclasses.fields(Position)]
    got = new_position(*fields)
    assert type(got) is Position
    assert got == position
    assert [getattr(got, f.name) for f in dataclasses.fields(Position)] == fields
    assert pickle.loads(pickle.dumps(got)) == position
    assert repr(got) == repr(position)
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.on_hand = 1  # type: ignore[misc]
    change = position.view()
    assert type(change) is PositionChange
    assert change == PositionChange(*[getattr(change, f.name) for f in dataclasses.fields(PositionChange)])
    assert hash(new_change(*[getattr(change, f.name) for f in dataclasses.fields(PositionChange)])) == hash(change)


def test_built_refuses_a_class_whose_slots_are_not_its_init_fields():
    for cls in (IdChunk, DeltaChunk):  # each has a cached field left out of __init__
        with pytest.raises(TypeError, match="init fields"):
            built(cls)
    assert built(FoldTally)(1, 2, 3) == FoldTally(1, 2, 3)


@settings(max_examples=300, deadline=None)
@given(position=positions)
def test_a_view_lists_inbound_lines_by_eta_then_ref_and_sums_them(position):
    lines = tuple(sorted(position.inbound.values(), key=lambda line: (line.eta, line.ref)))
    reserved = sum(h.qty for h in position.holds.values()) if position.held_total < 0 else position.held_total
    want = PositionChange(
        position.site_id,
        position.sku,
        position.on_hand,
        reserved,
        position.staged_qty,
        sum(line.qty for line in lines),
        position.safety_stock,
        max(0, position.on_hand - reserved - position.staged_qty - position.safety_stock),
        position.on_hand < 0,
        position.version,
        position.updated_at,
        position.max_at,
        lines,
        position.offer,
    )
    assert position.view() == want
