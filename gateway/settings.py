"""Gateway settings (env prefix ``QUARRY_GATEWAY_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.security import ServiceAuth


class RetrievalDefaults(BaseModel):
    """Server-side defaults; they apply whenever a client omits a field (the legacy
    retriever never sends falsy values, so these are what it gets)."""

    top_k: int = Field(default=10, ge=1)
    max_top_k: int = Field(default=500, ge=1)
    num_candidates: int = Field(default=100, ge=1)
    dense_weight: float = Field(default=0.5, ge=0, le=1)
    sparse_weight: float = Field(default=0.5, ge=0, le=1)
    # dbsf was the best fusion at equal weights on all four judged collections (docs/benchmarks.md).
    fusion: Literal["relative_score", "rrf", "dbsf"] = "dbsf"
    rerank_enabled: bool = True
    # How many fused candidates the reranker scores (its cost grows with this).
    rerank_depth: int = Field(default=20, ge=1)
    # Weight of the reranker in the order of the reranked window: the window is ordered by
    # w * minmax(reranker score) + (1 - w) * minmax(fused score). With the stored token vectors (32
    # per chunk) over the dbsf default's candidates, 0.1 is the weight that lowers no judged
    # collection and raises the mean; higher weights help cisi and vaswani but cost cranfield
    # (docs/benchmarks.md, stored token vectors study).
    rerank_blend: float = Field(default=0.1, ge=0, le=1)
    # Where the reranker's scores come from. "stored": late interaction over the token vectors the
    # dense service stored with each chunk at ingest (no model run at query time but the query's,
    # which the dense leg has already done); a window with a chunk indexed without them (an index
    # created before they existed) goes to the rerank service. "model": the rerank service scores
    # every window (the choice for a cross-encoder or an HTTP reranker, QUARRY_RERANK_BACKEND).
    rerank_source: Literal["stored", "model"] = "stored"
    # The rerank call's own deadline (within the request's): past it the answer degrades to the
    # fused order instead of holding the request for its whole budget.
    rerank_timeout_seconds: float = Field(default=2.0, gt=0)
    # Each retrieval leg's own deadline (within the request's): a leg that does not answer in time
    # is dropped and the answer degraded, instead of holding the request for its whole budget.
    leg_timeout_seconds: float = Field(default=2.0, gt=0)


class AdmissionSettings(BaseModel):
    """What the gateway admits (``QUARRY_GATEWAY_ADMISSION__*``; see ``gateway.admission``)."""

    # Requests per second per API key, sustained; 0 turns the limit off.
    rate_per_key: float = Field(default=100.0, ge=0)
    # Requests a key may send at once above the sustained rate.
    burst_per_key: int = Field(default=200, ge=1)
    # JSON (and other non-multipart) bodies; uploads are bounded by max_upload_bytes.
    max_body_mb: int = Field(default=32, ge=1)
    # Retrieves running at once, and waiting beyond that; past both: 503 with Retry-After.
    retrieve_concurrency: int = Field(default=64, ge=1)
    retrieve_queue: int = Field(default=256, ge=0)
    # Rerank calls at once and waiting; past both the answer keeps the fused order (degraded).
    rerank_concurrency: int = Field(default=2, ge=1)
    rerank_queue: int = Field(default=8, ge=0)


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUARRY_GATEWAY_", env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    #: The public gRPC API (quarry.retrieval.v1.Retrieval) on this port; unset: not served
    #: (``quarry up`` serves it on 8001, deploy/ on the Service's ``grpc`` port).
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    dense_addr: str = "127.0.0.1:50061"
    sparse_addr: str = "127.0.0.1:50062"
    rerank_addr: str = "127.0.0.1:50063"
    files_addr: str = "127.0.0.1:50064"
    #: The credential the gateway's calls to the services carry (``QUARRY_GATEWAY_SERVICE_AUTH__*``).
    service_auth: ServiceAuth = Field(default_factory=ServiceAuth)
    # Redis URL for a shared cache; unset: an in-process LRU.
    redis_url: str | None = None
    cache_entries: int = Field(default=10_000, ge=0)
    cache_ttl_seconds: float = Field(default=300.0, gt=0)
    # Total budget of one request; each backend call gets what is left of it.
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    # Catalog calls (auth, index lookup) are small and get this budget each.
    catalog_timeout_seconds: float = Field(default=2.0, gt=0)
    auth_cache_seconds: float = Field(default=10.0, ge=0)
    # How long a retrieve may use an index read by an earlier request (its owner and generation);
    # see gateway.cache.IndexCache. 0: read it from the files service on every retrieve.
    index_cache_seconds: float = Field(default=1.0, ge=0)
    max_upload_bytes: int = Field(default=100 * 1024 * 1024, gt=0)
    # Legacy files_* modes return whole files: longer texts are cut here.
    max_file_node_chars: int = Field(default=2_000_000, gt=0)
    # Page screenshot nodes per legacy retrieve.
    max_image_nodes: int = Field(default=20, ge=0)
    # HMAC key of attachment URLs; unset: a random key per process (set one shared key when the
    # gateway runs as several replicas, or URLs signed by one replica fail on the others).
    signing_key: SecretStr | None = None
    attachment_url_ttl_seconds: int = Field(default=3600, gt=0)
    # The gateway's external URL for links it hands out (attachment URLs); unset: the request's.
    public_url: str | None = None
    # Seconds uvicorn lets in-flight requests finish after SIGTERM.
    grace_seconds: float = Field(default=10.0, ge=0)
    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|text)$")
    defaults: RetrievalDefaults = Field(default_factory=RetrievalDefaults)
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
