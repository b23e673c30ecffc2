"""Composition root of the dense service: settings -> embedder + vector index -> service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.dense.adapters.qdrant_edge import QdrantEdgeVectorIndex
from services.dense.adapters.qdrant_server import CollectionConfig, QdrantServerVectorIndex
from services.dense.embedding import OnnxEmbedder
from services.dense.ports import Embedder, VectorIndex
from services.dense.service import DenseService
from services.dense.settings import DenseSettings


@dataclass(frozen=True)
class Bootstrapped:
    service: DenseService
    ready: Callable[[], Awaitable[bool]]
    close: Callable[[], Awaitable[None]]


def collection_config(settings: DenseSettings) -> CollectionConfig:
    """The server collection's configuration from the ``qdrant_*`` and HNSW settings."""
    return CollectionConfig(
        hnsw_m=settings.hnsw_m,
        hnsw_ef_construct=settings.hnsw_ef_construct,
        on_disk=settings.qdrant_on_disk,
        quantization=settings.qdrant_quantization,
        quantile=settings.qdrant_quantization_quantile,
        always_ram=settings.qdrant_quantization_always_ram,
        shard_number=settings.qdrant_shard_number,
        replication_factor=settings.qdrant_replication_factor,
        write_consistency_factor=settings.qdrant_write_consistency_factor,
    )


def build_index(settings: DenseSettings, embedder: Embedder) -> VectorIndex:
    """The Qdrant server adapter for engine ``server``, else embedded Qdrant shards."""
    if settings.resolved_engine == "server":
        assert settings.qdrant_url  # checked by the settings
        api_key = settings.qdrant_api_key
        return QdrantServerVectorIndex.connect(
            settings.qdrant_url,
            api_key=api_key.get_secret_value() if api_key else None,
            timeout=settings.timeout_seconds,
            prefer_grpc=settings.qdrant_prefer_grpc,
            grpc_port=settings.qdrant_grpc_port,
            model_name=embedder.model_name,
            dim=embedder.dim,
            collection_prefix=settings.collection_prefix,
            config=collection_config(settings),
            search_ef=settings.search_ef,
            oversampling=settings.qdrant_oversampling,
            token_vectors=settings.token_vectors > 0,
        )
    return QdrantEdgeVectorIndex(
        settings.data_dir,
        embedder.dim,
        hnsw_m=settings.hnsw_m,
        hnsw_ef_construct=settings.hnsw_ef_construct,
        full_scan_threshold_kb=settings.full_scan_threshold_kb,
        indexing_threshold_kb=settings.indexing_threshold_kb,
        search_ef=settings.search_ef,
        threads=settings.engine_threads,
        token_vectors=settings.token_vectors > 0,
    )


def bootstrap(settings: DenseSettings, *, embedder: Embedder | None = None,
              index: VectorIndex | None = None) -> Bootstrapped:
    """Wire the service; ``embedder``/``index`` override the ones chosen from settings."""
    if embedder is None:
        embedder = OnnxEmbedder.load(
            settings.model_dir,
            batch_size=settings.embed_batch_size,
            batch_tokens=settings.embed_batch_tokens,
            max_tokens=settings.max_tokens,
            threads=settings.model_threads,
        )
    if index is None:
        index = build_index(settings, embedder)
    service = DenseService(
        embedder, index, upsert_batch_size=settings.upsert_batch_size, max_top_k=settings.max_top_k,
        token_vectors=settings.token_vectors, query_cache=settings.query_token_cache,
    )
    return Bootstrapped(service=service, ready=service.ready, close=service.close)
