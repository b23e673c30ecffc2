"""Settings of the ingest worker (env prefix ``QUARRY_INGEST_``)."""

from __future__ import annotations

import os
import secrets
import socket

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings
from services.ingest.parsing import ParseLimits


def default_worker_id() -> str:
    """``hostname-pid-random``: unique per process, readable in the job table."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class IngestSettings(ServiceSettings):
    """The worker claims jobs from files and writes chunks to dense and sparse.

    The inherited host/port serve gRPC health only (the worker has no work API).
    """

    model_config = SettingsConfigDict(env_prefix="QUARRY_INGEST_", env_nested_delimiter="__", extra="ignore")

    files_addr: str = Field(description="host:port of the files service")
    dense_addr: str = Field(description="host:port of the dense service")
    sparse_addr: str = Field(description="host:port of the sparse service")
    worker_id: str = Field(default_factory=default_worker_id)
    lease_seconds: float = Field(default=30.0, gt=0, description="job lease; renewed every third of it")
    poll_interval: float = Field(default=1.0, gt=0, description="seconds between ClaimJob calls when idle")
    batch_size: int = Field(default=64, ge=1, description="chunks per Upsert call")
    window_files: int = Field(
        default=16, ge=1, le=1024,
        description="files worked together (fetched and parsed concurrently, chunks sharing Upsert calls); "
        "also how many source files a worker holds in memory, twice over while the next window is prepared",
    )
    rebuild_window_files: int = Field(
        default=256, ge=1, le=4096, description="files worked together by a rebuild that does not embed"
    )
    rebuild_batch_size: int = Field(default=1000, ge=1, description="chunks per write of a rebuild that does not embed")
    chunk_size: int = Field(default=200, ge=8, le=254, description="tokens per chunk (model reads 254)")
    chunk_overlap: int = Field(default=40, ge=0, description="tokens shared by consecutive chunks")
    rpc_timeout: float = Field(default=10.0, gt=0, description="deadline of every files/DeleteFile call")
    upsert_timeout: float = Field(default=120.0, gt=0, description="deadline of an Upsert (dense embeds)")
    retry_attempts: int = Field(default=6, ge=1, description="attempts per call on UNAVAILABLE")
    retry_initial_backoff: float = Field(default=0.2, ge=0)
    retry_max_backoff: float = Field(default=5.0, ge=0)
    parse_workers: int = Field(default=2, ge=1, le=64, description="processes that parse files")
    max_file_bytes: int = Field(default=100 * 1024 * 1024, ge=1024, description="larger files fail, unparsed")
    max_pages: int = Field(default=2000, ge=1, description="PDFs with more pages fail")
    max_text_chars: int = Field(
        default=20_000_000, ge=1000, description="files whose extracted text is longer fail (inflated PDFs)"
    )
    max_html_depth: int = Field(default=256, ge=8, description="HTML nested deeper fails")
    parse_timeout_seconds: float = Field(
        default=60.0, gt=0, description="a file's parse is stopped (its process killed) after this"
    )
    parse_memory_mb: int = Field(
        default=2048, ge=256, description="address space of a parsing process; a file needing more fails"
    )
    engine_drop_min_age_seconds: float = Field(
        default=30.0, ge=0,
        description="deleted indexes whose chunks a gateway has not dropped after this long are dropped by a worker",
    )
    engine_drop_batch: int = Field(default=20, ge=1, le=1000, description="engine drops per idle poll")
    screenshot_scale: float = Field(
        default=1.0, gt=0, le=8, description="page screenshot scale: 1.0 renders a PDF page at 72 dpi"
    )
    screenshot_max_pages: int = Field(
        default=500, ge=0, description="pages of a PDF rendered at most; later pages get no screenshot"
    )
    screenshot_batch_bytes: int = Field(
        default=3 * 1024 * 1024, ge=1024,
        description="PNG bytes per PutPageImages call at most (a larger page goes alone)",
    )

    def parse_limits(self) -> ParseLimits:
        """The per-file limits the parsing processes enforce."""
        return ParseLimits(max_bytes=self.max_file_bytes, max_pages=self.max_pages,
                           max_text_chars=self.max_text_chars, max_html_depth=self.max_html_depth,
                           timeout_seconds=self.parse_timeout_seconds, memory_mb=self.parse_memory_mb)

    @model_validator(mode="after")
    def _overlap_below_half(self) -> IngestSettings:
        if self.chunk_overlap >= self.chunk_size // 2:
            raise ValueError("chunk_overlap must be below half of chunk_size")
        return self
