"""The sparse service's errors; the servicer maps them to gRPC status through ``@mapped``."""

from __future__ import annotations

from services.common.errors import DataLoss, InvalidArgument, QuarryError, Unavailable


class SparseError(QuarryError):
    """Base of everything the sparse service raises on purpose."""


class InvalidRequest(InvalidArgument, SparseError):
    """A request that cannot be served as sent (empty index id, negative top_k, bad chunk)."""


class InvalidFilter(InvalidArgument, SparseError):
    """A filter tree the engine cannot evaluate (wrong arity, a range over a non-number)."""


class IndexDamaged(DataLoss, SparseError):
    """An index whose files cannot be read (corrupted or missing on disk)."""

    def __init__(self, index_id: str, reason: str) -> None:
        super().__init__(f"keyword index {index_id} is damaged: {reason}")
        self.index_id = index_id
        self.reason = reason


class BackendUnavailable(Unavailable, SparseError):
    """The search cluster cannot be reached, is overloaded after retries, or refuses our credentials."""
