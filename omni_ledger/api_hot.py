"""The two hot reads, availability and promise, answered without FastAPI's per-request machinery.

A product page asks for availability and a promise thousands of times a second; the
rest of the API is asked a few times a minute. Through FastAPI one answer cost ~1.1 ms
of server CPU before any of our code ran (bench/serve_ceiling.py: the thread pool
hop, dependency solving, the response model validated again and serialised), which on
this 2-core machine capped the API below the issue's targets whatever the promise cost.

`HotRoutes` is an ASGI layer in front of the FastAPI app. It answers a request to one
of the two routes itself when the request is well formed, using the same pydantic
models for validation and the same bearer-token check; anything else (a malformed or
unauthorised request, a `by` date, an unknown parameter) goes on to FastAPI untouched,
which answers it exactly as before, errors included. Answers are encoded by
`availability_json` / `promise_json`, which the FastAPI routes use too: one encoding,
the same bytes whichever path answered (a test compares them with the response
models' own serialisation).

Only with a read model: answering from memory is CPU work with no I/O, so it runs on
the event loop; the DuckLake reads (no read model) block on files and keep FastAPI's
thread pool.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel, ValidationError

from ledger.answer import Option, Promise, Together
from ledger.errors import OmniLedgerError, SnapshotError
from ledger.events import Millis

if TYPE_CHECKING:
    from omni_ledger.service import LedgerService

__all__ = ["HotRoutes", "availability_json", "iso", "promise_json"]

_LOG = logging.getLogger("omni_ledger.api")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@lru_cache(maxsize=1 << 16)
def iso(ms: Millis | None) -> str | None:
    """Epoch millis as ISO 8601 UTC with milliseconds (`...T18:00:00.000Z`); remembered: a day's
    runs and openings are the same few thousand instants in every answer."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _option(o: Option) -> dict[str, Any]:
    # The fields and order of api.OptionOut.
    return {
        "option_id": o.option_id, "mode": o.mode.value, "sku": o.sku, "qty": o.qty, "source_id": o.source_id,
        "source_kind": o.source_kind.value, "deliver_to": o.deliver_to, "available_at": iso(o.available_at) or "",
        "distance_km": float(o.distance_km), "price": None if o.price is None else float(o.price), "run_id": o.run_id,
        "pick_by": iso(o.pick_by), "departs_at": iso(o.departs_at), "arrives_at": iso(o.arrives_at),
        "appointment_at": iso(o.appointment_at),
    }  # fmt: skip


def _together(t: Together) -> dict[str, Any]:
    return {
        "store_id": t.store_id, "distance_km": float(t.distance_km), "ready_at": iso(t.ready_at) or "",
        "appointment_at": iso(t.appointment_at), "legs": [_option(leg) for leg in t.legs],
    }  # fmt: skip


def promise_json(p: Promise) -> bytes:
    """The answer as api.PromiseOut serialises it, in one orjson call."""
    exclusions = [
        {
            "reason": s.reason.value,
            "count": s.count,
            "examples": [
                {"site_id": e.site_id, "sku": e.sku, "reason": e.reason.value, "detail": e.detail} for e in s.examples
            ],
        }
        for s in p.exclusions or ()
    ]
    return orjson.dumps(
        {
            "snapshot_id": p.snapshot_id,
            "now": iso(p.now) or "",
            "options": [_option(o) for o in p.options],
            "options_total": p.options_total,
            "together": [_together(t) for t in p.together],
            "together_total": p.together_total,
            "exclusions": exclusions,
            "excluded": [
                {"site_id": e.site_id, "sku": e.sku, "reason": e.reason.value, "detail": e.detail} for e in p.excluded
            ],
        }
    )


def availability_json(answer: dict[str, Any]) -> bytes:
    """The availability answer (plain JSON values) as bytes."""
    return orjson.dumps(answer)


def _json_answer(body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    return (
        {"type": "http.response.start", "status": 200, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


class HotRoutes:
    """ASGI: availability and promise answered here when well formed; every other request to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        service: LedgerService,
        *,
        role: Callable[[str | None], str | None],
        open_reads: bool,
        routes: dict[str, Any],
        availability_model: type[BaseModel],
        promise_model: type[BaseModel],
        error_response: Callable[[OmniLedgerError], Any],
    ) -> None:
        self.app = app
        self.service = service
        self._role = role
        self._open_reads = open_reads
        self._routes = routes
        """Path template -> the FastAPI route, set in the scope for the metrics' route label."""
        self._availability = availability_model
        self._promise = promise_model
        self._error = error_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path") and self.service.read_model is not None:
            path, method = scope["path"], scope["method"]
            if method == "GET" and path.startswith("/v1/skus/") and path.endswith("/availability"):
                if await self._answer_availability(scope, send):
                    return
            elif method == "POST" and path == "/v1/promise":
                await self._answer_promise(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _may_read(self, scope: Scope) -> bool:
        if self._open_reads:
            return True
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and self._role(token) is not None
        return False

    async def _answer_availability(self, scope: Scope, send: Send) -> bool:
        """True when answered; False hands the request to FastAPI (nothing was read from it)."""
        sku = scope["path"][len("/v1/skus/") : -len("/availability")]
        if not sku or "/" in sku or not self._may_read(scope):
            return False
        pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        params = dict(pairs)
        if len(params) != len(pairs) or not params.keys() <= {"lat", "lon", "radius_km"}:
            return False  # a repeated or other parameter (`by`): FastAPI's rules apply
        try:
            query = self._availability.model_validate({"sku": sku, **params}).__dict__
        except ValidationError:
            return False
        scope["route"] = self._routes["/v1/skus/{sku}/availability"]
        try:
            answer = self.service.availability(
                query["sku"], lat=query["lat"], lon=query["lon"], radius_km=query["radius_km"]
            )
        except OmniLedgerError as exc:
            await self._failed(exc, scope, send)
            return True
        start, body = _json_answer(availability_json(answer))
        await send(start)
        await send(body)
        return True

    async def _answer_promise(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, messages = await _read_body(receive)

        async def replay() -> MutableMapping[str, Any]:
            # FastAPI reads the body again from the messages already received, then waits as usual.
            return messages.pop(0) if messages else await receive()

        content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
        if not content_type.startswith(b"application/json") or not self._may_read(scope):
            await self.app(scope, replay, send)
            return
        try:
            request = self._promise.model_validate(orjson.loads(body))
        except (orjson.JSONDecodeError, ValidationError):
            await self.app(scope, replay, send)
            return
        scope["route"] = self._routes["/v1/promise"]
        fields = request.__dict__
        try:
            answer = self.service.promise(
                [(item.sku, item.qty) for item in fields["items"]], lat=fields["lat"], lon=fields["lon"],
                radius_km=fields["radius_km"], appointment=fields["appointment"], limit=fields["limit"],
                explain=fields["explain"],
            )  # fmt: skip
        except OmniLedgerError as exc:
            await self._failed(exc, scope, send)
            return
        start, out = _json_answer(promise_json(answer))
        await send(start)
        await send(out)

    async def _failed(self, exc: OmniLedgerError, scope: Scope, send: Send) -> None:
        if isinstance(exc, SnapshotError):
            _LOG.warning("snapshot read failed: %s", exc)

        async def nothing() -> MutableMapping[str, Any]:
            return {"type": "http.disconnect"}

        await self._error(exc)(scope, nothing, send)


async def _read_body(receive: Receive) -> tuple[bytes, list[MutableMapping[str, Any]]]:
    """The whole request body, and the messages it came in (to hand them on unread)."""
    messages = []
    chunks = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks), messages
