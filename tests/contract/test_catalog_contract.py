"""The catalog contract: the same scenarios on SQLite and on PostgreSQL.

PostgreSQL runs in a freshly created schema per test (dropped afterwards), from
QUARRY_TEST_POSTGRES_URL (``tests.servers``: the server ``scripts/test-servers`` starts); with CI=true an
unreachable server fails the test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import insert, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from services.files import migrations
from services.files.adapters import sql as sql_adapter
from services.files.adapters.sql import SqlCatalog
from services.files.domain import FileFilter, Page, PageImage
from services.files.service import FilesService
from services.files.settings import FilesSettings
from tests.servers import POSTGRES_URL, unavailable

_T = TypeVar("_T")


class FakeClock:
    """A clock the tests move by hand; each reading advances 1 ms so timestamps never tie."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@dataclasses.dataclass(frozen=True)
class Database:
    """An empty database: a SQLite file, or a fresh PostgreSQL schema (dropped afterwards)."""

    url: str
    schema: str | None = None

    def catalog(self, clock: FakeClock | None = None) -> SqlCatalog:
        return SqlCatalog.from_url(
            self.url, clock=clock or FakeClock(), schema=self.schema, pool_size=4, connect_timeout_s=3
        )


async def _drop_schema(url: str, schema: str) -> None:
    # Bounded, so a hung server or a lock left behind fails the teardown instead of hanging it.
    admin = create_async_engine(
        url,
        poolclass=NullPool,
        connect_args={"connect_timeout": 3, "options": "-c lock_timeout=5000 -c statement_timeout=10000"},
    )
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        yield Database(f"sqlite+aiosqlite:///{tmp_path}/catalog.db")
        return
    url = FilesSettings(database_url=POSTGRES_URL).resolved_database_url()
    db = Database(url, f"quarry_test_{uuid.uuid4().hex[:12]}")
    probe = create_async_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 3})
    try:
        async with probe.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        unavailable(f"PostgreSQL unreachable at {POSTGRES_URL}: {exc!r}")
    finally:
        await probe.dispose()
    try:
        yield db
    finally:
        await _drop_schema(url, db.schema or "")


@pytest.fixture
async def catalog(database: Database, clock: FakeClock) -> AsyncIterator[SqlCatalog]:
    cat = database.catalog(clock)
    try:
        await cat.start()
        yield cat
    finally:
        await cat.close()


@pytest.fixture
def svc(catalog: SqlCatalog) -> FilesService:
    return FilesService(catalog)


async def _project_with_dir(svc: FilesService, name: str = "proj") -> tuple[str, str]:
    project = await svc.ensure_project(name)
    directory = await svc.create_directory(project.id, "docs", "", "user")
    return project.id, directory.id


async def _run_job(svc: FilesService, worker: str, texts: dict[str, str]) -> str:
    """Claim the pending job and complete every item; ``texts`` maps display_name -> parsed text."""
    job = await svc.claim_job(worker, 30)
    assert job is not None
    for item in await svc.list_job_items(job.id):
        if item.action == "upsert":
            f, content = await svc.get_source_file(item.source_file_id)
            prepared = await svc.prepare_parsed_file(job.index_id, item.source_file_id)
            assert prepared.version == f.version
            body = texts.get(f.display_name, content.decode())
            await svc.complete_job_item(job.id, worker, item.source_file_id, text=body, chunk_count=1)
        else:
            await svc.complete_job_item(job.id, worker, item.source_file_id)
    done = await svc.finish_job(job.id, worker, "succeeded")
    assert done.status == "succeeded"
    return job.id


async def test_auth_and_projects(svc: FilesService, clock: FakeClock) -> None:
    p1 = await svc.ensure_project("Default")
    assert p1.created_at == p1.updated_at == clock.now  # timezone-aware UTC on both databases
    again = await svc.ensure_project("Default")
    assert again == p1
    assert p1.is_default is True
    p2 = await svc.ensure_project("other")
    assert p2.is_default is False
    assert [p.id for p in await svc.list_projects("other")] == [p2.id]
    assert {p.id for p in await svc.list_projects("")} == {p1.id, p2.id}
    assert (await svc.get_project(p2.id)).name == "other"

    secret, key = await svc.create_api_key(p1.id, "secret-1")
    assert secret == "secret-1" and key.project_id == p1.id and not key.is_admin
    assert (await svc.create_api_key(p1.id, "secret-1")) == (secret, key)  # idempotent
    with pytest.raises(AlreadyExists):
        await svc.create_api_key(p2.id, "secret-1")
    generated, _ = await svc.create_api_key(p2.id, "")
    assert len(generated) >= 32
    assert (await svc.authenticate("secret-1")).project.id == p1.id
    assert (await svc.authenticate(generated)).project.id == p2.id
    for bad in ("secret-2", ""):
        with pytest.raises(Unauthenticated):
            await svc.authenticate(bad)
    with pytest.raises(NotFound):
        await svc.get_project("nope")
    with pytest.raises(NotFound):
        await svc.create_api_key("nope", "k")


async def test_key_administration(svc: FilesService, clock: FakeClock) -> None:
    default = await svc.ensure_project("Default")
    other = await svc.create_project("team-a")
    with pytest.raises(AlreadyExists):
        await svc.create_project("team-a")
    admin_secret, admin = await svc.create_api_key(default.id, "", name="ops", is_admin=True)
    assert admin_secret.startswith("qk-") and admin.is_admin and admin.name == "ops"
    secret, key = await svc.create_api_key(other.id, "", name="ci", expires_at=clock.now + timedelta(hours=1))
    assert key.expires_at is not None and key.last_used_at is None
    with pytest.raises(InvalidArgument):
        await svc.create_api_key(other.id, "", expires_at=clock.now - timedelta(seconds=1))

    # A use is recorded, at most once a minute.
    used = await svc.authenticate(secret)
    assert used.project.id == other.id and used.key.id == key.id
    (listed,) = await svc.list_api_keys(other.id)
    first_use = listed.last_used_at
    assert first_use is not None
    await svc.authenticate(secret)
    assert (await svc.list_api_keys(other.id))[0].last_used_at == first_use
    clock.advance(61)
    await svc.authenticate(secret)
    assert (await svc.list_api_keys(other.id))[0].last_used_at > first_use
    assert {k.id for k in await svc.list_api_keys("")} == {admin.id, key.id}

    # Expiry and revocation both refuse the key; revoking twice keeps the first time.
    clock.advance(3600)
    with pytest.raises(Unauthenticated, match="expired"):
        await svc.authenticate(secret)
    revoked = await svc.revoke_api_key(admin.id)
    assert revoked.revoked_at is not None
    assert (await svc.revoke_api_key(admin.id)).revoked_at == revoked.revoked_at
    with pytest.raises(Unauthenticated, match="revoked"):
        await svc.authenticate(admin_secret)
    with pytest.raises(NotFound):
        await svc.revoke_api_key("no-such-key")

    renamed = await svc.rename_project(other.id, "team-b")
    assert renamed.name == "team-b" and renamed.updated_at > other.updated_at
    with pytest.raises(AlreadyExists):
        await svc.rename_project(other.id, "Default")
    with pytest.raises(InvalidArgument):
        await svc.create_project("  ")


async def test_deleting_a_project_deletes_what_it_owns_and_records_engine_drops(svc: FilesService) -> None:
    default = await svc.ensure_project("Default")
    doomed = await svc.create_project("doomed")
    kept_id, kept_dir = await _project_with_dir(svc)
    made = []
    for pid, did in ((doomed.id, (await svc.create_directory(doomed.id, "docs", "", "user")).id), (kept_id, kept_dir)):
        await svc.upload_file(pid, did, display_name="a.txt", content=b"shared bytes", metadata_json="{}")
        made.append(await svc.create_index(pid, name="ix", description="", source_directory_id=did))
    doomed_index = made[0]
    secret, _ = await svc.create_api_key(doomed.id, "")
    with pytest.raises(FailedPrecondition):
        await svc.delete_project(default.id)

    assert await svc.delete_project(doomed.id) == [doomed_index.id]
    with pytest.raises(NotFound):
        await svc.get_project(doomed.id)
    with pytest.raises(Unauthenticated):
        await svc.authenticate(secret)
    drops = await svc.list_engine_drops(10, 0)
    assert [(x.index_id, x.project_id) for x in drops] == [(doomed_index.id, doomed.id)]
    # The other project's file with the same bytes is intact.
    kept = await svc.get_directory_file(kept_id, kept_dir, unique_id="a.txt", include_content=True)
    assert kept.content == b"shared bytes"
    with pytest.raises(NotFound):
        await svc.delete_project(doomed.id)


async def test_backlog(svc: FilesService) -> None:
    empty = await svc.backlog()
    assert (empty.queued_jobs, empty.queued_items, empty.chunks_by_index) == (0, 0, {})
    pid, did = await _project_with_dir(svc)
    await svc.upload_file(pid, did, display_name="a.txt", content=b"one", metadata_json="{}")
    await svc.upload_file(pid, did, display_name="b.txt", content=b"two", metadata_json="{}")
    index = await svc.create_index(pid, name="ix", description="", source_directory_id=did)
    await svc.start_sync(pid, index.id)
    queued = await svc.backlog()
    assert (queued.queued_jobs, queued.queued_items) == (1, 2)
    assert queued.oldest_job_age_seconds >= 0


async def test_upload_versioning(svc: FilesService) -> None:
    pid, did = await _project_with_dir(svc)
    f1 = await svc.upload_file(pid, did, display_name="a.txt", content=b"one", metadata_json='{"k": 1}')
    assert (f1.version, f1.unique_id, f1.size_bytes) == (1, "a.txt", 3)
    assert f1.file_id == hashlib.sha256(b"one").hexdigest()
    same = await svc.upload_file(pid, did, display_name="a.txt", content=b"one", metadata_json='{"k":1}')
    assert (same.id, same.version) == (f1.id, 1)
    changed = await svc.upload_file(pid, did, display_name="a.txt", content=b"two", metadata_json='{"k": 1}')
    assert (changed.id, changed.version) == (f1.id, 2)
    meta = await svc.upload_file(pid, did, display_name="a.txt", content=b"two", metadata_json='{"k": 2}')
    assert (meta.id, meta.version) == (f1.id, 3)
    other = await svc.upload_file(pid, did, display_name="a.txt", content=b"two", unique_id="a-2")
    assert other.id != f1.id and other.version == 1
    for bad in ("[1]", "not json", '"s"'):
        with pytest.raises(InvalidArgument, match="metadata"):
            await svc.upload_file(pid, did, display_name="b.txt", content=b"x", metadata_json=bad)
    page = await svc.list_directory_files(pid, did)
    assert page.total_size == 2
    _, content = await svc.get_source_file(f1.id)
    assert content == b"two"
    await svc.delete_directory_file(pid, did, directory_file_id=other.id)
    assert (await svc.list_directory_files(pid, did)).total_size == 1
    with pytest.raises(NotFound):
        await svc.delete_directory_file(pid, did, directory_file_id=other.id)


async def test_directory_file_pagination_and_filters(svc: FilesService) -> None:
    pid, did = await _project_with_dir(svc)
    names = [f"file-{i:02d}.txt" for i in range(7)] + ["Ärger Report.md"]
    for n in names:
        await svc.upload_file(pid, did, display_name=n, content=n.encode())
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await svc.list_directory_files(pid, did, page_size_=3, page_token=token)
        assert page.total_size == 8
        seen += [f.display_name for f in page.items]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == sorted(names)  # byte order on both databases
    contains = await svc.list_directory_files(pid, did, FileFilter(display_name_contains="FILE-0"))
    assert contains.total_size == 7
    unicode = await svc.list_directory_files(pid, did, FileFilter(display_name_contains="ärger"))
    assert [f.display_name for f in unicode.items] == ["Ärger Report.md"]
    pct = await svc.list_directory_files(pid, did, FileFilter(display_name_contains="%"))
    assert pct.total_size == 0
    exact = await svc.list_directory_files(pid, did, FileFilter(display_name="file-03.txt"))
    assert [f.display_name for f in exact.items] == ["file-03.txt"]
    by_blob = await svc.list_directory_files(
        pid, did, FileFilter(file_id=hashlib.sha256(b"file-05.txt").hexdigest())
    )
    assert [f.display_name for f in by_blob.items] == ["file-05.txt"]
    by_uid = await svc.list_directory_files(pid, did, FileFilter(unique_id="file-06.txt"))
    assert by_uid.total_size == 1
    big = await svc.list_directory_files(pid, did, page_size_=5000)
    assert len(big.items) == 8 and big.next_page_token == ""
    with pytest.raises(InvalidArgument, match="page_token"):
        await svc.list_directory_files(pid, did, page_token="!!!")
    with pytest.raises(InvalidArgument, match="page_size"):
        await svc.list_directory_files(pid, did, page_size_=-1)


async def test_index_listing_and_delete(svc: FilesService) -> None:
    pid, did = await _project_with_dir(svc)
    created = [
        await svc.create_index(pid, name=f"ix{i}", description="", source_directory_id=did) for i in range(5)
    ]
    out_dir = await svc.get_directory(pid, created[0].output_directory_id)
    assert out_dir.type == "index"
    ids: list[str] = []
    token = ""
    while True:
        page = await svc.list_indexes(pid, page_size_=2, page_token=token)
        assert page.total_size == 5
        ids += [i.id for i in page.items]
        token = page.next_page_token
        if not token:
            break
    assert ids == [i.id for i in created]
    assert (await svc.list_indexes(pid, source_directory_id="other")).total_size == 0
    with pytest.raises(NotFound):
        await svc.create_index(pid, name="x", description="", source_directory_id="missing")
    with pytest.raises(InvalidArgument, match="metadata"):
        await svc.create_index(pid, name="x", description="", source_directory_id=did, metadata_json="[]")

    await svc.upload_file(pid, did, display_name="a.txt", content=b"alpha")
    ix = created[0]
    job_id = (await svc.start_sync(pid, ix.id)).id
    await _run_job(svc, "w1", {})
    listed = (await svc.list_indexes(pid)).items
    assert [i.last_job.id if i.last_job else None for i in listed] == [job_id, None, None, None, None]
    assert listed[0] == await svc.get_index(pid, ix.id)
    gen = (await svc.get_index(pid, ix.id)).generation
    deleted = await svc.delete_index(pid, ix.id)
    assert deleted.id == ix.id and deleted.generation == gen + 1
    with pytest.raises(NotFound):
        await svc.get_index(pid, ix.id)
    with pytest.raises(NotFound):
        await svc.get_directory(pid, ix.output_directory_id)
    assert (await svc.list_indexes(pid)).total_size == 4


async def test_sync_planning_and_generation(svc: FilesService) -> None:
    pid, did = await _project_with_dir(svc)
    a = await svc.upload_file(pid, did, display_name="a.txt", content=b"alpha", metadata_json='{"lang":"en"}')
    b = await svc.upload_file(pid, did, display_name="b.txt", content=b"beta")
    ix = await svc.create_index(pid, name="ix", description="", source_directory_id=did)
    assert ix.generation == 0 and not ix.sync_in_progress and ix.last_job is None

    job = await svc.start_sync(pid, ix.id)
    assert (job.status, job.total_items) == ("pending", 2)
    assert (await svc.start_sync(pid, ix.id)).id == job.id  # no second job
    got = await svc.get_index(pid, ix.id)
    assert got.sync_in_progress and got.last_job is not None and got.last_job.id == job.id
    items = await svc.list_job_items(job.id)
    assert {(i.source_file_id, i.action, i.status) for i in items} == {
        (a.id, "upsert", "pending"),
        (b.id, "upsert", "pending"),
    }
    await _run_job(svc, "w1", {})
    got = await svc.get_index(pid, ix.id)
    assert (got.generation, got.sync_in_progress) == (1, False)
    assert got.last_synced_at is not None and got.last_job is not None and got.last_job.done_items == 2

    parsed = await svc.list_directory_files(pid, ix.output_directory_id)
    assert [(f.display_name, f.version, f.metadata_json) for f in parsed.items] == [
        ("a.txt", 1, '{"lang":"en"}'),
        ("b.txt", 1, "{}"),
    ]
    parsed_a = parsed.items[0].id

    # Nothing changed: a zero-item job succeeds at once and still bumps the generation.
    empty = await svc.start_sync(pid, ix.id)
    assert (empty.status, empty.total_items) == ("succeeded", 0)
    assert empty.finished_at is not None
    assert (await svc.get_index(pid, ix.id)).generation == 2

    await svc.upload_file(pid, did, display_name="a.txt", content=b"alpha v2")
    await svc.delete_directory_file(pid, did, directory_file_id=b.id)
    c = await svc.upload_file(pid, did, display_name="c.txt", content=b"gamma")
    job2 = await svc.start_sync(pid, ix.id)
    plan = {(i.source_file_id, i.action) for i in await svc.list_job_items(job2.id)}
    assert plan == {(a.id, "upsert"), (b.id, "delete"), (c.id, "upsert")}
    await _run_job(svc, "w2", {})
    parsed = await svc.list_directory_files(pid, ix.output_directory_id)
    assert [(f.display_name, f.version) for f in parsed.items] == [("a.txt", 2), ("c.txt", 1)]
    assert parsed.items[0].id == parsed_a  # stable parsed id across versions
    read = await svc.read_file(pid, ix.id, parsed_a)
    assert read.content == "alpha v2"
    assert (await svc.get_index(pid, ix.id)).generation == 3


async def test_concurrent_claim_exactly_one_wins(svc: FilesService) -> None:
    pid, did = await _project_with_dir(svc)
    await svc.upload_file(pid, did, display_name="a.txt", content=b"alpha")
    ix = await svc.create_index(pid, name="ix", description="", source_directory_id=did)
    job = await svc.start_sync(pid, ix.id)
    results = await asyncio.gather(*(svc.claim_job(f"w{i}", 30) for i in range(4)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert winners[0].id == job.id and winners[0].attempts == 1 and winners[0].status == "running"
    assert await svc.claim_job("late", 30) is None


async def test_lease_expiry_and_reclaim(svc: FilesService, clock: FakeClock) -> None:
    pid, did = await _project_with_dir(svc)
    a = await svc.upload_file(pid, did, display_name="a.txt", content=b"alpha")
    b = await svc.upload_file(pid, did, display_name="b.txt", content=b"beta")
    ix = await svc.create_index(pid, name="ix", description="", source_directory_id=did)
    await svc.start_sync(pid, ix.id)
    first = await svc.claim_job("A", 10)
    assert first is not None
    assert first.lease_until == clock.now + timedelta(seconds=10)
    await svc.prepare_parsed_file(ix.id, a.id)
    await svc.complete_job_item(first.id, "A", a.id, text="alpha", chunk_count=1)
    renewed = await svc.renew_lease(first.id, "A", 10)
    assert renewed.lease_until is not None and first.lease_until is not None
    assert renewed.lease_until > first.lease_until
    assert await svc.claim_job("B", 10) is None
    clock.advance(11)
    second = await svc.claim_job("B", 10)
    assert second is not None
    assert (second.id, second.worker_id, second.attempts) == (first.id, "B", 2)
    with pytest.raises(FailedPrecondition):
        await svc.renew_lease(first.id, "A", 10)
    with pytest.raises(FailedPrecondition):
        await svc.complete_job_item(first.id, "A", b.id, text="beta")
    with pytest.raises(FailedPrecondition):
        await svc.finish_job(first.id, "A", "succeeded")
    # Work committed under the first lease is not redone.
    pending = [i.source_file_id for i in await svc.list_job_items(first.id) if i.status == "pending"]
    assert pending == [b.id]
    await svc.complete_job_item(first.id, "B", b.id, text="beta", chunk_count=1)
    done = await svc.finish_job(first.id, "B", "succeeded")
    assert done.done_items == 2
    assert (await svc.finish_job(first.id, "B", "succeeded")).id == done.id  # repeat is a no-op
    with pytest.raises(FailedPrecondition):
        await svc.renew_lease(first.id, "B", 10)
    with pytest.raises(NotFound):
        await svc.renew_lease("missing", "B", 10)


async def test_a_job_whose_leases_keep_expiring_is_failed(catalog: SqlCatalog, clock: FakeClock) -> None:
    svc = FilesService(catalog, max_job_attempts=2)
    pid, did = await _project_with_dir(svc)
    await svc.upload_file(pid, did, display_name="a.txt", content=b"alpha")
    ix = await svc.create_index(pid, name="ix", description="", source_directory_id=did)
    job = await svc.start_sync(pid, ix.id)
    generation = (await svc.get_index(pid, ix.id)).generation
    assert (await svc.claim_job("A", 10)) is not None
    clock.advance(11)
    assert (await svc.claim_job("B", 10)) is not None  # second attempt
    clock.advance(11)
    assert await svc.claim_job("C", 10) is None  # a third is refused: the job is failed instead
    failed = await svc.get_job(job.id)
    assert failed.status == "failed" and "2 attempts" in failed.error
    assert (await svc.get_index(pid, ix.id)).generation == generation + 1


async def test_complete_job_item_is_idempotent(svc: FilesService) -> None:
    pid, did = await _project_with_dir(svc)
    a = await svc.upload_file(pid, did, display_name="a.txt", content=b"alpha")
    ix = await svc.create_index(pid, name="ix", description="", source_directory_id=did)
    await svc.start_sync(pid, ix.id)
    job = await svc.claim_job("w", 30)
    assert job is not None
    prepared = await svc.prepare_parsed_file(ix.id, a.id)
    assert (prepared.version, prepared.index_config_json) == (1, "{}")
    assert await svc.prepare_parsed_file(ix.id, a.id) == prepared
    parsed_id = prepared.parsed_file_id
    pages = [Page(1, 0, 3), Page(2, 3, 5)]
    await svc.complete_job_item(job.id, "w", a.id, text="first", pages=pages, chunk_count=2)
    await svc.complete_job_item(job.id, "w", a.id, text="second", pages=pages, chunk_count=9)
    assert (await svc.get_job(job.id)).done_items == 1
    [item] = await svc.list_job_items(job.id)
    assert (item.status, item.chunk_count, item.parsed_file_id) == ("done", 2, parsed_id)
    parsed = await svc.catalog.get_parsed_text(pid, ix.id, parsed_id)
    assert parsed.text == "first" and parsed.pages == tuple(pages) and parsed.source_version == 1
    with pytest.raises(NotFound):
        await svc.complete_job_item(job.id, "w", "no-such-item")
    with pytest.raises(InvalidArgument):
        await svc.finish_job(job.id, "w", "cancelled")


async def test_failed_item_and_cancel(svc: FilesService) -> None:
    pid, did = await _project_with_dir(svc)
    a = await svc.upload_file(pid, did, display_name="a.bin", content=b"\x00\x01")
    ix = await svc.create_index(pid, name="ix", description="", source_directory_id=did)
    with pytest.raises(FailedPrecondition):
        await svc.cancel_sync(pid, ix.id)
    await svc.start_sync(pid, ix.id)
    job = await svc.claim_job("w", 30)
    assert job is not None
    await svc.complete_job_item(job.id, "w", a.id, error="unparseable")
    [item] = await svc.list_job_items(job.id)
    assert (item.status, item.error) == ("done", "unparseable")
    await svc.finish_job(job.id, "w", "failed", "1 item failed")
    assert (await svc.find_files(pid, ix.id)).total_size == 0
    # The failed file is planned again on the next sync; cancel it this time.
    job2 = await svc.start_sync(pid, ix.id)
    assert job2.id != job.id and job2.total_items == 1
    cancelled = await svc.cancel_sync(pid, ix.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert not (await svc.get_index(pid, ix.id)).sync_in_progress
    assert await svc.claim_job("w", 30) is None


async def _indexed(svc: FilesService, files: dict[str, str]) -> tuple[str, str, dict[str, str]]:
    pid, did = await _project_with_dir(svc)
    for name in files:
        await svc.upload_file(pid, did, display_name=name, content=b"raw")
    ix = await svc.create_index(pid, name="ix", description="", source_directory_id=did)
    await svc.start_sync(pid, ix.id)
    await _run_job(svc, "w", files)
    found = await svc.find_files(pid, ix.id)
    return pid, ix.id, {f.file_name: f.file_id for f in found.items}


async def test_find_files(svc: FilesService) -> None:
    names = {f"Report-{i}.pdf": f"report {i}" for i in range(5)} | {"notes.md": "n", "Ünïcode.txt": "u"}
    pid, ix, ids = await _indexed(svc, names)
    assert len(ids) == 7
    exact = await svc.find_files(pid, ix, file_name="notes.md")
    assert [(f.file_name, f.file_id) for f in exact.items] == [("notes.md", ids["notes.md"])]
    assert (await svc.find_files(pid, ix, file_name="NOTES.md")).total_size == 0
    contains = await svc.find_files(pid, ix, file_name_contains="report")
    assert contains.total_size == 5
    assert [f.file_name for f in contains.items] == sorted(n for n in names if n.startswith("Report"))
    assert [f.file_name for f in (await svc.find_files(pid, ix, file_name_contains="ÜNÏ")).items] == ["Ünïcode.txt"]
    got: list[str] = []
    token = ""
    while True:
        page = await svc.find_files(pid, ix, page_size_=3, page_token=token)
        assert page.total_size == 7
        got += [f.file_name for f in page.items]
        token = page.next_page_token
        if not token:
            break
    assert got == sorted(names)


async def test_grep_and_read(svc: FilesService) -> None:
    body = "héllo wörld. Hello again, hello! 😀 hello end"
    pid, ix, ids = await _indexed(svc, {"doc.txt": body, "zero.txt": "a\x00b"})
    fid = ids["doc.txt"]
    page = await svc.grep_file(pid, ix, fid, "(?i)h[eé]llo", context_chars=3)
    # Python's re is the oracle for character offsets (RE2 works on UTF-8 bytes underneath).
    expected = [(m.start(), m.end()) for m in re.finditer("(?i)h[eé]llo", body)]
    assert len(expected) == 4 and expected[-1] == (35, 40)
    assert [(m.start_char, m.end_char) for m in page.items] == expected
    assert page.total_size == 4 and page.next_page_token == ""
    for m in page.items:
        assert body[m.start_char : m.end_char].lower() in ("héllo", "hello")
        assert m.content == body[max(0, m.start_char - 3) : m.end_char + 3]
    # Pagination over matches.
    first = await svc.grep_file(pid, ix, fid, "(?i)h[eé]llo", page_size_=3)
    assert len(first.items) == 3 and first.total_size == 4 and first.next_page_token
    rest = await svc.grep_file(pid, ix, fid, "(?i)h[eé]llo", page_size_=3, page_token=first.next_page_token)
    assert [(m.start_char, m.end_char) for m in rest.items] == [expected[3]] and rest.next_page_token == ""
    # Empty matches terminate and advance one character at a time.
    empties = await svc.grep_file(pid, ix, ids["zero.txt"], "x*")
    assert [(m.start_char, m.end_char) for m in empties.items] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    with pytest.raises(InvalidArgument, match="pattern"):
        await svc.grep_file(pid, ix, fid, "(unclosed")
    with pytest.raises(InvalidArgument, match="pattern"):
        await svc.grep_file(pid, ix, fid, r"(a)\1")  # backreferences are not linear-time

    assert (await svc.read_file(pid, ix, fid)).content == body
    part = await svc.read_file(pid, ix, fid, offset=body.index("😀"), max_length=1)
    assert (part.content, part.total_chars) == ("😀", len(body))
    assert (await svc.read_file(pid, ix, fid, offset=35)).content == body[35:]
    assert (await svc.read_file(pid, ix, fid, offset=10_000)).content == ""
    with pytest.raises(InvalidArgument):
        await svc.read_file(pid, ix, fid, offset=-1)
    # NUL cannot be stored in PostgreSQL text; it becomes U+FFFD so offsets stay the same.
    assert (await svc.read_file(pid, ix, ids["zero.txt"])).content == "a\ufffdb"
    with pytest.raises(NotFound):
        await svc.read_file(pid, ix, "missing")
    with pytest.raises(NotFound):
        await svc.grep_file(pid, ix, "missing", "x")


async def test_other_projects_get_not_found(svc: FilesService) -> None:
    pid, ix, ids = await _indexed(svc, {"doc.txt": "secret text"})
    index = await svc.get_index(pid, ix)
    intruder = (await svc.ensure_project("intruder")).id
    fid = ids["doc.txt"]
    calls = [
        svc.get_index(intruder, ix),
        svc.delete_index(intruder, ix),
        svc.start_sync(intruder, ix),
        svc.cancel_sync(intruder, ix),
        svc.get_directory(intruder, index.source_directory_id),
        svc.list_directory_files(intruder, index.source_directory_id),
        svc.upload_file(intruder, index.source_directory_id, display_name="x", content=b"x"),
        svc.create_index(intruder, name="x", description="", source_directory_id=index.source_directory_id),
        svc.find_files(intruder, ix),
        svc.grep_file(intruder, ix, fid, "secret"),
        svc.read_file(intruder, ix, fid),
        svc.get_file_status(intruder, ix, "doc.txt"),
        svc.get_directory_file(intruder, index.source_directory_id, unique_id="doc.txt"),
        svc.delete_directory_file(intruder, index.source_directory_id, unique_id="doc.txt"),
        svc.get_page_image(intruder, fid, 0),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            await call
    assert (await svc.list_indexes(intruder)).total_size == 0
    assert await svc.list_directories(intruder) == []
    assert (await svc.read_file(pid, ix, fid)).content == "secret text"
    with pytest.raises(FailedPrecondition):
        await svc.upload_file(pid, index.output_directory_id, display_name="x", content=b"x")


# -- issue 3: pipelines, file refs, resync, file status, page images


async def test_index_config_kind_and_listing_filters(svc: FilesService) -> None:
    pid, did = await _project_with_dir(svc)
    ix = await svc.create_index(
        pid, name="ix", description="", source_directory_id=did, config_json='{"page_screenshots": true}'
    )
    assert (ix.kind, ix.config_json, ix.last_job_failed_items) == ("index", '{"page_screenshots":true}', 0)
    plain = await svc.create_index(pid, name="plain", description="", source_directory_id=did)
    assert plain.config_json == "{}"
    for bad in ("[]", "nope"):
        with pytest.raises(InvalidArgument, match="config_json"):
            await svc.create_index(pid, name="x", description="", source_directory_id=did, config_json=bad)
    pipe = await svc.upsert_pipeline(pid, "ix", '{"pipeline": {"pipeline_type": "MANAGED"}}')
    assert [i.id for i in (await svc.list_indexes(pid, name="ix")).items] == [ix.id, pipe.id]
    assert [i.id for i in (await svc.list_indexes(pid, kind="pipeline")).items] == [pipe.id]
    assert [i.id for i in (await svc.list_indexes(pid, kind="index")).items] == [ix.id, plain.id]
    assert [i.id for i in (await svc.list_indexes(pid, name="ix", kind="index")).items] == [ix.id]
    assert (await svc.list_indexes(pid, name="IX")).total_size == 0
    with pytest.raises(InvalidArgument, match="kind"):
        await svc.list_indexes(pid, kind="table")


async def test_upsert_pipeline_owns_its_source_directory(svc: FilesService, database: Database) -> None:
    pid = (await svc.ensure_project("proj")).id
    created = await asyncio.gather(*(svc.upsert_pipeline(pid, "docs", '{"v": 1}') for _ in range(5)))
    assert len({p.id for p in created}) == 1  # racing upserts of one name: one pipeline
    pipe = created[0]
    assert (pipe.kind, pipe.name, pipe.config_json) == ("pipeline", "docs", '{"v":1}')
    source = await svc.get_directory(pid, pipe.source_directory_id)
    assert (source.name, source.type) == ("docs", "pipeline")
    assert (await svc.get_directory(pid, pipe.output_directory_id)).type == "index"
    assert len(await svc.list_directories(pid)) == 2

    again = await svc.upsert_pipeline(pid, "docs", '{"v": 2}')
    assert (again.id, again.config_json, again.source_directory_id) == (pipe.id, '{"v":2}', pipe.source_directory_id)
    assert (await svc.upsert_pipeline(pid, "docs", "")).config_json == "{}"
    other = await svc.upsert_pipeline(pid, "other", "")
    assert other.id != pipe.id and other.source_directory_id != pipe.source_directory_id
    with pytest.raises(InvalidArgument, match="name"):
        await svc.upsert_pipeline(pid, "", "")
    with pytest.raises(InvalidArgument, match="config_json"):
        await svc.upsert_pipeline(pid, "docs", "[1]")
    with pytest.raises(NotFound):
        await svc.upsert_pipeline("no-such-project", "docs", "")

    # The prepared parsed file carries the pipeline's config to the worker.
    await svc.upsert_pipeline(pid, "docs", '{"page_screenshots": true}')
    doc = await svc.upload_file(pid, pipe.source_directory_id, display_name="d1", content=b"text", unique_id="d1")
    await svc.start_sync(pid, pipe.id)
    prepared = await svc.prepare_parsed_file(pipe.id, doc.id)
    assert prepared.index_config_json == '{"page_screenshots":true}'

    # Deleting the pipeline deletes the source directory it owns (files and unshared blobs too).
    assert (await _inspect(database, _counts))["blobs"] == 1
    await svc.delete_index(pid, pipe.id)
    assert (await _inspect(database, _counts))["blobs"] == 0
    with pytest.raises(NotFound):
        await svc.get_directory(pid, pipe.source_directory_id)
    with pytest.raises(NotFound):
        await svc.get_source_file(doc.id)
    assert [d.name for d in await svc.list_directories(pid)] == ["other", "other (parsed)"]
    recreated = await svc.upsert_pipeline(pid, "docs", "")
    assert recreated.id != pipe.id


async def test_ensure_directory_is_get_or_create(svc: FilesService) -> None:
    pid = (await svc.ensure_project("proj")).id
    made = await asyncio.gather(*(svc.ensure_directory(pid, "files", "uploads", "files") for _ in range(5)))
    assert len({x.id for x in made}) == 1
    assert (made[0].name, made[0].type, made[0].description) == ("files", "files", "uploads")
    user = await svc.ensure_directory(pid, "files", "", "")
    assert user.type == "user" and user.id != made[0].id
    assert (await svc.ensure_directory(pid, "files", "", "user")).id == user.id
    assert len(await svc.list_directories(pid)) == 2
    with pytest.raises(InvalidArgument, match="type"):
        await svc.ensure_directory(pid, "out", "", "index")
    with pytest.raises(InvalidArgument, match="name"):
        await svc.ensure_directory(pid, "", "", "user")
    with pytest.raises(NotFound):
        await svc.ensure_directory("no-such-project", "files", "", "files")


async def test_get_add_and_delete_directory_files(svc: FilesService, database: Database) -> None:
    pid, uploads = await _project_with_dir(svc)
    target = (await svc.create_directory(pid, "target", "", "user")).id
    src = await svc.upload_file(
        pid, uploads, display_name="a.pdf", content=b"%PDF bytes", content_type="application/pdf",
        external_file_id="ext-1", metadata_json='{"k": 1}',
    )
    got = await svc.get_directory_file(pid, uploads, directory_file_id=src.id)
    assert got == src and got.content == b""
    by_uid = await svc.get_directory_file(pid, uploads, unique_id="a.pdf", include_content=True)
    assert (by_uid.id, by_uid.content) == (src.id, b"%PDF bytes")
    for ids in ({}, {"directory_file_id": src.id, "unique_id": "a.pdf"}):
        with pytest.raises(InvalidArgument, match="directory_file_id"):
            await svc.get_directory_file(pid, uploads, **ids)
        with pytest.raises(InvalidArgument, match="directory_file_id"):
            await svc.delete_directory_file(pid, uploads, **ids)
    with pytest.raises(NotFound):
        await svc.get_directory_file(pid, target, directory_file_id=src.id)  # another directory

    added = await svc.add_directory_file(pid, target, src.id)
    assert added.id != src.id and added.directory_id == target
    assert (added.display_name, added.unique_id, added.metadata_json) == ("a.pdf", src.id, "{}")
    assert (added.file_id, added.size_bytes, added.content_type, added.external_file_id) == (
        src.file_id, src.size_bytes, "application/pdf", "ext-1"
    )
    assert added.version == 1
    same = await svc.add_directory_file(pid, target, src.id)
    assert (same.id, same.version) == (added.id, 1)  # nothing changed
    renamed = await svc.add_directory_file(pid, target, src.id, display_name="b.pdf", metadata_json='{"x": 2}')
    assert (renamed.id, renamed.version, renamed.display_name, renamed.metadata_json) == (
        added.id, 2, "b.pdf", '{"x":2}'
    )
    # Replaces an upload with the same unique_id (content now shared), like UploadFile.
    up = await svc.upload_file(pid, target, display_name="c.txt", content=b"other", unique_id="c")
    replaced = await svc.add_directory_file(pid, target, src.id, unique_id="c")
    assert (replaced.id, replaced.version, replaced.file_id) == (up.id, 2, src.file_id)
    with pytest.raises(InvalidArgument, match="metadata"):
        await svc.add_directory_file(pid, target, src.id, metadata_json="[]")
    with pytest.raises(InvalidArgument, match="source_directory_file_id"):
        await svc.add_directory_file(pid, target, "")
    with pytest.raises(NotFound):
        await svc.add_directory_file(pid, target, "no-such-file")
    intruder = (await svc.ensure_project("intruder")).id
    theirs = (await svc.create_directory(intruder, "docs", "", "user")).id
    with pytest.raises(NotFound):
        await svc.add_directory_file(intruder, theirs, src.id)  # an upload of another project

    # Output directories refuse it; a parsed file is not an upload.
    ix = await svc.create_index(pid, name="ix", description="", source_directory_id=uploads)
    await svc.start_sync(pid, ix.id)
    await _run_job(svc, "w", {})
    with pytest.raises(FailedPrecondition):
        await svc.add_directory_file(pid, ix.output_directory_id, src.id)
    [parsed] = (await svc.list_directory_files(pid, ix.output_directory_id)).items
    with pytest.raises(FailedPrecondition, match="parsed"):
        await svc.add_directory_file(pid, target, parsed.id)

    # The shared blob outlives the original upload while a copy still uses it.
    await svc.delete_directory_file(pid, uploads, unique_id="a.pdf")
    with pytest.raises(NotFound):
        await svc.delete_directory_file(pid, uploads, unique_id="a.pdf")
    kept = await svc.get_directory_file(pid, target, directory_file_id=added.id, include_content=True)
    assert kept.content == b"%PDF bytes"
    assert (await _inspect(database, _counts))["blobs"] == 1
    await svc.delete_directory_file(pid, target, directory_file_id=added.id)
    await svc.delete_directory_file(pid, target, unique_id="c")
    assert (await svc.list_directory_files(pid, target)).total_size == 0
    assert (await _inspect(database, _counts))["blobs"] == 0  # the last user of the content is gone


async def test_listing_with_content_is_bounded(svc: FilesService, monkeypatch: pytest.MonkeyPatch) -> None:
    pid, did = await _project_with_dir(svc)
    bodies = {f"f{i:03d}.txt": f"body {i}".encode() * (i + 1) for i in range(105)}
    for name, body in bodies.items():
        await svc.upload_file(pid, did, display_name=name, content=body)
    plain = await svc.list_directory_files(pid, did, page_size_=1000)
    assert len(plain.items) == 105 and all(f.content == b"" for f in plain.items)
    capped = await svc.list_directory_files(pid, did, page_size_=1000, include_content=True)
    assert len(capped.items) == 100 and capped.next_page_token and capped.total_size == 105
    assert all(f.content == bodies[f.display_name] for f in capped.items)

    # A page also ends once its bytes pass the budget (always at least one file), and resumes after.
    monkeypatch.setattr(sql_adapter, "CONTENT_PAGE_BYTES", 300)
    seen: dict[str, bytes] = {}
    token = ""
    while True:
        page = await svc.list_directory_files(pid, did, page_size_=50, page_token=token, include_content=True)
        sizes = [len(f.content) for f in page.items]
        assert len(sizes) == 1 or sum(sizes) <= 300
        seen |= {f.display_name: f.content for f in page.items}
        token = page.next_page_token
        if not token:
            break
    assert seen == bodies


async def _claim(svc: FilesService, worker: str) -> str:
    job = await svc.claim_job(worker, 30)
    assert job is not None
    return job.id


async def test_start_sync_during_a_job_plans_a_resync_when_it_ends(svc: FilesService) -> None:
    pid, did = await _project_with_dir(svc)
    a = await svc.upload_file(pid, did, display_name="a.txt", content=b"alpha")
    ix = await svc.create_index(pid, name="ix", description="", source_directory_id=did)
    first = await svc.start_sync(pid, ix.id)
    job_id = await _claim(svc, "w")
    b = await svc.upload_file(pid, did, display_name="b.txt", content=b"beta")  # added while it runs
    assert (await svc.start_sync(pid, ix.id)).id == first.id
    assert (await svc.start_sync(pid, ix.id)).id == first.id
    await svc.complete_job_item(job_id, "w", a.id, text="alpha", chunk_count=1)
    await svc.finish_job(job_id, "w", "succeeded")
    index = await svc.get_index(pid, ix.id)
    assert index.last_job is not None and index.last_job.id != first.id and index.sync_in_progress
    assert [(i.source_file_id, i.action) for i in await svc.list_job_items(index.last_job.id)] == [(b.id, "upsert")]
    await _run_job(svc, "w", {})
    index = await svc.get_index(pid, ix.id)
    assert not index.sync_in_progress
    assert {f.file_name for f in (await svc.find_files(pid, ix.id)).items} == {"a.txt", "b.txt"}

    # Nothing new by the time the job ends: no extra (empty) job, the real one stays the last job.
    last = await svc.start_sync(pid, ix.id)  # plans nothing: succeeds at once
    assert last.status == "succeeded"
    await svc.upload_file(pid, did, display_name="c.txt", content=b"gamma")
    busy = await svc.start_sync(pid, ix.id)
    await svc.start_sync(pid, ix.id)  # resync requested...
    await _run_job(svc, "w", {})  # ...but this job already took c.txt
    index = await svc.get_index(pid, ix.id)
    assert index.last_job is not None and index.last_job.id == busy.id and not index.sync_in_progress

    # A cancel honours the request too.
    await svc.upload_file(pid, did, display_name="d.txt", content=b"delta")
    cancelled_id = (await svc.start_sync(pid, ix.id)).id
    await svc.start_sync(pid, ix.id)
    assert (await svc.cancel_sync(pid, ix.id)).id == cancelled_id
    index = await svc.get_index(pid, ix.id)
    assert index.last_job is not None and index.last_job.id != cancelled_id and index.sync_in_progress
    await _run_job(svc, "w", {})
    assert (await svc.find_files(pid, ix.id)).total_size == 4


async def test_a_given_up_job_plans_the_requested_resync(catalog: SqlCatalog, clock: FakeClock) -> None:
    svc = FilesService(catalog, max_job_attempts=1)
    pid, did = await _project_with_dir(svc)
    await svc.upload_file(pid, did, display_name="a.txt", content=b"alpha")
    ix = await svc.create_index(pid, name="ix", description="", source_directory_id=did)
    job = await svc.start_sync(pid, ix.id)
    assert await svc.claim_job("A", 10) is not None
    await svc.start_sync(pid, ix.id)
    clock.advance(11)
    retried = await svc.claim_job("B", 10)  # gives the first up, then claims the resync it planned
    assert retried is not None and retried.id != job.id and retried.attempts == 1
    assert (await svc.get_job(job.id)).status == "failed"


async def test_start_sync_racing_the_end_of_a_job_never_loses_a_file(svc: FilesService) -> None:
    pid, did = await _project_with_dir(svc)
    ix = await svc.create_index(pid, name="ix", description="", source_directory_id=did)
    for n in range(6):
        await svc.upload_file(pid, did, display_name=f"first-{n}", content=b"x")
        await svc.start_sync(pid, ix.id)
        job_id = await _claim(svc, "w")
        for item in await svc.list_job_items(job_id):
            await svc.complete_job_item(job_id, "w", item.source_file_id, text="x", chunk_count=1)
        late = await svc.upload_file(pid, did, display_name=f"late-{n}", content=b"y")
        await asyncio.gather(svc.start_sync(pid, ix.id), svc.finish_job(job_id, "w", "succeeded"))
        # Either StartSync saw the job running (resync planned at its end) or saw it ended (planned now).
        index = await svc.get_index(pid, ix.id)
        assert index.last_job is not None and index.last_job.status == "pending"
        planned = {i.source_file_id for i in await svc.list_job_items(index.last_job.id)}
        assert late.id in planned
        await _run_job(svc, "w", {})


async def test_file_status(svc: FilesService) -> None:
    pid, did = await _project_with_dir(svc)
    a = await svc.upload_file(pid, did, display_name="a.txt", content=b"alpha", unique_id="doc-a")
    b = await svc.upload_file(pid, did, display_name="b.txt", content=b"beta", unique_id="doc-b")
    ix = await svc.create_index(pid, name="ix", description="", source_directory_id=did)

    async def status(uid: str = "doc-a") -> tuple[str, str, str]:
        got = await svc.get_file_status(pid, ix.id, uid)
        return got.status, got.error, got.job_id

    first = await svc.get_file_status(pid, ix.id, "doc-a")
    assert (first.status, first.job_id, first.file.id) == ("NOT_STARTED", "", a.id)
    job1 = await svc.start_sync(pid, ix.id)
    assert await status() == ("IN_PROGRESS", "", job1.id)
    await _claim(svc, "w")
    await svc.complete_job_item(job1.id, "w", a.id, error="cannot parse")
    assert await status() == ("ERROR", "cannot parse", job1.id)
    assert await status("doc-b") == ("IN_PROGRESS", "", job1.id)
    await svc.complete_job_item(job1.id, "w", b.id, text="beta", chunk_count=1)
    await svc.finish_job(job1.id, "w", "succeeded")
    assert await status("doc-b") == ("SUCCESS", "", job1.id)
    assert await status() == ("ERROR", "cannot parse", job1.id)
    assert (await svc.get_index(pid, ix.id)).last_job_failed_items == 1

    # A new version: the old error no longer applies.
    await svc.upload_file(pid, did, display_name="a.txt", content=b"alpha v2", unique_id="doc-a")
    assert await status() == ("NOT_STARTED", "", "")
    job2 = await svc.start_sync(pid, ix.id)
    assert await status() == ("IN_PROGRESS", "", job2.id)
    assert (await svc.get_index(pid, ix.id)).last_job_failed_items == 0
    await _claim(svc, "w")
    # Another new version while job2 runs: job2 will not pick it up...
    await svc.complete_job_item(job2.id, "w", a.id, text="alpha v2", chunk_count=1)
    await svc.upload_file(pid, did, display_name="a.txt", content=b"alpha v3", unique_id="doc-a")
    assert await status() == ("NOT_STARTED", "", "")
    # ...until a StartSync asks for a resync.
    await svc.start_sync(pid, ix.id)
    assert await status() == ("IN_PROGRESS", "", job2.id)
    await svc.finish_job(job2.id, "w", "succeeded")
    job3 = await svc.get_index(pid, ix.id)
    assert job3.last_job is not None
    assert await status() == ("IN_PROGRESS", "", job3.last_job.id)
    assert (await svc.cancel_sync(pid, ix.id)).id == job3.last_job.id
    assert await status() == ("CANCELLED", "", job3.last_job.id)
    job4 = await svc.start_sync(pid, ix.id)
    await _claim(svc, "w")
    await svc.finish_job(job4.id, "w", "failed", "worker crashed")
    assert await status() == ("ERROR", "worker crashed", job4.id)
    assert await status("doc-b") == ("SUCCESS", "", job1.id)
    with pytest.raises(NotFound):
        await svc.get_file_status(pid, ix.id, "no-such-doc")
    with pytest.raises(InvalidArgument, match="unique_id"):
        await svc.get_file_status(pid, ix.id, "")
    intruder = (await svc.ensure_project("intruder")).id
    with pytest.raises(NotFound):
        await svc.get_file_status(intruder, ix.id, "doc-a")


def _image(page: int, content: bytes = b"png", width: int = 10) -> PageImage:
    return PageImage(
        file_id="", page_index=page, content=content, content_type="image/png", width=width, height=20, size_bytes=0
    )


async def test_page_images(svc: FilesService) -> None:
    pid, did = await _project_with_dir(svc)
    a = await svc.upload_file(pid, did, display_name="a.pdf", content=b"pdf a")
    b = await svc.upload_file(pid, did, display_name="b.pdf", content=b"pdf b")
    ix = await svc.create_index(pid, name="ix", description="", source_directory_id=did)
    other = await svc.create_index(pid, name="other", description="", source_directory_id=did)
    job = await svc.start_sync(pid, ix.id)
    await _claim(svc, "w")
    pa = (await svc.prepare_parsed_file(ix.id, a.id)).parsed_file_id
    pb_ = (await svc.prepare_parsed_file(ix.id, b.id)).parsed_file_id
    foreign = (await svc.prepare_parsed_file(other.id, a.id)).parsed_file_id

    await svc.put_page_images(job.id, "w", pa, [_image(0, b"p0"), _image(1, b"page one")])
    await svc.put_page_images(job.id, "w", pa, [_image(1, b"page 1 again", width=30), _image(2, b"p2")])
    await svc.put_page_images(job.id, "w", pb_, [_image(0, b"b0")])
    one = await svc.get_page_image(pid, pa, 1)
    assert (one.file_id, one.page_index, one.content, one.width, one.height, one.size_bytes) == (
        pa, 1, b"page 1 again", 30, 20, 12
    )
    listed = await svc.list_page_images(pid, [pb_, pa, "no-such-file"])
    assert [(i.file_id, i.page_index, i.size_bytes, i.content) for i in listed] == sorted(
        [(pa, 0, 2, b""), (pa, 1, 12, b""), (pa, 2, 2, b""), (pb_, 0, 2, b"")]
    )
    await svc.put_page_images(job.id, "w", pa, [_image(5, b"five")], replace=True)
    assert [i.page_index for i in await svc.list_page_images(pid, [pa])] == [5]
    await svc.put_page_images(job.id, "w", pb_, [], replace=True)
    assert await svc.list_page_images(pid, [pb_]) == []

    with pytest.raises(FailedPrecondition):
        await svc.put_page_images(job.id, "intruder", pa, [_image(0)])
    with pytest.raises(NotFound):
        await svc.put_page_images(job.id, "w", foreign, [_image(0)])  # a parsed file of another index
    with pytest.raises(NotFound):
        await svc.put_page_images("no-such-job", "w", pa, [_image(0)])
    bad = [
        ([_image(-1)], "page_index"),
        ([_image(0), _image(0)], "page_index"),
        ([_image(0, b"")], "content"),
        ([dataclasses.replace(_image(0), content_type="")], "content_type"),
        ([_image(0, width=-1)], "width"),
    ]
    for images, field in bad:
        with pytest.raises(InvalidArgument, match=rf"images\[\d\]\.{field}"):
            await svc.put_page_images(job.id, "w", pa, images)
    with pytest.raises(InvalidArgument, match="parsed_file_id"):
        await svc.put_page_images(job.id, "w", "", [_image(0)])
    with pytest.raises(NotFound):
        await svc.get_page_image(pid, pa, 0)
    with pytest.raises(InvalidArgument, match="page_index"):
        await svc.get_page_image(pid, pa, -1)
    with pytest.raises(InvalidArgument, match="file_ids"):
        await svc.list_page_images(pid, [str(n) for n in range(1001)])
    intruder = (await svc.ensure_project("intruder")).id
    with pytest.raises(NotFound):
        await svc.get_page_image(intruder, pa, 5)
    assert await svc.list_page_images(intruder, [pa]) == []
    # The source's id and its unique_id (what LlamaIndex names an uploaded file by) find the same image.
    for alias in (a.id, a.unique_id):
        assert (await svc.get_page_image(pid, alias, 5)).content == b"five"
    with pytest.raises(NotFound):
        await svc.get_page_image(intruder, a.id, 5)

    # Images go with their parsed file: a delete item, or the index itself.
    await svc.complete_job_item(job.id, "w", a.id, text="a", chunk_count=1)
    await svc.complete_job_item(job.id, "w", b.id, text="b", chunk_count=1)
    await svc.finish_job(job.id, "w", "succeeded")
    await svc.delete_directory_file(pid, did, directory_file_id=a.id)
    await svc.start_sync(pid, ix.id)
    await _run_job(svc, "w", {})
    assert await svc.list_page_images(pid, [pa]) == []
    job2 = await svc.start_sync(pid, ix.id)
    await svc.upload_file(pid, did, display_name="c.pdf", content=b"pdf c")
    job2 = await svc.start_sync(pid, ix.id)
    await _claim(svc, "w")
    [item] = await svc.list_job_items(job2.id)
    pc = (await svc.prepare_parsed_file(ix.id, item.source_file_id)).parsed_file_id
    await svc.put_page_images(job2.id, "w", pc, [_image(0)])
    await svc.delete_index(pid, ix.id)
    assert await svc.list_page_images(pid, [pc]) == []


# -- rebuild jobs

async def test_a_rebuild_job_re_indexes_every_parsed_text_and_changes_no_text(svc: FilesService) -> None:
    pid, did = await _project_with_dir(svc)
    for name in ("a.txt", "b.txt"):
        await svc.upload_file(pid, did, display_name=name, content=f"content of {name}".encode(),
                              metadata_json='{"team": "x"}')
    ix = await svc.create_index(pid, name="ix", description="", source_directory_id=did)
    await svc.start_sync(pid, ix.id)
    await _run_job(svc, "w", {"a.txt": "parsed a", "b.txt": "parsed b"})
    generation = (await svc.get_index(pid, ix.id)).generation

    with pytest.raises(InvalidArgument, match="unknown engine"):
        await svc.start_rebuild(pid, ix.id, ["graph"])
    job = await svc.start_rebuild(pid, ix.id, ["sparse"])
    assert (job.kind, job.engines, job.total_items, job.status) == ("rebuild", "sparse", 2, "pending")
    with pytest.raises(FailedPrecondition):  # one job at a time, rebuild or sync
        await svc.start_rebuild(pid, ix.id, [])
    assert (await svc.start_sync(pid, ix.id)).id == job.id  # a sync request waits for it

    claimed = await svc.claim_job("w2", 30)
    assert claimed is not None and claimed.id == job.id and claimed.kind == "rebuild"
    items = await svc.list_job_items(job.id)
    assert {i.action for i in items} == {"rebuild"} and all(i.parsed_file_id for i in items)
    with pytest.raises(FailedPrecondition):  # lease-checked
        await svc.get_parsed_file(job.id, "someone-else", items[0].source_file_id)
    texts = {}
    for item in items:
        parsed = await svc.get_parsed_file(job.id, "w2", item.source_file_id)
        assert parsed.parsed_file_id == item.parsed_file_id and parsed.version == 1
        assert json.loads(parsed.file.metadata_json) == {"team": "x"}
        texts[parsed.file.display_name] = parsed.text
        await svc.complete_job_item(job.id, "w2", item.source_file_id, chunk_count=3)
    assert texts == {"a.txt": "parsed a", "b.txt": "parsed b"}
    await svc.finish_job(job.id, "w2", "succeeded")
    after = await svc.get_index(pid, ix.id)
    assert after.generation == generation + 1  # cached answers of the old copy are not served
    for item in items:
        assert (await svc.read_file(pid, ix.id, item.parsed_file_id)).content.startswith("parsed ")
    both = await svc.start_rebuild(pid, ix.id, [])
    assert both.engines == "dense,sparse"


# -- engine drops

async def test_deleting_an_index_records_an_engine_drop_until_it_is_completed(
    svc: FilesService, clock: FakeClock
) -> None:
    pid, did = await _project_with_dir(svc)
    a = await svc.create_index(pid, name="a", description="", source_directory_id=did)
    b = await svc.create_index(pid, name="b", description="", source_directory_id=did)
    assert await svc.list_engine_drops(10, 0) == []
    await svc.delete_index(pid, a.id)
    clock.advance(5)
    await svc.delete_index(pid, b.id)
    assert [x.index_id for x in await svc.list_engine_drops(10, 0)] == [a.id, b.id]  # oldest first
    assert [x.index_id for x in await svc.list_engine_drops(10, 3)] == [a.id]  # b is too recent
    assert [x.index_id for x in await svc.list_engine_drops(1, 0)] == [a.id]

    await svc.complete_engine_drop(a.id, "sparse DropIndex: UNAVAILABLE")
    await svc.complete_engine_drop(a.id, "again")
    (kept, _) = await svc.list_engine_drops(10, 0)
    assert (kept.index_id, kept.project_id, kept.attempts, kept.last_error) == (a.id, pid, 2, "again")
    await svc.complete_engine_drop(a.id, None)
    await svc.complete_engine_drop(b.id, None)
    assert await svc.list_engine_drops(10, 0) == []
    await svc.complete_engine_drop(b.id, None)  # completing twice is harmless
    with pytest.raises(InvalidArgument):
        await svc.list_engine_drops(-1, 0)


# -- issue 5: schema migrations

HEAD = ScriptDirectory.from_config(migrations.alembic_config()).get_current_head()
T0 = datetime(2024, 6, 1, tzinfo=UTC)


async def _alembic(db: Database, action: Callable[[Config], None]) -> None:
    """Run an alembic command the way SqlCatalog.start() does: in its locked migration transaction."""
    cat = db.catalog()
    try:
        async with cat.migration_connection() as conn:
            await conn.run_sync(lambda sync_conn: action(migrations.alembic_config(sync_conn)))
    finally:
        await cat.close()


async def _inspect(db: Database, probe: Callable[[Connection], _T]) -> _T:
    cat = db.catalog()
    try:
        async with cat.migration_connection() as conn:
            return await conn.run_sync(probe)
    finally:
        await cat.close()


async def _drop_version_table(db: Database) -> None:
    await _inspect(db, lambda conn: conn.execute(text("DROP TABLE alembic_version")))


def _revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
    return list(compare_metadata(context, sql_adapter.metadata))


def _counts(conn: Connection) -> dict[str, int]:
    names = sorted(t for t in inspect(conn).get_table_names() if t != "alembic_version")
    return {t: conn.execute(text(f'SELECT COUNT(*) FROM "{t}"')).scalar_one() for t in names}


async def _fill_at_0001(db: Database) -> None:
    """Rows in every table of revision 0001, written with 0001's columns only."""
    s = sql_adapter
    ts = {"created_at": T0, "updated_at": T0}
    rows: list[tuple[Any, dict[str, Any]]] = [
        (s.projects, {"id": "p", "name": "Default", "organization_id": "o", "is_default": True, **ts}),
        (s.api_keys, {"key_hash": hashlib.sha256(b"old-key").hexdigest(), "project_id": "p", "created_at": T0}),
        (s.directories, {"id": "src", "project_id": "p", "name": "docs", "description": "", "type": "user", **ts}),
        (s.directories, {"id": "out", "project_id": "p", "name": "ix (out)", "description": "", "type": "index", **ts}),
        (s.blobs, {"id": hashlib.sha256(b"old bytes").hexdigest(), "content": b"old bytes", "size_bytes": 9}),
    ]
    file_common = {"project_id": "p", "external_file_id": "", "metadata_json": "{}", "version": 1, **ts}
    rows += [
        (s.directory_files, {
            "id": "f", "directory_id": "src", "display_name": "a.txt", "name_folded": "a.txt", "unique_id": "a.txt",
            "blob_id": hashlib.sha256(b"old bytes").hexdigest(), "size_bytes": 9, "content_type": "text/plain",
            "source_file_id": None, **file_common,
        }),
        (s.directory_files, {
            "id": "pf", "directory_id": "out", "display_name": "a.txt", "name_folded": "a.txt", "unique_id": "f",
            "blob_id": None, "size_bytes": 9, "content_type": "text/plain", "source_file_id": "f", **file_common,
        }),
        (s.indexes, {
            "id": "ix", "project_id": "p", "name": "ix", "description": "", "source_directory_id": "src",
            "output_directory_id": "out", "generation": 1, "metadata_json": "{}", "last_synced_at": T0, **ts,
        }),
        (s.jobs, {
            "id": "j", "index_id": "ix", "seq": 1, "status": "succeeded", "worker_id": "w", "lease_until": None,
            "attempts": 1, "total_items": 1, "done_items": 1, "error": "", "created_at": T0, "started_at": T0,
            "finished_at": T0,
        }),
        (s.job_items, {
            "job_id": "j", "source_file_id": "f", "seq": 0, "action": "upsert", "status": "done",
            "parsed_file_id": "pf", "chunk_count": 1, "error": "",
        }),
        (s.parsed_texts, {
            "parsed_file_id": "pf", "index_id": "ix", "source_file_id": "f", "source_version": 1,
            "text": "old bytes", "pages_json": "[]", "chunk_count": 1, "updated_at": T0,
        }),
    ]
    cat = db.catalog()
    try:
        async with cat.migration_connection() as conn:
            for table, values in rows:
                await conn.execute(insert(table).values(**values))
    finally:
        await cat.close()


@pytest.mark.parametrize("versioned", [True, False], ids=["at-0001", "made-before-migrations"])
async def test_an_upgrade_from_0001_keeps_every_row(database: Database, versioned: bool) -> None:
    await _alembic(database, lambda cfg: command.upgrade(cfg, "0001"))
    await _fill_at_0001(database)
    if not versioned:  # what 9763b69's create_all left: the tables and no version table
        await _drop_version_table(database)
        assert await _inspect(database, _revision) is None
    before = await _inspect(database, _counts)
    assert set(before.values()) != {0} and "page_images" not in before

    cat = database.catalog()
    await cat.start()
    try:
        svc = FilesService(cat)
        assert await _inspect(database, _revision) == HEAD
        after = await _inspect(database, _counts)
        assert after == {**before, "page_images": 0, "engine_drops": 0}
        assert await _inspect(database, _differences) == []
        # The defaults of the new columns, and the old rows through the service.
        identity = await svc.authenticate("old-key")
        assert (identity.key.is_admin, identity.key.name, identity.key.revoked_at) == (False, "", None)
        assert identity.key.id  # keys made before 0004 got an id
        project = identity.project
        index = await svc.get_index(project.id, "ix")
        assert (index.kind, index.config_json, index.last_job_failed_items, index.generation) == ("index", "{}", 0, 1)
        assert index.last_job is not None and index.last_job.id == "j"
        flags = await _inspect(database, lambda c: c.execute(text("SELECT resync_requested FROM indexes")).all())
        versions = await _inspect(database, lambda c: c.execute(text("SELECT source_version FROM job_items")).all())
        assert [bool(r[0]) for r in flags] == [False] and [r[0] for r in versions] == [0]
        got = await svc.get_directory_file("p", "src", unique_id="a.txt", include_content=True)
        assert (got.content, got.version, got.created_at) == (b"old bytes", 1, T0)
        assert (await svc.read_file("p", "ix", "pf")).content == "old bytes"
        assert (await svc.get_file_status("p", "ix", "a.txt")).status == "SUCCESS"
        # The new features work on the upgraded database.
        pipe = await svc.upsert_pipeline("p", "ix", "")
        assert pipe.kind == "pipeline" and (await svc.upsert_pipeline("p", "ix", "")).id == pipe.id
        assert (await svc.start_sync("p", "ix")).status == "succeeded"  # nothing changed since the old job
    finally:
        await cat.close()
    again = database.catalog()
    await again.start()  # a restart at head changes nothing
    await again.close()
    assert await _inspect(database, _revision) == HEAD


async def test_a_new_database_is_created_at_head_and_matches_the_metadata(database: Database) -> None:
    cat = database.catalog()
    await cat.start()
    await cat.close()
    assert await _inspect(database, _revision) == HEAD
    assert await _inspect(database, _differences) == []


async def test_the_migrations_alone_build_the_metadata(database: Database) -> None:
    await _alembic(database, lambda cfg: command.upgrade(cfg, "head"))
    assert await _inspect(database, _revision) == HEAD
    assert await _inspect(database, _differences) == []


async def test_0002_downgrades_and_upgrades_again(database: Database) -> None:
    cat = database.catalog()
    await cat.start()
    try:
        svc = FilesService(cat)
        pid, did = await _project_with_dir(svc)
        await svc.upload_file(pid, did, display_name="a.txt", content=b"alpha")
        ix = await svc.create_index(pid, name="ix", description="", source_directory_id=did, config_json='{"a":1}')
        job = await svc.start_sync(pid, ix.id)
        await _claim(svc, "w")
        [item] = await svc.list_job_items(job.id)
        parsed = (await svc.prepare_parsed_file(ix.id, item.source_file_id)).parsed_file_id
        await svc.put_page_images(job.id, "w", parsed, [_image(0)])
        await svc.upsert_pipeline(pid, "pipe", "")
    finally:
        await cat.close()
    before = await _inspect(database, _counts)

    await _alembic(database, lambda cfg: command.downgrade(cfg, "0001"))
    assert await _inspect(database, _revision) == "0001"

    def shape(conn: Connection) -> tuple[set[str], set[str], set[str], set[str]]:
        insp = inspect(conn)
        return (
            set(insp.get_table_names()),
            {c["name"] for c in insp.get_columns("indexes")},
            {c["name"] for c in insp.get_columns("job_items")},
            {i["name"] for i in insp.get_indexes("indexes")},
        )

    tables, index_columns, item_columns, index_names = await _inspect(database, shape)
    assert not {"page_images", "engine_drops"} & tables
    assert not {"kind", "config_json", "resync_requested"} & index_columns and "source_version" not in item_columns
    assert "uq_indexes_pipeline_name" not in index_names
    kept = await _inspect(database, _counts)
    assert kept == {t: n for t, n in before.items() if t not in ("page_images", "engine_drops")}

    cat = database.catalog()
    await cat.start()
    try:
        assert await _inspect(database, _revision) == HEAD
        index = await FilesService(cat).get_index(pid, ix.id)
        assert (index.kind, index.config_json) == ("index", "{}")  # what 0001 could not keep
    finally:
        await cat.close()


@pytest.mark.parametrize("versioned", [True, False], ids=["empty", "made-before-migrations"])
async def test_processes_starting_at_once_migrate_once(database: Database, versioned: bool) -> None:
    if not versioned:
        await _alembic(database, lambda cfg: command.upgrade(cfg, "0001"))
        await _fill_at_0001(database)
        await _drop_version_table(database)
    catalogs = [database.catalog() for _ in range(3)]
    try:
        await asyncio.gather(*(c.start() for c in catalogs))
    finally:
        for c in catalogs:
            await c.close()
    assert await _inspect(database, _revision) == HEAD
    assert await _inspect(database, _differences) == []
    if not versioned:
        assert (await _inspect(database, _counts))["projects"] == 1
