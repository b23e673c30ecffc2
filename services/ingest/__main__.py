"""``python -m services.ingest`` / ``quarry-ingest``: the ingest worker, with a gRPC health
endpoint for probes, in the same process shape as the services.

On stop the worker takes no new job and finishes the item in progress; after ``grace_seconds``
it abandons it (the job's lease expires and another worker resumes).
"""

from __future__ import annotations

import asyncio
import logging

from services.common.process import Process, serve_process
from services.common.process import main as process_main
from services.ingest.bootstrap import bootstrap
from services.ingest.settings import IngestSettings

log = logging.getLogger("services.ingest")


def build(settings: IngestSettings) -> Process:
    app = bootstrap(settings)
    log.info("ingest worker %s", app.worker.worker_id)
    return Process(app.ready, app.close, background=[app.worker.run])


async def serve(settings: IngestSettings, stop: asyncio.Event | None = None) -> None:
    """Serve health and run the worker until ``stop`` is set (by SIGTERM/SIGINT when not given)."""
    await serve_process(settings, build(settings), stop)


def main() -> None:
    """Console entry point ``quarry-ingest``."""
    process_main(IngestSettings, build)


if __name__ == "__main__":
    main()
