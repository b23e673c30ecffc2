"""Domain types shared by the services: chunks, hits and the internal filter tree.

Everything inside a service speaks these frozen dataclasses; only servicers and gRPC
client wrappers touch generated protobuf messages (see ``services.common.convert``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias

from services.common.errors import InvalidArgument

Scalar: TypeAlias = str | float | bool
MetaValue: TypeAlias = str | int | float | bool | list[str | int | float | bool] | None

#: The filter field that addresses a chunk's parsed file id rather than user metadata.
FILE_ID_FIELD = "$file_id"


#: The content type of a pipeline document's text: always parsed as plain text, whatever its id
#: (the display name) looks like ("notes.html" is a document id, not an HTML file).
DOCUMENT_CONTENT_TYPE = "text/x-quarry-document"


def files_index_id(index_id: str) -> str:
    """The companion index that holds one "file card" per file of ``index_id`` (its name and
    metadata as text), searched by the legacy ``files_via_metadata`` retrieval mode."""
    return f"{index_id}.files"


def file_card_id(parsed_file_id: str) -> str:
    """A file card's chunk id: version 0 never collides with a content chunk (versions start at 1)."""
    return chunk_id(parsed_file_id, 0, 0)


class Op(StrEnum):
    """Filter operators. The v2 API uses the first eight; the legacy tree uses them all."""

    EQ = "eq"
    NE = "ne"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    IN = "in"
    NIN = "nin"
    ANY = "any"
    ALL = "all"
    CONTAINS = "contains"
    TEXT_MATCH = "text_match"
    TEXT_MATCH_INSENSITIVE = "text_match_insensitive"
    IS_EMPTY = "is_empty"


RANGE_OPS = frozenset({Op.GT, Op.GTE, Op.LT, Op.LTE})


@dataclass(frozen=True, slots=True)
class Condition:
    """``metadata[field] <op> values``.

    Semantics every adapter implements identically (the contract suites check it):

    - EQ: the field equals the single value; a list-valued field matches when any element
      equals it. Numbers compare numerically (2022 == 2022.0); strings exactly; bools as bools.
    - NE: NOT EQ (a chunk without the field matches).
    - GT/GTE/LT/LTE: numeric comparison with the single numeric value; missing field: no match.
    - IN: EQ for any of the values. NIN: NOT IN (a chunk without the field matches).
    - ANY: like IN (for list fields: any element in values). ALL: every value is an element.
    - CONTAINS: a string field contains the value as a substring, or a list field has it as
      an element.
    - TEXT_MATCH: every token of the value occurs as a token of the string field (case kept);
      TEXT_MATCH_INSENSITIVE: the same, ignoring case.
    - IS_EMPTY: the field is missing, null, "" or [].
    """

    field: str
    op: Op
    values: tuple[Scalar, ...] = ()


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[FilterNode, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[FilterNode, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: FilterNode


FilterNode: TypeAlias = Condition | And | Or | Not

# Bounds on one filter tree. The gateway enforces them with a 422 naming the field; the engines
# check them again for internal callers. They keep every engine's query inside its own limits:
# protobuf decodes at most 100 nested messages (two per group), and tantivy matches ``contains``
# with a regex automaton of at most 1,000 states, about one per byte of the hex field name and
# of the value.
MAX_FILTER_DEPTH = 16
MAX_FILTER_CONDITIONS = 256
MAX_FILTER_VALUES = 1024
MAX_FILTER_KEY_BYTES = 128
MAX_FILTER_VALUE_CHARS = 8191
MAX_CONTAINS_BYTES = 128


def filter_limit_error(node: FilterNode) -> str | None:
    """Why ``node`` exceeds the bounds above, or ``None`` when it is within them."""
    conditions = 0
    stack: list[tuple[FilterNode, int]] = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > MAX_FILTER_DEPTH:
            return f"filters nest deeper than {MAX_FILTER_DEPTH} levels"
        if isinstance(current, Condition):
            conditions += 1
            problem = condition_limit_error(current)
            if problem:
                return problem
        elif isinstance(current, Not):
            stack.append((current.child, depth + 1))
        else:
            stack.extend((child, depth + 1) for child in current.children)
    if conditions > MAX_FILTER_CONDITIONS:
        return f"more than {MAX_FILTER_CONDITIONS} filter conditions"
    return None


def condition_limit_error(cond: Condition) -> str | None:
    """Why one condition exceeds the bounds (its key, its number of values, a value's length)."""
    if len(cond.field.encode()) > MAX_FILTER_KEY_BYTES:
        return f"a filter key is at most {MAX_FILTER_KEY_BYTES} bytes (UTF-8)"
    if len(cond.values) > MAX_FILTER_VALUES:
        return f"a filter takes at most {MAX_FILTER_VALUES} values"
    for value in cond.values:
        if isinstance(value, str):
            if len(value) > MAX_FILTER_VALUE_CHARS:
                return f"a filter value is at most {MAX_FILTER_VALUE_CHARS} characters"
            if cond.op is Op.CONTAINS and len(value.encode()) > MAX_CONTAINS_BYTES:
                return f"a contains value is at most {MAX_CONTAINS_BYTES} bytes (UTF-8)"
    return None


@dataclass(frozen=True, slots=True)
class Chunk:
    """A chunk of one parsed file, written to both engines under the same id."""

    id: str
    index_id: str
    file_id: str
    content: str
    file_name: str = ""
    metadata: Mapping[str, MetaValue] = field(default_factory=dict)
    chunk_index: int = 0
    start_char: int = 0
    end_char: int = 0
    token_count: int = 0
    page_start: int = 0
    page_end: int = 0
    #: The source file's unique_id (a pipeline document's id, for one).
    source_id: str = ""

    def metadata_json(self) -> str:
        return json.dumps(dict(self.metadata), separators=(",", ":"), sort_keys=True)


#: What an engine stores of a chunk beside its id, file id and content, and reads back: the one
#: codec every engine adapter uses (a new chunk field is added here, and in the proto).
STORED_FIELDS: tuple[str, ...] = ("file_name", "metadata", "chunk_index", "start_char", "end_char", "token_count",
                                  "page_start", "page_end", "source_id")
_STORED_TYPES = {"file_name": str, "chunk_index": int, "start_char": int, "end_char": int, "token_count": int,
                 "page_start": int, "page_end": int, "source_id": str}


def stored_fields(chunk: Chunk) -> dict[str, Any]:
    """The stored part of ``chunk`` (JSON-ready)."""
    out = {name: getattr(chunk, name) for name in STORED_FIELDS}
    out["metadata"] = dict(chunk.metadata)
    return out


def chunk_from_stored(chunk_id: str, index_id: str, file_id: str, content: str,
                      stored: Mapping[str, Any]) -> Chunk:
    """The chunk ``stored_fields`` wrote (absent fields take their defaults)."""
    values: dict[str, Any] = {name: kind(stored[name]) for name, kind in _STORED_TYPES.items()
                              if stored.get(name) is not None}
    return Chunk(id=chunk_id, index_id=index_id, file_id=file_id, content=content,
                 metadata=dict(stored.get("metadata") or {}), **values)


@dataclass(frozen=True, slots=True)
class Hit:
    chunk: Chunk
    score: float


def chunk_id(file_id: str, version: int, index: int) -> str:
    """Deterministic chunk id, so a retried batch overwrites instead of duplicating.

    A UUID-shaped hex string (Qdrant point ids must be UUIDs or integers).
    """
    digest = hashlib.sha256(f"{file_id}:{version}:{index}".encode()).hexdigest()[:32]
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def claim_chunks(index_id: str, chunks: Sequence[Chunk]) -> list[Chunk]:
    """The chunks of one write to ``index_id``: each needs an id; one without an index id takes
    ``index_id``, one naming another index is refused (INVALID_ARGUMENT)."""
    if not index_id:
        raise InvalidArgument("index_id is required")
    claimed = []
    for chunk in chunks:
        if not chunk.id:
            raise InvalidArgument("every chunk needs an id")
        if chunk.index_id and chunk.index_id != index_id:
            raise InvalidArgument(f"chunk {chunk.id} belongs to index {chunk.index_id!r}, not {index_id!r}")
        claimed.append(chunk if chunk.index_id else dataclasses.replace(chunk, index_id=index_id))
    return claimed


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
