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
from services.common.grpc_server import start_server
from services.files.bootstrap import bootstrap
from services.files.servicer import SERVICE_NAME, register
from services.files.settings import FilesSettings

DEADLINE = 10.0


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[files_pb2_grpc.FilesStub]:
    settings = FilesSettings(data_dir=tmp_path, port=0)
    files = await bootstrap(settings)
    running = await start_server(settings, register(files.service), [SERVICE_NAME], files.ready)
    channel = grpc.aio.insecure_channel(running.address)
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
