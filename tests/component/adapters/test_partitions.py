"""The Bytewax wrappers: a read as one item, pairs of items written each, the first error kept (partitions.py)."""

from __future__ import annotations

from collections.abc import Iterator

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, FixedPartitionedSink, StatefulSinkPartition, StatelessSinkPartition
from bytewax.testing import TestingSink, TestingSource, run_main

from adapters.partitions import FirstError, batched, each, guarded

pytestmark = pytest.mark.component


def test_a_batched_source_hands_each_read_on_as_one_tuple_and_resumes_like_the_plain_one():
    part = batched(TestingSource([1, 2, 3, 4, 5], batch_size=2)).build_part("input", "iterable", None)

    assert part.next_batch() == [(1, 2)]
    assert part.snapshot() == 2
    assert part.next_batch() == [(3, 4)]
    assert part.next_batch() == [(5,)]
    with pytest.raises(StopIteration):
        part.next_batch()

    resumed = batched(TestingSource([1, 2, 3, 4, 5], batch_size=2)).build_part("input", "iterable", 4)
    assert resumed.next_batch() == [(5,)]


def test_a_guarded_source_keeps_the_first_error_and_passes_it_on_but_not_the_end_of_input():
    def lines() -> Iterator[int]:
        yield 1
        raise OSError("disk gone")

    errors = FirstError()
    part = guarded(TestingSource(lines()), errors).build_part("input", "iterable", None)
    assert part.next_batch() == [1]
    with pytest.raises(OSError, match="disk gone"):
        part.next_batch()
    assert isinstance(errors.error, OSError)

    ended = FirstError()
    done = guarded(TestingSource([]), ended).build_part("input", "iterable", None)
    with pytest.raises(StopIteration):
        done.next_batch()
    assert ended.error is None


class _RefusingSink(DynamicSink[int]):
    class _Part(StatelessSinkPartition[int]):
        def write_batch(self, items: list[int]) -> None:
            msg = f"store refused {items}"
            raise PermissionError(msg)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSinkPartition[int]:
        return self._Part()


def test_a_guarded_sink_keeps_the_first_error_of_any_of_its_partitions():
    errors = FirstError()
    written: list[int] = []
    fine = guarded(TestingSink(written), errors).build("out", 0, 1)
    fine.write_batch([1, 2])
    assert written == [1, 2]
    assert errors.error is None

    refusing = guarded(_RefusingSink(), errors).build("out", 0, 1)
    with pytest.raises(PermissionError):
        refusing.write_batch([3])
    with pytest.raises(PermissionError):
        refusing.write_batch([4])
    assert str(errors.error) == "store refused [3]"


def test_only_sources_and_sinks_can_be_wrapped():
    with pytest.raises(TypeError, match="cannot batch a list"):
        batched([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot guard a list"):
        guarded([1, 2], FirstError())  # type: ignore[arg-type]


class _RecordingSink(FixedPartitionedSink[str, None]):
    """Two partitions that keep what each was asked to write; keys route by their first letter."""

    def __init__(self) -> None:
        self.written: dict[str, list[str]] = {"a": [], "b": []}

    def list_parts(self) -> list[str]:
        return ["a", "b"]

    def part_fn(self, item_key: str) -> int:
        return 0 if item_key.startswith("a") else 1

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> StatefulSinkPartition[str, None]:
        written = self.written[for_part]

        class _Part(StatefulSinkPartition[str, None]):
            def write_batch(self, values: list[str]) -> None:
                written.append(values)  # type: ignore[arg-type]

            def snapshot(self) -> None:
                return None

        return _Part()


def test_each_writes_every_item_of_every_pair_routed_by_the_pairs_key():
    inner = _RecordingSink()
    sink = each(inner)
    assert sink.list_parts() == ["a", "b"]
    assert (sink.part_fn("a-shard"), sink.part_fn("b-shard")) == (0, 1)

    part = sink.build_part("out", "a", None)
    part.write_batch([("x", "y"), (), ("z",)])
    part.write_batch([(), ()])  # nothing to write: the inner partition is not called
    assert inner.written["a"] == [["x", "y", "z"]]
    assert part.snapshot() is None


def test_each_through_a_dataflow_writes_the_items_in_order_per_key():
    inner = _RecordingSink()
    flow = Dataflow("each")
    pairs = op.input("in", flow, TestingSource([("a1", ("1", "2")), ("b1", ("3",)), ("a2", ("4", "5"))]))
    op.output("out", pairs, each(inner))
    run_main(flow)
    assert [item for batch in inner.written["a"] for item in batch] == ["1", "2", "4", "5"]
    assert [item for batch in inner.written["b"] for item in batch] == ["3"]
