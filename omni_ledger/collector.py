"""How a long-running process of ours (the flow, the HTTP server) sets CPython's cyclic garbage collector.

The flow makes tens of container objects an event (events, effects, positions, changes,
tuples), nearly all freed by reference counting: the fold and admission make no
reference cycles (`tests/component/omni_ledger/test_collector.py` checks it), so the cyclic
collector finds next to nothing to free. With CPython's default thresholds (a young
collection every 700 net allocations, a full one every 100 young ones when the old
generation grew by a quarter) it still ran about 1,300 times in a 100,000-event run and
traversed every long-lived object ten times (the imported modules, the positions a shard
keeps as objects, the snapshot batch's buffered changes): 2.6 s of the flow's 13.7 s of
CPU, 19%, with the GIL held, and each full collection a ~120 ms stall (measured with
`gc.callbacks`, docs/scaling.md "Fifth pass").

The server is the same story at a smaller scale: a promise makes a few thousand
containers (rows, options, the answer's JSON pieces) and keeps none, while the process
holds the network, the read model's side tables and the promise's kept ways for good.
Under `make bench-serve`'s promise load, 7% of the request thread's samples were inside
the collector (py-spy, docs/serving.md "Sixteenth pass").

`tune_collector` keeps the collector on (a cycle some library makes is still freed) but
runs it less often, and moves what exists at start-up (modules, schemas, the policy, the
network) out of its reach with `gc.freeze`: those objects live as long as the process anyway.
"""

from __future__ import annotations

import gc

__all__ = ["THRESHOLDS", "tune_collector"]

THRESHOLDS = (50_000, 20, 10)
"""A young collection every 50,000 net container allocations (~2,500 events of the flow), a middle one
every 20 young ones, a full one every 10 middle ones (when the old generation also grew by
a quarter, CPython's own rule). At most 50,000 young objects wait for their collection;
as the flow makes no cycles, none of them is garbage the collector alone could free."""


def tune_collector(thresholds: tuple[int, int, int] = THRESHOLDS) -> None:
    """Freeze what exists now (start-up's objects) and collect less often: for the flow's process and the server's."""
    # No `gc.collect()` first: a full collection of start-up's objects would add to every
    # start, and what garbage the imports left is a few cycles, kept for good by the freeze.
    gc.freeze()
    gc.set_threshold(*thresholds)
