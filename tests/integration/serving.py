"""One service on a real grpc.aio server (port 0) for the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.channels import channel
from services.common.grpc_server import start_server
from services.common.settings import ServiceSettings
from tests.credentials import AUTH, with_auth


@asynccontextmanager
async def serving(
    settings: ServiceSettings,
    register: Callable[[grpc.aio.Server], None],
    service_name: str,
    ready: Callable[[], Awaitable[bool]],
    close: Callable[[], Awaitable[None]],
    grace: float = 0.0,
) -> AsyncIterator[grpc.aio.Channel]:
    """Start the server (requiring the tests' service token), yield a channel that carries it;
    after the test the service must still report SERVING (a test that broke it fails here), then
    stop the server and close the app."""
    running = await start_server(with_auth(settings), register, [service_name], ready)
    ch = channel(running.address, AUTH)
    try:
        yield ch
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service_name), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await ch.close()
        await running.stop(grace)
        await close()
