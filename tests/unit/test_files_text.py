"""Pure functions of the files service: grep, read, JSON validation, page tokens, settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.common.errors import InvalidArgument
from services.files.paging import decode_cursor, decode_offset, encode_cursor, encode_offset, page_size
from services.files.service import compile_pattern, grep_text, hash_key, json_object, read_text
from services.files.settings import FilesSettings


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("ab ab ab", "ab"),
        ("ééé ü Ü", "(?i)ü"),
        ("日本語のテキスト、日本", "日本"),
        ("emoji 😀 and 😀😀", "😀+"),
        ("axxbx", "x*"),
        ("", "x*"),
        ("line1\nline2\n", "(?m)^line\\d$"),
    ],
)
def test_grep_offsets_match_python_re(text: str, pattern: str) -> None:
    got = [(m.start_char, m.end_char) for m in grep_text(text, compile_pattern(pattern), 0)]
    assert got == [(m.start(), m.end()) for m in re.finditer(pattern, text)]


def test_grep_context_is_clipped_at_both_ends() -> None:
    text = "0123456789"
    [m] = grep_text(text, compile_pattern("45"), 3)
    assert (m.content, m.start_char, m.end_char) == ("12345678", 4, 6)
    [edge] = grep_text(text, compile_pattern("0"), 5)
    assert edge.content == "012345"
    [tail] = grep_text(text, compile_pattern("9"), 5)
    assert tail.content == "456789"


def test_grep_is_linear_on_a_pathological_pattern() -> None:
    # (a+)+$ backtracks exponentially in a backtracking engine; RE2 answers at once.
    text = "a" * 5000 + "!"
    assert grep_text(text, compile_pattern("(a+)+$"), 0) == []


@pytest.mark.parametrize("pattern", ["(", "[a-", r"(?<=x)y", r"(a)\1"])
def test_invalid_patterns_name_the_pattern(pattern: str) -> None:
    with pytest.raises(InvalidArgument, match="pattern"):
        compile_pattern(pattern)


def test_read_text_slices() -> None:
    text = "héllo 😀 world"
    assert read_text(text, 0, None).content == text
    assert read_text(text, 0, 0).content == ""
    assert read_text(text, 6, 1).content == "😀"
    assert read_text(text, 6, None).content == text[6:]
    assert read_text(text, 100, 5).content == ""
    assert read_text(text, 0, 5).total_chars == len(text)
    with pytest.raises(InvalidArgument):
        read_text(text, -1, 3)
    with pytest.raises(InvalidArgument):
        read_text(text, 0, -5)


def test_json_object() -> None:
    assert json_object("", "metadata") == "{}"
    assert json_object('{"a": [1, "ü"]}', "metadata") == '{"a":[1,"ü"]}'
    for bad in ("[]", "1", "null", "{"):
        with pytest.raises(InvalidArgument, match="metadata"):
            json_object(bad, "metadata")


def test_page_tokens_round_trip() -> None:
    key = ("Ärger/ä b.txt", "id-1")
    assert decode_cursor(encode_cursor(key)) == key
    assert decode_cursor("") is None
    assert decode_offset(encode_offset(42)) == 42
    assert decode_offset("") == 0
    for bad in ("%%%", encode_offset(3), "bm90IGpzb24"):
        with pytest.raises(InvalidArgument, match="page_token"):
            decode_cursor(bad)
    with pytest.raises(InvalidArgument, match="page_token"):
        decode_offset(encode_cursor(key))


def test_page_size() -> None:
    assert page_size(0, 50) == 50
    assert page_size(7) == 7
    assert page_size(10**6) == 1000
    with pytest.raises(InvalidArgument):
        page_size(-1)


def test_hash_key_is_sha256_hex() -> None:
    assert hash_key("k") == "8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a"


def test_settings_database_urls(tmp_path: Path) -> None:
    s = FilesSettings(data_dir=tmp_path)
    assert s.resolved_database_url() == f"sqlite+aiosqlite:///{tmp_path.resolve()}/catalog.db"
    pg = FilesSettings(database_url="postgresql://u@h:5432/db")
    assert pg.resolved_database_url() == "postgresql+psycopg://u@h:5432/db"
    assert FilesSettings(database_url="postgres://u@h/db").database_url == "postgresql+psycopg://u@h/db"
    assert FilesSettings(database_url="sqlite:////x/c.db").database_url == "sqlite+aiosqlite:////x/c.db"
    kept = "postgresql+psycopg://u@h/db"
    assert FilesSettings(database_url=kept).database_url == kept


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QUARRY_FILES_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("QUARRY_FILES_DATABASE_URL", "postgresql://postgres@127.0.0.1/test")
    monkeypatch.setenv("QUARRY_FILES_POOL_SIZE", "3")
    monkeypatch.setenv("QUARRY_FILES_PORT", "0")
    s = FilesSettings()
    assert (s.data_dir, s.pool_size, s.port) == (tmp_path, 3, 0)
    assert s.database_url == "postgresql+psycopg://postgres@127.0.0.1/test"
