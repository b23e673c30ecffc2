"""Projects, directories (with uploads) and indexes (with syncs)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from gateway import models, shaping
from gateway.errors import error_response, field_error
from gateway.models import INT32_MAX
from gateway.routes.deps import Project, catalog_timeout, files_of, remove_index, resolve_index, settings_of
from gateway.validation import problem, surrogate_location
from services._proto.quarry.files.v1 import files_pb2

router = APIRouter(prefix="/api/v1", tags=["catalog"])


# ---- projects -----------------------------------------------------------------------------


@router.get("/projects", response_model=list[models.Project])
async def list_projects(
    request: Request, project: Project, project_name: str | None = None, organization_id: str | None = None
) -> list[models.Project]:
    """The caller's project (an API key belongs to exactly one), filtered by name if given."""
    if project_name and project.name != project_name:
        return []
    return [shaping.project(project)]


@router.get("/projects/{project_id}", response_model=models.Project)
async def get_project(project_id: str, request: Request, project: Project) -> Response | models.Project:
    if project_id != project.id:
        return error_response(404, "project not found")
    return shaping.project(project)


# ---- directories ----------------------------------------------------------------------------


@router.post("/beta/directories", response_model=models.Directory)
async def create_directory(body: models.DirectoryCreate, request: Request, project: Project) -> models.Directory:
    d = await files_of(request).CreateDirectory(
        files_pb2.CreateDirectoryRequest(
            project_id=project.id, name=body.name, description=body.description or "", type=body.type or "user"
        ),
        timeout=catalog_timeout(request),
    )
    return shaping.directory(d)


@router.get("/beta/directories")
async def list_directories(request: Request, project: Project) -> dict[str, object]:
    response = await files_of(request).ListDirectories(
        files_pb2.ListDirectoriesRequest(project_id=project.id), timeout=catalog_timeout(request)
    )
    items = [shaping.directory(d).model_dump(mode="json") for d in response.directories]
    return {"items": items, "next_page_token": None, "total_size": len(items)}


@router.get("/beta/directories/{directory_id}", response_model=models.Directory)
async def get_directory(directory_id: str, request: Request, project: Project) -> models.Directory:
    d = await files_of(request).GetDirectory(
        files_pb2.GetDirectoryRequest(project_id=project.id, directory_id=directory_id),
        timeout=catalog_timeout(request),
    )
    return shaping.directory(d)


def _metadata_json(raw: str | None) -> str | JSONResponse:
    if raw is None or raw == "":
        return ""
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        return field_error(("body", "metadata"), "metadata must be a JSON object string")
    if not isinstance(parsed, dict):
        return field_error(("body", "metadata"), "metadata must be a JSON object")
    where = surrogate_location(parsed, ("body", "metadata"))
    if where is not None:
        return error_response(422, [problem(where)])
    for key, value in parsed.items():
        ok = value is None or isinstance(value, str | int | float | bool) or (
            isinstance(value, list) and all(isinstance(v, str | int | float | bool) for v in value)
        )
        if not ok:
            return field_error(("body", "metadata", key), "metadata values must be scalars or lists of scalars")
    return json.dumps(parsed)


@router.post("/beta/directories/{directory_id}/files/upload", response_model=models.DirectoryFile)
async def upload_file(
    directory_id: str,
    request: Request,
    project: Project,
    upload_file: Annotated[UploadFile, File()],
    display_name: Annotated[str | None, Form()] = None,
    unique_id: Annotated[str | None, Form()] = None,
    external_file_id: Annotated[str | None, Form()] = None,
    metadata: Annotated[str | None, Form()] = None,
) -> Response | models.DirectoryFile:
    """Upload (or replace, by unique_id, default the display name) a file in a directory."""
    meta = _metadata_json(metadata)
    if isinstance(meta, JSONResponse):
        return meta
    limit = settings_of(request).max_upload_bytes
    content = await upload_file.read(limit + 1)
    if len(content) > limit:
        return error_response(413, f"upload_file is larger than {limit} bytes")
    name = display_name or upload_file.filename or ""
    if not name:
        return field_error(("body", "display_name"), "a display_name or a file name is required")
    f = await files_of(request).UploadFile(
        files_pb2.UploadFileRequest(
            project_id=project.id, directory_id=directory_id, display_name=name, content=content,
            content_type=upload_file.content_type or "", unique_id=unique_id or "",
            external_file_id=external_file_id or "", metadata_json=meta,
        ),
        timeout=settings_of(request).request_timeout_seconds,
    )
    return shaping.directory_file(f)


@router.get("/beta/directories/{directory_id}/files", response_model=models.DirectoryFilePage)
async def list_directory_files(
    directory_id: str,
    request: Request,
    project: Project,
    page_size: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    page_token: str | None = None,
    display_name: str | None = None,
    display_name_contains: str | None = None,
    unique_id: str | None = None,
    file_id: str | None = None,
) -> models.DirectoryFilePage:
    response = await files_of(request).ListDirectoryFiles(
        files_pb2.ListDirectoryFilesRequest(
            project_id=project.id, directory_id=directory_id, page_size=page_size or 0,
            page_token=page_token or "", display_name=display_name or "",
            display_name_contains=display_name_contains or "", unique_id=unique_id or "", file_id=file_id or "",
        ),
        timeout=catalog_timeout(request),
    )
    return models.DirectoryFilePage(
        items=[shaping.directory_file(f) for f in response.items],
        next_page_token=response.next_page_token or None,
        total_size=response.total_size,
    )


@router.get("/beta/directories/{directory_id}/files/{directory_file_id}", response_model=models.DirectoryFile)
async def get_directory_file(
    directory_id: str, directory_file_id: str, request: Request, project: Project
) -> models.DirectoryFile:
    f = await files_of(request).GetDirectoryFile(
        files_pb2.GetDirectoryFileRequest(
            project_id=project.id, directory_id=directory_id, directory_file_id=directory_file_id
        ),
        timeout=catalog_timeout(request),
    )
    return shaping.directory_file(f)


@router.delete("/beta/directories/{directory_id}/files/{directory_file_id}", status_code=204)
async def delete_directory_file(
    directory_id: str, directory_file_id: str, request: Request, project: Project
) -> Response:
    await files_of(request).DeleteDirectoryFile(
        files_pb2.DeleteDirectoryFileRequest(
            project_id=project.id, directory_id=directory_id, directory_file_id=directory_file_id
        ),
        timeout=catalog_timeout(request),
    )
    return Response(status_code=204)


# ---- indexes ----------------------------------------------------------------------------------


@router.post("/beta/directories/{directory_id}/files", response_model=models.DirectoryFile)
async def add_directory_file(
    directory_id: str, body: models.DirectoryFileAdd, request: Request, project: Project
) -> Response | models.DirectoryFile:
    """Put a file uploaded with ``POST /api/v1/beta/files`` into a directory (bytes shared)."""
    raw = json.dumps(body.metadata) if isinstance(body.metadata, dict) else body.metadata
    meta = _metadata_json(raw)
    if isinstance(meta, JSONResponse):
        return meta
    f = await files_of(request).AddDirectoryFile(
        files_pb2.AddDirectoryFileRequest(
            project_id=project.id, directory_id=directory_id, source_directory_file_id=body.file_id,
            display_name=body.display_name or "", unique_id=body.unique_id or "", metadata_json=meta,
        ),
        timeout=catalog_timeout(request),
    )
    return shaping.directory_file(f)


def _index_config(body: models.IndexCreate) -> str | JSONResponse:
    """``store_attachments``: page screenshots are the attachments Quarry stores."""
    screenshots = False
    for i, kind in enumerate(body.store_attachments or []):
        if "screenshot" not in kind.lower():
            return field_error(("body", "store_attachments", i), "Quarry stores page screenshots only")
        screenshots = True
    return json.dumps({"page_screenshots": screenshots})


@router.post("/indexes", response_model=models.Index)
async def create_index(body: models.IndexCreate, request: Request, project: Project) -> Response | models.Index:
    config = _index_config(body)
    if isinstance(config, JSONResponse):
        return config
    i = await files_of(request).CreateIndex(
        files_pb2.CreateIndexRequest(
            project_id=project.id, name=body.name or "", description=body.description or "",
            source_directory_id=body.source_directory_id, config_json=config,
        ),
        timeout=catalog_timeout(request),
    )
    return shaping.index(i)


@router.get("/indexes", response_model=models.IndexPage)
async def list_indexes(
    request: Request,
    project: Project,
    page_size: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    page_token: str | None = None,
    source_directory_id: str | None = None,
) -> models.IndexPage:
    response = await request.app.state.usecases.list_indexes(project.id, page_size, page_token, source_directory_id)
    return models.IndexPage(
        items=[shaping.index(i) for i in response.items],
        next_page_token=response.next_page_token or None,
        total_size=response.total_size,
    )


@router.get("/indexes/{index_id}", response_model=models.Index, response_model_exclude_none=True)
async def get_index(
    index_id: str, request: Request, project: Project, expand: Annotated[list[str] | None, Query()] = None
) -> models.Index:
    i = await resolve_index(request, project, index_id)
    shaped = shaping.index(i, expand_sync="sync_in_progress" in (expand or []))
    shaped.engine_health = await request.app.state.usecases.engine_health(i.id)
    return shaped


@router.delete("/indexes/{index_id}", status_code=204)
async def delete_index(index_id: str, request: Request, project: Project) -> Response:
    """Delete the catalog entry first (so it stops being served), then the engines' data."""
    await remove_index(request, project, index_id)
    return Response(status_code=204)


def _job(index_id: str, job: files_pb2.Job) -> models.SyncResponse:
    return models.SyncResponse(
        index_id=index_id, job_id=job.id, status=job.status, total_items=job.total_items,
        done_items=job.done_items, kind=job.kind or "sync",
    )


@router.post("/indexes/{index_id}/sync", response_model=models.SyncResponse)
async def sync_index(index_id: str, request: Request, project: Project) -> models.SyncResponse:
    """Start a sync (or return the one already running)."""
    job = await files_of(request).StartSync(
        files_pb2.StartSyncRequest(project_id=project.id, index_id=index_id), timeout=catalog_timeout(request)
    )
    return _job(index_id, job)


@router.post("/indexes/{index_id}/rebuild", response_model=models.SyncResponse)
async def rebuild_index(index_id: str, request: Request, project: Project,
                        body: models.RebuildRequest | None = None) -> models.SyncResponse:
    """Re-index the stored parsed texts into ``engines`` (a damaged keyword index, a new engine),
    without the source files: the engines' copies are dropped and written again by an ingest
    worker. 409 while a sync or another rebuild runs. Follow it like a sync (GET the index)."""
    engines = list(body.engines) if body and body.engines else []
    job = await files_of(request).StartRebuild(
        files_pb2.StartRebuildRequest(project_id=project.id, index_id=index_id, engines=engines),
        timeout=catalog_timeout(request),
    )
    request.app.state.indexes.forget(project.id, index_id)
    return _job(index_id, job)


@router.post("/indexes/{index_id}/sync/cancel", response_model=models.SyncResponse)
async def cancel_sync(index_id: str, request: Request, project: Project) -> models.SyncResponse:
    job = await files_of(request).CancelSync(
        files_pb2.CancelSyncRequest(project_id=project.id, index_id=index_id), timeout=catalog_timeout(request)
    )
    return _job(index_id, job)
