"""The ingest process: health on its own port, works jobs, stops cleanly (in-process and as
``python -m services.ingest`` under SIGTERM). Backends are the fake servicers over real gRPC."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.channels import channel
from services.ingest.__main__ import serve
from services.ingest.settings import IngestSettings
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
    async with channel(f"127.0.0.1:{port}") as chan:
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
        grace_seconds=5,
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
