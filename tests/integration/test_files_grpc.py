"""The files service over real gRPC: servicer on port 0 (SQLite catalog), called with the stub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services._proto.quarry.files.v1 import files_pb2 as pb
from services._proto.quarry.files.v1 import files_pb2_grpc
from services.common.channels import channel as service_channel
from services.common.grpc_server import start_server
from services.files.bootstrap import bootstrap
from services.files.servicer import SERVICE_NAME, register
from services.files.settings import FilesSettings
from tests.credentials import AUTH, with_auth

DEADLINE = 10.0


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[files_pb2_grpc.FilesStub]:
    settings = FilesSettings(data_dir=tmp_path, port=0)
    files = await bootstrap(settings)
    running = await start_server(with_auth(settings), register(files.service), [SERVICE_NAME], files.ready)
    channel = service_channel(running.address, AUTH)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(int(DEADLINE / 0.02)):  # the health watch flips to SERVING once the catalog answered
            reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=DEADLINE)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the files service never became SERVING")
        yield files_pb2_grpc.FilesStub(channel)
    finally:
        await channel.close()
        await running.stop(0)
        await files.close()
    assert (tmp_path / "catalog.db").exists()


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code()


async def test_index_lifecycle_over_grpc(stub: files_pb2_grpc.FilesStub) -> None:
    project = await stub.EnsureProject(pb.EnsureProjectRequest(name="Default"), timeout=DEADLINE)
    assert project.is_default and project.created_at.endswith("Z")
    key = await stub.CreateApiKey(pb.CreateApiKeyRequest(project_id=project.id), timeout=DEADLINE)
    assert (await stub.Authenticate(pb.AuthenticateRequest(api_key=key.api_key), timeout=DEADLINE)).id == project.id
    assert await _code(stub.Authenticate(pb.AuthenticateRequest(api_key="wrong"), timeout=DEADLINE)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )

    directory = await stub.CreateDirectory(
        pb.CreateDirectoryRequest(project_id=project.id, name="docs"), timeout=DEADLINE
    )
    assert directory.type == "user"
    uploaded = await stub.UploadFile(
        pb.UploadFileRequest(
            project_id=project.id,
            directory_id=directory.id,
            display_name="guide.md",
            content=b"Quarry guide: grep me. Grep me twice.",
            content_type="text/markdown",
            metadata_json='{"team": "search"}',
        ),
        timeout=DEADLINE,
    )
    assert (uploaded.version, uploaded.unique_id) == (1, "guide.md")
    bad_meta = stub.UploadFile(
        pb.UploadFileRequest(
            project_id=project.id, directory_id=directory.id, display_name="x", metadata_json="[1]"
        ),
        timeout=DEADLINE,
    )
    assert await _code(bad_meta) == grpc.StatusCode.INVALID_ARGUMENT
    listing = await stub.ListDirectoryFiles(
        pb.ListDirectoryFilesRequest(project_id=project.id, directory_id=directory.id), timeout=DEADLINE
    )
    assert [f.id for f in listing.items] == [uploaded.id] and listing.total_size == 1

    index = await stub.CreateIndex(
        pb.CreateIndexRequest(project_id=project.id, name="guides", source_directory_id=directory.id),
        timeout=DEADLINE,
    )
    job = await stub.StartSync(pb.StartSyncRequest(project_id=project.id, index_id=index.id), timeout=DEADLINE)
    assert (job.status, job.total_items) == ("pending", 1)

    claim = await stub.ClaimJob(pb.ClaimJobRequest(worker_id="w1", lease_seconds=30), timeout=DEADLINE)
    assert claim.found and claim.job.id == job.id and claim.job.lease_until
    assert not (await stub.ClaimJob(pb.ClaimJobRequest(worker_id="w2"), timeout=DEADLINE)).found
    [item] = (await stub.ListJobItems(pb.ListJobItemsRequest(job_id=job.id), timeout=DEADLINE)).items
    source = await stub.GetSourceFile(pb.GetSourceFileRequest(source_file_id=item.source_file_id), timeout=DEADLINE)
    parsed = await stub.PrepareParsedFile(
        pb.PrepareParsedFileRequest(index_id=index.id, source_file_id=item.source_file_id), timeout=DEADLINE
    )
    assert parsed.version == 1
    text = source.content.decode()
    complete = pb.CompleteJobItemRequest(
        job_id=job.id,
        worker_id="w1",
        source_file_id=item.source_file_id,
        text=text,
        pages=[pb.Page(number=1, start_char=0, end_char=len(text))],
        chunk_count=1,
    )
    await stub.CompleteJobItem(complete, timeout=DEADLINE)
    await stub.CompleteJobItem(complete, timeout=DEADLINE)
    intruder = pb.RenewLeaseRequest(job_id=job.id, worker_id="w2", lease_seconds=5)
    assert await _code(stub.RenewLease(intruder, timeout=DEADLINE)) == grpc.StatusCode.FAILED_PRECONDITION
    finished = await stub.FinishJob(
        pb.FinishJobRequest(job_id=job.id, worker_id="w1", status="succeeded"), timeout=DEADLINE
    )
    assert (finished.status, finished.done_items) == ("succeeded", 1)

    got = await stub.GetIndex(pb.GetIndexRequest(project_id=project.id, index_id=index.id), timeout=DEADLINE)
    assert got.generation == 1 and not got.sync_in_progress and got.last_job.id == job.id
    cancel = stub.CancelSync(pb.CancelSyncRequest(project_id=project.id, index_id=index.id), timeout=DEADLINE)
    assert await _code(cancel) == grpc.StatusCode.FAILED_PRECONDITION

    found = await stub.FindFiles(
        pb.FindFilesRequest(project_id=project.id, index_id=index.id, file_name_contains="GUIDE"), timeout=DEADLINE
    )
    assert [(f.file_id, f.file_name) for f in found.items] == [(parsed.parsed_file_id, "guide.md")]
    assert found.next_page_token == ""
    grep = await stub.GrepFile(
        pb.GrepFileRequest(
            project_id=project.id, index_id=index.id, file_id=parsed.parsed_file_id, pattern="(?i)grep me",
            context_chars=2, page_size=1,
        ),
        timeout=DEADLINE,
    )
    assert grep.total_size == 2 and grep.next_page_token
    [m] = grep.items
    assert text[m.start_char : m.end_char] == "grep me"
    assert m.content == text[m.start_char - 2 : m.end_char + 2]
    bad_grep = stub.GrepFile(
        pb.GrepFileRequest(project_id=project.id, index_id=index.id, file_id=parsed.parsed_file_id, pattern="("),
        timeout=DEADLINE,
    )
    assert await _code(bad_grep) == grpc.StatusCode.INVALID_ARGUMENT
    read = await stub.ReadFile(
        pb.ReadFileRequest(
            project_id=project.id, index_id=index.id, file_id=parsed.parsed_file_id, offset=7, max_length=5,
            has_max_length=True,
        ),
        timeout=DEADLINE,
    )
    assert (read.content, read.total_chars) == (text[7:12], len(text))
    whole = await stub.ReadFile(
        pb.ReadFileRequest(project_id=project.id, index_id=index.id, file_id=parsed.parsed_file_id),
        timeout=DEADLINE,
    )
    assert whole.content == text

    other = await stub.EnsureProject(pb.EnsureProjectRequest(name="other"), timeout=DEADLINE)
    foreign = stub.ReadFile(
        pb.ReadFileRequest(project_id=other.id, index_id=index.id, file_id=parsed.parsed_file_id),
        timeout=DEADLINE,
    )
    assert await _code(foreign) == grpc.StatusCode.NOT_FOUND

    deleted = await stub.DeleteIndex(pb.DeleteIndexRequest(project_id=project.id, index_id=index.id), timeout=DEADLINE)
    assert deleted.generation == 2
    gone = stub.GetIndex(pb.GetIndexRequest(project_id=project.id, index_id=index.id), timeout=DEADLINE)
    assert await _code(gone) == grpc.StatusCode.NOT_FOUND
    dirs = await stub.ListDirectories(pb.ListDirectoriesRequest(project_id=project.id), timeout=DEADLINE)
    assert [x.id for x in dirs.directories] == [directory.id]


async def test_pipeline_files_status_and_page_images_over_grpc(stub: files_pb2_grpc.FilesStub) -> None:
    project = await stub.EnsureProject(pb.EnsureProjectRequest(name="Default"), timeout=DEADLINE)
    pid = project.id
    ensure = pb.CreateDirectoryRequest(project_id=pid, name="files", type="files")
    uploads = await stub.EnsureDirectory(ensure, timeout=DEADLINE)
    assert (await stub.EnsureDirectory(ensure, timeout=DEADLINE)).id == uploads.id
    bad_type = stub.EnsureDirectory(pb.CreateDirectoryRequest(project_id=pid, name="x", type="index"), timeout=DEADLINE)
    assert await _code(bad_type) == grpc.StatusCode.INVALID_ARGUMENT

    pipeline = await stub.UpsertPipeline(
        pb.UpsertPipelineRequest(project_id=pid, name="docs", config_json='{"page_screenshots": true}'),
        timeout=DEADLINE,
    )
    assert (pipeline.kind, pipeline.config_json) == ("pipeline", '{"page_screenshots":true}')
    same = await stub.UpsertPipeline(pb.UpsertPipelineRequest(project_id=pid, name="docs"), timeout=DEADLINE)
    assert (same.id, same.config_json) == (pipeline.id, "{}")
    listed = await stub.ListIndexes(
        pb.ListIndexesRequest(project_id=pid, name="docs", kind="pipeline"), timeout=DEADLINE
    )
    assert [i.id for i in listed.items] == [pipeline.id]

    upload = await stub.UploadFile(
        pb.UploadFileRequest(project_id=pid, directory_id=uploads.id, display_name="a.txt", content=b"alpha text"),
        timeout=DEADLINE,
    )
    added = await stub.AddDirectoryFile(
        pb.AddDirectoryFileRequest(
            project_id=pid, directory_id=pipeline.source_directory_id, source_directory_file_id=upload.id,
            metadata_json='{"team": "x"}',
        ),
        timeout=DEADLINE,
    )
    assert (added.unique_id, added.file_id, added.metadata_json) == (upload.id, upload.file_id, '{"team":"x"}')
    got = await stub.GetDirectoryFile(
        pb.GetDirectoryFileRequest(
            project_id=pid, directory_id=pipeline.source_directory_id, unique_id=upload.id, include_content=True
        ),
        timeout=DEADLINE,
    )
    assert (got.id, got.content) == (added.id, b"alpha text")
    both = stub.GetDirectoryFile(
        pb.GetDirectoryFileRequest(
            project_id=pid, directory_id=uploads.id, directory_file_id=upload.id, unique_id="a.txt"
        ),
        timeout=DEADLINE,
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await both
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "directory_file_id" in (info.value.details() or "")
    with_content = await stub.ListDirectoryFiles(
        pb.ListDirectoryFilesRequest(project_id=pid, directory_id=uploads.id, include_content=True), timeout=DEADLINE
    )
    assert [f.content for f in with_content.items] == [b"alpha text"]

    status_request = pb.GetFileStatusRequest(project_id=pid, index_id=pipeline.id, unique_id=upload.id)
    status = await stub.GetFileStatus(status_request, timeout=DEADLINE)
    assert (status.status, status.file.id) == ("NOT_STARTED", added.id)
    job = await stub.StartSync(pb.StartSyncRequest(project_id=pid, index_id=pipeline.id), timeout=DEADLINE)
    assert (await stub.GetFileStatus(status_request, timeout=DEADLINE)).status == "IN_PROGRESS"
    await stub.ClaimJob(pb.ClaimJobRequest(worker_id="w", lease_seconds=30), timeout=DEADLINE)
    prepared = await stub.PrepareParsedFile(
        pb.PrepareParsedFileRequest(index_id=pipeline.id, source_file_id=added.id), timeout=DEADLINE
    )
    assert prepared.index_config_json == "{}"
    image = pb.PageImage(page_index=0, content=b"\x89PNG page", content_type="image/png", width=4, height=5)
    put = pb.PutPageImagesRequest(job_id=job.id, worker_id="w", parsed_file_id=prepared.parsed_file_id, images=[image])
    await stub.PutPageImages(put, timeout=DEADLINE)
    foreign = pb.PutPageImagesRequest(job_id=job.id, worker_id="other", parsed_file_id=prepared.parsed_file_id)
    assert await _code(stub.PutPageImages(foreign, timeout=DEADLINE)) == grpc.StatusCode.FAILED_PRECONDITION
    await stub.CompleteJobItem(
        pb.CompleteJobItemRequest(job_id=job.id, worker_id="w", source_file_id=added.id, text="alpha text"),
        timeout=DEADLINE,
    )
    await stub.FinishJob(pb.FinishJobRequest(job_id=job.id, worker_id="w", status="succeeded"), timeout=DEADLINE)
    done = await stub.GetFileStatus(status_request, timeout=DEADLINE)
    assert (done.status, done.job_id) == ("SUCCESS", job.id)
    fetched = await stub.GetPageImage(
        pb.GetPageImageRequest(project_id=pid, file_id=prepared.parsed_file_id, page_index=0), timeout=DEADLINE
    )
    assert (fetched.content, fetched.size_bytes, fetched.width) == (b"\x89PNG page", 9, 4)
    listing = await stub.ListPageImages(
        pb.ListPageImagesRequest(project_id=pid, file_ids=[prepared.parsed_file_id]), timeout=DEADLINE
    )
    assert [(i.file_id, i.page_index, i.content) for i in listing.items] == [(prepared.parsed_file_id, 0, b"")]
    too_many = stub.ListPageImages(pb.ListPageImagesRequest(project_id=pid, file_ids=["x"] * 1001), timeout=DEADLINE)
    assert await _code(too_many) == grpc.StatusCode.INVALID_ARGUMENT
    missing = stub.GetPageImage(
        pb.GetPageImageRequest(project_id=pid, file_id=prepared.parsed_file_id, page_index=1), timeout=DEADLINE
    )
    assert await _code(missing) == grpc.StatusCode.NOT_FOUND

    await stub.DeleteDirectoryFile(
        pb.DeleteDirectoryFileRequest(project_id=pid, directory_id=uploads.id, unique_id="a.txt"), timeout=DEADLINE
    )
    gone = stub.GetDirectoryFile(
        pb.GetDirectoryFileRequest(project_id=pid, directory_id=uploads.id, unique_id="a.txt"), timeout=DEADLINE
    )
    assert await _code(gone) == grpc.StatusCode.NOT_FOUND


async def test_first_key_creates_the_default_project_through_the_pods_own_credential(tmp_path: Path) -> None:
    """``python -m services.files.first_key`` (kubectl exec on a new deployment), with the token."""
    from services.files.first_key import create_first_key

    settings = FilesSettings(data_dir=tmp_path, port=0, service_auth=AUTH)
    files = await bootstrap(settings)
    running = await start_server(settings, register(files.service), [SERVICE_NAME], files.ready)
    try:
        mine = settings.model_copy(update={"port": running.port})
        key = await create_first_key(mine, "qk-first")
        assert key == "qk-first"
        identity = await files.service.authenticate("qk-first")
        assert identity.project.name == "Default" and identity.key.is_admin
    finally:
        await running.stop(0)
        await files.close()


async def test_the_bootstrap_admin_key_from_a_secret_file(tmp_path: Path) -> None:
    """The cluster's admin key: a mounted Secret, registered at start (again after a restart)."""
    secret = tmp_path / "admin-key"
    secret.write_text("qk-bootstrap-admin\n")
    settings = FilesSettings(data_dir=tmp_path, port=0, service_auth=AUTH, admin_key_file=secret)
    for _ in range(2):  # idempotent across restarts
        files = await bootstrap(settings)
        try:
            identity = await files.service.authenticate("qk-bootstrap-admin")
            assert identity.project.name == "Default" and identity.key.is_admin
            assert identity.key.name == "bootstrap admin"
        finally:
            await files.close()
