"""The catalog's domain types: frozen dataclasses, no protobuf."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")

ACTIVE_JOB_STATUSES = ("pending", "running")

INDEX_KINDS = ("index", "pipeline")

# Where one source file of an index stands (GetFileStatus).
FILE_NOT_STARTED = "NOT_STARTED"
FILE_IN_PROGRESS = "IN_PROGRESS"
FILE_SUCCESS = "SUCCESS"
FILE_ERROR = "ERROR"
FILE_CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    organization_id: str
    is_default: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ApiKey:
    """An API key as an administrator sees it: never the secret, only its id and properties."""

    id: str
    project_id: str
    name: str
    is_admin: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class Identity:
    """Who an authenticated caller is: the key's project and the key itself."""

    project: Project
    key: ApiKey


@dataclass(frozen=True)
class Directory:
    id: str
    project_id: str
    name: str
    description: str
    type: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class DirectoryFile:
    id: str
    directory_id: str
    project_id: str
    display_name: str
    unique_id: str
    external_file_id: str
    file_id: str
    metadata_json: str
    version: int
    size_bytes: int
    content_type: str
    created_at: datetime
    updated_at: datetime
    # The file's bytes, only when asked for (include_content); b"" otherwise.
    content: bytes = b""


@dataclass(frozen=True)
class Job:
    id: str
    index_id: str
    status: str
    worker_id: str
    lease_until: datetime | None
    attempts: int
    total_items: int
    done_items: int
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: "sync" (the source directory into both engines) or "rebuild" (the parsed texts into ``engines``).
    kind: str = "sync"
    #: A rebuild's engines, comma-separated ("dense", "sparse" or both); "" for a sync.
    engines: str = ""


#: The engines a rebuild may target.
ENGINES = ("dense", "sparse")


def chunking_key(config_json: str) -> str:
    """The chunking an index config asks for, as a comparable string ("" for the worker's defaults).

    A parsed text records the key of the config its chunks were made with; a sync plans the file
    again when it differs from the index's (a pipeline's ``transform_config`` changed).
    """
    try:
        config = json.loads(config_json or "{}")
    except json.JSONDecodeError:
        return ""
    chunking = config.get("chunking") if isinstance(config, dict) else None
    if not isinstance(chunking, dict) or not chunking:
        return ""
    return json.dumps(chunking, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class ParsedFileForRebuild:
    """What a worker needs to index a parsed file again without its source: the text and pages,
    the source file's name, metadata and unique id, and the version its chunk ids carry."""

    parsed_file_id: str
    version: int
    text: str
    pages: tuple[Page, ...]
    file: DirectoryFile
    index_config_json: str


#: Failed files an index reports with its last job (the count is always complete).
MAX_LISTED_FAILURES = 50


@dataclass(frozen=True)
class JobFailure:
    """A source file a job could not index, and why (the job item's error)."""

    source_file_id: str
    file_name: str
    unique_id: str
    error: str


@dataclass(frozen=True)
class Index:
    id: str
    project_id: str
    name: str
    description: str
    source_directory_id: str
    output_directory_id: str
    generation: int
    sync_in_progress: bool
    created_at: datetime
    updated_at: datetime
    last_synced_at: datetime | None
    metadata_json: str
    last_job: Job | None = None
    kind: str = "index"
    config_json: str = "{}"
    # Items of ``last_job`` whose error is non-empty.
    last_job_failed_items: int = 0
    # The first of them (up to ``MAX_LISTED_FAILURES``), with the file and the reason.
    last_job_failures: tuple[JobFailure, ...] = ()


@dataclass(frozen=True)
class JobItem:
    job_id: str
    source_file_id: str
    action: str
    status: str
    parsed_file_id: str
    chunk_count: int
    error: str


@dataclass(frozen=True)
class Backlog:
    """What the ingest workers have left, and what the indexes hold, for the metrics."""

    queued_jobs: int
    queued_items: int
    oldest_job_age_seconds: float
    chunks_by_index: dict[str, int]


@dataclass(frozen=True)
class EngineDrop:
    """A deleted index whose chunks are still to be dropped from dense and sparse."""

    index_id: str
    project_id: str
    requested_at: datetime
    attempts: int
    last_error: str


@dataclass(frozen=True)
class PreparedFile:
    """The parsed-file row a worker writes into, and the index settings it parses under."""

    parsed_file_id: str
    version: int
    index_config_json: str


@dataclass(frozen=True)
class FileStatus:
    """Where one source file of an index stands; ``job_id`` is the job the status comes from."""

    status: str
    error: str
    job_id: str
    file: DirectoryFile


@dataclass(frozen=True)
class PageImage:
    """A page screenshot of a parsed file (0-based ``page_index``); ``content`` is b"" in listings."""

    file_id: str
    page_index: int
    content: bytes
    content_type: str
    width: int
    height: int
    size_bytes: int


@dataclass(frozen=True)
class Page:
    """A 1-based page and its character range in the parsed text."""

    number: int
    start_char: int
    end_char: int


@dataclass(frozen=True)
class ParsedText:
    parsed_file_id: str
    index_id: str
    source_file_id: str
    source_version: int
    text: str
    pages: tuple[Page, ...] = ()


@dataclass(frozen=True)
class FoundFile:
    file_id: str
    file_name: str


@dataclass(frozen=True)
class GrepMatch:
    content: str
    start_char: int
    end_char: int


@dataclass(frozen=True)
class ReadResult:
    content: str
    total_chars: int


@dataclass(frozen=True)
class ResultPage(Generic[T]):
    """One page of a cursor-paginated listing; ``next_page_token`` is "" on the last page."""

    items: list[T] = field(default_factory=list)
    next_page_token: str = ""
    total_size: int = 0


@dataclass(frozen=True)
class FileFilter:
    """Filters for listing a directory's files (all optional, combined with AND)."""

    display_name: str = ""
    display_name_contains: str = ""
    unique_id: str = ""
    file_id: str = ""


@dataclass(frozen=True)
class FileRef:
    """One file of a directory: by its directory-file id or by its unique_id (exactly one is set)."""

    id: str = ""
    unique_id: str = ""


@dataclass(frozen=True)
class UploadSpec:
    """What UploadFile writes (already validated: metadata_json is a JSON object)."""

    display_name: str
    content: bytes
    content_type: str
    unique_id: str
    external_file_id: str
    metadata_json: str


@dataclass(frozen=True)
class AddSpec:
    """What AddDirectoryFile writes (metadata_json validated); an empty display_name or unique_id
    takes the source's display_name or its directory-file id."""

    source_directory_file_id: str
    display_name: str
    unique_id: str
    metadata_json: str
