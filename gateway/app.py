"""The gateway's composition root: settings -> backends, cache, auth -> FastAPI app."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import console, errors, grpc_api, openapi
from gateway.admission import Admission, LocalRateLimiter, RateLimiter, RedisRateLimiter, Stage
from gateway.admission import register as admission_errors
from gateway.auth import Authenticator
from gateway.backends import Backends, Stages
from gateway.cache import Cache, IndexCache, LruCache, RedisCache
from gateway.routes import admin, catalog, media, pipelines, retrieval
from gateway.settings import GatewaySettings
from gateway.usecases import UseCases
from gateway.validation import RejectSurrogates
from services.common.logging import request_id
from services.common.telemetry import HTTP_REQUESTS, HTTP_SECONDS, configure_tracing, instrument_fastapi

log = logging.getLogger("gateway.access")


_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class AccessLog:
    """Request id (the caller's ``x-request-id`` when it is a plain token, else a new one) in the
    logging context and the response headers, one access-log line per request, and the request
    counted and timed per route template (``unmatched`` for paths no route serves).

    A pure ASGI middleware: Starlette's ``BaseHTTPMiddleware`` runs every request through an extra
    task and memory stream, which showed in the gateway's profile.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        token = request_id.set(rid)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            HTTP_REQUESTS.labels(route, scope["method"], str(status)).inc()
            HTTP_SECONDS.labels(route, scope["method"]).observe(seconds)
            if scope["path"] not in _QUIET_PATHS:
                log.info("%s %s %d %.1fms", scope["method"], scope["path"], status, seconds * 1000,
                         extra={"request_id": rid})


def build_limiter(settings: GatewaySettings) -> RateLimiter | None:
    """The per-key rate limiter: shared through Redis when the gateway has one; off at rate 0."""
    rate = settings.admission.rate_per_key
    if rate <= 0:
        return None
    burst = settings.admission.burst_per_key
    if settings.redis_url:
        return RedisRateLimiter(settings.redis_url, rate, burst)
    return LocalRateLimiter(rate, burst)


def package_version() -> str:
    try:
        return version("quarry")
    except PackageNotFoundError:  # a tree that is not installed
        return "0.0.0"


def build_cache(settings: GatewaySettings) -> Cache:
    if settings.redis_url:
        return RedisCache(settings.redis_url)
    return LruCache(settings.cache_entries)


def create_app(settings: GatewaySettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.backends = Backends(
            dense=settings.dense_addr, sparse=settings.sparse_addr,
            rerank=settings.rerank_addr, files=settings.files_addr, auth=settings.service_auth,
        )
        admission = settings.admission
        app.state.backends.stages = Stages(
            retrieve=Stage("retrieve", admission.retrieve_concurrency, admission.retrieve_queue),
            rerank=Stage("rerank", admission.rerank_concurrency, admission.rerank_queue),
        )
        app.state.cache = build_cache(settings)
        app.state.indexes = IndexCache(settings.index_cache_seconds)
        app.state.auth = Authenticator(settings.auth_cache_seconds, settings.catalog_timeout_seconds)
        app.state.usecases = UseCases(settings, app.state.backends, app.state.cache, app.state.indexes,
                                      app.state.auth)
        grpc_server = None
        if settings.grpc_port is not None:
            grpc_server, app.state.grpc_port = await grpc_api.start(settings.host, settings.grpc_port,
                                                                    app.state.usecases, limiter)
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(settings.grace_seconds)
            await app.state.cache.close()
            await app.state.backends.close()
            if limiter is not None:
                await limiter.close()

    configure_tracing("gateway")
    app = FastAPI(
        title="Quarry", version=package_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
        description="Self-hosted retrieval behind the LlamaCloud API: hybrid search, reranking, metadata "
                    "filters and file find/grep/read. Authenticate with `Authorization: Bearer <API key>`.",
        generate_unique_id_function=openapi.operation_id,
    )
    errors.register(app)
    admission_errors(app)
    for router in (retrieval.router, catalog.router, pipelines.router, media.router, admin.router):
        app.include_router(router, responses=openapi.ERROR_RESPONSES)
    openapi.install(app)
    console.mount(app)  # the browser console at /console (static; outside the OpenAPI document)

    app.add_middleware(RejectSurrogates)
    limiter = build_limiter(settings)
    app.add_middleware(Admission, limiter=limiter, max_body_bytes=settings.admission.max_body_mb * 1024 * 1024,
                       max_upload_bytes=settings.max_upload_bytes + 1024 * 1024)
    app.add_middleware(AccessLog)
    instrument_fastapi(app)  # outermost: the trace starts before anything else runs

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus metrics of this gateway process."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        """Ready when the gateway can answer a retrieve: files (auth, catalog) and at least one leg.
        A reranker or one leg down only degrades answers, so it does not take the gateway out;
        ``down`` names every component that is not serving either way; ``damaged_indexes.sparse``
        is ``null`` when sparse did not say (down, or not answering within the probe's second)."""
        backends = request.app.state.backends
        health, damaged = await asyncio.gather(backends.health(), backends.damaged_indexes())
        serving = {name for name, v in health.items() if v == "SERVING"}
        ok = "files" in serving and bool(serving & {"dense", "sparse"})
        down = sorted(set(health) - serving)
        known = None if damaged is None else sorted(damaged)
        body = {"ready": ok, "down": down, "backends": health, "damaged_indexes": {"sparse": known}}
        return JSONResponse(body, status_code=200 if ok else 503)

    return app
