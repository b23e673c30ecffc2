"""gRPC clients of the services, one channel per backend, every call under a deadline.

The retrieval legs return their hits as the wire messages: fusion needs only ids and scores,
so ``gateway.retrieval`` converts just the chunks it returns (converting every candidate of
both legs was about a quarter of the gateway's CPU per request). The catalog wrapper returns
the files-service messages, which ``gateway.shaping`` turns into HTTP models.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.admission import Stage
from gateway.breaker import Breaker
from services._proto.quarry.common.v1 import common_pb2
from services._proto.quarry.dense.v1 import dense_pb2, dense_pb2_grpc
from services._proto.quarry.files.v1 import files_pb2_grpc
from services._proto.quarry.rerank.v1 import rerank_pb2, rerank_pb2_grpc
from services._proto.quarry.sparse.v1 import sparse_pb2, sparse_pb2_grpc
from services.common.channels import Channels
from services.common.convert import filter_to_pb
from services.common.domain import FilterNode, files_index_id
from services.common.security import ServiceAuth

log = logging.getLogger(__name__)


@dataclass
class Budget:
    """What is left of one request's time."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    def remaining(self, floor: float = 0.001) -> float:
        left = self.seconds - (time.monotonic() - self.started)
        if left <= floor:
            raise TimeoutError("request budget exhausted")
        return left


@dataclass
class Stages:
    """The stages a retrieve passes through that admit a bounded number of requests at once."""

    retrieve: Stage = field(default_factory=lambda: Stage("retrieve", 64, 256))
    rerank: Stage = field(default_factory=lambda: Stage("rerank", 2, 8))


@dataclass(frozen=True)
class LegResult:
    hits: Sequence[common_pb2.Hit]
    seconds: float
    embed_seconds: float = 0.0


_Req = TypeVar("_Req", dense_pb2.SearchRequest, sparse_pb2.SearchRequest)


def _search_request(cls: type[_Req], index_id: str, query: str, top_k: int, flt: FilterNode | None) -> _Req:
    """Both legs' search requests have the same shape (index, query, top_k, filter)."""
    request = cls(index_id=index_id, query=query, top_k=top_k)
    if flt is not None:
        request.filter.CopyFrom(filter_to_pb(flt))
        request.has_filter = True
    return request


class Backends:
    """Channels and stubs for every service the gateway calls."""

    def __init__(self, *, dense: str, sparse: str, rerank: str, files: str, auth: ServiceAuth) -> None:
        self._channels = Channels(auth)
        self._addresses = {"dense": dense, "sparse": sparse, "rerank": rerank, "files": files}
        self.breakers = {name: Breaker(name, timeout_is_outage=name == "files") for name in self._addresses}
        #: Load shedding of the expensive stages (set from the settings by the app).
        self.stages = Stages()
        for name, address in self._addresses.items():
            self._channels.intercept(address, self.breakers[name])
        self.dense = self._channels.stub(dense_pb2_grpc.DenseSearchStub, dense)
        self.sparse = self._channels.stub(sparse_pb2_grpc.SparseSearchStub, sparse)
        self.rerank = self._channels.stub(rerank_pb2_grpc.RerankStub, rerank)
        self.files = self._channels.stub(files_pb2_grpc.FilesStub, files)

    async def dense_search(
        self, index_id: str, query: str, top_k: int, flt: FilterNode | None, timeout: float
    ) -> LegResult:
        request = _search_request(dense_pb2.SearchRequest, index_id, query, top_k, flt)
        start = time.perf_counter()
        response = await self.dense.Search(request, timeout=timeout)
        return LegResult(response.hits, time.perf_counter() - start, response.embed_seconds)

    async def sparse_search(
        self, index_id: str, query: str, top_k: int, flt: FilterNode | None, timeout: float
    ) -> LegResult:
        request = _search_request(sparse_pb2.SearchRequest, index_id, query, top_k, flt)
        start = time.perf_counter()
        response = await self.sparse.Search(request, timeout=timeout)
        return LegResult(response.hits, time.perf_counter() - start)

    async def stored_scores(
        self, index_id: str, query: str, chunk_ids: Sequence[str], timeout: float
    ) -> list[float] | None:
        """Late-interaction scores from the token vectors dense stored with the chunks; ``None``
        when it holds none for some of them or does not answer (the caller asks the reranker)."""
        try:
            response = await self.dense.LateScores(
                dense_pb2.LateScoresRequest(index_id=index_id, query=query, chunk_ids=list(chunk_ids)),
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("stored late-interaction scores failed (%s); asking the reranker", exc.code().name)
            return None
        return list(response.scores) if response.stored else None

    async def rerank_scores(self, query: str, passages: Sequence[str], timeout: float) -> list[float]:
        response = await self.rerank.Score(
            rerank_pb2.ScoreRequest(query=query, passages=list(passages)), timeout=timeout
        )
        return list(response.scores)

    async def damaged_indexes(self, timeout: float = 1.0) -> dict[str, str] | None:
        """The keyword indexes sparse cannot read, with the reason; ``None`` when it does not answer."""
        try:
            response = await self.sparse.ListDamaged(sparse_pb2.ListDamagedRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return None
        return {d.index_id: d.reason for d in response.indexes}

    async def drop_index(self, index_id: str, timeout: float) -> None:
        """Drop an index's chunks and its file cards (``files_index_id``) from both engines."""
        ids = (index_id, files_index_id(index_id))
        await asyncio.gather(
            *(self.dense.DropIndex(dense_pb2.DropIndexRequest(index_id=i), timeout=timeout) for i in ids),
            *(self.sparse.DropIndex(sparse_pb2.DropIndexRequest(index_id=i), timeout=timeout) for i in ids),
        )

    async def health(self, timeout: float = 1.0) -> dict[str, str]:
        """Health of every backend (the stock grpc.health.v1 service)."""

        async def one(name: str, address: str) -> tuple[str, str]:
            try:
                response = await health_pb2_grpc.HealthStub(self._channels.channel(address)).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=timeout
                )
                return name, health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            except grpc.aio.AioRpcError as exc:
                return name, exc.code().name

        return dict(await asyncio.gather(*(one(n, a) for n, a in self._addresses.items())))

    async def close(self) -> None:
        await self._channels.close()
