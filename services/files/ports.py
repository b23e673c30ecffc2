"""What the files service depends on: a transactional catalog.

``SqlCatalog`` (adapters/sql.py) implements it over SQLite or PostgreSQL. Every method that
names a project-owned object takes the caller's project id and raises ``NotFound`` for objects
of other projects; worker-protocol methods are internal and take ids only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from services.files.domain import (
    AddSpec,
    ApiKey,
    Backlog,
    Directory,
    DirectoryFile,
    EngineDrop,
    FileFilter,
    FileRef,
    FileStatus,
    FoundFile,
    Identity,
    Index,
    Job,
    JobItem,
    Page,
    PageImage,
    ParsedFileForRebuild,
    ParsedText,
    PreparedFile,
    Project,
    ResultPage,
    UploadSpec,
)

# A decoded page token: the sort key of the last item already returned.
Cursor = tuple[str, str]


class Catalog(Protocol):
    """Projects, keys, directories, files, indexes, sync jobs and parsed text."""

    async def start(self) -> None:
        """Bring the schema to the current version (creating it when the database is empty)."""
        ...

    async def ready(self) -> bool:
        """True when the database answers."""
        ...

    async def close(self) -> None: ...

    # projects and keys
    def now(self) -> datetime:
        """The catalog's clock (stored times compare with it)."""
        ...

    async def identity_for_key_hash(self, key_hash: str) -> Identity | None: ...
    async def mark_key_used(self, key_id: str, at: datetime, min_interval: timedelta) -> None: ...
    async def list_api_keys(self, project_id: str) -> list[ApiKey]: ...
    async def revoke_api_key(self, key_id: str) -> ApiKey: ...
    async def create_project(self, name: str) -> Project: ...
    async def rename_project(self, project_id: str, name: str) -> Project: ...

    async def delete_project(self, project_id: str) -> list[str]:
        """Delete the project with all it owns (engine drops recorded); the deleted index ids."""
        ...

    async def ensure_project(self, name: str) -> Project: ...
    async def get_project(self, project_id: str) -> Project: ...
    async def list_projects(self, name: str) -> list[Project]: ...

    async def add_api_key(self, project_id: str, key_hash: str, *, name: str = "", is_admin: bool = False,
                          expires_at: datetime | None = None) -> ApiKey:
        """Map a key hash to a project; idempotent for the same project, AlreadyExists otherwise."""
        ...

    # directories and files
    async def create_directory(self, project_id: str, name: str, description: str, type: str) -> Directory: ...

    async def ensure_directory(self, project_id: str, name: str, description: str, type: str) -> Directory:
        """The oldest directory of the project with this name and type, created when missing (race-safe)."""
        ...

    async def get_directory(self, project_id: str, directory_id: str) -> Directory: ...
    async def list_directories(self, project_id: str) -> list[Directory]: ...
    async def upload_file(self, project_id: str, directory_id: str, spec: UploadSpec) -> DirectoryFile: ...

    async def add_directory_file(self, project_id: str, directory_id: str, spec: AddSpec) -> DirectoryFile:
        """Put an upload of the project into a directory, sharing its content (replace semantics as upload)."""
        ...

    async def get_directory_file(
        self, project_id: str, directory_id: str, ref: FileRef, include_content: bool
    ) -> DirectoryFile: ...

    async def list_directory_files(
        self,
        project_id: str,
        directory_id: str,
        flt: FileFilter,
        limit: int,
        after: Cursor | None,
        include_content: bool = False,
    ) -> ResultPage[DirectoryFile]:
        """With ``include_content`` a page may hold fewer than ``limit`` items: it stops at a byte budget."""
        ...

    async def delete_directory_file(self, project_id: str, directory_id: str, ref: FileRef) -> None: ...

    # indexes and syncs
    async def create_index(
        self,
        project_id: str,
        name: str,
        description: str,
        source_directory_id: str,
        metadata_json: str,
        config_json: str = "{}",
    ) -> Index: ...

    async def upsert_pipeline(self, project_id: str, name: str, config_json: str) -> Index:
        """Get or create the project's pipeline (an index of kind "pipeline" with its own source
        directory) called ``name``; an existing one gets ``config_json``. Race-safe."""
        ...

    async def get_index(self, project_id: str, index_id: str) -> Index: ...

    async def list_indexes(
        self,
        project_id: str,
        source_directory_id: str,
        limit: int,
        after: Cursor | None,
        name: str = "",
        kind: str = "",
    ) -> ResultPage[Index]: ...

    async def delete_index(self, project_id: str, index_id: str) -> Index: ...

    async def start_sync(self, project_id: str, index_id: str) -> Job:
        """Plan a job; while one is active, request a resync (planned when it ends) and return it."""
        ...

    async def cancel_sync(self, project_id: str, index_id: str) -> Job: ...
    async def get_job(self, job_id: str) -> Job: ...
    async def get_file_status(self, project_id: str, index_id: str, unique_id: str) -> FileStatus: ...

    # worker protocol
    async def claim_job(self, worker_id: str, lease_seconds: float, max_attempts: int) -> Job | None:
        """Oldest pending job, or an expired running one; one whose leases expired ``max_attempts``
        times is failed instead of handed out again."""
        ...
    async def renew_lease(self, job_id: str, worker_id: str, lease_seconds: float) -> Job: ...
    async def list_job_items(self, job_id: str) -> list[JobItem]: ...
    async def get_source_file(self, source_file_id: str) -> tuple[DirectoryFile, bytes]: ...
    async def prepare_parsed_file(self, index_id: str, source_file_id: str) -> PreparedFile: ...

    async def complete_job_item(
        self,
        job_id: str,
        worker_id: str,
        source_file_id: str,
        text: str,
        pages: Sequence[Page],
        chunk_count: int,
        error: str,
        index_config_json: str = "",
    ) -> None: ...

    async def finish_job(self, job_id: str, worker_id: str, status: str, error: str) -> Job: ...

    async def put_page_images(
        self, job_id: str, worker_id: str, parsed_file_id: str, images: Sequence[PageImage], replace: bool
    ) -> None:
        """Upsert page screenshots of a parsed file of the job's index (lease holder only)."""
        ...

    # retrieval over parsed files
    async def find_files(
        self, project_id: str, index_id: str, name: str, name_contains: str, limit: int, after: Cursor | None
    ) -> ResultPage[FoundFile]: ...

    async def get_parsed_text(self, project_id: str, index_id: str, file_id: str) -> ParsedText: ...

    # page screenshots (by parsed file id)
    async def get_page_image(self, project_id: str, file_id: str, page_index: int) -> PageImage: ...

    async def start_rebuild(self, project_id: str, index_id: str, engines: Sequence[str]) -> Job:
        """A rebuild job re-indexing every parsed text of the index into ``engines``."""
        ...

    async def get_parsed_file(self, job_id: str, worker_id: str, source_file_id: str) -> ParsedFileForRebuild:
        """A rebuild item's parsed text and source-file attributes (lease-checked)."""
        ...

    async def backlog(self) -> Backlog:
        """Jobs pending or running, their items not done, the oldest one's age; chunks per index."""
        ...

    async def list_engine_drops(self, limit: int, min_age_seconds: float) -> list[EngineDrop]:
        """Deleted indexes whose chunks the engines may still hold, oldest first."""
        ...

    async def complete_engine_drop(self, index_id: str, error: str | None) -> None:
        """The engines dropped the index's chunks (``error`` None), or failed to (kept, counted)."""
        ...

    async def list_page_images(self, project_id: str, file_ids: Sequence[str]) -> list[PageImage]:
        """Metadata (no bytes) of the images of those files, by (file_id, page_index)."""
        ...
