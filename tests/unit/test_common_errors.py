"""Servicer error mapping: one place turns domain errors into gRPC status codes."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, mapped


class RecordingContext:
    """Stands in for grpc.aio.ServicerContext: ``abort`` records and raises like the real one."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise grpc.aio.AbortError()


class Servicer:
    def __init__(self, exc: Exception | None) -> None:
        self.exc = exc

    @mapped
    async def Call(self, request: Any, context: Any) -> str:
        if self.exc is not None:
            raise self.exc
        return "ok"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (NotFound("index x not found"), (grpc.StatusCode.NOT_FOUND, "index x not found")),
        (InvalidArgument("bad pattern"), (grpc.StatusCode.INVALID_ARGUMENT, "bad pattern")),
        (FailedPrecondition("lease lost"), (grpc.StatusCode.FAILED_PRECONDITION, "lease lost")),
        (TimeoutError(), (grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")),
        (RuntimeError("secret path /var/x"), (grpc.StatusCode.INTERNAL, "internal error")),
    ],
)
async def test_errors_map_to_status_and_hide_unexpected_details(
    exc: Exception, expected: tuple[grpc.StatusCode, str]
) -> None:
    context = RecordingContext()
    with pytest.raises(grpc.aio.AbortError):
        await Servicer(exc).Call(None, context)
    assert context.aborted == expected


async def test_success_passes_through() -> None:
    context = RecordingContext()
    assert await Servicer(None).Call(None, context) == "ok"
    assert context.aborted is None


def test_claim_chunks_fills_the_index_and_refuses_foreign_or_anonymous_chunks() -> None:
    from services.common.domain import Chunk, claim_chunks

    mine = Chunk(id="a", index_id="", file_id="f", content="x")
    assert claim_chunks("idx", [mine]) == [Chunk(id="a", index_id="idx", file_id="f", content="x")]
    with pytest.raises(InvalidArgument, match="belongs to index 'other'"):
        claim_chunks("idx", [Chunk(id="a", index_id="other", file_id="f", content="x")])
    with pytest.raises(InvalidArgument, match="needs an id"):
        claim_chunks("idx", [Chunk(id="", index_id="idx", file_id="f", content="x")])
    with pytest.raises(InvalidArgument, match="index_id"):
        claim_chunks("", [mine])


def test_chunk_metadata_must_be_a_json_object() -> None:
    from services._proto.quarry.common.v1 import common_pb2
    from services.common.convert import InvalidChunkError, chunk_from_pb

    assert chunk_from_pb(common_pb2.Chunk(id="a", metadata_json='{"y": 1}')).metadata == {"y": 1}
    assert chunk_from_pb(common_pb2.Chunk(id="a")).metadata == {}
    for bad in ("[1, 2]", "{not json", '"text"'):
        with pytest.raises(InvalidChunkError):
            chunk_from_pb(common_pb2.Chunk(id="a", metadata_json=bad))
