"""quarry.dense.v1.DenseSearch: protobuf <-> domain conversion and error mapping only."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from services._proto.quarry.dense.v1 import dense_pb2, dense_pb2_grpc
from services.common.convert import chunk_from_pb, hit_to_pb, request_filter
from services.common.errors import mapped
from services.dense.service import DenseService

SERVICE_NAME = dense_pb2.DESCRIPTOR.services_by_name["DenseSearch"].full_name


class DenseSearchServicer(dense_pb2_grpc.DenseSearchServicer):
    def __init__(self, service: DenseService) -> None:
        self._service = service

    @mapped
    async def Embed(self, request: dense_pb2.EmbedRequest,
                    context: grpc.aio.ServicerContext) -> dense_pb2.EmbedResponse:
        """Embed texts with the service's model."""
        vectors = await self._service.embed(list(request.texts), is_query=request.is_query)
        embedder = self._service.embedder
        return dense_pb2.EmbedResponse(
            vectors=[dense_pb2.Vector(values=row) for row in vectors.tolist()],
            model=embedder.model_name,
            dim=embedder.dim,
        )

    @mapped
    async def Upsert(self, request: dense_pb2.UpsertRequest,
                     context: grpc.aio.ServicerContext) -> dense_pb2.UpsertResponse:
        """Embed and write chunks (idempotent by chunk id)."""
        n = await self._service.upsert(request.index_id, [chunk_from_pb(c) for c in request.chunks])
        return dense_pb2.UpsertResponse(upserted=n)

    @mapped
    async def Search(self, request: dense_pb2.SearchRequest,
                     context: grpc.aio.ServicerContext) -> dense_pb2.SearchResponse:
        """Nearest chunks to the embedded query, filtered in the engine."""
        result = await self._service.search(request.index_id, request.query, request.top_k, request_filter(request))
        return dense_pb2.SearchResponse(
            hits=[hit_to_pb(h) for h in result.hits],
            embed_seconds=result.embed_seconds,
            search_seconds=result.search_seconds,
        )

    @mapped
    async def DeleteFile(self, request: dense_pb2.DeleteFileRequest,
                         context: grpc.aio.ServicerContext) -> dense_pb2.DeleteResponse:
        """Remove every chunk of one file."""
        n = await self._service.delete_file(request.index_id, request.file_id)
        return dense_pb2.DeleteResponse(deleted=n)

    @mapped
    async def DropIndex(self, request: dense_pb2.DropIndexRequest,
                        context: grpc.aio.ServicerContext) -> dense_pb2.DeleteResponse:
        """Remove a whole index."""
        n = await self._service.drop(request.index_id)
        return dense_pb2.DeleteResponse(deleted=n)

    @mapped
    async def Count(self, request: dense_pb2.CountRequest,
                    context: grpc.aio.ServicerContext) -> dense_pb2.CountResponse:
        """Chunks in an index, or in one file of it."""
        n = await self._service.count(request.index_id, request.file_id)
        return dense_pb2.CountResponse(count=n)


    @mapped
    async def LateScores(self, request: dense_pb2.LateScoresRequest,
                         context: grpc.aio.ServicerContext) -> dense_pb2.LateScoresResponse:
        """MaxSim scores of the named chunks from their stored token vectors."""
        result = await self._service.late_scores(request.index_id, request.query, list(request.chunk_ids))
        return dense_pb2.LateScoresResponse(
            stored=result.scores is not None, scores=result.scores or [],
            model=f"late-interaction:{self._service.embedder.model_name}", embed_seconds=result.embed_seconds,
        )


def register(servicer: DenseSearchServicer) -> Callable[[grpc.aio.Server], None]:
    """The ``register`` callback for ``start_server``/``serve``."""

    def _register(server: grpc.aio.Server) -> None:
        dense_pb2_grpc.add_DenseSearchServicer_to_server(servicer, server)

    return _register
