"""``python -m services.ingest``: the ingest worker, with a gRPC health endpoint for probes."""

from __future__ import annotations

import asyncio
import logging
import signal

from services.common.grpc_server import run, start_server
from services.common.logging import configure
from services.ingest.bootstrap import bootstrap
from services.ingest.settings import IngestSettings

log = logging.getLogger("services.ingest")


async def serve(settings: IngestSettings, stop: asyncio.Event | None = None) -> None:
    """Serve health and run the worker until ``stop`` is set (by SIGTERM/SIGINT when not given).

    On stop the worker takes no new job and finishes the item in progress; after
    ``grace_seconds`` it abandons it (the job's lease expires and another worker resumes).
    """
    app = bootstrap(settings)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    running = await start_server(settings, lambda server: None, [], app.ready)
    log.info("ingest worker %s: health on %s:%d", app.worker.worker_id, settings.host, running.port)
    worker = asyncio.create_task(app.worker.run(stop))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({worker, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        log.info("shutting down (grace %.1fs)", settings.grace_seconds)
        done, _ = await asyncio.wait({worker}, timeout=settings.grace_seconds)
        if not done:
            log.warning("abandoning the item in progress; its job's lease will expire")
    finally:
        for task in (worker, stopping):
            task.cancel()
        await asyncio.gather(worker, stopping, return_exceptions=True)
        await running.stop(settings.grace_seconds)
        await app.close()
    crashed = None if worker.cancelled() else worker.exception()
    if crashed is not None:
        raise crashed
    log.info("stopped")


def main() -> None:
    """Console entry point (``quarry-ingest``): settings from the environment -> serve."""
    settings = IngestSettings()  # type: ignore[call-arg]  # required addresses come from the env
    configure("ingest", level=settings.log_level, fmt=settings.log_format)
    run(lambda: serve(settings))


if __name__ == "__main__":
    main()
