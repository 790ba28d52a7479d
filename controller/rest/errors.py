"""How the API refuses: one JSON body ``{"error", "field"}`` with a 4xx status.

`install` adds to an app the middleware and the exception handlers that turn the
store's typed errors and FastAPI's validation errors into that body; `ERRORS` is what
the OpenAPI document says of every operation.
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from controller.store import StoreError
from controller.store.errors import InUse


class ErrorOut(BaseModel):
    """Every refused request: what is wrong and which field (dotted path) it is about."""
    error: str
    field: str
    errors: list[dict[str, Any]] | None = None
    ports: list[dict[str, Any]] | None = None   # 409 in use: the bound ports (host, port, ips)


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": what} for code, what in (
        (400, "bad request"),
        (401, "a valid bearer token is required (when the controller has one)"),
        (404, "no such tenant, port, host, switch or QoS id"),
        (409, "conflicts with the current state (in use, already exists, switch not answering)"),
        (422, "a field is invalid; `field` names it"),
        (503, "the state database or the OpenFlow event loop cannot serve the request now"))}


class Unauthorized(StoreError):
    status = 401


async def _one_segment_per_name(request: Request, call_next: Any) -> Any:
    """ASGI decodes %2F before routing: 'red%2Fports' would become another resource."""
    raw = request.scope.get("raw_path") or b""
    if b"%2f" in raw.lower() or b"%5c" in raw.lower():
        return JSONResponse({"error": "a name in the path cannot contain '/' or '\\'",
                             "field": "path"}, status_code=404)
    return await call_next(request)


async def _store_error(_: Request, exc: StoreError) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.message, "field": exc.field}
    if isinstance(exc, InUse):
        body["ports"] = exc.ports
    return JSONResponse(body, status_code=exc.status)


def _where(e: Any) -> str:
    """A validation error's location as the dotted field a user wrote."""
    return ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "path", "query"))[:200]


async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()[:20]
    first = errors[0] if errors else {}
    return JSONResponse({"error": str(first.get("msg", "invalid request"))[:300],
                         "field": _where(first),
                         "errors": [{"field": _where(e), "error": str(e.get("msg"))[:300]}
                                    for e in errors]},
                        status_code=422)


def install(app: FastAPI) -> None:
    """The middleware and the exception handlers of the error body."""
    app.middleware("http")(_one_segment_per_name)
    app.exception_handler(StoreError)(_store_error)
    app.exception_handler(RequestValidationError)(_invalid)
