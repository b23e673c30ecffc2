"""The OpenSearch adapter's index lifecycle on a real node: the template and the per-index layout,
``refresh=wait_for`` visibility, a bulk request that partly fails, timeouts on a node that hangs,
the sparse service's gRPC status on a node that is down, and back-pressure against a node that
rejects writes.

The shared node (the ``opensearch_url`` fixture) serves the first tests, each under its own index
prefix; the hang, outage and rejection tests start nodes of their own, because they stop or
starve them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from services._proto.quarry.sparse.v1 import sparse_pb2, sparse_pb2_grpc
from services.common.convert import chunk_to_pb
from services.common.domain import Chunk, chunk_id, files_index_id
from services.sparse.adapters.opensearch import OpenSearchKeywordIndex, WriteOptions
from services.sparse.adapters.opensearch_dsl import META_STR, IndexLayout, field_key, template_name
from services.sparse.bootstrap import bootstrap
from services.sparse.errors import InvalidRequest
from services.sparse.servicer import SERVICE_NAME, SparseServicer, register
from services.sparse.settings import SparseSettings
from tests import servers
from tests.integration.serving import serving
from tests.opensearch.node import OpenSearchNode, java_available


def _chunks(file_id: str, n: int, word: str = "granite", **meta: object) -> list[Chunk]:
    return [
        Chunk(id=chunk_id(file_id, 1, i), index_id="", file_id=file_id, content=f"{word} block {i}",
              metadata=meta, chunk_index=i)  # type: ignore[arg-type]
        for i in range(n)
    ]


def _layout(**kwargs: Any) -> IndexLayout:
    return IndexLayout(prefix=f"qlife-{uuid.uuid4().hex[:10]}-", replicas=0, **kwargs)


def _adapter(url: str, layout: IndexLayout, **kwargs: Any) -> OpenSearchKeywordIndex:
    return OpenSearchKeywordIndex.connect(
        url.split(","), username=servers.OPENSEARCH_USERNAME, password=servers.OPENSEARCH_PASSWORD,
        verify_certs=servers.OPENSEARCH_VERIFY_CERTS, layout=layout, **kwargs,
    )


@pytest.fixture
async def http(opensearch_url: str) -> AsyncIterator[httpx.AsyncClient]:
    auth = (servers.OPENSEARCH_USERNAME, servers.OPENSEARCH_PASSWORD or "") if servers.OPENSEARCH_USERNAME else None
    async with httpx.AsyncClient(base_url=opensearch_url.split(",")[0], auth=auth,
                                 verify=servers.OPENSEARCH_VERIFY_CERTS, timeout=30) as client:
        yield client


async def _get(http: httpx.AsyncClient, path: str, **params: str) -> Any:
    response = await http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
async def layout(http: httpx.AsyncClient) -> AsyncIterator[IndexLayout]:
    layout = _layout(refresh_interval="1s")
    yield layout
    for name in await _get(http, f"/{layout.prefix}*", expand_wildcards="all"):
        await http.delete(f"/{name}")
    await http.delete(f"/_index_template/{template_name(layout.prefix)}")


@pytest.fixture
async def adapter(opensearch_url: str, layout: IndexLayout) -> AsyncIterator[OpenSearchKeywordIndex]:
    index = _adapter(opensearch_url, layout, timeout=30)
    yield index
    await index.close()


def _java_node(tmp_path: Path, **settings: str) -> OpenSearchNode:
    if not java_available():
        servers.unavailable("no JDK/Maven to start a dedicated OpenSearch node")
    return OpenSearchNode(tmp_path / "node", settings=settings)


# -- template and layout --------------------------------------------------------------------------


async def test_first_write_puts_the_template_and_creates_the_index_from_it(
    adapter: OpenSearchKeywordIndex, layout: IndexLayout, http: httpx.AsyncClient
) -> None:
    await adapter.upsert("docs", _chunks("f", 3))
    (template,) = (await _get(http, f"/_index_template/{template_name(layout.prefix)}"))["index_templates"]
    body = template["index_template"]
    assert body["index_patterns"] == [f"{layout.prefix}*"]
    assert body["priority"] == 100 + len(layout.prefix)
    assert body["_meta"] == {"managed_by": "quarry-sparse"}

    name = adapter.index_name("docs")
    assert name == f"{layout.prefix}docs"
    settings = (await _get(http, f"/{name}/_settings"))[name]["settings"]["index"]
    assert (settings["number_of_shards"], settings["number_of_replicas"], settings["refresh_interval"]) == (
        "1", "0", "1s"
    )
    assert settings["analysis"]["analyzer"]["quarry_en"]["tokenizer"] == "quarry_alnum"
    mapping = (await _get(http, f"/{name}/_mapping"))[name]["mappings"]
    assert mapping["dynamic"] == "strict"
    assert mapping["properties"]["content"] == {"type": "text", "analyzer": "quarry_en"}

    # An index made by anyone else under the prefix gets the same layout from the template.
    other = f"{layout.prefix}made-by-hand"
    assert (await http.put(f"/{other}")).status_code == 200
    assert (await _get(http, f"/{other}/_mapping"))[other]["mappings"]["dynamic"] == "strict"


async def test_each_quarry_index_is_its_own_opensearch_index(
    adapter: OpenSearchKeywordIndex, layout: IndexLayout, http: httpx.AsyncClient
) -> None:
    odd = "Projekt Ü/42"
    for index_id in ("alpha", files_index_id("alpha"), odd):
        await adapter.upsert(index_id, _chunks("f", 2))
    names = set(await _get(http, f"/{layout.prefix}*"))
    assert names == {adapter.index_name(i) for i in ("alpha", files_index_id("alpha"), odd)}
    assert adapter.index_name(files_index_id("alpha")) == f"{layout.prefix}alpha.files"
    assert adapter.index_name(odd).startswith(f"{layout.prefix}-projekt-42-")

    await adapter.drop("alpha")
    assert set(await _get(http, f"/{layout.prefix}*")) == names - {adapter.index_name("alpha")}
    assert await adapter.count(files_index_id("alpha")) == 2


async def test_a_write_is_searchable_when_it_returns_without_a_forced_refresh(
    opensearch_url: str, http: httpx.AsyncClient
) -> None:
    """``refresh=wait_for``: the bulk call returns after the next scheduled refresh, so a search
    right after it sees the chunks, and no refresh is forced per request."""
    layout = _layout(refresh_interval="2s")
    index = _adapter(opensearch_url, layout, timeout=30)
    try:
        await index.upsert("wait", _chunks("seed", 1))
        name = index.index_name("wait")
        refreshes_before = (await _get(http, f"/{name}/_stats/refresh"))["_all"]["primaries"]["refresh"]["total"]
        for round_ in range(3):
            chunks = _chunks(f"f{round_}", 5, word=f"basalt{round_}")
            await index.upsert("wait", chunks)
            hits = await index.search("wait", f"basalt{round_}", 10, None)
            assert {h.chunk.id for h in hits} == {c.id for c in chunks}
        stats = (await _get(http, f"/{name}/_stats/refresh"))["_all"]["primaries"]["refresh"]
        # Three writes, scheduled refreshes only: never one per document.
        assert stats["total"] - refreshes_before <= 6
    finally:
        await index.drop("wait")
        await index.close()
        await http.delete(f"/_index_template/{template_name(layout.prefix)}")


async def test_a_bulk_request_that_partly_fails_writes_the_rest_and_names_the_failed_chunks(
    adapter: OpenSearchKeywordIndex, http: httpx.AsyncClient
) -> None:
    """A mapping conflict (an operator's mapping typed ``title`` as a number) fails the items
    that carry a text title; the others are written, and the error names the chunk ids."""
    name = adapter.index_name("conflict")
    await adapter.upsert("conflict", _chunks("seed", 1))
    hex_title = field_key("title")
    mapping = {"properties": {META_STR: {"properties": {hex_title: {"type": "long"}}}}}
    put = await http.put(f"/{name}/_mapping", json=mapping)
    assert put.status_code == 200, put.text

    good = _chunks("good", 4, title="12")  # a numeric string parses as a long
    bad = _chunks("bad", 2, title="not a number")
    with pytest.raises(InvalidRequest) as refused:
        await adapter.upsert("conflict", [*good[:2], *bad, *good[2:]])
    message = str(refused.value)
    assert "refused 2 chunk(s)" in message
    assert all(repr(c.id) in message for c in bad)
    assert "mapper_parsing_exception" in message or "document_parsing_exception" in message
    assert await adapter.count("conflict", "good") == 4
    assert await adapter.count("conflict", "bad") == 0


# -- a node that hangs, one that is down, one that pushes back ------------------------------------


async def test_a_hung_node_times_out_and_is_not_ready_then_recovers(tmp_path: Path) -> None:
    node = _java_node(tmp_path)
    node.start()
    index = _adapter(node.url, _layout(), timeout=1.5)
    try:
        await index.upsert("hang", _chunks("f", 3))
        node.pause()
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await index.search("hang", "granite", 5, None)
        assert time.monotonic() - t0 < 10  # one request timeout; a timeout is not retried
        assert await index.ready() is False
        node.resume()
        assert len(await index.search("hang", "granite", 5, None)) == 3
        assert await index.ready() is True
    finally:
        node.resume()
        await index.close()
        node.stop()


async def test_the_sparse_service_answers_unavailable_while_the_node_is_down(tmp_path: Path) -> None:
    node = _java_node(tmp_path)
    node.start()
    settings = SparseSettings(port=0, opensearch_url=node.url, opensearch_replicas=0, opensearch_retries=1,
                              timeout=5, opensearch_index_prefix=f"qdown-{uuid.uuid4().hex[:8]}-")
    app = bootstrap(settings)
    try:
        async with serving(settings, register(SparseServicer(app.service)), SERVICE_NAME, app.ready, app.close,
                           grace=0.5) as ch:
            stub = sparse_pb2_grpc.SparseSearchStub(ch)
            upsert = sparse_pb2.UpsertRequest(index_id="down", chunks=[chunk_to_pb(c) for c in _chunks("f", 2)])
            assert (await stub.Upsert(upsert, timeout=30)).upserted == 2
            node.stop()
            with pytest.raises(grpc.aio.AioRpcError) as down:
                await stub.Search(sparse_pb2.SearchRequest(index_id="down", query="granite", top_k=5), timeout=10)
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "unreachable" in (down.value.details() or "")
            node.restart()
            reply = await stub.Search(sparse_pb2.SearchRequest(index_id="down", query="granite", top_k=5), timeout=30)
            assert len(reply.hits) == 2  # the restarted node kept the index
    finally:
        node.stop()


async def test_writes_rejected_by_a_busy_node_are_retried_and_client_side_slots_avoid_them(
    tmp_path: Path,
) -> None:
    """A node with one write thread and a queue of one rejects concurrent bulks with 429. With 8
    bulk slots the adapter gets rejections and retries them until every chunk is written; with 1
    slot (the back-pressure the setting exists for) the node rejects nothing."""
    node = _java_node(tmp_path, **{"thread_pool.write.size": "1", "thread_pool.write.queue_size": "1"})
    node.start()

    def rejected() -> int:
        stats = httpx.get(f"{node.url}/_nodes/stats/thread_pool", timeout=10).json()["nodes"]
        return sum(n["thread_pool"]["write"]["rejected"] for n in stats.values())

    async def burst(concurrency: int, index_id: str) -> None:
        writes = WriteOptions(batch_size=5, concurrency=concurrency, retries=10)
        index = _adapter(node.url, _layout(refresh_interval="200ms"), writes=writes, timeout=30)
        try:
            await index.upsert(index_id, _chunks("seed", 1))
            await asyncio.gather(*(index.upsert(index_id, _chunks(f"f{i}", 20)) for i in range(12)))
            assert await index.count(index_id) == 1 + 12 * 20
        finally:
            await index.close()

    try:
        await burst(8, "wide")
        assert rejected() > 0
        before = rejected()
        await burst(1, "narrow")
        assert rejected() == before
    finally:
        node.stop()

