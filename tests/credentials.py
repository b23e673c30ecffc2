"""The service credential the tests' servers require and their clients send."""

from __future__ import annotations

from typing import TypeVar

from pydantic import SecretStr

from services.common.security import ServiceAuth
from services.common.settings import ServiceSettings

TOKEN = "quarry-test-service-token"
AUTH = ServiceAuth(token=SecretStr(TOKEN))
#: For calls made with a bare stub (``metadata=METADATA``).
METADATA = (("authorization", f"Bearer {TOKEN}"),)

_S = TypeVar("_S", bound=ServiceSettings)


def with_auth(settings: _S) -> _S:
    """``settings`` with the tests' token as the service credential (unless it has one)."""
    current = settings.service_auth
    if current.uses_token or current.tls or current.insecure:
        return settings
    return settings.model_copy(update={"service_auth": AUTH})


def env(process: str) -> dict[str, str]:
    """The environment giving ``process`` (``dense``, ``gateway``, ...) the tests' token."""
    return {f"QUARRY_{process.upper()}_SERVICE_AUTH__TOKEN": TOKEN}
