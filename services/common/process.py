"""The one shape of every gRPC process (dense, sparse, rerank, files, ingest).

``python -m services.<name>`` reads its settings, builds a ``Process`` from them (its composition
root), and ``serve_process`` runs it: the server with the shared interceptor chain, health,
metrics port and service credential (``grpc_server.start_server``), the process's background
work beside it (the ingest worker, the files service's gauges), and one shutdown path: on
SIGTERM/SIGINT the health turns NOT_SERVING, background work gets ``grace_seconds`` to finish its
item, calls in flight as long, then the process closes its backends and flushes its traces.
A background task that ends by itself with an error stops the process with that error.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from services.common import logging as quarry_logging
from services.common.grpc_server import Ready, Register, run, start_server
from services.common.settings import ServiceSettings
from services.common.telemetry import shutdown_tracing

log = logging.getLogger(__name__)

Background = Callable[[asyncio.Event], Awaitable[None]]
S = TypeVar("S", bound=ServiceSettings)


def _nothing(server: object) -> None:
    return None


@dataclass(frozen=True)
class Process:
    """What a process's composition root returns."""

    ready: Ready
    close: Callable[[], Awaitable[None]]
    #: Puts the servicers on the server (the ingest worker serves health only).
    register: Register = _nothing
    service_names: Sequence[str] = ()
    #: Work beside the server, each given the stop event; the process stops when one fails.
    background: Sequence[Background] = field(default_factory=tuple)


async def serve_process(settings: ServiceSettings, process: Process, stop: asyncio.Event | None = None) -> None:
    """Serve ``process`` until ``stop`` is set (by SIGTERM/SIGINT when not given), then shut down."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    try:
        running = await start_server(settings, process.register, process.service_names, process.ready)
    except BaseException:
        await process.close()
        raise
    names = ",".join(process.service_names) or "health"
    log.info("%s serving %s on %s:%d", settings.process, names, settings.host, running.port,
             extra={"metrics_port": running.metrics_port or None})
    tasks = [asyncio.create_task(work(stop)) for work in process.background]
    stopping = asyncio.create_task(stop.wait())
    crashed: BaseException | None = None
    try:
        await asyncio.wait({*tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        log.info("shutting down (grace %.1fs)", settings.grace_seconds)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=settings.grace_seconds)
            if pending:
                log.warning("abandoning work in progress after the grace period")
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                crashed = task.exception()
    finally:
        for task in (*tasks, stopping):
            task.cancel()
        await asyncio.gather(*tasks, stopping, return_exceptions=True)
        await running.stop(settings.grace_seconds)
        await process.close()
        shutdown_tracing()
    if crashed is not None:
        raise crashed
    log.info("stopped")


def main(settings_class: type[S], build: Callable[[S], Process | Awaitable[Process]]) -> None:
    """The console entry point of a process: settings from the environment, logging, build, serve."""
    settings = settings_class()
    quarry_logging.configure(settings.process, level=settings.log_level, fmt=settings.log_format)

    async def _main() -> None:
        built = build(settings)
        process = await built if inspect.isawaitable(built) else built
        await serve_process(settings, process)

    run(_main)
