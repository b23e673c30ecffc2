"""Conversions between domain types and the shared protobuf messages."""

from __future__ import annotations

import json
from typing import Protocol

from services._proto.quarry.common.v1 import common_pb2 as pb
from services.common.domain import And, Chunk, Condition, FilterNode, Hit, Not, Op, Or, Scalar, filter_limit_error
from services.common.errors import InvalidArgument

_OP_TO_PB = {op: getattr(pb, f"OP_{op.name}") for op in Op}
_PB_TO_OP = {v: k for k, v in _OP_TO_PB.items()}


class InvalidFilterError(InvalidArgument, ValueError):
    """A filter message that cannot be turned into a filter tree."""


class InvalidChunkError(InvalidArgument, ValueError):
    """A chunk message whose metadata is not a JSON object."""


def value_to_pb(value: Scalar) -> pb.Value:
    if isinstance(value, bool):
        return pb.Value(b=value)
    if isinstance(value, int | float):
        return pb.Value(n=float(value))
    return pb.Value(s=str(value))


def value_from_pb(value: pb.Value) -> Scalar:
    kind = value.WhichOneof("kind")
    if kind == "b":
        return value.b
    if kind == "n":
        return value.n
    if kind == "s":
        return value.s
    raise InvalidFilterError("filter value has no kind")


def filter_to_pb(node: FilterNode) -> pb.Filter:
    if isinstance(node, Condition):
        return pb.Filter(
            condition=pb.Condition(
                field=node.field, op=_OP_TO_PB[node.op], values=[value_to_pb(v) for v in node.values]
            )
        )
    if isinstance(node, And):
        return pb.Filter(all=pb.FilterList(filters=[filter_to_pb(c) for c in node.children]))
    if isinstance(node, Or):
        return pb.Filter(any=pb.FilterList(filters=[filter_to_pb(c) for c in node.children]))
    return pb.Filter(negate=filter_to_pb(node.child))


def filter_from_pb(message: pb.Filter) -> FilterNode:
    kind = message.WhichOneof("node")
    if kind == "condition":
        c = message.condition
        if c.op not in _PB_TO_OP:
            raise InvalidFilterError(f"unknown filter operator {c.op}")
        return Condition(c.field, _PB_TO_OP[c.op], tuple(value_from_pb(v) for v in c.values))
    if kind == "all":
        return And(tuple(filter_from_pb(f) for f in message.all.filters))
    if kind == "any":
        return Or(tuple(filter_from_pb(f) for f in message.any.filters))
    if kind == "negate":
        return Not(filter_from_pb(message.negate))
    raise InvalidFilterError("empty filter node")


class _HasFilter(Protocol):
    has_filter: bool

    @property
    def filter(self) -> pb.Filter: ...


def request_filter(request: _HasFilter) -> FilterNode | None:
    """The filter of a search request (``has_filter`` tells an absent filter from an empty one),
    within the bounds of ``filter_limit_error``."""
    if not request.has_filter:
        return None
    node = filter_from_pb(request.filter)
    problem = filter_limit_error(node)
    if problem:
        raise InvalidFilterError(problem)
    return node


def chunk_to_pb(chunk: Chunk) -> pb.Chunk:
    return pb.Chunk(
        id=chunk.id,
        index_id=chunk.index_id,
        file_id=chunk.file_id,
        file_name=chunk.file_name,
        content=chunk.content,
        metadata_json=chunk.metadata_json(),
        chunk_index=chunk.chunk_index,
        start_char=chunk.start_char,
        end_char=chunk.end_char,
        token_count=chunk.token_count,
        page_start=chunk.page_start,
        page_end=chunk.page_end,
        source_id=chunk.source_id,
    )


def _metadata(raw: str) -> dict[str, object]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidChunkError(f"chunk metadata_json is not JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise InvalidChunkError("chunk metadata_json must be a JSON object")
    return value


def chunk_from_pb(message: pb.Chunk) -> Chunk:
    """Raises ``InvalidChunkError`` when the metadata is not a JSON object."""
    return Chunk(
        id=message.id,
        index_id=message.index_id,
        file_id=message.file_id,
        file_name=message.file_name,
        content=message.content,
        metadata=_metadata(message.metadata_json),  # type: ignore[arg-type]
        chunk_index=message.chunk_index,
        start_char=message.start_char,
        end_char=message.end_char,
        token_count=message.token_count,
        page_start=message.page_start,
        page_end=message.page_end,
        source_id=message.source_id,
    )


def hit_to_pb(hit: Hit) -> pb.Hit:
    return pb.Hit(chunk=chunk_to_pb(hit.chunk), score=hit.score)


def hit_from_pb(message: pb.Hit) -> Hit:
    return Hit(chunk=chunk_from_pb(message.chunk), score=message.score)
