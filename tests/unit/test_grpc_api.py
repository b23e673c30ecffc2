"""The use cases and the gRPC servicer over fake backends, without starting processes: the
caller's deadline cancels the legs, the cache is shared by the plan, modes, auth and field paths."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from gateway import grpc_api
from gateway.auth import Authenticator
from gateway.backends import Budget, LegResult
from gateway.cache import IndexCache, LruCache
from gateway.models import RetrieveRequest
from gateway.requests import v2_query
from gateway.settings import GatewaySettings
from gateway.usecases import RetrieveQuery, UseCases
from services._proto.quarry.files.v1 import files_pb2
from services._proto.quarry.retrieval.v1 import retrieval_pb2 as pb
from services._proto.quarry.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from services.common.domain import And, Condition, FilterNode, Op, Or
from tests.unit.test_gateway_retrieval import DENSE, SPARSE, FakeBackends, rpc_error

PROJECT = files_pb2.Project(id="p1", name="Default")
KEY = "qk-good"


class FakeFiles:
    """The catalog calls the use cases make: auth, the index, whole-file reads, page images."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    async def AuthenticateKey(self, request: files_pb2.AuthenticateRequest, timeout: float) -> files_pb2.Identity:
        if request.api_key != KEY:
            raise rpc_error(grpc.StatusCode.UNAUTHENTICATED)
        return files_pb2.Identity(project=PROJECT, key=files_pb2.ApiKey(id="k1"))

    async def GetIndex(self, request: files_pb2.GetIndexRequest, timeout: float) -> files_pb2.Index:
        assert timeout > 0
        if request.index_id != "i":
            raise rpc_error(grpc.StatusCode.NOT_FOUND)
        return files_pb2.Index(id="i", project_id=PROJECT.id, name="docs", generation=1)

    async def ReadFile(self, request: files_pb2.ReadFileRequest, timeout: float) -> files_pb2.ReadFileResponse:
        self.reads.append(request.file_id)
        return files_pb2.ReadFileResponse(content=f"whole text of {request.file_id}")

    async def ListPageImages(self, request: Any, timeout: float) -> files_pb2.ListPageImagesResponse:
        return files_pb2.ListPageImagesResponse()


class Backends(FakeBackends):
    """Fixed legs, a reranker, the fake catalog; ``hang`` makes the dense leg wait until cancelled."""

    def __init__(self, hang: bool = False, **kwargs: Any) -> None:
        super().__init__(DENSE, SPARSE, rerank={"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.3}, **kwargs)
        self.files = FakeFiles()
        self.hang = hang
        self.dense_cancelled = asyncio.Event()
        self.dense_timeout: float | None = None

    async def dense_search(self, index_id: str, query: str, top_k: int, flt: FilterNode | None,
                           timeout: float) -> LegResult:
        self.dense_timeout = timeout
        if self.hang:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.dense_cancelled.set()
                raise
        return await super().dense_search(index_id, query, top_k, flt, timeout)

    async def damaged_indexes(self, timeout: float = 1.0) -> dict[str, str] | None:
        return {}


def usecases(backends: Backends) -> UseCases:
    settings = GatewaySettings()
    return UseCases(settings, backends, LruCache(100), IndexCache(0), Authenticator(10, 1))  # type: ignore[arg-type]


@pytest.fixture
async def served() -> AsyncIterator[tuple[pb_grpc.RetrievalStub, Backends]]:
    backends = Backends(hang=True)
    server, port = await grpc_api.start("127.0.0.1", 0, usecases(backends), None)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.RetrievalStub(channel), backends
    await server.stop(0)


async def test_the_callers_deadline_cancels_the_legs(served: tuple[pb_grpc.RetrievalStub, Backends]) -> None:
    stub, backends = served
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Retrieve(pb.RetrieveRequest(index_id="i", query="q"),
                            metadata=(("authorization", f"Bearer {KEY}"),), timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The leg in flight is cancelled with the call, not left running until its own deadline.
    await asyncio.wait_for(backends.dense_cancelled.wait(), timeout=5)
    # And the leg was given the caller's budget, not the gateway's 2 s leg deadline.
    assert backends.dense_timeout is not None and backends.dense_timeout <= 0.3


async def test_a_bad_key_and_a_bad_field(served: tuple[pb_grpc.RetrievalStub, Backends]) -> None:
    stub, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Retrieve(pb.RetrieveRequest(index_id="i", query="q"),
                            metadata=(("authorization", "Bearer nope"),), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Retrieve(pb.RetrieveRequest(index_id="i", query="q", rerank=pb.RerankOptions(top_n=-1)),
                            metadata=(("authorization", f"Bearer {KEY}"),), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    raw = dict(caught.value.trailing_metadata())["grpc-status-details-bin"]
    bad = error_details_pb2.BadRequest()
    status_pb2.Status.FromString(raw).details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["rerank.top_n"]


async def test_equivalent_requests_share_one_cache_entry() -> None:
    backends = Backends()
    use = usecases(backends)
    first = await use.retrieve(PROJECT.id, v2_query(RetrieveRequest(index_id="i", query="q")), Budget(5))
    # The defaults spelled out are the same plan: the same entry, no leg called again.
    spelled = RetrieveQuery(index_id="i", query="q", top_k=10, dense_weight=0.5, sparse_weight=0.5)
    calls = len(backends.calls)
    second = await use.retrieve(PROJECT.id, spelled, Budget(5))
    assert first[1].cached is False and second[1].cached is True and len(backends.calls) == calls
    assert [r.fused.chunk.id for r in second[1].results] == [r.fused.chunk.id for r in first[1].results]
    assert [r.fused.score for r in second[1].results] == [r.fused.score for r in first[1].results]


async def test_and_and_or_of_the_same_conditions_are_different_entries() -> None:
    backends = Backends()
    use = usecases(backends)
    a, b = Condition("x", Op.EQ, (1,)), Condition("y", Op.EQ, (2,))
    first = await use.retrieve(PROJECT.id, RetrieveQuery(index_id="i", query="q", filter=And((a, b))), Budget(5))
    second = await use.retrieve(PROJECT.id, RetrieveQuery(index_id="i", query="q", filter=Or((a, b))), Budget(5))
    assert first[1].cached is False and second[1].cached is False


async def test_a_degraded_answer_is_not_cached() -> None:
    backends = Backends()
    backends._answers["sparse"] = grpc.StatusCode.UNAVAILABLE
    use = usecases(backends)
    for _ in range(2):
        _, answer = await use.retrieve(PROJECT.id, RetrieveQuery(index_id="i", query="q", rerank=False), Budget(5))
        assert answer.degraded and answer.cached is False


async def test_files_via_content_returns_whole_files_best_first() -> None:
    backends = Backends()
    use = usecases(backends)
    _, answer = await use.retrieve(PROJECT.id, RetrieveQuery(index_id="i", query="q", rerank=False,
                                                             mode="files_via_content"), Budget(5))
    # Every fake chunk is in file "f": one file, its whole text read once.
    assert [(f.chunk.file_id, f.text) for f in answer.files] == [("f", "whole text of f")]
    assert backends.files.reads == ["f"] and answer.results == [] and answer.mode == "files_via_content"


async def test_an_unknown_index_and_both_weights_off() -> None:
    use = usecases(Backends())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await use.retrieve(PROJECT.id, RetrieveQuery(index_id="other", query="q"), Budget(5))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(Exception, match="cannot both be 0") as refused:
        await use.retrieve(PROJECT.id, RetrieveQuery(index_id="i", query="q", dense_weight=0, sparse_weight=0),
                           Budget(5))
    assert grpc_api.field_path(refused.value.loc) == "dense_weight"  # type: ignore[attr-defined]


def test_field_paths_follow_the_http_loc() -> None:
    assert grpc_api.field_path(("body", "custom_filters", "year", 0, "value")) == "custom_filters.year[0].value"
    assert grpc_api.field_path(("body", "search_filters", "filters", 2)) == "filter_tree.filters[2]"
    assert grpc_api.field_path(("body", "full_text_pipeline_weight")) == "sparse_weight"


def test_a_damaged_index_is_a_failed_precondition_and_a_down_backend_unavailable() -> None:
    """DATA_LOSS (a damaged keyword index with no other leg): retrying does not help, rebuilding does."""
    data_loss = rpc_error(grpc.StatusCode.DATA_LOSS)
    assert grpc_api._failure(data_loss)[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert grpc_api._failure(rpc_error(grpc.StatusCode.UNAVAILABLE))[0] == grpc.StatusCode.UNAVAILABLE
    assert grpc_api._failure(RuntimeError("boom"))[:2] == (grpc.StatusCode.INTERNAL, "internal error")
