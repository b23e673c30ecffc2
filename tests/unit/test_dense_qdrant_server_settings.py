"""The Qdrant server settings reach the collection: settings -> bootstrap -> create_collection.

``RecordingClient`` is the real ``AsyncQdrantClient`` in local mode that also keeps the
arguments of ``create_collection`` / ``create_payload_index`` / ``query_points`` (local mode
ignores most of them, which is why they are checked here rather than by behaviour).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from qdrant_client import AsyncQdrantClient, models

from services.common.domain import Chunk, chunk_id
from services.dense.adapters.qdrant_server import (
    CollectionConfig,
    QdrantServerVectorIndex,
    collection_params,
    search_params,
)
from services.dense.bootstrap import build_index, collection_config
from services.dense.settings import DenseSettings

DIM = 8


class RecordingClient(AsyncQdrantClient):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def create_collection(self, collection_name: str, **kwargs: Any) -> bool:  # type: ignore[override]
        self.calls.append(("create_collection", {"collection_name": collection_name, **kwargs}))
        return await super().create_collection(collection_name, **kwargs)

    async def create_payload_index(self, collection_name: str, field_name: str, **kwargs: Any) -> Any:  # type: ignore[override]
        self.calls.append(("create_payload_index", {"field_name": field_name, **kwargs}))
        return await super().create_payload_index(collection_name, field_name, **kwargs)

    def created(self) -> dict[str, Any]:
        (args,) = [a for name, a in self.calls if name == "create_collection"]
        return args

    def indexes(self) -> dict[str, Any]:
        return {a["field_name"]: a["field_schema"] for name, a in self.calls if name == "create_payload_index"}


class FixedEmbedder:
    model_name = "All-MiniLM/L6 v2"
    dim = DIM

    def embed(self, texts: Sequence[str], *, is_query: bool = False) -> npt.NDArray[np.float32]:
        rows = np.eye(DIM, dtype=np.float32)[[len(t) % DIM for t in texts]]
        return rows


def _chunks() -> list[Chunk]:
    return [
        Chunk(id=chunk_id("f", 1, i), index_id="idx", file_id="f", content=f"text {i}",
              metadata={"year": 2020 + i, "author": "Ada", "draft": bool(i), "tags": ["a"]})
        for i in range(3)
    ]


def test_settings_read_the_qdrant_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUARRY_DENSE_QDRANT_URL", "https://qdrant.internal:6333")
    monkeypatch.setenv("QUARRY_DENSE_QDRANT_API_KEY", "k3y")
    monkeypatch.setenv("QUARRY_DENSE_QDRANT_QUANTIZATION", "int8")
    monkeypatch.setenv("QUARRY_DENSE_QDRANT_ON_DISK", "true")
    monkeypatch.setenv("QUARRY_DENSE_QDRANT_SHARD_NUMBER", "6")
    monkeypatch.setenv("QUARRY_DENSE_QDRANT_REPLICATION_FACTOR", "2")
    monkeypatch.setenv("QUARRY_DENSE_QDRANT_WRITE_CONSISTENCY_FACTOR", "2")
    monkeypatch.setenv("QUARRY_DENSE_QDRANT_PREFER_GRPC", "false")
    settings = DenseSettings()
    assert settings.qdrant_url == "https://qdrant.internal:6333"
    assert settings.qdrant_api_key is not None and settings.qdrant_api_key.get_secret_value() == "k3y"
    assert "k3y" not in repr(settings)
    assert settings.qdrant_prefer_grpc is False
    assert collection_config(settings) == CollectionConfig(
        quantization="int8", on_disk=True, shard_number=6, replication_factor=2, write_consistency_factor=2
    )


def test_bad_qdrant_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match="qdrant_quantization"):
        DenseSettings(qdrant_quantization="binary")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="qdrant_replication_factor"):
        DenseSettings(qdrant_replication_factor=0)


def test_collection_params_carry_every_setting() -> None:
    config = CollectionConfig(hnsw_m=32, hnsw_ef_construct=200, on_disk=True, quantization="int8", quantile=0.95,
                              always_ram=True, shard_number=4, replication_factor=2, write_consistency_factor=1)
    params = collection_params(config, 384)
    assert params["vectors_config"] == models.VectorParams(size=384, distance=models.Distance.COSINE, on_disk=True)
    assert params["hnsw_config"] == models.HnswConfigDiff(m=0, payload_m=32, ef_construct=200)
    assert params["quantization_config"] == models.ScalarQuantization(
        scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.95, always_ram=True)
    )
    assert (params["shard_number"], params["replication_factor"], params["write_consistency_factor"]) == (4, 2, 1)
    plain = collection_params(CollectionConfig(), 384)
    assert plain["quantization_config"] is None and plain["shard_number"] is None
    assert plain["vectors_config"].on_disk is False


def test_search_params() -> None:
    int8 = CollectionConfig(quantization="int8")
    assert search_params(CollectionConfig(), None, 2.0) is None  # nothing to rescore without quantization
    assert search_params(CollectionConfig(), 64, None) == models.SearchParams(hnsw_ef=64)
    assert search_params(int8, 64, 2.0) == models.SearchParams(
        hnsw_ef=64, quantization=models.QuantizationSearchParams(rescore=True, oversampling=2.0)
    )


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")
async def test_settings_reach_create_collection_and_payload_indexes() -> None:
    settings = DenseSettings(
        hnsw_m=24, hnsw_ef_construct=150, qdrant_on_disk=True, qdrant_quantization="int8",
        qdrant_quantization_quantile=0.98, qdrant_shard_number=3, qdrant_replication_factor=2,
        qdrant_write_consistency_factor=2, collection_prefix="qa-",
    )
    client = RecordingClient(location=":memory:")
    index = QdrantServerVectorIndex(
        client, model_name=FixedEmbedder.model_name, dim=DIM, collection_prefix=settings.collection_prefix,
        config=collection_config(settings), payload_indexes=True,
    )
    try:
        chunks = _chunks()
        await index.upsert("idx", chunks, FixedEmbedder().embed([c.content for c in chunks]))
        await index.upsert("idx", chunks, FixedEmbedder().embed([c.content for c in chunks]))
        assert await index.count("idx") == 3
    finally:
        await index.close()

    created = client.created()  # once, though written twice
    assert created["collection_name"] == "qa-all-minilm-l6-v2-8"
    assert created["vectors_config"] == models.VectorParams(size=DIM, distance=models.Distance.COSINE, on_disk=True)
    assert created["hnsw_config"] == models.HnswConfigDiff(m=0, payload_m=24, ef_construct=150)
    assert created["quantization_config"].scalar == models.ScalarQuantizationConfig(
        type=models.ScalarType.INT8, quantile=0.98, always_ram=True
    )
    assert (created["shard_number"], created["replication_factor"], created["write_consistency_factor"]) == (3, 2, 2)
    indexes = client.indexes()
    assert indexes["index_id"] == models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
    assert indexes["file_id"] == models.PayloadSchemaType.KEYWORD
    assert indexes["meta.year"] == models.PayloadSchemaType.FLOAT
    assert indexes["meta.author"] == models.PayloadSchemaType.KEYWORD
    assert indexes["meta.draft"] == models.PayloadSchemaType.BOOL
    assert indexes["meta.tags"] == models.PayloadSchemaType.KEYWORD
    assert len([n for n, _ in client.calls if n == "create_payload_index"]) == len(indexes)  # each once


async def test_local_mode_gets_no_payload_indexes_by_default() -> None:
    client = RecordingClient(location=":memory:")
    index = QdrantServerVectorIndex(client, model_name="m", dim=DIM, config=CollectionConfig(quantization="int8"))
    try:
        chunks = _chunks()
        await index.upsert("idx", chunks, FixedEmbedder().embed([c.content for c in chunks]))
        hits = await index.search("idx", FixedEmbedder().embed(["text 0"])[0], 2, None)
        assert len(hits) == 2
    finally:
        await index.close()
    assert client.indexes() == {}
    assert client.created()["quantization_config"] is not None  # sent all the same: local mode ignores it


async def test_bootstrap_builds_the_server_adapter_from_settings_without_a_request() -> None:
    settings = DenseSettings(qdrant_url="http://127.0.0.1:1", qdrant_prefer_grpc=True,
                             qdrant_grpc_port=1, timeout_seconds=1, search_ef=32,
                             qdrant_quantization="int8", qdrant_oversampling=1.5)
    index = build_index(settings, FixedEmbedder())
    assert isinstance(index, QdrantServerVectorIndex)
    try:
        assert index.collection == "quarry-all-minilm-l6-v2-8"
        assert index._search_params == models.SearchParams(
            hnsw_ef=32, quantization=models.QuantizationSearchParams(rescore=True, oversampling=1.5)
        )
        assert await index.ready() is False  # nothing listens there
    finally:
        await index.close()
