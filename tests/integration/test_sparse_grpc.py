"""The SparseSearch gRPC service over a real grpc.aio server (port 0) and the generated stub."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services._proto.quarry.common.v1 import common_pb2
from services._proto.quarry.sparse.v1 import sparse_pb2, sparse_pb2_grpc
from services.common.channels import channel
from services.common.convert import chunk_to_pb, filter_to_pb, hit_from_pb
from services.common.domain import And, Condition, Op
from services.sparse.bootstrap import bootstrap
from services.sparse.servicer import SERVICE_NAME, SparseServicer, register
from services.sparse.settings import SparseSettings
from tests import credentials
from tests.contract.filter_scenarios import CHUNKS, INDEX, ids
from tests.integration.serving import serving


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[sparse_pb2_grpc.SparseSearchStub]:
    settings = SparseSettings(data_dir=str(tmp_path / "sparse"), port=0, writer_heap_mb=16, threads=2)
    app = bootstrap(settings)
    async with serving(settings, register(SparseServicer(app.service)), SERVICE_NAME, app.ready, app.close,
                       grace=0.5) as ch:
        yield sparse_pb2_grpc.SparseSearchStub(ch)


async def test_the_five_rpcs_round_trip(stub: sparse_pb2_grpc.SparseSearchStub) -> None:
    upserted = await stub.Upsert(
        sparse_pb2.UpsertRequest(index_id=INDEX, chunks=[chunk_to_pb(c) for c in CHUNKS]), timeout=10
    )
    assert upserted.upserted == len(CHUNKS)
    assert (await stub.Count(sparse_pb2.CountRequest(index_id=INDEX), timeout=5)).count == 5
    assert (await stub.Count(sparse_pb2.CountRequest(index_id=INDEX, file_id="file-2"), timeout=5)).count == 2

    node = And((Condition("year", Op.GTE, (2022,)), Condition("$file_id", Op.IN, ("file-1", "file-2"))))
    reply = await stub.Search(
        sparse_pb2.SearchRequest(
            index_id=INDEX, query="quarry retrieval", top_k=10, filter=filter_to_pb(node), has_filter=True
        ),
        timeout=5,
    )
    hits = [hit_from_pb(h) for h in reply.hits]
    assert {h.chunk.id for h in hits} == ids("b", "c", "d")
    by_id = {c.id: c for c in CHUNKS}
    assert all(h.chunk == by_id[h.chunk.id] and h.score > 0 for h in hits)
    assert reply.search_seconds > 0

    unfiltered = await stub.Search(
        sparse_pb2.SearchRequest(index_id=INDEX, query="quarry", top_k=2), timeout=5
    )
    assert len(unfiltered.hits) == 2

    deleted = await stub.DeleteFile(sparse_pb2.DeleteFileRequest(index_id=INDEX, file_id="file-1"), timeout=5)
    assert deleted.deleted == 2
    dropped = await stub.DropIndex(sparse_pb2.DropIndexRequest(index_id=INDEX), timeout=5)
    assert dropped.deleted == 3
    assert (await stub.Count(sparse_pb2.CountRequest(index_id=INDEX), timeout=5)).count == 0


async def test_free_text_with_query_syntax_is_not_an_error(stub: sparse_pb2_grpc.SparseSearchStub) -> None:
    await stub.Upsert(
        sparse_pb2.UpsertRequest(index_id=INDEX, chunks=[chunk_to_pb(c) for c in CHUNKS]), timeout=10
    )
    reply = await stub.Search(
        sparse_pb2.SearchRequest(index_id=INDEX, query='AND OR ( " : quarry) [x TO', top_k=3), timeout=5
    )
    assert len(reply.hits) == 3


async def test_bad_requests_map_to_invalid_argument(stub: sparse_pb2_grpc.SparseSearchStub) -> None:
    range_on_text = common_pb2.Filter(
        condition=common_pb2.Condition(
            field="year", op=common_pb2.OP_GT, values=[common_pb2.Value(s="recent")]
        )
    )
    bad = [
        stub.Search(
            sparse_pb2.SearchRequest(
                index_id=INDEX, query="quarry", top_k=3, filter=range_on_text, has_filter=True
            ),
            timeout=5,
        ),
        stub.Search(
            sparse_pb2.SearchRequest(
                index_id=INDEX, query="quarry", top_k=3, filter=common_pb2.Filter(), has_filter=True
            ),
            timeout=5,
        ),
        stub.Search(sparse_pb2.SearchRequest(index_id="", query="quarry", top_k=3), timeout=5),
        stub.Upsert(
            sparse_pb2.UpsertRequest(index_id=INDEX, chunks=[common_pb2.Chunk(id="x", metadata_json="{")]),
            timeout=5,
        ),
        stub.Upsert(
            sparse_pb2.UpsertRequest(index_id=INDEX, chunks=[common_pb2.Chunk(id="x", metadata_json="[1, 2]")]),
            timeout=5,
        ),
    ]
    for call in bad:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_process_serves_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    env = {
        **os.environ,
        "QUARRY_SPARSE_PORT": "0",
        "QUARRY_SPARSE_PORT_FILE": str(port_file),
        "QUARRY_SPARSE_DATA_DIR": str(tmp_path / "data"),
        "QUARRY_SPARSE_WRITER_HEAP_MB": "16",
        **credentials.env("sparse"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.sparse",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        for _ in range(600):
            if port_file.exists() or proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert port_file.exists(), "the service did not write its port file"
        async with channel(f"127.0.0.1:{port_file.read_text()}", credentials.AUTH) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stub = sparse_pb2_grpc.SparseSearchStub(ch)
            request = sparse_pb2.UpsertRequest(index_id=INDEX, chunks=[chunk_to_pb(CHUNKS[0])])
            assert (await stub.Upsert(request, timeout=10)).upserted == 1
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, output.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (tmp_path / "data" / INDEX).is_dir()
