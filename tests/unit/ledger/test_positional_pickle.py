from __future__ import annotations

import pickle
from dataclasses import dataclass

from ledger._pickle import positional_reduce


@dataclass(frozen=True, slots=True)
class _One:
    __reduce__ = positional_reduce

    only: str


@dataclass(frozen=True, slots=True)
class _Three:
    __reduce__ = positional_reduce

    a: int
    b: _One
    c: tuple[int, ...] = ()


def test_a_slotted_dataclass_of_one_field_or_several_pickles_to_an_equal_value() -> None:
    for value in (_One("x"), _Three(1, _One("y"), (2, 3)), [_Three(4, _One("z")), _One("w")]):
        assert pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)) == value
    # Each field is passed positionally, in the order of the class's fields.
    assert positional_reduce(_Three(1, _One("y"))) == (_Three, (1, _One("y"), ()))
    assert positional_reduce(_One("x")) == (_One, ("x",))
