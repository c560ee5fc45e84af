"""The promise service: what the HTTP API, the web console and the demo call.

Reads come from the newest snapshot (pinned per request, never older than
`serve.max_snapshot_age`); writes are events appended to the flow's input, and a
confirm answers with the fold's own decision. The service never decides a reservation
from a snapshot: two customers confirming the last unit at once both send a request,
and the fold accepts the first and rejects the second, who is then offered the next
best option.

`LedgerService` is the one object callers hold; its parts live by concern: `reads`
(snapshot, availability, promise, tables), `reservations` (confirm), `execution` (the
staff's actions).
"""

from __future__ import annotations

from omni_ledger.service.execution import Execution
from omni_ledger.service.reservations import ConfirmResult, Reservations

__all__ = ["ConfirmResult", "LedgerService"]


class LedgerService(Reservations, Execution):
    """Promise, confirm, the staff's actions and the reads of the API, over one network and one snapshot store."""
