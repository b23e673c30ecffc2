"""The stack as processes, one per e2e module (each module names its own API key)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import grpc

from services._proto.quarry.dense.v1 import dense_pb2, dense_pb2_grpc
from services._proto.quarry.sparse.v1 import sparse_pb2, sparse_pb2_grpc
from services.launcher import Stack


@contextmanager
def running_stack(data: Path, api_key: str, env: Mapping[str, str] | None = None) -> Iterator[Stack]:
    """Start every process on free ports (the ingest worker polling fast), stop them after;
    ``env`` adds settings (engine URLs, ...)."""
    s = Stack(data_dir=data, port=0, api_key=api_key, log_file=data / "stack.log",
              env={"QUARRY_INGEST_POLL_INTERVAL": "0.2", **(env or {})})
    try:
        s.start(timeout=180)
    except Exception:
        print((data / "stack.log").read_text()[-5000:])
        raise
    try:
        yield s
    finally:
        s.stop()


def engine_counts(stack: Stack, index_id: str, timeout: float = 30) -> tuple[int, int]:
    """The chunks dense and sparse hold for the index, asked of the engines directly."""
    md = stack.call_metadata
    with grpc.insecure_channel(stack.addresses["dense"]) as d, grpc.insecure_channel(stack.addresses["sparse"]) as s:
        dense = dense_pb2_grpc.DenseSearchStub(d).Count(dense_pb2.CountRequest(index_id=index_id), timeout=timeout,
                                                         metadata=md).count
        sparse = sparse_pb2_grpc.SparseSearchStub(s).Count(sparse_pb2.CountRequest(index_id=index_id),
                                                            timeout=timeout, metadata=md).count
    return int(dense), int(sparse)
