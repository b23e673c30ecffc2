"""What both Qdrant adapters share: the payload layout and the filter translation.

Payload of one point (one chunk)::

    {"chunk_id": ..., "file_id": ..., "file_name": ..., "content": ...,
     "chunk_index": ..., "start_char": ..., "end_char": ..., "token_count": ...,
     "page_start": ..., "page_end": ...,
     "meta": {<the user's metadata, as given>},
     "meta_str": {<only the scalar string fields of meta, again>}}

User metadata lives under ``meta`` so a user key can never collide with Quarry's own keys
(Qdrant filters address it as ``meta.year``). ``meta_str`` repeats the scalar string fields
so that substring and token conditions can tell a string field from a list field (Qdrant
matches list elements transparently) and so that a case-keeping full-text index can sit
beside the keyword index of ``meta.<key>``.

The filter translation is written once against a small ``FilterBuilder``; each adapter
supplies a builder producing its engine's native classes (``qdrant_edge`` or
``qdrant_client.models``). It is pure and never mutates its input.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from services.common.domain import (
    FILE_ID_FIELD,
    And,
    Chunk,
    Condition,
    FilterNode,
    Not,
    Op,
    Or,
    Scalar,
    chunk_from_stored,
    is_number,
    stored_fields,
)
from services.common.errors import InvalidArgument

META = "meta"
META_STR = "meta_str"
FILE_ID = "file_id"
CHUNK_ID = "chunk_id"

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Namespace for ids that are not UUIDs already (Qdrant point ids must be UUIDs or integers).
_ID_NAMESPACE = uuid.UUID("6f0d3b5e-2f49-4b8e-9a57-0c7d9e3c1a11")


class UnsupportedFilter(InvalidArgument):
    """A filter this engine cannot evaluate natively (never post-filtered in Python)."""


def point_id(chunk_id: str) -> str:
    """The Qdrant point id for a chunk id: the id itself when it is a UUID, else a UUIDv5 of it."""
    try:
        return str(uuid.UUID(chunk_id))
    except ValueError:
        return str(uuid.uuid5(_ID_NAMESPACE, chunk_id))


def quote_key(key: str) -> str | None:
    """One JSON-path segment for a user key, or None when Qdrant's path syntax cannot express it."""
    if _PLAIN_KEY.match(key):
        return key
    if not key or '"' in key or "\\" in key:
        return None
    return f'"{key}"'


def meta_path(key: str, root: str = META) -> str:
    """``meta.<key>`` (quoted when needed); raises UnsupportedFilter for an inexpressible key."""
    segment = quote_key(key)
    if segment is None:
        raise UnsupportedFilter(f"metadata key {key!r} cannot be used in a filter")
    return f"{root}.{segment}"


def chunk_payload(chunk: Chunk) -> dict[str, Any]:
    """The point payload for one chunk (see the module docstring)."""
    stored = stored_fields(chunk)
    meta = stored.pop("metadata")
    return {
        CHUNK_ID: chunk.id,
        FILE_ID: chunk.file_id,
        "content": chunk.content,
        **stored,
        META: meta,
        META_STR: {k: v for k, v in meta.items() if isinstance(v, str)},
    }


def chunk_from_payload(index_id: str, pid: object, payload: Mapping[str, Any] | None) -> Chunk:
    """Rebuild the Chunk stored by ``chunk_payload``."""
    p = payload or {}
    return chunk_from_stored(str(p.get(CHUNK_ID) or pid), index_id, str(p.get(FILE_ID, "")), str(p.get("content", "")),
                             {**p, "metadata": p.get(META)})


def index_kinds(metadata: Mapping[str, object]) -> Iterable[tuple[str, str]]:
    """(payload path, kind) of the payload indexes a chunk's metadata calls for.

    kind is "keyword", "float", "bool" or "text" (the case-keeping token index on
    ``meta_str.<key>``). Keys Qdrant's path syntax cannot express are skipped.
    """
    for key, value in metadata.items():
        segment = quote_key(key)
        if segment is None:
            continue
        sample = value[0] if isinstance(value, list) and value else value
        if isinstance(sample, bool):
            yield f"{META}.{segment}", "bool"
        elif is_number(sample):
            yield f"{META}.{segment}", "float"
        elif isinstance(sample, str):
            yield f"{META}.{segment}", "keyword"
            if isinstance(value, str):
                yield f"{META_STR}.{segment}", "text"


C = TypeVar("C")


class FilterBuilder(Protocol[C]):
    """The engine-specific constructors the translation needs."""

    #: Whether ``text`` on ``meta_str.<key>`` is case-sensitive (a case-keeping text index).
    case_sensitive_text: bool

    def match_value(self, key: str, value: str | bool) -> C: ...
    def match_any(self, key: str, values: list[str]) -> C: ...
    def range(self, key: str, *, gt: float | None = None, gte: float | None = None,
              lt: float | None = None, lte: float | None = None) -> C: ...
    def substring(self, key: str, value: str) -> C: ...
    def text(self, key: str, value: str) -> C: ...
    def is_empty(self, key: str) -> C: ...
    def combine(self, must: list[C] | None = None, should: list[C] | None = None,
                must_not: list[C] | None = None) -> C:
        """A Filter; never called with an empty ``should``."""
        ...
    def nothing(self) -> C:
        """A condition no point satisfies."""
        ...


class FilterTranslator(Generic[C]):
    """Translates the internal filter tree (``services.common.domain``) with one builder."""

    def __init__(self, builder: FilterBuilder[C]) -> None:
        self._b = builder

    def translate(self, node: FilterNode) -> C:
        """The native filter for ``node`` (always a Filter, usable as a top-level filter)."""
        return self._b.combine(must=[self._node(node)])

    def _node(self, node: FilterNode) -> C:
        b = self._b
        if isinstance(node, Condition):
            return self._condition(node)
        if isinstance(node, And):
            return b.combine(must=[self._node(c) for c in node.children])
        if isinstance(node, Or):
            if not node.children:
                return b.nothing()
            return b.combine(should=[self._node(c) for c in node.children])
        if isinstance(node, Not):
            return b.combine(must_not=[self._node(node.child)])
        raise UnsupportedFilter(f"unknown filter node {type(node).__name__}")

    def _paths(self, field: str) -> tuple[str, str | None]:
        """(path of the field, path of its scalar-string copy or None for $file_id)."""
        if field == FILE_ID_FIELD:
            return FILE_ID, None
        return meta_path(field), meta_path(field, META_STR)

    def _eq(self, path: str, value: Scalar) -> C:
        if is_number(value):
            # A range, so an integer payload equals the same float value (2022 == 2022.0).
            v = float(value)
            return self._b.range(path, gte=v, lte=v)
        if isinstance(value, bool):
            return self._b.match_value(path, value)
        return self._b.match_value(path, str(value))

    def _in(self, path: str, values: tuple[Scalar, ...]) -> C:
        strings = [v for v in values if isinstance(v, str)]
        parts = [self._eq(path, v) for v in values if not isinstance(v, str)]
        if strings:
            parts.insert(0, self._b.match_any(path, strings) if len(strings) > 1
                         else self._b.match_value(path, strings[0]))
        if not parts:
            return self._b.nothing()
        return parts[0] if len(parts) == 1 else self._b.combine(should=parts)

    @staticmethod
    def _one(cond: Condition) -> Scalar:
        if len(cond.values) != 1:
            raise InvalidArgument(f"operator {cond.op.value} on {cond.field!r} takes exactly one value")
        return cond.values[0]

    def _condition(self, cond: Condition) -> C:
        b = self._b
        path, str_path = self._paths(cond.field)
        op = cond.op
        if op is Op.EQ:
            return self._eq(path, self._one(cond))
        if op is Op.NE:
            return b.combine(must_not=[self._eq(path, self._one(cond))])
        if op in (Op.GT, Op.GTE, Op.LT, Op.LTE):
            value = self._one(cond)
            if not is_number(value):
                raise InvalidArgument(f"operator {op.value} on {cond.field!r} needs a number")
            return b.range(path, **{op.value: float(value)})
        if op in (Op.IN, Op.ANY):
            return self._in(path, cond.values)
        if op is Op.NIN:
            if not cond.values:
                return b.combine()
            return b.combine(must_not=[self._in(path, cond.values)])
        if op is Op.ALL:
            return b.combine(must=[self._eq(path, v) for v in cond.values])
        if op is Op.CONTAINS:
            return b.combine(must=[self._contains(path, str_path, v) for v in cond.values or [""]])
        if op in (Op.TEXT_MATCH, Op.TEXT_MATCH_INSENSITIVE):
            return self._text(cond, path, str_path)
        if op is Op.IS_EMPTY:
            # Qdrant's is_empty covers missing, null and []; "" is a value to Qdrant.
            return b.combine(should=[b.is_empty(path), b.match_value(path, "")])
        raise UnsupportedFilter(f"operator {op.value} is not supported")

    def _contains(self, path: str, str_path: str | None, value: Scalar) -> C:
        if not isinstance(value, str):
            return self._eq(path, value)
        # A list element equal to the value, or a scalar string containing it.
        if str_path is None:
            return self._b.substring(path, value)
        return self._b.combine(should=[self._b.match_value(path, value), self._b.substring(str_path, value)])

    def _text(self, cond: Condition, path: str, str_path: str | None) -> C:
        b = self._b
        value = self._one(cond)
        if not isinstance(value, str):
            raise InvalidArgument(f"operator {cond.op.value} on {cond.field!r} needs a string")
        if str_path is None:
            raise UnsupportedFilter(f"operator {cond.op.value} is not supported on {FILE_ID_FIELD}")
        if cond.op is Op.TEXT_MATCH:
            if not b.case_sensitive_text:
                raise UnsupportedFilter("text_match (case-sensitive) is not supported by this engine")
            return b.text(str_path, value)
        # Unindexed-text semantics (lowercased word tokens) on meta.<key>; the meta_str copy
        # existing restricts it to scalar string fields.
        return b.combine(must=[b.text(path, value)], must_not=[b.is_empty(str_path)])
