"""The legacy pipelines surface (API_CONTRACT.md §3-4) as pydantic models.

These are what ``llama-index-indices-managed-llama-cloud`` (llama-cloud 1.x) sends and reads.
Same conventions as ``gateway.models``: every optional field accepts ``null``, unknown request
fields are ignored, responses keep extra keys.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.models import INT32_MAX, Count, Query, Weight, _Request, _Response
from services.common.domain import MAX_FILTER_DEPTH

LegacyOp = Literal[
    "==", ">", "<", "!=", ">=", "<=", "in", "nin", "any", "all", "text_match", "text_match_insensitive",
    "contains", "is_empty",
]
LegacyValue = bool | float | str | list[bool | float | str] | None
RetrievalMode = Literal["chunks", "files_via_metadata", "files_via_content", "auto_routed"]
IngestionStatus = Literal["NOT_STARTED", "IN_PROGRESS", "SUCCESS", "ERROR", "PARTIAL_SUCCESS", "CANCELLED"]


class MetadataFilter(BaseModel):
    model_config = ConfigDict(extra="ignore")

    key: str = Field(min_length=1)
    value: LegacyValue = None
    # No default in the docs; a missing operator means "==" (API_CONTRACT.md §3).
    operator: LegacyOp | None = None


def _nesting(value: Any) -> int:
    """How many ``{"filters": [...]}`` groups are nested in raw JSON (iteratively: no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict) and isinstance(node.get("filters"), list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in node["filters"])
    return deepest


class MetadataFilters(BaseModel):
    model_config = ConfigDict(extra="ignore")

    filters: list[MetadataFilter | MetadataFilters]
    condition: Literal["and", "or", "not"] | None = None


# ---- pipelines ------------------------------------------------------------------------------


class PipelineUpsert(_Request):
    name: str = Field(min_length=1, max_length=512)
    embedding_config: dict[str, Any] | None = None
    transform_config: dict[str, Any] | None = None
    llama_parse_parameters: dict[str, Any] | None = None
    pipeline_type: Literal["MANAGED", "PLAYGROUND"] | None = None
    data_sink_id: str | None = None
    data_sink: dict[str, Any] | None = None
    preset_retrieval_parameters: dict[str, Any] | None = None
    eval_parameters: dict[str, Any] | None = None
    metadata_config: dict[str, Any] | None = None


class PipelineUpdate(PipelineUpsert):
    name: str | None = Field(default=None, min_length=1, max_length=512)  # type: ignore[assignment]


class Pipeline(_Response):
    id: str
    name: str
    project_id: str
    embedding_config: dict[str, Any]
    pipeline_type: str | None = None
    transform_config: dict[str, Any] | None = None
    llama_parse_parameters: dict[str, Any] | None = None
    preset_retrieval_parameters: dict[str, Any] | None = None
    status: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class StatusError(_Response):
    job_id: str
    message: str
    step: str


class IngestionStatusResponse(_Response):
    status: IngestionStatus
    error: list[StatusError] | None = None
    job_id: str | None = None
    effective_at: str | None = None


# ---- documents ------------------------------------------------------------------------------


class CloudDocumentCreate(_Request):
    text: str
    metadata: dict[str, Any]
    id: str | None = Field(default=None, min_length=1, max_length=1024)
    excluded_embed_metadata_keys: list[str] | None = None
    excluded_llm_metadata_keys: list[str] | None = None
    page_positions: list[Annotated[int, Field(ge=0, le=INT32_MAX)]] | None = None


class CloudDocument(_Response):
    id: str
    text: str
    metadata: dict[str, Any]
    excluded_embed_metadata_keys: list[str] | None = None
    excluded_llm_metadata_keys: list[str] | None = None
    page_positions: list[int] | None = None
    status_metadata: dict[str, Any] | None = None


class DocumentPage(_Response):
    documents: list[CloudDocument]
    total_count: int
    offset: int


# ---- files -------------------------------------------------------------------------------------


class File(_Response):
    id: str
    name: str
    project_id: str
    file_size: int | None = None
    file_type: str | None = None
    external_file_id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class PipelineFileCreate(_Request):
    file_id: str = Field(min_length=1)
    custom_metadata: dict[str, Any] | None = None


class PipelineFile(_Response):
    id: str
    pipeline_id: str
    file_id: str | None = None
    name: str | None = None
    file_size: int | None = None
    file_type: str | None = None
    project_id: str | None = None
    custom_metadata: dict[str, Any] | None = None
    status: IngestionStatus | None = None
    created_at: str | None = None
    updated_at: str | None = None


# ---- retrieve ------------------------------------------------------------------------------


class PipelineRetrieveRequest(_Request):
    query: Query
    dense_similarity_top_k: Count | None = None
    dense_similarity_cutoff: float | None = None
    sparse_similarity_top_k: Count | None = None
    enable_reranking: bool | None = None
    rerank_top_n: Count | None = None
    alpha: Weight | None = None
    search_filters: MetadataFilters | None = None
    search_filters_inference_schema: dict[str, Any] | None = None

    @field_validator("search_filters", mode="before")
    @classmethod
    def _not_too_deep(cls, value: Any) -> Any:
        """Refuse a deep tree before it is validated (and recursed into) level by level."""
        depth = _nesting(value)
        if depth > MAX_FILTER_DEPTH:
            raise ValueError(f"filters nest deeper than {MAX_FILTER_DEPTH} levels ({depth})")
        return value
    files_top_k: Annotated[int, Field(ge=1, le=100)] | None = None
    retrieval_mode: RetrievalMode | None = None
    retrieve_image_nodes: bool | None = None
    retrieve_page_screenshot_nodes: bool | None = None
    retrieve_page_figure_nodes: bool | None = None
    class_name: str | None = None


class RelatedNode(_Response):
    node_id: str
    node_type: str | None = None
    metadata: dict[str, Any] | None = None
    class_name: str | None = None


class TextNode(_Response):
    id_: str
    text: str
    extra_info: dict[str, Any]
    relationships: dict[str, RelatedNode] | None = None
    start_char_idx: int | None = None
    end_char_idx: int | None = None
    mimetype: str | None = None
    class_name: str | None = "TextNode"


class NodeWithScore(_Response):
    node: TextNode
    score: float | None = None
    class_name: str | None = "NodeWithScore"


class PageScreenshotNode(_Response):
    file_id: str
    image_size: int
    page_index: int
    metadata: dict[str, Any] | None = None


class PageScreenshotNodeWithScore(_Response):
    node: PageScreenshotNode
    score: float
    class_name: str | None = "PageScreenshotNodeWithScore"


class RetrieveResults(_Response):
    pipeline_id: str
    retrieval_nodes: list[NodeWithScore]
    image_nodes: list[PageScreenshotNodeWithScore] = Field(default_factory=list)
    page_figure_nodes: list[dict[str, Any]] = Field(default_factory=list)
    inferred_search_filters: MetadataFilters | None = None
    retrieval_latency: dict[str, float] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    class_name: str | None = "RetrieveResults"
