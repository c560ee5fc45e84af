"""The HTTP API (FastAPI): availability, promise, confirm, and the store and transport reads.

FastAPI generates the OpenAPI spec (`/openapi.json`, docs at `/docs`) from the models
below, and validates bodies and query parameters against them: that is why we use it
rather than code of our own. Every error is JSON `{"error": code, "message": ...}`
with the status and code `ERROR_RESPONSES` maps its class to: that one table feeds the
exception handlers and the spec's responses, and the errors themselves know no HTTP.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from ledger.answer import DEFAULT_LIMIT, MAX_BASKET, MAX_LIMIT, Exclusion, ExclusionSummary, Option, Promise, Together
from ledger.contract import MAX_QTY
from ledger.errors import OmniLedgerError, SnapshotError, SourceError
from ledger.events import InventoryEvent
from omni_ledger.api_hot import HotRoutes, availability_json, iso, promise_json
from omni_ledger.config import Secret
from omni_ledger.console import code128_svg, mount_console
from omni_ledger.errors import (
    AuthError,
    BodyTooLarge,
    Conflict,
    DecisionTimeout,
    Forbidden,
    InvalidRequest,
    NotFound,
    OptionGone,
    ServiceError,
    StaleSnapshot,
)
from omni_ledger.metrics import instrument_app
from omni_ledger.service import ConfirmResult, LedgerService

__all__ = ["ERROR_RESPONSES", "MAX_BODY_BYTES", "create_app"]

MAX_BODY_BYTES = 64 * 1024
"""Largest request body accepted: a full basket is well under 4 KiB."""

_LOG = logging.getLogger("omni_ledger.api")
# No '|' (the key separator) and no control characters (the contract refuses them in ids).
_SKU_PATTERN = r"^[^|\s\x00-\x1f\x7f][^|\x00-\x1f\x7f]*$"
_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
_SKU = Field(min_length=1, max_length=64, pattern=_SKU_PATTERN)
_ID = Path(min_length=1, max_length=100, pattern=_ID_PATTERN)


_iso = iso


# -- request models ------------------------------------------------------------------------


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: Annotated[str, _SKU]
    qty: Annotated[int, Field(ge=1, le=MAX_QTY)] = 1


class PromiseBody(BaseModel):
    """A basket (1 to 20 skus), where the customer is, and whether an appointment is wanted."""

    model_config = ConfigDict(extra="forbid")
    items: Annotated[list[Item], Field(min_length=1, max_length=MAX_BASKET)]
    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]
    radius_km: Annotated[float | None, Field(gt=0, le=2000)] = None
    appointment: bool = False
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT, description="most options and together plans answered")] = (
        DEFAULT_LIMIT
    )
    explain: Annotated[bool, Field(description="also list every exclusion, not only the summary by reason")] = False


class AvailabilityParams(BaseModel):
    """The availability route's path and query parameters (but `by`), bounded as the route declares them."""

    model_config = ConfigDict(extra="forbid")
    sku: Annotated[str, Field(min_length=1, max_length=64, pattern=_SKU_PATTERN)]
    lat: Annotated[float | None, Field(ge=-90, le=90)] = None
    lon: Annotated[float | None, Field(ge=-180, le=180)] = None
    radius_km: Annotated[float | None, Field(gt=0, le=2000)] = None


class ConfirmBody(PromiseBody):
    """The same request as the promise, and the `option_id` the customer chose from it."""

    option_id: Annotated[str, _ID]
    customer: Annotated[str | None, Field(max_length=100, pattern=_ID_PATTERN)] = None
    order_id: Annotated[str | None, Field(min_length=1, max_length=64, pattern=r"^[^|\x00-\x1f\x7f]+$")] = None


# -- response models -----------------------------------------------------------------------


class OptionOut(BaseModel):
    option_id: str
    mode: str
    sku: str
    qty: int
    source_id: str
    source_kind: str
    deliver_to: str
    available_at: str
    distance_km: float
    price: float | None = None
    run_id: str | None = None
    pick_by: str | None = None
    departs_at: str | None = None
    arrives_at: str | None = None
    appointment_at: str | None = None

    @classmethod
    def of(cls, o: Option) -> OptionOut:
        return cls(
            option_id=o.option_id, mode=o.mode.value, sku=o.sku, qty=o.qty, source_id=o.source_id,
            source_kind=o.source_kind.value, deliver_to=o.deliver_to, available_at=_iso(o.available_at) or "",
            distance_km=o.distance_km, price=o.price, run_id=o.run_id, pick_by=_iso(o.pick_by),
            departs_at=_iso(o.departs_at), arrives_at=_iso(o.arrives_at), appointment_at=_iso(o.appointment_at),
        )  # fmt: skip


class TogetherOut(BaseModel):
    store_id: str
    distance_km: float
    ready_at: str
    appointment_at: str | None
    legs: list[OptionOut]

    @classmethod
    def of(cls, t: Together) -> TogetherOut:
        return cls(
            store_id=t.store_id, distance_km=t.distance_km, ready_at=_iso(t.ready_at) or "",
            appointment_at=_iso(t.appointment_at), legs=[OptionOut.of(leg) for leg in t.legs],
        )  # fmt: skip


class ExclusionOut(BaseModel):
    site_id: str
    sku: str
    reason: str
    detail: str

    @classmethod
    def of(cls, e: Exclusion) -> ExclusionOut:
        return cls(site_id=e.site_id, sku=e.sku, reason=e.reason.value, detail=e.detail)


class ExclusionsOut(BaseModel):
    reason: str
    count: int
    examples: list[ExclusionOut]

    @classmethod
    def of(cls, s: ExclusionSummary) -> ExclusionsOut:
        return cls(reason=s.reason.value, count=s.count, examples=[ExclusionOut.of(e) for e in s.examples])


class PromiseOut(BaseModel):
    """The best `limit` options, best first; `together`: stores where the whole basket can be collected at once.

    `options_total` and `together_total` count what was found before the cut; `exclusions`
    summarises by reason what was left out; `excluded` lists all of it only with `explain`.
    """

    snapshot_id: int
    now: str
    options: list[OptionOut]
    options_total: int
    together: list[TogetherOut]
    together_total: int
    exclusions: list[ExclusionsOut]
    excluded: list[ExclusionOut]

    @classmethod
    def of(cls, p: Promise) -> PromiseOut:
        return cls(
            snapshot_id=p.snapshot_id, now=_iso(p.now) or "", options=[OptionOut.of(o) for o in p.options],
            options_total=p.options_total, together=[TogetherOut.of(t) for t in p.together],
            together_total=p.together_total, exclusions=[ExclusionsOut.of(s) for s in p.exclusions or ()],
            excluded=[ExclusionOut.of(e) for e in p.excluded],
        )  # fmt: skip


class ConfirmOut(BaseModel):
    """The fold's decision on the reservation; when rejected, the next best option to offer."""

    reservation_id: str
    order_id: str
    status: str
    reason: str
    snapshot_id: int
    option: OptionOut
    appointment_status: str | None
    next_best: OptionOut | None

    @classmethod
    def of(cls, r: ConfirmResult) -> ConfirmOut:
        return cls(
            reservation_id=r.reservation_id, order_id=r.order_id, status=r.status, reason=r.reason,
            snapshot_id=r.snapshot_id, option=OptionOut.of(r.option), appointment_status=r.appointment_status,
            next_best=None if r.next_best is None else OptionOut.of(r.next_best),
        )  # fmt: skip


class ErrorOut(BaseModel):
    error: str
    message: str


ERROR_RESPONSES: dict[type[OmniLedgerError], tuple[int, str, str]] = {
    ServiceError: (400, "bad_request", "the request cannot be answered as asked"),
    AuthError: (401, "unauthorized", "missing or unknown bearer token"),
    Forbidden: (403, "forbidden", "a read-only token cannot do this"),
    NotFound: (404, "not_found", "unknown sku, site, run, task, parcel or reservation"),
    OptionGone: (409, "option_gone", "the option is no longer offered: promise again"),
    Conflict: (409, "conflict", "the action does not fit the state of its task or parcel"),
    BodyTooLarge: (413, "body_too_large", "request body too large"),
    InvalidRequest: (422, "invalid_request", "malformed body or parameters"),
    StaleSnapshot: (503, "snapshot_stale", "no snapshot, or the newest is older than serve.max_snapshot_age"),
    SnapshotError: (503, "snapshot_unavailable", "the snapshot store cannot be read"),
    SourceError: (503, "ledger_unreachable", "the confirm cannot be sent to the flow"),
    DecisionTimeout: (504, "decision_timeout", "the fold did not decide within serve.confirm_timeout"),
}
"""Each error class the API answers, with its HTTP status, its `error` code and what it means."""


def _openapi_responses() -> dict[int | str, dict[str, Any]]:
    by_status: dict[int, list[str]] = {}
    for status, _, text in ERROR_RESPONSES.values():
        by_status.setdefault(status, []).append(text)
    return {status: {"model": ErrorOut, "description": "; ".join(texts)} for status, texts in sorted(by_status.items())}


def _error_response(exc: OmniLedgerError) -> JSONResponse:
    cls = next(c for c in type(exc).__mro__ if c in ERROR_RESPONSES)
    status, code, _ = ERROR_RESPONSES[cls]
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": code, "message": str(exc)}, status_code=status, headers=headers)


# -- auth and limits -----------------------------------------------------------------------


class _BodyLimit:
    """Refuses bodies over `limit` bytes (declared or streamed) with 413, before any parsing."""

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(self.limit)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        try:
            await self.app(scope, limited, send)
        except BodyTooLarge:
            await _too_large(self.limit)(scope, receive, send)


def _too_large(limit: int) -> JSONResponse:
    return _error_response(BodyTooLarge(f"request body over {limit} bytes"))


class _Auth:
    """Bearer tokens, compared in constant time against every configured token."""

    def __init__(self, write: tuple[Secret, ...], read: tuple[Secret, ...], open_reads: bool) -> None:
        self._write = [t.reveal().encode() for t in write]
        self._read = [t.reveal().encode() for t in read]
        self.open_reads = open_reads

    def role(self, token: str | None) -> str | None:
        if not token:
            return None
        given = token.encode()
        # No early exit: the time taken does not say which list, or how far, it matched.
        write = any([hmac.compare_digest(given, t) for t in self._write])
        read = any([hmac.compare_digest(given, t) for t in self._read])
        return "write" if write else "read" if read else None


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>` (serve.write_tokens / read_tokens)")


# -- the app -------------------------------------------------------------------------------


def create_app(service: LedgerService) -> FastAPI:
    """The API over `service`."""
    settings = service.settings
    auth = _Auth(settings.write_tokens, settings.read_tokens, settings.open_reads)
    app = FastAPI(
        title="omni-ledger",
        version="1",
        summary="Real-time available-to-promise: where every unit is, and what can be promised by when.",
        responses=_openapi_responses(),
    )

    def reader(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        if auth.open_reads:
            return
        if auth.role(credentials.credentials if credentials else None) is None:
            msg = "this endpoint needs a bearer token (serve.read_tokens or serve.write_tokens)"
            raise AuthError(msg)

    def writer(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        role = auth.role(credentials.credentials if credentials else None)
        if role is None:
            msg = "confirming changes stock: send `Authorization: Bearer <token>` with a token from serve.write_tokens"
            raise AuthError(msg)
        if role != "write":
            msg = "this token is read-only: it cannot confirm or act; use a token from serve.write_tokens"
            raise Forbidden(msg)

    async def mapped_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, SnapshotError):
            _LOG.warning("snapshot read failed: %s", exc)
        elif isinstance(exc, SourceError):
            _LOG.error("sending to the flow failed: %s", exc)
        return _error_response(exc)  # type: ignore[arg-type]  # registered for these classes only

    for error in ERROR_RESPONSES:
        app.add_exception_handler(error, mapped_error)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg')}" for error in exc.errors()[:10]
        )
        return _error_response(InvalidRequest(problems or "malformed request"))

    read = [Depends(reader)]
    write = [Depends(writer)]

    @app.get("/health", tags=["ops"], summary="Snapshot id and age; 503 when stale")
    def health() -> JSONResponse:
        body = service.health()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/v1/skus/{sku}/availability", dependencies=read, tags=["availability"], response_model=dict[str, Any])
    def availability(
        sku: Annotated[str, Path(min_length=1, max_length=64, pattern=_SKU_PATTERN)],
        lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
        lon: Annotated[float | None, Query(ge=-180, le=180)] = None,
        radius_km: Annotated[float | None, Query(gt=0, le=2000)] = None,
        by: Annotated[
            datetime | None, Query(description="ATP by this date: ATP plus unpromised inbound due by then")
        ] = None,
    ) -> Response:
        """Every site's position of a sku: by site, nearest first from a point, and by a date."""
        by_ms = None
        if by is not None:
            if by.tzinfo is None:
                msg = "by: give a time zone, e.g. 2026-11-26T18:00:00Z"
                raise InvalidRequest(msg)
            by_ms = int(by.timestamp() * 1000)
        answer = service.availability(sku, lat=lat, lon=lon, radius_km=radius_km, by=by_ms)
        return Response(availability_json(answer), media_type="application/json")

    @app.post("/v1/promise", dependencies=read, tags=["promise"], response_model=PromiseOut)
    def make_promise(body: PromiseBody) -> Response:
        """The best `limit` options for a sku or a basket, ranked, with why other sources were excluded."""
        items = [(item.sku, item.qty) for item in body.items]
        result = service.promise(
            items, lat=body.lat, lon=body.lon, radius_km=body.radius_km, appointment=body.appointment,
            limit=body.limit, explain=body.explain,
        )  # fmt: skip
        # The bytes PromiseOut would serialise to (tests/component/omni_ledger/test_api_hot.py), encoded once.
        return Response(promise_json(result), media_type="application/json")

    @app.post("/v1/confirm", dependencies=write, tags=["promise"])
    def confirm(body: ConfirmBody, request: Request) -> ConfirmOut:
        """Reserve the chosen option through the ledger; answers with the fold's decision."""
        items = [(item.sku, item.qty) for item in body.items]
        key = request.headers.get("idempotency-key")
        result = service.confirm(
            items, body.option_id, lat=body.lat, lon=body.lon, radius_km=body.radius_km,
            appointment=body.appointment, customer=body.customer, order_id=body.order_id,
            idempotency_key=key[:200] if key else None,
        )  # fmt: skip
        return ConfirmOut.of(result)

    @app.get("/v1/reservations/{reservation_id:path}", dependencies=read, tags=["promise"])
    def reservation(reservation_id: Annotated[str, _ID]) -> dict[str, Any]:
        """A reservation's latest status."""
        return service.reservation(reservation_id)

    @app.get("/v1/sites/{site_id}/positions", dependencies=read, tags=["sites"])
    def positions(site_id: Annotated[str, _ID]) -> dict[str, Any]:
        """Every position of a site, and its appointment slots."""
        return service.positions(site_id)

    @app.get("/v1/stores/{site_id}/tasks", dependencies=read, tags=["execution"])
    def tasks(
        site_id: Annotated[str, _ID],
        status: Annotated[str | None, Query(pattern="^(OPEN|DONE|CANCELLED)$")] = None,
    ) -> dict[str, Any]:
        """A store's tasks: isolate units for a shuttle, prepare a pickup."""
        return service.tasks(site_id, status)

    @app.get("/v1/runs/{run_id}/loads", dependencies=read, tags=["execution"])
    def load_plan(run_id: Annotated[str, _ID]) -> dict[str, Any]:
        """The load plan of one shuttle run."""
        return service.load_plan(run_id)

    @app.get("/v1/dropship-orders", dependencies=read, tags=["execution"])
    def orders(supplier_id: Annotated[str | None, Query(max_length=64, pattern=_ID_PATTERN)] = None) -> dict[str, Any]:
        """Dropship and marketplace orders."""
        return service.orders(supplier_id)

    @app.get("/v1/whoami", tags=["console"], summary="What the presented token may do")
    def whoami(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> dict[str, Any]:
        """`write`, `read` or `anonymous`, and whether reads need a token: the console greys out what it may not do."""
        role = auth.role(credentials.credentials if credentials else None)
        return {"role": role or "anonymous", "open_reads": auth.open_reads}

    @app.get("/v1/network/sites", dependencies=read, tags=["console"])
    def sites() -> dict[str, Any]:
        """The sites of the network: id, name, kind, coordinates, time zone (IANA)."""
        return {
            "sites": [
                {"site_id": x.id, "name": x.name, "kind": x.kind.value, "lat": x.lat, "lon": x.lon, "tz": x.tz}
                for x in service.network.sites
            ]
        }

    @app.get("/v1/loads", dependencies=read, tags=["execution"])
    def all_loads() -> dict[str, Any]:
        """Every parcel on every shuttle run, by departure: the transport planner's board."""
        return service.runs()

    @app.post("/v1/tasks/{task_id:path}/picked", dependencies=write, tags=["execution"], status_code=202)
    def picked(task_id: Annotated[str, _ID]) -> dict[str, Any]:
        """The clerk isolated the units in their labelled parcel (emits TRANSFER_PICKED)."""
        return _sent(service.mark_picked(task_id))

    @app.post("/v1/loads/{parcel_id}/loaded", dependencies=write, tags=["execution"], status_code=202)
    def loaded(parcel_id: Annotated[str, _ID]) -> dict[str, Any]:
        """The driver scanned the parcel onto its shuttle (emits SHUTTLE_LOADED)."""
        return _sent(service.mark_loaded(parcel_id))

    @app.post("/v1/loads/{parcel_id}/arrived", dependencies=write, tags=["execution"], status_code=202)
    def arrived(parcel_id: Annotated[str, _ID]) -> dict[str, Any]:
        """The parcel was scanned in at its destination (emits SHUTTLE_ARRIVED)."""
        return _sent(service.mark_arrived(parcel_id))

    @app.get(
        "/v1/parcels/{parcel_id}/barcode.svg",
        dependencies=read,
        tags=["execution"],
        response_class=Response,
        responses={200: {"content": {"image/svg+xml": {}}}},
    )
    def barcode(parcel_id: Annotated[str, _ID]) -> Response:
        """A Code 128 barcode of a planned parcel's id, for its printed label."""
        service.parcel(parcel_id)  # 404 for a parcel on no load plan
        try:
            svg = code128_svg(parcel_id)
        except ValueError as exc:
            msg = f"parcel id {parcel_id!r} cannot be printed as Code 128: {exc}"
            raise InvalidRequest(msg) from exc
        return Response(svg, media_type="image/svg+xml")

    mount_console(app)
    # Inside the body limit and the timing: a hot answer is limited and counted like any other.
    app.add_middleware(
        HotRoutes,
        service=service,
        role=auth.role,
        open_reads=auth.open_reads,
        routes={route.path: route for route in app.routes if hasattr(route, "path")},
        availability_model=AvailabilityParams,
        promise_model=PromiseBody,
        error_response=_error_response,
    )
    app.add_middleware(_BodyLimit, limit=MAX_BODY_BYTES)
    instrument_app(app)
    return app


def _sent(event: InventoryEvent) -> dict[str, Any]:
    """The answer to an action: the event is on its way to the fold (202), not yet applied."""
    return {"event_id": event.event_id, "type": event.type.value, "site_id": event.site_id, "ref": event.ref}
