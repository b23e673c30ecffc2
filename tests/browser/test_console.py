"""The console (``/console``) in Chromium against a real stack: sign in, create an index, upload
three files, wait for the sync, query, move the weight and see the order change, open a
result's file at its chunk, grep, manage keys, and a bad key's error. Any console error or
uncaught exception fails the test (``conftest.ConsoleWatch``).

Each page is photographed on the way: into ``docs/console/*.png`` (the README shows them) with
``QUARRY_UPDATE_SCREENSHOTS=1``, else into a temporary folder, so a test run leaves the tree alone.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.launcher import Stack
from tests.browser.conftest import ADMIN_KEY, ConsoleWatch
from tests.fixtures.ingest.pdf_builder import build_pdf

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SHOTS = (Path(__file__).resolve().parents[2] / "docs" / "console" if os.environ.get("QUARRY_UPDATE_SCREENSHOTS") == "1"
         else Path(tempfile.gettempdir()) / "quarry-console-screenshots")
INDEX = "field-notes"
#: Two notes that disagree by design: the log repeats the word "eruption" (BM25 ranks it first)
#: but is about a lighthouse; the volcano note means it (the dense leg ranks it first).
FILES: dict[str, bytes] = {
    "volcano-notes.txt": (
        b"Volcanoes form where magma from the mantle rises through the crust and reaches the surface. When the "
        b"pressure of the gases dissolved in the magma grows too high, the volcano explodes: an eruption throws "
        b"ash, pumice and lava bombs into the sky, and pyroclastic flows race down its slopes. In 1991 Mount "
        b"Pinatubo blew sulphur dioxide into the stratosphere and cooled the whole planet for two years.\n"
    ),
    "lighthouse-log.md": "\n\n".join([
        "# Lighthouse log",
        *(f"Week {i}. The keeper trimmed the wick, polished the lens and noted the wind from the north-east. "
          f"A supply boat brought {i} barrels of lamp oil and letters from the mainland; the fog bell rang "
          "through the night while the tide covered the lower steps." for i in range(1, 6)),
        "Week 6. The keeper wrote about an eruption of laughter at supper, an eruption of gulls from the cliff at "
        "dawn, an eruption of sparks from the stove and the eruption, eruption, eruption of the fog bell all night "
        "long. The lamp oil ran low.",
        *(f"Week {i}. Calm seas; the keeper painted the gallery rail, mended the boat shed and counted "
          f"{i * 3} ships passing the point before the evening lamp was lit." for i in range(7, 12)),
    ]).encode(),
    "glacier-report.pdf": build_pdf([
        ["Glacier survey report.", "Page one covers the expedition and its route across the ice field."],
        ["Page two: the glacier retreated forty metres since the last survey.", "Meltwater lakes doubled in size."],
        ["Page three lists the equipment: ice axes, crampons and a GPS receiver."],
    ]),
}
FAILED_LOAD = r"Failed to load resource: the server responded with a status of {}"


def shot(page: Any, name: str, *, full_page: bool = False) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def sign_in(page: Any, key: str) -> None:
    page.goto("/console")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def run_query(page: Any, start: Callable[[], object]) -> list[str]:
    """Start a query (``start``: a click, a key press), wait for its answer (``data-run`` counts
    the answers shown), and return the results' file names in order."""
    results = page.locator("#results")
    before = int(results.get_attribute("data-run") or 0)
    start()
    page.wait_for_function("([el, n]) => Number(el.dataset.run || 0) > n && !el.hasAttribute('aria-busy')",
                           arg=[results.element_handle(), before])
    return page.locator(".result .file-name").all_inner_texts()


def search(page: Any) -> list[str]:
    return run_query(page, page.get_by_role("button", name="Search").click)


def test_the_page_needs_no_key_the_api_does_and_the_schema_leaves_it_out(stack: Stack) -> None:
    page = httpx.get(f"{stack.base_url}/console")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(f"{stack.base_url}/console/static/js/api.js").status_code == 200
    assert httpx.get(f"{stack.base_url}/api/v1/indexes").status_code == 401
    paths = httpx.get(f"{stack.base_url}/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/console")]


def test_a_bad_key_is_refused_with_the_error_shown(console_page: tuple[Any, ConsoleWatch]) -> None:
    page, watch = console_page
    page.goto("/console")
    page.wait_for_url(re.compile(r"#/signin$"))
    field = page.get_by_label("API key")
    assert field.get_attribute("type") == "password"
    shot(page, "signin")
    with watch.expecting(FAILED_LOAD.format(401)):
        field.fill("qk-not-a-key")
        page.get_by_role("button", name="Sign in").click()
        error = page.get_by_role("alert").filter(has_text="Sign-in failed")
        assert "401: invalid api key" in error.inner_text()
    assert page.evaluate("sessionStorage.length") == 0
    assert page.locator("#nav").is_hidden()


def test_index_upload_sync_query_weights_read_and_grep(console_page: tuple[Any, ConsoleWatch], stack: Stack,
                                                       tmp_path: Path) -> None:
    page, _ = console_page
    sign_in(page, ADMIN_KEY)
    page.wait_for_url(re.compile(r"#/indexes$"))
    # The key is the tab's: in sessionStorage, never in localStorage or a cookie.
    assert ADMIN_KEY in page.evaluate("sessionStorage.getItem('quarry.console')")
    assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []

    # Create an index (with page screenshots) and upload three files into it, which syncs it.
    page.get_by_label("Name", exact=True).fill(INDEX)
    page.get_by_role("button", name="Create index").click()
    row = page.locator("tr", has=page.get_by_role("link", name=INDEX))
    assert row.locator(".badge").inner_text() == "never synced"
    for name, content in FILES.items():
        (tmp_path / name).write_bytes(content)
    page.get_by_label("Metadata for these files").fill('{"trip": "north", "year": 2024}')
    page.get_by_label("Choose files").set_input_files([str(tmp_path / n) for n in FILES])
    for name in FILES:
        item = page.locator(f".uploads li[data-file='{name}']")
        item.get_by_text("uploaded").wait_for()
        assert item.locator("progress").evaluate("p => p.value") == 1
    row.locator(".badge[data-status='succeeded']").wait_for(timeout=120_000)
    cells = row.locator("td")
    page.wait_for_function("r => !r.cells[2].textContent.includes('…')", arg=row.element_handle())
    assert cells.nth(1).inner_text() == "3"
    assert int(cells.nth(2).inner_text()) >= 3
    assert "3 of 3 files" in cells.nth(3).inner_text()

    # A second index whose one file cannot be parsed: the failure is listed with its reason.
    page.get_by_label("Name", exact=True).fill("scratch")
    page.get_by_role("button", name="Create index").click()
    scratch = page.locator("tr", has=page.get_by_role("link", name="scratch"))
    page.get_by_role("heading", name="Upload to scratch").wait_for()
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not a PDF body\n")
    page.get_by_label("Choose files").set_input_files(str(tmp_path / "broken.pdf"))
    scratch.locator(".badge[data-status='partially_succeeded']").wait_for(timeout=120_000)
    scratch.get_by_text("1 file failed").click()
    reason = scratch.locator(".failures li").inner_text()
    assert reason.startswith("broken.pdf: ") and len(reason) > len("broken.pdf: "), reason
    shot(page, "indexes")
    scratch.get_by_role("button", name="Delete scratch").click()
    scratch.get_by_role("button", name="Confirm delete scratch").click()
    scratch.wait_for(state="detached")

    # Playground: keywords only, then meaning only: the order changes.
    row.get_by_role("link", name=INDEX).click()
    page.wait_for_url(re.compile(r"#/playground\?index="))
    page.get_by_label("Query", exact=True).fill("eruption")
    page.get_by_label("Rerank the fused candidates").uncheck()
    weight = page.get_by_label("Dense ↔ sparse weight")
    weight.focus()
    page.keyboard.press("Home")  # keyboard: the slider to sparse 1.00
    assert weight.get_attribute("aria-valuetext") == "dense 0.00 · sparse 1.00"
    keywords = search(page)
    first = page.locator(".result").first
    assert first.locator(".scores td").nth(1).inner_text() == "—"  # dense leg off
    weight.focus()
    meaning = run_query(page, lambda: page.keyboard.press("End"))  # a shown query runs again when the weight moves
    assert keywords[0] == "lighthouse-log.md" and meaning[0] == "volcano-notes.txt", (keywords, meaning)
    assert page.locator(".result").first.locator(".scores td").nth(2).inner_text() == "—"  # sparse leg off
    stages = page.locator("#latency dt").all_inner_texts()
    assert {"dense", "total"} <= set(stages), stages

    # Both legs, reranked, metadata filters: past the uploads' year nothing, in it the PDF first.
    page.get_by_label("Query", exact=True).fill("how far did the glacier retreat since the survey?")
    page.get_by_role("button", name="Add filter").click()
    page.get_by_label("Filter 1 key").fill("year")
    page.get_by_label("Filter 1 operator").select_option("gt")
    page.get_by_label("Filter 1 value").fill("2024")
    run_query(page, lambda: weight.fill("0.5"))
    assert run_query(page, page.get_by_label("Rerank the fused candidates").check) == []
    page.get_by_label("Filter 1 operator").select_option("gte")
    assert search(page)[0] == "glacier-report.pdf"
    first = page.locator(".result").first
    meta = first.locator(".meta").inner_text().split()
    assert meta[meta.index("trip") + 1] == "north", meta
    assert "retreated forty metres" in first.locator(".content").inner_text()
    assert "—" not in first.locator(".scores td").nth(3).inner_text()  # a rerank score
    first.locator(".thumb img[src^='blob:']").first.wait_for()
    page.get_by_role("button", name="Copy as Python SDK").click()
    python = page.locator("#snippet").inner_text()
    assert "client.retrieval.retrieve(" in python and '"year": {' in python and "top_k=10," in python
    page.get_by_role("button", name="Copy as curl").click()
    snippet = page.locator("#snippet").inner_text()
    assert "Authorization: Bearer $QUARRY_API_KEY" in snippet
    assert '"custom_filters":{"year":{"operator":"gte","value":2024}}' in snippet
    assert page.evaluate("navigator.clipboard.readText()") == snippet
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "playground", full_page=True)

    # Open a result's file at its chunk: the chunk is marked, every boundary shown.
    log = page.locator(".result[data-file='lighthouse-log.md']").first
    chunk_text = log.locator(".content").inner_text()
    log.get_by_role("link", name="Open lighthouse-log.md at this chunk").click()
    page.wait_for_url(re.compile(r"#/read\?"))
    target = page.locator("#doc mark")
    target.first.wait_for()
    assert "".join(target.all_inner_texts()).split() == chunk_text.split()
    boundaries = page.locator("#doc .boundary").count()
    assert boundaries >= 3 and page.locator("#doc .overlap").count() >= 2
    assert f"{boundaries} chunks" in page.locator("#read-info").inner_text()
    shot(page, "read")

    # Files: find by name, grep with the matches highlighted in context.
    page.get_by_role("link", name="Files of the index").click()
    page.wait_for_url(re.compile(r"#/files\?index="))
    page.locator("#found li").nth(2).wait_for()
    page.get_by_label("File name contains").fill("log")
    page.get_by_role("button", name="Find").click()
    page.wait_for_function("() => document.querySelectorAll('#found li').length === 1")
    assert page.locator("#found li").inner_text() == "lighthouse-log.md"
    page.get_by_label("File name contains").fill("")
    page.get_by_role("button", name="Find").click()
    page.wait_for_function("() => document.querySelectorAll('#found li').length === 3")
    page.get_by_label("Pattern (RE2 regular expression)").fill(r"erupt\w*")
    page.get_by_role("button", name="Grep").click()
    assert page.locator("#grep-summary").inner_text() == "7 matches in 2 file(s)"  # 6 in the log, 1 in the note
    marks = page.locator("#matches mark").all_inner_texts()
    assert marks and all(re.fullmatch(r"[Ee]rupt\w*", m) for m in marks), marks
    shot(page, "files")
    page.locator(".grep-file[data-file='volcano-notes.txt']").get_by_role("link").first.click()
    assert page.locator("#doc mark").first.inner_text() == "eruption"

    # The pipelines API: its operators and retrieval modes (whole files here).
    page.get_by_role("link", name="Playground").click()
    page.get_by_label("Query", exact=True).fill("eruption")
    page.get_by_label("API", exact=True).select_option("pipelines")
    page.get_by_label("Retrieval mode").select_option("files_via_content")
    page.get_by_label("Files (files_top_k)").fill("2")
    page.get_by_role("button", name="Add filter").click()
    page.get_by_label("Filter 1 key").fill("trip")
    page.get_by_label("Filter 1 operator").select_option("==")
    page.get_by_label("Filter 1 value").fill("north")
    found = search(page)
    assert len(found) == 2 and set(found) <= set(FILES), found
    assert "retrieval_mode: files_via_content" in page.locator(".notes").inner_text()

    # The keyword engine gone: dense-only results, and the answer says why.
    stack.kill("sparse")
    page.get_by_label("Query", exact=True).fill("ash and lava")  # a new query: not the cache's answer
    assert search(page)
    assert "sparse leg failed" in page.locator("#degraded").inner_text()


def test_keys_and_projects_for_admin_keys_only(console_page: tuple[Any, ConsoleWatch], browser: Any,
                                               stack: Stack) -> None:
    page, _ = console_page
    sign_in(page, ADMIN_KEY)
    page.get_by_role("link", name="Keys & projects").click()
    page.wait_for_url(re.compile(r"#/keys$"))
    page.get_by_label("New project").fill("team-console")
    page.get_by_role("button", name="Create project").click()
    page.locator("#projects td", has_text="team-console").wait_for()
    page.locator("#create-key").get_by_label("Project").select_option(label="team-console")
    page.locator("#create-key").get_by_label("Name").fill("reader")
    page.locator("#create-key").get_by_label("Expires in days").fill("30")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#secret-value").inner_text()
    assert secret
    reader_row = page.locator("#keys tr", has_text="reader")
    assert "team-console" in reader_row.inner_text() and "active" in reader_row.inner_text()
    shot(page, "keys")

    # The new key is not an admin's: no Keys page (the admin API's 403 is the check).
    other = browser.new_context(viewport=page.viewport_size, base_url=stack.base_url)
    try:
        tab = other.new_page()
        watch = ConsoleWatch(tab)
        with watch.expecting(FAILED_LOAD.format(403)):
            sign_in(tab, secret)
            tab.wait_for_url(re.compile(r"#/indexes$"))
        assert tab.locator("#who-project").inner_text() == "Project team-console"
        assert tab.get_by_role("link", name="Keys & projects").is_hidden()
        tab.goto("/console#/keys")
        tab.get_by_role("heading", name="Indexes", exact=True).wait_for()
        assert tab.locator("#keys").count() == 0
        watch.check()

        # Revoked by the admin: the key's next call signs its tab out, with the reason.
        reader_row.get_by_role("button", name="Revoke key reader").click()
        reader_row.get_by_role("button", name="Confirm revoke key reader").click()
        reader_row.get_by_text("revoked").wait_for()
        with watch.expecting(FAILED_LOAD.format(401)):
            tab.get_by_role("link", name="Playground").click()
            tab.wait_for_url(re.compile(r"#/signin$"))
            assert "api key revoked" in tab.locator("#notice").inner_text()
        watch.check()
    finally:
        other.close()
