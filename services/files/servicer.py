"""gRPC edge of the files service: protobuf <-> domain conversion and error mapping only."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.message import Message

from services._proto.quarry.files.v1 import files_pb2 as pb
from services._proto.quarry.files.v1 import files_pb2_grpc
from services.common.errors import InvalidArgument, mapped
from services.files import domain as d
from services.files.service import FilesService

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Files"].full_name


def rfc3339(value: datetime | None) -> str:
    """RFC 3339 in UTC with microseconds and a Z suffix; "" for None."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str, field: str) -> datetime | None:
    """An RFC 3339 request field ("" -> None); INVALID_ARGUMENT naming ``field`` otherwise."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidArgument(f"{field}: not an RFC 3339 time: {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# Each domain dataclass and the message with the same field names (checked by the unit tests).
MESSAGES: dict[type, type[Message]] = {
    d.Project: pb.Project,
    d.ApiKey: pb.ApiKey,
    d.Identity: pb.Identity,
    d.Directory: pb.Directory,
    d.DirectoryFile: pb.DirectoryFile,
    d.Job: pb.Job,
    d.Index: pb.Index,
    d.JobItem: pb.JobItem,
    d.FoundFile: pb.FoundFile,
    d.GrepMatch: pb.GrepMatch,
    d.FileStatus: pb.FileStatus,
    d.PageImage: pb.PageImage,
    d.PreparedFile: pb.PrepareParsedFileResponse,
    d.EngineDrop: pb.EngineDrop,
    d.JobFailure: pb.JobFailure,
    d.ParsedFileForRebuild: pb.ParsedFileForRebuild,
    d.Page: pb.Page,
}


def to_pb(obj: Any) -> Any:
    """The message for a domain dataclass: field by field, datetimes as RFC 3339, nested dataclasses
    (and tuples of them) converted, None left unset ("" for a timestamp, absent for a message)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        if isinstance(value, datetime):
            value = rfc3339(value)
        elif type(value) in MESSAGES:
            value = to_pb(value)
        elif isinstance(value, tuple):
            value = [to_pb(v) if type(v) in MESSAGES else v for v in value]
        values[f.name] = value
    return MESSAGES[type(obj)](**values)


def page_image(msg: pb.PageImage) -> d.PageImage:
    """The domain image of a request's PageImage (size_bytes is recomputed by the catalog)."""
    return d.PageImage(
        file_id=msg.file_id,
        page_index=msg.page_index,
        content=msg.content,
        content_type=msg.content_type,
        width=msg.width,
        height=msg.height,
        size_bytes=len(msg.content),
    )


class FilesServicer(files_pb2_grpc.FilesServicer):
    """Every RPC of quarry.files.v1.Files, delegating to ``FilesService``."""

    def __init__(self, service: FilesService) -> None:
        self._svc = service

    # -- projects and keys

    @mapped
    async def Authenticate(self, request: pb.AuthenticateRequest, context: grpc.aio.ServicerContext) -> pb.Project:
        """The project of an API key; UNAUTHENTICATED when unknown."""
        return to_pb((await self._svc.authenticate(request.api_key)).project)

    @mapped
    async def AuthenticateKey(self, request: pb.AuthenticateRequest, context: grpc.aio.ServicerContext) -> pb.Identity:
        """The project and key of an API key; UNAUTHENTICATED when unknown, revoked or expired."""
        return to_pb(await self._svc.authenticate(request.api_key))

    @mapped
    async def ListApiKeys(self, request: pb.ListApiKeysRequest,
                          context: grpc.aio.ServicerContext) -> pb.ListApiKeysResponse:
        """The keys of a project (or of all), never their secrets."""
        return pb.ListApiKeysResponse(keys=[to_pb(k) for k in await self._svc.list_api_keys(request.project_id)])

    @mapped
    async def RevokeApiKey(self, request: pb.RevokeApiKeyRequest, context: grpc.aio.ServicerContext) -> pb.ApiKey:
        """Revoke a key by id (idempotent)."""
        return to_pb(await self._svc.revoke_api_key(request.key_id))

    @mapped
    async def CreateProject(self, request: pb.CreateProjectRequest, context: grpc.aio.ServicerContext) -> pb.Project:
        """A new project (ALREADY_EXISTS when the name is taken)."""
        return to_pb(await self._svc.create_project(request.name))

    @mapped
    async def RenameProject(self, request: pb.RenameProjectRequest, context: grpc.aio.ServicerContext) -> pb.Project:
        """Rename a project."""
        return to_pb(await self._svc.rename_project(request.project_id, request.name))

    @mapped
    async def DeleteProject(self, request: pb.DeleteProjectRequest,
                            context: grpc.aio.ServicerContext) -> pb.DeleteProjectResponse:
        """Delete a project and all it owns."""
        return pb.DeleteProjectResponse(index_ids=await self._svc.delete_project(request.project_id))

    @mapped
    async def EnsureProject(self, request: pb.EnsureProjectRequest, context: grpc.aio.ServicerContext) -> pb.Project:
        """Get or create the project with this name."""
        return to_pb(await self._svc.ensure_project(request.name))

    @mapped
    async def GetProject(self, request: pb.GetProjectRequest, context: grpc.aio.ServicerContext) -> pb.Project:
        """One project by id."""
        return to_pb(await self._svc.get_project(request.project_id))

    @mapped
    async def ListProjects(
        self, request: pb.ListProjectsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProjectsResponse:
        """All projects, or those with this exact name."""
        return pb.ListProjectsResponse(projects=[to_pb(p) for p in await self._svc.list_projects(request.name)])

    @mapped
    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        """Register the given key (or a random one) for the project."""
        secret, key = await self._svc.create_api_key(
            request.project_id, request.api_key, name=request.name, is_admin=request.is_admin,
            expires_at=parse_time(request.expires_at, "expires_at"))
        return pb.CreateApiKeyResponse(api_key=secret, key=to_pb(key))

    # -- directories and files

    @mapped
    async def CreateDirectory(
        self, request: pb.CreateDirectoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.Directory:
        """Create a user or ephemeral directory."""
        return to_pb(
            await self._svc.create_directory(request.project_id, request.name, request.description, request.type)
        )

    @mapped
    async def EnsureDirectory(
        self, request: pb.CreateDirectoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.Directory:
        """Get or create the project's directory with this name and type."""
        return to_pb(
            await self._svc.ensure_directory(request.project_id, request.name, request.description, request.type)
        )

    @mapped
    async def GetDirectory(self, request: pb.GetDirectoryRequest, context: grpc.aio.ServicerContext) -> pb.Directory:
        """One directory of the project."""
        return to_pb(await self._svc.get_directory(request.project_id, request.directory_id))

    @mapped
    async def ListDirectories(
        self, request: pb.ListDirectoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDirectoriesResponse:
        """All directories of the project, oldest first."""
        dirs = await self._svc.list_directories(request.project_id)
        return pb.ListDirectoriesResponse(directories=[to_pb(x) for x in dirs])

    @mapped
    async def UploadFile(self, request: pb.UploadFileRequest, context: grpc.aio.ServicerContext) -> pb.DirectoryFile:
        """Add a file, or replace the one with the same unique_id."""
        return to_pb(
            await self._svc.upload_file(
                request.project_id,
                request.directory_id,
                display_name=request.display_name,
                content=request.content,
                content_type=request.content_type,
                unique_id=request.unique_id,
                external_file_id=request.external_file_id,
                metadata_json=request.metadata_json,
            )
        )

    @mapped
    async def ListDirectoryFiles(
        self, request: pb.ListDirectoryFilesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDirectoryFilesResponse:
        """One page of a directory's files, ordered by display_name then id."""
        flt = d.FileFilter(
            display_name=request.display_name,
            display_name_contains=request.display_name_contains,
            unique_id=request.unique_id,
            file_id=request.file_id,
        )
        page = await self._svc.list_directory_files(
            request.project_id,
            request.directory_id,
            flt,
            page_size_=request.page_size,
            page_token=request.page_token,
            include_content=request.include_content,
        )
        return pb.ListDirectoryFilesResponse(
            items=[to_pb(f) for f in page.items], next_page_token=page.next_page_token, total_size=page.total_size
        )

    @mapped
    async def DeleteDirectoryFile(
        self, request: pb.DeleteDirectoryFileRequest, context: grpc.aio.ServicerContext
    ) -> pb.Empty:
        """Remove one file (by id or unique_id) from a directory."""
        await self._svc.delete_directory_file(
            request.project_id,
            request.directory_id,
            directory_file_id=request.directory_file_id,
            unique_id=request.unique_id,
        )
        return pb.Empty()

    @mapped
    async def GetDirectoryFile(
        self, request: pb.GetDirectoryFileRequest, context: grpc.aio.ServicerContext
    ) -> pb.DirectoryFile:
        """One file (by id or unique_id), optionally with its bytes."""
        return to_pb(
            await self._svc.get_directory_file(
                request.project_id,
                request.directory_id,
                directory_file_id=request.directory_file_id,
                unique_id=request.unique_id,
                include_content=request.include_content,
            )
        )

    @mapped
    async def AddDirectoryFile(
        self, request: pb.AddDirectoryFileRequest, context: grpc.aio.ServicerContext
    ) -> pb.DirectoryFile:
        """Put an existing upload into a directory, sharing its content."""
        return to_pb(
            await self._svc.add_directory_file(
                request.project_id,
                request.directory_id,
                request.source_directory_file_id,
                display_name=request.display_name,
                unique_id=request.unique_id,
                metadata_json=request.metadata_json,
            )
        )

    # -- indexes and syncs

    @mapped
    async def CreateIndex(self, request: pb.CreateIndexRequest, context: grpc.aio.ServicerContext) -> pb.Index:
        """Create an index (and its output directory) over a source directory."""
        return to_pb(
            await self._svc.create_index(
                request.project_id,
                name=request.name,
                description=request.description,
                source_directory_id=request.source_directory_id,
                metadata_json=request.metadata_json,
                config_json=request.config_json,
            )
        )

    @mapped
    async def GetIndex(self, request: pb.GetIndexRequest, context: grpc.aio.ServicerContext) -> pb.Index:
        """One index with sync_in_progress and its last job."""
        return to_pb(await self._svc.get_index(request.project_id, request.index_id))

    @mapped
    async def ListIndexes(
        self, request: pb.ListIndexesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListIndexesResponse:
        """One page of the project's indexes, oldest first (optionally by exact name and kind)."""
        page = await self._svc.list_indexes(
            request.project_id,
            source_directory_id=request.source_directory_id,
            name=request.name,
            kind=request.kind,
            page_size_=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListIndexesResponse(
            items=[to_pb(i) for i in page.items], next_page_token=page.next_page_token, total_size=page.total_size
        )

    @mapped
    async def DeleteIndex(self, request: pb.DeleteIndexRequest, context: grpc.aio.ServicerContext) -> pb.Index:
        """Delete an index with its jobs, parsed texts and output directory; returns it."""
        return to_pb(await self._svc.delete_index(request.project_id, request.index_id))

    @mapped
    async def StartSync(self, request: pb.StartSyncRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        """Plan a sync job, or return the one already pending/running (and request a resync after it)."""
        return to_pb(await self._svc.start_sync(request.project_id, request.index_id))

    @mapped
    async def CancelSync(self, request: pb.CancelSyncRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        """Cancel the running sync; FAILED_PRECONDITION when none."""
        return to_pb(await self._svc.cancel_sync(request.project_id, request.index_id))

    @mapped
    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        """One job by id (no project check: the caller checks the job's index)."""
        return to_pb(await self._svc.get_job(request.job_id))

    @mapped
    async def UpsertPipeline(self, request: pb.UpsertPipelineRequest, context: grpc.aio.ServicerContext) -> pb.Index:
        """Create the project's pipeline with this name, or replace its config."""
        return to_pb(await self._svc.upsert_pipeline(request.project_id, request.name, request.config_json))

    @mapped
    async def GetFileStatus(
        self, request: pb.GetFileStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.FileStatus:
        """Where one source file (by unique_id) of an index stands."""
        return to_pb(await self._svc.get_file_status(request.project_id, request.index_id, request.unique_id))

    # -- worker protocol

    @mapped
    async def ClaimJob(self, request: pb.ClaimJobRequest, context: grpc.aio.ServicerContext) -> pb.ClaimJobResponse:
        """Lease the oldest claimable job to this worker."""
        job = await self._svc.claim_job(request.worker_id, request.lease_seconds)
        if job is None:
            return pb.ClaimJobResponse(found=False)
        return pb.ClaimJobResponse(found=True, job=to_pb(job))

    @mapped
    async def RenewLease(self, request: pb.RenewLeaseRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        """Extend the worker's lease on a running job."""
        return to_pb(await self._svc.renew_lease(request.job_id, request.worker_id, request.lease_seconds))

    @mapped
    async def ListJobItems(
        self, request: pb.ListJobItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListJobItemsResponse:
        """All items of a job in plan order."""
        return pb.ListJobItemsResponse(items=[to_pb(x) for x in await self._svc.list_job_items(request.job_id)])

    @mapped
    async def GetSourceFile(self, request: pb.GetSourceFileRequest, context: grpc.aio.ServicerContext) -> pb.SourceFile:
        """An uploaded file with its bytes."""
        f, content = await self._svc.get_source_file(request.source_file_id)
        return pb.SourceFile(file=to_pb(f), content=content)

    @mapped
    async def PrepareParsedFile(
        self, request: pb.PrepareParsedFileRequest, context: grpc.aio.ServicerContext
    ) -> pb.PrepareParsedFileResponse:
        """Get or create the parsed-file id for a source file in an index (with the index's config)."""
        return to_pb(await self._svc.prepare_parsed_file(request.index_id, request.source_file_id))

    @mapped
    async def CompleteJobItem(
        self, request: pb.CompleteJobItemRequest, context: grpc.aio.ServicerContext
    ) -> pb.Empty:
        """Commit one job item (idempotent)."""
        await self._svc.complete_job_item(
            request.job_id,
            request.worker_id,
            request.source_file_id,
            text=request.text,
            pages=[d.Page(number=p.number, start_char=p.start_char, end_char=p.end_char) for p in request.pages],
            chunk_count=request.chunk_count,
            error=request.error,
            index_config_json=request.index_config_json,
        )
        return pb.Empty()

    @mapped
    async def FinishJob(self, request: pb.FinishJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        """Close a job and bump the index generation."""
        return to_pb(await self._svc.finish_job(request.job_id, request.worker_id, request.status, request.error))

    @mapped
    async def PutPageImages(self, request: pb.PutPageImagesRequest, context: grpc.aio.ServicerContext) -> pb.Empty:
        """Store page screenshots of a parsed file (lease holder only)."""
        await self._svc.put_page_images(
            request.job_id,
            request.worker_id,
            request.parsed_file_id,
            [page_image(i) for i in request.images],
            replace=request.replace,
        )
        return pb.Empty()

    # -- retrieval over parsed files

    @mapped
    async def FindFiles(self, request: pb.FindFilesRequest, context: grpc.aio.ServicerContext) -> pb.FindFilesResponse:
        """Parsed files of an index by exact name or case-insensitive substring."""
        page = await self._svc.find_files(
            request.project_id,
            request.index_id,
            file_name=request.file_name,
            file_name_contains=request.file_name_contains,
            page_size_=request.page_size,
            page_token=request.page_token,
        )
        return pb.FindFilesResponse(
            items=[to_pb(f) for f in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    @mapped
    async def GrepFile(self, request: pb.GrepFileRequest, context: grpc.aio.ServicerContext) -> pb.GrepFileResponse:
        """Regex (RE2) matches in a parsed file, with context, paginated."""
        page = await self._svc.grep_file(
            request.project_id,
            request.index_id,
            request.file_id,
            request.pattern,
            context_chars=request.context_chars,
            page_size_=request.page_size,
            page_token=request.page_token,
        )
        return pb.GrepFileResponse(
            items=[to_pb(m) for m in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    @mapped
    async def ReadFile(self, request: pb.ReadFileRequest, context: grpc.aio.ServicerContext) -> pb.ReadFileResponse:
        """A character range of a parsed file's text."""
        max_length = request.max_length if request.has_max_length else None
        result = await self._svc.read_file(
            request.project_id, request.index_id, request.file_id, offset=request.offset, max_length=max_length
        )
        return pb.ReadFileResponse(content=result.content, total_chars=result.total_chars)


    # -- page screenshots

    @mapped
    async def GetPageImage(self, request: pb.GetPageImageRequest, context: grpc.aio.ServicerContext) -> pb.PageImage:
        """One page image of a parsed file, with its bytes."""
        return to_pb(await self._svc.get_page_image(request.project_id, request.file_id, request.page_index))

    @mapped
    async def ListPageImages(
        self, request: pb.ListPageImagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPageImagesResponse:
        """The page images (no bytes) of some parsed files."""
        images = await self._svc.list_page_images(request.project_id, list(request.file_ids))
        return pb.ListPageImagesResponse(items=[to_pb(i) for i in images])

    @mapped
    async def StartRebuild(self, request: pb.StartRebuildRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        """Plan a rebuild of the index's parsed texts into some engines (FAILED_PRECONDITION while a job runs)."""
        return to_pb(await self._svc.start_rebuild(request.project_id, request.index_id, list(request.engines)))

    @mapped
    async def GetParsedFile(
        self, request: pb.GetParsedFileRequest, context: grpc.aio.ServicerContext
    ) -> pb.ParsedFileForRebuild:
        """A rebuild item's parsed text, pages and source file (FAILED_PRECONDITION without the lease)."""
        return to_pb(await self._svc.get_parsed_file(request.job_id, request.worker_id, request.source_file_id))

    @mapped
    async def ListEngineDrops(
        self, request: pb.ListEngineDropsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListEngineDropsResponse:
        """Deleted indexes whose chunks the engines may still hold, oldest first."""
        drops = await self._svc.list_engine_drops(request.limit, request.min_age_seconds)
        return pb.ListEngineDropsResponse(drops=[to_pb(x) for x in drops])

    @mapped
    async def CompleteEngineDrop(self, request: pb.CompleteEngineDropRequest,
                                 context: grpc.aio.ServicerContext) -> pb.Empty:
        """Forget a finished drop, or count a failed attempt (``failed``) with its error."""
        error = (request.error or "failed") if request.failed else None
        await self._svc.complete_engine_drop(request.index_id, error)
        return pb.Empty()


def register(service: FilesService) -> Callable[[grpc.aio.Server], None]:
    """A registration callback for ``start_server`` / ``serve``."""

    def _register(server: grpc.aio.Server) -> None:
        files_pb2_grpc.add_FilesServicer_to_server(FilesServicer(service), server)

    return _register
