"""The Go client (``tests.grpc_clients.go_client``) builds from the public proto and speaks it: run
against a tiny in-process Retrieval server, what it decodes equals what the server sent
(Struct metadata, optional fields, the latency map), and a wrong key comes back UNAUTHENTICATED.

Without a Go toolchain the tests skip with the reason; with ``CI=true`` they fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NoReturn

import grpc
import pytest
from google.protobuf import json_format

from services._proto.quarry.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from tests import servers
from tests.grpc_clients.go_client import GoUnavailable, build_go_client, run_go_client

API_KEY = "qk-test-secret"


def expected_response(request: retrieval_pb2.RetrieveRequest) -> retrieval_pb2.RetrieveResponse:
    response = retrieval_pb2.RetrieveResponse(
        latency={"dense": 0.004, "total": 0.0125},
        retrieval_mode=retrieval_pb2.RETRIEVAL_MODE_CHUNKS,
        degraded=["rerank: shed"] if request.HasField("top_k") and request.top_k == 1 else [],
    )
    result = response.results.add(
        chunk_id="c-1",
        content=f"echo: {request.query}",
        score=0.75,
        rerank_score=0.5,
        file_name="doc.pdf",
        source_id="s-1",
        static_fields=retrieval_pb2.StaticFields(parsed_directory_file_id="f-1", chunk_index=3, page_range_start=2),
    )
    result.metadata.update({"year": 2021, "tags": ["a"]})
    return response


class EchoRetrieval(retrieval_pb2_grpc.RetrievalServicer):
    def __init__(self) -> None:
        self.received: list[retrieval_pb2.RetrieveRequest] = []

    async def Retrieve(
        self, request: retrieval_pb2.RetrieveRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.RetrieveResponse:
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get("authorization") != f"Bearer {API_KEY}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid API key")
        self.received.append(request)
        return expected_response(request)


def unavailable(reason: str) -> NoReturn:
    """Fail under CI, skip elsewhere (as ``tests.servers.unavailable`` does for the test servers)."""
    if servers.in_ci():
        pytest.fail(f"{reason} (CI=true: the Go toolchain must be installed)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def go_client() -> Path:
    try:
        return build_go_client()
    except GoUnavailable as exc:
        unavailable(f"cannot build the Go client: {exc}")


@pytest.fixture
def servicer() -> EchoRetrieval:
    return EchoRetrieval()


@pytest.fixture
async def address(servicer: EchoRetrieval) -> AsyncIterator[str]:
    server = grpc.aio.server()
    retrieval_pb2_grpc.add_RetrievalServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


REQUESTS: list[dict[str, object]] = [
    {"index_id": "idx-1", "query": "what is quarry?"},
    {
        "index_id": "idx-1",
        "query": "filters",
        "top_k": 1,
        "fusion": "FUSION_RRF",
        "rerank": {"enabled": False},
        "custom_filters": [{"key": "year", "operator": "OPERATOR_GTE", "value": 2020}],
    },
]


async def test_go_client_decodes_what_the_server_sent(go_client: Path, address: str, servicer: EchoRetrieval) -> None:
    answers = await asyncio.to_thread(run_go_client, go_client, address, API_KEY, REQUESTS)
    assert len(answers) == len(REQUESTS)
    # what the client encoded is what the server decoded
    assert servicer.received == [json_format.ParseDict(sent, retrieval_pb2.RetrieveRequest()) for sent in REQUESTS]
    for sent, answer in zip(REQUESTS, answers, strict=True):
        assert "error" not in answer, answer
        request = json_format.ParseDict(sent, retrieval_pb2.RetrieveRequest())
        decoded = json_format.ParseDict(answer, retrieval_pb2.RetrieveResponse())
        assert decoded == expected_response(request)
        # proto field names, unpopulated fields left out
        assert answer["results"][0]["rerank_score"] == 0.5
        assert answer["results"][0]["metadata"] == {"year": 2021, "tags": ["a"]}
        assert "dense_score" not in answer["results"][0]
        assert "cached" not in answer


async def test_wrong_key_is_unauthenticated(go_client: Path, address: str) -> None:
    answers = await asyncio.to_thread(run_go_client, go_client, address, "qk-wrong", REQUESTS[:1])
    assert answers == [{"error": {"code": "UNAUTHENTICATED", "message": "invalid API key"}}]
