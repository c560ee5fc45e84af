"""The hot routes' encoders give the bytes the response models gave (what FastAPI sent before)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from ledger.answer import MAX_LIMIT
from ledger.promise import promise
from omni_ledger.api import PromiseOut
from omni_ledger.api_hot import availability_json, promise_json
from tests.unit.ledger.test_promise import scenarios

pytestmark = pytest.mark.component

_PROMISE_OUT = TypeAdapter(PromiseOut)


def as_fastapi_sent(out: PromiseOut) -> bytes:
    # What FastAPI 0.165 does with a route's response model: validate, then pydantic's dump_json.
    return _PROMISE_OUT.dump_json(_PROMISE_OUT.validate_python(out), by_alias=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.none() | st.integers(1, MAX_LIMIT), st.booleans())
def test_a_promise_is_encoded_to_the_bytes_its_response_model_gave(scenario, limit, explain) -> None:  # type: ignore[no-untyped-def]
    network, view, request = scenario
    answer = promise(network, view, request, limit=limit, explain=explain)
    assert promise_json(answer) == as_fastapi_sent(PromiseOut.of(answer))


def test_an_availability_answer_is_encoded_as_pydantic_encoded_it() -> None:
    answer: dict[str, Any] = {
        "snapshot_id": 7,
        "sku": "CAFÉ-1",
        "by": None,
        "sites": [
            {"site_id": "STORE-É", "name": "Lyon Part-Dieu", "kind": "STORE", "distance_km": 12.345, "atp": 3,
             "atp_by_date": None, "negative": False,
             "inbound_lines": [{"ref": "PO-1", "qty": 2, "eta": 1, "promised": True}], "updated_at": 1796169600000},
            {"site_id": "X", "name": None, "kind": None, "distance_km": None, "atp": 0, "negative": True,
             "inbound_lines": [], "updated_at": 0, "far": 0.1, "round": 100.0, "tiny": 1e-07},
        ],
    }  # fmt: skip
    assert availability_json(answer) == TypeAdapter(dict[str, Any]).dump_json(answer, by_alias=True)
