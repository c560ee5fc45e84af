"""The Bytewax wrappers: a read as one item, and the first error of a process kept (adapters/partitions.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSink, TestingSource

from adapters.partitions import FirstError, batched, guarded

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
