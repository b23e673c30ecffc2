"""The ingest process: health on its own port, works jobs, stops cleanly (in-process and as
``python -m services.ingest`` under SIGTERM) against the fake servicers over real gRPC; and the
worker against the real files, dense and sparse services (each on its own grpc.aio server):
a PDF ends with page screenshots in the catalog and a file card searchable in both engines."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from services._proto.quarry.dense.v1 import dense_pb2, dense_pb2_grpc
from services._proto.quarry.files.v1 import files_pb2, files_pb2_grpc
from services._proto.quarry.sparse.v1 import sparse_pb2, sparse_pb2_grpc
from services.common.channels import channel
from services.common.domain import file_card_id, files_index_id
from services.common.grpc_server import RunningServer, start_server
from services.dense import bootstrap as dense_bootstrap
from services.dense.servicer import SERVICE_NAME as DENSE_SERVICE
from services.dense.servicer import DenseSearchServicer
from services.dense.servicer import register as register_dense
from services.dense.settings import DenseSettings
from services.files import bootstrap as files_bootstrap
from services.files.servicer import SERVICE_NAME as FILES_SERVICE
from services.files.servicer import register as register_files
from services.files.settings import FilesSettings
from services.ingest import bootstrap as ingest_bootstrap
from services.ingest.__main__ import serve
from services.ingest.settings import IngestSettings
from services.ingest.worker import JobOutcome
from services.sparse import bootstrap as sparse_bootstrap
from services.sparse.servicer import SERVICE_NAME as SPARSE_SERVICE
from services.sparse.servicer import SparseServicer
from services.sparse.servicer import register as register_sparse
from services.sparse.settings import SparseSettings
from tests import credentials
from tests.credentials import AUTH
from tests.fixtures.ingest.fakes import FakeBackends, start_fake_backends
from tests.fixtures.ingest.pdf_builder import build_pdf

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def fakes() -> AsyncIterator[FakeBackends]:
    backends = await start_fake_backends()
    backends.files.add_source("src-1", "doc.pdf", build_pdf([["Quarry ingest end to end."]]))
    yield backends
    await backends.stop()


def read_port(path: Path) -> int | None:
    return int(path.read_text()) if path.exists() else None


async def wait_for_port(path: Path) -> int:
    """The launcher's way to learn a port-0 service's port: poll for the port file."""
    async with asyncio.timeout(60):
        while (port := await asyncio.to_thread(read_port, path)) is None:  # noqa: ASYNC110 - a file
            await asyncio.sleep(0.05)
    return port


async def wait_serving(port: int) -> None:
    """Follow the stock health Watch stream until the process reports SERVING."""
    async with channel(f"127.0.0.1:{port}", AUTH) as chan:
        stub = health_pb2_grpc.HealthStub(chan)
        async with asyncio.timeout(60):
            async for reply in stub.Watch(health_pb2.HealthCheckRequest(service="")):
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return


async def test_serve_reports_health_works_a_job_and_stops(fakes: FakeBackends, tmp_path: Path) -> None:
    port_file = tmp_path / "ingest.port"
    addresses = fakes.addresses
    settings = IngestSettings(
        files_addr=addresses["files_addr"], dense_addr=addresses["dense_addr"],
        sparse_addr=addresses["sparse_addr"], port=0, port_file=str(port_file), poll_interval=0.02,
        grace_seconds=5, service_auth=AUTH,
    )
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, stop))
    port = await wait_for_port(port_file)
    await wait_serving(port)

    job_id = fakes.files.add_job("idx", [("src-1", "upsert")])
    await fakes.files.job_finished.wait()
    stop.set()
    await server

    assert fakes.files.jobs[job_id].finish.status == "succeeded"  # type: ignore[union-attr]
    assert len(fakes.dense.ids("idx")) == 1 == len(fakes.sparse.ids("idx"))


async def test_module_runs_and_exits_cleanly_on_sigterm(fakes: FakeBackends, tmp_path: Path) -> None:
    port_file = tmp_path / "ingest.port"
    env = {
        **os.environ,
        "QUARRY_INGEST_FILES_ADDR": fakes.addresses["files_addr"],
        "QUARRY_INGEST_DENSE_ADDR": fakes.addresses["dense_addr"],
        "QUARRY_INGEST_SPARSE_ADDR": fakes.addresses["sparse_addr"],
        "QUARRY_INGEST_PORT": "0",
        "QUARRY_INGEST_PORT_FILE": str(port_file),
        "QUARRY_INGEST_POLL_INTERVAL": "0.05",
        "QUARRY_INGEST_WORKER_ID": "proc-worker",
        "QUARRY_INGEST_LOG_FORMAT": "text",
        **credentials.env("ingest"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.ingest", cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        port = await wait_for_port(port_file)
        await wait_serving(port)
        job_id = fakes.files.add_job("idx", [("src-1", "upsert")])
        await fakes.files.job_finished.wait()
        proc.send_signal(signal.SIGTERM)
        output, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, output.decode()
    assert fakes.files.jobs[job_id].job.worker_id == "proc-worker"
    assert fakes.files.jobs[job_id].finish.status == "succeeded"  # type: ignore[union-attr]
    assert "stopped" in output.decode()


DEADLINE = 30.0


@dataclass
class RealBackends:
    """Files (SQLite), dense (MiniLM + embedded Qdrant) and sparse (tantivy), each on port 0."""

    files: files_pb2_grpc.FilesStub
    dense: dense_pb2_grpc.DenseSearchStub
    sparse: sparse_pb2_grpc.SparseSearchStub
    addresses: dict[str, str]


@pytest.fixture
async def real(tmp_path: Path) -> AsyncIterator[RealBackends]:
    files_settings = FilesSettings(data_dir=tmp_path / "files", port=0, service_auth=AUTH)
    dense_settings = DenseSettings(data_dir=str(tmp_path / "dense"), port=0, service_auth=AUTH)
    sparse_settings = SparseSettings(data_dir=str(tmp_path / "sparse"), port=0, writer_heap_mb=16, threads=2,
                                     service_auth=AUTH)
    files_app = await files_bootstrap.bootstrap(files_settings)
    dense_app = dense_bootstrap.bootstrap(dense_settings)
    sparse_app = sparse_bootstrap.bootstrap(sparse_settings)
    servers: list[RunningServer] = []
    channels = []
    try:
        servers.append(await start_server(files_settings, register_files(files_app.service), [FILES_SERVICE],
                                          files_app.ready))
        servers.append(await start_server(dense_settings, register_dense(DenseSearchServicer(dense_app.service)),
                                          [DENSE_SERVICE], dense_app.ready))
        servers.append(await start_server(sparse_settings, register_sparse(SparseServicer(sparse_app.service)),
                                          [SPARSE_SERVICE], sparse_app.ready))
        for server in servers:
            await wait_serving(server.port)
        channels = [channel(server.address, AUTH) for server in servers]
        yield RealBackends(
            files_pb2_grpc.FilesStub(channels[0]),
            dense_pb2_grpc.DenseSearchStub(channels[1]),
            sparse_pb2_grpc.SparseSearchStub(channels[2]),
            {"files_addr": servers[0].address, "dense_addr": servers[1].address,
             "sparse_addr": servers[2].address},
        )
    finally:
        for chan in channels:
            await chan.close()
        for server in servers:
            await server.stop(0)
        await asyncio.gather(files_app.close(), dense_app.close(), sparse_app.close())


async def test_a_pdf_ends_with_screenshots_and_a_searchable_card(real: RealBackends) -> None:
    files = real.files
    project = await files.EnsureProject(files_pb2.EnsureProjectRequest(name="Default"), timeout=DEADLINE)
    directory = await files.CreateDirectory(
        files_pb2.CreateDirectoryRequest(project_id=project.id, name="reports"), timeout=DEADLINE
    )
    pdf = build_pdf([["Revenue grew in the third quarter."], None, ["Outlook for next year."]])
    uploaded = await files.UploadFile(files_pb2.UploadFileRequest(
        project_id=project.id, directory_id=directory.id, display_name="Quarterly_revenue-report.pdf",
        content=pdf, content_type="application/pdf", metadata_json=json.dumps({"department": "finance"}),
    ), timeout=DEADLINE)
    rota = await files.UploadFile(files_pb2.UploadFileRequest(
        project_id=project.id, directory_id=directory.id, display_name="holiday_rota.txt",
        content=b"Who covers the support desk in December.",
        metadata_json=json.dumps({"department": "support"}),
    ), timeout=DEADLINE)
    index = await files.CreateIndex(files_pb2.CreateIndexRequest(
        project_id=project.id, name="reports", source_directory_id=directory.id,
        config_json=json.dumps({"page_screenshots": True}),
    ), timeout=DEADLINE)
    await files.StartSync(files_pb2.StartSyncRequest(project_id=project.id, index_id=index.id), timeout=DEADLINE)

    app = ingest_bootstrap.bootstrap(IngestSettings(**real.addresses, worker_id="it-worker", service_auth=AUTH))
    try:
        assert await app.worker.run_once() is JobOutcome.SUCCEEDED
        await check_screenshots_and_cards(real, project.id, index.id, uploaded.unique_id)

        # Deleting a source file takes its card out of both engines with its chunks.
        await files.DeleteDirectoryFile(files_pb2.DeleteDirectoryFileRequest(
            project_id=project.id, directory_id=directory.id, directory_file_id=rota.id), timeout=DEADLINE)
        await files.StartSync(files_pb2.StartSyncRequest(project_id=project.id, index_id=index.id),
                              timeout=DEADLINE)
        assert await app.worker.run_once() is JobOutcome.SUCCEEDED
    finally:
        await app.close()
    cards = files_index_id(index.id)
    assert (await real.dense.Count(dense_pb2.CountRequest(index_id=cards), timeout=DEADLINE)).count == 1
    assert (await real.sparse.Count(sparse_pb2.CountRequest(index_id=cards), timeout=DEADLINE)).count == 1


async def check_screenshots_and_cards(real: RealBackends, project_id: str, index_id: str, unique_id: str) -> None:
    """After the first sync: the PDF's pages in the catalog, both files' cards in both engines."""
    files = real.files
    job = (await files.GetIndex(files_pb2.GetIndexRequest(project_id=project_id, index_id=index_id),
                                timeout=DEADLINE)).last_job
    assert (job.status, job.done_items, job.error) == ("succeeded", 2, "")
    found = await files.FindFiles(files_pb2.FindFilesRequest(
        project_id=project_id, index_id=index_id, file_name="Quarterly_revenue-report.pdf"), timeout=DEADLINE)
    [pdf_file] = found.items
    pdf_id = pdf_file.file_id

    # Every page's screenshot is in the catalog, the text-less one included.
    listed = await files.ListPageImages(
        files_pb2.ListPageImagesRequest(project_id=project_id, file_ids=[pdf_id]), timeout=DEADLINE
    )
    assert sorted(i.page_index for i in listed.items) == [0, 1, 2]
    for page_index in range(3):
        image = await files.GetPageImage(
            files_pb2.GetPageImageRequest(project_id=project_id, file_id=pdf_id, page_index=page_index),
            timeout=DEADLINE,
        )
        assert image.content.startswith(b"\x89PNG\r\n\x1a\n") and image.content_type == "image/png"
        decoded = Image.open(io.BytesIO(image.content))
        assert decoded.size == (image.width, image.height) == (612, 792)

    # The card: found by name words and metadata in the companion index, on both engines.
    cards = files_index_id(index_id)
    dense_hits = (await real.dense.Search(
        dense_pb2.SearchRequest(index_id=cards, query="finance quarterly revenue report", top_k=5), timeout=DEADLINE
    )).hits
    sparse_hits = (await real.sparse.Search(
        sparse_pb2.SearchRequest(index_id=cards, query="quarterly revenue finance", top_k=5), timeout=DEADLINE
    )).hits
    for hits in (dense_hits, sparse_hits):
        top = hits[0].chunk
        assert (top.id, top.file_id, top.file_name) == (file_card_id(pdf_id), pdf_id, "Quarterly_revenue-report.pdf")
        assert top.content.startswith("Quarterly_revenue-report.pdf\nQuarterly revenue report pdf\n")
        assert json.loads(top.metadata_json) == {"department": "finance"}
        assert top.source_id == unique_id
    # One card per file in each engine.
    assert (await real.dense.Count(dense_pb2.CountRequest(index_id=cards), timeout=DEADLINE)).count == 2
    assert (await real.sparse.Count(sparse_pb2.CountRequest(index_id=cards), timeout=DEADLINE)).count == 2
    # The content chunks carry the source file's unique_id too.
    content_hits = (await real.sparse.Search(
        sparse_pb2.SearchRequest(index_id=index_id, query="revenue quarter", top_k=5), timeout=DEADLINE
    )).hits
    assert content_hits and {h.chunk.source_id for h in content_hits if h.chunk.file_id == pdf_id} == {
        unique_id
    }

