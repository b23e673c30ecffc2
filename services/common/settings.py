"""Settings shared by every process; each service subclasses with its own env prefix."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.security import ServiceAuth


class ServiceSettings(BaseSettings):
    """Base for a gRPC service process (prefix set by the subclass, e.g. ``QUARRY_DENSE_``)."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    grace_seconds: float = Field(default=5.0, ge=0)
    reflection: bool = False
    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|text)$")
    # When set, the bound port is written here (used by the launcher with port 0).
    port_file: str | None = None
    #: The credential every call to this process must carry, and that its own calls carry
    #: (``QUARRY_<PROCESS>_SERVICE_AUTH__*``, see ``services.common.security``).
    service_auth: ServiceAuth = Field(default_factory=ServiceAuth)
    #: A plaintext port serving only ``grpc.health.v1`` (for kubelet probes, which cannot do mTLS).
    health_port: int | None = Field(default=None, ge=0, le=65535)
    #: Prometheus ``/metrics`` over plain HTTP on this port (off when unset; 0 picks one).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)

    @property
    def process(self) -> str:
        """The process's name, from its env prefix (``QUARRY_DENSE_`` -> ``dense``)."""
        prefix = str(self.model_config.get("env_prefix") or "")
        return prefix.removeprefix("QUARRY_").rstrip("_").lower() or "service"
