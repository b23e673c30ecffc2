"""The files service's use cases, in domain types: validation, key hashing, grep and read."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

import re2

from services.common.errors import InvalidArgument, Unauthenticated
from services.files import domain as d
from services.files.paging import decode_cursor, decode_offset, encode_offset, page_size
from services.files.ports import Catalog

DEFAULT_LEASE_SECONDS = 60.0
JOB_RESULT_STATUSES = ("succeeded", "failed")
# Types a caller may create: CreateDirectory makes user-visible ones; EnsureDirectory also the
# hidden kinds ("files": uploads made outside any directory, "pipeline": a pipeline's source).
# "index" (an index's output directory) is only ever made by the catalog itself.
USER_DIRECTORY_TYPES = ("user", "ephemeral")
ENSURED_DIRECTORY_TYPES = (*USER_DIRECTORY_TYPES, "files", "pipeline")
# A listing that carries file bytes holds at most this many files per page.
MAX_CONTENT_PAGE_SIZE = 100
MAX_PAGE_IMAGE_FILES = 1000
# A key's last use is recorded at this resolution (one write per key per minute at most).
KEY_USE_RESOLUTION = timedelta(minutes=1)
MAX_KEY_NAME = 200
MAX_PROJECT_NAME = 200

log = logging.getLogger(__name__)


def _project_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise InvalidArgument("name is required")
    if len(name) > MAX_PROJECT_NAME:
        raise InvalidArgument(f"name: at most {MAX_PROJECT_NAME} characters")
    return name


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


def file_ref(directory_file_id: str, unique_id: str) -> d.FileRef:
    """The file named by exactly one of its id and its unique_id."""
    if bool(directory_file_id) == bool(unique_id):
        raise InvalidArgument("exactly one of directory_file_id and unique_id is required")
    return d.FileRef(id=directory_file_id, unique_id=unique_id)


def check_page_images(images: Sequence[d.PageImage]) -> None:
    """Each image has bytes, a content type, a page_index >= 0 and sizes >= 0; no page twice."""
    seen: set[int] = set()
    for n, image in enumerate(images):
        if image.page_index < 0:
            raise InvalidArgument(f"images[{n}].page_index must not be negative")
        if image.page_index in seen:
            raise InvalidArgument(f"images[{n}].page_index {image.page_index} is given twice")
        seen.add(image.page_index)
        if not image.content:
            raise InvalidArgument(f"images[{n}].content is required")
        if not image.content_type:
            raise InvalidArgument(f"images[{n}].content_type is required")
        if image.width < 0 or image.height < 0:
            raise InvalidArgument(f"images[{n}].width and height must not be negative")


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

    async def authenticate(self, api_key: str) -> d.Identity:
        """The project and key of an API key; UNAUTHENTICATED for an empty, unknown, revoked or
        expired key. A use is recorded at most once a minute per key."""
        if not api_key:
            raise Unauthenticated("missing api key")
        # Looked up by its sha256: the key itself is never compared (nor stored).
        identity = await self.catalog.identity_for_key_hash(hash_key(api_key))
        if identity is None:
            raise Unauthenticated("invalid api key")
        now = self.catalog.now()
        if identity.key.revoked_at is not None:
            raise Unauthenticated("api key revoked")
        if identity.key.expires_at is not None and identity.key.expires_at <= now:
            raise Unauthenticated("api key expired")
        try:
            await self.catalog.mark_key_used(identity.key.id, now, KEY_USE_RESOLUTION)
        except Exception as exc:  # recording a use never fails the request it belongs to
            log.warning("could not record the use of key %s: %s", identity.key.id, type(exc).__name__)
        return identity

    async def ensure_project(self, name: str) -> d.Project:
        if not name:
            raise InvalidArgument("name is required")
        return await self.catalog.ensure_project(name)

    async def get_project(self, project_id: str) -> d.Project:
        return await self.catalog.get_project(project_id)

    async def list_projects(self, name: str) -> list[d.Project]:
        return await self.catalog.list_projects(name)

    async def create_api_key(self, project_id: str, api_key: str = "", *, name: str = "", is_admin: bool = False,
                             expires_at: datetime | None = None) -> tuple[str, d.ApiKey]:
        """Register ``api_key`` (or a random one) for the project; the secret is returned only here."""
        if expires_at is not None and expires_at <= self.catalog.now():
            raise InvalidArgument("expires_at must be in the future")
        if len(name) > MAX_KEY_NAME:
            raise InvalidArgument(f"name: at most {MAX_KEY_NAME} characters")
        secret = api_key or "qk-" + secrets.token_urlsafe(32)
        key = await self.catalog.add_api_key(project_id, hash_key(secret), name=name, is_admin=is_admin,
                                             expires_at=expires_at)
        return secret, key

    async def list_api_keys(self, project_id: str) -> list[d.ApiKey]:
        return await self.catalog.list_api_keys(project_id)

    async def revoke_api_key(self, key_id: str) -> d.ApiKey:
        if not key_id:
            raise InvalidArgument("key_id is required")
        return await self.catalog.revoke_api_key(key_id)

    async def create_project(self, name: str) -> d.Project:
        return await self.catalog.create_project(_project_name(name))

    async def rename_project(self, project_id: str, name: str) -> d.Project:
        return await self.catalog.rename_project(project_id, _project_name(name))

    async def delete_project(self, project_id: str) -> list[str]:
        """Delete a project and what it owns; the ids of its deleted indexes (engine drops recorded)."""
        return await self.catalog.delete_project(project_id)

    # -- directories and files

    async def create_directory(self, project_id: str, name: str, description: str, type: str) -> d.Directory:
        if not name:
            raise InvalidArgument("name is required")
        type = type or "user"
        if type not in USER_DIRECTORY_TYPES:
            raise InvalidArgument("type must be 'user' or 'ephemeral'")
        return await self.catalog.create_directory(project_id, name, description, type)

    async def ensure_directory(self, project_id: str, name: str, description: str, type: str) -> d.Directory:
        """Get or create the project's directory with this name and type."""
        if not name:
            raise InvalidArgument("name is required")
        type = type or "user"
        if type not in ENSURED_DIRECTORY_TYPES:
            raise InvalidArgument(f"type must be one of {', '.join(ENSURED_DIRECTORY_TYPES)}")
        return await self.catalog.ensure_directory(project_id, name, description, type)

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

    async def add_directory_file(
        self,
        project_id: str,
        directory_id: str,
        source_directory_file_id: str,
        *,
        display_name: str = "",
        unique_id: str = "",
        metadata_json: str = "",
    ) -> d.DirectoryFile:
        """Put an existing upload of the project into a directory without copying its bytes."""
        if not source_directory_file_id:
            raise InvalidArgument("source_directory_file_id is required")
        spec = d.AddSpec(
            source_directory_file_id=source_directory_file_id,
            display_name=display_name,
            unique_id=unique_id,
            metadata_json=json_object(metadata_json, "metadata"),
        )
        return await self.catalog.add_directory_file(project_id, directory_id, spec)

    async def get_directory_file(
        self,
        project_id: str,
        directory_id: str,
        *,
        directory_file_id: str = "",
        unique_id: str = "",
        include_content: bool = False,
    ) -> d.DirectoryFile:
        ref = file_ref(directory_file_id, unique_id)
        return await self.catalog.get_directory_file(project_id, directory_id, ref, include_content)

    async def list_directory_files(
        self,
        project_id: str,
        directory_id: str,
        flt: d.FileFilter | None = None,
        *,
        page_size_: int = 0,
        page_token: str = "",
        include_content: bool = False,
    ) -> d.ResultPage[d.DirectoryFile]:
        """One page of a directory's files; with their bytes, at most ``MAX_CONTENT_PAGE_SIZE`` a page
        (and fewer when their bytes pass the catalog's per-page budget)."""
        limit = page_size(page_size_)
        if include_content:
            limit = min(limit, MAX_CONTENT_PAGE_SIZE)
        return await self.catalog.list_directory_files(
            project_id, directory_id, flt or d.FileFilter(), limit, decode_cursor(page_token), include_content
        )

    async def delete_directory_file(
        self, project_id: str, directory_id: str, *, directory_file_id: str = "", unique_id: str = ""
    ) -> None:
        ref = file_ref(directory_file_id, unique_id)
        await self.catalog.delete_directory_file(project_id, directory_id, ref)

    # -- indexes and syncs

    async def create_index(
        self,
        project_id: str,
        *,
        name: str,
        description: str,
        source_directory_id: str,
        metadata_json: str = "",
        config_json: str = "",
    ) -> d.Index:
        if not source_directory_id:
            raise InvalidArgument("source_directory_id is required")
        return await self.catalog.create_index(
            project_id,
            name,
            description,
            source_directory_id,
            json_object(metadata_json, "metadata"),
            json_object(config_json, "config_json"),
        )

    async def upsert_pipeline(self, project_id: str, name: str, config_json: str = "") -> d.Index:
        """Create the pipeline called ``name`` or replace its config."""
        if not name:
            raise InvalidArgument("name is required")
        return await self.catalog.upsert_pipeline(project_id, name, json_object(config_json, "config_json"))

    async def get_index(self, project_id: str, index_id: str) -> d.Index:
        return await self.catalog.get_index(project_id, index_id)

    async def list_indexes(
        self,
        project_id: str,
        *,
        source_directory_id: str = "",
        name: str = "",
        kind: str = "",
        page_size_: int = 0,
        page_token: str = "",
    ) -> d.ResultPage[d.Index]:
        if kind and kind not in d.INDEX_KINDS:
            raise InvalidArgument("kind must be 'index' or 'pipeline'")
        limit = page_size(page_size_)
        return await self.catalog.list_indexes(
            project_id, source_directory_id, limit, decode_cursor(page_token), name, kind
        )

    async def delete_index(self, project_id: str, index_id: str) -> d.Index:
        return await self.catalog.delete_index(project_id, index_id)

    async def start_sync(self, project_id: str, index_id: str) -> d.Job:
        return await self.catalog.start_sync(project_id, index_id)

    async def cancel_sync(self, project_id: str, index_id: str) -> d.Job:
        return await self.catalog.cancel_sync(project_id, index_id)

    async def get_job(self, job_id: str) -> d.Job:
        return await self.catalog.get_job(job_id)

    async def get_file_status(self, project_id: str, index_id: str, unique_id: str) -> d.FileStatus:
        if not unique_id:
            raise InvalidArgument("unique_id is required")
        return await self.catalog.get_file_status(project_id, index_id, unique_id)

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

    async def prepare_parsed_file(self, index_id: str, source_file_id: str) -> d.PreparedFile:
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
        index_config_json: str = "",
    ) -> None:
        if chunk_count < 0:
            raise InvalidArgument("chunk_count must not be negative")
        await self.catalog.complete_job_item(job_id, worker_id, source_file_id, text, pages, chunk_count, error,
                                             index_config_json)

    async def finish_job(self, job_id: str, worker_id: str, status: str, error: str = "") -> d.Job:
        if status not in JOB_RESULT_STATUSES:
            raise InvalidArgument("status must be 'succeeded' or 'failed'")
        return await self.catalog.finish_job(job_id, worker_id, status, error)

    async def put_page_images(
        self,
        job_id: str,
        worker_id: str,
        parsed_file_id: str,
        images: Sequence[d.PageImage],
        *,
        replace: bool = False,
    ) -> None:
        if not parsed_file_id:
            raise InvalidArgument("parsed_file_id is required")
        check_page_images(images)
        await self.catalog.put_page_images(job_id, worker_id, parsed_file_id, images, replace)

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

    # -- page screenshots

    async def get_page_image(self, project_id: str, file_id: str, page_index: int) -> d.PageImage:
        if page_index < 0:
            raise InvalidArgument("page_index must not be negative")
        return await self.catalog.get_page_image(project_id, file_id, page_index)

    async def start_rebuild(self, project_id: str, index_id: str, engines: Sequence[str]) -> d.Job:
        """Re-index the parsed texts into ``engines`` (both when none are named)."""
        chosen = sorted(set(engines or d.ENGINES))
        unknown = [e for e in chosen if e not in d.ENGINES]
        if unknown:
            raise InvalidArgument(f"engines: unknown engine(s) {unknown}; known: {list(d.ENGINES)}")
        return await self.catalog.start_rebuild(project_id, index_id, chosen)

    async def get_parsed_file(self, job_id: str, worker_id: str, source_file_id: str) -> d.ParsedFileForRebuild:
        return await self.catalog.get_parsed_file(job_id, worker_id, source_file_id)

    async def backlog(self) -> d.Backlog:
        return await self.catalog.backlog()

    async def list_engine_drops(self, limit: int, min_age_seconds: float) -> list[d.EngineDrop]:
        if limit < 0 or min_age_seconds < 0:
            raise InvalidArgument("limit and min_age_seconds must not be negative")
        return await self.catalog.list_engine_drops(min(limit or 100, 1000), min_age_seconds)

    async def complete_engine_drop(self, index_id: str, error: str | None) -> None:
        if not index_id:
            raise InvalidArgument("index_id is required")
        await self.catalog.complete_engine_drop(index_id, error)

    async def list_page_images(self, project_id: str, file_ids: Sequence[str]) -> list[d.PageImage]:
        if len(file_ids) > MAX_PAGE_IMAGE_FILES:
            raise InvalidArgument(f"file_ids: at most {MAX_PAGE_IMAGE_FILES} ids per call")
        return await self.catalog.list_page_images(project_id, file_ids)
