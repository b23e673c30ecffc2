"""File cards: one chunk per parsed file holding its name and metadata as text.

The legacy ``files_via_metadata`` retrieval mode ranks files by how well their name and
metadata match the query; the worker writes each file's card to the companion index
``files_index_id(index_id)`` in both engines, so that mode is an ordinary hybrid search there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from tokenizers import Tokenizer

from services.common.domain import Chunk, MetaValue, file_card_id, files_index_id
from services.common.models import DEFAULT_MAX_TOKENS
from services.ingest.chunking import piece_tokenizer

#: Text tokens the embedding model reads (its window less [CLS] and [SEP]); the rest of a card
#: would be cut by the model anyway, and BM25 sees the same text as the vector.
CARD_MAX_TOKENS = DEFAULT_MAX_TOKENS - 2
#: Characters tokenized at most: a WordPiece token covers at most ~100 characters (longer words
#: become [UNK]), so this always holds ``CARD_MAX_TOKENS`` tokens and bounds the work.
_MAX_CARD_CHARS = CARD_MAX_TOKENS * 100

_NAME_SEPARATORS = re.compile(r"[\s_.\-/\\]+")
_WHITESPACE = re.compile(r"\s+")


def spaced_name(file_name: str) -> str:
    """``"Q3_report-final.pdf"`` -> ``"Q3 report final pdf"``: separators as spaces, so every
    tokenizer sees the words."""
    return _NAME_SEPARATORS.sub(" ", file_name).strip()


def _meta_text(value: MetaValue) -> str:
    if isinstance(value, list):
        return ", ".join(_meta_text(v) for v in value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return json.dumps(value)
    return _WHITESPACE.sub(" ", str(value)).strip()


def card_text(file_name: str, metadata: Mapping[str, MetaValue]) -> str:
    """The card before truncation: the name as written, the name with separators as spaces
    (when it differs), then one ``key: value`` line per metadata entry (lists joined by ", ")."""
    lines = [file_name.strip()]
    spaced = spaced_name(file_name)
    if spaced and spaced != lines[0]:
        lines.append(spaced)
    for key, value in metadata.items():
        lines.append(f"{_WHITESPACE.sub(' ', key).strip()}: {_meta_text(value)}".rstrip())
    return "\n".join(line for line in lines if line)


def truncate_to_tokens(text: str, tokenizer: Tokenizer, max_tokens: int) -> tuple[str, int]:
    """``text`` cut after its ``max_tokens``-th token (no special tokens), and its token count."""
    head = text[:_MAX_CARD_CHARS]
    encoding = tokenizer.encode(head, add_special_tokens=False)
    ends = [end for start, end in encoding.offsets if end > start]
    if len(ends) <= max_tokens:
        return head, len(ends)
    return head[: ends[max_tokens - 1]], max_tokens


def build_file_card(
    *,
    index_id: str,
    parsed_file_id: str,
    file_name: str,
    metadata: Mapping[str, MetaValue],
    source_id: str,
    tokenizer: Tokenizer | None = None,
    max_tokens: int = CARD_MAX_TOKENS,
) -> Chunk:
    """The card of one parsed file of ``index_id``, addressed to its companion files index."""
    content, token_count = truncate_to_tokens(
        card_text(file_name, metadata), tokenizer or piece_tokenizer(), max_tokens
    )
    return Chunk(
        id=file_card_id(parsed_file_id),
        index_id=files_index_id(index_id),
        file_id=parsed_file_id,
        content=content,
        file_name=file_name,
        metadata=metadata,
        chunk_index=0,
        start_char=0,
        end_char=0,
        token_count=token_count,
        source_id=source_id,
    )
