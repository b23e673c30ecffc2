"""The rerank service's errors; the servicer maps them to gRPC status through ``@mapped``."""

from __future__ import annotations

from services.common.errors import FailedPrecondition, InvalidArgument, QuarryError, Unavailable


class RerankError(QuarryError):
    """Base of everything the rerank service raises on purpose."""


class TooManyPassages(InvalidArgument, RerankError):
    """The request carries more passages than the service accepts in one call."""


class ModelNotFound(FailedPrecondition, RerankError):
    """The configured model directory or hub name cannot be resolved to model files."""


class BackendUnavailable(Unavailable, RerankError):
    """The external rerank endpoint could not be reached or failed (5xx) after retries."""


class BackendRejected(FailedPrecondition, RerankError):
    """The external rerank endpoint refused the request (4xx: bad key, bad model, too large)."""


class BackendProtocolError(RerankError):
    """The external rerank endpoint answered with something that is not a rerank response."""
