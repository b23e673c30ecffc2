"""The files service's use cases, in domain types: validation, key hashing, grep and read."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Sequence

import re2

from services.common.errors import InvalidArgument, Unauthenticated
from services.files import domain as d
from services.files.paging import decode_cursor, decode_offset, encode_offset, page_size
from services.files.ports import Catalog

DEFAULT_LEASE_SECONDS = 60.0
JOB_RESULT_STATUSES = ("succeeded", "failed")


def hash_key(api_key: str) -> str:
    """The stored form of an API key: sha256 hex."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def json_object(value: str, field: str) -> str:
    """Validate that ``value`` is a JSON object ("" means {}); returns its canonical text."""
    if not value:
        return "{}"
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise InvalidArgument(f"{field} is not valid JSON") from exc
    if not isinstance(parsed, dict):
        raise InvalidArgument(f"{field} must be a JSON object")
    return json.dumps(parsed, ensure_ascii=False, separators=(",", ":"))


def compile_pattern(pattern: str) -> re2._Regexp:
    """Compile an RE2 pattern; INVALID_ARGUMENT naming the pattern when it does not parse."""
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else ""
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        raise InvalidArgument(f"invalid pattern: {reason}") from exc


def grep_text(text: str, regex: re2._Regexp, context_chars: int) -> list[d.GrepMatch]:
    """Every non-overlapping match of ``regex`` (RE2, linear time) in order, with context.

    Offsets are character offsets into ``text`` (the re2 module maps UTF-8 byte offsets back to
    str indices); an empty match advances by one character, so the scan always terminates.
    """
    c = max(0, context_chars)
    return [
        d.GrepMatch(content=text[max(0, m.start() - c) : m.end() + c], start_char=m.start(), end_char=m.end())
        for m in regex.finditer(text)
    ]


def read_text(text: str, offset: int, max_length: int | None) -> d.ReadResult:
    """``text[offset:offset+max_length]``; ``max_length`` None reads to the end."""
    if offset < 0:
        raise InvalidArgument("offset must not be negative")
    if max_length is not None and max_length < 0:
        raise InvalidArgument("max_length must not be negative")
    end = offset + max_length if max_length is not None else len(text)
    return d.ReadResult(content=text[offset:end], total_chars=len(text))


class FilesService:
    """Use cases over a ``Catalog``."""

    def __init__(
        self, catalog: Catalog, *, default_lease_seconds: float = DEFAULT_LEASE_SECONDS, max_job_attempts: int = 5
    ) -> None:
        self._max_attempts = max_job_attempts
        self.catalog = catalog
        self._default_lease = default_lease_seconds

    # -- projects and keys

    async def authenticate(self, api_key: str) -> d.Project:
        """The project an API key belongs to; UNAUTHENTICATED for an empty or unknown key."""
        if not api_key:
            raise Unauthenticated("missing api key")
        # Looked up by its sha256: the key itself is never compared (nor stored).
        project = await self.catalog.project_for_key_hash(hash_key(api_key))
        if project is None:
            raise Unauthenticated("invalid api key")
        return project

    async def ensure_project(self, name: str) -> d.Project:
        if not name:
            raise InvalidArgument("name is required")
        return await self.catalog.ensure_project(name)

    async def get_project(self, project_id: str) -> d.Project:
        return await self.catalog.get_project(project_id)

    async def list_projects(self, name: str) -> list[d.Project]:
        return await self.catalog.list_projects(name)

    async def create_api_key(self, project_id: str, api_key: str) -> str:
        """Register ``api_key`` (or a random one) for the project; the key is returned only here."""
        key = api_key or secrets.token_urlsafe(32)
        await self.catalog.add_api_key(project_id, hash_key(key))
        return key

    # -- directories and files

    async def create_directory(self, project_id: str, name: str, description: str, type: str) -> d.Directory:
        if not name:
            raise InvalidArgument("name is required")
        type = type or "user"
        if type not in ("user", "ephemeral"):
            raise InvalidArgument("type must be 'user' or 'ephemeral'")
        return await self.catalog.create_directory(project_id, name, description, type)

    async def get_directory(self, project_id: str, directory_id: str) -> d.Directory:
        return await self.catalog.get_directory(project_id, directory_id)

    async def list_directories(self, project_id: str) -> list[d.Directory]:
        return await self.catalog.list_directories(project_id)

    async def upload_file(
        self,
        project_id: str,
        directory_id: str,
        *,
        display_name: str,
        content: bytes,
        content_type: str = "",
        unique_id: str = "",
        external_file_id: str = "",
        metadata_json: str = "",
    ) -> d.DirectoryFile:
        if not display_name:
            raise InvalidArgument("display_name is required")
        spec = d.UploadSpec(
            display_name=display_name,
            content=content,
            content_type=content_type or "application/octet-stream",
            unique_id=unique_id or display_name,
            external_file_id=external_file_id,
            metadata_json=json_object(metadata_json, "metadata"),
        )
        return await self.catalog.upload_file(project_id, directory_id, spec)

    async def list_directory_files(
        self,
        project_id: str,
        directory_id: str,
        flt: d.FileFilter | None = None,
        *,
        page_size_: int = 0,
        page_token: str = "",
    ) -> d.ResultPage[d.DirectoryFile]:
        limit = page_size(page_size_)
        return await self.catalog.list_directory_files(
            project_id, directory_id, flt or d.FileFilter(), limit, decode_cursor(page_token)
        )

    async def delete_directory_file(self, project_id: str, directory_id: str, file_id: str) -> None:
        await self.catalog.delete_directory_file(project_id, directory_id, file_id)

    # -- indexes and syncs

    async def create_index(
        self, project_id: str, *, name: str, description: str, source_directory_id: str, metadata_json: str = ""
    ) -> d.Index:
        if not source_directory_id:
            raise InvalidArgument("source_directory_id is required")
        return await self.catalog.create_index(
            project_id, name, description, source_directory_id, json_object(metadata_json, "metadata")
        )

    async def get_index(self, project_id: str, index_id: str) -> d.Index:
        return await self.catalog.get_index(project_id, index_id)

    async def list_indexes(
        self, project_id: str, *, source_directory_id: str = "", page_size_: int = 0, page_token: str = ""
    ) -> d.ResultPage[d.Index]:
        limit = page_size(page_size_)
        return await self.catalog.list_indexes(project_id, source_directory_id, limit, decode_cursor(page_token))

    async def delete_index(self, project_id: str, index_id: str) -> d.Index:
        return await self.catalog.delete_index(project_id, index_id)

    async def start_sync(self, project_id: str, index_id: str) -> d.Job:
        return await self.catalog.start_sync(project_id, index_id)

    async def cancel_sync(self, project_id: str, index_id: str) -> d.Job:
        return await self.catalog.cancel_sync(project_id, index_id)

    async def get_job(self, job_id: str) -> d.Job:
        return await self.catalog.get_job(job_id)

    # -- worker protocol

    def _lease(self, lease_seconds: float) -> float:
        return lease_seconds if lease_seconds > 0 else self._default_lease

    async def claim_job(self, worker_id: str, lease_seconds: float) -> d.Job | None:
        if not worker_id:
            raise InvalidArgument("worker_id is required")
        return await self.catalog.claim_job(worker_id, self._lease(lease_seconds), self._max_attempts)

    async def renew_lease(self, job_id: str, worker_id: str, lease_seconds: float) -> d.Job:
        return await self.catalog.renew_lease(job_id, worker_id, self._lease(lease_seconds))

    async def list_job_items(self, job_id: str) -> list[d.JobItem]:
        return await self.catalog.list_job_items(job_id)

    async def get_source_file(self, source_file_id: str) -> tuple[d.DirectoryFile, bytes]:
        return await self.catalog.get_source_file(source_file_id)

    async def prepare_parsed_file(self, index_id: str, source_file_id: str) -> tuple[str, int]:
        return await self.catalog.prepare_parsed_file(index_id, source_file_id)

    async def complete_job_item(
        self,
        job_id: str,
        worker_id: str,
        source_file_id: str,
        *,
        text: str = "",
        pages: Sequence[d.Page] = (),
        chunk_count: int = 0,
        error: str = "",
    ) -> None:
        if chunk_count < 0:
            raise InvalidArgument("chunk_count must not be negative")
        await self.catalog.complete_job_item(job_id, worker_id, source_file_id, text, pages, chunk_count, error)

    async def finish_job(self, job_id: str, worker_id: str, status: str, error: str = "") -> d.Job:
        if status not in JOB_RESULT_STATUSES:
            raise InvalidArgument("status must be 'succeeded' or 'failed'")
        return await self.catalog.finish_job(job_id, worker_id, status, error)

    # -- retrieval over parsed files

    async def find_files(
        self,
        project_id: str,
        index_id: str,
        *,
        file_name: str = "",
        file_name_contains: str = "",
        page_size_: int = 0,
        page_token: str = "",
    ) -> d.ResultPage[d.FoundFile]:
        limit = page_size(page_size_)
        return await self.catalog.find_files(
            project_id, index_id, file_name, file_name_contains, limit, decode_cursor(page_token)
        )

    async def grep_file(
        self,
        project_id: str,
        index_id: str,
        file_id: str,
        pattern: str,
        *,
        context_chars: int = 0,
        page_size_: int = 0,
        page_token: str = "",
    ) -> d.ResultPage[d.GrepMatch]:
        """One page of the matches of ``pattern`` in a parsed file; total_size counts them all."""
        if not pattern:
            raise InvalidArgument("pattern is required")
        if context_chars < 0:
            raise InvalidArgument("context_chars must not be negative")
        limit = page_size(page_size_)
        start = decode_offset(page_token)
        regex = compile_pattern(pattern)
        parsed = await self.catalog.get_parsed_text(project_id, index_id, file_id)
        matches = await asyncio.to_thread(grep_text, parsed.text, regex, context_chars)
        items = matches[start : start + limit]
        more = start + limit < len(matches)
        return d.ResultPage(
            items=items, next_page_token=encode_offset(start + limit) if more else "", total_size=len(matches)
        )

    async def read_file(
        self, project_id: str, index_id: str, file_id: str, *, offset: int = 0, max_length: int | None = None
    ) -> d.ReadResult:
        """``text[offset:offset+max_length]`` of a parsed file (``max_length`` None: to the end)."""
        if offset < 0:
            raise InvalidArgument("offset must not be negative")
        parsed = await self.catalog.get_parsed_text(project_id, index_id, file_id)
        return read_text(parsed.text, offset, max_length)
