"""API key -> project. Keys are checked by the files service (stored hashed there); a short
in-process cache keeps that call off the hot path."""

from __future__ import annotations

import hashlib
import time

import grpc
from fastapi import HTTPException, Request

from services._proto.quarry.files.v1 import files_pb2
from services.common.telemetry import CACHE_REQUESTS


class Authenticator:
    def __init__(self, cache_seconds: float, timeout: float) -> None:
        self._ttl = cache_seconds
        self._timeout = timeout
        self._cache: dict[str, tuple[float, files_pb2.Project]] = {}

    async def project(self, request: Request) -> files_pb2.Project:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "missing bearer API key", headers={"www-authenticate": "Bearer"})
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        cached = self._cache.get(digest)
        fresh = cached is not None and cached[0] > time.monotonic()
        CACHE_REQUESTS.labels("api_key", "hit" if fresh else "miss").inc()
        if cached and fresh:
            return cached[1]
        try:
            project = await request.app.state.backends.files.Authenticate(
                files_pb2.AuthenticateRequest(api_key=token.strip()), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise HTTPException(401, "invalid API key", headers={"www-authenticate": "Bearer"}) from None
            raise
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + self._ttl, project)
        return project


async def current_project(request: Request) -> files_pb2.Project:
    """FastAPI dependency: the caller's project, or 401."""
    auth: Authenticator = request.app.state.auth
    return await auth.project(request)
