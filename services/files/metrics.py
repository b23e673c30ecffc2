"""The files service's gauges: the ingest backlog (what KEDA scales the workers on) and the
chunks each index holds, read from the catalog every ``interval`` seconds."""

from __future__ import annotations

import asyncio
import logging

from services.common.telemetry import INDEX_CHUNKS, INGEST_OLDEST_SECONDS, INGEST_QUEUED_ITEMS, INGEST_QUEUED_JOBS
from services.files.service import FilesService

log = logging.getLogger(__name__)


async def refresh(service: FilesService) -> None:
    """Set the gauges from the catalog once; indexes that are gone leave the chunk gauge."""
    backlog = await service.backlog()
    INGEST_QUEUED_JOBS.set(backlog.queued_jobs)
    INGEST_QUEUED_ITEMS.set(backlog.queued_items)
    INGEST_OLDEST_SECONDS.set(backlog.oldest_job_age_seconds)
    known = {labels for labels in _chunk_labels()}
    for index_id, chunks in backlog.chunks_by_index.items():
        INDEX_CHUNKS.labels("catalog", index_id).set(chunks)
        known.discard(("catalog", index_id))
    for labels in known:
        INDEX_CHUNKS.remove(*labels)


def _chunk_labels() -> list[tuple[str, str]]:
    return [(s.labels["engine"], s.labels["index"]) for m in INDEX_CHUNKS.collect() for s in m.samples]


async def refresh_forever(service: FilesService, interval: float) -> None:
    """``refresh`` every ``interval`` seconds; a failed read is logged and retried next time."""
    while True:
        try:
            await refresh(service)
        except Exception as exc:  # the catalog being down shows in its own metrics and health
            log.warning("could not read the backlog: %s", type(exc).__name__)
        await asyncio.sleep(interval)
