"""The rerank servicer on a real grpc.aio server (port 0), called through the generated stub,
and the ``python -m services.rerank`` process started, called and stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services._proto.quarry.rerank.v1 import rerank_pb2, rerank_pb2_grpc
from services.common.channels import channel as service_channel
from services.common.grpc_server import RunningServer, start_server
from services.rerank.adapters.late_interaction import LateInteractionReranker
from services.rerank.bootstrap import bootstrap
from services.rerank.servicer import SERVICE_NAME, RerankServicer
from services.rerank.settings import RerankSettings
from tests import credentials
from tests.credentials import AUTH, with_auth

QUERY = "effects of caffeine on sleep"
PASSAGES = [
    "Stock markets fell sharply after the announcement.",
    "Drinking coffee late in the day delays sleep onset and shortens deep sleep.",
    "The violin has four strings tuned in fifths.",
]

Start = Callable[..., Awaitable[tuple[RunningServer, rerank_pb2_grpc.RerankStub]]]


@pytest.fixture(scope="module")
def reranker() -> LateInteractionReranker:
    return LateInteractionReranker.load()


@pytest.fixture
async def start(reranker: LateInteractionReranker) -> AsyncIterator[Start]:
    running: list[tuple[RunningServer, grpc.aio.Channel]] = []

    async def _start(**overrides: object) -> tuple[RunningServer, rerank_pb2_grpc.RerankStub]:
        settings = RerankSettings(port=0, **overrides)  # type: ignore[arg-type]
        app = bootstrap(settings, reranker)
        server = await start_server(with_auth(settings), RerankServicer(app.service).register, [SERVICE_NAME],
                                    app.ready)
        channel = service_channel(server.address, AUTH)
        running.append((server, channel))
        return server, rerank_pb2_grpc.RerankStub(channel)

    yield _start
    for server, channel in running:
        await channel.close()
        await server.stop(0)


async def test_score_ranks_the_relevant_passage_first(start: Start) -> None:
    server, stub = await start()
    reply = await stub.Score(rerank_pb2.ScoreRequest(query=QUERY, passages=PASSAGES), timeout=30)
    assert len(reply.scores) == len(PASSAGES)
    assert max(range(len(PASSAGES)), key=lambda i: reply.scores[i]) == 1
    assert reply.model == "late-interaction:all-MiniLM-L6-v2-onnx-int8"

    async with service_channel(server.address, AUTH) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(100):  # the readiness watch sets SERVING after its first probe
            request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
            status = (await health.Check(request, timeout=5)).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.05)
    assert status == health_pb2.HealthCheckResponse.SERVING


async def test_empty_passages_give_empty_scores(start: Start) -> None:
    _, stub = await start()
    reply = await stub.Score(rerank_pb2.ScoreRequest(query=QUERY), timeout=30)
    assert list(reply.scores) == []
    assert reply.model


async def test_too_many_passages_is_invalid_argument(start: Start) -> None:
    _, stub = await start(max_passages=2)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Score(rerank_pb2.ScoreRequest(query=QUERY, passages=PASSAGES), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit is 2" in (err.value.details() or "")


async def test_service_budget_exceeded_is_deadline_exceeded(start: Start) -> None:
    _, stub = await start(timeout=0.001)
    passages = [f"passage {i} on sleep and caffeine" for i in range(300)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Score(rerank_pb2.ScoreRequest(query=QUERY, passages=passages), timeout=30)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_process_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    env = {**os.environ, "QUARRY_RERANK_PORT": "0", "QUARRY_RERANK_PORT_FILE": str(port_file),
           "QUARRY_RERANK_LOG_FORMAT": "text", **credentials.env("rerank")}
    proc = subprocess.Popen([sys.executable, "-m", "services.rerank"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "rerank process did not write its port"
            time.sleep(0.05)
        with grpc.insecure_channel(f"127.0.0.1:{port_file.read_text()}") as channel:
            reply = rerank_pb2_grpc.RerankStub(channel).Score(
                rerank_pb2.ScoreRequest(query=QUERY, passages=PASSAGES), timeout=30, metadata=credentials.METADATA
            )
        assert max(range(len(PASSAGES)), key=lambda i: reply.scores[i]) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
