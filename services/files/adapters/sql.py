"""The catalog over SQLAlchemy 2.0 Core: one schema and one async store for SQLite and PostgreSQL.

SQLite (``sqlite+aiosqlite``) runs in WAL mode; write transactions start with ``BEGIN IMMEDIATE``
so a read never has to be upgraded to a write lock mid-transaction (which SQLite answers with an
immediate SQLITE_BUSY instead of waiting). PostgreSQL (``postgresql+psycopg``) runs at READ
COMMITTED; races are settled by guarded UPDATEs and unique constraints, never by a prior read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    and_,
    delete,
    event,
    false,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import FromClause, Select
from sqlalchemy.sql.elements import ColumnElement

from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.common.telemetry import instrument_sqlalchemy
from services.files import domain as d
from services.files import migrations
from services.files.paging import encode_cursor
from services.files.ports import Cursor

Clock = Callable[[], datetime]
_T = TypeVar("_T")

ORGANIZATION_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "quarry:organization:default"))


def utcnow() -> datetime:
    """The wall clock in UTC (the default clock)."""
    return datetime.now(UTC)


def _name_type() -> String:
    # Byte-order collation on PostgreSQL so ordering (and keyset pagination) matches SQLite's BINARY.
    return String(1024).with_variant(String(1024, collation="C"), "postgresql")  # type: ignore[return-value]


class _UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp on both databases (SQLite hands DateTime back naive; all stored is UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


_ID = String(64)
_TS = _UtcDateTime()

metadata = MetaData()

projects = Table(
    "projects",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("name", _name_type(), nullable=False, unique=True),
    Column("organization_id", _ID, nullable=False),
    Column("is_default", Boolean, nullable=False),
    Column("created_at", _TS, nullable=False),
    Column("updated_at", _TS, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_hash", String(64), primary_key=True),
    Column("project_id", _ID, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", _TS, nullable=False),
    # 0004: keys an administrator can list and revoke by id (the secret is never stored).
    Column("id", _ID, nullable=False, index=True, unique=True),
    Column("name", Text, nullable=False, server_default=text("''")),
    Column("is_admin", Boolean, nullable=False, server_default=false()),
    Column("expires_at", _TS, nullable=True),
    Column("revoked_at", _TS, nullable=True),
    Column("last_used_at", _TS, nullable=True),
)

directories = Table(
    "directories",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("project_id", _ID, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", _name_type(), nullable=False),
    Column("description", Text, nullable=False),
    Column("type", String(16), nullable=False),
    Column("created_at", _TS, nullable=False),
    Column("updated_at", _TS, nullable=False),
)

blobs = Table(
    "blobs",
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 of the content
    Column("content", LargeBinary, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
)

directory_files = Table(
    "directory_files",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("directory_id", _ID, ForeignKey("directories.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", _ID, nullable=False),
    Column("display_name", _name_type(), nullable=False),
    # casefold()ed display_name: case-insensitive search that behaves the same on both databases.
    Column("name_folded", Text, nullable=False),
    Column("unique_id", _name_type(), nullable=False),
    Column("external_file_id", Text, nullable=False),
    Column("blob_id", String(64), ForeignKey("blobs.id"), nullable=True, index=True),
    Column("metadata_json", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("content_type", Text, nullable=False),
    # Set on parsed files (rows of an index's output directory): the uploaded file they come from.
    Column("source_file_id", _ID, nullable=True),
    Column("created_at", _TS, nullable=False),
    Column("updated_at", _TS, nullable=False),
    UniqueConstraint("directory_id", "unique_id", name="uq_directory_files_unique_id"),
    UniqueConstraint("directory_id", "source_file_id", name="uq_directory_files_source"),
    Index("ix_directory_files_name", "directory_id", "display_name", "id"),
)

indexes = Table(
    "indexes",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("project_id", _ID, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", _name_type(), nullable=False),
    Column("description", Text, nullable=False),
    Column("source_directory_id", _ID, nullable=False, index=True),
    Column("output_directory_id", _ID, nullable=False),
    Column("generation", BigInteger, nullable=False),
    Column("metadata_json", Text, nullable=False),
    Column("created_at", _TS, nullable=False),
    Column("updated_at", _TS, nullable=False),
    Column("last_synced_at", _TS, nullable=True),
    # "index" (over a user's directory) or "pipeline" (owns its source directory).
    Column("kind", String(16), nullable=False, server_default="index"),
    Column("config_json", Text, nullable=False, server_default="{}"),
    # Set by a StartSync that found a job running; the job's end clears it and plans the next job.
    Column("resync_requested", Boolean, nullable=False, server_default=false()),
    Index("ix_indexes_project_created", "project_id", "created_at", "id"),
)
# Pipelines are upserted by name: at most one per (project, name), enforced by the database.
Index(
    "uq_indexes_pipeline_name",
    indexes.c.project_id,
    indexes.c.name,
    unique=True,
    sqlite_where=indexes.c.kind == "pipeline",
    postgresql_where=indexes.c.kind == "pipeline",
)

_ACTIVE = list(d.ACTIVE_JOB_STATUSES)

jobs = Table(
    "jobs",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("index_id", _ID, ForeignKey("indexes.id", ondelete="CASCADE"), nullable=False),
    # Per-index sequence: orders an index's jobs even when timestamps tie.
    Column("seq", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("worker_id", Text, nullable=False),
    Column("lease_until", _TS, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("total_items", Integer, nullable=False),
    Column("done_items", Integer, nullable=False),
    Column("error", Text, nullable=False),
    Column("created_at", _TS, nullable=False),
    Column("started_at", _TS, nullable=True),
    Column("finished_at", _TS, nullable=True),
    Column("kind", String(16), nullable=False, server_default="sync"),
    Column("engines", Text, nullable=False, server_default=text("''")),
    UniqueConstraint("index_id", "seq", name="uq_jobs_index_seq"),
    Index("ix_jobs_claim", "status", "created_at", "id"),
)
# At most one pending/running job per index, enforced by the database.
Index(
    "uq_jobs_one_active",
    jobs.c.index_id,
    unique=True,
    sqlite_where=jobs.c.status.in_(_ACTIVE),
    postgresql_where=jobs.c.status.in_(_ACTIVE),
)

job_items = Table(
    "job_items",
    metadata,
    Column("job_id", _ID, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("source_file_id", _ID, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("action", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("parsed_file_id", _ID, nullable=False),
    Column("chunk_count", Integer, nullable=False),
    Column("error", Text, nullable=False),
    # The source file's version when the item was planned (0: a delete item, or planned before this column).
    Column("source_version", Integer, nullable=False, server_default="0"),
)

parsed_texts = Table(
    "parsed_texts",
    metadata,
    Column(
        "parsed_file_id", _ID, ForeignKey("directory_files.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("index_id", _ID, ForeignKey("indexes.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("source_file_id", _ID, nullable=False),
    Column("source_version", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("pages_json", Text, nullable=False),
    Column("chunk_count", Integer, nullable=False),
    Column("updated_at", _TS, nullable=False),
    # 0005: the chunking its chunks were made with (``chunking_key`` of the index config; "": the
    # worker's defaults). A sync plans the file again when the index's chunking differs.
    Column("chunking", Text, nullable=False, server_default=text("''")),
)

page_images = Table(
    "page_images",
    metadata,
    Column(
        "parsed_file_id", _ID, ForeignKey("directory_files.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("page_index", Integer, primary_key=True, autoincrement=False),
    Column("content", LargeBinary, nullable=False),
    Column("content_type", Text, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
)

# A deleted index whose chunks the engines still hold (no foreign keys: it outlives its index and
# its project, whose deletion is what records it).
engine_drops = Table(
    "engine_drops",
    metadata,
    Column("index_id", _ID, primary_key=True),
    Column("project_id", _ID, nullable=False),
    Column("requested_at", _TS, nullable=False, index=True),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=False),
)

# A listing with content stops adding files once their bytes pass this (at least one file per
# page), so the reply stays well under the 256 MiB gRPC message limit.
CONTENT_PAGE_BYTES = 64 * 1024 * 1024


def _new_id() -> str:
    return str(uuid.uuid4())


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _from_row(cls: type[_T], row: Row[Any], **computed: Any) -> _T:
    """The domain dataclass ``cls`` from the row's columns of the same names; ``computed`` gives the rest."""
    columns = row._mapping
    return cls(**{name: columns[name] for name in _field_names(cls) if name not in computed}, **computed)


def _file(row: Row[Any], content: bytes = b"") -> d.DirectoryFile:
    # The API's file_id is the content hash (blob id); parsed files have none.
    return _from_row(d.DirectoryFile, row, file_id=row.blob_id or "", content=content)


def _to_index(row: Row[Any], last_job: d.Job | None, failed_items: int,
              failures: tuple[d.JobFailure, ...] = ()) -> d.Index:
    active = last_job is not None and last_job.status in d.ACTIVE_JOB_STATUSES
    return _from_row(
        d.Index, row, sync_in_progress=active, last_job=last_job, last_job_failed_items=failed_items,
        last_job_failures=failures,
    )


def _cursor(row: Row[Any], order: tuple[ColumnElement[Any], ColumnElement[Any]]) -> str:
    """The page token that resumes after ``row`` in ``order``."""
    columns = row._mapping
    key = columns[order[0]]
    return encode_cursor((key.isoformat() if isinstance(key, datetime) else key, columns[order[1]]))


async def _keyset_page(
    conn: AsyncConnection,
    columns: Sequence[Any],
    source: FromClause,
    conds: Sequence[ColumnElement[bool]],
    order: tuple[ColumnElement[Any], ColumnElement[Any]],
    after: tuple[Any, str] | None,
    limit: int,
) -> tuple[Sequence[Row[Any]], int, str]:
    """One page of ``columns`` from ``source`` ordered by ``order`` (sort key, unique id) after the
    cursor ``after``: the rows, the count of every matching row, and the next page token ("" at the end).
    """
    sort, tie = order
    total = (await conn.execute(select(func.count()).select_from(source).where(*conds))).scalar_one()
    query = select(*columns).select_from(source).where(*conds)
    if after is not None:
        query = query.where(or_(sort > after[0], and_(sort == after[0], tie > after[1])))
    rows = (await conn.execute(query.order_by(sort, tie).limit(limit + 1))).all()
    if len(rows) <= limit:
        return rows, total, ""
    return rows[:limit], total, _cursor(rows[limit - 1], order)


async def _retry_on_conflict(attempt: Callable[[], Awaitable[_T]], tries: int = 3) -> _T:
    """Run ``attempt`` (one transaction) again when a concurrent writer won a unique constraint."""
    for _ in range(tries - 1):
        try:
            return await attempt()
        except IntegrityError:
            pass
    return await attempt()


def _clean_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; U+FFFD keeps every character offset unchanged.
    return value.replace("\x00", "\ufffd")


class SqlCatalog:
    """The ``Catalog`` port over SQLite or PostgreSQL (chosen by the URL)."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utcnow, schema: str | None = None) -> None:
        self._engine = engine
        self._writer = engine.execution_options(quarry_write=True)
        instrument_sqlalchemy(engine)
        self._clock = clock
        self._schema = schema
        self._is_sqlite = engine.dialect.name == "sqlite"
        # INSERT .. ON CONFLICT DO NOTHING of this dialect (content-addressed blobs).
        self._upsert_insert = sqlite.insert if self._is_sqlite else postgresql.insert

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        clock: Clock = utcnow,
        schema: str | None = None,
        pool_size: int = 10,
        max_overflow: int = 10,
        pool_timeout: float = 10.0,
        statement_timeout_ms: int = 30_000,
        connect_timeout_s: int = 10,
        sqlite_busy_timeout_s: float = 30.0,
    ) -> SqlCatalog:
        """Build the engine for ``url`` (``sqlite+aiosqlite://...`` or ``postgresql+psycopg://...``)."""
        if url.startswith("sqlite"):
            # sqlite3's timeout is the busy timeout: how long a statement waits for another writer's lock.
            engine = create_async_engine(url, connect_args={"timeout": sqlite_busy_timeout_s})
            _install_sqlite_hooks(engine, sqlite_busy_timeout_s)
            return cls(engine, clock=clock)
        options = f"-c statement_timeout={int(statement_timeout_ms)}"
        if schema:
            options += f" -c search_path={schema}"
        engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            pool_pre_ping=True,
            connect_args={"options": options, "connect_timeout": connect_timeout_s},
        )
        return cls(engine, clock=clock, schema=schema)

    # -- lifecycle

    async def start(self) -> None:
        """Bring the schema to the head revision: an empty database is created at head (and stamped),
        one made before migrations existed (tables, no version table) is taken as revision 0001,
        anything else is upgraded. Safe when several processes start at once (see
        ``migration_connection``)."""
        async with self.migration_connection() as conn:
            await conn.run_sync(_upgrade_to_head)

    @asynccontextmanager
    async def migration_connection(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction that holds the migration lock, with the schema namespace in place.

        PostgreSQL: a transaction-level advisory lock keyed on the schema, taken first, so a second
        starter waits and then reads the version the first one committed (DDL is transactional: a
        failed upgrade leaves nothing behind). SQLite: BEGIN IMMEDIATE takes the database's write
        lock up front, which serializes starters the same way.
        """
        async with self._writer.begin() as conn:
            if not self._is_sqlite:
                key = int.from_bytes(
                    hashlib.sha256(f"quarry.files.migrate:{self._schema or ''}".encode()).digest()[:8],
                    "big",
                    signed=True,
                )
                await conn.execute(select(func.pg_advisory_xact_lock(key)))
                if self._schema:
                    await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"'))
            yield conn

    async def ready(self) -> bool:
        """True when a trivial query succeeds."""
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True

    async def close(self) -> None:
        """Dispose the connection pool."""
        await self._engine.dispose()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self._writer.begin() as conn:
            yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.connect() as conn:
            yield conn

    # -- projects and keys

    def now(self) -> datetime:
        """The catalog's clock."""
        return self._clock()

    async def identity_for_key_hash(self, key_hash: str) -> d.Identity | None:
        """The project and the key a key hash belongs to (revoked or expired ones too), or None."""
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(projects, *[c.label(f"key_{c.name}") for c in api_keys.c])
                    .join(api_keys, api_keys.c.project_id == projects.c.id)
                    .where(api_keys.c.key_hash == key_hash)
                )
            ).first()
        if row is None:
            return None
        key = d.ApiKey(**{f: row._mapping[f"key_{f}"] for f in _field_names(d.ApiKey)})
        return d.Identity(_from_row(d.Project, row), key)

    async def mark_key_used(self, key_id: str, at: datetime, min_interval: timedelta) -> None:
        """Record a use of the key, at most once per ``min_interval`` (a write per request would not do)."""
        async with self._write() as conn:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id,
                       or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < at - min_interval))
                .values(last_used_at=at)
            )

    async def list_api_keys(self, project_id: str) -> list[d.ApiKey]:
        """The keys of a project ("" : of every project), oldest first."""
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if project_id:
            query = query.where(api_keys.c.project_id == project_id)
        async with self._read() as conn:
            if project_id:
                await self._project_row(conn, project_id)
            return [_from_row(d.ApiKey, r) for r in (await conn.execute(query)).all()]

    async def revoke_api_key(self, key_id: str) -> d.ApiKey:
        """Mark the key revoked (idempotent: the first revocation time stays)."""
        async with self._write() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
            if row is None:
                raise NotFound(f"api key {key_id} not found")
            if row.revoked_at is None:
                await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=self._clock()))
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).one()
        return _from_row(d.ApiKey, row)

    async def create_project(self, name: str) -> d.Project:
        """A new project; ALREADY_EXISTS when the name is taken."""
        now = self._clock()
        project_id = _new_id()
        try:
            async with self._write() as conn:
                await conn.execute(insert(projects).values(
                    id=project_id, name=name, organization_id=ORGANIZATION_ID, is_default=name == "Default",
                    created_at=now, updated_at=now))
        except IntegrityError as exc:
            raise AlreadyExists(f"a project named {name!r} exists") from exc
        return await self.get_project(project_id)

    async def rename_project(self, project_id: str, name: str) -> d.Project:
        try:
            async with self._write() as conn:
                await self._project_row(conn, project_id, lock=True)
                await conn.execute(update(projects).where(projects.c.id == project_id)
                                   .values(name=name, updated_at=self._clock()))
        except IntegrityError as exc:
            raise AlreadyExists(f"a project named {name!r} exists") from exc
        return await self.get_project(project_id)

    async def delete_project(self, project_id: str) -> list[str]:
        """Delete the project and everything it owns in one transaction: every index as
        ``delete_index`` does (an engine drop recorded for each), its directories and files, its
        keys. Returns the deleted indexes' ids (for the caller to drop from the engines now)."""
        async with self._write() as conn:
            project = await self._project_row(conn, project_id, lock=True)
            if project.is_default:
                raise FailedPrecondition("the default project cannot be deleted")
            index_ids = (await conn.execute(
                select(indexes.c.id).where(indexes.c.project_id == project_id).order_by(indexes.c.id))).scalars().all()
            for index_id in index_ids:
                await self._delete_index_in(conn, project_id, index_id)
            directory_ids = select(directories.c.id).where(directories.c.project_id == project_id)
            blob_ids = (await conn.execute(
                select(directory_files.c.blob_id).where(directory_files.c.directory_id.in_(directory_ids))
            )).scalars().all()
            parsed_ids = select(directory_files.c.id).where(directory_files.c.directory_id.in_(directory_ids))
            await self._delete_parsed_data(conn, parsed_ids)
            await conn.execute(delete(directory_files).where(directory_files.c.directory_id.in_(directory_ids)))
            await conn.execute(delete(directories).where(directories.c.project_id == project_id))
            await self._drop_blobs_if_unused(conn, blob_ids)
            await conn.execute(delete(api_keys).where(api_keys.c.project_id == project_id))
            await conn.execute(delete(projects).where(projects.c.id == project_id))
        return list(index_ids)

    async def ensure_project(self, name: str) -> d.Project:
        """Get the project called ``name``, creating it when missing (race-safe)."""
        for _ in range(3):
            async with self._read() as conn:
                row = (await conn.execute(select(projects).where(projects.c.name == name))).first()
            if row is not None:
                return _from_row(d.Project, row)
            now = self._clock()
            try:
                async with self._write() as conn:
                    await conn.execute(
                        insert(projects).values(
                            id=_new_id(),
                            name=name,
                            organization_id=ORGANIZATION_ID,
                            is_default=name == "Default",
                            created_at=now,
                            updated_at=now,
                        )
                    )
            except IntegrityError:
                continue  # created concurrently: read it on the next pass
        raise FailedPrecondition(f"could not create project {name!r}")

    async def get_project(self, project_id: str) -> d.Project:
        async with self._read() as conn:
            return await self._project_row(conn, project_id)

    async def _project_row(self, conn: AsyncConnection, project_id: str, *, lock: bool = False) -> d.Project:
        """The project; ``lock`` holds its row until commit (serializes the project's get-or-create writes)."""
        query = select(projects).where(projects.c.id == project_id)
        if lock:
            # FOR NO KEY UPDATE on PostgreSQL: concurrent inserts that reference the project (their
            # foreign-key checks take KEY SHARE) are not blocked. SQLite's BEGIN IMMEDIATE already
            # serializes writers, and SQLAlchemy renders no locking clause there.
            query = query.with_for_update(key_share=True)
        row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"project {project_id} not found")
        return _from_row(d.Project, row)

    async def list_projects(self, name: str) -> list[d.Project]:
        query = select(projects).order_by(projects.c.created_at, projects.c.id)
        if name:
            query = query.where(projects.c.name == name)
        async with self._read() as conn:
            return [_from_row(d.Project, r) for r in (await conn.execute(query)).all()]

    async def add_api_key(self, project_id: str, key_hash: str, *, name: str = "", is_admin: bool = False,
                          expires_at: datetime | None = None) -> d.ApiKey:
        """Map ``key_hash`` to the project; idempotent for the same project (the existing key is
        returned, admin rights added when asked for)."""
        try:
            async with self._write() as conn:
                await self._project_row(conn, project_id)
                row = (await conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash))).first()
                if row is not None and row.project_id != project_id:
                    raise AlreadyExists("api key already in use")
                if row is None:
                    await conn.execute(insert(api_keys).values(
                        key_hash=key_hash, project_id=project_id, created_at=self._clock(), id=_new_id(),
                        name=name, is_admin=is_admin, expires_at=expires_at))
                elif is_admin and not row.is_admin:
                    await conn.execute(update(api_keys).where(api_keys.c.key_hash == key_hash).values(is_admin=True))
                row = (await conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash))).one()
        except IntegrityError as exc:
            raise AlreadyExists("api key already in use") from exc
        return _from_row(d.ApiKey, row)

    # -- directories and files

    async def create_directory(self, project_id: str, name: str, description: str, type: str) -> d.Directory:
        async with self._write() as conn:
            await self._project_row(conn, project_id)
            return await self._insert_directory(conn, project_id, name, description, type)

    async def ensure_directory(self, project_id: str, name: str, description: str, type: str) -> d.Directory:
        """The oldest directory with this (name, type), created when missing.

        Directory names are not unique (users may create two "docs"), so there is no constraint to
        race on: the project row is locked instead, and a second caller reads after the first commits.
        """
        async with self._write() as conn:
            await self._project_row(conn, project_id, lock=True)
            row = (
                await conn.execute(
                    select(directories)
                    .where(
                        directories.c.project_id == project_id,
                        directories.c.name == name,
                        directories.c.type == type,
                    )
                    .order_by(directories.c.created_at, directories.c.id)
                    .limit(1)
                )
            ).first()
            if row is not None:
                return _from_row(d.Directory, row)
            return await self._insert_directory(conn, project_id, name, description, type)

    async def _insert_directory(
        self, conn: AsyncConnection, project_id: str, name: str, description: str, type: str
    ) -> d.Directory:
        now = self._clock()
        values = {
            "id": _new_id(),
            "project_id": project_id,
            "name": name,
            "description": description,
            "type": type,
            "created_at": now,
            "updated_at": now,
        }
        await conn.execute(insert(directories).values(**values))
        return d.Directory(**values)

    async def get_directory(self, project_id: str, directory_id: str) -> d.Directory:
        async with self._read() as conn:
            return await self._directory_row(conn, project_id, directory_id)

    async def _directory_row(self, conn: AsyncConnection, project_id: str, directory_id: str) -> d.Directory:
        row = (
            await conn.execute(
                select(directories).where(
                    directories.c.id == directory_id, directories.c.project_id == project_id
                )
            )
        ).first()
        if row is None:
            raise NotFound(f"directory {directory_id} not found")
        return _from_row(d.Directory, row)

    async def list_directories(self, project_id: str) -> list[d.Directory]:
        query = (
            select(directories)
            .where(directories.c.project_id == project_id)
            .order_by(directories.c.created_at, directories.c.id)
        )
        async with self._read() as conn:
            return [_from_row(d.Directory, r) for r in (await conn.execute(query)).all()]

    async def _put_blob(self, conn: AsyncConnection, blob_id: str, content: bytes) -> None:
        await conn.execute(
            self._upsert_insert(blobs)
            .values(id=blob_id, content=content, size_bytes=len(content))
            .on_conflict_do_nothing(index_elements=["id"])
        )

    async def _drop_blobs_if_unused(self, conn: AsyncConnection, blob_ids: Sequence[str | None]) -> None:
        ids = sorted({b for b in blob_ids if b})
        if not ids:
            return
        in_use = select(directory_files.c.id).where(directory_files.c.blob_id == blobs.c.id).exists()
        await conn.execute(delete(blobs).where(blobs.c.id.in_(ids), ~in_use))

    async def _writable_directory(self, conn: AsyncConnection, project_id: str, directory_id: str) -> None:
        directory = await self._directory_row(conn, project_id, directory_id)
        if directory.type == "index":
            raise FailedPrecondition(f"directory {directory_id} is an index output directory")

    async def upload_file(self, project_id: str, directory_id: str, spec: d.UploadSpec) -> d.DirectoryFile:
        """Insert, or replace the file with the same unique_id (same row id; version+1 if changed)."""
        # Hashed once, off the event loop and outside the write transaction (content may be large).
        blob_id = await asyncio.to_thread(lambda: hashlib.sha256(spec.content).hexdigest())
        return await _retry_on_conflict(lambda: self._upload_once(project_id, directory_id, spec, blob_id))

    async def _upload_once(
        self, project_id: str, directory_id: str, spec: d.UploadSpec, blob_id: str
    ) -> d.DirectoryFile:
        async with self._write() as conn:
            await self._writable_directory(conn, project_id, directory_id)
            await self._put_blob(conn, blob_id, spec.content)
            values = {
                "display_name": spec.display_name,
                "external_file_id": spec.external_file_id,
                "blob_id": blob_id,
                "metadata_json": spec.metadata_json,
                "size_bytes": len(spec.content),
                "content_type": spec.content_type,
            }
            return await self._put_file_row(conn, project_id, directory_id, spec.unique_id, values)

    async def add_directory_file(self, project_id: str, directory_id: str, spec: d.AddSpec) -> d.DirectoryFile:
        """Put an upload of the project into ``directory_id``, sharing its blob (no bytes copied)."""

        async def attempt() -> d.DirectoryFile:
            async with self._write() as conn:
                await self._writable_directory(conn, project_id, directory_id)
                src = (
                    await conn.execute(
                        select(directory_files).where(
                            directory_files.c.id == spec.source_directory_file_id,
                            directory_files.c.project_id == project_id,
                        )
                    )
                ).first()
                if src is None:
                    raise NotFound(f"file {spec.source_directory_file_id} not found")
                if src.blob_id is None:
                    raise FailedPrecondition(f"file {src.id} is a parsed file, not an upload")
                values = {
                    "display_name": spec.display_name or src.display_name,
                    "external_file_id": src.external_file_id,
                    "blob_id": src.blob_id,
                    "metadata_json": spec.metadata_json,
                    "size_bytes": src.size_bytes,
                    "content_type": src.content_type,
                }
                return await self._put_file_row(conn, project_id, directory_id, spec.unique_id or src.id, values)

        return await _retry_on_conflict(attempt)

    async def _put_file_row(
        self, conn: AsyncConnection, project_id: str, directory_id: str, unique_id: str, values: dict[str, Any]
    ) -> d.DirectoryFile:
        """Insert the row, or replace the one with the same unique_id: same id, version+1 only when
        something changed (metadata compared as JSON). A concurrent insert of the same unique_id
        fails the unique constraint; the caller's retry then takes the replace path."""
        values = {**values, "name_folded": values["display_name"].casefold()}
        now = self._clock()
        old = (
            await conn.execute(
                select(directory_files).where(
                    directory_files.c.directory_id == directory_id, directory_files.c.unique_id == unique_id
                )
            )
        ).first()
        if old is None:
            file_id = _new_id()
            await conn.execute(
                insert(directory_files).values(
                    id=file_id,
                    directory_id=directory_id,
                    project_id=project_id,
                    unique_id=unique_id,
                    version=1,
                    source_file_id=None,
                    created_at=now,
                    updated_at=now,
                    **values,
                )
            )
        else:
            file_id = old.id
            changed = any(getattr(old, k) != v for k, v in values.items() if k != "metadata_json") or (
                json.loads(old.metadata_json or "{}") != json.loads(values["metadata_json"])
            )
            if changed:
                await conn.execute(
                    update(directory_files)
                    .where(directory_files.c.id == old.id)
                    .values(version=directory_files.c.version + 1, updated_at=now, **values)
                )
                if old.blob_id != values["blob_id"]:
                    await self._drop_blobs_if_unused(conn, [old.blob_id])
        row = (await conn.execute(select(directory_files).where(directory_files.c.id == file_id))).one()
        return _file(row)

    async def _file_by_ref(self, conn: AsyncConnection, directory_id: str, ref: d.FileRef) -> Row[Any]:
        key = directory_files.c.id == ref.id if ref.id else directory_files.c.unique_id == ref.unique_id
        row = (
            await conn.execute(select(directory_files).where(directory_files.c.directory_id == directory_id, key))
        ).first()
        if row is None:
            raise NotFound(f"file {ref.id or ref.unique_id} not found")
        return row

    async def _contents(self, conn: AsyncConnection, blob_ids: Sequence[str | None]) -> dict[str, bytes]:
        ids = sorted({b for b in blob_ids if b})
        if not ids:
            return {}
        rows = await conn.execute(select(blobs.c.id, blobs.c.content).where(blobs.c.id.in_(ids)))
        return {r.id: bytes(r.content) for r in rows}

    async def get_directory_file(
        self, project_id: str, directory_id: str, ref: d.FileRef, include_content: bool
    ) -> d.DirectoryFile:
        """One file by id or unique_id; with ``include_content`` its blob's bytes (b"" for a parsed file)."""
        async with self._read() as conn:
            await self._directory_row(conn, project_id, directory_id)
            row = await self._file_by_ref(conn, directory_id, ref)
            contents = await self._contents(conn, [row.blob_id]) if include_content else {}
        return _file(row, contents.get(row.blob_id or "", b""))

    def _file_conditions(self, directory_id: str, flt: d.FileFilter) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = [directory_files.c.directory_id == directory_id]
        if flt.display_name:
            conds.append(directory_files.c.display_name == flt.display_name)
        if flt.display_name_contains:
            conds.append(
                directory_files.c.name_folded.contains(flt.display_name_contains.casefold(), autoescape=True)
            )
        if flt.unique_id:
            conds.append(directory_files.c.unique_id == flt.unique_id)
        if flt.file_id:
            conds.append(directory_files.c.blob_id == flt.file_id)
        return conds

    async def list_directory_files(
        self,
        project_id: str,
        directory_id: str,
        flt: d.FileFilter,
        limit: int,
        after: Cursor | None,
        include_content: bool = False,
    ) -> d.ResultPage[d.DirectoryFile]:
        """Files ordered by (display_name, id), keyset-paginated; with content, a page ends early once
        its files' bytes pass ``CONTENT_PAGE_BYTES`` (it always holds at least one file)."""
        conds = self._file_conditions(directory_id, flt)
        order = (directory_files.c.display_name, directory_files.c.id)
        async with self._read() as conn:
            await self._directory_row(conn, project_id, directory_id)
            rows, total, token = await _keyset_page(
                conn, [directory_files], directory_files, conds, order, after, limit
            )
            if not include_content:
                return d.ResultPage(items=[_file(r) for r in rows], next_page_token=token, total_size=total)
            taken, size = 0, 0
            for r in rows:
                if taken and size + r.size_bytes > CONTENT_PAGE_BYTES:
                    break
                taken, size = taken + 1, size + r.size_bytes
            if taken < len(rows):
                rows, token = rows[:taken], _cursor(rows[taken - 1], order)
            contents = await self._contents(conn, [r.blob_id for r in rows])
        items = [_file(r, contents.get(r.blob_id or "", b"")) for r in rows]
        return d.ResultPage(items=items, next_page_token=token, total_size=total)

    async def delete_directory_file(self, project_id: str, directory_id: str, ref: d.FileRef) -> None:
        async with self._write() as conn:
            await self._directory_row(conn, project_id, directory_id)
            row = await self._file_by_ref(conn, directory_id, ref)
            await self._delete_parsed_data(conn, [row.id])
            await conn.execute(delete(directory_files).where(directory_files.c.id == row.id))
            await self._drop_blobs_if_unused(conn, [row.blob_id])

    async def _delete_parsed_data(self, conn: AsyncConnection, parsed_ids: Sequence[str] | Select[tuple[str]]) -> None:
        """What hangs off parsed-file rows (text, page images), before the rows go; ``parsed_ids``
        is a list or a subquery of ids."""
        await conn.execute(delete(page_images).where(page_images.c.parsed_file_id.in_(parsed_ids)))
        await conn.execute(delete(parsed_texts).where(parsed_texts.c.parsed_file_id.in_(parsed_ids)))

    # -- indexes

    async def _index_row(
        self, conn: AsyncConnection, project_id: str | None, index_id: str, *, lock: bool = False
    ) -> Row[Any]:
        """The index row; ``lock`` holds it until commit (FOR NO KEY UPDATE on PostgreSQL).

        Every transaction that starts or ends an index's job locks the index row before it touches
        the job (one lock order, no deadlock), so StartSync's resync request and the job's end
        cannot miss each other.
        """
        query = select(indexes).where(indexes.c.id == index_id)
        if project_id is not None:
            query = query.where(indexes.c.project_id == project_id)
        if lock:
            query = query.with_for_update(key_share=True)
        row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"index {index_id} not found")
        return row

    async def _indexes(self, conn: AsyncConnection, rows: Sequence[Row[Any]]) -> list[d.Index]:
        """Index rows with their last jobs, fetched in one query for all of them."""
        if not rows:
            return []
        latest = (
            select(jobs.c.index_id, func.max(jobs.c.seq).label("seq"))
            .where(jobs.c.index_id.in_([r.id for r in rows]))
            .group_by(jobs.c.index_id)
            .subquery()
        )
        last = {
            j.index_id: _from_row(d.Job, j)
            for j in await conn.execute(
                select(jobs).join(latest, and_(jobs.c.index_id == latest.c.index_id, jobs.c.seq == latest.c.seq))
            )
        }
        failed: dict[str, int] = {}
        if last:
            counts = await conn.execute(
                select(job_items.c.job_id, func.count())
                .where(job_items.c.job_id.in_([j.id for j in last.values()]), job_items.c.error != "")
                .group_by(job_items.c.job_id)
            )
            failed = {job_id: n for job_id, n in counts}
        listed = await self._failures(conn, [j.id for j in last.values() if failed.get(j.id)])
        return [
            _to_index(r, last.get(r.id), failed.get(last[r.id].id, 0) if r.id in last else 0,
                      listed.get(last[r.id].id, ()) if r.id in last else ())
            for r in rows
        ]

    async def _failures(self, conn: AsyncConnection, job_ids: Sequence[str]) -> dict[str, tuple[d.JobFailure, ...]]:
        """The first ``MAX_LISTED_FAILURES`` failed items of each job, with their source file."""
        out: dict[str, list[d.JobFailure]] = {}
        for job_id in job_ids:
            rows = await conn.execute(
                select(job_items.c.job_id, job_items.c.source_file_id, job_items.c.error,
                       directory_files.c.display_name, directory_files.c.unique_id)
                .outerjoin(directory_files, directory_files.c.id == job_items.c.source_file_id)
                .where(job_items.c.job_id == job_id, job_items.c.error != "")
                .order_by(job_items.c.seq).limit(d.MAX_LISTED_FAILURES)
            )
            out[job_id] = [d.JobFailure(r.source_file_id, r.display_name or "", r.unique_id or "", r.error)
                           for r in rows]
        return {k: tuple(v) for k, v in out.items()}

    async def _index(self, conn: AsyncConnection, row: Row[Any]) -> d.Index:
        [index] = await self._indexes(conn, [row])
        return index

    async def create_index(
        self,
        project_id: str,
        name: str,
        description: str,
        source_directory_id: str,
        metadata_json: str,
        config_json: str = "{}",
    ) -> d.Index:
        """Create the index (kind "index") and its output directory (type "index")."""
        async with self._write() as conn:
            await self._directory_row(conn, project_id, source_directory_id)
            index_id = await self._insert_index(
                conn, project_id, "index", name, description, source_directory_id, metadata_json, config_json
            )
            return await self._index(conn, await self._index_row(conn, project_id, index_id))

    async def _insert_index(
        self,
        conn: AsyncConnection,
        project_id: str,
        kind: str,
        name: str,
        description: str,
        source_directory_id: str,
        metadata_json: str,
        config_json: str,
    ) -> str:
        index_id = _new_id()
        name = name or f"index-{index_id[:8]}"
        output = await self._insert_directory(
            conn, project_id, f"{name} (parsed)", f"Parsed files of index {index_id}", "index"
        )
        now = self._clock()
        await conn.execute(
            insert(indexes).values(
                id=index_id,
                project_id=project_id,
                name=name,
                description=description,
                source_directory_id=source_directory_id,
                output_directory_id=output.id,
                generation=0,
                metadata_json=metadata_json,
                created_at=now,
                updated_at=now,
                last_synced_at=None,
                kind=kind,
                config_json=config_json,
                resync_requested=False,
            )
        )
        return index_id

    async def upsert_pipeline(self, project_id: str, name: str, config_json: str) -> d.Index:
        """Get or create the pipeline ``name`` (with its own source directory, type "pipeline");
        an existing one takes ``config_json``.

        Racing upserts of one name are serialized by the project row lock (the second one reads the
        first one's pipeline); the partial unique index on (project, name) of pipelines is the
        database's guarantee behind it, and a violation is retried (then it takes the update path).
        """

        async def attempt() -> d.Index:
            async with self._write() as conn:
                await self._project_row(conn, project_id, lock=True)
                row = (
                    await conn.execute(
                        select(indexes).where(
                            indexes.c.project_id == project_id, indexes.c.name == name, indexes.c.kind == "pipeline"
                        )
                    )
                ).first()
                if row is None:
                    source = await self._insert_directory(
                        conn, project_id, name, f"Source files of pipeline {name}", "pipeline"
                    )
                    index_id = await self._insert_index(
                        conn, project_id, "pipeline", name, "", source.id, "{}", config_json
                    )
                else:
                    index_id = row.id
                    if row.config_json != config_json:
                        await conn.execute(
                            update(indexes)
                            .where(indexes.c.id == index_id)
                            .values(config_json=config_json, updated_at=self._clock())
                        )
                return await self._index(conn, await self._index_row(conn, project_id, index_id))

        return await _retry_on_conflict(attempt)

    async def get_index(self, project_id: str, index_id: str) -> d.Index:
        async with self._read() as conn:
            return await self._index(conn, await self._index_row(conn, project_id, index_id))

    async def list_indexes(
        self,
        project_id: str,
        source_directory_id: str,
        limit: int,
        after: Cursor | None,
        name: str = "",
        kind: str = "",
    ) -> d.ResultPage[d.Index]:
        """Indexes ordered by (created_at, id), keyset-paginated; filters are exact."""
        conds: list[ColumnElement[bool]] = [indexes.c.project_id == project_id]
        if source_directory_id:
            conds.append(indexes.c.source_directory_id == source_directory_id)
        if name:
            conds.append(indexes.c.name == name)
        if kind:
            conds.append(indexes.c.kind == kind)
        created_after: tuple[datetime, str] | None = None
        if after is not None:
            try:
                created_after = (datetime.fromisoformat(after[0]), after[1])
            except ValueError as exc:
                raise InvalidArgument("invalid page_token") from exc
        order = (indexes.c.created_at, indexes.c.id)
        async with self._read() as conn:
            rows, total, token = await _keyset_page(conn, [indexes], indexes, conds, order, created_after, limit)
            items = await self._indexes(conn, rows)
        return d.ResultPage(items=items, next_page_token=token, total_size=total)

    async def delete_index(self, project_id: str, index_id: str) -> d.Index:
        """Remove the index, its jobs, parsed texts, page images and output directory (a pipeline:
        also the source directory it owns, unless another index reads it); returns it (generation+1)."""
        async with self._write() as conn:
            before = await self._delete_index_in(conn, project_id, index_id)
        return dataclasses.replace(
            before, generation=before.generation + 1, sync_in_progress=False, updated_at=self._clock()
        )

    async def _delete_index_in(self, conn: AsyncConnection, project_id: str, index_id: str) -> d.Index:
        """``delete_index`` inside the caller's transaction; the index as it was."""
        row = await self._index_row(conn, project_id, index_id, lock=True)
        before = await self._index(conn, row)
        job_ids = select(jobs.c.id).where(jobs.c.index_id == index_id)
        await conn.execute(delete(job_items).where(job_items.c.job_id.in_(job_ids)))
        await conn.execute(delete(jobs).where(jobs.c.index_id == index_id))
        parsed_ids = select(directory_files.c.id).where(directory_files.c.directory_id == row.output_directory_id)
        await self._delete_parsed_data(conn, parsed_ids)
        await conn.execute(
            delete(directory_files).where(directory_files.c.directory_id == row.output_directory_id)
        )
        await conn.execute(delete(indexes).where(indexes.c.id == index_id))
        await conn.execute(delete(directories).where(directories.c.id == row.output_directory_id))
        if row.kind == "pipeline":
            await self._delete_owned_source(conn, row.source_directory_id)
        await conn.execute(insert(engine_drops).values(
            index_id=index_id, project_id=project_id, requested_at=self._clock(), attempts=0, last_error=""))
        return before

    async def _delete_owned_source(self, conn: AsyncConnection, directory_id: str) -> None:
        """A deleted pipeline's source directory with its files, unless another index reads it."""
        owned = (
            await conn.execute(
                select(directories.c.id).where(directories.c.id == directory_id, directories.c.type == "pipeline")
            )
        ).first()
        shared = (
            await conn.execute(select(indexes.c.id).where(indexes.c.source_directory_id == directory_id).limit(1))
        ).first()
        if owned is None or shared is not None:
            return
        blob_ids = (
            await conn.execute(select(directory_files.c.blob_id).where(directory_files.c.directory_id == directory_id))
        ).scalars().all()
        await conn.execute(delete(directory_files).where(directory_files.c.directory_id == directory_id))
        await self._drop_blobs_if_unused(conn, blob_ids)
        await conn.execute(delete(directories).where(directories.c.id == directory_id))

    # -- syncs

    async def _active_job(self, conn: AsyncConnection, index_id: str) -> d.Job | None:
        row = (
            await conn.execute(select(jobs).where(jobs.c.index_id == index_id, jobs.c.status.in_(_ACTIVE)))
        ).first()
        return _from_row(d.Job, row) if row is not None else None

    async def _bump_generation(self, conn: AsyncConnection, index_id: str, now: datetime) -> None:
        await conn.execute(
            update(indexes)
            .where(indexes.c.id == index_id)
            .values(generation=indexes.c.generation + 1, last_synced_at=now, updated_at=now)
        )

    async def start_sync(self, project_id: str, index_id: str) -> d.Job:
        """Plan a job (upserts for new/changed sources, deletes for gone ones); while one is pending or
        running, mark the index for a resync (planned when that job ends) and return the active job."""
        try:
            # A conflict means another StartSync created the active job first; the retry returns it.
            return await _retry_on_conflict(lambda: self._start_sync_once(project_id, index_id))
        except IntegrityError as exc:
            raise FailedPrecondition(f"could not start a sync for index {index_id}") from exc

    async def _start_sync_once(self, project_id: str, index_id: str) -> d.Job:
        async with self._write() as conn:
            index = await self._index_row(conn, project_id, index_id, lock=True)
            active = await self._active_job(conn, index_id)
            if active is not None:
                if not index.resync_requested:
                    await conn.execute(update(indexes).where(indexes.c.id == index_id).values(resync_requested=True))
                return active
            job = await self._plan_job(conn, index, keep_empty=True)
            assert job is not None
            return job

    async def _after_job_end(self, conn: AsyncConnection, index_id: str) -> None:
        """In the transaction that ended the index's job (its row locked): honour a resync request.

        An empty plan creates no job here, so the ended job stays the index's last one."""
        index = await self._index_row(conn, None, index_id)
        if index.resync_requested:
            await conn.execute(update(indexes).where(indexes.c.id == index_id).values(resync_requested=False))
            await self._plan_job(conn, index, keep_empty=False)

    async def _plan_job(self, conn: AsyncConnection, index: Row[Any], *, keep_empty: bool) -> d.Job | None:
        """Insert a job for what changed between the source and output directories (no active job
        may exist). An empty plan is a job that succeeded at once (generation bumped) when
        ``keep_empty``, else nothing."""
        sources = (
            await conn.execute(
                select(directory_files.c.id, directory_files.c.version)
                .where(directory_files.c.directory_id == index.source_directory_id)
                .order_by(directory_files.c.display_name, directory_files.c.id)
            )
        ).all()
        parsed = (
            await conn.execute(
                select(
                    directory_files.c.id,
                    directory_files.c.source_file_id,
                    parsed_texts.c.source_version,
                    parsed_texts.c.chunking,
                )
                .select_from(
                    directory_files.outerjoin(parsed_texts, parsed_texts.c.parsed_file_id == directory_files.c.id)
                )
                .where(directory_files.c.directory_id == index.output_directory_id)
                .order_by(directory_files.c.display_name, directory_files.c.id)
            )
        ).all()
        by_source = {p.source_file_id: p for p in parsed if p.source_file_id}
        source_ids = {s.id for s in sources}
        chunking = d.chunking_key(index.config_json)
        items: list[dict[str, Any]] = []
        for s in sources:
            p = by_source.get(s.id)
            # Changed, never indexed, or chunked otherwise than the index now asks.
            if p is None or p.source_version != s.version or p.chunking != chunking:
                items.append(
                    {
                        "source_file_id": s.id,
                        "action": "upsert",
                        "parsed_file_id": p.id if p else "",
                        "source_version": s.version,
                    }
                )
        for p in parsed:
            if p.source_file_id not in source_ids:
                items.append(
                    {
                        "source_file_id": p.source_file_id or p.id,
                        "action": "delete",
                        "parsed_file_id": p.id,
                        "source_version": 0,
                    }
                )
        if not items and not keep_empty:
            return None
        return await self._insert_job(conn, index.id, items)

    async def _insert_job(self, conn: AsyncConnection, index_id: str, items: list[dict[str, Any]], *,
                          kind: str = "sync", engines: str = "") -> d.Job:
        """A pending job of ``items`` (with no items: one that succeeded at once, generation bumped)."""
        empty = not items
        now = self._clock()
        seq = (
            await conn.execute(select(func.coalesce(func.max(jobs.c.seq), 0)).where(jobs.c.index_id == index_id))
        ).scalar_one()
        job_id = _new_id()
        await conn.execute(
            insert(jobs).values(
                id=job_id,
                index_id=index_id,
                seq=seq + 1,
                status="succeeded" if empty else "pending",
                worker_id="",
                lease_until=None,
                attempts=0,
                total_items=len(items),
                done_items=0,
                error="",
                created_at=now,
                started_at=now if empty else None,
                finished_at=now if empty else None,
                kind=kind,
                engines=engines,
            )
        )
        if items:
            await conn.execute(
                insert(job_items),
                [
                    {**item, "job_id": job_id, "seq": n, "status": "pending", "chunk_count": 0, "error": ""}
                    for n, item in enumerate(items)
                ],
            )
        else:
            await self._bump_generation(conn, index_id, now)
        return await self._job_row(conn, job_id)

    async def start_rebuild(self, project_id: str, index_id: str, engines: Sequence[str]) -> d.Job:
        """A "rebuild" job of one item per parsed file that has text; FAILED_PRECONDITION while a
        job is active (a rebuild must not interleave with a sync)."""

        async def attempt() -> d.Job:
            async with self._write() as conn:
                await self._index_row(conn, project_id, index_id, lock=True)
                active = await self._active_job(conn, index_id)
                if active is not None:
                    raise FailedPrecondition(f"index {index_id} has a {active.kind} in progress ({active.id})")
                rows = (await conn.execute(
                    select(parsed_texts.c.parsed_file_id, parsed_texts.c.source_file_id, parsed_texts.c.source_version)
                    .where(parsed_texts.c.index_id == index_id)
                    .order_by(parsed_texts.c.source_file_id)
                )).all()
                items = [{"source_file_id": r.source_file_id, "action": "rebuild", "parsed_file_id": r.parsed_file_id,
                          "source_version": r.source_version} for r in rows]
                return await self._insert_job(conn, index_id, items, kind="rebuild", engines=",".join(engines))

        try:
            return await _retry_on_conflict(attempt)
        except IntegrityError as exc:
            raise FailedPrecondition(f"could not start a rebuild of index {index_id}") from exc

    async def get_parsed_file(self, job_id: str, worker_id: str, source_file_id: str) -> d.ParsedFileForRebuild:
        """A rebuild item's parsed text and the source file's name, metadata and unique id."""
        async with self._read() as conn:
            job = await self._held_job(conn, job_id, worker_id)
            row = (await conn.execute(
                select(parsed_texts).where(parsed_texts.c.index_id == job.index_id,
                                           parsed_texts.c.source_file_id == source_file_id)
            )).first()
            if row is None:
                raise NotFound(f"source file {source_file_id} has no parsed text in index {job.index_id}")
            source = (await conn.execute(select(directory_files).where(directory_files.c.id == source_file_id))).first()
            if source is None:
                raise NotFound(f"source file {source_file_id} not found")
            config_query = select(indexes.c.config_json).where(indexes.c.id == job.index_id)
            config = (await conn.execute(config_query)).scalar_one()
        pages = tuple(d.Page(number=n, start_char=s, end_char=e) for n, s, e in json.loads(row.pages_json))
        return d.ParsedFileForRebuild(parsed_file_id=row.parsed_file_id, version=row.source_version, text=row.text,
                                      pages=pages, file=_file(source), index_config_json=config)

    async def _job_row(self, conn: AsyncConnection, job_id: str) -> d.Job:
        row = (await conn.execute(select(jobs).where(jobs.c.id == job_id))).first()
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return _from_row(d.Job, row)

    async def cancel_sync(self, project_id: str, index_id: str) -> d.Job:
        """Cancel the pending/running job; FAILED_PRECONDITION when there is none."""
        async with self._write() as conn:
            await self._index_row(conn, project_id, index_id, lock=True)
            active = await self._active_job(conn, index_id)
            if active is None:
                raise FailedPrecondition(f"no sync in progress for index {index_id}")
            now = self._clock()
            await conn.execute(
                update(jobs)
                .where(jobs.c.id == active.id)
                .values(status="cancelled", finished_at=now, lease_until=None, error="cancelled")
            )
            # Items finished before the cancel already changed what the index serves.
            await self._bump_generation(conn, index_id, now)
            await self._after_job_end(conn, index_id)
            return await self._job_row(conn, active.id)

    async def get_job(self, job_id: str) -> d.Job:
        async with self._read() as conn:
            return await self._job_row(conn, job_id)

    async def get_file_status(self, project_id: str, index_id: str, unique_id: str) -> d.FileStatus:
        """Where the source file with ``unique_id`` stands, from its latest job item (by job seq),
        its parsed text and the index's active job / resync request; rules in order:

        pending item in an active job -> IN_PROGRESS; item failed for the current version -> ERROR;
        parsed text at the current version -> SUCCESS; resync requested -> IN_PROGRESS; another
        active job (without this file) -> NOT_STARTED; pending item of a cancelled / failed job ->
        CANCELLED / ERROR (the job's error); otherwise NOT_STARTED.
        """
        async with self._read() as conn:
            index = await self._index_row(conn, project_id, index_id)
            row = (
                await conn.execute(
                    select(directory_files).where(
                        directory_files.c.directory_id == index.source_directory_id,
                        directory_files.c.unique_id == unique_id,
                    )
                )
            ).first()
            if row is None:
                raise NotFound(f"file {unique_id} not found in index {index_id}")
            item = (
                await conn.execute(
                    select(
                        job_items.c.status,
                        job_items.c.error,
                        job_items.c.source_version,
                        jobs.c.id.label("job_id"),
                        jobs.c.status.label("job_status"),
                        jobs.c.error.label("job_error"),
                    )
                    .join(jobs, jobs.c.id == job_items.c.job_id)
                    .where(
                        jobs.c.index_id == index_id,
                        job_items.c.source_file_id == row.id,
                        job_items.c.action == "upsert",
                    )
                    .order_by(jobs.c.seq.desc())
                    .limit(1)
                )
            ).first()
            parsed_version = (
                await conn.execute(
                    select(parsed_texts.c.source_version).where(
                        parsed_texts.c.index_id == index_id, parsed_texts.c.source_file_id == row.id
                    )
                )
            ).scalar_one_or_none()
            active = await self._active_job(conn, index_id)
        file = _file(row)

        def status(value: str, job_id: str, error: str = "") -> d.FileStatus:
            return d.FileStatus(status=value, error=error, job_id=job_id, file=file)

        pending = item is not None and item.status == "pending"
        if item is not None and pending and item.job_status in d.ACTIVE_JOB_STATUSES:
            return status(d.FILE_IN_PROGRESS, item.job_id)
        if item is not None and item.status == "done" and item.error and item.source_version == row.version:
            return status(d.FILE_ERROR, item.job_id, item.error)
        if parsed_version == row.version:
            return status(d.FILE_SUCCESS, item.job_id if item is not None else "")
        if index.resync_requested:
            return status(d.FILE_IN_PROGRESS, active.id if active is not None else "")
        if active is not None:
            return status(d.FILE_NOT_STARTED, "")
        if item is not None and pending and item.job_status == "cancelled":
            return status(d.FILE_CANCELLED, item.job_id)
        if item is not None and pending and item.job_status == "failed":
            return status(d.FILE_ERROR, item.job_id, item.job_error)
        return status(d.FILE_NOT_STARTED, "")

    # -- worker protocol

    async def claim_job(self, worker_id: str, lease_seconds: float, max_attempts: int = 5) -> d.Job | None:
        """Take the oldest pending job, or a running one whose lease expired; None when idle.

        A job whose lease has already expired ``max_attempts`` times is failed (and its index
        generation bumped) rather than handed to yet another worker.
        """
        for _ in range(10):
            now = self._clock()
            claimable = or_(
                jobs.c.status == "pending", and_(jobs.c.status == "running", jobs.c.lease_until < now)
            )
            async with self._write() as conn:
                row = (
                    await conn.execute(
                        select(jobs.c.id, jobs.c.attempts, jobs.c.index_id)
                        .where(claimable)
                        .order_by(jobs.c.created_at, jobs.c.id)
                        .limit(1)
                    )
                ).first()
                if row is None:
                    return None
                if row.attempts >= max_attempts:
                    await self._index_row(conn, None, row.index_id, lock=True)  # lock order: index, then job
                    gave_up = await conn.execute(
                        update(jobs)
                        .where(jobs.c.id == row.id, jobs.c.attempts == row.attempts, claimable)
                        .values(
                            status="failed",
                            error=f"abandoned after {row.attempts} attempts whose leases expired",
                            finished_at=now,
                            lease_until=None,
                        )
                    )
                    if gave_up.rowcount == 1:
                        await self._bump_generation(conn, row.index_id, now)
                        await self._after_job_end(conn, row.index_id)
                    continue
                # The guard on attempts (bumped by every claim) and on the claimable state makes the
                # UPDATE a compare-and-set: of two racing workers only one changes the row.
                result = await conn.execute(
                    update(jobs)
                    .where(jobs.c.id == row.id, jobs.c.attempts == row.attempts, claimable)
                    .values(
                        status="running",
                        worker_id=worker_id,
                        lease_until=now + timedelta(seconds=lease_seconds),
                        attempts=jobs.c.attempts + 1,
                        started_at=func.coalesce(jobs.c.started_at, now),
                    )
                )
                if result.rowcount == 1:
                    return await self._job_row(conn, row.id)
        return None

    async def _held_job(self, conn: AsyncConnection, job_id: str, worker_id: str) -> d.Job:
        job = await self._job_row(conn, job_id)
        if job.status != "running" or job.worker_id != worker_id:
            raise FailedPrecondition(f"job {job_id} is not held by worker {worker_id} (status {job.status})")
        return job

    async def renew_lease(self, job_id: str, worker_id: str, lease_seconds: float) -> d.Job:
        """Extend the lease; FAILED_PRECONDITION when the job is finished or held by another worker."""
        async with self._write() as conn:
            now = self._clock()
            result = await conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.worker_id == worker_id, jobs.c.status == "running")
                .values(lease_until=now + timedelta(seconds=lease_seconds))
            )
            if result.rowcount != 1:
                await self._held_job(conn, job_id, worker_id)  # raises NotFound / FailedPrecondition
            return await self._job_row(conn, job_id)

    async def list_job_items(self, job_id: str) -> list[d.JobItem]:
        async with self._read() as conn:
            await self._job_row(conn, job_id)
            rows = (
                await conn.execute(select(job_items).where(job_items.c.job_id == job_id).order_by(job_items.c.seq))
            ).all()
        return [_from_row(d.JobItem, r) for r in rows]

    async def get_source_file(self, source_file_id: str) -> tuple[d.DirectoryFile, bytes]:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(directory_files, blobs.c.content)
                    .join(blobs, blobs.c.id == directory_files.c.blob_id)
                    .where(directory_files.c.id == source_file_id)
                )
            ).first()
        if row is None:
            raise NotFound(f"source file {source_file_id} not found")
        return _file(row), bytes(row.content)

    async def prepare_parsed_file(self, index_id: str, source_file_id: str) -> d.PreparedFile:
        """Get or create the parsed-file row for a source file (stable id across versions)."""

        async def attempt() -> d.PreparedFile:
            async with self._write() as conn:
                parsed_id, version = await self._prepare(conn, index_id, source_file_id)
                config = (
                    await conn.execute(select(indexes.c.config_json).where(indexes.c.id == index_id))
                ).scalar_one()
            return d.PreparedFile(parsed_file_id=parsed_id, version=version, index_config_json=config)

        return await _retry_on_conflict(attempt)

    async def _prepare(self, conn: AsyncConnection, index_id: str, source_file_id: str) -> tuple[str, int]:
        index = await self._index_row(conn, None, index_id)
        src = (
            await conn.execute(
                select(directory_files).where(
                    directory_files.c.id == source_file_id,
                    directory_files.c.directory_id == index.source_directory_id,
                )
            )
        ).first()
        if src is None:
            raise NotFound(f"source file {source_file_id} not found in index {index_id}")
        now = self._clock()
        values = {
            "display_name": src.display_name,
            "name_folded": src.name_folded,
            "external_file_id": src.external_file_id,
            "metadata_json": src.metadata_json,
            "version": src.version,
            "content_type": src.content_type,
            "updated_at": now,
        }
        existing = (
            await conn.execute(
                select(directory_files.c.id).where(
                    directory_files.c.directory_id == index.output_directory_id,
                    directory_files.c.source_file_id == source_file_id,
                )
            )
        ).scalar_one_or_none()
        if existing is not None:
            await conn.execute(update(directory_files).where(directory_files.c.id == existing).values(**values))
            return existing, src.version
        parsed_id = _new_id()
        await conn.execute(
            insert(directory_files).values(
                id=parsed_id,
                directory_id=index.output_directory_id,
                project_id=index.project_id,
                # The source id, not its unique_id: a deleted and re-uploaded source must not collide
                # with the parsed row of its predecessor while that row awaits its delete item.
                unique_id=source_file_id,
                blob_id=None,
                size_bytes=0,
                source_file_id=source_file_id,
                created_at=now,
                **values,
            )
        )
        return parsed_id, src.version

    async def complete_job_item(
        self,
        job_id: str,
        worker_id: str,
        source_file_id: str,
        text: str,
        pages: Sequence[d.Page],
        chunk_count: int,
        error: str,
        index_config_json: str = "",
    ) -> None:
        """Commit one item's outcome; a repeat of an item already done changes nothing.

        ``index_config_json``: the config the worker chunked with (empty: the index's now)."""
        async with self._write() as conn:
            job = await self._held_job(conn, job_id, worker_id)
            item = (
                await conn.execute(
                    select(job_items).where(
                        job_items.c.job_id == job_id, job_items.c.source_file_id == source_file_id
                    )
                )
            ).first()
            if item is None:
                raise NotFound(f"job {job_id} has no item for source file {source_file_id}")
            if item.status == "done":
                return
            # Marking the item done first is the guard: a concurrent duplicate sees rowcount 0.
            claimed = await conn.execute(
                update(job_items)
                .where(
                    job_items.c.job_id == job_id,
                    job_items.c.source_file_id == source_file_id,
                    job_items.c.status == "pending",
                )
                .values(status="done", chunk_count=chunk_count, error=error)
            )
            if claimed.rowcount != 1:
                return
            parsed_id = item.parsed_file_id
            chunking = ""
            if not error and item.action in ("upsert", "rebuild"):
                if not index_config_json:  # a worker that does not say
                    index_config_json = (await self._index_row(conn, None, job.index_id)).config_json
                chunking = d.chunking_key(index_config_json)
            if not error and item.action == "upsert":
                parsed_id = await self._store_text(conn, job.index_id, source_file_id, text, pages, chunk_count,
                                                   chunking)
            elif not error and item.action == "rebuild" and parsed_id:
                await conn.execute(update(parsed_texts).where(parsed_texts.c.parsed_file_id == parsed_id)
                                   .values(chunking=chunking, chunk_count=chunk_count))
            elif not error and item.action == "delete" and parsed_id:
                await self._delete_parsed_data(conn, [parsed_id])
                await conn.execute(delete(directory_files).where(directory_files.c.id == parsed_id))
            await conn.execute(
                update(job_items)
                .where(job_items.c.job_id == job_id, job_items.c.source_file_id == source_file_id)
                .values(parsed_file_id=parsed_id)
            )
            await conn.execute(
                update(jobs).where(jobs.c.id == job_id).values(done_items=jobs.c.done_items + 1)
            )

    async def _store_text(
        self,
        conn: AsyncConnection,
        index_id: str,
        source_file_id: str,
        text: str,
        pages: Sequence[d.Page],
        chunk_count: int,
        chunking: str = "",
    ) -> str:
        parsed_id, version = await self._prepare_or_existing(conn, index_id, source_file_id)
        clean = _clean_text(text)
        now = self._clock()
        values = {
            "index_id": index_id,
            "source_file_id": source_file_id,
            "source_version": version,
            "text": clean,
            "pages_json": json.dumps([[p.number, p.start_char, p.end_char] for p in pages]),
            "chunk_count": chunk_count,
            "chunking": chunking,
            "updated_at": now,
        }
        result = await conn.execute(
            update(parsed_texts).where(parsed_texts.c.parsed_file_id == parsed_id).values(**values)
        )
        if result.rowcount == 0:
            await conn.execute(insert(parsed_texts).values(parsed_file_id=parsed_id, **values))
        await conn.execute(
            update(directory_files)
            .where(directory_files.c.id == parsed_id)
            .values(size_bytes=len(clean.encode()), content_type="text/plain", updated_at=now)
        )
        return parsed_id

    async def _prepare_or_existing(
        self, conn: AsyncConnection, index_id: str, source_file_id: str
    ) -> tuple[str, int]:
        """The parsed row's (id, version), creating the row when the worker skipped PrepareParsedFile."""
        index = await self._index_row(conn, None, index_id)
        row = (
            await conn.execute(
                select(directory_files.c.id, directory_files.c.version).where(
                    directory_files.c.directory_id == index.output_directory_id,
                    directory_files.c.source_file_id == source_file_id,
                )
            )
        ).first()
        if row is not None:
            return row.id, row.version
        return await self._prepare(conn, index_id, source_file_id)

    async def finish_job(self, job_id: str, worker_id: str, status: str, error: str) -> d.Job:
        """Close the job and bump the index generation; repeating the same finish is a no-op."""
        async with self._write() as conn:
            job = await self._job_row(conn, job_id)
            if job.status == status and job.worker_id == worker_id and job.finished_at is not None:
                return job
            await self._index_row(conn, None, job.index_id, lock=True)  # lock order: index, then job
            await self._held_job(conn, job_id, worker_id)
            now = self._clock()
            await conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(status=status, error=error, finished_at=now, lease_until=None)
            )
            await self._bump_generation(conn, job.index_id, now)
            await self._after_job_end(conn, job.index_id)
            return await self._job_row(conn, job_id)

    async def put_page_images(
        self, job_id: str, worker_id: str, parsed_file_id: str, images: Sequence[d.PageImage], replace: bool
    ) -> None:
        """Upsert page images of a parsed file of the job's index by (file, page); ``replace`` drops
        the file's other images first. Only the worker holding the job's lease may write."""
        async with self._write() as conn:
            job = await self._held_job(conn, job_id, worker_id)
            index = await self._index_row(conn, None, job.index_id)
            owned = (
                await conn.execute(
                    select(directory_files.c.id).where(
                        directory_files.c.id == parsed_file_id,
                        directory_files.c.directory_id == index.output_directory_id,
                    )
                )
            ).first()
            if owned is None:
                raise NotFound(f"parsed file {parsed_file_id} not found in index {job.index_id}")
            if replace:
                await conn.execute(delete(page_images).where(page_images.c.parsed_file_id == parsed_file_id))
            if not images:
                return
            stmt = self._upsert_insert(page_images)
            columns = ("content", "content_type", "width", "height", "size_bytes")
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["parsed_file_id", "page_index"],
                    set_={c: stmt.excluded[c] for c in columns},
                ),
                [
                    {
                        "parsed_file_id": parsed_file_id,
                        "page_index": image.page_index,
                        "content": image.content,
                        "content_type": image.content_type,
                        "width": image.width,
                        "height": image.height,
                        "size_bytes": len(image.content),
                    }
                    for image in images
                ],
            )

    # -- retrieval over parsed files

    async def find_files(
        self, project_id: str, index_id: str, name: str, name_contains: str, limit: int, after: Cursor | None
    ) -> d.ResultPage[d.FoundFile]:
        """Parsed files (with text) of the index, ordered by (name, id)."""
        async with self._read() as conn:
            index = await self._index_row(conn, project_id, index_id)
            conds: list[ColumnElement[bool]] = [
                directory_files.c.directory_id == index.output_directory_id,
                parsed_texts.c.index_id == index_id,
            ]
            if name:
                conds.append(directory_files.c.display_name == name)
            if name_contains:
                conds.append(directory_files.c.name_folded.contains(name_contains.casefold(), autoescape=True))
            joined = directory_files.join(parsed_texts, parsed_texts.c.parsed_file_id == directory_files.c.id)
            order = (directory_files.c.display_name, directory_files.c.id)
            columns = [directory_files.c.id, directory_files.c.display_name]
            rows, total, token = await _keyset_page(conn, columns, joined, conds, order, after, limit)
        items = [d.FoundFile(file_id=r.id, file_name=r.display_name) for r in rows]
        return d.ResultPage(items=items, next_page_token=token, total_size=total)

    async def get_parsed_text(self, project_id: str, index_id: str, file_id: str) -> d.ParsedText:
        async with self._read() as conn:
            await self._index_row(conn, project_id, index_id)
            row = (
                await conn.execute(
                    select(parsed_texts).where(
                        parsed_texts.c.parsed_file_id == file_id, parsed_texts.c.index_id == index_id
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"file {file_id} not found in index {index_id}")
        pages = tuple(d.Page(number=n, start_char=s, end_char=e) for n, s, e in json.loads(row.pages_json))
        return d.ParsedText(
            parsed_file_id=row.parsed_file_id,
            index_id=row.index_id,
            source_file_id=row.source_file_id,
            source_version=row.source_version,
            text=row.text,
            pages=pages,
        )


    # -- page images

    async def get_page_image(self, project_id: str, file_id: str, page_index: int) -> d.PageImage:
        """One page image of a parsed file of the project, with its bytes.

        ``file_id`` is a parsed file id or, as LlamaIndex sends it, the id a file was added to a
        pipeline under (its source's unique_id, the ``POST /beta/files`` id) or the source's own
        id; for those the most recently updated parsed file of that source answers.
        """
        query = (
            select(page_images)
            .join(directory_files, directory_files.c.id == page_images.c.parsed_file_id)
            .where(
                page_images.c.parsed_file_id == file_id,
                page_images.c.page_index == page_index,
                directory_files.c.project_id == project_id,
            )
        )
        parsed, source = directory_files.alias("parsed"), directory_files.alias("source")
        by_source = (
            select(page_images)
            .join(parsed, parsed.c.id == page_images.c.parsed_file_id)
            .join(source, source.c.id == parsed.c.source_file_id)
            .where(
                or_(source.c.unique_id == file_id, source.c.id == file_id),
                page_images.c.page_index == page_index,
                parsed.c.project_id == project_id,
            )
            .order_by(parsed.c.updated_at.desc(), parsed.c.id)
            .limit(1)
        )
        async with self._read() as conn:
            row = (await conn.execute(query)).first() or (await conn.execute(by_source)).first()
        if row is None:
            raise NotFound(f"page {page_index} of file {file_id} not found")
        return _page_image(row, bytes(row.content))

    async def list_page_images(self, project_id: str, file_ids: Sequence[str]) -> list[d.PageImage]:
        """The images of those parsed files (no bytes), by (file_id, page_index); other projects' ids
        match nothing."""
        if not file_ids:
            return []
        columns = [c for c in page_images.c if c.name != "content"]
        query = (
            select(*columns)
            .join(directory_files, directory_files.c.id == page_images.c.parsed_file_id)
            .where(page_images.c.parsed_file_id.in_(sorted(set(file_ids))), directory_files.c.project_id == project_id)
            .order_by(page_images.c.parsed_file_id, page_images.c.page_index)
        )
        async with self._read() as conn:
            return [_page_image(r, b"") for r in await conn.execute(query)]


    async def backlog(self) -> d.Backlog:
        """Jobs pending or running, their items not done, the oldest one's age; chunks per index."""
        open_jobs = jobs.c.status.in_(("pending", "running"))
        async with self._read() as conn:
            count, items, oldest = (await conn.execute(
                select(func.count(), func.coalesce(func.sum(jobs.c.total_items - jobs.c.done_items), 0),
                       func.min(jobs.c.created_at)).where(open_jobs)
            )).one()
            chunks = (await conn.execute(
                select(parsed_texts.c.index_id, func.sum(parsed_texts.c.chunk_count)).group_by(parsed_texts.c.index_id)
            )).all()
        age = 0.0
        if oldest is not None:
            oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
            age = max(0.0, (self._clock() - oldest).total_seconds())
        return d.Backlog(int(count), int(items), age, {str(i): int(n or 0) for i, n in chunks})

    async def list_engine_drops(self, limit: int, min_age_seconds: float) -> list[d.EngineDrop]:
        """The oldest drops requested at least ``min_age_seconds`` ago."""
        cutoff = self._clock() - timedelta(seconds=min_age_seconds)
        query = (select(engine_drops).where(engine_drops.c.requested_at <= cutoff)
                 .order_by(engine_drops.c.requested_at, engine_drops.c.index_id).limit(limit))
        async with self._read() as conn:
            return [_from_row(d.EngineDrop, r) for r in await conn.execute(query)]

    async def complete_engine_drop(self, index_id: str, error: str | None) -> None:
        """Forget the drop (``error`` None), or count a failed attempt and keep it."""
        async with self._write() as conn:
            if error is None:
                await conn.execute(delete(engine_drops).where(engine_drops.c.index_id == index_id))
            else:
                await conn.execute(update(engine_drops).where(engine_drops.c.index_id == index_id).values(
                    attempts=engine_drops.c.attempts + 1, last_error=error[:2000]))


def _page_image(row: Row[Any], content: bytes) -> d.PageImage:
    return _from_row(d.PageImage, row, file_id=row.parsed_file_id, content=content)


def _upgrade_to_head(connection: Connection) -> None:
    """Runs inside ``migration_connection``'s transaction (alembic joins it, never commits itself)."""
    config = migrations.alembic_config(connection)
    if MigrationContext.configure(connection).get_current_revision() is None:
        if not inspect(connection).has_table(projects.name):
            metadata.create_all(connection)
            command.stamp(config, "head")
            return
        command.stamp(config, "0001")  # created by create_all before migrations existed
    command.upgrade(config, "head")


def _enter_wal(cursor: Any, busy_timeout_s: float) -> None:
    """Switch the database to WAL. The switch needs the database's exclusive lock and SQLite does
    not run its busy handler for it, so processes opening a new database at once can see
    "database is locked" here: retry until the busy timeout, as any other statement would wait."""
    deadline = time.monotonic() + busy_timeout_s
    delay = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _install_sqlite_hooks(engine: AsyncEngine, busy_timeout_s: float) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over BEGIN from the driver so writes can start with BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        _enter_wal(cursor, busy_timeout_s)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("quarry_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
