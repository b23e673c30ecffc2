"""The sparse service's errors; the servicer maps them to gRPC status through ``@mapped``."""

from __future__ import annotations

from services.common.errors import FailedPrecondition, InvalidArgument, QuarryError


class SparseError(QuarryError):
    """Base of everything the sparse service raises on purpose."""


class InvalidRequest(InvalidArgument, SparseError):
    """A request that cannot be served as sent (empty index id, negative top_k, bad chunk)."""


class InvalidFilter(InvalidArgument, SparseError):
    """A filter tree the engine cannot evaluate (wrong arity, a range over a non-number)."""


class NotImplementedBackend(FailedPrecondition, SparseError):
    """The settings select a backend that this build does not ship yet."""
