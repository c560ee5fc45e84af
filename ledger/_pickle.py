"""Fast pickling for the slotted dataclasses the runtime snapshots every epoch.

A slotted dataclass pickles through `dataclasses.fields()` on every object, which
dominated recovery snapshots in a profile; a positional `__reduce__` avoids it. Its
fields are read by one `operator.attrgetter` a class (C), not a list comprehension of
`getattr`s: the snapshot sink's pending jobs (tens of thousands of position changes at an
epoch close, on the worker thread) pickle 1.4-1.5x faster so (docs/scaling.md,
"Seventeenth pass").
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

__all__ = ["positional_reduce"]

_FIELDS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}
"""A class -> what reads its fields, in `__slots__` order, as a tuple."""


def positional_reduce(self: Any) -> tuple[Any, tuple[Any, ...]]:
    """`__reduce__` for a slotted dataclass whose `__init__` takes every field positionally."""
    cls = type(self)
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = _reader(self.__slots__)
    return cls, fields(self)


def _reader(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    if len(names) == 1:
        # attrgetter of one name returns the value itself, not a 1-tuple.
        name = names[0]
        return lambda obj: (getattr(obj, name),)
    if not names:
        return lambda obj: ()
    return attrgetter(*names)
