"""The replay clock's board: the end of a cluster's input, seen from every process."""

from __future__ import annotations

import pytest

from adapters.clock import ReplayClock, WallClock

pytestmark = pytest.mark.component


def test_a_process_that_read_nothing_ends_at_the_latest_reading_its_peers_shared(tmp_path):
    reader_a, reader_b, idle = (ReplayClock(board=tmp_path / "board") for _ in range(3))
    reader_a.observe(1_000)
    reader_b.observe(5_000)
    reader_a.reached_end("files")
    reader_b.reached_end("inventory.events[3]")
    assert idle.now() == -(2**62)  # it never saw an event...
    assert idle.final() == 5_000  # ...but ends where the whole input ended
    assert reader_a.final() == 5_000


def test_a_partition_that_ends_again_later_replaces_its_own_reading(tmp_path):
    clock = ReplayClock(board=tmp_path / "board")
    clock.observe(1_000)
    clock.reached_end("files")
    clock.observe(9_000)
    clock.reached_end("files")
    assert ReplayClock(board=tmp_path / "board").final() == 9_000
    assert len(list((tmp_path / "board").glob("*.json"))) == 1


def test_without_a_board_or_on_the_wall_clock_the_end_is_the_clock_itself(tmp_path):
    alone = ReplayClock()
    alone.observe(7)
    alone.reached_end("files")
    assert alone.final() == 7
    wall = WallClock()
    wall.reached_end("files")
    assert abs(wall.final() - wall.now()) < 5_000
