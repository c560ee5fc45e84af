"""Hypothesis strategies for realistic event stories on a tiny network.

A story is a set of events whose times respect causality inside each ref (pick <= load
<= arrival, request < release/fulfil); the tests then choose an arrival order and
duplicates. Site ids: two stores, a supplier, a seller.
"""

from __future__ import annotations

from hypothesis import strategies as st

from ledger.events import EventType, InventoryEvent

T = EventType
MIN = 60_000
STORES = ("ST-A", "ST-B")
SUPPLIER, SELLER = "SUP-1", "SEL-1"
SKUS = ("SKU-1", "SKU-2")
T0 = 1_790_000_000_000


def _event(draw, n: int, type_: EventType, at: int, site: str, sku: str, qty: int, **extra) -> InventoryEvent:
    return InventoryEvent(
        event_id=f"e{n}", type=type_, occurred_at=T0 + at, site_id=site, sku=sku, qty=qty, origin=f"story:{n}", **extra
    )


@st.composite
def stories(draw, *, with_requests: bool = True, max_parts: int = 14) -> list[InventoryEvent]:
    """A list of events in causal (occurred_at) order."""
    times = st.integers(0, 120 * MIN)
    events: list[InventoryEvent] = []
    if draw(st.booleans()):  # opening stock, so that requests are often accepted
        for site in STORES:
            for sku in SKUS:
                events.append(_event(draw, len(events), T.RECEIVED, 0, site, sku, draw(st.integers(1, 6))))
    parts = draw(
        st.lists(
            st.sampled_from(
                ["delta", "delta", "count", "transfer", "dropship", "offer"]
                + (["reserve", "reserve"] if with_requests else [])
            ),
            min_size=1,
            max_size=max_parts,
        )
    )
    for i, part in enumerate(parts):
        n = len(events)
        sku = draw(st.sampled_from(SKUS))
        site = draw(st.sampled_from(STORES))
        at = draw(times)
        if part == "delta":
            kind = draw(st.sampled_from([T.RECEIVED, T.SOLD, T.RETURNED, T.ADJUSTED]))
            qty = draw(st.integers(1, 6)) * (draw(st.sampled_from([1, -1])) if kind is T.ADJUSTED else 1)
            events.append(_event(draw, n, kind, at, site, sku, qty))
        elif part == "count":
            events.append(_event(draw, n, T.COUNTED, at, site, sku, draw(st.integers(0, 8))))
        elif part == "offer":
            events.append(
                _event(
                    draw,
                    n,
                    T.OFFER_UPDATED,
                    at,
                    SELLER,
                    sku,
                    draw(st.integers(0, 8)),
                    price=float(draw(st.integers(5, 50))),
                    lead_time_days=draw(st.integers(1, 5)),
                )
            )
        elif part == "transfer":
            dest = STORES[1] if site == STORES[0] else STORES[0]
            qty = draw(st.integers(1, 4))
            ref = f"TR{i}"
            stage = draw(st.integers(1, 3))
            load_at = at + draw(st.integers(0, 30 * MIN))
            eta = load_at + 60 * MIN
            events.append(_event(draw, n, T.TRANSFER_PICKED, at, site, sku, qty, ref=ref, to_site_id=dest))
            if stage >= 2:
                events.append(
                    _event(
                        draw, n + 1, T.SHUTTLE_LOADED, load_at, site, sku, qty, ref=ref, to_site_id=dest, eta=T0 + eta
                    )
                )
            if stage >= 3:
                arrive_at = load_at + draw(st.integers(0, 60 * MIN))
                events.append(_event(draw, n + 2, T.SHUTTLE_ARRIVED, arrive_at, dest, sku, qty, ref=ref))
        elif part == "dropship":
            qty = draw(st.integers(1, 4))
            ref = f"DS{i}"
            eta = at + 90 * MIN
            events.append(
                _event(draw, n, T.DROPSHIP_SHIPPED, at, SUPPLIER, sku, qty, ref=ref, to_site_id=site, eta=T0 + eta)
            )
            if draw(st.booleans()):
                events.append(
                    _event(
                        draw, n + 1, T.DROPSHIP_RECEIVED, at + draw(st.integers(0, 90 * MIN)), site, sku, qty, ref=ref
                    )
                )
        elif part == "reserve":
            qty = draw(st.integers(1, 3))
            ref = f"RS{i}"
            expires = at + draw(st.integers(1, 240 * MIN))
            events.append(
                _event(draw, n, T.RESERVATION_REQUESTED, at, site, sku, qty, ref=ref, expires_at=T0 + expires)
            )
            end = draw(st.sampled_from(["none", "release", "fulfil"]))
            if end != "none":
                kind = T.RESERVATION_RELEASED if end == "release" else T.RESERVATION_FULFILLED
                events.append(_event(draw, n + 1, kind, at + draw(st.integers(1, 90 * MIN)), site, sku, qty, ref=ref))
    events.sort(key=lambda e: (e.occurred_at, e.event_id))
    return events


@st.composite
def deliveries(draw, events: list[InventoryEvent], *, shuffle: bool = True, duplicates: bool = True):
    """An arrival order of `events`: shuffled, with exact duplicates (same event id) sprinkled in."""
    order = list(events)
    if shuffle and draw(st.booleans()):
        order = list(draw(st.permutations(events)))
    elif shuffle:
        # Real disorder is mostly local: each event is delayed by up to `jitter`.
        jitter = draw(st.integers(0, 30 * MIN))
        delays = draw(st.lists(st.integers(0, jitter), min_size=len(events), max_size=len(events)))
        order = [
            e
            for _, _, e in sorted(
                zip(
                    (e.occurred_at + d for e, d in zip(events, delays, strict=True)),
                    range(len(events)),
                    events,
                    strict=True,
                )
            )
        ]
    if duplicates and events:
        for dup in draw(st.lists(st.sampled_from(events), max_size=len(events))):
            order.insert(draw(st.integers(0, len(order))), dup)
    return order
