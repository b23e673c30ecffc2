"""The HTTP wire contract (API_CONTRACT.md), as pydantic models.

Every optional field accepts explicit ``null`` (the SDKs send ``None`` kwargs as null) and
unknown top-level fields are ignored (``extra_body``). Filter operators and weights are
validated strictly: a bad one is a 422 whose ``loc`` names the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

V2Op = Literal["eq", "ne", "gt", "lt", "gte", "lte", "in", "nin"]
Weight = Annotated[float, Field(ge=0.0, le=1.0)]
#: Counts, sizes and offsets travel as 32-bit integers to the services: larger values are a 422
#: here, not an overflow there.
INT32_MAX = 2**31 - 1
Count = Annotated[int, Field(ge=1, le=INT32_MAX)]
Offset = Annotated[int, Field(ge=0, le=INT32_MAX)]
#: Bounds on the strings a request carries (a 422 names the field beyond them).
MAX_QUERY_CHARS = 8192
Id = Annotated[str, Field(min_length=1, max_length=256)]
Query = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)]
Name = Annotated[str, Field(max_length=512)]
Description = Annotated[str, Field(max_length=10_000)]
Pattern = Annotated[str, Field(min_length=1, max_length=2048)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---- retrieval ---------------------------------------------------------------------------


class CustomFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operator: V2Op
    value: bool | float | str | list[bool | float | str]


class RangeBound(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operator: V2Op
    value: float | list[float]


class StrFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operator: V2Op
    value: str | list[str]


class StaticFilters(_Request):
    parsed_directory_file_id: StrFilter | None = None


class RerankConfig(_Request):
    enabled: bool | None = Field(default=None, description="Rerank the fused candidates (default: on)")
    top_n: Count | None = Field(default=None, description="Results to keep after reranking")


Fusion = Literal["relative_score", "rrf", "dbsf"]


class RetrieveRequest(_Request):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{
        "index_id": "0b6f7f5e-2d7c-4a55-9a7e-3f3f2b1c9d10",
        "query": "how does hybrid search combine dense and sparse results?",
        "top_k": 5,
        "custom_filters": {"year": [{"operator": "gte", "value": 2021}],
                           "topic": {"operator": "eq", "value": "search"}},
        "rerank": {"enabled": True, "top_n": 3},
    }]})

    index_id: Id = Field(description="The index to search (in the caller's project)")
    query: Query = Field(description="The question or keywords")
    custom_filters: dict[str, CustomFilter | list[RangeBound] | None] | None = Field(
        default=None, description="Metadata filters by key: one condition, or a list of range bounds (all must hold)")
    full_text_pipeline_weight: Weight | None = Field(default=None,
                                                     description="Weight of the BM25 leg (0 turns it off)")
    vector_pipeline_weight: Weight | None = Field(default=None, description="Weight of the dense leg (0 turns it off)")
    num_candidates: Annotated[int, Field(ge=1, le=10_000)] | None = Field(
        default=None, description="Candidates each leg returns before fusion")
    rerank: RerankConfig | None = None
    score_threshold: float | None = Field(default=None, description="Drop fused results scoring below this")
    static_filters: StaticFilters | None = Field(default=None, description="Restrict to parsed files by id")
    top_k: Count | None = Field(default=None, description="Results to return")
    # Quarry extension (ignored by the SDKs): how the two legs' scores are combined.
    fusion: Fusion | None = Field(default=None, description="Quarry extension: dbsf (default), relative_score or rrf")


class Attachment(_Response):
    attachment_name: str
    source_id: str
    type: str


class StaticFields(_Response):
    parsed_directory_file_id: str | None = None
    chunk_index: int | None = None
    chunk_start_char: int | None = None
    chunk_end_char: int | None = None
    chunk_token_count: int | None = None
    page_range_start: int | None = None
    page_range_end: int | None = None
    attachments: list[Attachment] | None = None


class RetrievedChunk(_Response):
    content: str
    metadata: dict[str, Any] | None = None
    score: float | None = None
    rerank_score: float | None = None
    static_fields: StaticFields | None = None
    # Quarry extensions: per-leg scores (null when the chunk was not found by that leg).
    dense_score: float | None = None
    sparse_score: float | None = None
    file_name: str | None = None


class RetrieveResponse(_Response):
    results: list[RetrievedChunk]
    # Quarry extensions: seconds per stage, degradations, cache hit.
    latency: dict[str, float] | None = None
    degraded: list[str] | None = None
    cached: bool | None = None


# ---- retrieval files ---------------------------------------------------------------------


class FindRequest(_Request):
    index_id: Id
    file_name: Name | None = None
    file_name_contains: Name | None = None
    page_size: Count | None = None
    page_token: Annotated[str, Field(max_length=4096)] | None = None


class FoundFile(_Response):
    file_id: str
    file_name: str


class FindResponse(_Response):
    items: list[FoundFile]
    next_page_token: str | None = None
    total_size: int | None = None


class SearchFilesRequest(_Request):
    """The seed reference's name search (``/files/search``)."""

    index_id: Id
    file_name: Name | None = None
    file_name_contains: Name | None = None
    limit: Count | None = None


class SearchFilesResponse(_Response):
    files: list[FoundFile]


class GrepRequest(_Request):
    index_id: Id
    file_id: Id
    pattern: Pattern
    context_chars: Annotated[int, Field(ge=0, le=100_000)] | None = None
    page_size: Count | None = None
    page_token: Annotated[str, Field(max_length=4096)] | None = None
    limit: Count | None = None


class GrepMatch(_Response):
    content: str
    start_char: int
    end_char: int


class GrepResponse(_Response):
    items: list[GrepMatch]
    matches: list[GrepMatch]
    next_page_token: str | None = None
    total_size: int | None = None


class ReadRequest(_Request):
    index_id: Id
    file_id: Id
    offset: Offset | None = 0
    max_length: Offset | None = None


class ReadResponse(_Response):
    content: str


# ---- projects, directories, indexes --------------------------------------------------------


class Project(_Response):
    id: str
    name: str
    organization_id: str
    is_default: bool | None = None
    created_at: str | None = None
    updated_at: str | None = None


class DirectoryCreate(_Request):
    name: Annotated[Name, Field(min_length=1)]
    description: Description | None = None
    type: Literal["ephemeral", "user"] | None = None
    connector_subscription_id: str | None = None
    system_metadata: dict[str, Any] | None = None


class Directory(_Response):
    id: str
    name: str
    project_id: str
    description: str | None = None
    type: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class DirectoryFile(_Response):
    id: str
    directory_id: str
    display_name: str
    project_id: str
    unique_id: str
    file_id: str | None = None
    external_file_id: str | None = None
    metadata: dict[str, Any] | None = None
    created_at: str | None = None
    updated_at: str | None = None


class DirectoryFileAdd(_Request):
    file_id: Id
    display_name: Name | None = None
    unique_id: Name | None = None
    # An object, or (as the upload form sends it) a JSON-object string.
    metadata: dict[str, Any] | str | None = None


class DirectoryFilePage(_Response):
    items: list[DirectoryFile]
    next_page_token: str | None = None
    total_size: int | None = None


class IndexCreate(_Request):
    source_directory_id: Id
    name: Name | None = None
    description: Description | None = None
    products: list[dict[str, Any]] | None = None
    store_attachments: list[str] | None = None
    sync_frequency: Literal["manual", "daily", "on_source_change"] | None = None
    vector_target: Literal["DEFAULT", "DISABLED"] | None = None


class Index(_Response):
    id: str
    name: str
    project_id: str
    source_directory_id: str
    output_directory_id: str
    export_config_id: str
    sync_config_id: str
    created_at: str | None = None
    updated_at: str | None = None
    last_synced_at: str | None = None
    last_exported_at: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None
    sync_in_progress: bool | None = None
    # Quarry extensions: the last sync job's progress.
    sync_status: str | None = None
    sync_progress: dict[str, Any] | None = None
    #: Per engine, "ok", "damaged: <reason>" (rebuild with POST .../rebuild) or "unknown" (the
    #: engine did not answer); only on GET of one index.
    engine_health: dict[str, str] | None = None


class IndexPage(_Response):
    items: list[Index]
    next_page_token: str | None = None
    total_size: int | None = None


class SyncResponse(_Response):
    index_id: str
    job_id: str
    status: str
    total_items: int
    done_items: int
    #: "sync" or "rebuild".
    kind: str = "sync"


class RebuildRequest(_Request):
    """Which engines to re-index from the stored parsed texts (both when omitted)."""

    engines: list[Literal["dense", "sparse"]] | None = Field(default=None, min_length=1)
