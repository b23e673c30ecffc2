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
from bs4.element import CData, NavigableString, PageElement, Tag

from services.common.domain import DOCUMENT_CONTENT_TYPE

PAGE_SEPARATOR = "\n\n"

#: How many leading bytes are inspected to tell text from binary.
_SNIFF_BYTES = 8192
#: Above this share of undecodable characters an unknown file is treated as binary.
_MAX_REPLACEMENT_RATIO = 0.02


class ParseError(Exception):
    """The file cannot be turned into text (unsupported type, corrupt or encrypted, over a limit)."""


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """What one file may cost to parse; a file over a limit fails with the limit in its error.

    ``max_bytes``, ``max_pages``, ``max_text_chars`` and ``max_html_depth`` are checked here;
    ``timeout_seconds`` and ``memory_mb`` by the process that runs the parser (``sandbox``),
    since only a process can be stopped in the middle of a runaway parse.
    """

    max_bytes: int = 100 * 1024 * 1024
    max_pages: int = 2000
    max_text_chars: int = 20_000_000
    max_html_depth: int = 256
    timeout_seconds: float = 60.0
    memory_mb: int = 2048


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


def parse(content: bytes, file_name: str = "", content_type: str = "",
          limits: ParseLimits | None = None) -> ParsedDocument:
    """Parse ``content``, choosing the format by file extension, then content type, then sniffing.

    Raises ``ParseError`` for unsupported binary formats, unreadable PDFs, and files over
    ``limits`` (bytes, PDF pages, extracted text, HTML nesting).
    """
    limits = limits or ParseLimits()
    check_size(content, limits)
    kind = _detect(content, file_name, content_type)
    document = replace(_PARSERS[kind](content, limits), kind=kind)
    _check_text(len(document.text), limits)
    return document


def check_size(content: bytes, limits: ParseLimits) -> None:
    """``ParseError`` when the file is over ``limits.max_bytes``."""
    if len(content) > limits.max_bytes:
        raise ParseError(f"file too large: {_size(len(content))} > the {_size(limits.max_bytes)} limit")


def _check_text(chars: int, limits: ParseLimits) -> None:
    if chars > limits.max_text_chars:
        raise ParseError(f"extracted text too long: {chars:,} characters > the {limits.max_text_chars:,} limit")


def _size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / 1024 / 1024:.1f} MB"
    if size >= 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size} bytes"


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


def _parse_text(content: bytes, limits: ParseLimits) -> ParsedDocument:
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


def _parse_html(content: bytes, limits: ParseLimits) -> ParsedDocument:
    scanned = _tag_depth(content, limits.max_html_depth)
    if scanned > limits.max_html_depth:  # before the tree is built: a deep one is slow to build
        raise ParseError(f"HTML nested too deeply: over {limits.max_html_depth} levels")
    with warnings.catch_warnings():
        # bs4 warns about markup that looks like a URL or like XML; neither matters here.
        warnings.simplefilter("ignore")
        soup = BeautifulSoup(content, "lxml")
    depth = _depth(soup)
    if depth > limits.max_html_depth:
        raise ParseError(f"HTML nested too deeply: {depth} levels > the {limits.max_html_depth} limit")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    preformatted: list[str] = []
    raw = normalize_newlines(_visible_text(soup, preformatted))
    lines = [_HSPACE.sub(" ", line).strip() for line in raw.split("\n")]
    body = _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip("\n")
    body = _MARKER.sub(lambda m: preformatted[int(m.group(1))], body)
    # The <title> lives in <head>, which is dropped; keep it as the first line unless the body
    # already starts with it (a common <h1> that repeats the title).
    if title and not body.startswith(title):
        body = f"{title}\n\n{body}" if body else title
    return ParsedDocument(body)


_TAG = re.compile(rb"<(/?)([A-Za-z][A-Za-z0-9:-]*)[^>]*?(/?)>")
#: Elements that never hold children, and those whose end tag may be left out (HTML's rules):
#: neither can be told to nest by counting tags.
_VOID = frozenset(b"area base br col embed hr img input link meta param source track wbr".split())
_OPTIONAL_END = frozenset(
    b"html head body p li dt dd tr td th option optgroup thead tbody tfoot colgroup caption rb rt rp".split()
)


def _visible_text(soup: BeautifulSoup, preformatted: list[str]) -> str:
    """The document's visible text in one pass over the tree (no edits to it, so it stays linear
    in the document's size): dropped elements skipped, whitespace in text collapsed (line breaks
    come from markup only), a line break around blocks and before line elements, a space after
    cells; preformatted elements are set aside in ``preformatted`` behind a marker, so their
    spacing survives the tidying of the rest."""
    out: list[str] = []
    stack: list[PageElement | _Closing] = [soup]
    while stack:
        node = stack.pop()
        if isinstance(node, _Closing):
            out.append(node.text)
        elif isinstance(node, Tag):
            name = node.name
            if name in _DROPPED_TAGS:
                continue
            if name == "br":
                out.append("\n")
                continue
            if name in _PRESERVE_TAGS:
                preformatted.append(normalize_newlines(node.get_text()).strip("\n"))
                edge = "\n" if name in _BLOCK_TAGS else ""
                out += [edge, f"{_MARK_OPEN}{len(preformatted) - 1}{_MARK_CLOSE}", edge]
                continue
            if name in _BLOCK_TAGS:
                out.append("\n")
                stack.append(_Closing("\n"))
            elif name in _LINE_TAGS:
                out.append("\n")
            elif name in _CELL_TAGS:
                stack.append(_Closing(" "))
            stack.extend(reversed(node.contents))
        elif type(node) is NavigableString:
            out.append(_ANY_SPACE.sub(" ", node))
        elif isinstance(node, CData):
            out.append(str(node))
    return "".join(out)


@dataclass(frozen=True, slots=True)
class _Closing:
    """Text to emit after an element's children (the walk's end-of-element event)."""

    text: str


def _tag_depth(content: bytes, stop_above: int) -> int:
    """An estimate of the element nesting from the tags alone, up to the first depth over
    ``stop_above`` (a fast check: elements with optional end tags are not counted)."""
    depth = deepest = 0
    for match in _TAG.finditer(content):
        closing, name, self_closing = match.group(1), match.group(2).lower(), match.group(3)
        if name in _VOID or name in _OPTIONAL_END or self_closing:
            continue
        depth = max(0, depth - 1) if closing else depth + 1
        if depth > deepest:
            deepest = depth
            if deepest > stop_above:
                break
    return deepest


def _depth(soup: BeautifulSoup) -> int:
    """The deepest element nesting of the parsed tree (iteratively: a deep tree must not recurse)."""
    deepest = 0
    stack: list[tuple[Tag, int]] = [(soup, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node.contents if isinstance(child, Tag))
    return deepest


#: pdfium is not thread-safe, and parsing and rendering run in worker threads (asyncio.to_thread):
#: every pdfium call of this process holds this lock.
PDFIUM_LOCK = threading.Lock()


def _parse_pdf(content: bytes, limits: ParseLimits) -> ParsedDocument:
    with PDFIUM_LOCK:
        try:
            document = pdfium.PdfDocument(content)
        except pdfium.PdfiumError as exc:
            raise ParseError(f"unreadable PDF: {exc}") from exc
        try:
            if len(document) > limits.max_pages:
                raise ParseError(f"PDF has {len(document):,} pages > the {limits.max_pages:,} page limit")
            page_texts: list[str] = []
            chars = 0
            for i in range(len(document)):
                page_texts.append(_pdf_page_text(document, i))
                chars += len(page_texts[-1]) + len(PAGE_SEPARATOR)
                # Checked page by page: an inflated PDF is stopped at the first page over the limit.
                _check_text(chars - len(PAGE_SEPARATOR), limits)
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


_PARSERS: dict[str, Callable[[bytes, ParseLimits], ParsedDocument]] = {
    "text": _parse_text,
    "markdown": _parse_text,
    "html": _parse_html,
    "pdf": _parse_pdf,
}
