"""The sparse service's errors; the servicer maps them to gRPC status through ``@mapped``."""

from __future__ import annotations

from services.common.errors import InvalidArgument, QuarryError, Unavailable


class SparseError(QuarryError):
    """Base of everything the sparse service raises on purpose."""


class InvalidRequest(InvalidArgument, SparseError):
    """A request that cannot be served as sent (empty index id, negative top_k, bad chunk)."""


class InvalidFilter(InvalidArgument, SparseError):
    """A filter tree the engine cannot evaluate (wrong arity, a range over a non-number)."""


class BackendUnavailable(Unavailable, SparseError):
    """The search cluster cannot be reached, is overloaded after retries, or refuses our credentials."""
