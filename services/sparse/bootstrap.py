"""Composition root of the sparse process: settings -> keyword index adapter -> service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.sparse.adapters.tantivy import TantivyKeywordIndex
from services.sparse.errors import NotImplementedBackend
from services.sparse.ports import KeywordIndex
from services.sparse.service import SparseService
from services.sparse.settings import SparseSettings


@dataclass(frozen=True)
class SparseApp:
    service: SparseService
    ready: Callable[[], Awaitable[bool]]
    close: Callable[[], Awaitable[None]]


def keyword_index(settings: SparseSettings) -> KeywordIndex:
    """The adapter the settings select: embedded tantivy unless an OpenSearch URL is given."""
    if settings.opensearch_url:
        raise NotImplementedBackend(
            "QUARRY_SPARSE_OPENSEARCH_URL is set, but the OpenSearch keyword index is not implemented "
            "yet; unset it to use the embedded tantivy index under QUARRY_SPARSE_DATA_DIR"
        )
    return TantivyKeywordIndex(
        settings.data_dir,
        writer_heap_bytes=settings.writer_heap_mb * 1024 * 1024,
        writer_threads=settings.writer_threads,
        threads=settings.threads,
    )


def bootstrap(settings: SparseSettings) -> SparseApp:
    """Wire the sparse service from ``settings``; the caller owns ``close``."""
    service = SparseService(
        keyword_index(settings),
        timeout=settings.timeout,
        max_top_k=settings.max_top_k,
    )
    return SparseApp(service=service, ready=service.ready, close=service.close)
