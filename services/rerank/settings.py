"""Settings of the rerank process (env prefix ``QUARRY_RERANK_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings

LATE_INTERACTION_MAX_TOKENS = 128
CROSS_ENCODER_MAX_TOKENS = 256


class RerankSettings(ServiceSettings):
    """Which reranker to run and how.

    ``backend``:
      * ``late_interaction`` (default, offline): MaxSim over the token vectors of ``model`` (a
        directory with ``model.onnx`` + ``tokenizer.json``; unset = the packaged MiniLM).
      * ``onnx``: a cross-encoder; ``model`` is a local directory or a Hugging Face hub name.
      * ``http``: an external ``/rerank`` endpoint at ``url`` speaking ``protocol``; ``model`` is
        sent as the request's model name (Cohere/Jina need one; TEI ignores it).
    """

    model_config = SettingsConfigDict(env_prefix="QUARRY_RERANK_", env_nested_delimiter="__", extra="ignore")

    backend: Literal["late_interaction", "onnx", "http"] = "late_interaction"
    model: str | None = None
    url: str | None = None
    api_key: SecretStr | None = None
    protocol: Literal["tei", "cohere"] = "tei"
    # Unset: 128 for late interaction (on four BEIR sets MaxSim over a passage's first 128 tokens
    # ranked as well as or better than over 256, at 40 % less CPU; docs/benchmarks.md), 256 for a
    # cross-encoder (its window holds query and passage together).
    max_tokens: int | None = Field(default=None, ge=8, le=8192, description="tokens kept per passage (or pair)")
    batch_size: int = Field(default=32, ge=1, le=1024, description="passages per model run or HTTP call")
    batch_tokens: int = Field(
        default=512, ge=64, le=1_000_000,
        description="late interaction: padded tokens per model run (smaller runs beat one large one on CPU)",
    )
    cache_size: int = Field(default=4096, ge=0, description="late interaction: passages kept in the LRU")
    cache_mb: int = Field(default=256, ge=0, description="late interaction: memory bound of the LRU")
    timeout: float = Field(default=10.0, gt=0, description="max seconds per Score (or the caller deadline)")
    max_passages: int = Field(default=1000, ge=1, description="passages accepted in one Score call")
    sigmoid: bool = Field(default=False, description="onnx: map logits to (0, 1)")
    threads: int = Field(default=0, ge=0, description="onnxruntime intra-op threads; 0 = its default")
    retries: int = Field(default=2, ge=0, le=10, description="http: retries on connect errors and 5xx")

    @model_validator(mode="after")
    def _backend_needs(self) -> RerankSettings:
        if self.backend == "http" and not self.url:
            raise ValueError("QUARRY_RERANK_URL is required when QUARRY_RERANK_BACKEND=http")
        if self.backend == "onnx" and not self.model:
            raise ValueError(
                "QUARRY_RERANK_MODEL (a directory or hub name) is required when QUARRY_RERANK_BACKEND=onnx"
            )
        return self
