"""HttpReranker against a real local HTTP server (uvicorn + FastAPI in a thread) that speaks the
TEI and Cohere rerank shapes and scores by word overlap."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request

from services.rerank.adapters.http import HttpReranker, rerank_endpoint
from services.rerank.errors import BackendProtocolError, BackendRejected, BackendUnavailable

API_KEY = "test-key"
TEI_MAX_BATCH = 4  # like TEI's --max-client-batch-size, so the client must batch


def overlap(query: str, text: str) -> float:
    """Share of the query's distinct words found in the text."""
    q, t = set(re.findall(r"\w+", query.lower())), set(re.findall(r"\w+", text.lower()))
    return len(q & t) / len(q) if q else 0.0


def build_app(calls: Counter[str]) -> FastAPI:
    app = FastAPI()

    def tei(body: dict[str, Any]) -> list[dict[str, Any]]:
        texts = body["texts"]
        if len(texts) > TEI_MAX_BATCH:
            raise HTTPException(413, f"batch size {len(texts)} > maximum allowed batch size {TEI_MAX_BATCH}")
        ranked = [{"index": i, "score": overlap(body["query"], t)} for i, t in enumerate(texts)]
        return sorted(ranked, key=lambda r: -r["score"])  # TEI answers best first, not in order

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/rerank")
    async def tei_rerank(request: Request) -> list[dict[str, Any]]:
        calls["tei"] += 1
        return tei(await request.json())

    @app.post("/v1/rerank")
    async def cohere_rerank(request: Request, authorization: str | None = Header(None)) -> dict[str, Any]:
        calls["cohere"] += 1
        if authorization != f"Bearer {API_KEY}":
            raise HTTPException(401, "invalid api token")
        body = await request.json()
        documents = body["documents"]
        ranked = [{"index": i, "relevance_score": overlap(body["query"], d)} for i, d in enumerate(documents)]
        ranked.sort(key=lambda r: -r["relevance_score"])
        return {"id": "x", "results": ranked[: body["top_n"]], "meta": {"model": body.get("model")}}

    @app.post("/flaky/rerank")
    async def flaky(request: Request) -> list[dict[str, Any]]:
        calls["flaky"] += 1
        if calls["flaky"] <= 2:
            raise HTTPException(503, "warming up")
        return tei(await request.json())

    @app.post("/down/rerank")
    async def down() -> None:
        calls["down"] += 1
        raise HTTPException(500, "model crashed")

    @app.post("/rejecting/rerank")
    async def rejecting() -> None:
        calls["rejecting"] += 1
        raise HTTPException(422, "input is too long")

    @app.post("/garbage/rerank")
    async def garbage() -> dict[str, int]:
        return {"unexpected": 1}

    @app.post("/partial/rerank")
    async def partial(request: Request) -> list[dict[str, Any]]:
        return tei(await request.json())[:1]

    @app.post("/slow/rerank")
    async def slow(request: Request) -> list[dict[str, Any]]:
        await asyncio.sleep(1.0)
        return tei(await request.json())

    return app


class ServerThread:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        config = uvicorn.Config(
            build_app(self.calls), host="127.0.0.1", port=0, log_level="warning",
            lifespan="off", ws="none", loop="asyncio", timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test HTTP server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    running = ServerThread()
    with running:
        yield running


@pytest.fixture
def url(server: ServerThread) -> str:
    sock = server.server.servers[0].sockets[0]
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


QUERY = "solar panel efficiency"
PASSAGES = [
    "wind turbines in the north sea",
    "solar panel efficiency improved by new coatings",
    "the efficiency of a panel",
    "solar eclipses are rare",
    "panel discussion on solar policy",
    "nothing related here",
]


async def test_tei_scores_map_back_to_passages(url: str, server: ServerThread) -> None:
    before = server.calls["tei"]
    rr = HttpReranker(url, protocol="tei", batch_size=TEI_MAX_BATCH)
    try:
        scores = await rr.score(QUERY, PASSAGES)
        assert scores == [pytest.approx(overlap(QUERY, p)) for p in PASSAGES]
        assert server.calls["tei"] - before == 2  # 6 passages in batches of 4
        assert await rr.ready()
        assert await rr.score(QUERY, []) == []
    finally:
        await rr.close()


async def test_tei_batch_over_server_limit_is_rejected_clearly(url: str) -> None:
    rr = HttpReranker(url, protocol="tei", batch_size=32)
    try:
        with pytest.raises(BackendRejected, match="413"):
            await rr.score(QUERY, PASSAGES)
    finally:
        await rr.close()


async def test_cohere_shape_with_api_key(url: str) -> None:
    rr = HttpReranker(url, protocol="cohere", model="rerank-test", api_key=API_KEY, batch_size=5)
    try:
        assert rr.endpoint == f"{url}/v1/rerank"
        scores = await rr.score(QUERY, PASSAGES)
        assert scores == [pytest.approx(overlap(QUERY, p)) for p in PASSAGES]
        assert max(range(len(PASSAGES)), key=scores.__getitem__) == 1
        assert rr.model_name == "cohere:rerank-test"
        assert await rr.ready()
    finally:
        await rr.close()


async def test_cohere_bad_key_is_rejected_without_retry(url: str, server: ServerThread) -> None:
    before = server.calls["cohere"]
    rr = HttpReranker(url, protocol="cohere", api_key="wrong", retries=3)
    try:
        with pytest.raises(BackendRejected, match="401"):
            await rr.score(QUERY, PASSAGES)
    finally:
        await rr.close()
    assert server.calls["cohere"] - before == 1


async def test_5xx_is_retried_then_succeeds(url: str, server: ServerThread) -> None:
    server.calls["flaky"] = 0
    rr = HttpReranker(f"{url}/flaky/rerank", retries=2)
    try:
        scores = await rr.score(QUERY, PASSAGES[:3])
    finally:
        await rr.close()
    assert scores == [pytest.approx(overlap(QUERY, p)) for p in PASSAGES[:3]]
    assert server.calls["flaky"] == 3


@pytest.mark.parametrize(
    ("path", "error", "match", "attempts"),
    [
        ("down", BackendUnavailable, "500", 3),  # 5xx: retried (retries=2), then unavailable
        ("rejecting", BackendRejected, "422.*too long", 1),  # 4xx: not retried
    ],
)
async def test_error_answers_are_retried_only_when_5xx(
    url: str, server: ServerThread, path: str, error: type[Exception], match: str, attempts: int
) -> None:
    before = server.calls[path]
    rr = HttpReranker(f"{url}/{path}/rerank", retries=2)
    try:
        with pytest.raises(error, match=match):
            await rr.score(QUERY, PASSAGES[:2])
    finally:
        await rr.close()
    assert server.calls[path] - before == attempts


@pytest.mark.parametrize("path", ["garbage", "partial"])
async def test_malformed_answers_are_protocol_errors(url: str, path: str) -> None:
    rr = HttpReranker(f"{url}/{path}/rerank")
    try:
        with pytest.raises(BackendProtocolError):
            await rr.score(QUERY, PASSAGES[:3])
    finally:
        await rr.close()


async def test_slow_endpoint_raises_timeout(url: str) -> None:
    rr = HttpReranker(f"{url}/slow/rerank", timeout=30)
    try:
        with pytest.raises(TimeoutError):
            await rr.score(QUERY, PASSAGES[:2], timeout=0.1)
    finally:
        await rr.close()


async def test_connection_refused_is_unavailable_after_retries() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rr = HttpReranker(f"http://127.0.0.1:{port}", retries=1)
    try:
        with pytest.raises(BackendUnavailable, match="ConnectError"):
            await rr.score(QUERY, PASSAGES[:2])
        assert not await rr.ready()
    finally:
        await rr.close()


def test_endpoint_paths() -> None:
    assert rerank_endpoint("http://tei:80", "tei") == "http://tei:80/rerank"
    assert rerank_endpoint("http://tei:80/", "tei") == "http://tei:80/rerank"
    assert rerank_endpoint("https://api.jina.ai", "cohere") == "https://api.jina.ai/v1/rerank"
    assert rerank_endpoint("https://api.cohere.com/v2", "cohere") == "https://api.cohere.com/v2/rerank"
    assert rerank_endpoint("https://api.cohere.com/v2/rerank", "cohere") == "https://api.cohere.com/v2/rerank"
