"""Response cache: an in-process LRU by default, Redis when a URL is configured.

Keys hash (index id, index generation, normalised request). The generation changes on every
completed sync and on delete, so an entry can never be served after its index changed; old
entries simply age out. A cache that fails (Redis down) is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

from services._proto.quarry.files.v1 import files_pb2
from services.common.telemetry import CACHE_REQUESTS

log = logging.getLogger(__name__)


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None: ...

    async def close(self) -> None: ...


def cache_key(kind: str, index_id: str, generation: int, request: dict[str, Any]) -> str:
    body = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(body.encode()).hexdigest()
    return f"quarry:{kind}:{index_id}:{generation}:{digest}"


class LruCache:
    """Bounded LRU with per-entry expiry, for one process (the embedded default)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._max = max_entries
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is not None and item[0] < time.monotonic():
            del self._data[key]
            item = None
        _count("response", item is not None)
        if item is None:
            return None
        self._data.move_to_end(key)
        return item[1]

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        self._data[key] = (time.monotonic() + ttl_seconds, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    async def close(self) -> None:
        self._data.clear()


class RedisCache:
    """Redis-backed cache shared by every gateway replica. Timeouts keep a slow Redis from
    slowing queries down: past them the lookup is a miss."""

    def __init__(self, url: str, *, timeout_seconds: float = 0.05) -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=max(timeout_seconds, 0.5)
        )

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(key)
        except Exception as exc:  # a cache failure is a miss
            log.warning("redis get failed: %s", type(exc).__name__)
            value = None
        _count("response", isinstance(value, bytes))
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        try:
            await self._redis.set(key, value, px=max(1, int(ttl_seconds * 1000)))
        except Exception as exc:
            log.warning("redis set failed: %s", type(exc).__name__)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self._redis.aclose()


class IndexCache:
    """The query path's view of the catalog: (project, index id) -> the index, for ``ttl`` seconds.

    A retrieve needs its index only to check that it belongs to the caller and to key the
    response cache by its generation; asking the files service each time was most of a cache
    hit's latency. Every other route reads the index afresh and refreshes this view, and a
    delete through this gateway forgets it, so a client that polls a sync until it succeeded
    (as the official clients do) queries the new generation at once. What another replica did
    is seen here after at most ``ttl`` seconds. ``ttl`` 0 turns the view off.
    """

    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._data: dict[tuple[str, str], tuple[float, files_pb2.Index]] = {}

    def get(self, project_id: str, index_id: str) -> files_pb2.Index | None:
        item = self._data.get((project_id, index_id))
        if self._ttl <= 0:
            return None
        fresh = item is not None and item[0] >= time.monotonic()
        _count("index", fresh)
        return item[1] if item is not None and fresh else None

    def put(self, project_id: str, index: files_pb2.Index, *asked: str) -> None:
        """Remember ``index`` under its id and any other id it was asked for by."""
        if self._ttl <= 0:
            return
        if len(self._data) >= self._max:
            self._data.clear()
        expires = time.monotonic() + self._ttl
        for index_id in {index.id, *asked}:
            self._data[(project_id, index_id)] = (expires, index)

    def forget(self, project_id: str, index_id: str) -> None:
        for key in [k for k, (_, index) in self._data.items()
                    if k[0] == project_id and index_id in (k[1], index.id)]:
            del self._data[key]


def _count(cache: str, hit: bool) -> None:
    CACHE_REQUESTS.labels(cache, "hit" if hit else "miss").inc()
