"""The Qdrant filter translation, checked on the native objects it builds (pure, no engine)."""

from __future__ import annotations

import pytest
from qdrant_client import models

from services.common.domain import FILE_ID_FIELD, And, Chunk, Condition, Not, Op, Or
from services.common.errors import InvalidArgument
from services.dense.adapters.qdrant_common import (
    UnsupportedFilter,
    chunk_from_payload,
    chunk_payload,
    index_kinds,
    meta_path,
    point_id,
)
from services.dense.adapters.qdrant_server import collection_name, server_filter


def only(flt: models.Filter) -> object:
    assert flt.must is not None and len(flt.must) == 1 and flt.should is None and flt.must_not is None
    return flt.must[0]


def test_numeric_eq_is_a_closed_range() -> None:
    cond = only(server_filter(Condition("year", Op.EQ, (2022,))))
    assert cond == models.FieldCondition(key="meta.year", range=models.Range(gte=2022.0, lte=2022.0))


def test_strings_and_bools_match_values() -> None:
    assert only(server_filter(Condition("author", Op.EQ, ("Ada",)))) == models.FieldCondition(
        key="meta.author", match=models.MatchValue(value="Ada"))
    assert only(server_filter(Condition("draft", Op.EQ, (True,)))) == models.FieldCondition(
        key="meta.draft", match=models.MatchValue(value=True))


def test_ne_and_nin_are_negations_so_missing_fields_match() -> None:
    ne = only(server_filter(Condition("author", Op.NE, ("Ada",))))
    author = models.FieldCondition(key="meta.author", match=models.MatchValue(value="Ada"))
    assert ne == models.Filter(must_not=[author])
    nin = only(server_filter(Condition("year", Op.NIN, (2021, "x"))))
    assert isinstance(nin, models.Filter) and nin.must_not is not None
    inner = nin.must_not[0]
    assert isinstance(inner, models.Filter) and inner.should is not None and len(inner.should) == 2


def test_in_groups_strings_into_match_any() -> None:
    cond = only(server_filter(Condition("author", Op.IN, ("Ada", "Eve"))))
    assert cond == models.FieldCondition(key="meta.author", match=models.MatchAny(any=["Ada", "Eve"]))


def test_empty_or_matches_nothing_and_empty_in_too() -> None:
    assert only(server_filter(Or(()))) == models.HasIdCondition(has_id=[])
    assert only(server_filter(Condition("a", Op.IN, ()))) == models.HasIdCondition(has_id=[])


def test_tree_maps_to_must_should_must_not() -> None:
    either = Or((Condition("a", Op.GT, (1,)), Condition("b", Op.EQ, ("x",))))
    tree = And((either, Not(Condition("c", Op.EQ, ("y",)))))
    node = only(server_filter(tree))
    assert isinstance(node, models.Filter) and node.must is not None and len(node.must) == 2
    assert isinstance(node.must[0], models.Filter) and node.must[0].should is not None
    assert isinstance(node.must[1], models.Filter) and node.must[1].must_not is not None


def test_file_id_field_is_the_chunk_file_id() -> None:
    assert only(server_filter(Condition(FILE_ID_FIELD, Op.EQ, ("f-1",)))) == models.FieldCondition(
        key="file_id", match=models.MatchValue(value="f-1"))


def test_invalid_conditions_are_rejected() -> None:
    with pytest.raises(InvalidArgument):
        server_filter(Condition("year", Op.GT, ("2020",)))
    with pytest.raises(InvalidArgument):
        server_filter(Condition("year", Op.EQ, (1, 2)))
    with pytest.raises(UnsupportedFilter):
        server_filter(Condition("title", Op.TEXT_MATCH, ("Search",)))
    with pytest.raises(UnsupportedFilter):
        meta_path('bad"key')


def test_keys_are_quoted_when_needed() -> None:
    assert meta_path("year") == "meta.year"
    assert meta_path("a.b") == 'meta."a.b"'
    assert meta_path("with space") == 'meta."with space"'


def test_payload_round_trip_keeps_user_keys_apart() -> None:
    chunk = Chunk(id="doc-1", index_id="i", file_id="f", content="text", file_name="f.txt",
                  metadata={"content": "user value", "file_id": "user file", "tags": ["a"]},
                  chunk_index=2, start_char=3, end_char=7, token_count=1, page_start=1, page_end=2)
    payload = chunk_payload(chunk)
    assert payload["content"] == "text" and payload["file_id"] == "f"
    assert payload["meta_str"] == {"content": "user value", "file_id": "user file"}
    assert chunk_from_payload("i", point_id(chunk.id), payload) == chunk


def test_point_ids_are_uuids_and_stable() -> None:
    assert point_id("3d7dde1a-3229-04d8-7737-c70a5ed25f00") == "3d7dde1a-3229-04d8-7737-c70a5ed25f00"
    assert point_id("doc-1") == point_id("doc-1") != point_id("doc-2")


def test_index_kinds_follow_value_types() -> None:
    meta = {"s": "x", "n": 2, "f": 1.5, "b": False, "l": ["a"], "ln": [1], "e": [], "z": None}
    kinds = dict(index_kinds(meta))
    assert kinds == {"meta.s": "keyword", "meta_str.s": "text", "meta.n": "float", "meta.f": "float",
                     "meta.b": "bool", "meta.l": "keyword", "meta.ln": "float"}


def test_collection_name_is_sanitised() -> None:
    name = collection_name("quarry-", "all-MiniLM-L6-v2/onnx int8", 384)
    assert name == "quarry-all-minilm-l6-v2-onnx-int8-384"
