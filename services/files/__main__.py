"""``python -m services.files``: settings -> bootstrap -> serve."""

from __future__ import annotations

import asyncio
import contextlib

from services.common.grpc_server import run, serve
from services.common.logging import configure
from services.files.bootstrap import bootstrap
from services.files.metrics import refresh_forever
from services.files.servicer import SERVICE_NAME, register
from services.files.settings import FilesSettings


async def _serve(settings: FilesSettings) -> None:
    files = await bootstrap(settings)
    gauges = None
    if settings.metrics_port is not None:
        gauges = asyncio.create_task(refresh_forever(files.service, settings.metrics_interval_seconds))
    try:
        await serve(settings, register(files.service), [SERVICE_NAME], files.ready)
    finally:
        if gauges is not None:
            gauges.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gauges
        await files.close()


def main() -> None:
    """Entry point of the ``quarry-files`` console script."""
    settings = FilesSettings()
    configure("files", level=settings.log_level, fmt=settings.log_format)
    run(lambda: _serve(settings))


if __name__ == "__main__":
    main()
