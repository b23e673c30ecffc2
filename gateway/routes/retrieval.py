"""Index v2 retrieval: retrieve, and find / search / grep / read over parsed files."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway import models
from gateway.requests import v2_query
from gateway.routes.deps import Project
from gateway.routes.media import ATTACHMENT_TYPE, attachment_name
from gateway.usecases import Answer, UseCases
from services._proto.quarry.files.v1 import files_pb2
from services.common.domain import Chunk

router = APIRouter(prefix="/api/v1/retrieval", tags=["retrieval"])


def _attachments(answer: Answer, chunk: Chunk) -> list[models.Attachment] | None:
    found = [models.Attachment(attachment_name=attachment_name(p), source_id=chunk.file_id, type=ATTACHMENT_TYPE)
             for p in answer.attachment_pages(chunk)]
    return found or None


def shape(answer: Answer) -> models.RetrieveResponse:
    results = []
    for r in answer.results:
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
                    attachments=_attachments(answer, c),
                ),
                dense_score=r.fused.dense_score,
                sparse_score=r.fused.sparse_score,
                file_name=c.file_name or None,
            )
        )
    return models.RetrieveResponse(
        results=results, latency=answer.latency, degraded=answer.degraded or None, cached=answer.cached
    )


@router.post("/retrieve", response_model=models.RetrieveResponse, response_model_exclude_none=False,
             operation_id="retrieve")
async def retrieve_route(body: models.RetrieveRequest, request: Request, project: Project) -> Response:
    """Hybrid retrieval over one index (dense + BM25, fused, reranked)."""
    use: UseCases = request.app.state.usecases
    _, answer = await use.retrieve(project.id, v2_query(body), use.budget())
    return JSONResponse(shape(answer).model_dump(mode="json"))


async def _find(
    request: Request, project: files_pb2.Project, index_id: str, name: str | None, contains: str | None,
    page_size: int | None, page_token: str | None,
) -> tuple[list[models.FoundFile], files_pb2.FindFilesResponse]:
    response = await request.app.state.usecases.find(project.id, index_id, name, contains, page_size, page_token)
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
    response = await request.app.state.usecases.grep(
        project.id, body.index_id, body.file_id, body.pattern, body.context_chars, body.page_size or body.limit,
        body.page_token,
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
    content = await request.app.state.usecases.read(project.id, body.index_id, body.file_id, body.offset,
                                                    body.max_length)
    return models.ReadResponse(content=content)
