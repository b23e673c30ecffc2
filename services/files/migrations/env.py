"""Alembic environment of the catalog.

Called two ways. ``SqlCatalog.start()`` hands over a connection (config.attributes["connection"])
already inside its migration transaction, holding the migration lock, with the search_path set
to the configured schema; everything runs in that one transaction. The alembic command line
gives none: the URL and schema come from ``-x url=... -x schema=...`` or else from the files
service's settings, and the connection is opened the same way ``SqlCatalog`` opens its own
(async driver, search_path, the same lock).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from services.files.adapters.sql import SqlCatalog, metadata
from services.files.settings import FilesSettings

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


def _url_and_schema() -> tuple[str, str | None]:
    args = context.get_x_argument(as_dictionary=True)
    settings = FilesSettings(database_url=args["url"]) if "url" in args else FilesSettings()
    return settings.resolved_database_url(), args.get("schema", settings.database_schema)


async def _run_from_url() -> None:
    url, schema = _url_and_schema()
    catalog = SqlCatalog.from_url(url, schema=schema, pool_size=1, max_overflow=0)
    try:
        async with catalog.migration_connection() as conn:
            await conn.run_sync(_run)
    finally:
        await catalog.close()


if context.is_offline_mode():
    context.configure(url=_url_and_schema()[0], target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (given := config.attributes.get("connection")) is not None:
    _run(given)
else:
    asyncio.run(_run_from_url())
