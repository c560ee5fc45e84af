"""omni-ledger's domain: the event contract and a pure fold into available-to-promise.

Nothing here imports Bytewax, Kafka or DuckDB; time arrives as an argument.
"""

from ledger.contract import validate
from ledger.dead_letter import DeadLetter, Reason
from ledger.effects import Effect, EffectKind, split
from ledger.errors import ConfigError, ContractError, OmniLedgerError, SnapshotError, SourceError
from ledger.events import EventType, InventoryEvent, Millis
from ledger.fold import Output, expire, fold, next_expiry
from ledger.outputs import DecisionStatus, InboundLine, OfferTerms, PositionChange, ReservationDecision
from ledger.policy import LedgerPolicy, SafetyStock
from ledger.position import Position

__all__ = [
    "ConfigError",
    "ContractError",
    "DeadLetter",
    "DecisionStatus",
    "Effect",
    "EffectKind",
    "EventType",
    "InboundLine",
    "InventoryEvent",
    "LedgerPolicy",
    "Millis",
    "OfferTerms",
    "OmniLedgerError",
    "Output",
    "Position",
    "PositionChange",
    "Reason",
    "ReservationDecision",
    "SafetyStock",
    "SnapshotError",
    "SourceError",
    "expire",
    "fold",
    "next_expiry",
    "split",
    "validate",
]
