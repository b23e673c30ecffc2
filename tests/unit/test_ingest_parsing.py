"""Parsing uploaded files into text (and pages) for the ingest worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.ingest.parsing import PAGE_SEPARATOR, Page, ParsedDocument, ParseError, ParseLimits, parse
from tests.fixtures.ingest.pdf_builder import build_pdf

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"


def page_texts(doc: ParsedDocument) -> list[str]:
    return [doc.text[p.start_char : p.end_char] for p in doc.pages]


def test_plain_text_is_decoded_as_utf8_with_newlines_normalised() -> None:
    doc = parse((FIXTURES / "sample.txt").read_bytes(), "sample.txt")
    assert doc.text == "Plain text line one.\nLine two with unicode: été — 日本.\n\nA second paragraph.\n"
    assert doc.pages == ()


@pytest.mark.parametrize(
    ("content", "name", "text"),
    [
        pytest.param(b"\xef\xbb\xbfone\r\ntwo\rthree\x00!", "a.txt", "one\ntwo\nthree!", id="crlf-bom-nul"),
        pytest.param(b"caf\xe9 ok", "notes.txt", "caf\ufffd ok", id="invalid-utf8-replaced"),
        pytest.param("héllo wörld".encode("utf-16"), "u16.txt", "héllo wörld", id="utf16-bom"),
        pytest.param("émoji 😀 ok\n".encode(), "README", "émoji 😀 ok\n", id="unknown-extension-text"),
        pytest.param(b"<html><head><title>The Title</title></head><body><p>Body text</p></body></html>",
                     "t.htm", "The Title\n\nBody text", id="html-title-kept"),
        pytest.param(b"<p>intro</p><pre>def f():\n    return  1\n</pre><p>after</p>", "code.html",
                     "intro\n\ndef f():\n    return  1\n\nafter", id="html-pre-keeps-spacing"),
    ],
)
def test_small_inputs_parse_to_exact_text(content: bytes, name: str, text: str) -> None:
    doc = parse(content, name)
    assert doc.text == text
    assert doc.pages == ()


def test_markdown_is_kept_as_written() -> None:
    raw = (FIXTURES / "sample.md").read_bytes()
    doc = parse(raw, "sample.md")
    assert doc.text == raw.decode("utf-8")
    assert "**Markdown**" in doc.text and "```python" in doc.text


def test_html_keeps_visible_text_with_block_structure() -> None:
    doc = parse((FIXTURES / "sample.html").read_bytes(), "sample.html")
    assert doc.text == (
        "Quarry handbook\n\n"
        "Hybrid search with reranking.\n\n"
        "Café crème & naïve résumé\n\n"
        "dense\nsparse\n\n"
        "First line\nsecond line\n\n"
        "engine role\ntantivy BM25"
    )
    for hidden in ("secret", "color", "track", "javascript"):
        assert hidden not in doc.text


def test_html_is_detected_by_content_type_and_by_sniffing() -> None:
    html = b"<!DOCTYPE html><html><body><p>a</p><p>b</p></body></html>"
    assert parse(html, "page", "text/html; charset=utf-8").text == "a\n\nb"
    assert parse(html, "download").text == "a\n\nb"


def test_pdf_pages_are_joined_with_their_ranges_recorded() -> None:
    pdf = build_pdf([
        ["Quarry parses PDF files.", "Page one, second line."],
        ["Page two (with parentheses)."],
        ["Third page: the end."],
    ])
    doc = parse(pdf, "report.pdf")
    assert page_texts(doc) == [
        "Quarry parses PDF files.\nPage one, second line.",
        "Page two (with parentheses).",
        "Third page: the end.",
    ]
    assert [p.number for p in doc.pages] == [1, 2, 3]
    assert doc.text == PAGE_SEPARATOR.join(page_texts(doc))
    assert doc.pages[0] == Page(1, 0, len(page_texts(doc)[0]))
    for before, after in zip(doc.pages, doc.pages[1:], strict=False):
        assert doc.text[before.end_char : after.start_char] == PAGE_SEPARATOR


def test_pdf_page_without_text_layer_keeps_its_place() -> None:
    doc = parse(build_pdf([["first"], None, ["third"]]), "mixed.pdf")
    assert page_texts(doc) == ["first", "", "third"]
    assert doc.text == "first\n\n\n\nthird"


def test_pdf_without_any_text_gives_empty_text_not_an_error() -> None:
    doc = parse(build_pdf([None, None]), "scan.pdf")
    assert doc.text == ""
    assert [p.number for p in doc.pages] == [1, 2]


def test_pdf_is_detected_by_magic_bytes_without_a_name() -> None:
    doc = parse(build_pdf([["sniffed"]]), "", "application/octet-stream")
    assert doc.text == "sniffed"
    assert doc.kind == "pdf"


@pytest.mark.parametrize(
    ("content", "name", "content_type", "kind"),
    [
        (b"plain", "a.txt", "", "text"),
        (b"# title", "a.md", "", "markdown"),
        (b"<p>x</p>", "a.html", "", "html"),
        (b"<p>x</p>", "page", "text/html", "html"),
        (build_pdf([["x"]]), "a.pdf", "", "pdf"),
        (build_pdf([["x"]]), "upload", "application/pdf", "pdf"),
    ],
)
def test_the_document_says_which_format_it_was_parsed_as(
    content: bytes, name: str, content_type: str, kind: str
) -> None:
    assert parse(content, name, content_type).kind == kind


def test_corrupt_pdf_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="PDF"):
        parse(b"%PDF-1.4\nthis is not really a pdf", "broken.pdf")


@pytest.mark.parametrize(
    ("content", "name", "content_type"),
    [
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(256)), "deck.pptx", ""),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "image.png", ""),
        (bytes(range(256)) * 8, "blob", "application/octet-stream"),
        (b"\x00\x01\x02binary\x00" * 50, "", ""),
    ],
)
def test_unsupported_binary_is_a_clear_parse_error(content: bytes, name: str, content_type: str) -> None:
    with pytest.raises(ParseError, match="unsupported"):
        parse(content, name, content_type)


# -- per-file limits ------------------------------------------------------------------------------


def test_limits_fail_a_file_with_the_limit_in_the_reason() -> None:
    limits = ParseLimits(max_bytes=1000, max_pages=3, max_text_chars=50, max_html_depth=20)
    with pytest.raises(ParseError, match="file too large: 1001 bytes > the 1000 bytes limit"):
        parse(b"x" * 1001, "a.txt", limits=limits)
    with pytest.raises(ParseError, match="PDF has 4 pages > the 3 page limit"):
        parse(build_pdf([["p"]] * 4), "a.pdf", limits=ParseLimits(max_pages=3))
    with pytest.raises(ParseError, match="extracted text too long: 60 characters > the 50 limit"):
        parse(b"y" * 60, "a.txt", limits=limits)
    with pytest.raises(ParseError, match="HTML nested too deeply: over 20 levels"):
        parse(b"<div>" * 21 + b"deep", "a.html", limits=limits)


def test_the_html_depth_is_checked_on_the_tree_too() -> None:
    """Elements with optional end tags are not counted by the fast scan; the built tree is."""
    deep = b"<section>" * 10 + b"<ul><li>" * 12 + b"text"
    with pytest.raises(ParseError, match="nested too deeply: 3"):
        parse(deep, "a.html", limits=ParseLimits(max_html_depth=30))


def test_unclosed_paragraphs_are_siblings_not_a_deep_tree() -> None:
    """HTML implies the end of a <p> at the next one: 50,000 of them parse flat and fast."""
    html = b"<html><body>" + b"<p>para <b>bold</b> text" * 50_000 + b"</body></html>"
    document = parse(html, "old.html")
    assert document.text.count("para bold text") == 50_000
