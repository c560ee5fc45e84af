"""The hand-written `atp.changes` and `reservation.decisions` encoders against fastavro's, on any record."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.kafka_records import SingleObjectWriter, change_record, render_change, render_decision
from ledger.outputs import DecisionStatus, InboundLine, OfferTerms, PositionChange, ReservationDecision, decision_fields

pytestmark = pytest.mark.component

LONGS = st.integers(-(2**63), 2**63 - 1)
MILLIS = st.integers(0, 253_402_300_799_999)
TEXT = st.text(min_size=1, max_size=40)

CHANGES = st.builds(
    PositionChange,
    site_id=TEXT,
    sku=TEXT,
    on_hand=LONGS,
    reserved=LONGS,
    staged=LONGS,
    inbound_qty=LONGS,
    safety_stock=LONGS,
    atp=LONGS,
    negative=st.booleans(),
    version=st.integers(0, 2**62),
    updated_at=MILLIS,
    max_occurred_at=MILLIS,
    inbound=st.lists(st.builds(InboundLine, ref=TEXT, qty=LONGS, eta=MILLIS), max_size=4).map(tuple),
    offer=st.none()
    | st.builds(
        OfferTerms,
        qty=LONGS,
        price=st.none() | st.floats(allow_nan=False),
        lead_time_days=st.none() | st.integers(-(2**31), 2**31 - 1),
        updated_at=MILLIS,
    ),
)


@settings(max_examples=400)
@given(change=CHANGES)
def test_a_change_encodes_to_the_bytes_fastavro_writes_and_reads_back(change: PositionChange) -> None:
    writer = SingleObjectWriter("position_change.avsc")
    message = render_change(change)
    assert message.key == change.key.encode()
    assert message.value == writer.encode(change_record(change))
    decoded = writer.decode(message.value)
    assert decoded["version"] == change.version
    assert len(decoded["inbound"]) == len(change.inbound)


DECISIONS = st.builds(
    ReservationDecision,
    reservation_id=TEXT,
    site_id=TEXT,
    sku=TEXT,
    qty=LONGS,
    status=st.sampled_from(DecisionStatus),
    reason=st.text(max_size=40),
    expires_at=st.none() | MILLIS,
    decided_at=MILLIS,
    atp_before=LONGS,
)


@settings(max_examples=400)
@given(decision=DECISIONS)
def test_a_decision_encodes_to_the_bytes_fastavro_writes_and_reads_back(decision: ReservationDecision) -> None:
    writer = SingleObjectWriter("reservation_decision.avsc")
    message = render_decision(decision)
    assert message.key == decision.reservation_id.encode()
    assert message.value == writer.encode(decision_fields(decision))
    decoded = writer.decode(message.value)
    assert (decoded["status"], decoded["atp_before"]) == (decision.status.value, decision.atp_before)
    assert (decoded["expires_at"] is None) == (decision.expires_at is None)


def test_every_status_encodes_as_the_schema_names_it() -> None:
    writer = SingleObjectWriter("reservation_decision.avsc")
    for status in DecisionStatus:
        decision = ReservationDecision("r-1", "S", "K", 1, status, "why", None, 5, 0)
        assert writer.decode(render_decision(decision).value)["status"] == status.value


@settings(max_examples=200)
@given(changes=st.lists(CHANGES, max_size=8), repeats=st.lists(st.integers(0, 7), max_size=8))
def test_a_batch_of_changes_renders_to_each_change_s_fastavro_bytes_in_order(
    changes: list[PositionChange], repeats: list[int]
) -> None:
    # The same change objects again, as a position's next change keeps its inbound lines and offer.
    batch = changes + [changes[i] for i in repeats if i < len(changes)]
    writer = SingleObjectWriter("position_change.avsc")
    rendered = render_change.many(batch)
    assert rendered == [(change.key.encode(), writer.encode(change_record(change))) for change in batch]


def test_an_inbound_line_or_offer_equal_to_a_remembered_one_but_another_object_encodes_its_own_values() -> None:
    writer = SingleObjectWriter("position_change.avsc")
    first = PositionChange(
        "S", "K", 5, 0, 0, 3, 0, 5, False, 1, 10, 10, (InboundLine("PO-1", 3, 99),), OfferTerms(2, 9.5, 3, 7)
    )
    second = PositionChange(
        "S", "K", 5, 0, 0, 4, 0, 5, False, 2, 11, 11, (InboundLine("PO-1", 4, 99),), OfferTerms(3, None, None, 8)
    )
    for change in (first, second, first):
        assert render_change(change).value == writer.encode(change_record(change))
