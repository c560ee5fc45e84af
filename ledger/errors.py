"""The exceptions omni-ledger raises, all under one root.

    OmniLedgerError            anything omni-ledger raises on purpose
    ├── ConfigError            a setting is missing, malformed or out of range
    ├── ContractError          input does not follow the event contract
    ├── SourceError            an input (file, simulator, broker) cannot be read
    ├── SnapshotError          the snapshot store cannot be written or read
    ├── RecoveryError          the fold's saved state cannot be resumed from
    └── ServiceError           a request cannot be answered as asked (omni_ledger.errors:
                               NotFound, InvalidRequest, OptionGone, Conflict, StaleSnapshot,
                               DecisionTimeout, AuthError, Forbidden)

Bad events are not raised: decoding and validation return a `DeadLetter` value
(see `ledger.dead_letter`) so one bad line never stops a flow. `ContractError` is
for callers who asked for an event and must have one (tests, tools).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ContractError",
    "OmniLedgerError",
    "RecoveryError",
    "SnapshotError",
    "SourceError",
]


class OmniLedgerError(Exception):
    """Root of every error omni-ledger raises on purpose."""


class ConfigError(OmniLedgerError):
    """A setting is missing, malformed or out of range; the message names the key and its origin."""


class ContractError(OmniLedgerError):
    """An input record does not follow the `InventoryEvent` contract."""


class SourceError(OmniLedgerError):
    """An input (file, simulator, broker) cannot be opened or read."""


class SnapshotError(OmniLedgerError):
    """The snapshot store cannot be opened, written or queried."""


class RecoveryError(OmniLedgerError):
    """The fold's saved state (shard checkpoints, Bytewax's recovery partitions) cannot be resumed from."""
