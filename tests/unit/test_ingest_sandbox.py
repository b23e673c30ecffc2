"""The parsing processes: a file past its time limit has its process killed, one past the memory
cap fails alone, and the pool goes on parsing the next files."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from services.ingest.parsing import ParseError, ParseLimits
from services.ingest.sandbox import ParseSandbox
from tests.fixtures.ingest.pdf_builder import build_pdf, inflating_pdf


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A 300 KB PDF whose one content stream inflates to 300 MB."""
    return inflating_pdf(300 * 1024 * 1024)


@pytest.fixture
async def sandbox() -> AsyncIterator[ParseSandbox]:
    box = ParseSandbox(ParseLimits(timeout_seconds=30, memory_mb=768), workers=1)
    yield box
    box.close()


async def test_files_parse_in_the_child_process(sandbox: ParseSandbox) -> None:
    document = await sandbox.parse(build_pdf([["Sandboxed page."]]), "a.pdf", "")
    assert document.kind == "pdf" and document.text == "Sandboxed page."
    assert (await sandbox.parse(b"plain words", "a.txt", "")).text == "plain words"


async def test_a_decompression_bomb_fails_alone_under_the_memory_cap(sandbox: ParseSandbox, bomb: bytes) -> None:
    with pytest.raises(ParseError, match="768 MB memory limit"):
        await sandbox.parse(bomb, "bomb.pdf", "application/pdf")
    assert (await sandbox.parse(b"after the bomb", "b.txt", "")).text == "after the bomb"


async def test_a_parse_past_its_time_limit_is_killed(bomb: bytes) -> None:
    box = ParseSandbox(ParseLimits(timeout_seconds=0.5, memory_mb=4096), workers=1)
    try:
        started = time.monotonic()
        with pytest.raises(ParseError, match=r"parse time limit \(0\.5 s\) exceeded"):
            await box.parse(bomb, "slow.pdf", "application/pdf")
        assert time.monotonic() - started < 10
        assert (await box.parse(b"next file", "n.txt", "")).text == "next file"  # a new process took over
    finally:
        box.close()


async def test_files_over_a_limit_checked_in_the_child_fail_with_it() -> None:
    limits = ParseLimits(max_pages=2)
    box = ParseSandbox(limits, workers=1)
    try:
        with pytest.raises(ParseError, match="3 pages > the 2 page limit"):
            await box.parse(build_pdf([["a"], ["b"], ["c"]]), "p.pdf", "")
        with pytest.raises(ParseError, match="file too large"):
            await box.parse(b"x" * (limits.max_bytes + 1), "big.txt", "")
    finally:
        box.close()


async def test_parses_run_concurrently_across_the_pool() -> None:
    box = ParseSandbox(ParseLimits(), workers=2)
    try:
        texts = await asyncio.gather(*(box.parse(f"file {i}".encode(), f"{i}.txt", "") for i in range(12)))
        assert [t.text for t in texts] == [f"file {i}" for i in range(12)]
    finally:
        box.close()
