"""Administration: projects and API keys, for admin keys only (403 for any other key).

A revoked key stops working at once on the gateway that revoked it and within
``QUARRY_GATEWAY_AUTH_CACHE_SECONDS`` (10 s by default) on every other replica, whose key cache
lasts that long. Deleting a project deletes its indexes, directories, files and keys in the
catalog in one transaction, then drops its indexes' chunks from both engines (an ingest worker
finishes any drop that did not complete in time).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth import admin_identity
from gateway.routes.deps import catalog_timeout, drop_from_engines, files_of
from services._proto.quarry.files.v1 import files_pb2

Admin = Annotated[files_pb2.Identity, Depends(admin_identity)]
ProjectName = Annotated[str, Field(min_length=1, max_length=200, description="Unique among projects")]

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


class AdminProject(BaseModel):
    id: str
    name: str
    is_default: bool
    created_at: str
    updated_at: str


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ProjectName


class ProjectUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ProjectName


class ProjectDeleted(BaseModel):
    id: str
    deleted_index_ids: list[str]


class ApiKeyInfo(BaseModel):
    """A key without its secret."""

    id: str
    project_id: str
    name: str
    is_admin: bool
    created_at: str
    expires_at: str | None = None
    revoked_at: str | None = None
    last_used_at: str | None = Field(default=None, description="Recorded at a resolution of one minute")


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project_id: str | None = Field(default=None, max_length=256,
                                   description="The key's project; the caller's own when omitted")
    name: str = Field(default="", max_length=200)
    is_admin: bool = False
    expires_in_days: float | None = Field(default=None, gt=0, le=36_500,
                                          description="Days until the key stops working; never when omitted")


class ApiKeyCreated(ApiKeyInfo):
    api_key: str = Field(description="The secret: shown only in this response")


def _project(p: files_pb2.Project) -> AdminProject:
    return AdminProject(id=p.id, name=p.name, is_default=p.is_default, created_at=p.created_at,
                        updated_at=p.updated_at)


def _key(k: files_pb2.ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(id=k.id, project_id=k.project_id, name=k.name, is_admin=k.is_admin, created_at=k.created_at,
                      expires_at=k.expires_at or None, revoked_at=k.revoked_at or None,
                      last_used_at=k.last_used_at or None)


@router.get("/projects", response_model=list[AdminProject], operation_id="admin_list_projects")
async def list_projects(request: Request, admin: Admin) -> list[AdminProject]:
    """Every project."""
    response = await files_of(request).ListProjects(files_pb2.ListProjectsRequest(), timeout=catalog_timeout(request))
    return [_project(p) for p in response.projects]


@router.post("/projects", response_model=AdminProject, status_code=201, operation_id="admin_create_project")
async def create_project(body: ProjectCreate, request: Request, admin: Admin) -> AdminProject:
    """A new, empty project (409 when the name is taken)."""
    return _project(await files_of(request).CreateProject(files_pb2.CreateProjectRequest(name=body.name),
                                                          timeout=catalog_timeout(request)))


@router.patch("/projects/{project_id}", response_model=AdminProject, operation_id="admin_rename_project")
async def rename_project(project_id: str, body: ProjectUpdate, request: Request, admin: Admin) -> AdminProject:
    """Rename a project (409 when the name is taken)."""
    project = await files_of(request).RenameProject(
        files_pb2.RenameProjectRequest(project_id=project_id, name=body.name), timeout=catalog_timeout(request))
    request.app.state.auth.forget_project(project_id)
    return _project(project)


@router.delete("/projects/{project_id}", response_model=ProjectDeleted, operation_id="admin_delete_project")
async def delete_project(project_id: str, request: Request, admin: Admin) -> ProjectDeleted:
    """Delete a project with its indexes, directories, files and keys, and its chunks in every
    engine (409 for the default project)."""
    deleted = await files_of(request).DeleteProject(files_pb2.DeleteProjectRequest(project_id=project_id),
                                                    timeout=catalog_timeout(request))
    request.app.state.auth.forget_project(project_id)
    for index_id in deleted.index_ids:
        request.app.state.indexes.forget(project_id, index_id)
        await drop_from_engines(request, index_id)
    return ProjectDeleted(id=project_id, deleted_index_ids=list(deleted.index_ids))


@router.get("/keys", response_model=list[ApiKeyInfo], operation_id="admin_list_keys")
async def list_keys(request: Request, admin: Admin, project_id: str | None = None) -> list[ApiKeyInfo]:
    """The keys of one project, or of every project; never their secrets."""
    response = await files_of(request).ListApiKeys(files_pb2.ListApiKeysRequest(project_id=project_id or ""),
                                                   timeout=catalog_timeout(request))
    return [_key(k) for k in response.keys]


@router.post("/keys", response_model=ApiKeyCreated, status_code=201, operation_id="admin_create_key")
async def create_key(body: ApiKeyCreate, request: Request, admin: Admin) -> ApiKeyCreated:
    """A new key; its secret is in this response only."""
    expires = ""
    if body.expires_in_days is not None:
        expires = (datetime.now(UTC) + timedelta(days=body.expires_in_days)).isoformat()
    created = await files_of(request).CreateApiKey(
        files_pb2.CreateApiKeyRequest(project_id=body.project_id or admin.project.id, name=body.name,
                                      is_admin=body.is_admin, expires_at=expires),
        timeout=catalog_timeout(request))
    return ApiKeyCreated(api_key=created.api_key, **_key(created.key).model_dump())


@router.delete("/keys/{key_id}", response_model=ApiKeyInfo, operation_id="admin_revoke_key")
async def revoke_key(key_id: str, request: Request, admin: Admin) -> ApiKeyInfo:
    """Revoke a key: at once here, within the key cache's lifetime on other gateway replicas."""
    key = await files_of(request).RevokeApiKey(files_pb2.RevokeApiKeyRequest(key_id=key_id),
                                               timeout=catalog_timeout(request))
    request.app.state.auth.forget_key(key_id)
    return _key(key)
