"""The grpc.aio server every process shares (``services.common.process`` runs it): bind, the
interceptor chain, register servicers, stock health service (SERVING only once the backend
answers), optional reflection, the metrics port; ``stop`` -> NOT_SERVING -> ``server.stop(grace)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.security import ServiceAuthInterceptor, server_credentials
from services.common.settings import ServiceSettings
from services.common.telemetry import configure_tracing, serve_metrics, server_interceptors

log = logging.getLogger(__name__)

Register = Callable[[grpc.aio.Server], None]
Ready = Callable[[], Awaitable[bool]]

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
    # Clients reconnect (and re-resolve DNS) at least every 5 minutes, so new replicas get traffic;
    # calls in flight get 30 s to finish.
    ("grpc.max_connection_age_ms", 300_000),
    ("grpc.max_connection_age_grace_ms", 30_000),
]


class RunningServer:
    """A started server; ``stop`` is idempotent. Used by ``serve`` and by tests."""

    def __init__(self, server: grpc.aio.Server, port: int, health_servicer: health.aio.HealthServicer,
                 service_names: Sequence[str], ready: Ready, health_server: grpc.aio.Server | None = None,
                 health_port: int = 0, metrics_port: int = 0) -> None:
        self.server = server
        self.metrics_port = metrics_port
        self.port = port
        self.health_server = health_server
        self.health_port = health_port
        self._health = health_servicer
        self._names = list(service_names)
        self._ready = ready
        self._watch: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def set_status(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for name in ["", *self._names]:
            await self._health.set(name, status)

    async def _watch_ready(self, interval: float) -> None:
        serving: bool | None = None
        while True:
            try:
                ok = await self._ready()
            except Exception:  # a failing probe means "not ready", never a crash
                log.exception("readiness probe failed")
                ok = False
            if ok != serving:
                serving = ok
                await self.set_status(
                    health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
                )
            await asyncio.sleep(interval)

    def start_health_watch(self, interval: float = 2.0) -> None:
        self._watch = asyncio.create_task(self._watch_ready(interval))

    async def stop(self, grace: float) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self._health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)


async def start_server(
    settings: ServiceSettings,
    register: Register,
    service_names: Sequence[str],
    ready: Ready,
) -> RunningServer:
    """Bind, register, start; every call but health must carry the service credential. Every
    server has the same chain: (traces,) request id and metrics, the credential check."""
    auth = settings.service_auth
    auth.require(str(settings.model_config.get("env_prefix") or "QUARRY_<PROCESS>_"))
    configure_tracing(settings.process)
    server = grpc.aio.server(options=SERVER_OPTIONS,
                             interceptors=server_interceptors(settings.process, ServiceAuthInterceptor(auth)))
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service_names)
    if settings.reflection:
        reflection.enable_server_reflection([*names, reflection.SERVICE_NAME, health.SERVICE_NAME], server)
    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(auth)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind {address}")
    health_server, health_port = None, 0
    if settings.health_port is not None:
        health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        health_port = health_server.add_insecure_port(f"{settings.host}:{settings.health_port}")
        if health_port == 0:
            raise RuntimeError(f"could not bind the health port {settings.host}:{settings.health_port}")
        await health_server.start()
    metrics_port = serve_metrics(settings.host, settings.metrics_port) if settings.metrics_port is not None else 0
    await server.start()
    running = RunningServer(server, port, health_servicer, names, ready, health_server, health_port, metrics_port)
    # Known but NOT_SERVING until the first readiness probe passes (never NOT_FOUND).
    await running.set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
    running.start_health_watch()
    if settings.port_file:
        _write_port_file(settings.port_file, port)
    return running


def _write_port_file(path: str, port: int) -> None:
    """Atomically publish the bound port (once, at start-up) for a launcher that asked for port 0."""
    tmp = Path(path + ".tmp")
    tmp.write_text(str(port))
    tmp.replace(path)


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run a service's async main on uvloop when available."""
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency; keeps asyncio as fallback
        asyncio.run(main())
