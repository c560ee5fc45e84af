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
from ledger.events import EventType, InventoryEvent
from ledger.position import Count, Hold, Position

pytestmark = pytest.mark.unit


def _plain(cls: type) -> type:
    """The same fields as `cls`, with the dataclass's own generated `__init__`."""
    spec = [
        (f.name, object, field(default=f.default, default_factory=f.default_factory)) for f in dataclasses.fields(cls)
    ]
    return dataclasses.make_dataclass(f"Plain{cls.__name__}", spec, frozen=True, slots=True)


@pytest.mark.parametrize("cls", [InventoryEvent, Position, Count, Hold])
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
