"""Rejected input as a value: what came, where from, and why it was refused."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DeadLetter", "Reason"]


class Reason:
    """The closed set of dead-letter reasons (strings, so they travel in JSON and Avro)."""

    MALFORMED = "malformed"
    """The bytes are not a JSON object / Avro record at all."""
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    QTY_OUT_OF_RANGE = "qty_out_of_range"
    MISSING_REF = "missing_ref"
    INVALID_FIELD = "invalid_field"
    """A field has the right type but an impossible value (same origin and destination, eta before occurrence)."""
    FUTURE_EVENT = "future_event"
    """`occurred_at` is further ahead of the ledger's clock than the allowed clock skew."""
    TOO_LATE = "too_late"
    """Older than the lateness window at its position: it can no longer be deduplicated or rebased."""

    ALL = (
        MALFORMED,
        UNKNOWN_TYPE,
        MISSING_FIELD,
        WRONG_TYPE,
        QTY_OUT_OF_RANGE,
        MISSING_REF,
        INVALID_FIELD,
        FUTURE_EVENT,
        TOO_LATE,
    )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input the ledger refused; nothing else changed because of it."""

    origin: str
    """Where it was read: `path:line`, `topic[partition]@offset`, or `sim`."""
    reason: str
    """One of `Reason.ALL`."""
    detail: str
    """What was wrong, what was expected, and what to do, for a human."""
    raw: bytes
    """The original input, byte for byte (the re-encoded event for a refusal inside the fold)."""
    event_id: str | None = None
