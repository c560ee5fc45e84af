"""Hands a source's reads to the flow as one item per read, not one item per message.

Every item that crosses a Bytewax step costs a call from Rust into Python, whatever the
work it carries. A Kafka poll returns up to a thousand messages; passing them on as one
tuple lets the next step decode, validate and group them in one call, so the
per-message cost is the decoding itself. Resume state, wake-ups and the end of input
are the wrapped partition's, untouched: recovery state of a batched source is the same
as the plain one's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from bytewax.inputs import (
    DynamicSource,
    FixedPartitionedSource,
    Source,
    StatefulSourcePartition,
    StatelessSourcePartition,
)

__all__ = ["batched"]

X = TypeVar("X")
S = TypeVar("S")


class _StatefulBatches(StatefulSourcePartition[tuple[X, ...], S], Generic[X, S]):
    def __init__(self, inner: StatefulSourcePartition[X, S]) -> None:
        self._inner = inner

    def next_batch(self) -> list[tuple[X, ...]]:
        items = self._inner.next_batch()
        return [tuple(items)] if items else []

    def next_awake(self) -> datetime | None:
        return self._inner.next_awake()

    def snapshot(self) -> S:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class _StatelessBatches(StatelessSourcePartition[tuple[X, ...]], Generic[X]):
    def __init__(self, inner: StatelessSourcePartition[X]) -> None:
        self._inner = inner

    def next_batch(self) -> list[tuple[X, ...]]:
        items = self._inner.next_batch()
        return [tuple(items)] if items else []

    def next_awake(self) -> datetime | None:
        return self._inner.next_awake()

    def close(self) -> None:
        self._inner.close()


class _FixedBatches(FixedPartitionedSource[tuple[X, ...], S], Generic[X, S]):
    def __init__(self, inner: FixedPartitionedSource[X, S]) -> None:
        self._inner = inner

    def list_parts(self) -> list[str]:
        return self._inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: S | None) -> _StatefulBatches[X, S]:
        return _StatefulBatches(self._inner.build_part(step_id, for_part, resume_state))


class _DynamicBatches(DynamicSource[tuple[X, ...]], Generic[X]):
    def __init__(self, inner: DynamicSource[X]) -> None:
        self._inner = inner

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StatelessBatches[X]:
        return _StatelessBatches(self._inner.build(step_id, worker_index, worker_count))


def batched(source: Source[Any]) -> Source[tuple[Any, ...]]:
    """`source`, each read delivered as one tuple item."""
    if isinstance(source, FixedPartitionedSource):
        return _FixedBatches(source)
    if isinstance(source, DynamicSource):
        return _DynamicBatches(source)
    msg = f"cannot batch a {type(source).__name__}: expected a FixedPartitionedSource or a DynamicSource"
    raise TypeError(msg)
