"""Composition root of the sparse process: settings -> keyword index adapter -> service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.sparse.adapters.opensearch import OpenSearchKeywordIndex, WriteOptions
from services.sparse.adapters.opensearch_dsl import IndexLayout
from services.sparse.adapters.tantivy import TantivyKeywordIndex
from services.sparse.ports import KeywordIndex
from services.sparse.service import SparseService
from services.sparse.settings import SparseSettings


@dataclass(frozen=True)
class SparseApp:
    service: SparseService
    ready: Callable[[], Awaitable[bool]]
    close: Callable[[], Awaitable[None]]


def opensearch_index(settings: SparseSettings) -> OpenSearchKeywordIndex:
    """The OpenSearch adapter for ``settings.opensearch_url`` (makes no request)."""
    password, api_key = settings.opensearch_password, settings.opensearch_api_key
    return OpenSearchKeywordIndex.connect(
        settings.opensearch_urls(),
        username=settings.opensearch_username,
        password=password.get_secret_value() if password else None,
        api_key=api_key.get_secret_value() if api_key else None,
        verify_certs=settings.opensearch_verify_certs,
        ca_certs=settings.opensearch_ca_certs,
        timeout=settings.timeout,
        layout=IndexLayout(
            prefix=settings.opensearch_index_prefix,
            shards=settings.opensearch_shards,
            replicas=settings.opensearch_replicas,
            refresh_interval=settings.opensearch_refresh_interval,
            total_fields_limit=settings.opensearch_total_fields_limit,
        ),
        writes=WriteOptions(
            batch_size=settings.opensearch_bulk_batch_size,
            max_bytes=settings.opensearch_bulk_max_bytes,
            concurrency=settings.opensearch_bulk_concurrency,
            retries=settings.opensearch_retries,
        ),
        manage_template=settings.opensearch_manage_template,
    )


def keyword_index(settings: SparseSettings) -> KeywordIndex:
    """The adapter the settings select (``engine``; by default tantivy unless an OpenSearch URL is given)."""
    if settings.resolved_engine == "opensearch":
        return opensearch_index(settings)
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
