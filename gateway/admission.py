"""Admission control: what the gateway refuses before it does any work, so that a burst fails
fast with a status that says when to come back, instead of queueing until its deadline.

- **Rate limit per API key**: a token bucket (``rate`` per second, ``burst`` deep) per key,
  keyed by the key's digest. In Redis when the gateway has one (every replica shares the
  buckets: one atomic Lua script per request), in process otherwise. Over the limit: 429 with
  ``Retry-After``. A Redis that does not answer in time lets the request through (the limit is
  a guard, not a dependency).
- **Body size**: a declared ``Content-Length`` over the limit is refused at once, an undeclared
  (chunked) body as soon as it passes the limit: 413.
- **Load shedding**: each expensive stage (a retrieve as a whole, the rerank call) admits a
  bounded number of requests at once and lets a bounded number wait; a request that would wait
  beyond that is shed at once: a retrieve with 503 and ``Retry-After``, a rerank by answering
  with the fused order, flagged ``degraded``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_response

log = logging.getLogger(__name__)

#: Paths outside admission control (probes, the API's own description).
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc"})


class RateLimiter(Protocol):
    async def take(self, key: str) -> float:
        """Take a token for ``key``: 0 when the request may go on, else the seconds to wait."""
        ...

    async def close(self) -> None: ...


class LocalRateLimiter:
    """Token buckets in this process (one gateway, or no Redis): at most ``max_keys`` buckets,
    the least recently used forgotten first (a forgotten key starts with a full bucket)."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._max = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def take(self, key: str) -> float:
        now = time.monotonic()
        tokens, last = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self._rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait

    async def close(self) -> None:
        self._buckets.clear()


# KEYS[1] the bucket; ARGV rate, burst, now (s); returns the wait in milliseconds (0: taken).
_TAKE = """
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens, ts = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate * 1000) end
redis.call('HSET', KEYS[1], 't', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
"""


class RedisRateLimiter:
    """Token buckets in Redis, shared by every gateway replica."""

    def __init__(self, url: str, rate: float, burst: int, *, timeout_seconds: float = 0.05,
                 prefix: str = "quarry:rl:") -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url, socket_timeout=timeout_seconds,
                                           socket_connect_timeout=max(timeout_seconds, 0.5))
        self._script: Any = self._redis.register_script(_TAKE)
        self._rate = rate
        self._burst = burst
        self._prefix = prefix

    async def take(self, key: str) -> float:
        try:
            wait_ms = await self._script(keys=[self._prefix + key], args=[self._rate, self._burst, time.time()])
        except Exception as exc:  # a limiter that cannot be asked does not refuse
            log.warning("rate limiter unavailable (%s); request admitted", type(exc).__name__)
            return 0.0
        return float(wait_ms) / 1000.0

    async def close(self) -> None:
        await self._redis.aclose()


def key_digest(authorization: str) -> str | None:
    """The bucket of a request: a digest of its bearer token (None without one: auth answers 401)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return hashlib.sha256(token.strip().encode()).hexdigest()[:32]


class Admission:
    """Pure ASGI middleware: the rate limit per key and the body size limit."""

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter | None, max_body_bytes: int,
                 max_upload_bytes: int) -> None:
        self.app = app
        self._limiter = limiter
        self._max_body = max_body_bytes
        self._max_upload = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self._limiter is not None:
            digest = key_digest(headers.get(b"authorization", b"").decode("latin-1"))
            if digest is not None:
                wait = await self._limiter.take(digest)
                if wait > 0:
                    retry = str(max(1, math.ceil(wait)))
                    await error_response(429, "rate limit exceeded for this API key",
                                         {"retry-after": retry})(scope, receive, send)
                    return
        limit = self._max_upload if b"multipart/" in headers.get(b"content-type", b"") else self._max_body
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, _bounded(receive, limit), tracking)
        except BodyTooLarge:
            if started:
                raise
            await _too_large(limit)(scope, receive, send)


def _too_large(limit: int) -> Any:
    return error_response(413, f"request body over the {limit // (1024 * 1024)} MiB limit")


class BodyTooLarge(HTTPException):
    """An undeclared body grew past the limit while it was read: an HTTP exception, so FastAPI lets
    it through its body parsing (which turns other errors into 400) to the 413 handler."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the {limit // (1024 * 1024)} MiB limit")
        self.limit = limit


def _bounded(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def bounded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return bounded


class Shed(Exception):
    """A stage is full: the request is refused at once instead of waiting."""

    def __init__(self, stage: str, retry_after: float) -> None:
        super().__init__(f"the {stage} stage is saturated; retry after {retry_after:.0f} s")
        self.stage = stage
        self.retry_after = retry_after


def register(app: Any) -> None:
    """The 503 with ``Retry-After`` of a shed request."""

    async def shed(request: Any, exc: Exception) -> Any:
        assert isinstance(exc, Shed)
        return error_response(503, str(exc), {"retry-after": str(max(1, math.ceil(exc.retry_after)))})

    app.add_exception_handler(Shed, shed)


class Stage:
    """At most ``concurrency`` requests in a stage at once and ``queue`` more waiting; a request
    beyond both is shed at once (``Shed``), and so is one that would not get through in time:
    with ``within`` (seconds it can wait and run), the stage estimates its wait from the requests
    ahead of it and the recent time per request (an exponential average), and sheds at once
    rather than let the caller's deadline pass in the queue."""

    #: Weight of the newest observation in the average time per request.
    _ALPHA = 0.2

    def __init__(self, name: str, concurrency: int, queue: int) -> None:
        self.name = name
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._capacity = concurrency + queue
        self._inside = 0  # running or waiting
        self.seconds_per_request = 0.0  # 0: nothing observed yet

    @property
    def load(self) -> int:
        """Requests running or waiting in the stage now."""
        return self._inside

    def expected_seconds(self) -> float:
        """How long a request admitted now would take to get a slot and finish, on recent form."""
        ahead = max(0, self._inside - self._concurrency + 1)  # waiting before it gets a slot
        return (ahead / self._concurrency + 1.0) * self.seconds_per_request

    @asynccontextmanager
    async def admit(self, within: float | None = None) -> AsyncIterator[None]:
        if self._inside >= self._capacity:
            raise Shed(self.name, 1.0)
        if within is not None and self.expected_seconds() > within:
            raise Shed(self.name, 1.0)
        self._inside += 1
        try:
            async with self._slots:
                started = time.monotonic()
                try:
                    yield
                finally:
                    took = time.monotonic() - started
                    previous = self.seconds_per_request
                    self.seconds_per_request = took if previous == 0 else (
                        self._ALPHA * took + (1 - self._ALPHA) * previous)
        finally:
            self._inside -= 1
