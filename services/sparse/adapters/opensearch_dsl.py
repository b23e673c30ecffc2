"""The OpenSearch requests of the sparse adapter, built as plain dicts (no I/O, inputs never mutated).

Layout: one OpenSearch index per Quarry index, ``<prefix><index id>`` when the id is already a
valid lowercase index name (``[a-z0-9][a-z0-9_.-]*``, at most 128 characters) and
``<prefix>-<slug>-<sha256 prefix>`` otherwise (the extra ``-`` keeps the two forms apart). Why
not one shared index routed by index id: BM25 statistics (document frequency, average length)
are per shard, so tenants sharing a shard would score each other's words, and dropping an index
would be a delete-by-query instead of an index delete. The cost is shards: a cluster allows
``cluster.max_shards_per_node`` (1000 by default) shard copies per data node, and every Quarry
index has a companion ``<id>.files`` index, so with 1 primary and 1 replica each Quarry index
holds 4 shard copies (about 250 Quarry indexes per data node). The default is therefore one
primary shard per index (small indexes need no more); raise the shard count for big indexes,
in which case searches use ``dfs_query_then_fetch`` so BM25 stays exact across shards.

Every index is created from an index template (``<prefix>chunks``, patterns ``<prefix>*``,
priority ``100 + len(prefix)`` so that a longer, more specific prefix wins over a shorter one
and two prefixes never tie) and with the same body on create, so the mapping is right even where
another template matches too. Settings: shards, replicas, refresh interval, the field limit.

Mapping:

- ``id`` / ``file_id``: keyword. ``_id`` is the chunk id (hashed when over 512 bytes).
- ``content``: text with the ``quarry_en`` analyzer, the equivalent of the embedded tantivy one:
  split on every character that is neither alphabetic nor numeric (the pattern
  ``[^\\p{IsAlphabetic}\\p{N}]+``, tantivy's simple tokenizer), drop tokens over 39 characters
  (tantivy: 40 bytes), lowercase, ASCII folding, Lucene's English stop words (the same 33 words
  as tantivy's list), Snowball English stemmer (``porter2``; tantivy uses Snowball English too).
  Measured by running this chain in Lucene 9.9 and the tantivy analyzer over the corpora in
  ``shared/datasets`` (697k tokens): tokens, length limit, folding and stop words agree exactly;
  0.23% of the tokens stem differently, 42 words in all, because tantivy's stemmer has later
  Snowball English rules (university: ``universiti`` vs ``univers``, organization: ``organiz``
  vs ``organ``, added: ``add`` vs ``ad``). Scores differ accordingly for those words only.
- ``chunk``: the remaining chunk attributes as one JSON string, not indexed, so a hit rebuilds
  the full ``Chunk`` exactly (metadata as given, ints stay ints) without mapping user keys.
- Metadata for filters, under field names that are the hex of the UTF-8 key (``year`` ->
  ``79656172``), so a dotted key (``a.b``) is not a path and never conflicts with ``a``, and the
  kind in the root name, so one key holding a number in one chunk and a string in another
  never conflicts either. Dynamic templates type them:

  - ``meta_s.<hex>``: a scalar string, keyword (``ignore_above`` 8191 characters), with text
    subfields ``words`` (runs of ``[\\p{L}\\p{N}_]``, case kept: Python's ``\\w+``) and
    ``words_ci`` (the same, lowercased) for ``text_match`` / ``text_match_insensitive``; words
    and values over 8191 characters are not indexed (a Lucene term's limit is 32766 bytes);
  - ``meta_l.<hex>``: the string elements of a list, keyword;
  - ``meta_n.<hex>``: numbers (scalar or list elements), double (non-finite numbers skipped);
  - ``meta_b.<hex>``: bools (scalar or list elements), boolean;
  - ``meta_present``: keyword, the keys that are present and not empty (not null, ``""``, ``[]``).

  ``$file_id`` is indexed as a scalar string field from the chunk's file id (a user key of that
  name is ignored), as in the tantivy adapter. Nested objects and lists inside lists are stored
  with the chunk but not filterable. Each string key costs 3 mapped fields, others 1: the field
  limit (``index.mapping.total_fields.limit``) is a setting.

Queries: the user's text goes into a ``match`` query on ``content`` (analysed like the content,
``OR`` of the tokens, repeated tokens counted; text that analyses to nothing matches nothing):
never ``query_string``, so no query syntax exists. The filter tree becomes a bool query in the
``filter`` clause, which restricts matches without changing BM25 scores. OpenSearch's default
similarity is Lucene's legacy BM25 (k1 1.2, b 0.75, with the ``(k1 + 1)`` factor), which is
tantivy's formula with the same one-byte document-length norms: on the same chunks both engines
return the same order and the same scores to float precision (the contract suite checks it on a
real node), except for the words the stemmers treat differently and while deleted documents
still count in one engine's statistics.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
from services.sparse.errors import InvalidFilter

ANALYZER = "quarry_en"
WORDS_ANALYZER = "quarry_words"
WORDS_CI_ANALYZER = "quarry_words_ci"

ID = "id"
FILE_ID = "file_id"
CONTENT = "content"
STORED = "chunk"
META_STR = "meta_s"
META_LIST = "meta_l"
META_NUM = "meta_n"
META_BOOL = "meta_b"
META_PRESENT = "meta_present"
WORDS = "words"
WORDS_CI = "words_ci"

#: Keyword values longer than this are not indexed (a Lucene term holds at most 32766 bytes).
MAX_KEYWORD_CHARS = 8191
#: OpenSearch refuses document ids over 512 bytes.
MAX_ID_BYTES = 512
#: What a prefix may look like: a valid start of an index name, never empty (the template's
#: pattern would then match every index of the cluster).
PREFIX_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"

SOURCE_FIELDS = (ID, FILE_ID, CONTENT, STORED)
MATCH_ALL: dict[str, Any] = {"match_all": {}}
MATCH_NONE: dict[str, Any] = {"match_none": {}}

_PLAIN_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")
_WORD = re.compile(r"\w+")
_SINGLE = frozenset(
    {Op.EQ, Op.NE, Op.GT, Op.GTE, Op.LT, Op.LTE, Op.CONTAINS, Op.TEXT_MATCH, Op.TEXT_MATCH_INSENSITIVE}
)
_RANGE = {Op.GT: "gt", Op.GTE: "gte", Op.LT: "lt", Op.LTE: "lte"}


# -- names --------------------------------------------------------------------------------------


def index_name(prefix: str, index_id: str) -> str:
    """The OpenSearch index of ``index_id`` (see the module docstring)."""
    if _PLAIN_NAME.fullmatch(index_id):
        return prefix + index_id
    slug = re.sub(r"[^a-z0-9]+", "-", index_id.lower()).strip("-")[:48]
    digest = hashlib.sha256(index_id.encode()).hexdigest()[:32]
    return f"{prefix}-{slug}-{digest}" if slug else f"{prefix}--{digest}"


def template_name(prefix: str) -> str:
    return f"{prefix}chunks"


def doc_id(chunk_id: str) -> str:
    """The document ``_id``: the chunk id, or its digest when OpenSearch would refuse it."""
    if len(chunk_id.encode()) <= MAX_ID_BYTES:
        return chunk_id
    return "sha256:" + hashlib.sha256(chunk_id.encode()).hexdigest()


def field_key(name: str) -> str:
    """The field name of a metadata key: its UTF-8 bytes in lowercase hex."""
    return name.encode().hex()


def words(text: str) -> list[str]:
    """The tokens ``text_match`` compares: runs of word characters, case kept."""
    return _WORD.findall(text)


# -- index template -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexLayout:
    """How every index of one deployment is named and set up."""

    prefix: str = "quarry-"
    shards: int = 1
    replicas: int = 1
    refresh_interval: str = "1s"
    total_fields_limit: int = 2000

    def __post_init__(self) -> None:
        if not re.fullmatch(PREFIX_PATTERN, self.prefix):
            raise ValueError(f"index prefix {self.prefix!r} must match {PREFIX_PATTERN}")


def analysis() -> dict[str, Any]:
    """The analyzers of the content and of the ``text_match`` subfields."""
    return {
        "tokenizer": {
            "quarry_alnum": {"type": "pattern", "pattern": r"[^\p{IsAlphabetic}\p{N}]+"},
            "quarry_word": {"type": "pattern", "pattern": r"[^\p{L}\p{N}_]+"},
        },
        "filter": {
            "quarry_max_length": {"type": "length", "min": 0, "max": 39},
            # A Lucene term holds at most 32766 bytes: a longer word would fail the whole document.
            "quarry_word_length": {"type": "length", "min": 0, "max": MAX_KEYWORD_CHARS},
            "quarry_english_stop": {"type": "stop", "stopwords": "_english_"},
            "quarry_english_stem": {"type": "stemmer", "language": "porter2"},
        },
        "analyzer": {
            ANALYZER: {
                "type": "custom",
                "tokenizer": "quarry_alnum",
                "filter": ["quarry_max_length", "lowercase", "asciifolding", "quarry_english_stop",
                           "quarry_english_stem"],
            },
            WORDS_ANALYZER: {"type": "custom", "tokenizer": "quarry_word", "filter": ["quarry_word_length"]},
            WORDS_CI_ANALYZER: {
                "type": "custom",
                "tokenizer": "quarry_word",
                "filter": ["quarry_word_length", "lowercase"],
            },
        },
    }


def index_settings(layout: IndexLayout) -> dict[str, Any]:
    return {
        "index": {
            "number_of_shards": layout.shards,
            "number_of_replicas": layout.replicas,
            "refresh_interval": layout.refresh_interval,
            "mapping": {"total_fields": {"limit": layout.total_fields_limit}},
        },
        "analysis": analysis(),
    }


def _words_field(analyzer: str) -> dict[str, Any]:
    return {"type": "text", "analyzer": analyzer, "index_options": "docs", "norms": False}


def mappings() -> dict[str, Any]:
    """Fixed fields plus the dynamic templates that type the metadata fields."""
    keyword = {"type": "keyword", "ignore_above": MAX_KEYWORD_CHARS}
    return {
        "dynamic": "strict",
        "date_detection": False,
        "numeric_detection": False,
        "dynamic_templates": [
            {
                "quarry_meta_strings": {
                    "path_match": f"{META_STR}.*",
                    "mapping": {
                        **keyword,
                        "fields": {WORDS: _words_field(WORDS_ANALYZER), WORDS_CI: _words_field(WORDS_CI_ANALYZER)},
                    },
                }
            },
            {"quarry_meta_list_strings": {"path_match": f"{META_LIST}.*", "mapping": keyword}},
            {"quarry_meta_numbers": {"path_match": f"{META_NUM}.*", "mapping": {"type": "double"}}},
            {"quarry_meta_bools": {"path_match": f"{META_BOOL}.*", "mapping": {"type": "boolean"}}},
        ],
        "properties": {
            ID: {"type": "keyword"},
            FILE_ID: {"type": "keyword"},
            CONTENT: {"type": "text", "analyzer": ANALYZER},
            STORED: {"type": "keyword", "index": False, "doc_values": False},
            META_STR: {"type": "object", "dynamic": True},
            META_LIST: {"type": "object", "dynamic": True},
            META_NUM: {"type": "object", "dynamic": True},
            META_BOOL: {"type": "object", "dynamic": True},
            META_PRESENT: {"type": "keyword"},
        },
    }


def index_body(layout: IndexLayout) -> dict[str, Any]:
    """The body of ``PUT /<index>``: the same settings and mappings as the template."""
    return {"settings": index_settings(layout), "mappings": mappings()}


def index_template(layout: IndexLayout) -> dict[str, Any]:
    """The body of ``PUT _index_template/<prefix>chunks`` (a composable template)."""
    return {
        "index_patterns": [f"{layout.prefix}*"],
        "priority": 100 + len(layout.prefix),
        "template": index_body(layout),
        "_meta": {"managed_by": "quarry-sparse"},
    }


# -- documents ----------------------------------------------------------------------------------


def _is_empty(value: object) -> bool:
    return value is None or value == "" or (isinstance(value, list | tuple | dict) and not value)


def metadata_fields(file_id: str, metadata: Mapping[str, object]) -> dict[str, Any]:
    """The filter fields of one chunk (see the module docstring); empty roots are left out."""
    strings: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    numbers: dict[str, list[float]] = {}
    bools: dict[str, list[bool]] = {}
    present: list[str] = []
    fields: list[tuple[str, object]] = [(k, v) for k, v in metadata.items() if k != FILE_ID_FIELD]
    fields.append((FILE_ID_FIELD, file_id))
    for name, value in fields:
        key = field_key(name)
        if not _is_empty(value):
            present.append(name)
        in_list = isinstance(value, list | tuple)
        for element in value if isinstance(value, list | tuple) else (value,):
            if isinstance(element, bool):
                bools.setdefault(key, []).append(element)
            elif is_number(element):
                number = float(element)  # type: ignore[arg-type]
                if math.isfinite(number):  # JSON has no NaN or infinity
                    numbers.setdefault(key, []).append(number)
            elif isinstance(element, str):
                if in_list:
                    lists.setdefault(key, []).append(element)
                else:
                    strings[key] = element
    roots = {META_STR: strings, META_LIST: lists, META_NUM: numbers, META_BOOL: bools, META_PRESENT: present}
    return {root: value for root, value in roots.items() if value}


def stored_chunk(chunk: Chunk) -> str:
    """The ``chunk`` field: what a hit needs beyond id, file id and content, as JSON."""
    # The index id is not stored: it is the index the document lives in.
    return json.dumps(stored_fields(chunk), separators=(",", ":"), ensure_ascii=False)


def document(chunk: Chunk) -> dict[str, Any]:
    """The ``_source`` of one chunk."""
    return {
        ID: chunk.id,
        FILE_ID: chunk.file_id,
        CONTENT: chunk.content,
        STORED: stored_chunk(chunk),
        **metadata_fields(chunk.file_id, chunk.metadata),
    }


def chunk_from_source(index_id: str, source: Mapping[str, Any]) -> Chunk:
    """Rebuild the chunk a document was written from."""
    raw = source.get(STORED)
    stored: dict[str, Any] = json.loads(raw) if isinstance(raw, str) and raw else {}
    return chunk_from_stored(str(source.get(ID, "")), index_id, str(source.get(FILE_ID, "")),
                             str(source.get(CONTENT, "")), stored)


@dataclass(frozen=True, slots=True)
class BulkBatch:
    """One ``_bulk`` request: NDJSON lines (action, source) for ``ids``, in order."""

    ids: tuple[str, ...]
    lines: tuple[str, ...]

    def body(self) -> str:
        return "\n".join(self.lines) + "\n"

    def subset(self, positions: Sequence[int]) -> BulkBatch:
        """The batch of only the items at ``positions`` (to retry the ones that failed)."""
        return BulkBatch(
            ids=tuple(self.ids[p] for p in positions),
            lines=tuple(line for p in positions for line in self.lines[2 * p : 2 * p + 2]),
        )


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def bulk_batches(chunks: Sequence[Chunk], *, max_docs: int, max_bytes: int) -> list[BulkBatch]:
    """Index actions for ``chunks``, cut into requests of at most ``max_docs`` documents and about
    ``max_bytes`` bytes (a single larger document still goes, alone)."""
    batches: list[BulkBatch] = []
    ids: list[str] = []
    lines: list[str] = []
    size = 0
    for chunk in chunks:
        action = _dumps({"index": {"_id": doc_id(chunk.id)}})
        source = _dumps(document(chunk))
        cost = len(action.encode()) + len(source.encode()) + 2
        if ids and (len(ids) >= max_docs or size + cost > max_bytes):
            batches.append(BulkBatch(tuple(ids), tuple(lines)))
            ids, lines, size = [], [], 0
        ids.append(chunk.id)
        lines += [action, source]
        size += cost
    if ids:
        batches.append(BulkBatch(tuple(ids), tuple(lines)))
    return batches


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """One failed item of a ``_bulk`` answer."""

    position: int
    status: int
    type: str
    reason: str


def bulk_failures(response: Mapping[str, Any]) -> list[ItemFailure]:
    """The failed items of a ``_bulk`` answer, by position in the request."""
    if not response.get("errors"):
        return []
    failures = []
    for position, item in enumerate(response.get("items", ())):
        result = next(iter(item.values()), {}) if isinstance(item, Mapping) else {}
        error = result.get("error")
        if error is None:
            continue
        if isinstance(error, Mapping):
            kind, reason = str(error.get("type", "")), str(error.get("reason", ""))
        else:
            kind, reason = "", str(error)
        failures.append(ItemFailure(position, int(result.get("status", 0)), kind, reason))
    return failures


# -- queries ------------------------------------------------------------------------------------


def _bool(**clauses: list[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {k: v for k, v in clauses.items() if v}
    if "should" in body:
        body["minimum_should_match"] = 1
    return {"bool": body}


def _not(query: dict[str, Any]) -> dict[str, Any]:
    return _bool(filter=[MATCH_ALL], must_not=[query])


def _any_of(queries: list[dict[str, Any]]) -> dict[str, Any]:
    if not queries:
        return MATCH_NONE
    return queries[0] if len(queries) == 1 else _bool(should=queries)


def _number(field: str, value: Scalar) -> float:
    number = float(value)
    if math.isnan(number):
        raise InvalidFilter(f"NaN is not a filter value (field {field!r})")
    return number


class _Compiler:
    def compile(self, node: FilterNode) -> dict[str, Any]:
        if isinstance(node, Condition):
            return self._condition(node)
        if isinstance(node, And):
            return _bool(filter=[self.compile(c) for c in node.children]) if node.children else MATCH_ALL
        if isinstance(node, Or):
            return _any_of([self.compile(c) for c in node.children])
        if isinstance(node, Not):
            return _not(self.compile(node.child))
        raise InvalidFilter(f"unknown filter node {type(node).__name__}")

    def _condition(self, cond: Condition) -> dict[str, Any]:
        op, values = cond.op, cond.values
        if op in _SINGLE and len(values) != 1:
            raise InvalidFilter(f"operator {op.value} on {cond.field!r} takes exactly one value")
        key = field_key(cond.field)
        if op is Op.EQ:
            return self._eq(cond.field, key, values[0])
        if op is Op.NE:
            return _not(self._eq(cond.field, key, values[0]))
        if op in (Op.IN, Op.ANY):
            return self._in(cond.field, key, values)
        if op is Op.NIN:
            return _not(self._in(cond.field, key, values))
        if op is Op.ALL:
            return _bool(filter=[self._eq(cond.field, key, v) for v in values]) if values else MATCH_ALL
        if op in _RANGE:
            return self._range(cond.field, key, op, values[0])
        if op is Op.CONTAINS:
            return self._contains(cond.field, key, values[0])
        if op in (Op.TEXT_MATCH, Op.TEXT_MATCH_INSENSITIVE):
            return self._text_match(cond.field, key, values[0], insensitive=op is Op.TEXT_MATCH_INSENSITIVE)
        if op is Op.IS_EMPTY:
            return _not({"term": {META_PRESENT: cond.field}})
        raise InvalidFilter(f"unsupported operator {op}")

    def _eq(self, field: str, key: str, value: Scalar) -> dict[str, Any]:
        if isinstance(value, bool):
            return {"term": {f"{META_BOOL}.{key}": value}}
        if is_number(value):
            number = _number(field, value)
            return {"term": {f"{META_NUM}.{key}": number}} if math.isfinite(number) else MATCH_NONE
        text = str(value)
        return _bool(should=[{"term": {f"{META_STR}.{key}": text}}, {"term": {f"{META_LIST}.{key}": text}}])

    def _in(self, field: str, key: str, values: Sequence[Scalar]) -> dict[str, Any]:
        strings = [str(v) for v in values if not isinstance(v, bool) and not is_number(v)]
        bools = [v for v in values if isinstance(v, bool)]
        numbers = [n for n in (_number(field, v) for v in values if is_number(v)) if math.isfinite(n)]
        queries = []
        if strings:
            queries += [{"terms": {f"{META_STR}.{key}": strings}}, {"terms": {f"{META_LIST}.{key}": strings}}]
        if numbers:
            queries.append({"terms": {f"{META_NUM}.{key}": numbers}})
        if bools:
            queries.append({"terms": {f"{META_BOOL}.{key}": bools}})
        return _any_of(queries)

    def _range(self, field: str, key: str, op: Op, value: Scalar) -> dict[str, Any]:
        if not is_number(value):
            raise InvalidFilter(f"operator {op.value} on {field!r} needs a number, got {value!r}")
        bound = _number(field, value)
        path = f"{META_NUM}.{key}"
        if math.isinf(bound):  # only finite numbers are indexed: every one of them, or none
            below = (bound > 0) == (op in (Op.LT, Op.LTE))
            return {"exists": {"field": path}} if below else MATCH_NONE
        return {"range": {path: {_RANGE[op]: bound}}}

    def _contains(self, field: str, key: str, value: Scalar) -> dict[str, Any]:
        if not isinstance(value, str):
            # A number or bool can only be "contained" as an element (or be the value itself).
            return self._eq(field, key, value)
        pattern = "*" + re.sub(r"([\\*?])", r"\\\1", value) + "*"
        return _bool(
            should=[
                {"wildcard": {f"{META_STR}.{key}": {"value": pattern}}},
                {"term": {f"{META_LIST}.{key}": value}},
            ]
        )

    def _text_match(self, field: str, key: str, value: Scalar, *, insensitive: bool) -> dict[str, Any]:
        if not isinstance(value, str):
            raise InvalidFilter(f"text_match on {field!r} needs a string, got {value!r}")
        if not words(value):
            return MATCH_NONE
        sub = WORDS_CI if insensitive else WORDS
        return {"match": {f"{META_STR}.{key}.{sub}": {"query": value, "operator": "and"}}}


_COMPILER = _Compiler()  # stateless


def filter_query(node: FilterNode) -> dict[str, Any]:
    """The bool query selecting exactly the chunks ``node`` selects (raises ``InvalidFilter``)."""
    return _COMPILER.compile(node)


def search_body(text: str, top_k: int, filter: FilterNode | None) -> dict[str, Any]:
    """BM25 top-k over ``content`` for ``text``, restricted by ``filter`` without scoring it."""
    query: dict[str, Any] = {
        "bool": {
            "must": [{"match": {CONTENT: {"query": text, "operator": "or", "zero_terms_query": "none"}}}],
        }
    }
    if filter is not None:
        query["bool"]["filter"] = [filter_query(filter)]
    return {"size": top_k, "track_total_hits": False, "_source": list(SOURCE_FIELDS), "query": query}


def file_query(file_id: str) -> dict[str, Any]:
    """The query of one file's chunks (count, delete by file)."""
    return {"query": {"term": {FILE_ID: file_id}}}
