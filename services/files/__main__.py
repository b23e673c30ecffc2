"""``python -m services.files`` / ``quarry-files``: settings -> bootstrap -> serve."""

from __future__ import annotations

import asyncio

from services.common.process import Process
from services.common.process import main as process_main
from services.files.bootstrap import bootstrap
from services.files.metrics import refresh_forever
from services.files.servicer import SERVICE_NAME, register
from services.files.settings import FilesSettings


async def build(settings: FilesSettings) -> Process:
    files = await bootstrap(settings)
    background = []
    if settings.metrics_port is not None:  # the backlog and chunk gauges, read from the catalog

        async def gauges(stop: asyncio.Event) -> None:
            refresher = asyncio.create_task(refresh_forever(files.service, settings.metrics_interval_seconds))
            await stop.wait()
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)

        background.append(gauges)
    return Process(files.ready, files.close, register(files.service), [SERVICE_NAME], background)


def main() -> None:
    """Console entry point ``quarry-files``."""
    process_main(FilesSettings, build)


if __name__ == "__main__":
    main()
