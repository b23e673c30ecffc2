"""Settings of the dense service (env prefix ``QUARRY_DENSE_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class DenseSettings(ServiceSettings):
    """Embedding model, vector engine and their knobs.

    The engine is the embedded Qdrant (one shard per index under ``data_dir``) unless
    ``qdrant_url`` is set (``QUARRY_DENSE_QDRANT_URL``, e.g. ``http://qdrant:6333``), in which
    case the Qdrant server adapter is used with no other change: one collection per embedding
    model, the index id as its tenant key. Its API key comes from ``QUARRY_DENSE_QDRANT_API_KEY``
    (never from the image). ``hnsw_m``, ``hnsw_ef_construct`` and ``search_ef`` apply to both
    engines; the ``qdrant_*`` settings below to the server only, and only when the collection
    is created (an existing collection keeps its configuration).
    """

    model_config = SettingsConfigDict(env_prefix="QUARRY_DENSE_")  # merged with the base config

    engine: Literal["edge", "server"] | None = Field(
        default=None, description="edge: embedded Qdrant shards; server: a Qdrant server at qdrant_url "
                                  "(unset: server when qdrant_url is set)")
    data_dir: str = Field(default="./data/dense", description="embedded Qdrant shards live here")
    qdrant_url: str | None = Field(default=None, description="a Qdrant server: use the server adapter")
    qdrant_api_key: SecretStr | None = Field(default=None, description="the Qdrant server's API key")
    qdrant_prefer_grpc: bool = Field(default=True, description="talk gRPC (port qdrant_grpc_port) over REST")
    qdrant_grpc_port: int = Field(default=6334, ge=1, le=65535)
    qdrant_on_disk: bool = Field(
        default=False, description="original vectors memory-mapped from disk (pair with int8 quantization)"
    )
    qdrant_quantization: Literal["none", "int8"] = Field(
        default="none", description="int8: scalar quantization, searched first, rescored with the originals"
    )
    qdrant_quantization_quantile: float = Field(default=0.99, gt=0.5, le=1.0)
    qdrant_quantization_always_ram: bool = Field(default=True, description="keep quantized vectors in RAM")
    qdrant_oversampling: float | None = Field(
        default=None, ge=1.0, description="with quantization: fetch top_k x this, rescore, cut to top_k"
    )
    qdrant_shard_number: int | None = Field(default=None, ge=1, description="shards (server default: one per node)")
    qdrant_replication_factor: int | None = Field(default=None, ge=1, description="copies of each shard")
    qdrant_write_consistency_factor: int | None = Field(
        default=None, ge=1, description="replicas that must acknowledge a write"
    )
    collection_prefix: str = Field(default="quarry-", description="server collection name prefix")
    timeout_seconds: float = Field(default=10.0, gt=0, description="per call to the Qdrant server")
    model_dir: str | None = Field(default=None, description="model.onnx + tokenizer.json; default packaged")
    max_tokens: int = Field(default=256, ge=8, le=8192)
    embed_batch_size: int = Field(default=32, ge=1, le=1024, description="texts per model call")
    embed_batch_tokens: int = Field(
        default=1024, ge=1, description="padded tokens per model call (sorted by length; a longer text runs alone)"
    )
    upsert_batch_size: int = Field(default=256, ge=1, description="chunks embedded then written at once")
    token_vectors: int = Field(
        default=32, ge=0, le=256,
        description="late-interaction token vectors stored per chunk for the default reranker (0 = off; "
                    "indexes created while off keep none)",
    )
    query_token_cache: int = Field(default=1024, ge=0, description="queries whose token vectors are kept")
    model_threads: int = Field(default=0, ge=0, description="onnxruntime intra-op threads (0 = auto)")
    hnsw_m: int = Field(default=16, ge=2)
    hnsw_ef_construct: int = Field(default=100, ge=4)
    full_scan_threshold_kb: int = Field(default=10_000, ge=0)
    indexing_threshold_kb: int | None = Field(
        default=None, ge=0, description="embedded: segment size that triggers the HNSW build (engine default)"
    )
    search_ef: int | None = Field(default=None, ge=1, description="HNSW ef at query time (engine default)")
    engine_threads: int = Field(default=4, ge=1, description="threads running the embedded engine")
    max_top_k: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _engine_has_what_it_needs(self) -> DenseSettings:
        if self.engine == "server" and not self.qdrant_url:
            raise ValueError("QUARRY_DENSE_ENGINE=server needs QUARRY_DENSE_QDRANT_URL")
        if self.engine == "edge" and self.qdrant_url:
            raise ValueError("QUARRY_DENSE_QDRANT_URL is set but QUARRY_DENSE_ENGINE=edge; unset one of them")
        return self

    @property
    def resolved_engine(self) -> str:
        """The vector engine these settings select."""
        return self.engine or ("server" if self.qdrant_url else "edge")
