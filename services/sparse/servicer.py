"""gRPC ``quarry.sparse.v1.SparseSearch`` <-> the sparse service: conversion and error mapping."""

from __future__ import annotations

import grpc

from services._proto.quarry.sparse.v1 import sparse_pb2, sparse_pb2_grpc
from services.common.convert import chunk_from_pb, hit_to_pb, request_filter
from services.common.errors import mapped
from services.common.grpc_server import Register
from services.common.telemetry import remaining
from services.sparse.service import SparseService

SERVICE_NAME: str = sparse_pb2.DESCRIPTOR.services_by_name["SparseSearch"].full_name


class SparseServicer(sparse_pb2_grpc.SparseSearchServicer):
    """The five SparseSearch RPCs over one ``SparseService``."""

    def __init__(self, service: SparseService) -> None:
        self._service = service

    @mapped
    async def Upsert(
        self, request: sparse_pb2.UpsertRequest, context: grpc.aio.ServicerContext
    ) -> sparse_pb2.UpsertResponse:
        """Write chunks; idempotent by chunk id."""
        written = await self._service.upsert(
            request.index_id, [chunk_from_pb(c) for c in request.chunks], remaining=remaining()
        )
        return sparse_pb2.UpsertResponse(upserted=written)

    @mapped
    async def Search(
        self, request: sparse_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> sparse_pb2.SearchResponse:
        """BM25 top-k with the filter applied in the engine; ``search_seconds`` is engine time."""
        result = await self._service.search(
            request.index_id, request.query, request.top_k, request_filter(request), remaining=remaining()
        )
        return sparse_pb2.SearchResponse(
            hits=[hit_to_pb(h) for h in result.hits], search_seconds=result.seconds
        )

    @mapped
    async def DeleteFile(
        self, request: sparse_pb2.DeleteFileRequest, context: grpc.aio.ServicerContext
    ) -> sparse_pb2.DeleteResponse:
        """Delete one file's chunks; ``deleted`` is how many there were."""
        deleted = await self._service.delete_file(
            request.index_id, request.file_id, remaining=remaining()
        )
        return sparse_pb2.DeleteResponse(deleted=deleted)

    @mapped
    async def DropIndex(
        self, request: sparse_pb2.DropIndexRequest, context: grpc.aio.ServicerContext
    ) -> sparse_pb2.DeleteResponse:
        """Delete a whole index; ``deleted`` is how many chunks it held (0 if it did not exist)."""
        deleted = await self._service.drop(request.index_id, remaining=remaining())
        return sparse_pb2.DeleteResponse(deleted=deleted)

    @mapped
    async def Count(
        self, request: sparse_pb2.CountRequest, context: grpc.aio.ServicerContext
    ) -> sparse_pb2.CountResponse:
        """Chunks in an index, or of ``file_id`` when set."""
        count = await self._service.count(
            request.index_id, request.file_id, remaining=remaining()
        )
        return sparse_pb2.CountResponse(count=count)


    @mapped
    async def ListDamaged(
        self, request: sparse_pb2.ListDamagedRequest, context: grpc.aio.ServicerContext
    ) -> sparse_pb2.ListDamagedResponse:
        """Indexes that cannot be read, with the reason."""
        damaged = self._service.damaged()
        return sparse_pb2.ListDamagedResponse(
            indexes=[sparse_pb2.DamagedIndex(index_id=i, reason=r) for i, r in sorted(damaged.items())]
        )


def register(servicer: SparseServicer) -> Register:
    """A ``start_server``/``serve`` register callback adding ``servicer`` to a server."""

    def add(server: grpc.aio.Server) -> None:
        sparse_pb2_grpc.add_SparseSearchServicer_to_server(servicer, server)

    return add
