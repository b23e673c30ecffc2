"""Token-aware chunking: exact offsets, overlap, boundaries, page ranges, long texts."""

from __future__ import annotations

import random
from itertools import pairwise
from typing import Any

import pytest

from services.common.models import packaged_tokenizer
from services.ingest import chunking
from services.ingest.chunking import ChunkingOptions, TextChunk, chunk_text, iter_chunks
from services.ingest.parsing import PAGE_SEPARATOR, Page

WORDS = ("quarry retrieval hybrid search dense sparse vector keyword rerank index chunk token "
         "offset page overlap boundary sentence paragraph").split()


def make_text(paragraphs: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        sentences = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 24))).capitalize() + "."
            for _ in range(rng.randint(2, 6))
        ]
        out.append(" ".join(sentences))
    return "\n\n".join(out)


def model_tokens(text: str) -> int:
    """Tokens the embedding model sees for ``text``, special tokens included, untruncated."""
    return len(chunking.piece_tokenizer().encode(text).ids)


def assert_well_formed(text: str, chunks: list[TextChunk]) -> None:
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert text[c.start_char : c.end_char] == c.content
        assert c.content == c.content.strip()
        assert c.token_count > 0
    for before, after in pairwise(chunks):
        assert before.start_char < after.start_char
        assert after.start_char <= before.end_char + len(text[before.end_char : after.start_char])
        # Nothing but whitespace is left between or outside the chunks.
        assert text[before.end_char : after.start_char].strip() == ""


def test_empty_and_whitespace_text_give_no_chunks() -> None:
    assert chunk_text("") == []
    assert chunk_text("  \n\n\t  ") == []


def test_short_text_is_one_chunk_with_exact_offsets() -> None:
    text = "  Hello, Quarry!  How are you?\n"
    [chunk] = chunk_text(text)
    assert chunk.content == "Hello, Quarry!  How are you?"
    assert (chunk.start_char, chunk.end_char) == (2, 30)
    assert chunk.token_count == len(packaged_tokenizer().encode(chunk.content, add_special_tokens=False).ids)
    assert (chunk.page_start, chunk.page_end) == (0, 0)


def test_chunks_respect_the_token_limit_and_the_model_window() -> None:
    text = make_text(80)
    opts = ChunkingOptions(chunk_size=200, chunk_overlap=40)
    chunks = chunk_text(text, options=opts)
    assert len(chunks) > 5
    assert_well_formed(text, chunks)
    assert all(c.token_count <= 200 for c in chunks)
    # Re-tokenizing the content as the dense model will: within its 256-token window.
    assert all(model_tokens(c.content) <= 256 for c in chunks)
    # The whole text is covered.
    assert chunks[0].start_char == len(text) - len(text.lstrip())
    assert chunks[-1].end_char == len(text.rstrip())


def test_consecutive_chunks_overlap_by_about_the_overlap() -> None:
    text = make_text(60)
    opts = ChunkingOptions(chunk_size=120, chunk_overlap=30)
    chunks = chunk_text(text, options=opts)
    tok = packaged_tokenizer()
    for before, after in pairwise(chunks):
        assert after.start_char < before.end_char
        shared = text[after.start_char : before.end_char]
        shared_tokens = len(tok.encode(shared, add_special_tokens=False).ids)
        assert 0 < shared_tokens <= 30


def test_no_overlap_means_chunks_tile_the_text() -> None:
    text = make_text(30)
    chunks = chunk_text(text, options=ChunkingOptions(chunk_size=64, chunk_overlap=0))
    assert_well_formed(text, chunks)
    total = len(chunking.piece_tokenizer().encode(text, add_special_tokens=False).ids)
    # Without truncation the chunks' token counts add up to the text's.
    assert sum(c.token_count for c in chunks) == total
    for before, after in pairwise(chunks):
        assert after.start_char >= before.end_char


def test_chunks_prefer_sentence_and_paragraph_ends() -> None:
    text = make_text(60)
    chunks = chunk_text(text, options=ChunkingOptions(chunk_size=200, chunk_overlap=40))
    inner = chunks[:-1]
    assert all(c.content.endswith(".") for c in inner)
    # Overlaps start at a sentence start where one is available.
    assert all(c.content[0].isupper() for c in chunks)


def test_paragraph_break_near_the_limit_wins_over_a_later_sentence_end() -> None:
    first = " ".join(["alpha"] * 90) + "."
    second = " ".join(["beta"] * 5) + ". " + " ".join(["gamma"] * 40) + "."
    text = first + "\n\n" + second
    chunks = chunk_text(text, options=ChunkingOptions(chunk_size=100, chunk_overlap=0))
    assert chunks[0].content == first


def test_a_text_without_spaces_still_chunks_at_the_limit() -> None:
    text = "日本語のテキスト。" * 200
    chunks = chunk_text(text, options=ChunkingOptions(chunk_size=50, chunk_overlap=10))
    assert len(chunks) > 3
    assert_well_formed(text, chunks)
    assert all(c.token_count <= 50 for c in chunks)
    # CJK full stops are sentence ends without a following space.
    assert all(c.content.endswith("。") for c in chunks[:-1])


def test_unicode_offsets_are_python_string_offsets() -> None:
    text = "Ünïcødé façade — naïve café. 😀 Emoji and 日本語 text. " * 40
    chunks = chunk_text(text, options=ChunkingOptions(chunk_size=40, chunk_overlap=8))
    assert len(chunks) > 3
    assert_well_formed(text.rstrip(), chunks)
    for c in chunks:
        assert text[c.start_char : c.end_char] == c.content


def test_page_ranges_come_from_the_pages() -> None:
    page_texts = [make_text(4, seed=s) for s in (1, 2, 3)]
    pages, offset = [], 0
    for number, body in enumerate(page_texts, start=1):
        if number > 1:
            offset += len(PAGE_SEPARATOR)
        pages.append(Page(number, offset, offset + len(body)))
        offset += len(body)
    text = PAGE_SEPARATOR.join(page_texts)
    chunks = chunk_text(text, pages, ChunkingOptions(chunk_size=60, chunk_overlap=10))
    assert_well_formed(text, chunks)
    for c in chunks:
        expected = [p.number for p in pages if p.start_char < c.end_char and c.start_char < p.end_char]
        assert (c.page_start, c.page_end) == (min(expected), max(expected))
    assert chunks[0].page_start == 1 and chunks[-1].page_end == 3
    assert any(c.page_start != c.page_end for c in chunks)


def test_empty_pages_are_skipped_in_page_ranges() -> None:
    # Page 2 has no text (a scanned page between two text pages).
    body = "alpha beta gamma delta epsilon."
    text = body + "\n\n\n\n" + body
    pages = [Page(1, 0, 31), Page(2, 33, 33), Page(3, 35, 66)]
    [chunk] = chunk_text(text, pages)
    assert (chunk.page_start, chunk.page_end) == (1, 3)
    first, second = chunk_text(text, pages, ChunkingOptions(chunk_size=8, chunk_overlap=0))
    assert (first.page_start, first.page_end) == (1, 1)
    assert (second.page_start, second.page_end) == (3, 3)


def test_long_text_is_tokenized_in_pieces_identically(monkeypatch: pytest.MonkeyPatch) -> None:
    text = make_text(120)
    whole = chunk_text(text)
    # Tiny pieces force many piece boundaries; whitespace cuts must not change any chunk.
    monkeypatch.setattr(chunking, "PIECE_CHARS", 300)
    monkeypatch.setattr(chunking, "PIECES_PER_BATCH", 3)
    pieced = chunk_text(text)
    assert pieced == whole


def test_iter_chunks_is_lazy(monkeypatch: pytest.MonkeyPatch) -> None:
    class CountingTokenizer:
        """Counts the pieces the chunker asks to be tokenized."""

        def __init__(self) -> None:
            self.pieces = 0

        def encode_batch(self, texts: list[str], **kwargs: Any) -> Any:
            self.pieces += len(texts)
            return chunking.piece_tokenizer().encode_batch(texts, **kwargs)

    monkeypatch.setattr(chunking, "PIECE_CHARS", 300)
    monkeypatch.setattr(chunking, "PIECES_PER_BATCH", 1)
    text = make_text(400)
    tok = CountingTokenizer()
    first = next(iter_chunks(text, tokenizer=tok))  # type: ignore[arg-type]
    assert first.chunk_index == 0 and first.start_char == 0
    # The first chunk (200 tokens) needs a few 300-character pieces, not the whole text's.
    assert 0 < tok.pieces < 10 < len(text) // 300


@pytest.mark.parametrize(("size", "overlap"), [(4, 0), (100, 50), (100, -1)])
def test_invalid_options_are_rejected(size: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        ChunkingOptions(chunk_size=size, chunk_overlap=overlap)
