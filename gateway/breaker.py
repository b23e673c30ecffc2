"""A circuit breaker per backend, as a gRPC client interceptor on that backend's channel.

A backend that stops answering (a hung process, a long GC pause, a killed pod whose address
still accepts connections) would otherwise cost every request its whole deadline. After
``failures`` calls in a row fail with UNAVAILABLE or DEADLINE_EXCEEDED the breaker opens:
calls fail at once with UNAVAILABLE, which the existing policy turns into a degraded answer
(a retrieval leg, the reranker) or a 503 with ``Retry-After`` (the catalog). Every
``cooldown`` seconds one call is let through as a probe; its success closes the breaker, so a
backend that comes back is used again within about one cooldown.

For the catalog a timeout is an outage (its calls take milliseconds), so ``timeout_is_outage``
reports it as UNAVAILABLE: the caller answers 503 rather than 504.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

_OUTAGE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_EXEMPT = ("/grpc.health.v1.Health/",)


class BreakerOpen(grpc.aio.AioRpcError):  # type: ignore[misc]
    """The call was not made: the backend is known to be down."""

    def __init__(self, backend: str, retry_after: float) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                         details=f"{backend} is not answering; retry after {retry_after:.0f} s")
        self.retry_after = retry_after


class Breaker(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Closed -> open after ``failures`` outages in a row -> one probe per ``cooldown`` -> closed."""

    def __init__(self, backend: str, *, failures: int = 3, cooldown: float = 1.0, timeout_is_outage: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self._failures = failures
        self._cooldown = cooldown
        self._timeout_is_outage = timeout_is_outage
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def open(self) -> bool:
        return self._opened_at is not None

    def retry_after(self) -> float:
        """Seconds until the next probe (what a 503's ``Retry-After`` says)."""
        if self._opened_at is None:
            return self._cooldown
        return max(1.0, self._cooldown - (self._clock() - self._opened_at))

    def _admit(self) -> bool:
        with self._lock:
            if self._opened_at is None:
                return True
            if not self._probing and self._clock() - self._opened_at >= self._cooldown:
                self._probing = True
                return True
            return False

    def record(self, outage: bool) -> None:
        with self._lock:
            if not outage:
                self._consecutive, self._opened_at, self._probing = 0, None, False
                return
            self._consecutive += 1
            if self._probing or self._consecutive >= self._failures:
                self._opened_at = self._clock()
            self._probing = False

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if method.startswith(_EXEMPT):
            return await continuation(details, request)
        if not self._admit():
            raise BreakerOpen(self.backend, self.retry_after())
        try:
            call = await continuation(details, request)
            response = await call
        except grpc.aio.AioRpcError as exc:
            self._fail(exc)
            raise
        self.record(False)
        return response

    def _fail(self, exc: grpc.aio.AioRpcError) -> None:
        outage = exc.code() in _OUTAGE
        self.record(outage)
        if outage and self._timeout_is_outage and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, exc.initial_metadata(), exc.trailing_metadata(),
                details=f"{self.backend} did not answer in time",
            ) from exc
