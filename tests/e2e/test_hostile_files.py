"""Hostile files in a sync: each fails alone with its reason, the sync finishes in bounded time,
the good files are searchable, and the failures show in both APIs and in ``quarry ingest``.

Limits are lowered for the test (10 s to parse, 1 GiB per parsing process, 5 M characters of
text) so that every hostile file fails within seconds; the defaults are in docs/reliability.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.launcher import Stack
from tests.e2e.stack import running_stack
from tests.fixtures.ingest.pdf_builder import build_pdf, inflating_pdf

pytestmark = pytest.mark.e2e

API_KEY = "qk-hostile"
LIMITS = {"QUARRY_INGEST_PARSE_TIMEOUT_SECONDS": "10", "QUARRY_INGEST_PARSE_MEMORY_MB": "1024",
          "QUARRY_INGEST_MAX_TEXT_CHARS": "5000000"}
GOOD = {
    "granite.txt": b"Granite is an igneous rock made of quartz, feldspar and mica.",
    "tides.md": b"# Tides\n\nThe moon's gravity raises the tides twice a day.",
}


def _hostile() -> dict[str, tuple[bytes, str]]:
    """File name -> (bytes, the words its failure reason must contain)."""
    return {
        "corrupt.pdf": (b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer", "unreadable PDF"),
        "random.pdf": (os.urandom(64 * 1024), "unreadable PDF"),
        "bomb.pdf": (inflating_pdf(300 * 1024 * 1024), "memory limit"),
        "pages.pdf": (build_pdf([[f"page {i}"] for i in range(5000)]), "5,000 pages > the 2,000 page limit"),
        "nested.html": (b"<html><body>" + b"<div>" * (10 * 1024 * 1024 // 5), "nested too deeply"),
        "program.exe": (b"MZ\x90\x00" + bytes(range(256)) * 64, "unsupported file type"),
        "blob": (bytes(range(256)) * 256, "unsupported binary file"),
        "image.png": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 4096, "unsupported file type"),
        "archive.zip": (b"PK\x03\x04" + os.urandom(4096), "unsupported file type"),
        "long.txt": (b"word " * 1_200_000, "extracted text too long"),
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("quarry-hostile"), API_KEY, LIMITS) as s:
        yield s


def _http(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120)


def _wait(http: httpx.Client, path: str, done: tuple[str, ...], key: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = http.get(path).json()
        if body.get(key) in done:
            return dict(body)
        time.sleep(0.5)
    raise AssertionError(f"{path} did not finish within {timeout:.0f} s: {body}")


def test_a_sync_of_hostile_files_fails_each_with_its_reason_and_finishes(stack: Stack) -> None:
    hostile = _hostile()
    http = _http(stack)
    directory = http.post("/api/v1/beta/directories", json={"name": "hostile"}).json()
    for name, body in [*((n, b) for n, (b, _) in hostile.items()), *GOOD.items()]:
        r = http.post(f"/api/v1/beta/directories/{directory['id']}/files/upload", files={"upload_file": (name, body)})
        assert r.status_code == 200, (name, r.text)
    index = http.post("/api/v1/indexes", json={"source_directory_id": directory["id"], "name": "hostile"}).json()
    started = time.monotonic()
    assert http.post(f"/api/v1/indexes/{index['id']}/sync").status_code == 200
    synced = _wait(http, f"/api/v1/indexes/{index['id']}", ("partially_succeeded", "succeeded", "failed"),
                   "sync_status")
    assert time.monotonic() - started < 240
    progress = synced["sync_progress"]
    assert synced["sync_status"] == "partially_succeeded", synced
    assert (progress["done_items"], progress["total_items"], progress["failed_items"]) == (12, 12, 10)
    reasons = {f["file_name"]: f["error"] for f in progress["failures"]}
    assert set(reasons) == set(hostile)
    for name, (_, words) in hostile.items():
        assert words in reasons[name], (name, reasons[name])

    for query, name in (("quartz feldspar mica", "granite.txt"), ("moon gravity tides", "tides.md")):
        out = http.post("/api/v1/retrieval/retrieve", json={"index_id": index["id"], "query": query, "top_k": 1})
        assert out.json()["results"][0]["file_name"] == name
    assert stack.failed() == []


def test_legacy_status_names_the_failed_file(stack: Stack) -> None:
    http = _http(stack)
    pipeline = http.put("/api/v1/pipelines", json={"name": "hostile-pipeline"}).json()
    bad = http.post("/api/v1/beta/files", files={"file": ("scan.pdf", b"%PDF-1.4 not really")}).json()
    good = http.post("/api/v1/beta/files", files={"file": ("note.txt", b"a readable note about basalt")}).json()
    added = http.put(f"/api/v1/pipelines/{pipeline['id']}/files",
                     json=[{"file_id": bad["id"]}, {"file_id": good["id"]}])
    assert added.status_code == 200, added.text
    status = _wait(http, f"/api/v1/pipelines/{pipeline['id']}/status",
                   ("SUCCESS", "PARTIAL_SUCCESS", "ERROR"), "status")
    assert status["status"] == "PARTIAL_SUCCESS", status
    assert [e["message"] for e in status["error"]] == [f"{bad['id']}: unreadable PDF: Failed to load document "
                                                       "(PDFium: Data format error)."]
    file_status = http.get(f"/api/v1/pipelines/{pipeline['id']}/files/{bad['id']}/status").json()
    assert file_status["status"] == "ERROR" and "unreadable PDF" in str(file_status.get("error")), file_status
    ok = http.get(f"/api/v1/pipelines/{pipeline['id']}/files/{good['id']}/status").json()
    assert ok["status"] == "SUCCESS"


def test_quarry_ingest_lists_the_failed_files_and_exits_non_zero(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "ok.txt").write_bytes(b"Obsidian is volcanic glass.")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 broken")
    (folder / "slides.pptx").write_bytes(b"PK\x03\x04 not really slides")
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "ingest", str(folder), "--index", "cli-hostile",
         "--url", stack.base_url, "--api-key", API_KEY],
        capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 4, done.stdout + done.stderr
    assert "2 file(s) could not be indexed" in done.stderr
    for name, words in (("broken.pdf", "unreadable PDF"), ("slides.pptx", "unsupported file type")):
        line = next(line for line in done.stderr.splitlines() if name in line)
        assert words in line, done.stderr
    assert "uploading 3 file(s)" in done.stderr  # nothing skipped on the client
