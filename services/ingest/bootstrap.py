"""Composition root of the ingest worker: channels, stubs, tokenizer, readiness probe."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services._proto.quarry.dense.v1 import dense_pb2_grpc
from services._proto.quarry.files.v1 import files_pb2_grpc
from services._proto.quarry.sparse.v1 import sparse_pb2_grpc
from services.common.channels import Channels
from services.ingest.chunking import piece_tokenizer
from services.ingest.settings import IngestSettings
from services.ingest.worker import IngestWorker

#: A readiness probe must answer well within the health watch interval.
_PROBE_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class IngestApp:
    """The wired worker, its readiness probe (files reachable) and a close() for the channels."""

    worker: IngestWorker
    ready: Callable[[], Awaitable[bool]]
    close: Callable[[], Awaitable[None]]


def bootstrap(settings: IngestSettings) -> IngestApp:
    """Build the worker from settings: one channel per backend, the tokenizer loaded up front."""
    channels = Channels(settings.service_auth)
    worker = IngestWorker(
        settings,
        channels.stub(files_pb2_grpc.FilesStub, settings.files_addr),
        channels.stub(dense_pb2_grpc.DenseSearchStub, settings.dense_addr),
        channels.stub(sparse_pb2_grpc.SparseSearchStub, settings.sparse_addr),
        tokenizer=piece_tokenizer(),
    )
    files_health = channels.stub(health_pb2_grpc.HealthStub, settings.files_addr)
    timeout = min(settings.rpc_timeout, _PROBE_TIMEOUT)

    async def ready() -> bool:
        try:
            response = await files_health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    async def close() -> None:
        worker.close()
        await channels.close()

    return IngestApp(worker=worker, ready=ready, close=close)
