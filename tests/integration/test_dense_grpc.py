"""The dense servicer on a real grpc.aio server (port 0), called through the generated stub."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from services._proto.quarry.common.v1 import common_pb2
from services._proto.quarry.dense.v1 import dense_pb2, dense_pb2_grpc
from services.common.convert import filter_to_pb
from services.common.domain import And, Condition, Op, chunk_id
from services.dense.bootstrap import bootstrap
from services.dense.servicer import SERVICE_NAME, DenseSearchServicer, register
from services.dense.settings import DenseSettings
from tests.integration.serving import serving

DOCS = [
    ("file-a", "Glaciers carve valleys as they slowly move downhill.", {"year": 2021, "kind": "geo"}),
    ("file-a", "Moraines are ridges of debris left behind by glaciers.", {"year": 2022, "kind": "geo"}),
    ("file-b", "Espresso is brewed by forcing hot water through coffee.", {"year": 2022, "kind": "food"}),
]


def _chunks(index_id: str) -> list[common_pb2.Chunk]:
    return [
        common_pb2.Chunk(id=chunk_id(f, 1, i), index_id=index_id, file_id=f, file_name=f"{f}.md",
                         content=text, metadata_json=json.dumps(meta), chunk_index=i, end_char=len(text))
        for i, (f, text, meta) in enumerate(DOCS)
    ]


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[dense_pb2_grpc.DenseSearchStub]:
    settings = DenseSettings(port=0, data_dir=str(tmp_path / "dense"))
    app = bootstrap(settings)
    async with serving(settings, register(DenseSearchServicer(app.service)), SERVICE_NAME, app.ready,
                       app.close) as ch:
        yield dense_pb2_grpc.DenseSearchStub(ch)


async def test_all_rpcs_round_trip(stub: dense_pb2_grpc.DenseSearchStub) -> None:
    embedded = await stub.Embed(dense_pb2.EmbedRequest(texts=["one", "two"], is_query=True), timeout=10)
    assert embedded.dim == 384 and len(embedded.vectors) == 2 and len(embedded.vectors[0].values) == 384
    assert embedded.model == "all-MiniLM-L6-v2-onnx-int8"

    upserted = await stub.Upsert(dense_pb2.UpsertRequest(index_id="idx", chunks=_chunks("idx")), timeout=30)
    assert upserted.upserted == 3
    assert (await stub.Count(dense_pb2.CountRequest(index_id="idx"), timeout=5)).count == 3
    assert (await stub.Count(dense_pb2.CountRequest(index_id="idx", file_id="file-a"), timeout=5)).count == 2

    query = "how do glaciers shape valleys"
    found = await stub.Search(dense_pb2.SearchRequest(index_id="idx", query=query, top_k=2), timeout=10)
    assert [h.chunk.id for h in found.hits] == [chunk_id("file-a", 1, 0), chunk_id("file-a", 1, 1)]
    assert found.hits[0].score > found.hits[1].score
    assert json.loads(found.hits[0].chunk.metadata_json) == {"year": 2021, "kind": "geo"}
    assert found.hits[0].chunk.file_name == "file-a.md"
    assert found.embed_seconds > 0 and found.search_seconds > 0

    flt = And((Condition("year", Op.EQ, (2022,)), Condition("kind", Op.NE, ("geo",))))
    filtered = await stub.Search(
        dense_pb2.SearchRequest(index_id="idx", query="glaciers", top_k=10, filter=filter_to_pb(flt),
                                has_filter=True),
        timeout=10)
    assert [h.chunk.id for h in filtered.hits] == [chunk_id("file-b", 1, 2)]

    deleted = await stub.DeleteFile(dense_pb2.DeleteFileRequest(index_id="idx", file_id="file-a"), timeout=10)
    assert deleted.deleted == 2
    dropped = await stub.DropIndex(dense_pb2.DropIndexRequest(index_id="idx"), timeout=10)
    assert dropped.deleted == 1
    assert (await stub.Count(dense_pb2.CountRequest(index_id="idx"), timeout=5)).count == 0


async def test_errors_map_to_status_codes(stub: dense_pb2_grpc.DenseSearchStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Search(dense_pb2.SearchRequest(index_id="", query="q", top_k=3), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Search(dense_pb2.SearchRequest(index_id="idx", query="q", top_k=3, has_filter=True,
                                                  filter=common_pb2.Filter()), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    bad = common_pb2.Chunk(id="c1", file_id="f", content="x", metadata_json="[1, 2]")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Upsert(dense_pb2.UpsertRequest(index_id="idx", chunks=[bad]), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # An index that was never written answers with no hits, not an error.
    empty = await stub.Search(dense_pb2.SearchRequest(index_id="never", query="q", top_k=3), timeout=5)
    assert list(empty.hits) == []


async def test_late_scores_come_from_the_token_vectors_stored_at_upsert(
    stub: dense_pb2_grpc.DenseSearchStub,
) -> None:
    from services.common.late_interaction import compress, maxsim, query_tokens
    from services.dense.embedding import OnnxEmbedder

    chunks = _chunks("idx")
    await stub.Upsert(dense_pb2.UpsertRequest(index_id="idx", chunks=chunks), timeout=30)
    query = "how do glaciers shape valleys"
    await stub.Search(dense_pb2.SearchRequest(index_id="idx", query=query, top_k=3), timeout=10)
    ids = [c.id for c in chunks]
    got = await stub.LateScores(dense_pb2.LateScoresRequest(index_id="idx", query=query, chunk_ids=ids), timeout=10)
    assert got.stored and got.model == "late-interaction:all-MiniLM-L6-v2-onnx-int8"

    # The same scores as computing the token vectors at query time, within float16 storage error.
    embedder = OnnxEmbedder.load()
    _, states = embedder.embed_with_tokens([c.content for c in chunks])
    q = query_tokens(embedder.embed_with_tokens([query], is_query=True)[1][0])
    expected = [maxsim(q, compress(s, DenseSettings().token_vectors)) for s in states]
    assert list(got.scores) == pytest.approx(expected, abs=2e-3)
    assert got.scores[0] > got.scores[2] and got.scores[1] > got.scores[2]  # glaciers over espresso

    # A query the service has not embedded yet is embedded for the call.
    fresh = await stub.LateScores(dense_pb2.LateScoresRequest(index_id="idx", query="coffee", chunk_ids=ids),
                                  timeout=10)
    assert fresh.stored and max(range(3), key=lambda i: fresh.scores[i]) == 2
    missing = await stub.LateScores(
        dense_pb2.LateScoresRequest(index_id="idx", query=query, chunk_ids=[*ids, "nope"]), timeout=10)
    assert not missing.stored and list(missing.scores) == []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.LateScores(dense_pb2.LateScoresRequest(query=query, chunk_ids=ids), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_without_token_vectors_nothing_is_stored_to_score(tmp_path: Path) -> None:
    settings = DenseSettings(port=0, data_dir=str(tmp_path / "dense"), token_vectors=0)
    app = bootstrap(settings)
    async with serving(settings, register(DenseSearchServicer(app.service)), SERVICE_NAME, app.ready,
                       app.close) as ch:
        stub = dense_pb2_grpc.DenseSearchStub(ch)
        chunks = _chunks("idx")
        await stub.Upsert(dense_pb2.UpsertRequest(index_id="idx", chunks=chunks), timeout=30)
        got = await stub.LateScores(
            dense_pb2.LateScoresRequest(index_id="idx", query="glaciers", chunk_ids=[c.id for c in chunks]),
            timeout=10)
        assert not got.stored
