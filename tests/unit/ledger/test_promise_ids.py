"""An option's id is the hash of what the option is, as it always was: a client may hold one across releases."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.promise import _option_id

pytestmark = pytest.mark.unit


def documented(*parts: object) -> str:
    text = "\x1f".join("" if part is None else str(part) for part in parts)
    return "opt-" + hashlib.sha256(text.encode()).hexdigest()[:16]


@given(
    st.sampled_from(["RESERVE_IN_STORE", "TRANSFER_TO_STORE"]),
    st.text(min_size=1),
    st.integers(1, 10**6),
    st.text(min_size=1),
    st.text(min_size=1),
    st.none() | st.text(),
    st.none() | st.integers(0, 2**62),
)
def test_an_option_id_is_the_sha256_of_its_parts(mode, sku, qty, source, deliver_to, run_id, slot) -> None:  # type: ignore[no-untyped-def]
    assert _option_id(mode, sku, qty, source, deliver_to, run_id, slot) == documented(
        mode, sku, qty, source, deliver_to, run_id, slot
    )
