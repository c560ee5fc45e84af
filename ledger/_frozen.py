"""Cheaper construction of the frozen slotted dataclasses built once per event or per position fold.

`fast_init` gives such a class a faster `__init__`; `built` makes a constructor cheaper still
for the few the fold's plain path makes per event (a `Position`, its `PositionChange`, an
`InventoryEvent` read in bulk, an `Effect`).

A frozen dataclass's generated `__init__` sets each field with `object.__setattr__(self,
name, value)`, which looks the name up on the type every time: for the 15 fields of an
`InventoryEvent` that was 4.1 us of CPU an event, more than validating it. Calling each
slot's own descriptor (`Class.field.__set__`, looked up once here) does the same writes
and costs about half. The class stays frozen: assigning a field afterwards still raises
`FrozenInstanceError`, and its signature (names, order, defaults, default factories),
equality, hashing, `replace` and pickling are the dataclass's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["built", "fast_init"]

_C = TypeVar("_C", bound=type)
_T = TypeVar("_T")


class _Factory:
    """The default of a field with a `default_factory`: the factory runs when it is left out."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def fast_init(cls: _C) -> _C:
    """Give the frozen slotted dataclass `cls` an `__init__` that writes its slots through their descriptors."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        msg = f"fast_init expects a frozen dataclass with slots, got {cls.__name__}"
        raise TypeError(msg)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    if any(f.kw_only for f in fields) or hasattr(cls, "__post_init__"):
        msg = f"fast_init does not handle keyword-only fields or __post_init__ ({cls.__name__})"
        raise TypeError(msg)
    scope: dict[str, Any] = {"_FACTORY": _FACTORY}
    params_src: list[str] = []
    body: list[str] = []
    for i, f in enumerate(fields):
        name = f.name
        scope[f"_set{i}"] = getattr(cls, name).__set__
        if f.default is not dataclasses.MISSING:
            scope[f"_default{i}"] = f.default
            params_src.append(f"{name}=_default{i}")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"_make{i}"] = f.default_factory
            params_src.append(f"{name}=_FACTORY")
            body.append(f"    if {name} is _FACTORY: {name} = _make{i}()")
        else:
            params_src.append(name)
        body.append(f"    _set{i}(self, {name})")
    # Fields left out of __init__ (init=False) take their defaults as the dataclass's __init__ gives them.
    for i, f in enumerate(dataclasses.fields(cls)):
        if f.init:
            continue
        scope[f"_set_x{i}"] = getattr(cls, f.name).__set__
        if f.default is not dataclasses.MISSING:
            scope[f"_xdefault{i}"] = f.default
            body.append(f"    _set_x{i}(self, _xdefault{i})")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"_xmake{i}"] = f.default_factory
            body.append(f"    _set_x{i}(self, _xmake{i}())")
    source = f"def __init__(self, {', '.join(params_src)}):\n" + "\n".join(body or ["    pass"]) + "\n"
    exec(source, scope)  # the source is built above from the class's own field names
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[misc]
    return cls


def built(cls: type[_T]) -> Callable[..., _T]:
    """A constructor of the frozen slotted dataclass `cls` from all its fields, in order, 3x cheaper than `cls(...)`.

    `cls(...)` writes each field through its slot's descriptor (`fast_init`): a
    C call each, 2.4-2.8 us for a `Position`'s 22 fields, the largest single cost of a plain
    fold. Here the fields are written by an instance of a mutable twin with the same slots
    (plain attribute stores), whose class is then set to `cls`: 0.7-0.9 us. What comes out is
    a `cls` in every way (type, layout, equality, hashing, pickling, frozen from then on);
    `tests/unit/ledger/test_memory_sharing.py` holds it to `cls(...)`. For `cls`es whose
    `__init__` takes every slot in order and runs nothing else (no defaults are applied here).
    """
    declared = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = tuple(f.name for f in declared)
    if names != getattr(cls, "__slots__", None) or not all(f.init for f in declared) or hasattr(cls, "__post_init__"):
        msg = f"built() needs a dataclass whose slots are its init fields in order, got {cls.__name__}"
        raise TypeError(msg)
    source = (
        "class Twin:\n"
        f"    __slots__ = {names!r}\n"
        f"    def __init__(self, {', '.join(names)}):\n"
        + "".join(f"        self.{name} = {name}\n" for name in names)
        + "        self.__class__ = cls\n"
    )
    scope: dict[str, Any] = {"cls": cls}
    exec(source, scope)  # the source is built above from the class's own field names
    twin: Callable[..., _T] = scope["Twin"]
    return twin
