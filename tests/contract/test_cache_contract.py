"""The same scenarios against every cache adapter: in-process LRU and real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.cache import Cache, LruCache, RedisCache, cache_key
from tests.servers import REDIS_URL, unavailable


@pytest.fixture(params=["lru", pytest.param("redis", marks=pytest.mark.redis)])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    if request.param == "lru":
        c: Cache = LruCache(max_entries=3)
    else:
        redis_cache = RedisCache(REDIS_URL, timeout_seconds=1.0)
        if not await redis_cache.ping():
            await redis_cache.close()
            unavailable(f"Redis not reachable at {REDIS_URL}")
        c = redis_cache
    yield c
    await c.close()


def key(name: str) -> str:
    return cache_key("test", f"idx-{uuid.uuid4().hex}", 1, {"q": name})


async def test_miss_then_hit(cache: Cache) -> None:
    k = key("a")
    assert await cache.get(k) is None
    await cache.set(k, b"payload", 60)
    assert await cache.get(k) == b"payload"


async def test_entries_expire(cache: Cache) -> None:
    k = key("b")
    await cache.set(k, b"x", 0.05)
    await asyncio.sleep(0.2)
    assert await cache.get(k) is None


def test_key_changes_with_generation_and_request_but_not_with_field_order() -> None:
    base = cache_key("retrieve", "i", 1, {"a": 1, "b": 2})
    assert base == cache_key("retrieve", "i", 1, {"b": 2, "a": 1})
    assert base != cache_key("retrieve", "i", 2, {"a": 1, "b": 2})
    assert base != cache_key("retrieve", "i", 1, {"a": 1, "b": 3})


async def test_lru_evicts_least_recently_used() -> None:
    c = LruCache(max_entries=2)
    await c.set("a", b"1", 60)
    await c.set("b", b"2", 60)
    assert await c.get("a") == b"1"  # a is now most recent
    await c.set("c", b"3", 60)
    assert await c.get("b") is None
    assert await c.get("a") == b"1" and await c.get("c") == b"3"


async def test_unreachable_redis_is_a_miss_not_an_error() -> None:
    c = RedisCache("redis://127.0.0.1:1/0", timeout_seconds=0.2)
    await c.set("k", b"v", 10)
    assert await c.get("k") is None
    await c.close()
