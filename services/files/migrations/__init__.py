"""Alembic migrations of the catalog schema (SQLite and PostgreSQL).

``SqlCatalog.start()`` upgrades to head on every start; ``alembic.ini`` beside this file serves
the alembic command line (``-x url=... -x schema=...``) for everything else (downgrade, history).
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy.engine import Connection

SCRIPT_LOCATION = Path(__file__).resolve().parent


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic config for these scripts; with ``connection``, env.py migrates over it (inside its
    transaction) instead of opening its own."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if connection is not None:
        config.attributes["connection"] = connection
    return config
