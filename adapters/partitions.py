"""Wrappers around Bytewax sources and sinks: reads and writes as one item each, and a process's first error kept.

`batched(source)` hands the flow each read of a source as one tuple item, not one item
per message. Every item that crosses a Bytewax step costs a call from Rust into Python,
whatever the work it carries. A Kafka poll returns up to 4,000 messages
(`adapters.kafka_io.READ_SIZE`); passing them on as one tuple lets the next step decode,
validate and group them in one call, so the per-message cost is the decoding itself.

`each(sink)` is the other end: the flow hands it `(key, items)` pairs, one per fold call
of a shard, and the wrapped sink's `write_batch` gets every item of every pair, as if
each had crossed the steps on its own. A partitioned sink routes a pair by its key (a
shard's), so every item of one key still goes through one partition, in order.

`guarded(source_or_sink, errors)` remembers, in a `FirstError`, the first exception any
of its calls raised. In a cluster Bytewax loses a step's exception: the failing process
shuts down, its peers' connections break, and every process reports only "Send thread
panic". What our sources and sinks raise (a file that cannot be read, a refused Kafka
login, a store that cannot be written) is then still known where it happened.

Either way resume state, wake-ups and the end of input are the wrapped partition's,
untouched: the recovery state of a wrapped source is the same as the plain one's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from bytewax.inputs import (
    DynamicSource,
    FixedPartitionedSource,
    Source,
    StatefulSourcePartition,
    StatelessSourcePartition,
)
from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    Sink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)

__all__ = ["FirstError", "batched", "each", "guarded"]

_R = TypeVar("_R")


class _Calls:
    """How a wrapper calls what it wraps: straight through (this class), or keeping the first error."""

    def call(self, method: Callable[..., _R], *args: Any) -> _R:
        return method(*args)


_STRAIGHT = _Calls()


class FirstError(_Calls):
    """The first exception a guarded source or sink of this process raised (`error`, None until then)."""

    def __init__(self) -> None:
        self.error: Exception | None = None
        self._lock = threading.Lock()

    def call(self, method: Callable[..., _R], *args: Any) -> _R:
        try:
            return method(*args)
        except StopIteration:  # a source's normal end of input
            raise
        except Exception as exc:
            with self._lock:
                if self.error is None:
                    self.error = exc
            raise


class _SourcePart(StatelessSourcePartition[Any]):
    """A source partition's calls made through `calls`; with `batch`, each read as one tuple item."""

    def __init__(self, inner: Any, calls: _Calls, batch: bool) -> None:
        self._inner, self._calls, self._batch = inner, calls, batch

    def next_batch(self) -> list[Any]:
        items: list[Any] = self._calls.call(self._inner.next_batch)
        if not self._batch:
            return items
        return [tuple(items)] if items else []

    def next_awake(self) -> datetime | None:
        awake: datetime | None = self._calls.call(self._inner.next_awake)
        return awake

    def close(self) -> None:
        self._calls.call(self._inner.close)


class _StatefulSourcePart(_SourcePart, StatefulSourcePartition[Any, Any]):
    def snapshot(self) -> Any:
        return self._calls.call(self._inner.snapshot)


class _FixedSource(FixedPartitionedSource[Any, Any]):
    def __init__(self, inner: FixedPartitionedSource[Any, Any], calls: _Calls, batch: bool) -> None:
        self._inner, self._calls, self._batch = inner, calls, batch

    def list_parts(self) -> list[str]:
        return self._calls.call(self._inner.list_parts)

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _StatefulSourcePart:
        part = self._calls.call(self._inner.build_part, step_id, for_part, resume_state)
        return _StatefulSourcePart(part, self._calls, self._batch)


class _DynamicSource(DynamicSource[Any]):
    def __init__(self, inner: DynamicSource[Any], calls: _Calls, batch: bool) -> None:
        self._inner, self._calls, self._batch = inner, calls, batch

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SourcePart:
        part = self._calls.call(self._inner.build, step_id, worker_index, worker_count)
        return _SourcePart(part, self._calls, self._batch)


class _SinkPart(StatelessSinkPartition[Any]):
    """A sink partition's calls made through `calls`; with `flatten`, each value a sequence of items to write."""

    def __init__(self, inner: Any, calls: _Calls, flatten: bool = False) -> None:
        self._inner, self._calls, self._flatten = inner, calls, flatten

    def write_batch(self, items: list[Any]) -> None:
        if self._flatten:
            items = [item for batch in items for item in batch]
            if not items:
                return
        self._calls.call(self._inner.write_batch, items)

    def close(self) -> None:
        self._calls.call(self._inner.close)


class _StatefulSinkPart(_SinkPart, StatefulSinkPartition[Any, Any]):
    def snapshot(self) -> Any:
        return self._calls.call(self._inner.snapshot)


class _FixedSink(FixedPartitionedSink[Any, Any]):
    def __init__(self, inner: FixedPartitionedSink[Any, Any], calls: _Calls, flatten: bool = False) -> None:
        self._inner, self._calls, self._flatten = inner, calls, flatten

    def list_parts(self) -> list[str]:
        return self._calls.call(self._inner.list_parts)

    def part_fn(self, item_key: str) -> int:
        return self._inner.part_fn(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _StatefulSinkPart:
        part = self._calls.call(self._inner.build_part, step_id, for_part, resume_state)
        return _StatefulSinkPart(part, self._calls, self._flatten)


class _DynamicSink(DynamicSink[Any]):
    def __init__(self, inner: DynamicSink[Any], calls: _Calls) -> None:
        self._inner, self._calls = inner, calls

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SinkPart:
        part = self._calls.call(self._inner.build, step_id, worker_index, worker_count)
        return _SinkPart(part, self._calls)


def batched(source: Source[Any]) -> Source[tuple[Any, ...]]:
    """`source`, each read delivered as one tuple item."""
    if isinstance(source, FixedPartitionedSource):
        return _FixedSource(source, _STRAIGHT, batch=True)
    if isinstance(source, DynamicSource):
        return _DynamicSource(source, _STRAIGHT, batch=True)
    msg = f"cannot batch a {type(source).__name__}: expected a FixedPartitionedSource or a DynamicSource"
    raise TypeError(msg)


def each(sink: FixedPartitionedSink[Any, Any]) -> FixedPartitionedSink[Any, Any]:
    """`sink`, fed `(key, items)` pairs: it writes every item of each pair, routed by the pair's key.

    Partitioned sinks only: their `write_batch` gets values without keys, so the items of
    a pair need no key of their own (a dynamic sink's items carry theirs).
    """
    return _FixedSink(sink, _STRAIGHT, flatten=True)


def guarded(source_or_sink: Source[Any] | Sink[Any], errors: FirstError) -> Source[Any] | Sink[Any]:
    """`source_or_sink`, keeping in `errors` the first exception any of its calls (or its partitions') raised."""
    if isinstance(source_or_sink, FixedPartitionedSource):
        return _FixedSource(source_or_sink, errors, batch=False)
    if isinstance(source_or_sink, DynamicSource):
        return _DynamicSource(source_or_sink, errors, batch=False)
    if isinstance(source_or_sink, FixedPartitionedSink):
        return _FixedSink(source_or_sink, errors)
    if isinstance(source_or_sink, DynamicSink):
        return _DynamicSink(source_or_sink, errors)
    msg = f"cannot guard a {type(source_or_sink).__name__}: expected a partitioned or dynamic source or sink"
    raise TypeError(msg)
