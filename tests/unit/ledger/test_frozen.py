"""`fast_init`: the same objects as the dataclass's own `__init__`, still frozen."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger._frozen import fast_init
from ledger.effects import Effect, EffectKind
from ledger.events import EventType, InventoryEvent
from ledger.memory import DeltaChunk, DeltaLog, EventIds, IdChunk
from ledger.outputs import DecisionStatus, FoldTally, OfferTerms, PositionChange, ReservationDecision
from ledger.position import Count, Hold, Position

pytestmark = pytest.mark.unit


def _plain(cls: type) -> type:
    """The same fields as `cls`, with the dataclass's own generated `__init__`."""
    spec = [
        (f.name, object, field(default=f.default, default_factory=f.default_factory, init=f.init, compare=f.compare))
        for f in dataclasses.fields(cls)
    ]
    return dataclasses.make_dataclass(f"Plain{cls.__name__}", spec, frozen=True, slots=True)


_FAST = [
    InventoryEvent, Position, Count, Hold, PositionChange, FoldTally, ReservationDecision, Effect,
    IdChunk, EventIds, DeltaChunk, DeltaLog,
]  # fmt: skip


@pytest.mark.parametrize("cls", _FAST)
def test_the_signature_is_the_dataclasses_own(cls):
    assert inspect.signature(cls).parameters.keys() == inspect.signature(_plain(cls)).parameters.keys()
    for name, param in inspect.signature(cls).parameters.items():
        expected = inspect.signature(_plain(cls)).parameters[name]
        assert (param.kind, param.default is param.empty) == (expected.kind, expected.default is expected.empty)


@given(on_hand=st.integers(), version=st.integers(0, 10), site=st.text(min_size=1))
def test_a_position_built_positionally_or_by_name_holds_the_same_fields(on_hand, version, site):
    by_name = Position(site_id=site, sku="K", on_hand=on_hand, version=version)
    plain = _plain(Position)(site_id=site, sku="K", on_hand=on_hand, version=version)
    assert dataclasses.astuple(by_name) == dataclasses.astuple(plain)
    fields = [getattr(by_name, f.name) for f in dataclasses.fields(Position)]
    assert Position(*fields) == by_name
    assert pickle.loads(pickle.dumps(by_name)) == by_name
    assert dataclasses.replace(by_name, on_hand=on_hand + 1).on_hand == on_hand + 1


def test_default_factories_run_for_each_object_left_without_them():
    a, b = Position("S", "K"), Position("S", "K")
    assert a == b
    assert a.holds == {}
    assert a.deltas == b.deltas


def test_the_class_stays_frozen():
    event = InventoryEvent("e-1", EventType.SOLD, 1, "S", "K", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.qty = 2  # type: ignore[misc]
    assert hash(event) == hash(InventoryEvent("e-1", EventType.SOLD, 1, "S", "K", 1))


def test_a_class_that_is_not_a_frozen_slotted_dataclass_is_refused():
    @dataclass
    class Loose:
        x: int

    with pytest.raises(TypeError, match="frozen dataclass with slots"):
        fast_init(Loose)


_offers = st.none() | st.builds(OfferTerms, st.integers(0, 99), st.none() | st.floats(0, 9), st.none(), st.integers())
_changes = st.builds(
    PositionChange,
    st.text(min_size=1), st.text(min_size=1), st.integers(), st.integers(0, 9), st.integers(0, 9), st.integers(0, 9),
    st.integers(0, 9), st.integers(0), st.booleans(), st.integers(0), st.integers(), st.integers(),
    offer=_offers,
)  # fmt: skip
_decisions = st.builds(
    ReservationDecision,
    st.text(min_size=1), st.text(min_size=1), st.text(min_size=1), st.integers(1, 9), st.sampled_from(DecisionStatus),
    st.text(), st.none() | st.integers(), st.integers(), st.integers(),
)  # fmt: skip
_tallies = st.builds(FoldTally, st.integers(0), st.integers(0), st.integers(0))
_effects = st.builds(
    Effect,
    st.sampled_from(EffectKind), st.text(min_size=1), st.text(min_size=1), st.integers(),
    st.just(InventoryEvent("e-1", EventType.SOLD, 1, "S", "K", 1)),
)  # fmt: skip

_pairs = st.lists(st.tuples(st.integers(), st.integers()), max_size=4).map(tuple)
_id_chunks = st.builds(IdChunk, st.integers(), st.frozensets(st.text(), max_size=4))
_delta_chunks = st.builds(DeltaChunk, st.integers(), st.integers(), st.integers(), _pairs)
_memories = st.one_of(
    _id_chunks,
    _delta_chunks,
    st.builds(EventIds, st.lists(_id_chunks, max_size=3).map(tuple), st.dictionaries(st.text(), st.integers())),
    st.builds(DeltaLog, st.lists(_delta_chunks, max_size=3).map(tuple), _pairs),
)


@given(st.one_of(_changes, _decisions, _tallies, _effects, _memories))
def test_fold_outputs_and_effects_hold_what_the_dataclasses_own_init_would(value):
    cls = type(value)
    fields = [f for f in dataclasses.fields(cls) if f.init]  # a chunk's cached packing is left out
    values = [getattr(value, f.name) for f in fields]
    plain = _plain(cls)(*values)
    assert dataclasses.astuple(value) == dataclasses.astuple(plain)
    assert cls(*values) == value
    assert cls(**{f.name: v for f, v in zip(fields, values, strict=True)}) == value
    try:
        expected = hash(plain)
    except TypeError:  # an open chunk of event ids is a dict: unhashable, as with the dataclass's own init
        with pytest.raises(TypeError):
            hash(cls(*values))
    else:
        assert hash(cls(*values)) == hash(value) == expected
    assert pickle.loads(pickle.dumps(value)) == value
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, dataclasses.fields(cls)[0].name, values[0])


def test_a_change_left_without_inbound_or_offer_takes_the_defaults():
    change = PositionChange("S", "K", 1, 0, 0, 0, 0, 1, False, 1, 5, 5)
    assert (change.inbound, change.offer) == ((), None)
    assert dataclasses.astuple(change) == dataclasses.astuple(
        _plain(PositionChange)("S", "K", 1, 0, 0, 0, 0, 1, False, 1, 5, 5)
    )
