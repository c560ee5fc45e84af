"""A simulator's whole state as one immutable value (`SimState`), and what it was taken on.

`RetailerSimulator.state()` takes it and `RetailerSimulator.resume(config, state)` goes on
from it; Bytewax pickles it at every snapshot, hence plain tuples throughout.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ledger.events import Millis
from ledger.network import Network
from simulator.config import SimConfig, site_counts

__all__ = ["SimState", "Step", "network_digest", "network_key"]


def network_key(config: SimConfig) -> tuple[int, int, int, int, int, int]:
    """(seed, dcs, stores, suppliers, sellers, skus): the network a state belongs to."""
    return (config.seed, *site_counts(config), config.skus)


def network_digest(network: Network | None) -> str:
    """What of a network file the stream depends on, hashed ('' for the generated network).

    Sites with their kinds in order (they are the position indexes), lanes and routes; not
    names, coordinates or hours. Canonical JSON, so it is the same in every process.
    """
    if network is None:
        return ""
    described = {
        "sites": [[site.id, site.kind.value] for site in network.sites],
        "lanes": [[lane.origin, lane.destination, lane.transit_minutes] for lane in network.lanes],
        "routes": [
            [r.supplier, r.store, r.lead_days, None if r.skus is None else sorted(r.skus)] for r in network.dropship
        ],
    }
    return hashlib.sha256(json.dumps(described, separators=(",", ":")).encode()).hexdigest()[:16]


Step = tuple[Millis, int, int, str, int, int, int, int, Millis]
"""A story's next step, due once the caller's clock reaches it, as a plain tuple:

    (due, seq, kind, ref, origin, sku, qty, dest, deadline)

A heap entry ordered by `due`, then `seq` (the number of the event that scheduled it; each
event schedules at most one step, so ties never reach the other fields). `origin` is the
site index where the story started (transfer origin, supplier, reserving store), `dest`
the one the units go to (the store itself for reservations), `deadline` a reservation's
`expires_at` (0 otherwise). Plain tuples, not a NamedTuple: the state pickles at every
snapshot, and plain tuples pickle several times faster.
"""


@dataclass(frozen=True, slots=True)
class SimState:
    """Everything a `RetailerSimulator` needs to continue its stream; treat it as opaque.

    Immutable and picklable: Bytewax may keep it while the simulator runs on.
    """

    network: tuple[int, int, int, int, int, int]
    """(seed, dcs, stores, suppliers, sellers, skus) the state belongs to."""
    rng_state: tuple[Any, ...]
    counter: int
    """Events emitted so far; the next event is number `counter + 1`."""
    clock: Millis
    opening: int
    """Opening-stock events emitted so far."""
    rate: float
    """Estimated events per millisecond of the caller's clock (0 until known)."""
    window_start: Millis
    window_counter: int
    walks: tuple[int, ...]
    """Where each review round (store shelves, DC and supplier positions) has got to."""
    open_stories: tuple[int, int]
    """Reservation holds and dropships in `pending`, each within its budget."""
    on_hand: tuple[int, ...]
    unavailable: tuple[int, ...]
    """Units held by reservations or staged for a shuttle, per position."""
    inbound: tuple[int, ...]
    """Units picked for the shelf by a transfer and not arrived yet."""
    pending: tuple[Step, ...]
    network_digest: str = ""
    """A digest of the network file (sites, lanes, routes) the state belongs to; '' for generated sites."""
