"""The gateway's composition root: settings -> backends, cache, auth -> FastAPI app."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from gateway import errors
from gateway.auth import Authenticator
from gateway.backends import Backends
from gateway.cache import Cache, LruCache, RedisCache
from gateway.routes import catalog, media, pipelines, retrieval
from gateway.settings import GatewaySettings
from services.common.logging import request_id

log = logging.getLogger("gateway.access")


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
            rerank=settings.rerank_addr, files=settings.files_addr,
        )
        app.state.cache = build_cache(settings)
        app.state.auth = Authenticator(settings.auth_cache_seconds, settings.catalog_timeout_seconds)
        try:
            yield
        finally:
            await app.state.cache.close()
            await app.state.backends.close()

    app = FastAPI(title="Quarry", version="0.1.0", lifespan=lifespan)
    errors.register(app)
    app.include_router(retrieval.router)
    app.include_router(catalog.router)
    app.include_router(pipelines.router)
    app.include_router(media.router)

    @app.middleware("http")
    async def access_log(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        started = time.perf_counter()
        try:
            response = await call_next(request)
        finally:
            request_id.reset(token)
        response.headers["x-request-id"] = rid
        if request.url.path not in ("/healthz", "/readyz", "/metrics"):
            log.info(
                "%s %s %d %.1fms", request.method, request.url.path, response.status_code,
                (time.perf_counter() - started) * 1000,
                extra={"request_id": rid},
            )
        return response

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        """Ready when the gateway can answer a retrieve: files (auth, catalog) and at least one leg.
        A reranker or one leg down only degrades answers, so it does not take the gateway out."""
        health = await request.app.state.backends.health()
        serving = {name for name, v in health.items() if v == "SERVING"}
        ok = "files" in serving and bool(serving & {"dense", "sparse"})
        return JSONResponse({"ready": ok, "backends": health}, status_code=200 if ok else 503)

    return app
