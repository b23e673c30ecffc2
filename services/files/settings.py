"""Settings of the files service (env prefix ``QUARRY_FILES_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class FilesSettings(ServiceSettings):
    """The catalog database and the worker lease defaults.

    ``database_url`` unset: an embedded SQLite file ``<data_dir>/catalog.db``. A ``postgresql://``
    (or ``postgres://``) URL switches to PostgreSQL through psycopg 3.
    """

    model_config = SettingsConfigDict(env_prefix="QUARRY_FILES_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Path(".quarry/files")
    database_url: str | None = None
    # PostgreSQL only: the schema to use (created if missing) via search_path.
    database_schema: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    pool_size: int = Field(default=10, ge=1)
    max_overflow: int = Field(default=10, ge=0)
    pool_timeout_s: float = Field(default=10.0, gt=0)
    connect_timeout_s: int = Field(default=10, ge=1)
    statement_timeout_ms: int = Field(default=30_000, ge=0)
    sqlite_busy_timeout_s: float = Field(default=30.0, gt=0)
    # Used when a ClaimJob/RenewLease request leaves lease_seconds at 0.
    default_lease_seconds: float = Field(default=60.0, gt=0)
    # A job whose lease expired this many times (its worker died or hung each time) is failed.
    max_job_attempts: int = Field(default=5, ge=1)
    # The bootstrap admin key (a Secret in the cluster, as a file): registered at start as an admin
    # key of the "Default" project. Either the key itself or a file holding it.
    admin_key: SecretStr | None = None
    admin_key_file: Path | None = None
    # How often the backlog and chunk gauges are read from the catalog (when metrics are served).
    metrics_interval_seconds: float = Field(default=15.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _driver(cls, value: str | None) -> str | None:
        if not value:
            return None
        for plain in ("postgresql://", "postgres://"):
            if value.startswith(plain):
                return "postgresql+psycopg://" + value[len(plain) :]
        if value.startswith("sqlite://"):
            return "sqlite+aiosqlite://" + value[len("sqlite://") :]
        return value

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL to connect to (the SQLite default lives under ``data_dir``)."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'catalog.db').resolve()}"
