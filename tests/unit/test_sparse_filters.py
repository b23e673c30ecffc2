"""The metadata term encoding and filter compilation behind the tantivy keyword index."""

from __future__ import annotations

import math
import random
import struct

import pytest

from services.common.domain import FILE_ID_FIELD, And, Condition, Op, Or
from services.sparse.adapters.tantivy import build_schema, english_analyzer, index_dir_name
from services.sparse.adapters.tantivy_filters import (
    FilterCompiler,
    field_key,
    metadata_terms,
    sortable,
    words,
)
from services.sparse.errors import InvalidFilter


def test_sortable_encoding_preserves_numeric_order() -> None:
    rng = random.Random(7)
    values = [0.0, -0.0, 1.0, -1.0, 2022, 2022.5, -1e300, 1e300, 5e-324, -5e-324, math.inf, -math.inf]
    values += [rng.uniform(-1e6, 1e6) for _ in range(500)]
    values += [struct.unpack(">d", struct.pack(">Q", rng.getrandbits(64)))[0] for _ in range(500)]
    values = [v for v in values if not math.isnan(v)]
    ordered = sorted(values)
    encoded = [sortable(v) for v in ordered]
    assert encoded == sorted(encoded)
    assert all(len(e) == 16 for e in encoded)
    assert "0" * 16 < sortable(-math.inf) and sortable(math.inf) < "f" * 16


def test_equal_numbers_encode_equally() -> None:
    assert sortable(2022) == sortable(2022.0)
    assert sortable(0.0) == sortable(-0.0)
    assert sortable(1.5) != sortable(1.25)


def test_metadata_terms_cover_every_value_kind() -> None:
    kw, num = metadata_terms(
        "file-7",
        {
            "title": "Hello World",
            "tags": ["x", 3, True],
            "year": 2021,
            "draft": False,
            "empty": "",
            "none": None,
            FILE_ID_FIELD: "spoofed",
        },
    )
    t, g, y, d, e = (field_key(n) for n in ("title", "tags", "year", "draft", "empty"))
    f = field_key(FILE_ID_FIELD)
    assert {t + "p", t + "sHello World", t + "tHello", t + "tWorld", t + "ihello", t + "iworld"} <= set(kw)
    assert {g + "p", g + "lx", g + "btrue", d + "p", d + "bfalse", y + "p"} <= set(kw)
    assert {f + "p", f + "sfile-7"} <= set(kw)
    assert f + "sspoofed" not in kw  # $file_id is the chunk's file id, never user metadata
    assert e + "p" not in kw and e + "s" in kw
    assert not any(term.startswith(field_key("none")) for term in kw)
    assert set(num) == {g + "n" + sortable(3), y + "n" + sortable(2021)}


def test_words_keep_case_and_split_on_punctuation() -> None:
    assert words("Search-Engines, v2!") == ["Search", "Engines", "v2"]


def test_index_dir_names_are_safe_and_distinct() -> None:
    assert index_dir_name("idx-1_a.b") == "idx-1_a.b"
    for odd in ("..", ".", "a/b", "../x", "ü", "", "x" * 200):
        name = index_dir_name(odd)
        assert name.startswith("~") and "/" not in name and len(name) < 100
    assert index_dir_name("a/b") != index_dir_name("a/c")


def test_the_analyzer_lowercases_drops_stop_words_and_stems() -> None:
    assert english_analyzer().analyze("The Runners are RUNNING to the Café") == ["runner", "run", "cafe"]


@pytest.fixture
def compiler() -> FilterCompiler:
    return FilterCompiler(build_schema())


@pytest.mark.parametrize(
    "node",
    [
        Condition("year", Op.GT, ("2020",)),
        Condition("year", Op.LT, (True,)),
        Condition("year", Op.GTE, (math.nan,)),
        Condition("year", Op.EQ, ()),
        Condition("year", Op.EQ, (1, 2)),
        Condition("title", Op.TEXT_MATCH, (3,)),
        And((Condition("a", Op.EQ, ("x",)), Or((Condition("year", Op.LTE, ("soon",)),)))),
    ],
)
def test_unusable_filters_raise_invalid_filter(compiler: FilterCompiler, node: Condition) -> None:
    with pytest.raises(InvalidFilter):
        compiler.compile(node)


def test_field_names_with_query_syntax_compile(compiler: FilterCompiler) -> None:
    for name in ("a.b", "x:y", 'weird "name" [1 TO 2]', "", "ü"):
        compiler.compile(Condition(name, Op.GTE, (1,)))
        compiler.compile(Condition(name, Op.CONTAINS, ('(?s).*["]\\',)))
