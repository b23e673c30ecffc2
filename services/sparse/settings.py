"""Settings of the sparse process (env prefix ``QUARRY_SPARSE_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class SparseSettings(ServiceSettings):
    """Where the keyword index lives and how it is driven.

    ``opensearch_url`` unset (the default) means embedded tantivy under ``data_dir``. Setting it
    selects the OpenSearch adapter, which is not implemented yet: the process then refuses to
    start with a message saying so.
    """

    model_config = SettingsConfigDict(env_prefix="QUARRY_SPARSE_")  # merged with the base config

    data_dir: str = Field(default="data/sparse", description="tantivy: one sub-directory per Quarry index")
    opensearch_url: str | None = Field(
        default=None, description="OpenSearch cluster URL (not implemented yet)"
    )
    writer_heap_mb: int = Field(default=64, ge=16, le=16384, description="tantivy writer memory per index")
    writer_threads: int = Field(
        default=1, ge=1, le=64, description="tantivy indexing threads per index writer"
    )
    threads: int = Field(default=4, ge=1, le=256, description="worker threads running tantivy calls")
    timeout: float = Field(
        default=10.0, gt=0, description="seconds per call when the caller sets no deadline"
    )
    max_top_k: int = Field(default=10_000, ge=1, description="larger top_k values are refused")
