"""The legacy pipelines surface that LlamaIndex's ``LlamaCloudIndex`` / ``LlamaCloudRetriever`` speak.

A pipeline is an index (kind "pipeline") that owns its source directory: documents are stored
there as text files whose unique_id is the document id, files added from ``/beta/files`` share
the uploaded bytes. Adding, replacing or deleting documents and files starts a sync (the
clients' ``upload_file`` and ``delete_ref_doc`` wait for one without asking for it); a sync
asked for while one runs is queued behind it by the files service, so nothing is lost.
Any index can be read through this surface (pipeline id == index id).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Annotated, Any
from urllib.parse import unquote_plus

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from gateway import legacy_models as lm
from gateway import pipelines as use
from gateway.errors import error_response, field_error
from gateway.filters import compile_metadata_filters, conjunction
from gateway.models import INT32_MAX
from gateway.requests import legacy_query
from gateway.routes.deps import Project, catalog_timeout, files_of, remove_index, resolve_index, settings_of
from gateway.usecases import UseCases
from services._proto.quarry.files.v1 import files_pb2
from services.common.domain import DOCUMENT_CONTENT_TYPE

#: Paging of the legacy list routes.
Skip = Annotated[int | None, Query(ge=0, le=INT32_MAX)]
Limit = Annotated[int | None, Query(ge=1, le=1000)]

router = APIRouter(prefix="/api/v1", tags=["pipelines"])

#: Directory (name, type) that holds uploads made outside any directory (``POST /beta/files``).
FILES_DIRECTORY = ("files", "files")
_PARALLEL_UPLOADS = 16
_MAX_DOCUMENTS = 10_000



def _opt(value: str) -> str | None:
    return value or None


def _check_project(project: files_pb2.Project, project_id: str | None) -> Response | None:
    """``?project_id=`` names the caller's project or nothing (an API key has one project)."""
    if project_id and project_id != project.id:
        return error_response(404, f"project {project_id} not found")
    return None


# ---- shaping -----------------------------------------------------------------------------------


def pipeline(i: files_pb2.Index) -> lm.Pipeline:
    p = use.index_config(i).get("pipeline") or {}
    return lm.Pipeline(
        id=i.id, name=i.name, project_id=i.project_id,
        # Always Quarry's model (what older versions stored was an echo of the request).
        embedding_config=use.EMBEDDING_CONFIG,
        pipeline_type=p.get("pipeline_type") or "MANAGED",
        transform_config=p.get("transform_config") or {},
        llama_parse_parameters=p.get("llama_parse_parameters") or {},
        preset_retrieval_parameters=p.get("preset_retrieval_parameters"),
        status="CREATED", created_at=_opt(i.created_at), updated_at=_opt(i.updated_at),
    )


def pipeline_status(i: files_pb2.Index) -> lm.IngestionStatusResponse:
    job = i.last_job if i.HasField("last_job") else None
    if job is None:
        return lm.IngestionStatusResponse(status="NOT_STARTED")
    errors = None
    if job.status in ("pending", "running"):
        status = "IN_PROGRESS"
    elif job.status == "succeeded":
        status = "PARTIAL_SUCCESS" if i.last_job_failed_items else "SUCCESS"
        if i.last_job_failed_items:
            errors = [lm.StatusError(job_id=job.id, message=f"{f.unique_id or f.file_name}: {f.error}", step="ingest")
                      for f in i.last_job_failures]
            if i.last_job_failed_items > len(errors):
                errors.append(lm.StatusError(job_id=job.id, step="ingest",
                                             message=f"{i.last_job_failed_items - len(errors)} more file(s) failed"))
    elif job.status == "cancelled":
        status = "CANCELLED"
    else:
        status = "ERROR"
        errors = [lm.StatusError(job_id=job.id, message=job.error or "sync failed", step="ingest")]
    return lm.IngestionStatusResponse(status=status, error=errors, job_id=job.id,
                                      effective_at=_opt(job.finished_at))


def _document(f: files_pb2.DirectoryFile) -> lm.CloudDocument:
    return lm.CloudDocument(
        id=f.unique_id, text=f.content.decode("utf-8", errors="replace"),
        metadata=json.loads(f.metadata_json) if f.metadata_json else {},
    )


def _pipeline_file(index_id: str, f: files_pb2.DirectoryFile, status: str | None = None) -> lm.PipelineFile:
    meta = json.loads(f.metadata_json) if f.metadata_json else {}
    return lm.PipelineFile(
        id=f.id, pipeline_id=index_id, file_id=f.unique_id, name=f.display_name, file_size=f.size_bytes,
        file_type=_opt(f.content_type), project_id=f.project_id, custom_metadata=meta, status=status,
        created_at=_opt(f.created_at), updated_at=_opt(f.updated_at),
    )


# ---- pipelines ---------------------------------------------------------------------------------


async def _sync(request: Request, project: files_pb2.Project, index_id: str) -> files_pb2.Job:
    job: files_pb2.Job = await files_of(request).StartSync(
        files_pb2.StartSyncRequest(project_id=project.id, index_id=index_id), timeout=catalog_timeout(request)
    )
    return job


def _config(body: lm.PipelineUpsert, chunking: dict[str, int]) -> str:
    """The index config: what the ingest worker acts on (``page_screenshots``, ``chunking``) and the
    pipeline's settings as they are read back."""
    parse = body.llama_parse_parameters or {}
    echoed = body.model_dump(exclude={"name"}, exclude_none=True)
    echoed["embedding_config"] = use.EMBEDDING_CONFIG
    return json.dumps({"page_screenshots": bool(parse.get("take_screenshot")), "chunking": chunking,
                       "pipeline": echoed})


def _chunking_of(index: files_pb2.Index | None) -> dict[str, int]:
    return (use.index_config(index).get("chunking") or {}) if index is not None else {}


def _settings(body: lm.PipelineUpsert, current: files_pb2.Index | None = None,
              fields: set[str] | None = None) -> dict[str, int] | Response:
    """Check ``embedding_config`` and ``transform_config`` (those in ``fields`` when given: an
    update keeps the others as they are); the chunking to store, or a 422 naming the field."""
    try:
        if fields is None or "embedding_config" in fields:
            use.embedding_config(body.embedding_config)
        if fields is None or "transform_config" in fields:
            return use.chunking(body.transform_config)
    except use.ConfigError as exc:
        return field_error(exc.loc, exc.msg)
    return _chunking_of(current)


async def _upsert(request: Request, project: files_pb2.Project, body: lm.PipelineUpsert,
                  chunking: dict[str, int], previous: files_pb2.Index | None) -> files_pb2.Index:
    index: files_pb2.Index = await files_of(request).UpsertPipeline(
        files_pb2.UpsertPipelineRequest(project_id=project.id, name=body.name, config_json=_config(body, chunking)),
        timeout=catalog_timeout(request),
    )
    if not index.HasField("last_job"):
        # A new pipeline has nothing to ingest: a first (empty) sync makes its status SUCCESS, not
        # NOT_STARTED, so a client that waits on it right away does not wait forever.
        await _sync(request, project, index.id)
        index = await resolve_index(request, project, index.id)
    elif previous is not None and _chunking_of(previous) != chunking:
        # Files chunked otherwise are planned again by a sync (the files service compares the
        # chunking each parsed text was made with): start it, as a changed source would.
        await _sync(request, project, index.id)
        index = await resolve_index(request, project, index.id)
    return index


async def _existing(request: Request, project: files_pb2.Project, name: str) -> files_pb2.Index | None:
    return next((i for i in await _find_by_name(request, project, name) if i.kind == "pipeline"), None)


@router.put("/pipelines", response_model=lm.Pipeline)
async def upsert_pipeline(
    body: lm.PipelineUpsert, request: Request, project: Project, project_id: str | None = None
) -> Response | lm.Pipeline:
    """Create the pipeline, or update the one with this name in the project."""
    if (wrong := _check_project(project, project_id)) is not None:
        return wrong
    if isinstance(chunking := _settings(body), Response):
        return chunking
    return pipeline(await _upsert(request, project, body, chunking, await _existing(request, project, body.name)))


async def _find_by_name(request: Request, project: files_pb2.Project, name: str) -> list[files_pb2.Index]:
    items: list[files_pb2.Index] = []
    token = ""
    while True:
        page = await files_of(request).ListIndexes(
            files_pb2.ListIndexesRequest(project_id=project.id, name=name, page_size=1000, page_token=token),
            timeout=catalog_timeout(request),
        )
        items.extend(page.items)
        token = page.next_page_token
        if not token:
            return items


@router.post("/pipelines", response_model=lm.Pipeline)
async def create_pipeline(
    body: lm.PipelineUpsert, request: Request, project: Project, project_id: str | None = None
) -> Response | lm.Pipeline:
    """Create a pipeline; 409 when one with this name exists (PUT upserts)."""
    if (wrong := _check_project(project, project_id)) is not None:
        return wrong
    if isinstance(chunking := _settings(body), Response):
        return chunking
    if await _find_by_name(request, project, body.name):
        return error_response(409, f"a pipeline named {body.name!r} exists; PUT /api/v1/pipelines upserts")
    return pipeline(await _upsert(request, project, body, chunking, None))


@router.get("/pipelines", response_model=list[lm.Pipeline])
async def list_pipelines(
    request: Request, project: Project, project_id: str | None = None, pipeline_name: str | None = None,
    project_name: str | None = None, organization_id: str | None = None,
) -> Response | list[lm.Pipeline]:
    """Every index of the project is a pipeline here (v2 indexes too), filtered by exact name."""
    if (wrong := _check_project(project, project_id)) is not None:
        return wrong
    if project_name and project_name != project.name:
        return []
    return [pipeline(i) for i in await _find_by_name(request, project, pipeline_name or "")]


@router.get("/pipelines/{pipeline_id}", response_model=lm.Pipeline)
async def get_pipeline(pipeline_id: str, request: Request, project: Project) -> lm.Pipeline:
    return pipeline(await resolve_index(request, project, pipeline_id))


@router.get("/pipelines/{pipeline_id}/status", response_model=lm.IngestionStatusResponse,
            response_model_exclude_none=True)
async def get_pipeline_status(pipeline_id: str, request: Request, project: Project) -> lm.IngestionStatusResponse:
    return pipeline_status(await resolve_index(request, project, pipeline_id))


@router.post("/pipelines/{pipeline_id}/sync", response_model=lm.Pipeline)
async def sync_pipeline(pipeline_id: str, request: Request, project: Project) -> lm.Pipeline:
    """Start a sync (one asked for while another runs is queued behind it)."""
    await _sync(request, project, pipeline_id)
    return pipeline(await resolve_index(request, project, pipeline_id))


@router.post("/pipelines/{pipeline_id}/sync/cancel", response_model=lm.Pipeline)
async def cancel_pipeline_sync(pipeline_id: str, request: Request, project: Project) -> lm.Pipeline:
    """Cancel the running sync (409, not retried, when none runs)."""
    await files_of(request).CancelSync(
        files_pb2.CancelSyncRequest(project_id=project.id, index_id=pipeline_id), timeout=catalog_timeout(request)
    )
    return pipeline(await resolve_index(request, project, pipeline_id))


@router.put("/pipelines/{pipeline_id}", response_model=lm.Pipeline)
async def update_pipeline(
    pipeline_id: str, body: lm.PipelineUpdate, request: Request, project: Project
) -> Response | lm.Pipeline:
    """Update a pipeline's settings by id (fields left out keep their values; renaming is refused)."""
    index = await resolve_index(request, project, pipeline_id)
    if index.kind != "pipeline":
        return error_response(409, "this index is not a pipeline; manage it with /api/v1/indexes")
    if body.name is not None and body.name != index.name:
        return field_error(("body", "name"), "pipelines cannot be renamed")
    current = use.index_config(index).get("pipeline") or {}
    given = body.model_dump(exclude_none=True, exclude={"name"})
    if isinstance(chunking := _settings(body, index, set(given)), Response):
        return chunking
    merged = lm.PipelineUpsert.model_validate({**current, **given, "name": index.name})
    return pipeline(await _upsert(request, project, merged, chunking, index))


@router.delete("/pipelines/{pipeline_id}", status_code=204)
async def delete_pipeline(pipeline_id: str, request: Request, project: Project) -> Response:
    await remove_index(request, project, pipeline_id)
    return Response(status_code=204)


# ---- documents ---------------------------------------------------------------------------------


def _doc_id(raw: str) -> str:
    """Document ids arrive ``quote_plus``-ed twice; the router has undone one."""
    return unquote_plus(raw)


async def _put_documents(
    request: Request, project: files_pb2.Project, pipeline_id: str, docs: list[lm.CloudDocumentCreate]
) -> Response | list[lm.CloudDocument]:
    if len(docs) > _MAX_DOCUMENTS:
        return field_error(("body",), f"at most {_MAX_DOCUMENTS} documents per request")
    index = await resolve_index(request, project, pipeline_id)
    limit = settings_of(request).max_upload_bytes
    prepared = []
    for i, doc in enumerate(docs):
        content = doc.text.encode("utf-8")
        if len(content) > limit:
            return field_error(("body", i, "text"), f"text is larger than {limit} bytes")
        try:
            meta = json.dumps(doc.metadata, allow_nan=False)
        except ValueError:
            return field_error(("body", i, "metadata"), "metadata must be JSON (no NaN or infinity)")
        prepared.append((doc.id or str(uuid.uuid4()), content, meta, doc))
    gate = asyncio.Semaphore(_PARALLEL_UPLOADS)

    async def one(doc_id: str, content: bytes, meta: str) -> None:
        async with gate:
            await files_of(request).UploadFile(
                files_pb2.UploadFileRequest(
                    project_id=project.id, directory_id=index.source_directory_id, display_name=doc_id,
                    content=content, content_type=DOCUMENT_CONTENT_TYPE, unique_id=doc_id, metadata_json=meta,
                ),
                timeout=settings_of(request).request_timeout_seconds,
            )

    await asyncio.gather(*(one(doc_id, content, meta) for doc_id, content, meta, _ in prepared))
    await _sync(request, project, index.id)
    return [
        lm.CloudDocument(
            id=doc_id, text=doc.text, metadata=doc.metadata,
            excluded_embed_metadata_keys=doc.excluded_embed_metadata_keys,
            excluded_llm_metadata_keys=doc.excluded_llm_metadata_keys, page_positions=doc.page_positions,
        )
        for doc_id, _, _, doc in prepared
    ]


@router.post("/pipelines/{pipeline_id}/documents", response_model=list[lm.CloudDocument])
async def create_documents(
    pipeline_id: str, body: list[lm.CloudDocumentCreate], request: Request, project: Project
) -> Response | list[lm.CloudDocument]:
    """Add documents (an existing id is replaced: create is an upsert here) and start a sync."""
    return await _put_documents(request, project, pipeline_id, body)


@router.put("/pipelines/{pipeline_id}/documents", response_model=list[lm.CloudDocument])
async def upsert_documents(
    pipeline_id: str, body: list[lm.CloudDocumentCreate], request: Request, project: Project
) -> Response | list[lm.CloudDocument]:
    return await _put_documents(request, project, pipeline_id, body)


async def _list_source(
    request: Request, project: files_pb2.Project, directory_id: str, skip: int, limit: int, content: bool
) -> tuple[list[files_pb2.DirectoryFile], int]:
    """Offset paging over the keyset-paged catalog: walk past ``skip`` without bytes, then read."""
    token, skipped, total = "", 0, 0
    files = files_of(request)
    while skipped < skip:
        page = await files.ListDirectoryFiles(
            files_pb2.ListDirectoryFilesRequest(project_id=project.id, directory_id=directory_id,
                                                page_size=min(1000, skip - skipped), page_token=token),
            timeout=catalog_timeout(request),
        )
        skipped += len(page.items)
        total = page.total_size
        token = page.next_page_token
        if not token:
            return [], total
    items: list[files_pb2.DirectoryFile] = []
    while len(items) < limit:
        page = await files.ListDirectoryFiles(
            files_pb2.ListDirectoryFilesRequest(project_id=project.id, directory_id=directory_id,
                                                page_size=min(100, limit - len(items)), page_token=token,
                                                include_content=content),
            timeout=catalog_timeout(request),
        )
        items.extend(page.items)
        total = page.total_size
        token = page.next_page_token
        if not token:
            break
    return items, total


@router.get("/pipelines/{pipeline_id}/documents/paginated", response_model=lm.DocumentPage)
async def list_documents(
    pipeline_id: str, request: Request, project: Project,
    skip: Skip = None, limit: Limit = None,
) -> lm.DocumentPage:
    index = await resolve_index(request, project, pipeline_id)
    items, total = await _list_source(request, project, index.source_directory_id, skip or 0, limit or 100, True)
    return lm.DocumentPage(documents=[_document(f) for f in items], total_count=total, offset=skip or 0)


@router.get("/pipelines/{pipeline_id}/documents", response_model=list[lm.CloudDocument])
async def list_documents_plain(
    pipeline_id: str, request: Request, project: Project,
    skip: Skip = None, limit: Limit = None,
) -> list[lm.CloudDocument]:
    index = await resolve_index(request, project, pipeline_id)
    items, _ = await _list_source(request, project, index.source_directory_id, skip or 0, limit or 100, True)
    return [_document(f) for f in items]


@router.get("/pipelines/{pipeline_id}/documents/{document_id}", response_model=lm.CloudDocument)
async def get_document(pipeline_id: str, document_id: str, request: Request, project: Project) -> lm.CloudDocument:
    index = await resolve_index(request, project, pipeline_id)
    f = await files_of(request).GetDirectoryFile(
        files_pb2.GetDirectoryFileRequest(project_id=project.id, directory_id=index.source_directory_id,
                                          unique_id=_doc_id(document_id), include_content=True),
        timeout=catalog_timeout(request),
    )
    return _document(f)


async def _source_status(
    request: Request, project: files_pb2.Project, pipeline_id: str, unique_id: str
) -> lm.IngestionStatusResponse:
    """Where one document or file (by the id the client knows it by) stands."""
    s = await files_of(request).GetFileStatus(
        files_pb2.GetFileStatusRequest(project_id=project.id, index_id=pipeline_id, unique_id=unique_id),
        timeout=catalog_timeout(request),
    )
    errors = [lm.StatusError(job_id=s.job_id, message=s.error, step="ingest")] if s.error else None
    return lm.IngestionStatusResponse(status=s.status, error=errors, job_id=_opt(s.job_id))  # type: ignore[arg-type]


async def _remove_source(request: Request, project: files_pb2.Project, pipeline_id: str, unique_id: str) -> Response:
    """Remove a document or file from the pipeline and start the sync that removes its chunks."""
    index = await resolve_index(request, project, pipeline_id)
    await files_of(request).DeleteDirectoryFile(
        files_pb2.DeleteDirectoryFileRequest(project_id=project.id, directory_id=index.source_directory_id,
                                             unique_id=unique_id),
        timeout=catalog_timeout(request),
    )
    await _sync(request, project, index.id)
    return Response(status_code=204)


@router.get("/pipelines/{pipeline_id}/documents/{document_id}/status", response_model=lm.IngestionStatusResponse,
            response_model_exclude_none=True)
async def get_document_status(
    pipeline_id: str, document_id: str, request: Request, project: Project
) -> lm.IngestionStatusResponse:
    return await _source_status(request, project, pipeline_id, _doc_id(document_id))


@router.delete("/pipelines/{pipeline_id}/documents/{document_id}", status_code=204)
async def delete_document(pipeline_id: str, document_id: str, request: Request, project: Project) -> Response:
    return await _remove_source(request, project, pipeline_id, _doc_id(document_id))


# ---- files -------------------------------------------------------------------------------------


async def _files_directory(request: Request, project: files_pb2.Project) -> files_pb2.Directory:
    name, kind = FILES_DIRECTORY
    directory: files_pb2.Directory = await files_of(request).EnsureDirectory(
        files_pb2.CreateDirectoryRequest(project_id=project.id, name=name, type=kind,
                                         description="uploads made outside any directory (POST /api/v1/beta/files)"),
        timeout=catalog_timeout(request),
    )
    return directory


def _file(f: files_pb2.DirectoryFile) -> lm.File:
    return lm.File(
        id=f.id, name=f.display_name, project_id=f.project_id, file_size=f.size_bytes,
        file_type=_opt(f.content_type), external_file_id=_opt(f.external_file_id),
        created_at=_opt(f.created_at), updated_at=_opt(f.updated_at),
    )


@router.post("/beta/files", response_model=lm.File)
async def upload_project_file(
    request: Request, project: Project, file: Annotated[UploadFile, File()],
    purpose: Annotated[str | None, Form()] = None, external_file_id: Annotated[str | None, Form()] = None,
    project_id: str | None = None,
) -> Response | lm.File:
    """Store a file in the project (not yet in any index); its id is what pipelines and
    directories accept as ``file_id``."""
    if (wrong := _check_project(project, project_id)) is not None:
        return wrong
    limit = settings_of(request).max_upload_bytes
    content = await file.read(limit + 1)
    if len(content) > limit:
        return error_response(413, f"file is larger than {limit} bytes")
    if not file.filename:
        return field_error(("body", "file"), "the upload needs a file name")
    directory = await _files_directory(request, project)
    f = await files_of(request).UploadFile(
        files_pb2.UploadFileRequest(
            project_id=project.id, directory_id=directory.id, display_name=file.filename, content=content,
            content_type=file.content_type or "", unique_id=str(uuid.uuid4()),
            external_file_id=external_file_id or "",
        ),
        timeout=settings_of(request).request_timeout_seconds,
    )
    return _file(f)


@router.get("/beta/files/{file_id}", response_model=lm.File)
async def get_project_file(file_id: str, request: Request, project: Project) -> lm.File:
    directory = await _files_directory(request, project)
    f = await files_of(request).GetDirectoryFile(
        files_pb2.GetDirectoryFileRequest(project_id=project.id, directory_id=directory.id, directory_file_id=file_id),
        timeout=catalog_timeout(request),
    )
    return _file(f)


@router.delete("/beta/files/{file_id}", status_code=204)
async def delete_project_file(file_id: str, request: Request, project: Project) -> Response:
    """Delete an upload; copies already added to pipelines or directories keep their bytes."""
    directory = await _files_directory(request, project)
    await files_of(request).DeleteDirectoryFile(
        files_pb2.DeleteDirectoryFileRequest(project_id=project.id, directory_id=directory.id,
                                             directory_file_id=file_id),
        timeout=catalog_timeout(request),
    )
    return Response(status_code=204)


def _file_metadata(custom: dict[str, Any] | None, name: str, file_id: str) -> str:
    """Custom metadata plus the file's name and id (user keys win), as every chunk will carry them."""
    return json.dumps({"file_name": name, "file_id": file_id, **(custom or {})}, allow_nan=False)


@router.put("/pipelines/{pipeline_id}/files", response_model=list[lm.PipelineFile])
async def add_pipeline_files(
    pipeline_id: str, body: list[lm.PipelineFileCreate], request: Request, project: Project
) -> Response | list[lm.PipelineFile]:
    """Add uploaded files (``POST /beta/files`` ids) to the pipeline and start a sync."""
    index = await resolve_index(request, project, pipeline_id)
    directory = await _files_directory(request, project)
    added = []
    for i, item in enumerate(body):
        try:
            source = await files_of(request).GetDirectoryFile(
                files_pb2.GetDirectoryFileRequest(project_id=project.id, directory_id=directory.id,
                                                  directory_file_id=item.file_id),
                timeout=catalog_timeout(request),
            )
            meta = _file_metadata(item.custom_metadata, source.display_name, item.file_id)
        except ValueError:
            return field_error(("body", i, "custom_metadata"), "custom_metadata must be JSON (no NaN or infinity)")
        added.append(await files_of(request).AddDirectoryFile(
            files_pb2.AddDirectoryFileRequest(
                project_id=project.id, directory_id=index.source_directory_id,
                source_directory_file_id=item.file_id, unique_id=item.file_id, metadata_json=meta,
            ),
            timeout=catalog_timeout(request),
        ))
    await _sync(request, project, index.id)
    return [_pipeline_file(index.id, f, "NOT_STARTED") for f in added]


@router.get("/pipelines/{pipeline_id}/files", response_model=list[lm.PipelineFile])
async def list_pipeline_files(
    pipeline_id: str, request: Request, project: Project,
    skip: Skip = None, limit: Limit = None,
) -> list[lm.PipelineFile]:
    index = await resolve_index(request, project, pipeline_id)
    items, _ = await _list_source(request, project, index.source_directory_id, skip or 0, limit or 100, False)
    return [_pipeline_file(index.id, f) for f in items]


@router.get("/pipelines/{pipeline_id}/files/{file_id}/status", response_model=lm.IngestionStatusResponse,
            response_model_exclude_none=True)
async def get_pipeline_file_status(
    pipeline_id: str, file_id: str, request: Request, project: Project
) -> lm.IngestionStatusResponse:
    return await _source_status(request, project, pipeline_id, file_id)


@router.delete("/pipelines/{pipeline_id}/files/{file_id}", status_code=204)
async def delete_pipeline_file(pipeline_id: str, file_id: str, request: Request, project: Project) -> Response:
    return await _remove_source(request, project, pipeline_id, file_id)


# ---- retrieve ----------------------------------------------------------------------------------


@router.post("/pipelines/{pipeline_id}/retrieve", response_model=lm.RetrieveResults)
async def retrieve_pipeline(
    pipeline_id: str, body: lm.PipelineRetrieveRequest, request: Request, project: Project
) -> Response:
    """Retrieve from a pipeline in any of the four modes (see ``gateway.pipelines``)."""
    settings = settings_of(request)
    usecases: UseCases = request.app.state.usecases
    budget = usecases.budget()
    explicit = compile_metadata_filters(body.search_filters)
    inferred, inferred_shown, inference_note = use.infer_filters(body.search_filters_inference_schema, body.query)
    flt = conjunction([f for f in (explicit, inferred) if f is not None])
    index, answer = await usecases.retrieve(project.id, legacy_query(pipeline_id, body, settings, flt), budget,
                                            want_pages=False)
    metadata: dict[str, str] = {"retrieval_mode": answer.mode}
    if answer.routing_reason is not None:
        metadata["routing_reason"] = answer.routing_reason
        metadata["requested_retrieval_mode"] = "auto_routed"
    if inference_note:
        metadata["search_filters_inference"] = inference_note
    if answer.files:
        nodes = [use.file_node(use.FileResult(f.chunk, f.score), f.text) for f in answer.files]
    else:
        nodes = [use.chunk_node(r) for r in answer.results]
    if answer.degraded:
        metadata["degraded"] = "; ".join(answer.degraded)
    if answer.cached:
        metadata["cached"] = "true"

    image_nodes: list[lm.PageScreenshotNodeWithScore] = []
    if body.retrieve_page_screenshot_nodes or body.retrieve_image_nodes:
        if use.index_config(index).get("page_screenshots"):
            image_nodes = await use.screenshot_nodes(
                request.app.state.backends, project.id, use.pages_of(answer.touched(), bool(answer.files)),
                settings.max_image_nodes, budget.remaining(),
            )
        else:
            metadata["page_screenshots"] = (
                "not stored for this pipeline: set llama_parse_parameters.take_screenshot=true and re-ingest"
            )
    if body.retrieve_page_figure_nodes or body.retrieve_image_nodes:
        metadata["page_figures"] = "Quarry does not extract page figures"
    response = lm.RetrieveResults(
        pipeline_id=index.id, retrieval_nodes=nodes, image_nodes=image_nodes,
        inferred_search_filters=inferred_shown, retrieval_latency=answer.latency, metadata=metadata,
    )
    return JSONResponse(response.model_dump(mode="json", exclude_none=True))
