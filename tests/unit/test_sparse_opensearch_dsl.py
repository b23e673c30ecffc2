"""The OpenSearch request builders, as pure functions, against the documented query DSL.

Two kinds of checks: the exact shape of representative requests (what the OpenSearch docs
document for ``term``, ``terms``, ``range``, ``wildcard``, ``match``, ``bool``, composable index
templates, dynamic templates and ``_bulk``), and the meaning of every filter scenario of the
contract suite: ``matches`` below reads a query the way the DSL reference defines it, over the
``_source`` that ``document`` builds, so the encoding and the translation are checked together
without a cluster (the contract suite runs them on a real one when ``QUARRY_TEST_OPENSEARCH_URL``
is set).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import pytest

from services.common.domain import FILE_ID_FIELD, And, Chunk, Condition, Not, Op, Or
from services.sparse.adapters import opensearch_dsl as dsl
from services.sparse.errors import InvalidFilter
from tests.contract.filter_scenarios import CHUNKS, LEGACY, REQUIRED

# -- a reading of the documented DSL over one document's _source ----------------------------------

def _words(text: str, *, lower: bool) -> set[str]:
    tokens = re.findall(r"\w+", text)
    return {t.lower() for t in tokens} if lower else set(tokens)


def _values(source: Mapping[str, Any], path: str) -> list[Any]:
    """Field values by dotted path; a multi-field (``.words``) reads its parent's value."""
    root, _, rest = path.partition(".")
    node: Any = source.get(root)
    if not rest:
        return [] if node is None else (list(node) if isinstance(node, list) else [node])
    key, _, sub = rest.partition(".")
    value = node.get(key) if isinstance(node, Mapping) else None
    if value is None:
        return []
    values = list(value) if isinstance(value, list) else [value]
    if root in (dsl.META_STR, dsl.META_LIST):  # keyword: longer values are not indexed
        values = [v for v in values if len(v) <= dsl.MAX_KEYWORD_CHARS] if not sub else values
    return values


def _wildcard(pattern: str, value: str) -> bool:
    regex, i = "", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            regex += re.escape(pattern[i + 1])
            i += 2
            continue
        regex += ".*" if ch == "*" else "." if ch == "?" else re.escape(ch)
        i += 1
    return re.fullmatch(regex, value, re.DOTALL) is not None


def matches(query: Mapping[str, Any], source: Mapping[str, Any]) -> bool:
    ((kind, body),) = query.items()
    if kind == "match_all":
        return True
    if kind == "match_none":
        return False
    if kind == "bool":
        ok = all(matches(q, source) for q in body.get("filter", []) + body.get("must", []))
        ok = ok and not any(matches(q, source) for q in body.get("must_not", []))
        should = body.get("should", [])
        if should:
            ok = ok and sum(matches(q, source) for q in should) >= body.get("minimum_should_match", 1)
        return ok
    if kind == "exists":
        return bool(_values(source, body["field"]))
    ((field, arg),) = body.items()
    values = _values(source, field)
    if kind == "term":
        return arg in values
    if kind == "terms":
        return any(v in values for v in arg)
    if kind == "range":
        ops = {"gt": float.__gt__, "gte": float.__ge__, "lt": float.__lt__, "lte": float.__le__}
        return any(all(ops[op](float(v), float(b)) for op, b in arg.items()) for v in values)
    if kind == "wildcard":
        return any(_wildcard(arg["value"], v) for v in values)
    if kind == "match":  # on a words subfield (Python's \w+ = the subfields' [^\p{L}\p{N}_]+ split)
        assert arg["operator"] == "and"
        lower = field.endswith("." + dsl.WORDS_CI)
        wanted = _words(arg["query"], lower=lower)
        return any(wanted <= _words(v, lower=lower) for v in values)
    raise AssertionError(f"query kind {kind} is not used by the builders")


def _selected(node: Any) -> set[str]:
    query = dsl.filter_query(node)
    json.dumps(query, allow_nan=False)  # every query is plain JSON
    return {c.id for c in CHUNKS if matches(query, dsl.document(c))}


# -- filter semantics: every contract scenario ----------------------------------------------------


@pytest.mark.parametrize(("name", "node", "expected"), REQUIRED + LEGACY, ids=[s[0] for s in REQUIRED + LEGACY])
def test_every_filter_scenario_selects_what_tantivy_selects(name: str, node: Any, expected: set[str]) -> None:
    assert _selected(node) == expected


def test_empty_and_or_and_value_lists() -> None:
    every = {c.id for c in CHUNKS}
    assert _selected(And(())) == every
    assert _selected(Or(())) == set()
    assert _selected(Condition("author", Op.IN, ())) == set()
    assert _selected(Condition("author", Op.NIN, ())) == every
    assert _selected(Condition("tags", Op.ALL, ())) == every
    assert _selected(Not(And(()))) == set()


def test_contains_escapes_wildcard_characters() -> None:
    chunk = Chunk(id="w", index_id="i", file_id="f", content="x", metadata={"p": "a*b?c\\d", "q": "aXbYc"})
    source = dsl.document(chunk)
    assert matches(dsl.filter_query(Condition("p", Op.CONTAINS, ("*b?c\\",))), source)
    assert not matches(dsl.filter_query(Condition("q", Op.CONTAINS, ("*b?c",))), source)
    query = dsl.filter_query(Condition("p", Op.CONTAINS, ("*b?c\\",)))
    assert query["bool"]["should"][0] == {"wildcard": {"meta_s.70": {"value": "*\\*b\\?c\\\\*"}}}


def test_infinite_bounds_and_non_finite_values() -> None:
    chunk = Chunk(id="n", index_id="i", file_id="f", content="x", metadata={"v": 3, "bad": math.nan, "big": math.inf})
    source = dsl.document(chunk)
    assert "626164" not in source.get(dsl.META_NUM, {})  # NaN and infinity are not indexable
    assert "626967" not in source.get(dsl.META_NUM, {})
    for op, bound, hit in [(Op.LT, math.inf, True), (Op.GT, math.inf, False), (Op.GTE, -math.inf, True),
                           (Op.LTE, -math.inf, False)]:
        assert matches(dsl.filter_query(Condition("v", op, (bound,))), source) is hit
    assert dsl.filter_query(Condition("v", Op.EQ, (math.inf,))) == dsl.MATCH_NONE


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (Condition("year", Op.GT, ("2020",)), "'year' needs a number"),
        (Condition("year", Op.EQ, (1, 2)), "takes exactly one value"),
        (Condition("year", Op.EQ, (math.nan,)), "NaN"),
        (Condition("title", Op.TEXT_MATCH, (3,)), "'title' needs a string"),
        (Condition("year", Op.IN, (1, math.nan)), "NaN"),
    ],
)
def test_bad_filters_name_the_field_or_value(node: Any, message: str) -> None:
    with pytest.raises(InvalidFilter, match=re.escape(message)):
        dsl.filter_query(node)


# -- exact shapes of the documented DSL -----------------------------------------------------------


def test_condition_shapes() -> None:
    year, author = dsl.field_key("year"), dsl.field_key("author")
    assert year == "79656172"
    assert dsl.filter_query(Condition("year", Op.GTE, (2022,))) == {"range": {f"meta_n.{year}": {"gte": 2022.0}}}
    assert dsl.filter_query(Condition("draft", Op.EQ, (True,))) == {"term": {"meta_b.6472616674": True}}
    assert dsl.filter_query(Condition("author", Op.EQ, ("Ada",))) == {
        "bool": {
            "should": [{"term": {f"meta_s.{author}": "Ada"}}, {"term": {f"meta_l.{author}": "Ada"}}],
            "minimum_should_match": 1,
        }
    }
    assert dsl.filter_query(Condition("author", Op.NE, ("Ada",)))["bool"]["filter"] == [{"match_all": {}}]
    assert dsl.filter_query(Condition("year", Op.IN, (2021, "x", False))) == {
        "bool": {
            "should": [
                {"terms": {f"meta_s.{year}": ["x"]}},
                {"terms": {f"meta_l.{year}": ["x"]}},
                {"terms": {f"meta_n.{year}": [2021.0]}},
                {"terms": {f"meta_b.{year}": [False]}},
            ],
            "minimum_should_match": 1,
        }
    }
    assert dsl.filter_query(Condition("title", Op.TEXT_MATCH_INSENSITIVE, ("Search engines",))) == {
        "match": {f"meta_s.{dsl.field_key('title')}.words_ci": {"query": "Search engines", "operator": "and"}}
    }
    assert dsl.filter_query(Condition("title", Op.TEXT_MATCH, ("  ...  ",))) == {"match_none": {}}
    assert dsl.filter_query(Condition("tags", Op.IS_EMPTY)) == {
        "bool": {"filter": [{"match_all": {}}], "must_not": [{"term": {"meta_present": "tags"}}]}
    }


def test_search_body_is_a_match_query_with_the_filter_in_filter_context() -> None:
    node = Condition(FILE_ID_FIELD, Op.EQ, ("f-1",))
    body = dsl.search_body('rust) AND "x', 7, node)
    assert body == {
        "size": 7,
        "track_total_hits": False,
        "_source": ["id", "file_id", "content", "chunk"],
        "query": {
            "bool": {
                "must": [
                    {"match": {"content": {"query": 'rust) AND "x', "operator": "or", "zero_terms_query": "none"}}}
                ],
                "filter": [dsl.filter_query(node)],
            }
        },
    }
    assert "query_string" not in json.dumps(body)
    assert "filter" not in dsl.search_body("rust", 3, None)["query"]["bool"]


def test_file_query() -> None:
    assert dsl.file_query("f-1") == {"query": {"term": {"file_id": "f-1"}}}


# -- documents ------------------------------------------------------------------------------------


def test_document_layout_and_round_trip() -> None:
    chunk = Chunk(
        id="c1", index_id="idx", file_id="f1", content="Some text", file_name="a.md",
        metadata={"year": 2021, "tags": ["ml", 2, True], "title": "Hi there", "empty": "", "none": None,
                  "nested": {"a": 1}, FILE_ID_FIELD: "spoofed", "a.b": "dotted"},
        chunk_index=3, start_char=4, end_char=13, token_count=2, page_start=1, page_end=2, source_id="doc-9",
    )
    doc = dsl.document(chunk)
    k = dsl.field_key
    assert doc[dsl.META_STR] == {k("title"): "Hi there", k("empty"): "", k(FILE_ID_FIELD): "f1", k("a.b"): "dotted"}
    assert doc[dsl.META_LIST] == {k("tags"): ["ml"]}
    assert doc[dsl.META_NUM] == {k("year"): [2021.0], k("tags"): [2.0]}
    assert doc[dsl.META_BOOL] == {k("tags"): [True]}
    assert doc[dsl.META_PRESENT] == ["year", "tags", "title", "nested", "a.b", FILE_ID_FIELD]
    assert all("." not in name for root in (dsl.META_STR, dsl.META_NUM) for name in doc[root])
    assert dsl.chunk_from_source("idx", doc) == chunk  # metadata exactly as given, spoofed key included


def test_stored_chunk_keeps_what_json_fields_cannot() -> None:
    chunk = Chunk(id="c", index_id="i", file_id="f", content="x", metadata={"n": math.nan, "big": 2**60})
    back = dsl.chunk_from_source("i", json.loads(json.dumps(dsl.document(chunk))))
    assert math.isnan(back.metadata["n"]) and back.metadata["big"] == 2**60


# -- names ----------------------------------------------------------------------------------------

_FORBIDDEN = set('\\/*?"<>| ,#:') | {"+"}


@pytest.mark.parametrize(
    "index_id", ["idx-1", "Idx", "../Projekt ü/idx:1", "a" * 300, "_x", "-x", ".", "..", "ü", "x.files", "UPPER.files"]
)
def test_index_names_are_valid_and_distinct(index_id: str) -> None:
    name = dsl.index_name("quarry-", index_id)
    assert name.startswith("quarry-") and name == name.lower()
    assert not _FORBIDDEN & set(name) and len(name.encode()) <= 255 and name not in {".", ".."}


def test_index_names_keep_plain_ids_readable_and_never_collide() -> None:
    assert dsl.index_name("quarry-", "idx-1.files") == "quarry-idx-1.files"
    hashed = dsl.index_name("quarry-", "Idx-1")
    assert hashed.startswith("quarry--idx-1-") and hashed != dsl.index_name("quarry-", "idx-1")
    assert dsl.index_name("quarry-", "Idx") != dsl.index_name("quarry-", "IDX")
    # A plain id never starts with "-", a hashed one always does: the forms cannot meet.
    assert dsl.index_name("quarry-", "ü").startswith("quarry---")


def test_doc_ids_over_the_limit_are_hashed() -> None:
    assert dsl.doc_id("c-1") == "c-1"
    long_id = "x" * 600
    assert dsl.doc_id(long_id).startswith("sha256:") and len(dsl.doc_id(long_id)) <= dsl.MAX_ID_BYTES


def test_layout_refuses_a_prefix_that_is_no_index_name_start() -> None:
    for prefix in ["", "Quarry-", "_q", "-q", "q*", "q q"]:
        with pytest.raises(ValueError, match="prefix"):
            dsl.IndexLayout(prefix=prefix)


# -- template and mappings ------------------------------------------------------------------------


def test_template_carries_settings_analysis_and_mappings() -> None:
    layout = dsl.IndexLayout(prefix="q-", shards=3, replicas=2, refresh_interval="500ms", total_fields_limit=3000)
    template = dsl.index_template(layout)
    assert template["index_patterns"] == ["q-*"]
    assert template["priority"] == 102
    assert dsl.template_name("q-") == "q-chunks"
    settings = template["template"]["settings"]
    assert settings["index"] == {
        "number_of_shards": 3,
        "number_of_replicas": 2,
        "refresh_interval": "500ms",
        "mapping": {"total_fields": {"limit": 3000}},
    }
    assert template["template"] == dsl.index_body(layout)
    en = settings["analysis"]["analyzer"][dsl.ANALYZER]
    assert en == {
        "type": "custom",
        "tokenizer": "quarry_alnum",
        "filter": ["quarry_max_length", "lowercase", "asciifolding", "quarry_english_stop", "quarry_english_stem"],
    }
    analysis = settings["analysis"]
    assert analysis["tokenizer"]["quarry_alnum"] == {"type": "pattern", "pattern": "[^\\p{IsAlphabetic}\\p{N}]+"}
    assert analysis["filter"]["quarry_english_stop"] == {"type": "stop", "stopwords": "_english_"}
    assert analysis["filter"]["quarry_english_stem"] == {"type": "stemmer", "language": "porter2"}
    assert analysis["filter"]["quarry_max_length"] == {"type": "length", "min": 0, "max": 39}
    assert analysis["tokenizer"]["quarry_word"] == {"type": "pattern", "pattern": "[^\\p{L}\\p{N}_]+"}
    words_ci = analysis["analyzer"][dsl.WORDS_CI_ANALYZER]
    assert words_ci["tokenizer"] == "quarry_word" and words_ci["filter"] == ["quarry_word_length", "lowercase"]
    assert analysis["filter"]["quarry_word_length"]["max"] * 4 <= 32766  # any UTF-8 word fits a Lucene term


def test_longer_prefixes_win_over_shorter_overlapping_ones() -> None:
    short, long = dsl.index_template(dsl.IndexLayout(prefix="q-")), dsl.index_template(dsl.IndexLayout(prefix="q-a-"))
    assert long["priority"] > short["priority"]


def test_mappings_type_every_metadata_root() -> None:
    mappings = dsl.mappings()
    assert mappings["dynamic"] == "strict" and mappings["date_detection"] is False
    props = mappings["properties"]
    assert props["content"] == {"type": "text", "analyzer": dsl.ANALYZER}
    assert props["chunk"] == {"type": "keyword", "index": False, "doc_values": False}
    assert props["file_id"] == {"type": "keyword"} and props["meta_present"] == {"type": "keyword"}
    templates = {name: t for entry in mappings["dynamic_templates"] for name, t in entry.items()}
    by_path = {t["path_match"]: t["mapping"] for t in templates.values()}
    assert by_path["meta_n.*"] == {"type": "double"}
    assert by_path["meta_b.*"] == {"type": "boolean"}
    assert by_path["meta_l.*"] == {"type": "keyword", "ignore_above": dsl.MAX_KEYWORD_CHARS}
    strings = by_path["meta_s.*"]
    assert strings["type"] == "keyword"
    assert strings["fields"]["words"]["analyzer"] == dsl.WORDS_ANALYZER
    assert strings["fields"]["words_ci"]["analyzer"] == dsl.WORDS_CI_ANALYZER
    for root in ("meta_s", "meta_l", "meta_n", "meta_b"):
        assert props[root] == {"type": "object", "dynamic": True}
    # Every field a document writes is mapped (dynamic is strict at the root).
    doc = dsl.document(CHUNKS[0])
    assert set(doc) <= set(props)


# -- bulk -----------------------------------------------------------------------------------------


def _chunks(n: int, size: int = 10) -> list[Chunk]:
    return [Chunk(id=f"c{i}", index_id="i", file_id="f", content="x" * size) for i in range(n)]


def test_bulk_batches_are_ndjson_index_actions() -> None:
    (batch,) = dsl.bulk_batches(_chunks(2), max_docs=10, max_bytes=10**6)
    lines = batch.body().split("\n")
    assert lines[-1] == "" and len(lines) == 5
    assert json.loads(lines[0]) == {"index": {"_id": "c0"}}
    assert json.loads(lines[1])["content"] == "x" * 10
    assert json.loads(lines[2]) == {"index": {"_id": "c1"}}
    assert batch.ids == ("c0", "c1")


def test_bulk_batches_cut_by_count_and_bytes() -> None:
    assert [len(b.ids) for b in dsl.bulk_batches(_chunks(7), max_docs=3, max_bytes=10**6)] == [3, 3, 1]
    one = len(dsl.bulk_batches(_chunks(1, size=1000), max_docs=1, max_bytes=10**6)[0].body().encode())
    big = dsl.bulk_batches(_chunks(5, size=1000), max_docs=100, max_bytes=2 * one + 10)
    assert [len(b.ids) for b in big] == [2, 2, 1]
    assert all(len(b.body().encode()) <= 2 * one + 10 for b in big)
    (alone,) = dsl.bulk_batches(_chunks(1, size=5000), max_docs=100, max_bytes=1000)  # still sent, alone
    assert alone.ids == ("c0",)
    assert dsl.bulk_batches([], max_docs=10, max_bytes=100) == []


def test_bulk_subset_keeps_action_and_source_together() -> None:
    (batch,) = dsl.bulk_batches(_chunks(3), max_docs=10, max_bytes=10**6)
    sub = batch.subset([2, 0])
    assert sub.ids == ("c2", "c0")
    assert [json.loads(line) for line in sub.lines[::2]] == [{"index": {"_id": "c2"}}, {"index": {"_id": "c0"}}]
    assert json.loads(sub.lines[1])["id"] == "c2"


def test_bulk_failures_read_the_documented_response() -> None:
    response = {
        "took": 30,
        "errors": True,
        "items": [
            {"index": {"_index": "q-i", "_id": "c0", "status": 201, "result": "created"}},
            {"index": {"_index": "q-i", "_id": "c1", "status": 429,
                       "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}},
            {"index": {"_index": "q-i", "_id": "c2", "status": 400,
                       "error": {"type": "mapper_parsing_exception", "reason": "failed to parse"}}},
        ],
    }
    assert dsl.bulk_failures(response) == [
        dsl.ItemFailure(1, 429, "es_rejected_execution_exception", "queue full"),
        dsl.ItemFailure(2, 400, "mapper_parsing_exception", "failed to parse"),
    ]
    assert dsl.bulk_failures({"errors": False, "items": response["items"][:1]}) == []
