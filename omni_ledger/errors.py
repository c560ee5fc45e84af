"""The errors the application raises when a request cannot be answered as asked.

They extend the one tree rooted in `ledger.errors` (the domain's errors live there; the
domain knows nothing of requests, so these live here). None of them knows HTTP: the API
maps each class to its status and code in one table (`omni_ledger.api.ERROR_RESPONSES`).

    OmniLedgerError              ledger.errors: anything omni-ledger raises on purpose
    ├── ConfigError              a setting is missing, malformed or out of range
    ├── ContractError            input does not follow the event contract
    ├── SourceError              an input (file, simulator, broker) cannot be read or written
    ├── SnapshotError            the snapshot store cannot be written or read
    ├── RecoveryError            the fold's saved state cannot be resumed from
    └── ServiceError             a request the service cannot answer as asked
        ├── NotFound             the sku, site, run, task, parcel or reservation is unknown
        ├── InvalidRequest       the request is malformed or contradicts itself
        ├── OptionGone           the option confirmed is no longer offered: promise again
        ├── Conflict             the action does not fit the state of its task or parcel
        ├── StaleSnapshot        no snapshot, or the newest is too old to answer from
        ├── DecisionTimeout      the fold did not decide on a confirm in time
        ├── AuthError            no bearer token, or an unknown one
        ├── Forbidden            the token may read but not confirm or act
        └── BodyTooLarge         the request body is over the API's limit
"""

from __future__ import annotations

from ledger.errors import OmniLedgerError

__all__ = [
    "AuthError",
    "BodyTooLarge",
    "Conflict",
    "DecisionTimeout",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "OptionGone",
    "ServiceError",
    "StaleSnapshot",
]


class ServiceError(OmniLedgerError):
    """A request the service cannot answer as asked; the message says why and what to do."""


class NotFound(ServiceError):
    """The sku, site, run, task, parcel or reservation named is not in the snapshot."""


class InvalidRequest(ServiceError):
    """The request is malformed or contradicts itself (a basket too large, a bad appointment)."""


class OptionGone(ServiceError):
    """The option confirmed is no longer offered (stock moved, cut-off passed): promise again."""


class Conflict(ServiceError):
    """The action does not fit the current state of its task or parcel."""


class StaleSnapshot(ServiceError):
    """There is no snapshot yet, or the newest is older than serve.max_snapshot_age."""


class DecisionTimeout(ServiceError):
    """The fold did not decide on a confirm within serve.confirm_timeout."""


class AuthError(ServiceError):
    """The request has no bearer token, or one no setting lists."""


class Forbidden(ServiceError):
    """The token may read but not confirm or act."""


class BodyTooLarge(ServiceError):
    """The request body is over the API's limit (omni_ledger.api.MAX_BODY_BYTES)."""
