"""Index v2 retrieval: retrieve, and find / search / grep / read over parsed files."""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway import models
from gateway.backends import Budget
from gateway.cache import cache_key
from gateway.errors import field_error
from gateway.filters import compile_custom_filters, compile_static_filters, conjunction
from gateway.pipelines import index_config
from gateway.retrieval import Outcome, Plan, retrieve
from gateway.routes.deps import Project, resolve_index
from gateway.routes.media import ATTACHMENT_TYPE, attachment_name
from gateway.settings import GatewaySettings
from services._proto.quarry.files.v1 import files_pb2
from services.common.domain import Chunk

router = APIRouter(prefix="/api/v1/retrieval", tags=["retrieval"])


def make_plan(body: models.RetrieveRequest, settings: GatewaySettings) -> Plan:
    d = settings.defaults
    dense_w = d.dense_weight if body.vector_pipeline_weight is None else body.vector_pipeline_weight
    sparse_w = d.sparse_weight if body.full_text_pipeline_weight is None else body.full_text_pipeline_weight
    rerank = body.rerank or models.RerankConfig()
    flt = conjunction(compile_custom_filters(body.custom_filters) + compile_static_filters(body.static_filters))
    return Plan(
        index_id=body.index_id,
        query=body.query,
        top_k=min(body.top_k or d.top_k, d.max_top_k),
        num_candidates=body.num_candidates or d.num_candidates,
        dense_weight=dense_w,
        sparse_weight=sparse_w,
        fusion=body.fusion or d.fusion,
        rerank=d.rerank_enabled if rerank.enabled is None else rerank.enabled,
        rerank_top_n=rerank.top_n,
        rerank_depth=d.rerank_depth,
        rerank_blend=d.rerank_blend,
        rerank_timeout=d.rerank_timeout_seconds,
        leg_timeout=d.leg_timeout_seconds,
        score_threshold=body.score_threshold,
        filter=flt,
    )


async def stored_pages(request: Request, project_id: str, index: files_pb2.Index,
                       outcome: Outcome) -> set[tuple[str, int]]:
    """(file id, page index) of the results' stored page screenshots; empty when the index keeps none."""
    if not outcome.results or not index_config(index).get("page_screenshots"):
        return set()
    settings: GatewaySettings = request.app.state.settings
    file_ids = list(dict.fromkeys(r.fused.chunk.file_id for r in outcome.results))
    listing = await request.app.state.backends.files.ListPageImages(
        files_pb2.ListPageImagesRequest(project_id=project_id, file_ids=file_ids),
        timeout=settings.catalog_timeout_seconds,
    )
    return {(i.file_id, i.page_index) for i in listing.items}


def _attachments(chunk: Chunk, pages: set[tuple[str, int]]) -> list[models.Attachment] | None:
    if chunk.page_start <= 0:
        return None
    found = [
        models.Attachment(attachment_name=attachment_name(p - 1), source_id=chunk.file_id, type=ATTACHMENT_TYPE)
        for p in range(chunk.page_start, max(chunk.page_start, chunk.page_end) + 1)
        if (chunk.file_id, p - 1) in pages
    ]
    return found or None


def shape(outcome: Outcome, pages: set[tuple[str, int]] | None = None) -> models.RetrieveResponse:
    results = []
    for r in outcome.results:
        c = r.fused.chunk
        results.append(
            models.RetrievedChunk(
                content=c.content,
                metadata=dict(c.metadata),
                score=r.fused.score,
                rerank_score=r.rerank_score,
                static_fields=models.StaticFields(
                    parsed_directory_file_id=c.file_id,
                    chunk_index=c.chunk_index,
                    chunk_start_char=c.start_char,
                    chunk_end_char=c.end_char,
                    chunk_token_count=c.token_count,
                    # 0 means "no pages" (non-PDF files)
                    page_range_start=c.page_start or None,
                    page_range_end=c.page_end or None,
                    attachments=_attachments(c, pages or set()),
                ),
                dense_score=r.fused.dense_score,
                sparse_score=r.fused.sparse_score,
                file_name=c.file_name or None,
            )
        )
    return models.RetrieveResponse(
        results=results, latency=outcome.latency, degraded=outcome.degraded or None, cached=False
    )


@router.post("/retrieve", response_model=models.RetrieveResponse, response_model_exclude_none=False,
             operation_id="retrieve")
async def retrieve_route(body: models.RetrieveRequest, request: Request, project: Project) -> Response:
    """Hybrid retrieval over one index (dense + BM25, fused, reranked)."""
    settings: GatewaySettings = request.app.state.settings
    started = time.perf_counter()
    budget = Budget(settings.request_timeout_seconds)
    plan = make_plan(body, settings)
    if plan.dense_weight <= 0 and plan.sparse_weight <= 0:
        return field_error(
            ("body", "vector_pipeline_weight"),
            "vector_pipeline_weight and full_text_pipeline_weight cannot both be 0",
        )
    index = await resolve_index(request, project, body.index_id, for_query=True)
    key = cache_key("retrieve", index.id, index.generation, body.model_dump(mode="json"))
    cache = request.app.state.cache
    hit = await cache.get(key)
    if hit is not None:
        payload = json.loads(hit)
        payload["cached"] = True
        payload["latency"] = {"total": time.perf_counter() - started}
        return JSONResponse(payload)
    outcome = await retrieve(request.app.state.backends, plan, budget)
    response = shape(outcome, await stored_pages(request, project.id, index, outcome))
    response.latency = {**(response.latency or {}), "total": time.perf_counter() - started}
    rendered = JSONResponse(response.model_dump(mode="json"))
    if not outcome.degraded:  # never cache a degraded answer
        await cache.set(key, bytes(rendered.body), settings.cache_ttl_seconds)
    return rendered


async def _find(
    request: Request, project: files_pb2.Project, index_id: str, name: str | None, contains: str | None,
    page_size: int | None, page_token: str | None,
) -> tuple[list[models.FoundFile], files_pb2.FindFilesResponse]:
    settings: GatewaySettings = request.app.state.settings
    response: files_pb2.FindFilesResponse = await request.app.state.backends.files.FindFiles(
        files_pb2.FindFilesRequest(
            project_id=project.id, index_id=index_id, file_name=name or "", file_name_contains=contains or "",
            page_size=page_size or 0, page_token=page_token or "",
        ),
        timeout=settings.catalog_timeout_seconds,
    )
    return [models.FoundFile(file_id=f.file_id, file_name=f.file_name) for f in response.items], response


@router.post("/files/find", response_model=models.FindResponse)
async def find_files(body: models.FindRequest, request: Request, project: Project) -> models.FindResponse:
    """Find an index's files by exact name or case-insensitive substring (cursor page)."""
    items, response = await _find(request, project, body.index_id, body.file_name, body.file_name_contains,
                                  body.page_size, body.page_token)
    return models.FindResponse(
        items=items, next_page_token=response.next_page_token or None, total_size=response.total_size
    )


@router.post("/files/search", response_model=models.SearchFilesResponse)
async def search_files(
    body: models.SearchFilesRequest, request: Request, project: Project
) -> models.SearchFilesResponse:
    """The seed reference's name search: ``{"files": [...]}``, up to ``limit``."""
    items, _ = await _find(request, project, body.index_id, body.file_name, body.file_name_contains, body.limit,
                           None)
    return models.SearchFilesResponse(files=items)


@router.post("/files/grep", response_model=models.GrepResponse)
async def grep_file(body: models.GrepRequest, request: Request, project: Project) -> models.GrepResponse:
    """RE2 matches in one parsed file with context; served as both ``items`` and ``matches``."""
    settings: GatewaySettings = request.app.state.settings
    response = await request.app.state.backends.files.GrepFile(
        files_pb2.GrepFileRequest(
            project_id=project.id, index_id=body.index_id, file_id=body.file_id, pattern=body.pattern,
            context_chars=body.context_chars or 0, page_size=body.page_size or body.limit or 0,
            page_token=body.page_token or "",
        ),
        timeout=settings.request_timeout_seconds,
    )
    matches = [
        models.GrepMatch(content=m.content, start_char=m.start_char, end_char=m.end_char)
        for m in response.items
    ]
    return models.GrepResponse(
        items=matches, matches=matches, next_page_token=response.next_page_token or None,
        total_size=response.total_size,
    )


@router.post("/files/read", response_model=models.ReadResponse)
async def read_file(body: models.ReadRequest, request: Request, project: Project) -> models.ReadResponse:
    """``text[offset:offset+max_length]`` of a parsed file."""
    settings: GatewaySettings = request.app.state.settings
    response = await request.app.state.backends.files.ReadFile(
        files_pb2.ReadFileRequest(
            project_id=project.id, index_id=body.index_id, file_id=body.file_id, offset=body.offset or 0,
            max_length=body.max_length or 0, has_max_length=body.max_length is not None,
        ),
        timeout=settings.catalog_timeout_seconds,
    )
    return models.ReadResponse(content=response.content)
