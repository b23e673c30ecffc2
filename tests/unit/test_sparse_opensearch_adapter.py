"""The OpenSearch adapter's I/O policy, settings and wiring, without an OpenSearch cluster.

Retries, back-pressure, error mapping and timeouts are exercised against a local HTTP endpoint
(aiohttp) that answers the REST paths the adapter calls with the documented response shapes,
scripted per test (429 first, a rejected item, a slow answer), and against a closed port. Search
semantics are not here: they are the contract suite's, on a real cluster.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from opensearchpy.exceptions import ConnectionError, ConnectionTimeout, NotFoundError, RequestError, TransportError
from pydantic import ValidationError

from services.common.domain import Chunk
from services.sparse.adapters.opensearch import OpenSearchKeywordIndex, WriteOptions, retryable, retryable_status
from services.sparse.adapters.opensearch_dsl import IndexLayout
from services.sparse.adapters.tantivy import TantivyKeywordIndex
from services.sparse.bootstrap import bootstrap, keyword_index
from services.sparse.errors import BackendUnavailable, InvalidRequest
from services.sparse.settings import SparseSettings


def _chunks(n: int) -> list[Chunk]:
    return [Chunk(id=f"c{i}", index_id="idx", file_id="f", content=f"granite {i}") for i in range(n)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- pure policy ----------------------------------------------------------------------------------


def test_retry_policy_by_status_and_error() -> None:
    assert [retryable_status(s) for s in (429, 500, 502, 503, 504, 400, 404, 409, "N/A")] == [
        True, True, True, True, True, False, False, False, False
    ]
    assert retryable(ConnectionError("N/A", "refused", OSError()))
    assert not retryable(ConnectionTimeout("TIMEOUT", "slow", TimeoutError()))  # the budget is spent
    assert retryable(TransportError(429, "es_rejected_execution_exception", {}))
    assert retryable(TransportError(503, "unavailable_shards_exception", {}))
    assert not retryable(RequestError(400, "mapper_parsing_exception", {}))
    assert not retryable(NotFoundError(404, "index_not_found_exception", {}))
    assert not retryable(ValueError("x"))


# -- settings and wiring --------------------------------------------------------------------------


def test_settings_read_the_opensearch_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUARRY_SPARSE_OPENSEARCH_URL", "https://os-1:9200, https://os-2:9200")
    monkeypatch.setenv("QUARRY_SPARSE_OPENSEARCH_USERNAME", "quarry")
    monkeypatch.setenv("QUARRY_SPARSE_OPENSEARCH_PASSWORD", "s3cret")
    monkeypatch.setenv("QUARRY_SPARSE_OPENSEARCH_INDEX_PREFIX", "prod-quarry-")
    monkeypatch.setenv("QUARRY_SPARSE_OPENSEARCH_SHARDS", "3")
    monkeypatch.setenv("QUARRY_SPARSE_OPENSEARCH_BULK_CONCURRENCY", "4")
    monkeypatch.setenv("QUARRY_SPARSE_OPENSEARCH_VERIFY_CERTS", "false")
    settings = SparseSettings()
    assert settings.opensearch_urls() == ["https://os-1:9200", "https://os-2:9200"]
    assert settings.opensearch_password is not None
    assert settings.opensearch_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())
    assert (settings.opensearch_index_prefix, settings.opensearch_shards, settings.opensearch_bulk_concurrency) == (
        "prod-quarry-", 3, 4
    )
    assert settings.opensearch_verify_certs is False


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"opensearch_index_prefix": "Quarry-"}, "opensearch_index_prefix"),
        ({"opensearch_index_prefix": ""}, "opensearch_index_prefix"),
        ({"opensearch_refresh_interval": "-1"}, "opensearch_refresh_interval"),
        ({"opensearch_shards": 0}, "opensearch_shards"),
        ({"opensearch_username": "u", "opensearch_api_key": "k"}, "opensearch_api_key"),
        ({"opensearch_password": "p"}, "opensearch_password"),
    ],
)
def test_bad_opensearch_settings_name_the_field(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        SparseSettings(**values)


async def test_an_opensearch_url_selects_the_opensearch_adapter_without_a_request(tmp_path: Any) -> None:
    settings = SparseSettings(
        data_dir=str(tmp_path / "unused"),
        opensearch_url=f"http://127.0.0.1:{_free_port()}",
        opensearch_index_prefix="qa-",
        opensearch_api_key="k",
        timeout=1,
    )
    index = keyword_index(settings)
    assert isinstance(index, OpenSearchKeywordIndex)
    assert index.index_name("idx") == "qa-idx"
    assert not (tmp_path / "unused").exists()  # nothing of tantivy was touched
    await index.close()
    assert isinstance(keyword_index(SparseSettings(data_dir=str(tmp_path / "kw"))), TantivyKeywordIndex)


async def test_an_unreachable_cluster_is_not_ready_and_calls_are_unavailable() -> None:
    app = bootstrap(SparseSettings(opensearch_url=f"http://127.0.0.1:{_free_port()}", timeout=2, opensearch_retries=1))
    try:
        assert await app.ready() is False
        with pytest.raises(BackendUnavailable, match="unreachable"):
            await app.service.count("idx")
        with pytest.raises(BackendUnavailable, match="unreachable"):
            await app.service.upsert("idx", _chunks(1))
    finally:
        await app.close()


# -- against a scripted local endpoint ------------------------------------------------------------


@dataclass
class Endpoint:
    """Answers the adapter's REST calls; ``bulk`` decides each ``_bulk`` answer."""

    bulk: Callable[[int, list[dict[str, Any]]], Any]
    requests: list[tuple[str, str]] = field(default_factory=list)
    bulk_bodies: list[list[dict[str, Any]]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    second_arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.path.endswith("/_bulk"):
            lines = [json.loads(line) for line in (await request.text()).splitlines() if line]
            self.bulk_bodies.append(lines)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                answer = self.bulk(len(self.bulk_bodies), lines)
                if asyncio.iscoroutine(answer):
                    answer = await answer
            finally:
                self.in_flight -= 1
            status, body = answer
            return web.json_response(body, status=status)
        if request.method == "HEAD":
            return web.Response(status=200)
        return web.json_response({"acknowledged": True, "index": request.path.strip("/")})


def _ok(lines: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    items = [{"index": {"_id": a["index"]["_id"], "status": 201, "result": "created"}} for a in lines[::2]]
    return 200, {"took": 1, "errors": False, "items": items}


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Endpoint], Any]]:
    runners: list[web.AppRunner] = []

    async def start(endpoint: Endpoint) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", endpoint.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def _adapter(url: str, **writes: Any) -> OpenSearchKeywordIndex:
    return OpenSearchKeywordIndex.connect(
        [url], timeout=5, layout=IndexLayout(prefix="t-"), writes=WriteOptions(**{"retries": 3, **writes})
    )


async def test_template_then_index_then_bulk_with_wait_for(serve: Any) -> None:
    endpoint = Endpoint(bulk=lambda n, lines: _ok(lines))
    adapter = _adapter(await serve(endpoint))
    try:
        await adapter.upsert("idx", _chunks(3))
        await adapter.upsert("idx", _chunks(1))
    finally:
        await adapter.close()
    assert endpoint.requests == [
        ("PUT", "/_index_template/t-chunks"),
        ("PUT", "/t-idx"),
        ("POST", "/t-idx/_bulk"),
        ("POST", "/t-idx/_bulk"),  # the index is known: no second create
    ]
    assert [a["index"]["_id"] for a in endpoint.bulk_bodies[0][::2]] == ["c0", "c1", "c2"]


async def test_a_429_answer_is_retried(serve: Any) -> None:
    def bulk(n: int, lines: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        if n == 1:
            return 429, {"error": {"type": "es_rejected_execution_exception", "reason": "queue full"}, "status": 429}
        return _ok(lines)

    endpoint = Endpoint(bulk=bulk)
    adapter = _adapter(await serve(endpoint))
    try:
        await adapter.upsert("idx", _chunks(2))
    finally:
        await adapter.close()
    assert len(endpoint.bulk_bodies) == 2 and endpoint.bulk_bodies[0] == endpoint.bulk_bodies[1]


async def test_only_the_rejected_items_are_sent_again(serve: Any) -> None:
    def bulk(n: int, lines: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        if n > 1:
            return _ok(lines)
        items = [{"index": {"_id": a["index"]["_id"], "status": 201}} for a in lines[::2]]
        items[1] = {"index": {"_id": "c1", "status": 429,
                              "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}}
        return 200, {"took": 1, "errors": True, "items": items}

    endpoint = Endpoint(bulk=bulk)
    adapter = _adapter(await serve(endpoint))
    try:
        await adapter.upsert("idx", _chunks(3))
    finally:
        await adapter.close()
    assert [a["index"]["_id"] for a in endpoint.bulk_bodies[1][::2]] == ["c1"]
    assert endpoint.bulk_bodies[1][1]["content"] == "granite 1"


async def test_a_rejected_document_is_reported_by_chunk_id_without_retry(serve: Any) -> None:
    def bulk(n: int, lines: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        items = [{"index": {"_id": a["index"]["_id"], "status": 201}} for a in lines[::2]]
        items[0] = {"index": {"_id": "c0", "status": 400, "error": {
            "type": "illegal_argument_exception", "reason": "Limit of total fields [2000] has been exceeded"}}}
        return 200, {"took": 1, "errors": True, "items": items}

    endpoint = Endpoint(bulk=bulk)
    adapter = _adapter(await serve(endpoint))
    try:
        with pytest.raises(InvalidRequest, match=r"chunk 'c0': illegal_argument_exception: Limit of total fields"):
            await adapter.upsert("idx", _chunks(2))
    finally:
        await adapter.close()
    assert len(endpoint.bulk_bodies) == 1


async def test_persistent_5xx_becomes_unavailable_after_the_retries(serve: Any) -> None:
    endpoint = Endpoint(bulk=lambda n, lines: (503, {"error": {"type": "unavailable_shards_exception"}}))
    adapter = _adapter(await serve(endpoint), retries=2)
    try:
        with pytest.raises(BackendUnavailable, match="HTTP 503"):
            await adapter.upsert("idx", _chunks(1))
    finally:
        await adapter.close()
    assert len(endpoint.bulk_bodies) == 3


async def test_bulk_requests_in_flight_are_bounded(serve: Any) -> None:
    endpoint: Endpoint

    async def bulk(n: int, lines: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        # Hold the first request until a second one is in flight, proving two run at once; with a
        # bound of 2 a third can never join them.
        if endpoint.in_flight >= 2:
            endpoint.second_arrived.set()
        else:
            await asyncio.wait_for(endpoint.second_arrived.wait(), 10)
        await asyncio.sleep(0)
        return _ok(lines)

    endpoint = Endpoint(bulk=bulk)
    adapter = _adapter(await serve(endpoint), batch_size=1, concurrency=2)
    try:
        await asyncio.gather(adapter.upsert("idx", _chunks(6)), adapter.upsert("other", _chunks(4)))
    finally:
        await adapter.close()
    assert len(endpoint.bulk_bodies) == 10
    assert endpoint.max_in_flight == 2


async def test_a_silent_server_times_out() -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(30)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    adapter = OpenSearchKeywordIndex.connect([f"http://127.0.0.1:{port}"], timeout=0.3)
    try:
        with pytest.raises(TimeoutError, match="count timed out"):
            await adapter.count("idx")
        assert await adapter.ready() is False
    finally:
        await adapter.close()
        server.close()
