"""Composition root of the files service: settings -> catalog adapter -> service."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.files.adapters.sql import Clock, SqlCatalog, utcnow
from services.files.service import FilesService
from services.files.settings import FilesSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Files:
    """The wired service with its readiness probe and shutdown hook."""

    service: FilesService
    ready: Callable[[], Awaitable[bool]]
    close: Callable[[], Awaitable[None]]


async def register_admin_key(service: FilesService, settings: FilesSettings) -> None:
    """The configured bootstrap admin key, as an admin key of the "Default" project (idempotent)."""
    key = settings.admin_key.get_secret_value() if settings.admin_key else ""
    if settings.admin_key_file is not None:
        key = settings.admin_key_file.read_text().strip()
    if not key:
        return
    project = await service.ensure_project("Default")
    await service.create_api_key(project.id, key, name="bootstrap admin", is_admin=True)
    log.info("bootstrap admin key registered for project Default")


async def bootstrap(settings: FilesSettings, *, clock: Clock = utcnow) -> Files:
    """Open the catalog database (creating its tables) and build the service."""
    url = settings.resolved_database_url()
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalog = SqlCatalog.from_url(
        url,
        clock=clock,
        schema=settings.database_schema,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_s,
        statement_timeout_ms=settings.statement_timeout_ms,
        connect_timeout_s=settings.connect_timeout_s,
        sqlite_busy_timeout_s=settings.sqlite_busy_timeout_s,
    )
    try:
        await catalog.start()
    except BaseException:
        await catalog.close()
        raise
    service = FilesService(
        catalog, default_lease_seconds=settings.default_lease_seconds, max_job_attempts=settings.max_job_attempts
    )
    try:
        await register_admin_key(service, settings)
    except BaseException:
        await catalog.close()
        raise
    return Files(service=service, ready=catalog.ready, close=catalog.close)
