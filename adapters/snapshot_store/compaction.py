"""When the snapshot writer should compact the store: when the publishes have lost as much time as a compaction costs.

Every publish adds data files and, since positions are updated in place, a delete file
on each file it touches; the next MERGE reads them all. Measured at 10,000,000
positions with 100,000 changes a publish: 0.8 s right after a compaction, then about
65 ms more with each publish (3.3 s after 40), while a compaction (rewriting the files
with deletes, merging the small ones) took 3.6 s. Compacting only on a timer (every 10
minutes) would let a publish a second grow to tens of seconds.

The rule is the ski-rental one: keep paying the growing publishes until what they cost
above the cheapest publish since the last compaction adds up to what the last compaction
cost, then compact. With costs growing linearly (g a publish) and compactions costing M,
that compacts every sqrt(2M/g) publishes, the interval that minimises the average cost,
without knowing g or M in advance: 10-11 publishes at 10,000,000 positions. A floor of 2 s
keeps cheap compactions of small stores from running every few publishes on noise alone
(1,000 changes into 1,000,000: 0.4 s to compact, 0.76 ms of growth a publish, so every
~70 publishes instead of ~30).
"""

from __future__ import annotations

__all__ = ["CompactionPolicy"]


class CompactionPolicy:
    """Tracks publish and compaction durations; `due()` says when compacting pays."""

    def __init__(self, first_compaction_guess: float = 1.0, floor: float = 2.0) -> None:
        """`first_compaction_guess`: seconds a compaction is assumed to cost until one is measured.

        `floor`: seconds the publishes must have lost at least, however cheap a compaction:
        small publishes vary by a few ms from noise alone, and a cheap compaction after
        every few of them would fill the catalog with maintenance snapshots.
        """
        self._compaction_cost = first_compaction_guess
        self._floor = floor
        self._cheapest: float | None = None
        self._lost = 0.0
        self._publishes = 0

    @property
    def lost(self) -> float:
        """Seconds the publishes since the last compaction took above the cheapest of them."""
        return self._lost

    def published(self, seconds: float) -> None:
        """One publish took `seconds`."""
        self._publishes += 1
        if self._cheapest is None or seconds < self._cheapest:
            self._cheapest = seconds
        self._lost += seconds - self._cheapest

    def due(self) -> bool:
        """Whether the publishes have lost at least what the last compaction cost."""
        return self._publishes > 1 and self._lost >= max(self._compaction_cost, self._floor)

    def compacted(self, seconds: float) -> None:
        """A compaction (or a full maintenance) just ran and took `seconds`."""
        self._compaction_cost = seconds
        self._cheapest = None
        self._lost = 0.0
        self._publishes = 0
