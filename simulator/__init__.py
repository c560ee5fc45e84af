"""A seeded simulator of an omnichannel retailer: a live `InventoryEvent` stream for the ledger.

Pure like `ledger/`, beside which it sits: it imports only the stdlib and `ledger`, has no
clock (the caller passes the time) and keeps its whole state in one immutable value.

- `config.py`: `SimConfig`, what to simulate (sites or a network file, skus, the mix).
- `retailer.py`: `RetailerSimulator`, which draws the stories and keeps the beliefs.
- `stories.py`: each story (a sale, a transfer, a dropship...) as the events it emits.
- `state.py`: `SimState`, the value a simulator resumes from.
- `network.py`: the simulated network as a network file, for a promise over it
  (`from simulator.network import simulated_network, network_toml`).

The Bytewax source that wraps it is `adapters/sim_source.py`.
"""

from simulator.config import EventMix, SimConfig, Site, SiteKind
from simulator.retailer import RetailerSimulator
from simulator.state import SimState

__all__ = ["EventMix", "RetailerSimulator", "SimConfig", "SimState", "Site", "SiteKind"]
