"""Settings of the sparse process (env prefix ``QUARRY_SPARSE_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings
from services.sparse.adapters.opensearch_dsl import PREFIX_PATTERN


class SparseSettings(ServiceSettings):
    """Where the keyword index lives and how it is driven.

    ``opensearch_url`` unset (the default) means embedded tantivy under ``data_dir``. Setting it
    (``QUARRY_SPARSE_OPENSEARCH_URL``, one URL or several separated by commas) selects the
    OpenSearch adapter, with no other change: credentials come from ``QUARRY_SPARSE_OPENSEARCH_USERNAME``
    and ``..._PASSWORD`` (basic auth) or ``..._API_KEY`` (``Authorization: ApiKey``), never from
    the image. The ``opensearch_*`` settings below apply to OpenSearch only, the tantivy ones
    (``data_dir``, ``writer_*``, ``threads``) to tantivy only; ``timeout`` is the budget of a
    call in both, and in OpenSearch also the timeout of each HTTP request.
    """

    model_config = SettingsConfigDict(env_prefix="QUARRY_SPARSE_")  # merged with the base config

    engine: Literal["tantivy", "opensearch"] | None = Field(
        default=None, description="tantivy (embedded) or opensearch at opensearch_url "
                                  "(unset: opensearch when opensearch_url is set)")
    data_dir: str = Field(default="data/sparse", description="tantivy: one sub-directory per Quarry index")
    writer_heap_mb: int = Field(default=64, ge=16, le=16384, description="tantivy writer memory per index")
    writer_threads: int = Field(
        default=1, ge=1, le=64, description="tantivy indexing threads per index writer"
    )
    threads: int = Field(default=4, ge=1, le=256, description="worker threads running tantivy calls")
    timeout: float = Field(
        default=10.0, gt=0, description="seconds per call when the caller sets no deadline"
    )
    max_top_k: int = Field(default=10_000, ge=1, description="larger top_k values are refused")

    opensearch_url: str | None = Field(
        default=None, description="OpenSearch node URL(s), comma-separated: use the OpenSearch adapter"
    )
    opensearch_username: str | None = Field(default=None, description="basic auth user")
    opensearch_password: SecretStr | None = Field(default=None, description="basic auth password")
    opensearch_api_key: SecretStr | None = Field(default=None, description="sent as Authorization: ApiKey")
    opensearch_verify_certs: bool = Field(default=True, description="verify the cluster's TLS certificate")
    opensearch_ca_certs: str | None = Field(default=None, description="CA bundle file for TLS (default: certifi)")
    opensearch_index_prefix: str = Field(
        default="quarry-", pattern=PREFIX_PATTERN, description="every index name starts with it"
    )
    opensearch_shards: int = Field(default=1, ge=1, le=1024, description="primary shards per index")
    opensearch_replicas: int = Field(default=1, ge=0, le=32, description="replicas per shard")
    opensearch_refresh_interval: str = Field(
        default="1s", pattern=r"^[1-9][0-9]*(ms|s|m)$", description="how soon writes become searchable"
    )
    opensearch_total_fields_limit: int = Field(
        default=2000, ge=100, description="mapped fields per index (each metadata key takes 1 to 3)"
    )
    opensearch_bulk_batch_size: int = Field(default=500, ge=1, le=10_000, description="documents per _bulk")
    opensearch_bulk_max_bytes: int = Field(
        default=8 * 1024 * 1024, ge=64 * 1024, description="bytes per _bulk request (about)"
    )
    opensearch_bulk_concurrency: int = Field(
        default=2, ge=1, le=64, description="_bulk requests in flight per process; more writers wait"
    )
    opensearch_retries: int = Field(default=4, ge=0, le=20, description="retries on connection errors, 429, 5xx")
    opensearch_manage_template: bool = Field(
        default=True, description="put the index template; off where operators manage templates"
    )

    @model_validator(mode="after")
    def _engine_has_what_it_needs(self) -> SparseSettings:
        if self.engine == "opensearch" and not self.opensearch_urls():
            raise ValueError("QUARRY_SPARSE_ENGINE=opensearch needs QUARRY_SPARSE_OPENSEARCH_URL")
        if self.engine == "tantivy" and self.opensearch_urls():
            raise ValueError("QUARRY_SPARSE_OPENSEARCH_URL is set but QUARRY_SPARSE_ENGINE=tantivy; unset one of them")
        return self

    @property
    def resolved_engine(self) -> str:
        """The keyword engine these settings select."""
        return self.engine or ("opensearch" if self.opensearch_urls() else "tantivy")

    @model_validator(mode="after")
    def _one_kind_of_credentials(self) -> SparseSettings:
        if self.opensearch_api_key is not None and self.opensearch_username:
            raise ValueError("set opensearch_username/password or opensearch_api_key, not both")
        if self.opensearch_password is not None and not self.opensearch_username:
            raise ValueError("opensearch_password needs opensearch_username")
        return self

    def opensearch_urls(self) -> list[str]:
        """The node URLs of ``opensearch_url``."""
        return [u.strip() for u in (self.opensearch_url or "").split(",") if u.strip()]
