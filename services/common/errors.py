"""Each service's errors derive from these; servicers map them to gRPC status once."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc


class QuarryError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class NotFound(QuarryError):
    code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(QuarryError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class AlreadyExists(QuarryError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(QuarryError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(QuarryError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Unavailable(QuarryError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(QuarryError):
    """Stored data cannot be read (a damaged index): retrying does not help, rebuilding does."""

    code = grpc.StatusCode.DATA_LOSS


async def abort_for(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    """Abort the RPC with the status for ``exc``; unknown errors become INTERNAL, message hidden."""
    if isinstance(exc, QuarryError):
        await context.abort(exc.code, str(exc))
    if isinstance(exc, TimeoutError):
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


_M = TypeVar("_M", bound=Callable[..., Awaitable[Any]])


def mapped(method: _M) -> _M:
    """Decorate a servicer method: domain errors -> gRPC status; unexpected ones logged once."""
    log = logging.getLogger(method.__module__)

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            if not isinstance(exc, QuarryError | TimeoutError):
                log.exception("%s failed", method.__name__)
            await abort_for(context, exc)

    return wrapper  # type: ignore[return-value]
