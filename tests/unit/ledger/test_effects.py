"""`by_position`: the effects of a read grouped by position, as `split` then grouping gives them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.effects import EffectKind, by_position, split
from ledger.events import EventType, InventoryEvent
from tests.stories import deliveries, stories

pytestmark = pytest.mark.unit


def split_then_grouped(stamped):
    """The grouping admission did before: every event through `split`, each effect to its position's list."""
    groups: dict[str, list] = {}
    for now, event in stamped:
        for effect in split(event):
            groups.setdefault(f"{effect.site_id}|{effect.sku}", []).append((now, effect))
    return groups


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_read_groups_by_position_as_split_then_grouped(data):
    events = data.draw(stories())
    order = data.draw(deliveries(events))
    stamped = [(1_000 + i, event) for i, event in enumerate(order)]
    got = by_position(stamped)
    expected = split_then_grouped(stamped)
    assert got == expected
    assert list(got) == list(expected)  # positions in order of first arrival, as the fold calls them


def test_a_move_leaves_both_legs_in_their_own_positions():
    load = InventoryEvent("e-1", EventType.SHUTTLE_LOADED, 5, "ST-A", "K", 3, ref="p-1", to_site_id="ST-B", eta=9)
    sale = InventoryEvent("e-2", EventType.SOLD, 6, "ST-A", "K", 1)
    groups = by_position([(5, load), (6, sale)])
    assert [(now, effect.kind, effect.qty) for now, effect in groups["ST-A|K"]] == [
        (5, EffectKind.DISPATCH, 3),
        (6, EffectKind.DELTA, -1),
    ]
    assert [(effect.kind, effect.qty) for _, effect in groups["ST-B|K"]] == [(EffectKind.INBOUND, 3)]
