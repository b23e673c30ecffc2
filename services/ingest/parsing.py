"""Turn an uploaded file's bytes into the plain text that is chunked, grepped and read.

Supported: plain text (and any file that decodes as text), Markdown (kept as written: the
text is what ``grep``/``read`` serve), HTML (visible text, block elements on their own lines)
and PDF (text layer per page, pages joined by a blank line, page ranges recorded).

Every parser returns text with ``\\n`` line endings and no NUL characters (PostgreSQL text
columns reject NUL), so character offsets mean the same thing to every consumer.
"""

from __future__ import annotations

import codecs
import re
import threading
import unicodedata
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

import pypdfium2 as pdfium
from bs4 import BeautifulSoup
from bs4.element import NavigableString, Tag

from services.common.domain import DOCUMENT_CONTENT_TYPE

PAGE_SEPARATOR = "\n\n"

#: How many leading bytes are inspected to tell text from binary.
_SNIFF_BYTES = 8192
#: Above this share of undecodable characters an unknown file is treated as binary.
_MAX_REPLACEMENT_RATIO = 0.02


class ParseError(Exception):
    """The file cannot be turned into text (unsupported type, corrupt or encrypted)."""


@dataclass(frozen=True, slots=True)
class Page:
    """A 1-based page number and the ``[start_char, end_char)`` range of its text."""

    number: int
    start_char: int
    end_char: int


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """The parsed text of one file; ``pages`` is empty for formats without pages.

    ``kind`` is the format it was parsed as (``text``, ``markdown``, ``html`` or ``pdf``), so
    later steps (page screenshots) need not detect it again.
    """

    text: str
    pages: tuple[Page, ...] = field(default=())
    kind: str = "text"


_TEXT_EXTENSIONS = frozenset({
    ".txt", ".text", ".csv", ".tsv", ".log", ".json", ".jsonl", ".xml", ".yaml", ".yml", ".toml",
    ".ini", ".cfg", ".rst", ".py", ".js", ".ts", ".java", ".go", ".rs", ".c", ".h", ".cpp", ".sql", ".sh",
})
_MARKDOWN_EXTENSIONS = frozenset({".md", ".markdown", ".mdown", ".mkd"})
_HTML_EXTENSIONS = frozenset({".html", ".htm", ".xhtml"})
_PDF_EXTENSIONS = frozenset({".pdf"})
#: Formats that are known not to be text; rejected without sniffing.
_BINARY_EXTENSIONS = frozenset({
    ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx", ".odt", ".ods", ".odp", ".epub", ".zip", ".gz",
    ".tar", ".7z", ".rar", ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".mp3",
    ".mp4", ".wav", ".avi", ".mov", ".exe", ".dll", ".so", ".bin", ".parquet",
})


def parse(content: bytes, file_name: str = "", content_type: str = "") -> ParsedDocument:
    """Parse ``content``, choosing the format by file extension, then content type, then sniffing.

    Raises ``ParseError`` for unsupported binary formats and unreadable PDFs.
    """
    kind = _detect(content, file_name, content_type)
    return replace(_PARSERS[kind](content), kind=kind)


def _detect(content: bytes, file_name: str, content_type: str) -> str:
    suffix = PurePosixPath(file_name.lower()).suffix
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == DOCUMENT_CONTENT_TYPE:
        return "text"
    if suffix in _PDF_EXTENSIONS or mime == "application/pdf":
        return "pdf"
    if suffix in _HTML_EXTENSIONS or mime in ("text/html", "application/xhtml+xml"):
        return "html"
    if suffix in _MARKDOWN_EXTENSIONS or mime in ("text/markdown", "text/x-markdown"):
        return "markdown"
    if suffix in _TEXT_EXTENSIONS or mime.startswith("text/"):
        return "text"
    if suffix in _BINARY_EXTENSIONS:
        raise ParseError(f"unsupported file type {suffix!r}")
    head = content[:_SNIFF_BYTES].lstrip()
    if head.startswith(b"%PDF-"):
        return "pdf"
    if re.match(rb"(?i)<!doctype html|<html[\s>]", head):
        return "html"
    if _looks_binary(content[:_SNIFF_BYTES]):
        raise ParseError(f"unsupported binary file ({mime or suffix or 'unknown type'})")
    return "text"


def _looks_binary(head: bytes) -> bool:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    if b"\x00" in head:
        return True
    # A multi-byte character cut at the sniff boundary is not evidence of binary content.
    sample = head.decode("utf-8", errors="replace").rstrip("\ufffd")
    if not sample:
        return False
    bad = sample.count("\ufffd") + sum(
        1 for ch in sample if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f\v"
    )
    return bad / len(sample) > _MAX_REPLACEMENT_RATIO


def decode_text(content: bytes) -> str:
    """Decode bytes as UTF-8 (UTF-16 when a BOM says so), replacing invalid sequences."""
    if content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = content.decode("utf-16", errors="replace")
    else:
        text = content.decode("utf-8-sig", errors="replace")
    return normalize_newlines(text)


def normalize_newlines(text: str) -> str:
    """``\\r\\n`` and ``\\r`` to ``\\n``; NUL removed."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def _parse_text(content: bytes) -> ParsedDocument:
    return ParsedDocument(decode_text(content))


_DROPPED_TAGS = ("script", "style", "noscript", "template", "head", "svg", "iframe", "object")
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog", "div", "dl",
    "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "hgroup", "hr", "main", "nav", "ol", "p", "pre", "section", "summary", "table",
    "tbody", "tfoot", "thead", "title", "ul",
})
#: Elements that start a new line but, unlike blocks, are not separated by a blank line.
_LINE_TAGS = frozenset({"li", "tr", "dt", "dd", "option"})
_CELL_TAGS = frozenset({"td", "th"})
_PRESERVE_TAGS = ["pre", "textarea"]
_ANY_SPACE = re.compile(r"\s+")
# Private-use code points: they do not occur in real documents' visible text.
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"
_MARKER = re.compile(f"{_MARK_OPEN}(\\d+){_MARK_CLOSE}")
_HSPACE = re.compile(r"[^\S\n]+")
_BLANK_RUNS = re.compile(r"\n{3,}")


def _parse_html(content: bytes) -> ParsedDocument:
    with warnings.catch_warnings():
        # bs4 warns about markup that looks like a URL or like XML; neither matters here.
        warnings.simplefilter("ignore")
        soup = BeautifulSoup(content, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for name in _DROPPED_TAGS:
        for tag in soup.find_all(name):
            tag.decompose()
    # Preformatted text keeps its spacing: set it aside behind a marker until the rest is tidied.
    preformatted: list[str] = []
    for tag in soup.find_all(_PRESERVE_TAGS):
        if isinstance(tag, Tag) and tag.find_parent(_PRESERVE_TAGS) is None:
            preformatted.append(normalize_newlines(tag.get_text()).strip("\n"))
            tag.clear()
            tag.append(f"{_MARK_OPEN}{len(preformatted) - 1}{_MARK_CLOSE}")
    # Elsewhere whitespace in HTML text is insignificant: line breaks come from markup only.
    for string in soup.find_all(string=True):
        if type(string) is NavigableString:
            string.replace_with(_ANY_SPACE.sub(" ", string))
    for tag in soup.find_all(True):
        if not isinstance(tag, Tag):
            continue
        if tag.name == "br":
            tag.replace_with("\n")
        elif tag.name in _BLOCK_TAGS:
            tag.insert_before("\n")
            tag.insert_after("\n")
        elif tag.name in _LINE_TAGS:
            tag.insert_before("\n")
        elif tag.name in _CELL_TAGS:
            tag.insert_after(" ")
    raw = normalize_newlines(soup.get_text())
    lines = [_HSPACE.sub(" ", line).strip() for line in raw.split("\n")]
    body = _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip("\n")
    body = _MARKER.sub(lambda m: preformatted[int(m.group(1))], body)
    # The <title> lives in <head>, which is dropped; keep it as the first line unless the body
    # already starts with it (a common <h1> that repeats the title).
    if title and not body.startswith(title):
        body = f"{title}\n\n{body}" if body else title
    return ParsedDocument(body)


#: pdfium is not thread-safe, and parsing and rendering run in worker threads (asyncio.to_thread):
#: every pdfium call of this process holds this lock.
PDFIUM_LOCK = threading.Lock()


def _parse_pdf(content: bytes) -> ParsedDocument:
    with PDFIUM_LOCK:
        try:
            document = pdfium.PdfDocument(content)
        except pdfium.PdfiumError as exc:
            raise ParseError(f"unreadable PDF: {exc}") from exc
        try:
            page_texts = [_pdf_page_text(document, i) for i in range(len(document))]
        except pdfium.PdfiumError as exc:
            raise ParseError(f"unreadable PDF page: {exc}") from exc
        finally:
            document.close()
    parts: list[str] = []
    pages: list[Page] = []
    offset = 0
    for number, page_text in enumerate(page_texts, start=1):
        if number > 1:
            parts.append(PAGE_SEPARATOR)
            offset += len(PAGE_SEPARATOR)
        parts.append(page_text)
        pages.append(Page(number, offset, offset + len(page_text)))
        offset += len(page_text)
    text = "".join(parts)
    if not text.strip():
        # A scanned PDF without a text layer: nothing to index, but not an error.
        return ParsedDocument("", tuple(Page(p.number, 0, 0) for p in pages))
    return ParsedDocument(text, tuple(pages))


def _pdf_page_text(document: pdfium.PdfDocument, index: int) -> str:
    page = document[index]
    try:
        textpage = page.get_textpage()
        try:
            raw = textpage.get_text_range()
        finally:
            textpage.close()
    finally:
        page.close()
    # pdfium marks soft hyphens at line ends with \x02 and unmapped glyphs with \ufffe.
    cleaned = normalize_newlines(raw).replace("\x02", "-").replace("\ufffe", "")
    return "\n".join(line.rstrip() for line in cleaned.split("\n")).strip()


_PARSERS: dict[str, Callable[[bytes], ParsedDocument]] = {
    "text": _parse_text,
    "markdown": _parse_text,
    "html": _parse_html,
    "pdf": _parse_pdf,
}
