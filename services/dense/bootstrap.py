"""Composition root of the dense service: settings -> embedder + vector index -> service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.dense.adapters.qdrant_edge import QdrantEdgeVectorIndex
from services.dense.adapters.qdrant_server import QdrantServerVectorIndex
from services.dense.embedding import OnnxEmbedder
from services.dense.ports import Embedder, VectorIndex
from services.dense.service import DenseService
from services.dense.settings import DenseSettings


@dataclass(frozen=True)
class Bootstrapped:
    service: DenseService
    ready: Callable[[], Awaitable[bool]]
    close: Callable[[], Awaitable[None]]


def build_index(settings: DenseSettings, embedder: Embedder) -> VectorIndex:
    """The Qdrant server adapter when ``qdrant_url`` is set, else embedded Qdrant shards."""
    if settings.qdrant_url:
        return QdrantServerVectorIndex.connect(
            settings.qdrant_url,
            api_key=settings.qdrant_api_key,
            timeout=settings.timeout_seconds,
            model_name=embedder.model_name,
            dim=embedder.dim,
            collection_prefix=settings.collection_prefix,
            hnsw_m=settings.hnsw_m,
            hnsw_ef_construct=settings.hnsw_ef_construct,
            search_ef=settings.search_ef,
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
    )


def bootstrap(settings: DenseSettings, *, embedder: Embedder | None = None,
              index: VectorIndex | None = None) -> Bootstrapped:
    """Wire the service; ``embedder``/``index`` override the ones chosen from settings."""
    if embedder is None:
        embedder = OnnxEmbedder.load(
            settings.model_dir,
            batch_size=settings.embed_batch_size,
            max_tokens=settings.max_tokens,
            threads=settings.model_threads,
        )
    if index is None:
        index = build_index(settings, embedder)
    service = DenseService(
        embedder, index, upsert_batch_size=settings.upsert_batch_size, max_top_k=settings.max_top_k
    )
    return Bootstrapped(service=service, ready=service.ready, close=service.close)
