"""gRPC <-> domain for quarry.rerank.v1.Rerank; conversion and error mapping only."""

from __future__ import annotations

import grpc

from services._proto.quarry.rerank.v1 import rerank_pb2, rerank_pb2_grpc
from services.common.errors import mapped
from services.common.telemetry import remaining
from services.rerank.service import RerankService

SERVICE_NAME = rerank_pb2.DESCRIPTOR.services_by_name["Rerank"].full_name


class RerankServicer(rerank_pb2_grpc.RerankServicer):
    """Serves ``Score`` from a ``RerankService``."""

    def __init__(self, service: RerankService) -> None:
        self._service = service

    @mapped
    async def Score(
        self, request: rerank_pb2.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> rerank_pb2.ScoreResponse:
        """One score per passage in request order, under the caller's deadline."""
        result = await self._service.score(
            request.query, list(request.passages), timeout=remaining()
        )
        return rerank_pb2.ScoreResponse(scores=result.scores, model=result.model)

    def register(self, server: grpc.aio.Server) -> None:
        """Add this servicer to ``server``."""
        rerank_pb2_grpc.add_RerankServicer_to_server(self, server)
