"""The per-backend circuit breaker: opens after outages in a row, probes once per cooldown,
closes on a success; health checks pass untouched; the catalog's timeouts become UNAVAILABLE."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from gateway.breaker import Breaker, BreakerOpen


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Details:
    method: str = "/quarry.dense.v1.DenseSearch/Search"


def _error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=code.name)


def backend(outcomes: list[grpc.StatusCode | None]) -> tuple[Callable[..., Awaitable[Any]], list[int]]:
    """A continuation answering each call with the next outcome (None: success)."""
    calls: list[int] = []

    async def continuation(details: Details, request: object) -> Any:
        calls.append(1)
        outcome = outcomes.pop(0)

        async def call() -> str:
            if outcome is not None:
                raise _error(outcome)
            return "ok"

        return call()

    return continuation, calls


async def _run(breaker: Breaker, continuation: Callable[..., Awaitable[Any]],
               details: Details | None = None) -> str | grpc.StatusCode:
    try:
        result = await breaker.intercept_unary_unary(continuation, details or Details(), object())
        return str(await result if inspect.isawaitable(result) else result)  # a passed-through call
    except BreakerOpen:
        return "open"
    except grpc.aio.AioRpcError as exc:
        return exc.code()


async def test_opens_after_consecutive_outages_and_fails_fast() -> None:
    clock = Clock()
    breaker = Breaker("dense", failures=3, cooldown=1.0, clock=clock)
    continuation, calls = backend([grpc.StatusCode.UNAVAILABLE, None, grpc.StatusCode.DEADLINE_EXCEEDED,
                                   grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
    results = [await _run(breaker, continuation) for _ in range(7)]
    assert results == [grpc.StatusCode.UNAVAILABLE, "ok", grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, "open", "open"]
    assert len(calls) == 5 and breaker.open  # the two refused calls never reached the backend
    assert breaker.retry_after() == pytest.approx(1.0)


async def test_probes_once_per_cooldown_and_closes_on_success() -> None:
    clock = Clock()
    breaker = Breaker("sparse", failures=1, cooldown=1.0, clock=clock)
    continuation, calls = backend([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, None, None])
    assert await _run(breaker, continuation) == grpc.StatusCode.UNAVAILABLE
    assert await _run(breaker, continuation) == "open"
    clock.now += 1.0
    assert await _run(breaker, continuation) == grpc.StatusCode.UNAVAILABLE  # the probe failed: open again
    assert await _run(breaker, continuation) == "open"
    clock.now += 1.0
    assert await _run(breaker, continuation) == "ok"  # the probe succeeded
    assert not breaker.open
    assert await _run(breaker, continuation) == "ok"
    assert len(calls) == 4


async def test_other_errors_do_not_count_and_health_is_never_blocked() -> None:
    breaker = Breaker("files", failures=1, cooldown=60, clock=Clock())
    continuation, _ = backend([grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, None])
    assert await _run(breaker, continuation) == grpc.StatusCode.NOT_FOUND
    assert await _run(breaker, continuation) == grpc.StatusCode.INVALID_ARGUMENT
    assert not breaker.open
    continuation, _ = backend([grpc.StatusCode.UNAVAILABLE, None])
    assert await _run(breaker, continuation) == grpc.StatusCode.UNAVAILABLE
    assert await _run(breaker, continuation) == "open"
    health = Details("/grpc.health.v1.Health/Check")
    assert await _run(breaker, continuation, health) == "ok"


async def test_for_the_catalog_a_timeout_is_reported_as_unavailable() -> None:
    breaker = Breaker("files", failures=5, timeout_is_outage=True, clock=Clock())
    continuation, _ = backend([grpc.StatusCode.DEADLINE_EXCEEDED])
    assert await _run(breaker, continuation) == grpc.StatusCode.UNAVAILABLE
