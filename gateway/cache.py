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
        if item is None:
            return None
        expires, value = item
        if expires < time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

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
            return None
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
