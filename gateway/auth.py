"""API key -> identity (project and key). Keys are checked by the files service (stored hashed
there); a short in-process cache keeps that call off the hot path. A key revoked through this
gateway is forgotten at once; on other replicas it stops working within ``cache_seconds``."""

from __future__ import annotations

import hashlib
import time

import grpc
from fastapi import HTTPException, Request

from services._proto.quarry.files.v1 import files_pb2, files_pb2_grpc
from services.common.telemetry import CACHE_REQUESTS


class Unauthenticated(Exception):
    """No key, or one the catalog does not accept (unknown, expired, revoked)."""


class Authenticator:
    def __init__(self, cache_seconds: float, timeout: float) -> None:
        self._ttl = cache_seconds
        self._timeout = timeout
        self._cache: dict[str, tuple[float, files_pb2.Identity]] = {}

    async def identity(self, authorization: str, files: files_pb2_grpc.FilesStub) -> files_pb2.Identity:
        """The identity of an ``authorization`` value (``Bearer <key>``); ``Unauthenticated`` otherwise."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing bearer API key")
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        cached = self._cache.get(digest)
        fresh = cached is not None and cached[0] > time.monotonic()
        CACHE_REQUESTS.labels("api_key", "hit" if fresh else "miss").inc()
        if cached and fresh:
            return cached[1]
        try:
            identity = await files.AuthenticateKey(
                files_pb2.AuthenticateRequest(api_key=token.strip()), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise Unauthenticated(exc.details() or "invalid API key") from None
            raise
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + self._ttl, identity)
        return identity

    def forget_key(self, key_id: str) -> None:
        """Drop a key from the cache (it was revoked through this gateway)."""
        for digest in [d for d, (_, i) in self._cache.items() if i.key.id == key_id]:
            del self._cache[digest]

    def forget_project(self, project_id: str) -> None:
        for digest in [d for d, (_, i) in self._cache.items() if i.project.id == project_id]:
            del self._cache[digest]


async def current_identity(request: Request) -> files_pb2.Identity:
    """FastAPI dependency: the caller's identity, or 401."""
    try:
        return await request.app.state.usecases.authenticate(request.headers.get("authorization", ""))
    except Unauthenticated as exc:
        raise HTTPException(401, str(exc), headers={"www-authenticate": "Bearer"}) from None


async def current_project(request: Request) -> files_pb2.Project:
    """FastAPI dependency: the caller's project, or 401."""
    return (await current_identity(request)).project


async def admin_identity(request: Request) -> files_pb2.Identity:
    """FastAPI dependency: the caller's identity when its key is an admin key; 401 or 403 otherwise."""
    identity = await current_identity(request)
    if not identity.key.is_admin:
        raise HTTPException(403, "this route needs an admin API key")
    return identity
