"""The VectorIndex contract: the same scenarios against every adapter that can be started.

Adapters: embedded Qdrant (qdrant-edge) in tmp_path; the Qdrant server adapter over
qdrant-client's local mode (in memory); and the server adapter over a real Qdrant server
when QUARRY_TEST_QDRANT_URL is set (skipped otherwise), there with every collection setting
turned on (int8 quantization with rescoring, vectors on disk, two shards, payload indexes with
the tenant index), since local mode ignores them. Vectors are real embeddings from the
packaged MiniLM, and so are the late-interaction token vectors stored with them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import qdrant_edge as qe
from qdrant_client import AsyncQdrantClient

from services.common.domain import Chunk, Condition, FilterNode, Op, chunk_id
from services.common.errors import InvalidArgument
from services.common.late_interaction import compress, maxsim, query_tokens
from services.dense.adapters.qdrant_common import UnsupportedFilter
from services.dense.adapters.qdrant_edge import QdrantEdgeVectorIndex
from services.dense.adapters.qdrant_server import CollectionConfig, QdrantServerVectorIndex
from services.dense.embedding import OnnxEmbedder
from services.dense.ports import VectorIndex
from tests.contract import filter_scenarios as fs

QDRANT_URL = os.environ.get("QUARRY_TEST_QDRANT_URL")
SERVER_CONFIG = CollectionConfig(
    quantization="int8", on_disk=True, shard_number=2, replication_factor=1, write_consistency_factor=1
)
DIM = 384
INDEX = "idx-contract"

DOCS = {
    "cats": "Cats are small domesticated felines that purr and chase mice.",
    "rust": "Rust is a systems programming language focused on memory safety.",
    "bread": "Sourdough bread rises slowly thanks to wild yeast fermentation.",
    "tides": "Ocean tides are caused by the gravitational pull of the moon.",
}


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return OnnxEmbedder.load()


def _chunks(index_id: str = INDEX) -> list[Chunk]:
    return [
        Chunk(id=chunk_id(f"file-{key}", 1, 0), index_id=index_id, file_id=f"file-{key}", content=text,
              file_name=f"{key}.txt", metadata={"topic": key}, end_char=len(text), page_start=1, page_end=1)
        for key, text in DOCS.items()
    ]


def _vectors(embedder: OnnxEmbedder, chunks: list[Chunk]) -> npt.NDArray[np.float32]:
    return embedder.embed([c.content for c in chunks])


def _tokens(embedder: OnnxEmbedder, chunks: list[Chunk]) -> list[npt.NDArray[np.float16]]:
    return [compress(s, TOKENS_PER_CHUNK) for s in embedder.embed_with_tokens([c.content for c in chunks])[1]]


def _query_tokens(embedder: OnnxEmbedder, text: str) -> npt.NDArray[np.float32]:
    return query_tokens(embedder.embed_with_tokens([text], is_query=True)[1][0])


TOKENS_PER_CHUNK = 8  # below the DOCS' content-token counts, so pooling runs


async def _adapter(kind: str, edge_dir: Path, *, token_vectors: bool = True) -> AsyncIterator[VectorIndex]:
    adapter: VectorIndex
    if kind == "edge":
        adapter = QdrantEdgeVectorIndex(edge_dir, DIM, optimize_in_background=False, token_vectors=token_vectors)
    elif kind == "local":
        client = AsyncQdrantClient(location=":memory:")
        adapter = QdrantServerVectorIndex(client, model_name="minilm", dim=DIM, token_vectors=token_vectors)
    else:
        if not QDRANT_URL:
            pytest.skip("QUARRY_TEST_QDRANT_URL is not set: no Qdrant server for the server adapter")
        adapter = QdrantServerVectorIndex.connect(
            QDRANT_URL, api_key=os.environ.get("QUARRY_TEST_QDRANT_API_KEY"), timeout=10,
            model_name="minilm", dim=DIM, collection_prefix=f"test-{uuid.uuid4().hex[:8]}-",
            config=SERVER_CONFIG, search_ef=64, oversampling=2.0, token_vectors=token_vectors,
        )
    try:
        yield adapter
    finally:
        if isinstance(adapter, QdrantServerVectorIndex) and kind == "server":
            await adapter._client.delete_collection(adapter.collection)
        await adapter.close()


ADAPTERS = ["edge", "local", "server"]


@pytest.fixture(params=ADAPTERS)
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorIndex]:
    async for adapter in _adapter(request.param, tmp_path / "dense"):
        yield adapter


@pytest.fixture(scope="module")
def scenario_edge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared by the filter scenarios: creating a shard's payload indexes costs ~0.1 s each, and
    # the scenarios only read (their upsert is idempotent), so one directory serves them all.
    return tmp_path_factory.mktemp("scenarios")


@pytest.fixture(params=ADAPTERS)
async def scenario_index(
    request: pytest.FixtureRequest, scenario_edge_dir: Path
) -> AsyncIterator[VectorIndex]:
    async for adapter in _adapter(request.param, scenario_edge_dir):
        yield adapter


def _supports_case_sensitive_text(index: VectorIndex) -> bool:
    return isinstance(index, QdrantEdgeVectorIndex)


async def test_empty_index_answers_nothing(index: VectorIndex, embedder: OnnxEmbedder) -> None:
    assert await index.ready()
    query = embedder.embed(["anything"])[0]
    assert await index.search("missing", query, 5, None) == []
    assert await index.count("missing") == 0
    assert await index.delete_file("missing", "file-x") == 0
    await index.drop("missing")


async def test_upsert_is_idempotent_and_overwrites(index: VectorIndex, embedder: OnnxEmbedder) -> None:
    chunks = _chunks()
    vectors = _vectors(embedder, chunks)
    await index.upsert(INDEX, chunks, vectors)
    await index.upsert(INDEX, chunks, vectors)
    assert await index.count(INDEX) == len(chunks)

    changed = Chunk(id=chunks[0].id, index_id=INDEX, file_id=chunks[0].file_id,
                    content="Dogs bark at the mailman.", metadata={"topic": "dogs"})
    await index.upsert(INDEX, [changed], embedder.embed([changed.content]))
    assert await index.count(INDEX) == len(chunks)
    hits = await index.search(INDEX, embedder.embed(["a dog barking"])[0], 1, None)
    assert hits[0].chunk.id == changed.id
    assert hits[0].chunk.content == changed.content
    assert hits[0].chunk.metadata == {"topic": "dogs"}


async def test_search_orders_by_cosine_and_returns_full_chunks(
    index: VectorIndex, embedder: OnnxEmbedder
) -> None:
    chunks = _chunks()
    vectors = _vectors(embedder, chunks)
    await index.upsert(INDEX, chunks, vectors)
    query = embedder.embed(["Which language prevents memory bugs in systems code?"], is_query=True)[0]

    hits = await index.search(INDEX, query, 10, None)

    expected = sorted(range(len(chunks)), key=lambda i: -float(vectors[i] @ query))
    assert [h.chunk.id for h in hits] == [chunks[i].id for i in expected]
    assert hits[0].chunk == chunks[1]  # the Rust chunk, every field round-tripped
    for hit, i in zip(hits, expected, strict=True):
        assert hit.score == pytest.approx(float(vectors[i] @ query), abs=1e-3)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_top_k_limits_hits(index: VectorIndex, embedder: OnnxEmbedder) -> None:
    chunks = _chunks()
    await index.upsert(INDEX, chunks, _vectors(embedder, chunks))
    query = embedder.embed(["the moon and the sea"])[0]
    hits = await index.search(INDEX, query, 2, None)
    assert len(hits) == 2
    assert hits[0].chunk.metadata["topic"] == "tides"
    assert await index.search(INDEX, query, 0, None) == []


async def test_indexes_are_isolated(index: VectorIndex, embedder: OnnxEmbedder) -> None:
    chunks = _chunks()
    vectors = _vectors(embedder, chunks)
    await index.upsert(INDEX, chunks, vectors)
    other = [Chunk(id=c.id, index_id="idx-other", file_id=c.file_id, content=c.content) for c in chunks[:2]]
    await index.upsert("idx-other", other, vectors[:2])

    assert await index.count(INDEX) == 4
    assert await index.count("idx-other") == 2
    hits = await index.search("idx-other", vectors[3], 10, None)
    assert {h.chunk.id for h in hits} == {c.id for c in other}
    assert all(h.chunk.index_id == "idx-other" for h in hits)

    await index.drop("idx-other")
    assert await index.count("idx-other") == 0
    assert await index.count(INDEX) == 4


async def test_delete_file_and_count_by_file(index: VectorIndex, embedder: OnnxEmbedder) -> None:
    chunks = _chunks()
    extra = Chunk(id=chunk_id("file-cats", 1, 1), index_id=INDEX, file_id="file-cats",
                  content="Kittens sleep a lot.")
    chunks.append(extra)
    await index.upsert(INDEX, chunks, _vectors(embedder, chunks))
    assert await index.count(INDEX, "file-cats") == 2

    assert await index.delete_file(INDEX, "file-cats") == 2
    assert await index.count(INDEX, "file-cats") == 0
    assert await index.count(INDEX) == 3
    hits = await index.search(INDEX, embedder.embed(["cats and kittens"])[0], 10, None)
    assert "file-cats" not in {h.chunk.file_id for h in hits}
    assert await index.delete_file(INDEX, "file-cats") == 0


async def test_drop_removes_everything(index: VectorIndex, embedder: OnnxEmbedder) -> None:
    chunks = _chunks()
    await index.upsert(INDEX, chunks, _vectors(embedder, chunks))
    await index.drop(INDEX)
    assert await index.count(INDEX) == 0
    assert await index.search(INDEX, embedder.embed(["cats"])[0], 10, None) == []
    await index.drop(INDEX)
    # The index can be written again after a drop.
    await index.upsert(INDEX, chunks[:1], _vectors(embedder, chunks[:1]))
    assert await index.count(INDEX) == 1


async def test_token_vectors_live_and_die_with_their_chunk(index: VectorIndex, embedder: OnnxEmbedder) -> None:
    chunks = _chunks()
    tokens = _tokens(embedder, chunks)
    await index.upsert(INDEX, chunks, _vectors(embedder, chunks), tokens)
    query = _query_tokens(embedder, "felines that chase mice")
    ids = [c.id for c in chunks]

    # Written with the chunk, scored by the engine as MaxSim computed here (float16 storage).
    scores = await index.late_scores(INDEX, query, ids)
    assert scores is not None
    np.testing.assert_allclose(scores, [maxsim(query, t) for t in tokens], atol=2e-3)
    assert max(range(len(ids)), key=lambda i: scores[i]) == 0  # the cats chunk
    assert await index.late_scores(INDEX, query, list(reversed(ids))) == pytest.approx(list(reversed(scores)))
    assert await index.late_scores(INDEX, query, []) == []
    # A chunk it does not hold (another index's, or one never written): not scorable here.
    assert await index.late_scores(INDEX, query, [*ids, "missing"]) is None
    assert await index.late_scores("other", query, ids) is None

    # Rewritten with the chunk: new content, new token vectors.
    changed = [replace(chunks[0], content=DOCS["bread"])]
    new_tokens = _tokens(embedder, changed)
    await index.upsert(INDEX, changed, _vectors(embedder, changed), new_tokens)
    rescored = await index.late_scores(INDEX, query, [ids[0]])
    assert rescored == pytest.approx([maxsim(query, new_tokens[0])], abs=2e-3)
    assert rescored[0] < scores[0] - 0.05

    # Deleted with the chunk's file, then with the index.
    await index.delete_file(INDEX, "file-cats")
    assert await index.late_scores(INDEX, query, [ids[0]]) is None
    assert await index.late_scores(INDEX, query, ids[1:]) == pytest.approx(scores[1:], abs=1e-6)
    await index.drop(INDEX)
    assert await index.late_scores(INDEX, query, ids[1:]) is None


async def test_chunks_written_without_token_vectors_are_not_scorable(
    index: VectorIndex, embedder: OnnxEmbedder
) -> None:
    chunks = _chunks()
    await index.upsert(INDEX, chunks, _vectors(embedder, chunks))
    assert len(await index.search(INDEX, _vectors(embedder, chunks[:1])[0], 4, None)) == 4
    assert await index.late_scores(INDEX, _query_tokens(embedder, "cats"), [c.id for c in chunks]) is None


@pytest.mark.parametrize("kind", ["edge", "local"])
async def test_an_index_without_token_vectors_ignores_them(kind: str, tmp_path: Path, embedder: OnnxEmbedder) -> None:
    async for index in _adapter(kind, tmp_path / "dense", token_vectors=False):
        chunks = _chunks()
        await index.upsert(INDEX, chunks, _vectors(embedder, chunks), _tokens(embedder, chunks))
        hits = await index.search(INDEX, _vectors(embedder, chunks[:1])[0], 1, None)
        assert hits[0].chunk.id == chunks[0].id
        assert await index.late_scores(INDEX, _query_tokens(embedder, "cats"), [chunks[0].id]) is None


async def test_edge_shard_from_before_token_vectors_keeps_its_layout(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    chunks = _chunks()
    old = QdrantEdgeVectorIndex(tmp_path, DIM, optimize_in_background=False, token_vectors=False)
    await old.upsert(INDEX, chunks[:2], _vectors(embedder, chunks[:2]))
    await old.close()
    # Reopened by a service that stores token vectors: the old shard keeps one unnamed vector,
    # takes further writes and searches, and is scored another way; a new index gets them.
    new = QdrantEdgeVectorIndex(tmp_path, DIM, optimize_in_background=False, token_vectors=True)
    try:
        await new.upsert(INDEX, chunks[2:], _vectors(embedder, chunks[2:]), _tokens(embedder, chunks[2:]))
        assert await new.count(INDEX) == 4
        hits = await new.search(INDEX, _vectors(embedder, chunks[3:])[0], 1, None)
        assert hits[0].chunk.id == chunks[3].id
        assert await new.late_scores(INDEX, _query_tokens(embedder, "tides"), [chunks[3].id]) is None
        await new.upsert("fresh", chunks, _vectors(embedder, chunks), _tokens(embedder, chunks))
        assert await new.late_scores("fresh", _query_tokens(embedder, "tides"), [chunks[3].id]) is not None
        # A rebuild of the dense engine drops the index and writes it again: in the new layout.
        await new.drop(INDEX)
        await new.upsert(INDEX, chunks, _vectors(embedder, chunks), _tokens(embedder, chunks))
        assert await new.late_scores(INDEX, _query_tokens(embedder, "tides"), [chunks[3].id]) is not None
    finally:
        await new.close()


async def test_rejects_wrong_dimensions(index: VectorIndex, embedder: OnnxEmbedder) -> None:
    chunks = _chunks()[:1]
    with pytest.raises(InvalidArgument, match="dimensions"):
        await index.upsert(INDEX, chunks, np.zeros((1, 8), dtype=np.float32))


@pytest.fixture(scope="module")
def scenario_vectors(embedder: OnnxEmbedder) -> npt.NDArray[np.float32]:
    return embedder.embed([c.content for c in fs.CHUNKS])


async def _filtered_ids(index: VectorIndex, embedder: OnnxEmbedder, vectors: npt.NDArray[np.float32],
                        flt: FilterNode) -> set[str]:
    await index.upsert(fs.INDEX, fs.CHUNKS, vectors)
    hits = await index.search(fs.INDEX, embedder.embed(["quarry retrieval"])[0], 100, flt)
    return {h.chunk.id for h in hits}


@pytest.mark.parametrize(("name", "flt", "expected"), fs.REQUIRED, ids=[s[0] for s in fs.REQUIRED])
async def test_required_filter_scenarios(scenario_index: VectorIndex, embedder: OnnxEmbedder,
                                         scenario_vectors: npt.NDArray[np.float32],
                                         name: str, flt: FilterNode, expected: set[str]) -> None:
    assert await _filtered_ids(scenario_index, embedder, scenario_vectors, flt) == expected


@pytest.mark.parametrize(("name", "flt", "expected"), fs.LEGACY, ids=[s[0] for s in fs.LEGACY])
async def test_legacy_filter_scenarios(scenario_index: VectorIndex, embedder: OnnxEmbedder,
                                       scenario_vectors: npt.NDArray[np.float32],
                                       name: str, flt: FilterNode, expected: set[str]) -> None:
    case_sensitive = isinstance(flt, Condition) and flt.op is Op.TEXT_MATCH
    if case_sensitive and not _supports_case_sensitive_text(scenario_index):
        # The server adapter has no case-keeping text index: it refuses rather than guessing.
        with pytest.raises(UnsupportedFilter):
            await _filtered_ids(scenario_index, embedder, scenario_vectors, flt)
        return
    assert await _filtered_ids(scenario_index, embedder, scenario_vectors, flt) == expected


async def test_filter_on_keys_needing_quotes(index: VectorIndex, embedder: OnnxEmbedder) -> None:
    chunks = [
        Chunk(id=chunk_id("f", 1, i), index_id=INDEX, file_id="f", content=f"text {i}", metadata=meta)
        for i, meta in enumerate([{"a.b": "x", "a": "x"}, {"a.b": "y", "with space": 3}])
    ]
    await index.upsert(INDEX, chunks, _vectors(embedder, chunks))
    query = embedder.embed(["text"])[0]
    hits = await index.search(INDEX, query, 10, Condition("a.b", Op.EQ, ("x",)))
    assert [h.chunk.id for h in hits] == [chunks[0].id]
    hits = await index.search(INDEX, query, 10, Condition("with space", Op.GTE, (3,)))
    assert [h.chunk.id for h in hits] == [chunks[1].id]
    with pytest.raises(UnsupportedFilter):
        await index.search(INDEX, query, 10, Condition('say "hi"', Op.EQ, ("x",)))


async def test_edge_shards_persist_across_reopen(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    chunks = _chunks()
    vectors = _vectors(embedder, chunks)
    first = QdrantEdgeVectorIndex(tmp_path / "dense", DIM)
    await first.upsert(INDEX, chunks, vectors)
    await first.upsert("weird/id with spaces", chunks[:1], vectors[:1])
    await first.close()

    reopened = QdrantEdgeVectorIndex(tmp_path / "dense", DIM)
    try:
        assert await reopened.count(INDEX) == 4
        assert await reopened.count("weird/id with spaces") == 1
        hits = await reopened.search(INDEX, vectors[2], 1, Condition("topic", Op.EQ, ("bread",)))
        assert hits[0].chunk == chunks[2]
        assert await reopened.delete_file(INDEX, "file-bread") == 1
    finally:
        await reopened.close()
    again = QdrantEdgeVectorIndex(tmp_path / "dense", DIM)
    try:
        assert await again.count(INDEX) == 3
    finally:
        await again.close()


async def test_local_mode_persists_with_path(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    chunks = _chunks()
    vectors = _vectors(embedder, chunks)
    first = QdrantServerVectorIndex(AsyncQdrantClient(path=str(tmp_path / "q")), model_name="m", dim=DIM)
    await first.upsert(INDEX, chunks, vectors)
    await first.close()
    reopened = QdrantServerVectorIndex(AsyncQdrantClient(path=str(tmp_path / "q")), model_name="m", dim=DIM)
    try:
        assert await reopened.count(INDEX) == 4
        hits = await reopened.search(INDEX, vectors[0], 1, None)
        assert hits[0].chunk == chunks[0]
    finally:
        await reopened.close()


async def test_edge_builds_hnsw_in_background(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    edge = QdrantEdgeVectorIndex(tmp_path / "dense", DIM, full_scan_threshold_kb=1, indexing_threshold_kb=1)
    try:
        rng = np.random.default_rng(7)
        vectors = rng.normal(size=(300, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        chunks = [Chunk(id=chunk_id("bulk", 1, i), index_id=INDEX, file_id="bulk", content=str(i))
                  for i in range(300)]
        await edge.upsert(INDEX, chunks, vectors)
        hits = await edge.search(INDEX, vectors[42], 3, None)
        assert hits[0].chunk.id == chunks[42].id
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)
    finally:
        await edge.close()
    # close() waited for the background optimisation: the shard on disk has its HNSW graph.
    shard = qe.EdgeShard.load(str(tmp_path / "dense" / INDEX / "shard"))
    try:
        assert shard.info().indexed_vectors_count == 300
    finally:
        shard.close()
