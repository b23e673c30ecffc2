"""File cards: the text built from a file's name and metadata, its truncation, and the chunk."""

from __future__ import annotations

import pytest

from services.common.domain import file_card_id, files_index_id
from services.ingest.cards import CARD_MAX_TOKENS, build_file_card, card_text, spaced_name, truncate_to_tokens
from services.ingest.chunking import piece_tokenizer


@pytest.mark.parametrize(
    ("name", "spaced"),
    [
        ("Q3_report-final.v2.pdf", "Q3 report final v2 pdf"),
        ("notes.txt", "notes txt"),
        ("docs/2024/plan - draft.md", "docs 2024 plan draft md"),
        ("README", "README"),
        ("__init__.py", "init py"),
    ],
)
def test_separators_in_a_name_become_spaces(name: str, spaced: str) -> None:
    assert spaced_name(name) == spaced


def test_card_text_has_the_name_both_ways_then_one_line_per_metadata_entry() -> None:
    text = card_text(
        "Q3_report-final.pdf",
        {"team": "search", "year": 2024, "score": 0.5, "tags": ["a", "b", 3], "draft": False,
         "reviewer": None, "multi": "line one\n line two"},
    )
    assert text.split("\n") == [
        "Q3_report-final.pdf",
        "Q3 report final pdf",
        "team: search",
        "year: 2024",
        "score: 0.5",
        "tags: a, b, 3",
        "draft: false",
        "reviewer:",
        "multi: line one line two",
    ]


def test_a_name_without_separators_is_not_repeated() -> None:
    assert card_text("README", {}) == "README"


def test_truncation_cuts_after_the_last_token_that_fits() -> None:
    tokenizer = piece_tokenizer()
    text = " ".join(f"word{i}" for i in range(400))
    cut, count = truncate_to_tokens(text, tokenizer, 50)
    assert count == 50
    assert text.startswith(cut) and not cut.endswith(" ")
    assert len(tokenizer.encode(cut, add_special_tokens=False).ids) == 50
    # The next token is not included: one more character of the original would add a token.
    assert len(tokenizer.encode(text[: len(cut) + 2], add_special_tokens=False).ids) > 50


def test_short_text_is_kept_whole_with_its_token_count() -> None:
    tokenizer = piece_tokenizer()
    text = "guide md\nteam: search"
    assert truncate_to_tokens(text, tokenizer, CARD_MAX_TOKENS) == (
        text, len(tokenizer.encode(text, add_special_tokens=False).ids)
    )


def test_the_card_chunk_lives_in_the_companion_index_under_the_card_id() -> None:
    metadata = {"team": "search", "notes": "x " * 1000}
    card = build_file_card(
        index_id="idx-1", parsed_file_id="pf-1", file_name="guide.md", metadata=metadata,
        source_id="doc-7", tokenizer=piece_tokenizer(),
    )
    assert card.id == file_card_id("pf-1") and card.index_id == files_index_id("idx-1")
    assert (card.file_id, card.file_name, card.source_id) == ("pf-1", "guide.md", "doc-7")
    assert card.metadata == metadata
    assert (card.chunk_index, card.start_char, card.end_char, card.page_start, card.page_end) == (0, 0, 0, 0, 0)
    assert card.content.startswith("guide.md\nguide md\nteam: search\nnotes: x x")
    # The long metadata value is cut at what the model reads.
    assert card.token_count == CARD_MAX_TOKENS
    assert card_text("guide.md", metadata).startswith(card.content)
