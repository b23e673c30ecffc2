"""Token-aware chunking with overlap, keeping exact character offsets and page ranges.

Tokens come from the embedding model's own tokenizer, so a chunk of ``chunk_size`` tokens is
what the model sees (it truncates at 256 tokens including [CLS] and [SEP]; see
``ChunkingOptions``). The tokenizer's ``offsets`` map every token back to characters of the
parsed text, and a chunk's ``content`` is always ``text[start_char:end_char]``, so ``read``
with a chunk's offsets returns the chunk.

Long texts are tokenized in pieces cut at whitespace (where the BERT pre-tokenizer splits
anyway, so pieces tokenize exactly like the whole) and chunks are produced from a sliding
window of token offsets: memory stays proportional to one piece, not to the file.
"""

from __future__ import annotations

import bisect
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from services.common.models import packaged_tokenizer
from services.ingest.parsing import Page

#: Characters per tokenization piece: large enough to amortise calls, small enough for memory.
PIECE_CHARS = 16_384
#: Pieces encoded per ``encode_batch`` call (the Rust tokenizer encodes a batch in parallel).
PIECES_PER_BATCH = 8
#: The most text tokens per chunk: the packaged MiniLM reads 256 including [CLS] and [SEP].
MAX_CHUNK_TOKENS = 254

# CJK full stops (U+3002, U+FF01, U+FF1F) end a sentence without a following space.
_CJK_STOPS = "\u3002\uff01\uff1f"
_SENTENCE_END = frozenset(".!?\u2026" + _CJK_STOPS)
_CLOSERS = frozenset("\"')]}\u00bb\u201d\u2019")

# Boundary strengths, strongest first; a chunk ends at the strongest boundary near its limit.
_PARAGRAPH, _SENTENCE, _LINE, _WORD, _NONE = 4, 3, 2, 1, 0


@dataclass(frozen=True, slots=True)
class ChunkingOptions:
    """Chunk size and overlap in model tokens (special tokens excluded).

    The packaged MiniLM reads at most 256 tokens including [CLS] and [SEP], i.e. 254 of text.
    200 leaves headroom for a chunk cut inside a word re-tokenizing into a few more pieces,
    and the 40-token (20 %) overlap keeps a sentence that straddles a boundary retrievable
    from either side. Chunks end at the strongest boundary (paragraph > sentence > line >
    word) within the last ``chunk_size // 4`` tokens before the limit.
    """

    chunk_size: int = 200
    chunk_overlap: int = 40

    def __post_init__(self) -> None:
        if self.chunk_size < 8:
            raise ValueError("chunk_size must be at least 8 tokens")
        if not 0 <= self.chunk_overlap < self.chunk_size // 2:
            raise ValueError("chunk_overlap must be >= 0 and below half of chunk_size")

    @property
    def lookback(self) -> int:
        return self.chunk_size // 4

    def resolve(self, chunk_size: int | None, chunk_overlap: int | None) -> ChunkingOptions:
        """These options (the defaults) overridden by an index's ``chunk_size`` / ``chunk_overlap``.

        A size without an overlap keeps the defaults' overlap ratio (200/40: a fifth); values out
        of range are brought into it (size 8..254 tokens, overlap below half the size), so a
        config checked against other defaults still chunks.
        """
        if chunk_size is None and chunk_overlap is None:
            return self
        size = min(max(chunk_size if chunk_size is not None else self.chunk_size, 8), MAX_CHUNK_TOKENS)
        if chunk_overlap is None:
            chunk_overlap = size * self.chunk_overlap // self.chunk_size
        return ChunkingOptions(size, min(max(chunk_overlap, 0), size // 2 - 1))


@dataclass(frozen=True, slots=True)
class TextChunk:
    """One chunk: ``content == text[start_char:end_char]``; pages are 0 when the text has none."""

    chunk_index: int
    content: str
    start_char: int
    end_char: int
    token_count: int
    page_start: int = 0
    page_end: int = 0


def chunk_text(
    text: str,
    pages: Sequence[Page] = (),
    options: ChunkingOptions | None = None,
    tokenizer: Tokenizer | None = None,
) -> list[TextChunk]:
    """All chunks of ``text`` in order; no chunks for text without tokens."""
    return list(iter_chunks(text, pages, options, tokenizer))


def iter_chunks(
    text: str,
    pages: Sequence[Page] = (),
    options: ChunkingOptions | None = None,
    tokenizer: Tokenizer | None = None,
) -> Iterator[TextChunk]:
    """Chunks of ``text`` as they are found (see ``chunk_text``)."""
    opts = options or ChunkingOptions()
    tok = tokenizer or piece_tokenizer()
    locate = _PageLocator(pages)
    spans = _token_spans(text, tok)
    window: list[tuple[int, int]] = []
    exhausted = False
    index = 0
    while True:
        # One token beyond the limit is needed to judge the boundary after the last one.
        while not exhausted and len(window) <= opts.chunk_size:
            nxt = next(spans, None)
            if nxt is None:
                exhausted = True
            else:
                window.append(nxt)
        if not window:
            return
        if len(window) <= opts.chunk_size:
            yield _make_chunk(text, window, len(window), index, locate)
            return
        end = _best_end(text, window, opts)
        yield _make_chunk(text, window, end, index, locate)
        index += 1
        del window[: _next_start(text, window, end, opts.chunk_overlap)]


def piece_tokenizer() -> Tokenizer:
    """The packaged tokenizer with truncation above any piece's token count."""
    # A WordPiece token covers at least one character; the factor 2 covers normalisation
    # that expands a character (e.g. some lowercasings) before tokenization.
    return packaged_tokenizer(max_tokens=2 * PIECE_CHARS + 8)


def _make_chunk(
    text: str, window: list[tuple[int, int]], end: int, index: int, locate: _PageLocator
) -> TextChunk:
    start_char = window[0][0]
    end_char = window[end - 1][1]
    return TextChunk(
        chunk_index=index,
        content=text[start_char:end_char],
        start_char=start_char,
        end_char=end_char,
        token_count=end,
        page_start=locate(start_char),
        page_end=locate(end_char - 1),
    )


def _boundary(text: str, window: list[tuple[int, int]], i: int) -> int:
    """How good a place to cut between token ``i - 1`` and token ``i`` is."""
    prev_start, prev_end = window[i - 1]
    gap = text[prev_end : window[i][0]]
    newlines = gap.count("\n")
    if newlines >= 2:
        return _PARAGRAPH
    last = text[prev_start:prev_end]
    ends_sentence = last[-1:] in _SENTENCE_END or (
        last[-1:] in _CLOSERS and i >= 2 and text[window[i - 2][1] - 1 : window[i - 2][1]] in _SENTENCE_END
    )
    if ends_sentence and (gap or last[-1:] in _CJK_STOPS):
        return _SENTENCE
    if newlines:
        return _LINE
    if gap:
        return _WORD
    return _NONE


def _best_end(text: str, window: list[tuple[int, int]], opts: ChunkingOptions) -> int:
    """The exclusive token index to end the chunk at: the strongest boundary, latest on ties."""
    best, best_score = opts.chunk_size, -1
    for end in range(opts.chunk_size, opts.chunk_size - opts.lookback - 1, -1):
        score = _boundary(text, window, end)
        if score > best_score:
            best, best_score = end, score
            if score == _PARAGRAPH:
                break
    return best


def _next_start(text: str, window: list[tuple[int, int]], end: int, overlap: int) -> int:
    """Where the next chunk starts: ``overlap`` tokens back, moved to a sentence or word start."""
    if overlap == 0:
        return end
    first = max(1, end - overlap)
    word_start = None
    for i in range(first, end):
        score = _boundary(text, window, i)
        if score >= _SENTENCE:
            return i
        if score >= _WORD and word_start is None:
            word_start = i
    return word_start if word_start is not None else first


def _token_spans(text: str, tokenizer: Tokenizer) -> Iterator[tuple[int, int]]:
    """``(start_char, end_char)`` of every token of ``text`` (no special tokens), in order."""
    pieces = list(_pieces(text))
    for b in range(0, len(pieces), PIECES_PER_BATCH):
        batch = pieces[b : b + PIECES_PER_BATCH]
        encodings = tokenizer.encode_batch([text[s:e] for s, e in batch], add_special_tokens=False)
        for (piece_start, _), encoding in zip(batch, encodings, strict=True):
            if encoding.overflowing:
                raise RuntimeError("tokenizer truncated a chunking piece; PIECE_CHARS is too large")
            for start, end in encoding.offsets:
                if end > start:
                    yield piece_start + start, piece_start + end


def _pieces(text: str) -> Iterator[tuple[int, int]]:
    """Cut ``text`` into ranges of at most ``PIECE_CHARS`` at whitespace (else punctuation)."""
    n = len(text)
    start = 0
    while start < n:
        limit = start + PIECE_CHARS
        if limit >= n:
            yield start, n
            return
        cut = _cut_point(text, start + PIECE_CHARS // 2, limit)
        yield start, cut
        start = cut


def _cut_point(text: str, lo: int, hi: int) -> int:
    for i in range(hi, lo, -1):
        if text[i - 1].isspace():
            return i
    for i in range(hi, lo, -1):
        if unicodedata.category(text[i - 1]).startswith("P"):
            return i
    return hi


class _PageLocator:
    """Maps a character offset to the 1-based page holding it (0 without pages)."""

    def __init__(self, pages: Sequence[Page]) -> None:
        self._pages = sorted(pages, key=lambda p: p.start_char)
        self._starts = [p.start_char for p in self._pages]

    def __call__(self, offset: int) -> int:
        if not self._pages:
            return 0
        i = bisect.bisect_right(self._starts, offset) - 1
        # Offsets between pages (the separator) or empty pages resolve to the page before.
        while i > 0 and self._pages[i].start_char == self._pages[i].end_char:
            i -= 1
        return self._pages[max(i, 0)].number
