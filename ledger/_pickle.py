"""Fast pickling for the slotted dataclasses the runtime snapshots every epoch.

A slotted dataclass pickles through `dataclasses.fields()` on every object, which
dominated recovery snapshots in a profile; a positional `__reduce__` avoids it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["positional_reduce"]


def positional_reduce(self: Any) -> tuple[Any, tuple[Any, ...]]:
    """`__reduce__` for a slotted dataclass whose `__init__` takes every field positionally."""
    return type(self), tuple([getattr(self, name) for name in self.__slots__])
