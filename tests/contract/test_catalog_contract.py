"""The catalog contract: the same scenarios on SQLite and on PostgreSQL.

PostgreSQL runs in a freshly created schema per test (dropped afterwards), from
QUARRY_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from services.files.adapters.sql import SqlCatalog
from services.files.domain import FileFilter, Page
from services.files.service import FilesService
from services.files.settings import FilesSettings

PG_URL = os.environ.get("QUARRY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def catalog(request: pytest.FixtureRequest, tmp_path: object, clock: FakeClock) -> AsyncIterator[SqlCatalog]:
    if request.param == "sqlite":
        cat = SqlCatalog.from_url(f"sqlite+aiosqlite:///{tmp_path}/catalog.db", clock=clock)
        await cat.start()
        yield cat
        await cat.close()
        return
    url = FilesSettings(database_url=PG_URL).resolved_database_url()
    schema = f"quarry_test_{uuid.uuid4().hex[:12]}"
    cat = SqlCatalog.from_url(url, clock=clock, schema=schema, pool_size=4, connect_timeout_s=3)
    try:
        await cat.start()
    except Exception as exc:  # pragma: no cover - depends on the machine
        await cat.close()
        pytest.skip(f"PostgreSQL unreachable at {PG_URL}: {exc!r}")
    try:
        yield cat
    finally:
        try:
            await cat.close()
        finally:
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
            _, version = await svc.prepare_parsed_file(job.index_id, item.source_file_id)
            assert version == f.version
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

    assert await svc.create_api_key(p1.id, "secret-1") == "secret-1"
    assert await svc.create_api_key(p1.id, "secret-1") == "secret-1"  # idempotent
    with pytest.raises(AlreadyExists):
        await svc.create_api_key(p2.id, "secret-1")
    generated = await svc.create_api_key(p2.id, "")
    assert len(generated) >= 32
    assert (await svc.authenticate("secret-1")).id == p1.id
    assert (await svc.authenticate(generated)).id == p2.id
    for bad in ("secret-2", ""):
        with pytest.raises(Unauthenticated):
            await svc.authenticate(bad)
    with pytest.raises(NotFound):
        await svc.get_project("nope")
    with pytest.raises(NotFound):
        await svc.create_api_key("nope", "k")


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
    await svc.delete_directory_file(pid, did, other.id)
    assert (await svc.list_directory_files(pid, did)).total_size == 1
    with pytest.raises(NotFound):
        await svc.delete_directory_file(pid, did, other.id)


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
    await svc.delete_directory_file(pid, did, b.id)
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
    parsed_id, version = await svc.prepare_parsed_file(ix.id, a.id)
    assert (await svc.prepare_parsed_file(ix.id, a.id)) == (parsed_id, version)
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
    ]
    for call in calls:
        with pytest.raises(NotFound):
            await call
    assert (await svc.list_indexes(intruder)).total_size == 0
    assert await svc.list_directories(intruder) == []
    assert (await svc.read_file(pid, ix, fid)).content == "secret text"
    with pytest.raises(FailedPrecondition):
        await svc.upload_file(pid, index.output_directory_id, display_name="x", content=b"x")
