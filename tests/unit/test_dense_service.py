"""DenseService use cases over the packaged embedder and an embedded Qdrant shard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from services.common.domain import FILE_ID_FIELD, Chunk, Condition, Op, chunk_id
from services.common.errors import InvalidArgument
from services.dense.adapters.qdrant_edge import QdrantEdgeVectorIndex
from services.dense.bootstrap import bootstrap
from services.dense.embedding import OnnxEmbedder
from services.dense.service import DenseService
from services.dense.settings import DenseSettings


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return OnnxEmbedder.load()


@pytest.fixture
async def service(tmp_path: Path, embedder: OnnxEmbedder) -> AsyncIterator[DenseService]:
    index = QdrantEdgeVectorIndex(tmp_path, embedder.dim)
    svc = DenseService(embedder, index, upsert_batch_size=2, max_top_k=50)
    yield svc
    await svc.close()


def _chunks(n: int, index_id: str = "") -> list[Chunk]:
    topics = ["volcanoes erupt lava", "penguins live in antarctica", "jazz uses improvisation",
              "compilers translate source code", "tea is brewed from leaves"]
    return [Chunk(id=chunk_id(f"file-{i % 2}", 1, i), index_id=index_id, file_id=f"file-{i % 2}",
                  content=topics[i % len(topics)], metadata={"n": i}) for i in range(n)]


async def test_upsert_embeds_in_batches_and_search_finds_the_closest(service: DenseService) -> None:
    assert await service.upsert("idx", _chunks(5)) == 5
    assert await service.count("idx") == 5
    result = await service.search("idx", "birds in the cold south", 3, None)
    assert result.hits[0].chunk.content == "penguins live in antarctica"
    assert result.hits[0].chunk.index_id == "idx"
    assert len(result.hits) == 3
    assert result.embed_seconds > 0 and result.search_seconds > 0


async def test_search_pushes_the_filter_down(service: DenseService) -> None:
    await service.upsert("idx", _chunks(5))
    result = await service.search("idx", "birds", 10, Condition(FILE_ID_FIELD, Op.EQ, ("file-0",)))
    assert {h.chunk.metadata["n"] for h in result.hits} == {0, 2, 4}


async def test_delete_file_drop_and_count_by_file(service: DenseService) -> None:
    await service.upsert("idx", _chunks(5))
    assert await service.count("idx", "file-1") == 2
    assert await service.delete_file("idx", "file-1") == 2
    assert await service.count("idx") == 3
    assert await service.drop("idx") == 3
    assert await service.count("idx") == 0


async def test_embed_returns_unit_rows(service: DenseService) -> None:
    vectors = await service.embed(["a", "b c"], is_query=True)
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


async def test_validation(service: DenseService) -> None:
    with pytest.raises(InvalidArgument):
        await service.upsert("", _chunks(1))
    with pytest.raises(InvalidArgument):
        await service.upsert("idx", _chunks(1, index_id="other"))
    with pytest.raises(InvalidArgument):
        await service.search("idx", "q", 51, None)
    with pytest.raises(InvalidArgument):
        await service.search("idx", "q", -1, None)
    with pytest.raises(InvalidArgument):
        await service.delete_file("idx", "")
    assert (await service.search("idx", "q", 0, None)).hits == []


async def test_bootstrap_picks_the_embedded_engine(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    app = bootstrap(DenseSettings(data_dir=str(tmp_path)), embedder=embedder)
    try:
        assert isinstance(app.service.index, QdrantEdgeVectorIndex)
        assert await app.ready()
    finally:
        await app.close()


def test_settings_read_the_dense_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUARRY_DENSE_QDRANT_URL", "http://qdrant:6334")
    monkeypatch.setenv("QUARRY_DENSE_EMBED_BATCH_SIZE", "8")
    monkeypatch.setenv("QUARRY_DENSE_PORT", "7001")
    settings = DenseSettings()
    assert settings.qdrant_url == "http://qdrant:6334"
    assert settings.embed_batch_size == 8
    assert settings.port == 7001
