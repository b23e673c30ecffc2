"""One table from gRPC status to HTTP, and the exception handlers registered once.

A 5xx body never carries ``str(exc)``. Deterministic failures carry ``x-should-retry: false``
so the SDKs (which retry 409 and 5xx by default) don't repeat them.
"""

from __future__ import annotations

import logging

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.field_errors import field_errors
from gateway.filters import FilterError

log = logging.getLogger(__name__)

GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.OUT_OF_RANGE: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    # A damaged index: retrying does not help, rebuilding it does (the detail says how).
    grpc.StatusCode.DATA_LOSS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 499,
}
_RETRYABLE = {408, 429, 499, 503, 504}


def http_status(code: grpc.StatusCode) -> int:
    return GRPC_TO_HTTP.get(code, 500)


def error_response(status: int, detail: object, headers: dict[str, str] | None = None) -> JSONResponse:
    out = {"x-should-retry": "true" if status in _RETRYABLE else "false"}
    out.update(headers or {})
    return JSONResponse(status_code=status, content={"detail": detail}, headers=out)


def field_error(loc: tuple[str | int, ...], msg: str, kind: str = "value_error") -> JSONResponse:
    return error_response(422, [{"loc": list(loc), "msg": msg, "type": kind}])


async def _grpc_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, grpc.aio.AioRpcError)
    status = http_status(exc.code())
    if status >= 500:
        log.error("backend call failed: %s %s", exc.code().name, exc.details())
        messages = {503: "a backend service is unavailable", 504: "a backend service timed out"}
        # Worth retrying soon: a restarted process or a closing breaker answers within seconds.
        retry = {"retry-after": str(round(getattr(exc, "retry_after", 1)))} if status in (503, 504) else None
        return error_response(status, messages.get(status, "internal error"), retry)
    if status == 422:
        return field_error(("body",), exc.details() or "invalid argument")
    return error_response(status, exc.details() or exc.code().name.lower())


async def _filter_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FilterError)
    return field_error(exc.loc, exc.msg)


async def _timeout(request: Request, exc: Exception) -> JSONResponse:
    return error_response(504, "request deadline exceeded")


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, field_errors(exc.errors()))


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, exc.detail, dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal error")


def register(app: FastAPI) -> None:
    app.add_exception_handler(grpc.aio.AioRpcError, _grpc_error)
    app.add_exception_handler(FilterError, _filter_error)
    app.add_exception_handler(TimeoutError, _timeout)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
