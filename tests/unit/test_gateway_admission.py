"""Admission control: the per-key token bucket (in process and in Redis, shared by replicas), the
body size limit (declared and streamed), and load shedding of the retrieve and rerank stages."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from gateway.admission import LocalRateLimiter, RedisRateLimiter, Shed, Stage
from gateway.app import create_app
from gateway.auth import current_project
from gateway.settings import AdmissionSettings, GatewaySettings
from services._proto.quarry.files.v1 import files_pb2
from tests import servers


async def test_a_bucket_allows_its_burst_then_paces_at_the_rate() -> None:
    limiter = LocalRateLimiter(rate=10.0, burst=3)
    assert [await limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await limiter.take("k")
    assert 0.05 < wait <= 0.1
    assert await limiter.take("other") == 0.0  # buckets are per key
    await asyncio.sleep(0.12)
    assert await limiter.take("k") == 0.0


async def test_least_recently_used_buckets_are_forgotten_past_the_bound() -> None:
    limiter = LocalRateLimiter(rate=1.0, burst=1, max_keys=2)
    for key in ("a", "b", "c"):
        assert await limiter.take(key) == 0.0
    assert await limiter.take("a") == 0.0  # "a" was forgotten: a full bucket again
    assert await limiter.take("c") > 0


@pytest.fixture
def redis_url() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(servers.REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        servers.unavailable(f"Redis not reachable at {servers.REDIS_URL}: {exc!r}")
    finally:
        client.close()
    yield servers.REDIS_URL


async def test_replicas_share_the_buckets_through_redis(redis_url: str) -> None:
    prefix = f"quarry:rl-test:{uuid.uuid4().hex[:8]}:"
    one, two = (RedisRateLimiter(redis_url, rate=2.0, burst=4, prefix=prefix, timeout_seconds=1.0) for _ in range(2))
    try:
        taken = [await (one if i % 2 else two).take("key") for i in range(4)]
        assert taken == [0.0, 0.0, 0.0, 0.0]
        assert 0.3 < await one.take("key") <= 0.5  # the fifth request, on either replica, waits
        assert 0.3 < await two.take("key") <= 1.0
    finally:
        await one.close()
        await two.close()


async def test_an_unreachable_redis_admits_requests() -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:9/0", rate=1.0, burst=1, timeout_seconds=0.2)
    try:
        assert [await limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    finally:
        await limiter.close()


# -- through the app --------------------------------------------------------------------------------


@pytest.fixture
async def app_client() -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    # A slow refill (one token in 20 s), so a busy machine's slower requests cannot earn a token back.
    # index_cache_seconds: the index a test puts in the cache stays there however slow the machine.
    settings = GatewaySettings(admission=AdmissionSettings(rate_per_key=0.05, burst_per_key=3, max_body_mb=1),
                               index_cache_seconds=600)
    app = create_app(settings)
    app.dependency_overrides[current_project] = lambda: files_pb2.Project(id="p", name="Default")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client, app


async def test_a_key_over_its_rate_gets_429_with_retry_after(app_client: tuple[httpx.AsyncClient, object]) -> None:
    client, _ = app_client
    headers = {"authorization": "Bearer key-one"}
    statuses = [(await client.post("/api/v1/retrieval/files/find", json={}, headers=headers)).status_code
                for _ in range(3)]
    assert 429 not in statuses
    refused = await client.post("/api/v1/retrieval/files/find", json={}, headers=headers)
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 20
    other = await client.post("/api/v1/retrieval/files/find", json={}, headers={"authorization": "Bearer key-two"})
    assert other.status_code != 429
    assert (await client.get("/healthz", headers=headers)).status_code == 200  # probes are not limited


async def test_bodies_over_the_limit_get_413_declared_or_streamed(app_client: tuple[httpx.AsyncClient, object]) -> None:
    client, _ = app_client
    big = b'{"query": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    declared = await client.post("/api/v1/retrieval/retrieve", content=big,
                                 headers={"content-type": "application/json", "authorization": "Bearer k3"})
    assert declared.status_code == 413 and "1 MiB" in declared.text

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b" " * (512 * 1024)

    streamed = await client.post("/api/v1/retrieval/retrieve", content=chunks(),
                                 headers={"content-type": "application/json", "authorization": "Bearer k4"})
    assert streamed.status_code == 413


async def test_a_full_retrieve_stage_sheds_with_503_and_retry_after(
    app_client: tuple[httpx.AsyncClient, object],
) -> None:
    client, app = app_client
    backends = app.state.backends  # type: ignore[attr-defined]
    backends.stages.retrieve = Stage("retrieve", concurrency=1, queue=0)
    index = files_pb2.Index(id="i", project_id="p", generation=1)
    app.state.indexes.put("p", index)  # type: ignore[attr-defined]
    async with backends.stages.retrieve.admit():  # the one slot is taken
        shed = await client.post("/api/v1/retrieval/retrieve", json={"index_id": "i", "query": "q"},
                                 headers={"authorization": "Bearer k5"})
    assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
    assert "retrieve stage is saturated" in shed.text


async def test_a_stage_admits_its_concurrency_and_queue_then_sheds() -> None:
    stage = Stage("rerank", concurrency=1, queue=1)
    release = asyncio.Event()
    entered: list[int] = []

    async def hold(n: int) -> None:
        async with stage.admit():
            entered.append(n)
            await release.wait()

    first = asyncio.create_task(hold(1))
    second = asyncio.create_task(hold(2))  # waits for the slot
    await asyncio.sleep(0.01)
    assert entered == [1] and stage.load == 2
    with pytest.raises(Shed):
        async with stage.admit():
            pass
    release.set()
    await asyncio.gather(first, second)
    assert entered == [1, 2] and stage.load == 0


async def test_a_stage_sheds_at_once_what_would_not_finish_within_its_deadline() -> None:
    stage = Stage("rerank", concurrency=2, queue=8)
    async with stage.admit(within=0.01):  # nothing observed yet: admitted
        await asyncio.sleep(0.05)
    assert 0.04 <= stage.seconds_per_request < 0.5
    release = asyncio.Event()

    async def hold() -> None:
        async with stage.admit():
            await release.wait()

    busy = [asyncio.create_task(hold()) for _ in range(4)]  # two running, two waiting
    await asyncio.sleep(0.01)
    # Next in line waits for 1.5 requests' time and runs one: ~2.5 x 0.05 s.
    assert stage.expected_seconds() == pytest.approx(2.5 * stage.seconds_per_request)
    started = time.monotonic()
    with pytest.raises(Shed):
        async with stage.admit(within=2 * stage.seconds_per_request):
            pass
    assert time.monotonic() - started < 0.01  # refused at once, not after waiting
    release.set()
    await asyncio.gather(*busy)
    async with stage.admit(within=2 * stage.seconds_per_request):  # the queue drained: admitted
        pass


async def test_a_streamed_upload_over_the_limit_gets_413() -> None:
    """Read by the route (multipart) past the middleware's limit: the app's handler answers 413."""
    app = create_app(GatewaySettings(max_upload_bytes=1024 * 1024))
    app.dependency_overrides[current_project] = lambda: files_pb2.Project(id="p", name="Default")
    boundary = "quarry"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"upload_file\"; filename=\"a.txt\"\r\n"
            "Content-Type: text/plain\r\n\r\n").encode()

    async def chunks() -> AsyncIterator[bytes]:
        yield head
        for _ in range(4):
            yield b"y" * (1024 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            response = await client.post("/api/v1/beta/directories/d/files/upload", content=chunks(),
                                         headers={"content-type": f"multipart/form-data; boundary={boundary}",
                                                  "authorization": "Bearer k6"})
    assert response.status_code == 413, response.text
    assert "2 MiB limit" in response.text  # the middleware's bound (upload limit + 1 MiB of form)
