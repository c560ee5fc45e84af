"""The rules a deployment tunes: lateness window, clock skew, safety stock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ledger.errors import ConfigError

__all__ = ["HOUR_MS", "LedgerPolicy", "SafetyStock"]

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class SafetyStock:
    """Units held back from ATP; the most specific rule wins: sku, then site, then site kind.

    `site_kinds` maps a site id to its kind (DC, STORE, SUPPLIER, SELLER) so a rule by
    kind can apply; a site it does not list has no kind rule.
    """

    default: int = 0
    by_sku: Mapping[str, int] = field(default_factory=dict)
    by_site: Mapping[str, int] = field(default_factory=dict)
    by_kind: Mapping[str, int] = field(default_factory=dict)
    site_kinds: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rules = {"default": {"": self.default}, "by_sku": self.by_sku, "by_site": self.by_site, "by_kind": self.by_kind}
        for name, rule in rules.items():
            for key, units in rule.items():
                if not isinstance(units, int) or isinstance(units, bool) or units < 0:
                    where = f"safety_stock.{name}" + (f"[{key!r}]" if key else "")
                    msg = f"{where} must be a whole number of units >= 0, got {units!r}"
                    raise ConfigError(msg)

    def for_position(self, site_id: str, sku: str) -> int:
        """Safety stock for one (site, sku) position."""
        units = self.by_sku.get(sku)
        if units is not None:
            return units
        units = self.by_site.get(site_id)
        if units is not None:
            return units
        kind = self.site_kinds.get(site_id)
        if kind is not None:
            units = self.by_kind.get(kind)
            if units is not None:
                return units
        return self.default


@dataclass(frozen=True, slots=True)
class LedgerPolicy:
    """How the fold treats time and what it holds back.

    `lateness_window_ms`: an event whose `occurred_at` is older than the newest event
    at its position minus this window is refused as `too_late`. The window bounds the
    memory kept per position (event ids for deduplication, on-hand deltas for rebasing
    a late count, tombstones of finished transfers and reservations).
    `max_clock_skew_ms`: an event dated further than this ahead of the ledger's clock is
    refused as `future_event`, so one bad clock cannot push every position's window.
    """

    lateness_window_ms: int = 24 * HOUR_MS
    max_clock_skew_ms: int = HOUR_MS // 12
    safety_stock: SafetyStock = field(default_factory=SafetyStock)

    def __post_init__(self) -> None:
        if self.lateness_window_ms <= 0:
            msg = f"lateness_window must be a positive duration, got {self.lateness_window_ms} ms"
            raise ConfigError(msg)
        if self.max_clock_skew_ms < 0:
            msg = f"max_clock_skew must be a duration >= 0, got {self.max_clock_skew_ms} ms"
            raise ConfigError(msg)
